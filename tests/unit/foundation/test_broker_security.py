"""The secured local broker's pieces that need no broker: settings, certificates, SCRAM.

The broker itself is exercised in ``tests/integration/test_kafka_security.py``; here are
the parts that can be checked in milliseconds: which settings are accepted, that the
throwaway certificates pass a real TLS handshake with strict verification, and that the
``--add-scram`` argument carries the RFC 5802 salted password, never the password.
The client certificate for ``client_auth = "required"`` is checked the same way, against
a server that requires one.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import ssl
from pathlib import Path

import pytest

from alerting.policy import ConfigError
from streams.devtools.certs import SCRAM_ITERATIONS, make_certificates, scram_credential
from streams.kafka.security import KafkaSecurity
from streams.settings import load_settings

PASSWORD = "correct-horse-battery-staple"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"local_broker.security": "sasl_ssl"}, "needs sasl_password"),
        ({"local_broker.security": "sasl_plaintext"}, "local_broker.security"),
        ({"local_broker.sasl_password": PASSWORD}, "security is plaintext"),
        (
            {
                "local_broker.security": "sasl_ssl",
                "local_broker.sasl_password": PASSWORD,
                "local_broker.sasl_username": "a,b",
            },
            "local_broker.sasl_username",
        ),
        (
            {
                "local_broker.security": "sasl_ssl",
                "local_broker.sasl_password": PASSWORD,
                "local_broker.client_auth": "requested",
            },
            "local_broker.client_auth",
        ),
        ({"local_broker.client_auth": "required"}, "client_auth required needs security sasl_ssl"),
    ],
)
def test_local_broker_security_settings_are_validated_without_echoing_the_password(
    overrides: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, overrides=overrides)
    assert needle in str(err.value)
    assert PASSWORD not in str(err.value)


def test_sasl_ssl_settings_hide_the_password_everywhere_but_the_child_environment() -> None:
    settings = load_settings(
        env={
            "SENTINEL_LOCAL_BROKER__SECURITY": "sasl_ssl",
            "SENTINEL_LOCAL_BROKER__SASL_PASSWORD": PASSWORD,
        }
    )
    local = settings.local_broker
    assert local.sasl_password.get_secret_value() == PASSWORD
    for shown in (repr(local), str(local), settings.model_dump_json()):
        assert PASSWORD not in shown


def test_scram_argument_holds_the_salted_password_only() -> None:
    salt = bytes(range(32))
    arg = scram_credential("svc", PASSWORD, salt)
    assert PASSWORD not in arg
    mechanism, _, body = arg.partition("=")
    assert mechanism == "SCRAM-SHA-512"
    fields = dict(part.split("=", 1) for part in body.strip("[]").split(","))
    assert fields["name"] == "svc"
    assert int(fields["iterations"]) == SCRAM_ITERATIONS == 4096
    assert base64.b64decode(fields["salt"]) == salt
    # RFC 5802 Hi() is PBKDF2 with one block; SHA-512 gives 64 bytes.
    salted = base64.b64decode(fields["saltedpassword"])
    assert salted == hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), salt, 4096)
    assert len(salted) == 64
    assert scram_credential("svc", PASSWORD) != scram_credential("svc", PASSWORD)  # salted


def test_scram_sha_256_argument_uses_sha_256() -> None:
    salt = bytes(range(32))
    arg = scram_credential("svc", PASSWORD, salt, "SCRAM-SHA-256")
    assert arg.startswith("SCRAM-SHA-256=[name=svc,iterations=4096,")
    assert PASSWORD not in arg
    salted = base64.b64decode(arg.split("saltedpassword=", 1)[1].rstrip("]"))
    assert salted == hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, 4096)
    assert len(salted) == 32  # SHA-256, not SHA-512 cut short


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """A full TLS handshake in memory (no sockets): raises if verification fails."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for end, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("TLS handshake did not complete")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the secured broker needs openssl")
def test_throwaway_certificates_pass_a_strict_tls_handshake(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    make_certificates(tls, "127.0.0.1")
    assert sorted(p.name for p in tls.iterdir()) == ["broker.pem", "ca.pem"]  # CA key gone
    assert (tls / "broker.pem").stat().st_mode & 0o077 == 0
    keystore = (tls / "broker.pem").read_text()
    assert keystore.count("BEGIN PRIVATE KEY") == 1  # PKCS#8, unencrypted: Kafka's PEM
    assert keystore.count("BEGIN CERTIFICATE") == 2  # leaf + CA
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls / "broker.pem")
    client = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    for name in ("127.0.0.1", "localhost"):
        _handshake(server, client, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server, client, "example.com")
    print("checked: CA + broker certificate verify strictly for 127.0.0.1 and localhost only")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the secured broker needs openssl")
