"""Kafka security settings: validation, client arguments, secrets never printed."""

from __future__ import annotations

import io
import logging
import ssl
from pathlib import Path

import faust
import pytest
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from alerting.redact import RedactingFilter
from streams.kafka.security import KafkaSecurity, faust_credentials, kafka_python_kwargs

PASSWORD = "pa55-Very-Secret-9f2c"


def _sasl(**kw: object) -> KafkaSecurity:
    return KafkaSecurity.model_validate(
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "sentinel",
            "sasl_password": PASSWORD,
        }
        | kw
    )


def test_plaintext_is_the_default_and_needs_nothing() -> None:
    sec = KafkaSecurity()
    assert faust_credentials(sec) is None
    assert kafka_python_kwargs(sec) == {}


def test_password_never_in_repr_str_dump_or_logs() -> None:
    sec = _sasl()
    stream = io.StringIO()
    logger = logging.getLogger("test.security")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger.handlers = [handler]
    logger.warning("security %s %r", sec, sec)
    creds = faust_credentials(sec)
    shown = [repr(sec), str(sec), str(sec.model_dump()), sec.model_dump_json(), repr(creds)]
    shown.append(stream.getvalue())
    for text in shown:
        assert PASSWORD not in text
    assert isinstance(sec.sasl_password, SecretStr)


def test_sasl_credentials_for_faust_and_kafka_python() -> None:
    sec = _sasl()
    creds = faust_credentials(sec)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == (
        "sentinel",
        PASSWORD,
        "SCRAM-SHA-256",
    )
    kw = kafka_python_kwargs(sec)
    assert kw == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "sentinel",
        "sasl_plain_password": PASSWORD,
    }


def test_kafka_python_kwargs_mask_the_password_when_formatted() -> None:
    # kafka-python's KafkaAdminClient logs "configuration: %s" % kwargs at DEBUG.
    kw = kafka_python_kwargs(_sasl())
    assert PASSWORD not in f"configuration: {kw}"
    assert "'sasl_plain_password': '**********'" in repr(kw)
    # ... while the login still gets the password itself.
    password = kw["sasl_plain_password"]
    assert str(password) == PASSWORD
    assert password.encode() == PASSWORD.encode()


def test_sasl_ssl_and_ssl_build_a_verifying_context(tmp_path: Path) -> None:
    sec = _sasl(security_protocol="SASL_SSL", ssl_check_hostname=False)
    creds = faust_credentials(sec)
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert creds.ssl_context.check_hostname is False
    ssl_only = KafkaSecurity(security_protocol="SSL")
    assert isinstance(faust_credentials(ssl_only), faust.SSLCredentials)
    kw = kafka_python_kwargs(ssl_only)
    assert kw["security_protocol"] == "SSL"
    assert isinstance(kw["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "needs sasl_password"),
        ({"security_protocol": "SASL_SSL", "sasl_password": "p"}, "needs sasl_username"),
        ({"sasl_username": "u", "sasl_password": "p"}, "security_protocol is PLAINTEXT"),
        ({"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "file not found"),
        ({"security_protocol": "GSSAPI"}, "security_protocol"),
        ({"sasl_mechanism": "OAUTHBEARER"}, "sasl_mechanism"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_configurations_name_the_problem(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        KafkaSecurity.model_validate(data)
    assert PASSWORD not in str(info.value)


def test_ssl_files_need_an_ssl_protocol_and_a_keyfile_needs_a_certfile(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ValidationError, match="ssl_\\* files"):
        KafkaSecurity(ssl_cafile=ca)
    with pytest.raises(ValidationError, match="needs ssl_certfile"):
        KafkaSecurity(security_protocol="SSL", ssl_keyfile=ca)


class _Outer(BaseModel):
    # A containing model must hide inputs too (pydantic uses the outer model's config):
    # Settings needs hide_input_in_errors=True once kafka.security is wired in.
    model_config = ConfigDict(hide_input_in_errors=True)

    security: KafkaSecurity = KafkaSecurity()


def test_validation_error_does_not_echo_the_password() -> None:
    with pytest.raises(ValidationError) as info:
        KafkaSecurity.model_validate({"sasl_password": PASSWORD})
    assert PASSWORD not in str(info.value)
    with pytest.raises(ValidationError) as nested:
        _Outer.model_validate({"security": {"sasl_password": PASSWORD}})
    assert PASSWORD not in str(nested.value)


def test_frozen() -> None:
    with pytest.raises(ValidationError):
        _sasl().sasl_username = "other"  # type: ignore[misc]
