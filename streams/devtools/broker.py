"""A real single-node Apache Kafka broker (KRaft) for development, tests and `sentinel run`.

No Docker: the broker's jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and
its runtime dependencies, resolved by Maven into a cache outside the repository), storage
is formatted with ``kafka.tools.StorageTool format --standalone``, and ``kafka.Kafka``
runs on Java 17+ as a detached process whose pid is kept in the data directory, so
``up``, ``status`` and ``down`` work from separate commands.

With ``local_broker.security = "sasl_ssl"`` the client listener is SASL_SSL with
SCRAM-SHA-512 and SCRAM-SHA-256: a throwaway CA and broker certificate are made with
``openssl`` in the data directory, and the SCRAM credentials (one per mechanism) are
written into the cluster metadata when the storage is formatted. The client password
reaches neither a command line nor the broker's files: Python derives the SCRAM salted
password (RFC 5802) and hands only that, with its salt, to ``StorageTool format
--add-scram`` through a private Java argument file. ``local_broker.client_auth =
"required"`` adds mutual TLS: the CA also signs a client certificate, and the listener
refuses a TLS handshake without one.

Here: the broker's lifecycle (:class:`LocalBroker`) and the port and process probes it
uses. The Java check and the jars are in :mod:`streams.devtools.kafka_dist`, the
``server.properties`` in :mod:`streams.devtools.broker_config`, the certificates and
SCRAM credentials in :mod:`streams.devtools.certs`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streams.devtools.broker_config import SaslSsl, server_properties
from streams.devtools.certs import (
    INTER_BROKER_USER,
    SCRAM_MECHANISM,
    SCRAM_MECHANISMS,
    ScramMechanism,
    cert_valid_for,
    make_certificates,
    scram_credential,
    write_private,
)
from streams.devtools.errors import BrokerError
from streams.devtools.kafka_dist import KAFKA_RESOURCES, Log, check_java, fetch_kafka, no_log
from streams.kafka.security import KafkaLoginError, KafkaSecurity, check_login, kafka_python_kwargs
from streams.settings import LocalBrokerSettings, Settings


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class BrokerStatus:
    """What ``sentinel kafka status`` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    accepting: bool

    def describe(self) -> str:
        if self.running and self.accepting:
            return f"running (pid {self.pid}), accepting connections on {self.bootstrap}"
        if self.running:
            return f"starting (pid {self.pid}), not yet accepting on {self.bootstrap}"
        return f"stopped (data directory {self.data_dir})"


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (for tests and ephemeral brokers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding (22 chars).

    Never one that starts with ``-`` (1 in 64 do): ``format -t -x...`` reads it as an
    option and fails. Kafka's own ``Uuid.randomUuid`` skips those for the same reason.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); check /proc when it is there.
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError):
            return stat.read_text().split()[2] != "Z"
    return True


