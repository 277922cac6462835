"""Kafka transport security: one typed, frozen, secret-aware model for every client.

:class:`KafkaSecurity` is the ``kafka.security`` section of the settings. It turns into
faust's ``broker_credentials`` (:func:`faust_credentials`, which also covers the aiokafka
clients faust builds) and into keyword arguments for kafka-python clients
(:func:`kafka_python_kwargs`). The latter is the one way every other client of the service
gets its security: the worker's topic admin and silences follower, the alerting commands
(``notify``, ``contain``, ``status``, ``silence``, through ``streams.runtime.consumers``), the
investigation commands (``incidents``, ``investigate``, ``postmortem``, ``backtest``,
``replay --from/--to``) and ``simulate``; callers pass them to the publisher SDK.

The SASL password is a ``SecretStr``: it never appears in ``repr``/``str`` of the model,
in ``model_dump()`` (``'**********'``) or in log lines. It is revealed only inside the two
functions above and in :func:`check_login`; the first two return it for the client
constructors: do not log their results. (:func:`kafka_python_kwargs` returns it as a
``str`` whose ``repr`` is masked, as kafka-python's admin client logs its configuration
at DEBUG.)

:func:`check_login` turns a refused login into a prompt, explicit error: kafka-python
retries a refused SASL login like a network fault, and both client libraries then report
only "Unable to bootstrap", the reason going to their logs. The same holds for a broker
that requires a client certificate (mutual TLS) and gets none or an untrusted one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]

_SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


class KafkaSecurity(BaseModel):
    """How clients authenticate to the brokers and encrypt the connection.

    ``PLAINTEXT`` (the default) is for a loopback or otherwise trusted network only.
    Certificate paths are checked to exist when the settings are loaded, so a typo fails
    at start-up with the key named, not at the first connection.
    """

    # Errors must not echo the input: it holds the password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(default=None, repr=False)
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM); default: the system trust store."
    )
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (mTLS).")
    ssl_keyfile: Path | None = Field(default=None, description="Client private key (mTLS).")
    ssl_check_hostname: bool = True

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"file not found: {v}")
        return v.expanduser() if v is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        proto = self.security_protocol
        if proto in _SASL_PROTOCOLS:
            if not self.sasl_username:
                raise ValueError(f"security_protocol {proto} needs sasl_username")
            if self.sasl_password is None or not self.sasl_password.get_secret_value():
                raise ValueError(f"security_protocol {proto} needs sasl_password")
        elif self.sasl_username is not None or self.sasl_password is not None:
            raise ValueError(f"sasl_username/sasl_password given but security_protocol is {proto}")
        has_files = any(
            f is not None for f in (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        )
        if has_files and proto not in _SSL_PROTOCOLS:
            raise ValueError(f"ssl_* files given but security_protocol is {proto}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        return self

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in _SSL_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in _SASL_PROTOCOLS

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client-side TLS context (server verified; client certificate if given)."""
        if not self.uses_ssl:
            return None
        ctx = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(self.ssl_cafile) if self.ssl_cafile is not None else None,
        )
        if self.ssl_certfile is not None:
            ctx.load_cert_chain(
                str(self.ssl_certfile),
                str(self.ssl_keyfile) if self.ssl_keyfile is not None else None,
            )
        ctx.check_hostname = self.ssl_check_hostname
        return ctx

    def _password(self) -> str:
        return self.sasl_password.get_secret_value() if self.sasl_password is not None else ""


def faust_credentials(security: KafkaSecurity) -> Any:
    """faust ``broker_credentials`` for ``security`` (``None`` for PLAINTEXT).

    SASL gives ``faust.SASLCredentials`` (with an SSL context for SASL_SSL); SSL gives
    ``faust.SSLCredentials``. faust keeps the password in memory as a plain ``str``
    (aiokafka needs it), but its ``repr`` shows the user name only.
    """
    import faust  # faust is heavy; keep it out of settings loading

    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security._password(),
            ssl_context=security.ssl_context(),
            mechanism=security.sasl_mechanism,
        )
    if security.uses_ssl:
        return faust.SSLCredentials(security.ssl_context())
    return None


