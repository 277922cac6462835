"""Publisher SDK for ML serving code: validated events to Kafka, batched and idempotent.

>>> from streams.sdk import SentinelPublisher                      # doctest: +SKIP
>>> with SentinelPublisher("127.0.0.1:9092") as pub:                 # doctest: +SKIP
...     pub.publish_output(InferenceOutput(...)).get(timeout=10)

Built on kafka-python's ``KafkaProducer`` with ``enable_idempotence=True`` and
``acks="all"`` (no duplicates or reordering from producer retries), and ``linger_ms``
batching. Each ``publish_*`` returns kafka-python's future: ``.get(timeout)`` blocks and
raises the delivery error. Callers that do not wait on futures still see failures:
:meth:`SentinelPublisher.flush` raises :class:`PublishError` listing every delivery that
failed since the previous flush.

Records are keyed by request id, so with equal partition counts the input, output,
feedback and evaluations of one request land on the same partition number of their
topics (the default partitioner hashes the key), which keeps the join by request id local
to one worker and ordered per request.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, TypeVar

from kafka import KafkaProducer

from streams.contract.decode import DEFAULT_LIMITS, IngressLimits, size_problem, window_problem
from streams.contract.events import (
    AnyEvent,
    Evaluation,
    EventTopics,
    EventType,
    Feedback,
    InferenceInput,
    InferenceOutput,
    dump_event,
)

_E = TypeVar("_E", InferenceInput, InferenceOutput, Feedback, Evaluation)

DEFAULT_PRODUCER_CONFIG: Final[Mapping[str, Any]] = {
    "enable_idempotence": True,
    "acks": "all",
    "linger_ms": 20,
    "batch_size": 64 * 1024,
    "retries": 2**31 - 1,  # bounded by delivery_timeout_ms
    "delivery_timeout_ms": 120_000,
    "max_in_flight_requests_per_connection": 5,
}


class PublishError(RuntimeError):
    """One or more events could not be delivered (or could not be serialised)."""

    def __init__(self, message: str, failures: Sequence[tuple[str, BaseException]] = ()):
        super().__init__(message)
        self.failures = list(failures)
        """(request id, exception) for each failed delivery."""


class RejectedEventError(ValueError):
    """A valid event that the ingress would dead-letter all the same: its record is over
    the size limit, or its time is outside the window around the clock. Raised by
    :meth:`SentinelPublisher.publish` instead of sending it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        """The dead-letter reason the ingress would give (``too_large``, ...)."""


class SentinelPublisher:
    """Publish Sentinel events to Kafka.

    ``bootstrap_servers`` is ``"host:port"``, a list of them, or a ``kafka://`` URL;
    ``topics`` names the per-kind topics (the service defaults when omitted). ``limits``
    (the ingress defaults when omitted: set them as the worker's are) and ``clock`` are
    what :meth:`publish` checks a record and its time against. Any other keyword is passed
    to ``KafkaProducer`` (``compression_type="zstd"``, ``linger_ms``, security settings,
    ...). Thread-safe, like the producer it wraps.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topics: EventTopics | None = None,
        *,
        limits: IngressLimits = DEFAULT_LIMITS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        **producer_config: Any,
    ) -> None:
        self.topics = topics or EventTopics()
        self.limits = limits
        self.clock = clock
        config: dict[str, Any] = {**DEFAULT_PRODUCER_CONFIG, **producer_config}
        if not config.get("enable_idempotence", True):
            raise ValueError("SentinelPublisher requires enable_idempotence=True")
        self._producer = KafkaProducer(
            bootstrap_servers=_bootstrap(bootstrap_servers),
            key_serializer=None,
            value_serializer=None,
            **config,
        )
        self._lock = threading.Lock()
        self._failures: list[tuple[str, BaseException]] = []
        self.sent = 0
        self.failed = 0

    def topic_for(self, event_type: EventType) -> str:
        return self.topics.topic_of(event_type)

    def publish(self, event: AnyEvent, *, topic: str | None = None) -> Any:
        """Validate and send any event to its kind's topic (or ``topic``); returns the future.

        Raises ``pydantic.ValidationError`` at once if ``event`` is not valid (models built
        with ``model_construct`` skip validation; this re-checks them), and
        :class:`RejectedEventError` if the ingress would dead-letter it all the same (a record
        over its size limit, every field within its own; a time ahead of the clock by more
        than the ingress allows: a producer's clock minutes fast), so that the producer hears
        of it. An old time is sent: a backfill is for ``sentinel replay``, which takes every
        time (the worker dead-letters it as ``past_timestamp``).
        """
        checked = type(event).model_validate(event.model_dump())
        value = dump_event(checked)
        too_large = size_problem(len(value), self.limits)
        if too_large is not None:
            raise RejectedEventError("too_large", f"{checked.request_id}: {too_large}")
        outside = window_problem(checked.timestamp, self.clock(), self.limits)
        if outside is not None and outside[0] == "future_timestamp":
            raise RejectedEventError(outside[0], f"{checked.request_id}: {outside[1]}")
        key = checked.request_id.encode()
        future = self._producer.send(
            topic or self.topic_for(checked.event_type),
            key=key,
            value=value,
            # The record time is the event's: a worker draining a backlog keeps its
            # partitions in step by it, and a replay from Kafka merges them by it.
            timestamp_ms=round(checked.timestamp.timestamp() * 1000),
        )
        future.add_callback(self._on_success)
        future.add_errback(self._on_error, checked.request_id)
        return future

    def publish_input(self, event: InferenceInput) -> Any:
        return self.publish(_expect(event, InferenceInput))

    def publish_output(self, event: InferenceOutput) -> Any:
        return self.publish(_expect(event, InferenceOutput))

    def publish_feedback(self, event: Feedback) -> Any:
        return self.publish(_expect(event, Feedback))

    def publish_evaluation(self, event: Evaluation) -> Any:
        return self.publish(_expect(event, Evaluation))

    def _on_success(self, _metadata: Any) -> None:
        with self._lock:
            self.sent += 1

    def _on_error(self, request_id: str, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self._failures) < 10_000:
                self._failures.append((request_id, exc))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event sent so far is delivered or failed.

        Raises :class:`PublishError` if any delivery failed since the last flush (or if the
        timeout expired first).
        """
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:
            raise PublishError(f"flush did not complete: {exc}") from exc
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            first_id, first = failures[0]
            raise PublishError(
                f"{len(failures)} event(s) failed delivery; first: request {first_id}: "
                f"{type(first).__name__}: {first}",
                failures,
            )

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (raising on failures) and close the producer."""
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout=timeout)

    def __enter__(self) -> SentinelPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the original error with a flush failure
            with contextlib.suppress(PublishError):
                self.close()


def _bootstrap(servers: str | Sequence[str]) -> list[str]:
    if isinstance(servers, str):
        servers = servers.removeprefix("kafka://").replace(";", ",").split(",")
    out = [s.strip().removeprefix("kafka://") for s in servers if s.strip()]
    if not out:
        raise ValueError("no bootstrap servers given")
    return out


def _expect(event: Any, cls: type[_E]) -> _E:
    if not isinstance(event, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(event).__name__}")
    return event