def test_client_certificate_passes_a_server_that_requires_one(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    make_certificates(tls, "127.0.0.1", client=True)
    names = ["broker.pem", "ca.pem", "client.key", "client.pem"]
    assert sorted(p.name for p in tls.iterdir()) == names  # CA key gone
    assert (tls / "client.key").stat().st_mode & 0o077 == 0
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls / "broker.pem")
    server.load_verify_locations(tls / "ca.pem")
    server.verify_mode = ssl.CERT_REQUIRED  # what ssl.client.auth = required does
    server.verify_flags |= ssl.VERIFY_X509_STRICT
    security = KafkaSecurity(
        security_protocol="SSL",
        ssl_cafile=tls / "ca.pem",
        ssl_certfile=tls / "client.pem",
        ssl_keyfile=tls / "client.key",
    )
    with_cert = security.ssl_context()
    assert with_cert is not None
    _handshake(server, with_cert, "127.0.0.1")
    without = KafkaSecurity(security_protocol="SSL", ssl_cafile=tls / "ca.pem").ssl_context()
    assert without is not None
    with pytest.raises(ssl.SSLError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
        _handshake(server, without, "127.0.0.1")
    # Remade without the client certificate: the old one (from a CA now gone) is removed.
    make_certificates(tls, "127.0.0.1")
    assert sorted(p.name for p in tls.iterdir()) == ["broker.pem", "ca.pem"]
    print("checked: the client certificate passes a server requiring one; no certificate fails")


def test_the_documented_toml_example_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    section = doc.split("### A secured local broker", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "secured.toml"
    path.write_text(example)
    settings = load_settings(path, env={"SENTINEL_LOCAL_BROKER__SASL_PASSWORD": PASSWORD})
    assert settings.local_broker.security == "sasl_ssl"
    assert settings.local_broker.sasl_password.get_secret_value() == PASSWORD
    with pytest.raises(ConfigError, match="needs sasl_password"):
        load_settings(path, env={})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the secured broker needs openssl")
def test_the_documented_mutual_tls_example_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operations guide's mTLS example, with real files where it says they are (its
    paths are relative to the working directory, as the local broker's data_dir is)."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    section = doc.split("### Client certificates (mutual TLS)", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    make_certificates(tmp_path / ".sentinel" / "kafka" / "tls", "127.0.0.1", client=True)
    path = tmp_path / "mtls.toml"
    path.write_text(example)
    env = {
        "SENTINEL_LOCAL_BROKER__SASL_PASSWORD": PASSWORD,
        "SENTINEL_KAFKA__SECURITY__SASL_PASSWORD": PASSWORD,
    }
    settings = load_settings(path, env=env)
    assert settings.local_broker.client_auth == "required"
    security = settings.kafka.security
    assert security.sasl_mechanism == "SCRAM-SHA-256"
    assert security.ssl_certfile is not None
    assert security.ssl_certfile.name == "client.pem"
    assert security.ssl_context() is not None  # the key matches the certificate
    monkeypatch.chdir(tmp_path / ".sentinel")
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(path, env=env)