class LocalBroker:
    """Start, inspect and stop one local KRaft broker described by settings.

    All files live in ``settings.data_dir``: ``server.properties``, ``log4j2.properties``,
    ``broker.pid``, ``broker.log`` and the log segments under ``kraft-logs/``; a
    ``sasl_ssl`` broker adds ``tls/ca.pem`` (what clients trust), ``tls/broker.pem`` and
    ``inter-broker.secret``, and with ``client_auth = "required"`` the client certificate
    ``tls/client.pem`` and its key ``tls/client.key``. Its controller listener stays
    PLAINTEXT on ``host``: it serves the KRaft quorum only, never client reads or writes.
    """

    def __init__(self, settings: LocalBrokerSettings, log: Log = no_log) -> None:
        self.settings = settings
        self.log = log
        self.data_dir = settings.data_dir.expanduser().resolve()

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def url(self) -> str:
        """The broker as a faust URL, ``kafka://host:port``."""
        return f"kafka://{self.bootstrap}"

    @property
    def secured(self) -> bool:
        """True when the client listener is SASL_SSL (``local_broker.security``)."""
        return self.settings.security == "sasl_ssl"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_file(self) -> Path:
        """The throwaway CA certificate (PEM) that clients of a ``sasl_ssl`` broker trust."""
        return self.tls_dir / "ca.pem"

    @property
    def mutual_tls(self) -> bool:
        """True when the listener requires client certificates (``local_broker.client_auth``)."""
        return self.secured and self.settings.client_auth == "required"

    @property
    def client_cert_file(self) -> Path:
        """The client certificate (PEM, with the CA) for a ``client_auth = "required"`` broker."""
        return self.tls_dir / "client.pem"

    @property
    def client_key_file(self) -> Path:
        """The client certificate's private key (PEM, mode 0600)."""
        return self.tls_dir / "client.key"

    @property
    def _secret_file(self) -> Path:
        return self.data_dir / "inter-broker.secret"

    def login_settings(self, settings: Settings) -> Settings:
        """``settings`` as a client of this broker needs them: when the broker was made
        secured by config (``local_broker.security``) and ``kafka.security`` is left at
        PLAINTEXT, log in to it as it expects; otherwise ``settings`` unchanged."""
        if not self.secured or settings.kafka.security.security_protocol != "PLAINTEXT":
            return settings
        kafka = settings.kafka.model_copy(update={"security": self.client_security()})
        return settings.model_copy(update={"kafka": kafka})

    def client_security(self, mechanism: ScramMechanism = SCRAM_MECHANISM) -> KafkaSecurity:
        """What a client needs to reach this broker: ``kafka.security`` for the service.

        PLAINTEXT for a plaintext broker; for ``sasl_ssl``, SCRAM (``mechanism``, either
        one the broker enables) with the configured user and password over TLS verified
        against :attr:`ca_file`, plus the client certificate and key when the broker
        requires them. The files must exist: call after :meth:`up`.
        """
        s = self.settings
        if not self.secured:
            return KafkaSecurity()
        return KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username=s.sasl_username,
            sasl_password=s.sasl_password,
            ssl_cafile=self.ca_file,
            ssl_certfile=self.client_cert_file if self.mutual_tls else None,
            ssl_keyfile=self.client_key_file if self.mutual_tls else None,
        )

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        pid = self._pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            bootstrap=self.bootstrap,
            data_dir=self.data_dir,
            accepting=port_accepts(self.settings.host, self.settings.port),
        )

    def _write_config(self) -> Path:
        """Write ``server.properties`` (private: a ``sasl_ssl`` broker's holds its
        inter-broker password) and the log4j2 configuration into the data directory."""
        secured = None
        if self.secured:
            secret = self._secret_file.read_text(encoding="utf-8").strip()
            secured = SaslSsl(secret, self.tls_dir / "broker.pem", self.ca_file)
        props = self._server_properties(secured)
        path = self.data_dir / "server.properties"
        write_private(path, "".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = resources.files(KAFKA_RESOURCES).joinpath("log4j2.properties")
        (self.data_dir / "log4j2.properties").write_text(
            log4j.read_text(encoding="utf-8"), encoding="utf-8"
        )
        return path

    def _server_properties(self, secured: SaslSsl | None) -> dict[str, str]:
        """The broker's properties (:func:`server_properties`); a subclass may add to them
        (the tests' broker that also enables SASL/PLAIN does)."""
        return server_properties(self.settings, self.data_dir, secured)

    def _prepare_security(self, formatted: bool) -> list[str]:
        """Certificates and the inter-broker secret; the ``--add-scram`` format arguments.

        Certificates are made on the first start and again when one expires within a day
        (or the client certificate that ``client_auth = "required"`` needs is missing).
        The SCRAM credentials (client user with both mechanisms, inter-broker user) can
        only be added when the storage is formatted, so a formatted data directory keeps
        its secret file.
        """
        needed = [self.ca_file, self.tls_dir / "broker.pem"]
        if self.mutual_tls:
            needed += [self.client_cert_file]
        if not all(cert_valid_for(pem, 86_400) for pem in needed) or (
            self.mutual_tls and not self.client_key_file.is_file()
        ):
            made = "broker and client certificates" if self.mutual_tls else "broker certificate"
            self.log(f"making a throwaway CA and {made} in {self.tls_dir}")
            make_certificates(self.tls_dir, self.settings.host, client=self.mutual_tls)
        if formatted:
            if not self._secret_file.is_file():
                raise BrokerError(
                    f"{self.data_dir} was formatted without local_broker.security = 'sasl_ssl' "
                    f"(no {self._secret_file.name}), so it holds no SCRAM credentials; use a "
                    "new local_broker.data_dir"
                )
            return []
        secret = secrets.token_urlsafe(32)
        write_private(self._secret_file, secret + "\n")
        s = self.settings
        args: list[str] = []
        for mechanism in SCRAM_MECHANISMS:
            password = s.sasl_password.get_secret_value()
            args += ["--add-scram", scram_credential(s.sasl_username, password, None, mechanism)]
        return [*args, "--add-scram", scram_credential(INTER_BROKER_USER, secret)]

    def _run_private(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a java command whose arguments must not show in the process list.

        Everything after the executable goes into a Java argument file (``java @file``,
        Java 9+) readable by its owner only, deleted when the command ends.
        """
        argfile = self.data_dir / ".java-args"
        quoted = (a.replace("\\", "\\\\").replace('"', '\\"') for a in cmd[1:])
        write_private(argfile, "".join(f'"{a}"\n' for a in quoted))
        try:
            return subprocess.run(
                [cmd[0], f"@{argfile}"], capture_output=True, text=True, check=False
            )
        finally:
            argfile.unlink(missing_ok=True)

    def _java_cmd(self, java: str, libs: Path, main: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{self.settings.heap}",
            f"-Xms{self.settings.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def up(self) -> BrokerStatus:
        """Fetch, format (first time only), start and wait until the broker accepts clients."""
        current = self.status()
        if current.running:
            self.log(f"local Kafka broker already {current.describe()}")
            self._wait_ready(current.pid)
            return self.status()
        s = self.settings
        for port in (s.port, s.controller_port):
            if port_accepts(s.host, port):
                raise BrokerError(
                    f"port {s.host}:{port} is already in use by another process; choose other "
                    "ports (local_broker.port / local_broker.controller_port) or stop it"
                )
        java = check_java()
        libs = fetch_kafka(s.kafka_version, s.cache_dir, self.log)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        formatted = (self.data_dir / "kraft-logs" / "meta.properties").exists()
        scram = self._prepare_security(formatted) if self.secured else []
        config = self._write_config()
        if not formatted:
            self.log(f"formatting KRaft storage in {self.data_dir / 'kraft-logs'}")
            fmt = self._run_private(
                self._java_cmd(
                    java,
                    libs,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "--ignore-formatted",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(config),
                    *scram,
                )
            )
            if fmt.returncode != 0:
                output = fmt.stdout + fmt.stderr
                for arg in scram:  # never echo a credential, even a salted one
                    output = output.replace(arg, "[SCRAM credential]")
                raise BrokerError(f"formatting Kafka storage failed:\n{output}")
        listener = "PLAINTEXT"
        if self.secured:
            listener = f"SASL_SSL, {' and '.join(SCRAM_MECHANISMS)}"
            listener += ", client certificates required" if self.mutual_tls else ""
        self.log(
            f"starting Apache Kafka {s.kafka_version} (KRaft, single node) on {self.bootstrap} "
            f"({listener})"
        )
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                self._java_cmd(java, libs, "kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n", encoding="utf-8")
        self._wait_ready(proc.pid)
        self.log(f"local Kafka broker ready on {self.bootstrap} (pid {proc.pid})")
        return self.status()

    def _wait_ready(self, pid: int | None) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if pid is not None and not _pid_alive(pid):
                raise BrokerError(
                    f"the Kafka broker exited during start-up; see {self.log_file}:\n"
                    + self._log_tail()
                )
            if port_accepts(self.settings.host, self.settings.port) and self._metadata_ok():
                return
            time.sleep(0.25)
        raise BrokerError(
            f"the Kafka broker did not accept connections on {self.bootstrap} within "
            f"{self.settings.start_timeout_s:.0f} s; see {self.log_file}:\n" + self._log_tail()
        )

    def _metadata_ok(self) -> bool:
        """A metadata round trip through a real client: the broker is serving requests.

        A secured broker is checked through its SASL_SSL listener with the configured
        credentials, so ``up`` returns only once a real client can log in. A refused
        login is final (the credential is fixed at format time) and raises at once.
        """
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        security = self.client_security()
        try:
            check_login([self.bootstrap], security, timeout_s=5.0)
        except KafkaLoginError as exc:
            raise BrokerError(
                f"{exc}. SCRAM credentials are created when the storage is formatted: a "
                "data directory formatted earlier (plaintext, or with another password) "
                "keeps its old ones; use a new local_broker.data_dir."
            ) from exc
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
                **kafka_python_kwargs(security),
            )
        except (KafkaError, OSError):
            return False
        try:
            admin.describe_cluster()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no broker log)"

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``). False if not running."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self.log(f"stopping local Kafka broker (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            self.log(f"broker did not stop within {timeout_s:.0f} s; killing it")
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        self.pid_file.unlink(missing_ok=True)
        return True

    def destroy(self) -> None:
        """Stop the broker and delete its data directory (tests)."""
        self.down()
        shutil.rmtree(self.data_dir, ignore_errors=True)
