"""Throwaway TLS and SCRAM material for a secured local broker (``local_broker.security =
"sasl_ssl"``): a CA, broker and client certificates made with ``openssl``, and SCRAM salted
credentials derived in Python (RFC 5802), so the client password reaches neither a command
line nor the broker's files."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from streams.devtools.errors import BrokerError

ScramMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512"]
SCRAM_MECHANISM: ScramMechanism = "SCRAM-SHA-512"
"""What :meth:`LocalBroker.client_security` uses by default, and the inter-broker login."""
SCRAM_MECHANISMS: tuple[ScramMechanism, ...] = ("SCRAM-SHA-512", "SCRAM-SHA-256")
"""Every SCRAM mechanism a ``sasl_ssl`` local broker enables and holds credentials for."""
_SCRAM_HASH: dict[ScramMechanism, str] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
SCRAM_ITERATIONS = 4096
"""Kafka's default and minimum for both SCRAM mechanisms."""
INTER_BROKER_USER = "sentinel-inter-broker"
"""The broker's own SCRAM identity on its SASL_SSL listener; its password is random,
made at format time and kept in the data directory (mode 0600)."""
CERT_DAYS = 365


def scram_credential(
    name: str,
    password: str,
    salt: bytes | None = None,
    mechanism: ScramMechanism = SCRAM_MECHANISM,
) -> str:
    """A ``StorageTool format --add-scram`` argument that holds no clear password.

    SCRAM stores ``SaltedPassword = Hi(password, salt, i)`` (RFC 5802), which is
    PBKDF2-HMAC with the mechanism's hash (SHA-512 or SHA-256) over the UTF-8 password
    (Kafka does no SASLprep). The result still lets its holder authenticate as ``name``
    with that mechanism: keep it out of logs and command lines.
    """
    salt = salt if salt is not None else secrets.token_bytes(32)
    hash_name = _SCRAM_HASH[mechanism]
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, SCRAM_ITERATIONS)
    b64 = base64.b64encode
    return (
        f"{mechanism}=[name={name},iterations={SCRAM_ITERATIONS},"
        f"salt={b64(salt).decode()},saltedpassword={b64(salted).decode()}]"
    )


def _openssl(*args: str) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise BrokerError(
            "'openssl' is needed to make the local broker's TLS certificate (local_broker."
            "security = 'sasl_ssl'); install it (e.g. 'apt-get install openssl')"
        )
    out = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed:\n{out.stderr.strip()}")


def make_certificates(tls_dir: Path, host: str, client: bool = False) -> None:
    """A throwaway CA and a broker certificate it signs, as PEM files in ``tls_dir``.

    ``ca.pem`` is what clients trust; ``broker.pem`` holds the broker's unencrypted PKCS#8
    key followed by its certificate chain, which Kafka reads as a ``PEM`` keystore. The
    certificate names ``host``, ``localhost`` and 127.0.0.1, so clients keep hostname
    checks on. With ``client``, the CA also signs a client certificate for mutual TLS:
    ``client.pem`` (certificate and CA, what ``kafka.security.ssl_certfile`` names) and
    ``client.key`` (its unencrypted key, mode 0600, ``ssl_keyfile``). The CA key is
    deleted once it has signed: nothing else can be issued. Extensions follow RFC 5280
    strictly (critical basicConstraints and keyUsage on the CA, key identifiers), which
    OpenSSL's and Python's strict verification modes require.
    """
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    ca_key, ca = tls_dir / "ca.key", tls_dir / "ca.pem"
    key, csr, crt = tls_dir / "broker.key", tls_dir / "broker.csr", tls_dir / "broker.crt"
    ext = tls_dir / "broker.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
        "-days", str(CERT_DAYS + 1), "-subj", "/CN=Sentinel local broker CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    names = {"DNS:localhost", "IP:127.0.0.1"}
    try:
        names.add(f"IP:{ipaddress.ip_address(host)}")
    except ValueError:
        names.add(f"DNS:{host}")
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        f"subjectAltName={','.join(sorted(names))}\n",
        encoding="utf-8",
    )
    _openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={host}")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", str(CERT_DAYS), "-extfile", str(ext),
    )  # fmt: skip
    write_private(tls_dir / "broker.pem", key.read_text() + crt.read_text() + ca.read_text())
    for leftover in (key, csr, crt):
        leftover.unlink(missing_ok=True)
    if client:
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n",
            encoding="utf-8",
        )
        subject = "/CN=Sentinel local broker client"
        _openssl("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", subject)
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(crt), "-days", str(CERT_DAYS), "-extfile", str(ext),
        )  # fmt: skip
        write_private(tls_dir / "client.key", key.read_text())
        (tls_dir / "client.pem").write_text(crt.read_text() + ca.read_text(), encoding="utf-8")
    else:
        for stale in (tls_dir / "client.key", tls_dir / "client.pem"):
            stale.unlink(missing_ok=True)  # signed by a CA that no longer exists
    for leftover in (ca_key, key, csr, ext, tls_dir / "ca.srl", crt):
        leftover.unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (keys, credentials)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def cert_valid_for(pem: Path, seconds: int) -> bool:
    """True when ``pem`` exists and its first certificate is valid ``seconds`` from now."""
    exe = shutil.which("openssl")
    if exe is None or not pem.is_file():
        return False
    check = [exe, "x509", "-checkend", str(seconds), "-noout", "-in", str(pem)]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0
