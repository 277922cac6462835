"""A real single-node Apache Kafka broker (KRaft) for development, tests and `sentinel run`.

No Docker: the broker's jars come from Maven Central (``org.apache.kafka:kafka_2.13`` and
its runtime dependencies, resolved by Maven into a cache outside the repository), storage
is formatted with ``kafka.tools.StorageTool format --standalone``, and ``kafka.Kafka``
runs on Java 17+ as a detached process whose pid is kept in the data directory, so
``up``, ``status`` and ``down`` work from separate commands.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streams.settings import LocalBrokerSettings

Log = Callable[[str], None]

MIN_JAVA = 17


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


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


def java_executable() -> str:
    """The ``java`` to use: ``$JAVA_HOME/bin/java`` when set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker, and no 'java' was found "
            "on PATH (nor in JAVA_HOME). Install a JDK (e.g. 'apt-get install "
            "openjdk-17-jre-headless') or point SENTINEL_BROKER at an existing broker."
        )
    return found


def java_major_version(java: str) -> int:
    """Parse the major version from ``java -version`` (which prints to stderr)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise BrokerError(f"could not read the Java version from {java!r}: {out.stderr.strip()}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    """Return a usable java executable or raise a clear error."""
    java = java_executable()
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise BrokerError(
            f"Kafka 4.x needs Java {MIN_JAVA}+, but {java} is Java {major}. "
            "Set JAVA_HOME to a newer JDK."
        )
    return java


def fetch_kafka(version: str, cache_dir: Path, log: Log = _quiet) -> Path:
    """Resolve the Kafka broker jars with Maven into ``cache_dir/<version>/libs``.

    Idempotent: a complete cache (marked by a ``.complete`` file) is reused without
    calling Maven. Returns the libs directory.
    """
    libs = cache_dir.expanduser() / version / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven ('mvn') is needed once to fetch the Kafka jars from Maven Central, and it "
            "is not on PATH. Install it (e.g. 'apt-get install maven') or point "
            "SENTINEL_BROKER at an existing broker."
        )
    log(f"fetching Apache Kafka {version} jars from Maven Central into {libs} ...")
    template = resources.files("streams.kafka").joinpath("pom.xml").read_text(encoding="utf-8")
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="sentinel-kafka-pom-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(template.replace("@KAFKA_VERSION@", version), encoding="utf-8")
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BrokerError(f"Maven could not fetch Kafka {version}:\n{tail}")
    jars = sorted(partial.glob("*.jar"))
    if not any(j.name.startswith(f"kafka_2.13-{version}") for j in jars):
        raise BrokerError(f"Maven finished but kafka_2.13-{version}.jar is missing in {partial}")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    marker.write_text(f"{len(jars)} jars\n", encoding="utf-8")
    log(f"fetched {len(jars)} jars ({_dir_mib(libs):.1f} MiB)")
    return libs


def _dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2**20


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
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding (22 chars)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


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
    ``broker.pid``, ``broker.log`` and the log segments under ``kraft-logs/``.
    """

    def __init__(self, settings: LocalBrokerSettings, log: Log = _quiet) -> None:
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
        s = self.settings
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{s.host}:{s.controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "kraft-logs"),
            "num.partitions": "4",
            # Single node: internal topics cannot have more than one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # No 3 s wait for more members before the first rebalance (tests, single worker).
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()), encoding="utf-8")
        log4j = resources.files("streams.kafka").joinpath("log4j2.properties")
        (self.data_dir / "log4j2.properties").write_text(
            log4j.read_text(encoding="utf-8"), encoding="utf-8"
        )
        return path

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
        config = self._write_config()
        if not (self.data_dir / "kraft-logs" / "meta.properties").exists():
            self.log(f"formatting KRaft storage in {self.data_dir / 'kraft-logs'}")
            fmt = subprocess.run(
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
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        self.log(
            f"starting Apache Kafka {s.kafka_version} (KRaft, single node) on {self.bootstrap}"
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
        """A metadata round trip through a real client: the broker is serving requests."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
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
