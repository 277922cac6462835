"""The one place that builds kafka-python clients: every command, consumer loop and tool
gets its producer, consumer and admin client here, logged in with ``kafka.security``.

aiokafka clients (the worker's) are built by faust and by
:func:`streams.kafka.security.aiokafka_kwargs`'s callers from the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from streams.kafka.security import KafkaSecurity, kafka_python_kwargs

SEND_TIMEOUT_S: Final = 30.0
"""How long a send, flush or close may wait for the broker (seconds)."""

ClientSecurity = KafkaSecurity | Mapping[str, Any] | None
"""How a client logs in: the settings model, ready kafka-python keyword arguments, or
``None`` for PLAINTEXT."""


def security_kwargs(security: ClientSecurity) -> dict[str, Any]:
    """kafka-python keyword arguments for ``security`` (holds the password: never print)."""
    if security is None:
        return {}
    if isinstance(security, KafkaSecurity):
        return kafka_python_kwargs(security)
    return dict(security)


def producer(bootstrap: Sequence[str], security: ClientSecurity, **options: Any) -> Any:
    """A kafka-python producer (``acks=all`` unless ``options`` say otherwise)."""
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=list(bootstrap),
        **({"acks": "all"} | options),
        **security_kwargs(security),
    )


def consumer(bootstrap: Sequence[str], security: ClientSecurity, **options: Any) -> Any:
    """A kafka-python consumer; topics are subscribed or assigned by the caller."""
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=list(bootstrap), **options, **security_kwargs(security))


def admin(bootstrap: Sequence[str], security: ClientSecurity, **options: Any) -> Any:
    """A kafka-python admin client."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=list(bootstrap),
        **({"client_id": "sentinel-admin"} | options),
        **security_kwargs(security),
    )
