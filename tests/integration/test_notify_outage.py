"""A notification endpoint down for minutes, in real time, under ``sentinel notify``.

``sentinel notify --sink webhook`` runs as a subprocess against the real broker. The
webhook endpoint is down for :data:`OUTAGE_S` seconds of wall time: first nothing listens
on its port (connection refused), then a server answers 503 to every request. Meanwhile
incident events (triggers, escalations and resolves of many incidents, some of them
published twice, as an at-least-once producer does) keep arriving on the alerts topic. Then
the endpoint recovers.

Every incident event must reach the endpoint exactly once (by event id), with a valid
HMAC signature, in order per dedup key; ``sentinel notify`` must neither exit nor
dead-letter anything, must have committed every record, and its log must show the
retries through both kinds of failure. The retry back-off is capped at a few seconds
through the notify file (``[retry] max_backoff_s``), so the endpoint's recovery is seen
within seconds rather than the production cap of a minute.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from signal import SIGTERM

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from pydantic import SecretStr

from alerting.clock import SystemClock
from alerting.delivery import RetryPolicy
from alerting.engine import IncidentEngine
from alerting.model import IncidentAction, IncidentEvent
from alerting.sinks import WebhookSink
from alerting.transport import UrllibTransport
from detectors.base import SignalKind
from streams.kafka.topics import ensure_topics
from streams.runtime.consumers import LoopStats
from streams.runtime.notify_consumer import HANDED_OVER, run_notify_consumer
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.traffic import records_written
from tests.integration.webhook_receiver import Recorder, serve
from tests.integration.workers import wait_for, worker_process
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy, signal

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "notify-outage-secret"
REFUSED_S = 60.0
"""Seconds during which nothing listens on the endpoint's port (connection refused)."""
OUTAGE_S = 125.0
"""Seconds the endpoint is down in all: refused, then 503 until this much time has passed
since the first failed attempt."""
PUBLISH_EVERY_S = 2.5
"""Wall seconds between two incident events published to the alerts topic."""
MAX_BACKOFF_S = 4.0
"""The notify file's back-off cap for this test (production: 60 s)."""
MODELS = 14
DUPLICATES = 6
"""Events published a second time, later (an at-least-once producer's redelivery)."""


def _incident_events() -> list[IncidentEvent]:
    """Triggers, escalations and resolves, in engine order: a downvote incident for each of
    ``MODELS`` models (every third one escalated) and an input-drift one for every other."""
    eng = IncidentEngine(policy(), playbooks())
    out: list[IncidentEvent] = []
    for i in range(MODELS):
        at = T0 + minutes(i)
        out += eng.observe(detection(at, model=f"model-{i:02d}"))  # downvote_rate
        if i % 2 == 0:
            out += eng.observe(
                detection(at, model=f"model-{i:02d}", sig=signal(SignalKind.INPUT_DRIFT))
            )
        if i % 3 == 0:  # escalate the downvote incident of every third model
            strong = signal(effect=1.5, p_value=1e-9, last_index=5)
            out += eng.observe(detection(at + minutes(1), model=f"model-{i:02d}", sig=strong))
    out += eng.tick(T0 + minutes(MODELS + 300))
    return out