class _MaskedPassword(str):
    """The password as the clients need it (a ``str``), with a masked ``repr``.

    Why: kafka-python's ``KafkaAdminClient`` logs every keyword argument at DEBUG
    ("Starting KafkaAdminClient with configuration: {...}", kafka-python 3.0.12), and a
    dict formats its values with ``repr``. Only ``repr`` is masked: the value, ``str()``
    and ``encode()`` are the password, as the SCRAM and PLAIN logins need.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'**********'"


def kafka_python_kwargs(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for kafka-python ``KafkaProducer``/``KafkaConsumer``/admin clients.

    Empty for PLAINTEXT, so ``KafkaProducer(**kafka_python_kwargs(s), ...)`` is always
    safe. The result holds the password (masked in ``repr``, not in ``str``): pass it on,
    never log it.
    """
    if security.security_protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": security.security_protocol}
    if security.uses_ssl:
        kwargs["ssl_context"] = security.ssl_context()
        kwargs["ssl_check_hostname"] = security.ssl_check_hostname
    if security.uses_sasl:
        kwargs["sasl_mechanism"] = security.sasl_mechanism
        kwargs["sasl_plain_username"] = security.sasl_username
        kwargs["sasl_plain_password"] = _MaskedPassword(security._password())
    return kwargs


class KafkaLoginError(RuntimeError):
    """A broker refused this client's login or TLS handshake: retrying will not help."""


def server_address(server: str) -> tuple[str, int]:
    """A bootstrap server (``host:port``, ``[v6]:port``, a ``kafka://`` prefix allowed) as a
    socket address; no host is localhost, no port 9092."""
    host, _, port = server.strip().removeprefix("kafka://").rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


def check_login(bootstrap: Sequence[str], security: KafkaSecurity, timeout_s: float = 10.0) -> None:
    """Log in once to the first reachable broker; raise :class:`KafkaLoginError` if refused.

    Why: with a wrong password kafka-python retries until its bootstrap timeout (30 s by
    default) and then says only "Unable to bootstrap"; aiokafka fails fast but also says
    only that, the reason going to their logs. This makes one connection with aiokafka's
    ``create_conn`` (TLS handshake, then SASL authentication) and names the reason,
    including a TLS alert by which a broker that requires client certificates refuses a
    client without an acceptable one. A broker that cannot be reached is not an error
    here: the clients' own retries take over, as for a broker that is still starting.
    PLAINTEXT is not checked. Call from synchronous code (it runs its own event loop).
    """
    if security.security_protocol == "PLAINTEXT":
        return
    asyncio.run(_check_login(list(bootstrap), security, timeout_s))


async def _check_login(bootstrap: list[str], security: KafkaSecurity, timeout_s: float) -> None:
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        KafkaError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    for server in bootstrap:
        host, port = server_address(server)
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    request_timeout_ms=int(timeout_s * 1000),
                    ssl_context=security.ssl_context(),
                    security_protocol=security.security_protocol,
                    sasl_mechanism=security.sasl_mechanism if security.uses_sasl else None,
                    sasl_plain_username=security.sasl_username,
                    sasl_plain_password=security._password() if security.uses_sasl else None,
                ),
                timeout_s,
            )
        except (SaslAuthenticationFailed, UnsupportedSaslMechanismError) as exc:
            raise KafkaLoginError(
                f"{host}:{port} refused the {security.sasl_mechanism} login of user "
                f"{security.sasl_username!r}: {exc}"
            ) from exc
        except ssl.SSLError as exc:  # before OSError, its base class
            raise KafkaLoginError(_tls_failure(host, port, security, exc)) from exc
        except (OSError, TimeoutError, KafkaError) as exc:
            refusal = _tls_alert(exc)
            if refusal is not None:
                raise KafkaLoginError(_tls_failure(host, port, security, refusal)) from exc
            continue  # not reachable (yet), or cut off: not a definite refusal
        conn.close()
        return


def _tls_alert(exc: BaseException) -> ssl.SSLError | None:
    """The TLS alert the broker sent, if that is what ended the connection behind ``exc``.

    Why: with TLS 1.3 the client's side of the handshake is complete before the server
    has checked the client's certificate, so a broker that requires one (mutual TLS) and
    gets none or an untrusted one answers with an alert on the first read. aiokafka then
    raises ``KafkaConnectionError("Connection ... closed")`` with the ``SSLError`` (e.g.
    ``SSLV3_ALERT_BAD_CERTIFICATE``) as its cause. An alert is the broker's explicit
    refusal; a bare end of stream or reset is not, and stays a retryable network fault.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and "ALERT" in str(seen.reason or ""):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_failure(host: str, port: int, security: KafkaSecurity, exc: ssl.SSLError) -> str:
    """Name the failed TLS handshake and the setting most likely at fault."""
    if "ALERT" in str(exc.reason or ""):
        hint = (
            "the broker refused this client's certificate (or its absence); check "
            "kafka.security.ssl_certfile and ssl_keyfile"
        )
    else:
        hint = "check kafka.security.ssl_cafile"
    return (
        f"TLS handshake with {host}:{port} failed ({security.security_protocol}): "
        f"{exc.reason or exc}; {hint}"
    )