def _schedule(events: list[IncidentEvent]) -> list[IncidentEvent]:
    """The publishing order: every event once, in engine order, plus ``DUPLICATES`` of the
    earlier events again a few places later."""
    out = list(events)
    step = len(events) // (DUPLICATES + 1)
    for k in range(DUPLICATES, 0, -1):
        original = events[k * step - step // 2]
        out.insert(k * step + 2, original)
    return out


def _group_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Records of ``topic`` that ``group`` has not committed (the broker's count)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = admin.list_group_offsets({group: tps}).get(group, {})
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
        done = {tp: committed[tp].offset if tp in committed else 0 for tp in tps}
        return sum(ends[tp].offset - max(0, done[tp]) for tp in tps)
    finally:
        admin.close()


@pytest.mark.soak  # two minutes of real outage: in make soak (test_alerting_cli covers delivery
# through a shorter outage in make test, and the next test an outage over the poll interval)
def test_notify_delivers_everything_once_after_minutes_of_endpoint_outage(
    kafka_broker: KafkaBroker, service_settings: Settings, tmp_path: Path
) -> None:
    events = _incident_events()
    actions = {a: sum(e.action == a for e in events) for a in IncidentAction}
    assert min(actions.values()) >= 3, actions  # triggers, updates and resolves
    schedule = _schedule(events)
    assert len(schedule) == len(events) + DUPLICATES
    notify_toml = tmp_path / "notify.toml"
    notify_toml.write_text(
        f"[retry]\nmax_backoff_s = {MAX_BACKOFF_S}\n[http]\ntimeout_s = 5\nuse_env_proxy = false\n",
        encoding="utf-8",
    )
    # Hold the endpoint's port with a socket that is bound but not listening: connections
    # are refused, and no other process can take the port before the server starts.
    hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hold.bind(("127.0.0.1", 0))
    port = int(hold.getsockname()[1])
    url = f"http://127.0.0.1:{port}/sentinel"
    rec = Recorder(SECRET.encode(), always=503)
    log = tmp_path / "notify.log"
    argv = ["-m", "streams.cli.main", "notify", "--sink", "webhook", "--url", url]
    argv += ["--config-file", str(notify_toml)]
    topic = service_settings.topics.alerts
    partitions = service_settings.kafka.topic_partitions
    group = f"{service_settings.worker.app_id}-notify-webhook"
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")

    def publish(event: IncidentEvent) -> None:
        producer.send(topic, key=event.key(), value=event.to_json_bytes()).get(timeout=30)

    def text() -> str:
        return log.read_text(errors="replace")

    extra = {"SENTINEL_NOTIFY_WEBHOOK_SECRET": SECRET}
    with ExitStack() as stack:
        stack.callback(hold.close)
        stack.callback(producer.close, timeout=10)
        proc = stack.enter_context(worker_process(service_settings, argv, log, extra_env=extra))
        wait_for(lambda: "notify webhook:" in text(), 60, "notify to start", log)
        publish(schedule[0])
        wait_for(lambda: "attempt 1 for" in text(), 60, "the first failed attempt", log)
        down_at = time.monotonic()
        refused_until, up_at = down_at + REFUSED_S, down_at + OUTAGE_S
        pending = iter(schedule[1:])
        published = 1
        serving = False
        next_at = down_at + PUBLISH_EVERY_S
        while published < len(schedule) or rec.always is not None:
            now = time.monotonic()
            assert proc.poll() is None, f"notify exited:\n{text()[-3000:]}"
            if not serving and now >= refused_until:
                hold.close()  # refused -> a server that answers 503
                assert stack.enter_context(serve(rec, "/sentinel", port=port)) == url
                serving = True
            if rec.always is not None and now >= up_at:
                up_at = time.monotonic()
                with rec.lock:
                    rec.always = None  # the endpoint recovers
            if published < len(schedule) and now >= next_at:
                publish(next(pending))
                published += 1
                next_at += PUBLISH_EVERY_S
            time.sleep(0.1)
        assert serving
        wait_for(lambda: len(rec.accepted) >= len(events), 60, "every event to be delivered", log)
        time.sleep(2)  # a late duplicate would show up now
        alive = proc.poll() is None
        proc.send_signal(SIGTERM)
        rc = proc.wait(timeout=30)
    output = text()

    received = [IncidentEvent.model_validate_json(body) for body in rec.accepted]
    ids = [e.event_id for e in received]
    duplicates = len(ids) - len(set(ids))
    refused = len(re.findall(r"attempt \d+ for \S+ failed \(transport error", output))
    unavailable = len(re.findall(r"attempt \d+ for \S+ failed \(HTTP 503\)", output))
    attempts = [int(n) for n in re.findall(r"delivered \S+ \(\S+ seq \d+\) after (\d+)", output)]
    first_ok = min(t for t, status in rec.statuses if status == 200)
    summary = re.findall(r"^ +delivered \d+, duplicate .*$", output, re.MULTILINE)
    print(
        f"\noutage {up_at - down_at:.0f} s ({REFUSED_S:.0f} s connection refused, then 503); "
        f"first delivery {first_ok - down_at:.0f} s after the first failure"
    )
    print(
        f"published {len(schedule)} records ({len(events)} incident events of "
        f"{len({e.dedup_key for e in events})} incidents + {DUPLICATES} redelivered); "
        f"delivered {len(received)}, duplicates {duplicates}"
    )
    print(
        f"retries logged: {refused} refused + {unavailable} HTTP 503; the first event took "
        f"{attempts[0] if attempts else 0} attempts; the endpoint saw {rec.requests} requests"
    )
    print(f"notify's summary: {summary}")

    assert alive, "sentinel notify exited during the outage"
    assert up_at - down_at >= OUTAGE_S
    assert first_ok >= up_at, "a request succeeded while the endpoint was down"
    assert duplicates == 0, "an event was delivered twice"
    assert set(ids) == {e.event_id for e in events}, "an event was lost"
    assert rec.bad_signatures == 0
    for body, event in zip(rec.accepted, received, strict=True):
        assert event.to_json_bytes() == body  # the signed bytes are the event itself
    by_key: dict[str, list[int]] = defaultdict(list)
    for e in received:
        by_key[e.dedup_key].append(e.sequence)
    expected: dict[str, list[int]] = defaultdict(list)
    for e in events:
        expected[e.dedup_key].append(e.sequence)
    assert by_key == expected, "out of order for some dedup key"
    assert refused >= 3, "no retries logged while the connection was refused"
    assert unavailable >= 3, "no retries logged while the endpoint answered 503"
    # Head-of-line: every failure was a retry of the first event, which then got through.
    assert attempts[0] == refused + unavailable + 1, attempts[:3]
    assert rc == 0, output[-3000:]
    assert len(summary) == 1, output[-3000:]
    # a copy read after a later step of its incident was handled counts as stale
    pattern = r"(delivered|duplicate|stale|dead lettered) (\d+)"
    counts = {name: int(n) for name, n in re.findall(pattern, summary[0])}
    assert counts["delivered"] == len(events), summary[0]
    assert counts["duplicate"] + counts["stale"] == DUPLICATES, summary[0]
    assert counts["dead lettered"] == 0, summary[0]
    assert (
        records_written(kafka_broker.bootstrap, service_settings.topics.dead_letter, partitions)
        == 0
    )
    assert _group_lag(kafka_broker.bootstrap, group, topic, partitions) == 0
    assert SECRET not in output


POLL_INTERVAL_MS = 6000
"""kafka-python's ``max_poll_interval_ms`` for the long-outage test (production: 300 s)."""
LONG_OUTAGE_S = 25.0
"""Four poll intervals: before the fix, the member left its group after the first one."""


class _NotifyGroup:
    """``sentinel notify`` members (threads running :func:`run_notify_consumer`) of one
    group, delivering ``events`` from the alerts topic to a webhook port that refuses
    connections until :meth:`serve` opens it."""

    def __init__(
        self, broker: KafkaBroker, settings: Settings, name: str, events: list[IncidentEvent]
    ) -> None:
        ensure_topics(settings, [broker.bootstrap])
        self.bootstrap, self.settings, self.events = broker.bootstrap, settings, events
        self.topic = settings.topics.alerts
        self.group = f"notify-{name}-{settings.worker.app_id}"
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        try:
            for event in events:
                producer.send(self.topic, key=event.key(), value=event.model_dump_json().encode())
            producer.flush(timeout=30)
        finally:
            producer.close()
        self._holder = socket.socket()  # bound, not listening: connection refused
        self._holder.bind(("127.0.0.1", 0))
        self.port = self._holder.getsockname()[1]
        self.rec = Recorder(SECRET.encode())
        self.stop = threading.Event()
        self.failure: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def member(
        self,
        stats: LoopStats,
        retry: RetryPolicy,
        consumer_options: dict[str, int],
        on_poll: Callable[[int, bool], None] | None = None,
    ) -> None:
        def run() -> None:
            try:
                run_notify_consumer(
                    self.bootstrap,
                    self.topic,
                    WebhookSink(f"http://127.0.0.1:{self.port}/hook", SecretStr(SECRET)),
                    dead_letter_topic=self.settings.topics.dead_letter,
                    should_stop=self.stop.is_set,
                    group_id=self.group,
                    transport=UrllibTransport(timeout_s=5, use_env_proxy=False),
                    retry=retry,
                    clock=SystemClock(),
                    stats=stats,
                    on_poll=on_poll,
                    consumer_options=consumer_options,
                )
            except BaseException as exc:  # check() reports it
                self.failure.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def check(self) -> None:
        assert not self.failure, f"notify failed: {self.failure[0]!r}"

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            self.check()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    @contextmanager
    def serve(self) -> Iterator[None]:
        """The endpoint recovers: every event delivered and committed within the block."""
        self._holder.close()
        with serve(self.rec, port=self.port):
            self.wait(
                "every event delivered", lambda: len(self.rec.accepted) >= len(self.events), 90
            )
            partitions = self.settings.kafka.topic_partitions
            self.wait(
                "every record committed",
                lambda: _group_lag(self.bootstrap, self.group, self.topic, partitions) == 0,
                30,
            )
            yield

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.check()

    def delivered_once(self) -> list[str]:
        """The ids the endpoint took, asserted to be each event's once."""
        ids = [IncidentEvent.model_validate_json(b).event_id for b in self.rec.accepted]
        assert sorted(ids) == sorted(e.event_id for e in self.events), "each event once"
        assert self.rec.bad_signatures == 0
        return ids


def test_notify_stays_in_its_group_through_an_outage_longer_than_the_poll_interval(
    kafka_broker: KafkaBroker, service_settings: Settings
) -> None:
    """An outage longer than ``max_poll_interval_ms``: the consumer keeps polling (its
    partitions paused) while deliveries back off, so it stays in its group, and the
    commits after the endpoint's recovery succeed. Before :func:`polling_sleep` the
    member was dropped after one interval and the commit raised ``CommitFailedError``."""
    group = _NotifyGroup(kafka_broker, service_settings, "long", _incident_events()[:5])
    began = time.monotonic()
    group.member(
        LoopStats(),
        RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=3.0),
        {
            "max_poll_interval_ms": POLL_INTERVAL_MS,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
    )
    try:
        time.sleep(LONG_OUTAGE_S)
        with group.serve():
            pass
    finally:
        group.close()
    outage = time.monotonic() - began
    ids = group.delivered_once()
    print(
        f"checked: endpoint refused for {LONG_OUTAGE_S:.0f} s "
        f"({LONG_OUTAGE_S * 1000 / POLL_INTERVAL_MS:.1f} poll intervals), recovered after "
        f"{outage:.0f} s; {len(ids)}/{len(group.events)} delivered once, group lag 0, no exit"
    )


def test_a_member_that_loses_a_partition_mid_backoff_leaves_its_events_to_the_new_owner(
    kafka_broker: KafkaBroker, service_settings: Settings
) -> None:
    """Member A of a notify group holds both partitions and backs off on an event (the
    endpoint refuses); member B joins and the rebalance gives it one of them. A ends the
    backoff (``handed_over``), B delivers that partition's events, A the rest, read again
    from where it stood. Before, A went on retrying after the rebalance: when the event it
    held was on B's partition, both paged it."""
    group = _NotifyGroup(kafka_broker, service_settings, "handover", _incident_events()[:12])
    stats = {"a": LoopStats(), "b": LoopStats()}
    polled: dict[str, list[tuple[int, bool]]] = {"a": [], "b": []}
    retry = RetryPolicy(max_attempts=10_000, initial_backoff_s=0.5, max_backoff_s=2.0)
    options = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

    def member(name: str) -> None:
        group.member(stats[name], retry, options, lambda n, a: polled[name].append((n, a)))

    member("a")
    try:
        group.wait("A to read its first events", lambda: any(n for n, _ in polled["a"]), 120)
        member("b")
        group.wait("A to hand a partition over", lambda: HANDED_OVER in stats["a"].outcomes, 120)
        with group.serve():
            time.sleep(3)  # a second delivery of a handed-over event would come now
    finally:
        group.close()
    ids = group.delivered_once()
    delivered = {m: s.outcomes.get("delivered", 0) for m, s in stats.items()}
    assert delivered["a"] > 0, delivered
    assert delivered["b"] > 0, delivered
    print(
        f"checked: A handed over {stats['a'].outcomes[HANDED_OVER]} delivery on the rebalance; "
        f"{len(ids)}/{len(group.events)} events delivered once (A {delivered['a']}, "
        f"B {delivered['b']}), group lag 0"
    )
