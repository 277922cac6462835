"""``sentinel notify|contain|status|silence`` end to end on the real broker.

Incident events are made by a real :class:`IncidentEngine` from real detections, published
to the per-test alerts topic keyed by dedup key, and consumed by the CLI commands run
through ``streams.cli.main.main`` with the test's settings in the environment. HTTP sinks are a
``ThreadingHTTPServer`` on 127.0.0.1 that verifies HMAC signatures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from signal import SIGTERM

import pytest

from alerting.containment import ModelContainment
from alerting.delivery import FailedDelivery
from alerting.delivery_state import DeliveryState, DeliveryStatus, delivery_topic
from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent, time_text
from alerting.relearn import fold_relearn_records, relearn_topic
from alerting.silences import fold_silences, silences_topic
from detectors.base import SignalKind
from streams.cli.main import main
from streams.cli.ops import EXIT_DEAD_LETTERS
from streams.kafka.topics import read_topic_to_end
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.incidents import publish_incidents, publish_records, three_incidents
from tests.integration.webhook_receiver import Recorder, serve
from tests.integration.workers import use_settings_env
from tests.unit.alerting.helpers import (
    PLAYBOOK_DIR,
    T0,
    detection,
    minutes,
    playbooks,
    policy,
    signal,
)

pytestmark = pytest.mark.integration

SECRET = "cli-integration-secret"
FAIL_FIRST = 3


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(SECRET.encode(), fail_first=FAIL_FIRST)


@pytest.fixture
def webhook(recorder: Recorder) -> Iterator[str]:
    with serve(recorder) as url:
        yield url


@pytest.fixture
def cli_env(service_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings as SENTINEL_* variables, as a deployment would set them."""
    extra = {
        "SENTINEL_DETECTION__PLAYBOOKS_DIR": str(PLAYBOOK_DIR),
        "SENTINEL_NOTIFY_WEBHOOK_SECRET": SECRET,
    }
    return use_settings_env(monkeypatch, service_settings, extra)


@pytest.fixture
def notify_file(tmp_path: Path) -> Path:
    path = tmp_path / "notify.toml"
    path.write_text(
        "[retry]\nmax_attempts = 6\ninitial_backoff_s = 0.05\nmax_backoff_s = 0.2\n"
        "[http]\ntimeout_s = 5\nuse_env_proxy = false\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_notify_webhook_delivers_every_incident_once_through_an_outage(
    kafka_broker: KafkaBroker,
    cli_env: Settings,
    webhook: str,
    recorder: Recorder,
    notify_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = three_incidents()
    assert len(events) == 3
    # at-least-once upstream: the first event twice; and one poison record
    publish_incidents(kafka_broker.bootstrap, cli_env.topics.alerts, [*events, events[0]])
    publish_records(kafka_broker.bootstrap, cli_env.topics.alerts, [(b"x", b"{not an incident")])

    rc = main(
        [
            "notify",
            "--sink",
            "webhook",
            "--url",
            webhook,
            "--config-file",
            str(notify_file),
            "--until-idle",
            "3",
            "--max-seconds",
            "40",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == EXIT_DEAD_LETTERS, err  # the poison record was dead-lettered
    assert "1 event(s) went to the dead-letter topic" in err
    received = [IncidentEvent.model_validate_json(b) for b in recorder.accepted]
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in events)
    assert recorder.bad_signatures == 0
    assert recorder.requests == len(events) + FAIL_FIRST
    assert "5 record(s)" in out
    assert "delivered 3, duplicate 1, stale 0, dead lettered 0" in out
    assert "undecodable 1" in out
    assert " s; stopped: no new record for 3 s (--until-idle)" in out
    assert SECRET not in out + err
    dead = read_topic_to_end(kafka_broker.bootstrap, cli_env.topics.dead_letter)
    assert len(dead) == 1
    assert json.loads(dead[0].value or b"")["reason"].startswith("invalid IncidentEvent")

    # a second run of the same group has nothing left to do: offsets were committed
    rc = main(["notify", "--sink", "webhook", "--url", webhook, "--config-file",
               str(notify_file), "--until-idle", "2", "--max-seconds", "20"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "0 record(s)" in out
    assert recorder.requests == len(events) + FAIL_FIRST


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_notify_dead_letters_permanent_failures(
    kafka_broker: KafkaBroker,
    cli_env: Settings,
    notify_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rec = Recorder(SECRET.encode(), always=422, error_body=b"bad payload:\nno 'summary'\x00\n")
    with serve(rec, "/") as url:
        events = three_incidents()[:2]
        publish_incidents(kafka_broker.bootstrap, cli_env.topics.alerts, events)
        rc = main(["notify", "--sink", "webhook", "--url", url,
                   "--config-file", str(notify_file), "--until-idle", "3",
                   "--max-seconds", "40"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert rc == EXIT_DEAD_LETTERS
    assert "delivered 0, duplicate 0, stale 0, dead lettered 2" in out
    assert rec.requests == 2  # 422 is permanent: no retries
    dead = read_topic_to_end(kafka_broker.bootstrap, cli_env.topics.dead_letter)
    letters = [FailedDelivery.model_validate_json(r.value or b"") for r in dead]
    assert sorted(d.event.event_id for d in letters) == sorted(e.event_id for e in events)
    # the receiver's error text is kept, on one line, control characters escaped
    reason = "HTTP 422 (permanent): bad payload:\\nno 'summary'\\x00"
    assert all(d.reason == reason and d.sink == "webhook" for d in letters), letters[0].reason
    assert {r.key for r in dead} == {e.key() for e in events}


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_contain_dry_run_publishes_nothing_then_contain_and_status(
    kafka_broker: KafkaBroker,
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = three_incidents()
    publish_incidents(kafka_broker.bootstrap, cli_env.topics.alerts, events)
    bounded = ["--until-idle", "3", "--max-seconds", "15"]

    assert main(["contain", "--dry-run"]) == 0  # ends by itself once the plan is shown
    out, _ = capsys.readouterr()
    assert "would publish 2, no action 1" in out
    assert "stopped: end of the alerts topic (the current plan)" in out
    assert read_topic_to_end(kafka_broker.bootstrap, cli_env.topics.control) == []

    # the dry run committed nothing, so the real run still sees every alert
    assert main(["contain", *bounded]) == 0
    out, _ = capsys.readouterr()
    assert "published 2, would publish 0, no action 1" in out
    control = read_topic_to_end(kafka_broker.bootstrap, cli_env.topics.control)
    snaps = {r.key: ModelContainment.model_validate_json(r.value or b"") for r in control}
    assert set(snaps) == {b"support-bot", b"faq-bot"}
    actions = [m.action.action for m in snaps[b"support-bot"].measures]
    assert actions == ["route_to_fallback", "enable_filter"]

    assert main(["status"]) == 0
    out, _ = capsys.readouterr()
    assert "route_to_fallback(support-bot-safe)" in out
    assert "faq-bot: " in out
    assert "Open incidents" in out
    for e in events:
        assert e.incident_id in out
    assert "critical_event:self_harm" in out
    assert "SEV1" in out

    # resolving one incident closes it in status and releases its containment
    resolved = IncidentEngine(policy(), playbooks())
    resolved.observe(detection(T0, sig=signal(SignalKind.CRITICAL_EVENT, feature="self_harm")))
    [res] = [e for e in resolved.tick(T0 + minutes(300)) if e.incident_id == events[0].incident_id]
    publish_incidents(kafka_broker.bootstrap, cli_env.topics.alerts, [res])
    assert main(["contain", *bounded]) == 0
    assert main(["status"]) == 0
    out, _ = capsys.readouterr()
    assert "support-bot: no containment" in out
    assert events[0].incident_id not in out.split("Open incidents")[1]
    assert events[1].incident_id in out.split("Open incidents")[1]


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_status_shows_each_incidents_delivery_per_sink_and_the_worker_lag(
    kafka_broker: KafkaBroker,
    cli_env: Settings,
    webhook: str,
    recorder: Recorder,
    notify_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = three_incidents()
    publish_incidents(kafka_broker.bootstrap, cli_env.topics.alerts, events)
    # two events no worker has read: the worker group's lag
    publish_records(kafka_broker.bootstrap, cli_env.topics.inputs, [(None, b"{}"), (None, b"{}")])
    bounded = ["--config-file", str(notify_file), "--until-idle", "2", "--max-seconds", "30"]
    # the webhook fails its first requests: the first event is retried, then delivered
    assert main(["notify", "--sink", "webhook", "--url", webhook, *bounded]) == 0
    # a second sink that refuses everything: its deliveries are dead-lettered
    rec = Recorder(SECRET.encode(), always=404, error_body=b"no such hook")
    with serve(rec, "/") as url:
        rc = main(["notify", "--sink", "webhook", "--url", url, "--group-id", "second",
                   *bounded])  # fmt: skip
    assert rc == EXIT_DEAD_LETTERS
    capsys.readouterr()
    states = read_topic_to_end(kafka_broker.bootstrap, delivery_topic(cli_env.topics.alerts))
    seen = [DeliveryState.model_validate_json(r.value or b"") for r in states]
    assert DeliveryStatus.RETRYING in {s.status for s in seen}

    # no worker runs: its health is unreachable, its lag is every event published
    assert main(["status", "--worker-url", "http://127.0.0.1:9"]) == 0
    out, _ = capsys.readouterr()
    delivery = out.split("Delivery per sink")[1].split("Silences")[0]
    first = f"webhook (group {cli_env.worker.app_id}-notify-webhook)"
    for e in events:
        lines = [ln for ln in delivery.splitlines() if ln.strip().startswith(e.incident_id)]
        assert len(lines) == 2, delivery  # one line per sink
        assert f"{first}: delivered (trigger seq 1, " in lines[1], lines
        assert "webhook (group second): dead_lettered (trigger seq 1, 1 attempt" in lines[0]
        assert lines[0].endswith("HTTP 404 (permanent): no such hook"), lines[0]
    retried = [ln for ln in delivery.splitlines() if f"{first}: delivered" in ln]
    assert any(f"{FAIL_FIRST + 1} attempts" in ln for ln in retried), retried
    worker = out.split("Worker:")[1]
    assert "health: unreachable at http://127.0.0.1:9/readyz" in worker
    assert f"group {cli_env.worker.app_id}: lag 2 record(s) in total" in worker
    assert f"{cli_env.topics.inputs}: lag 2 record(s), end 2, committed on 0/" in worker


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_silence_add_list_expire_round_trip(
    kafka_broker: KafkaBroker,
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = main(["silence", "add", "--model", "support-bot", "--version", "v2",
               "--segment", "tenant=acme", "--type", "toxicity_rate", "--duration", "2h",
               "--comment", "index rebuild", "--created-by", "sre-test"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert rc == 0
    sid = out.splitlines()[0]
    assert sid.startswith("sil-")

    assert main(["silence", "list"]) == 0
    out, _ = capsys.readouterr()
    line = next(ln for ln in out.splitlines() if ln.startswith(sid))
    assert "active" in line
    assert "model=support-bot version=v2 tenant=acme type=toxicity_rate" in line
    assert "sre-test" in line
    assert "index rebuild" in line
    topic = silences_topic(cli_env.topics.control)
    records = read_topic_to_end(kafka_broker.bootstrap, topic)
    now = datetime.now(UTC)
    [active] = fold_silences(((r.key, r.value) for r in records), now)
    assert active.id == sid
    assert active.segment == {"tenant": "acme"}
    assert 7190 < (active.ends_at - now).total_seconds() <= 7200
    assert time_text(active.ends_at) in line  # aware UTC, ISO, to the second

    assert main(["status"]) == 0
    assert sid in capsys.readouterr().out

    assert main(["silence", "expire", sid]) == 0
    assert "expired at" in capsys.readouterr().out
    assert main(["silence", "list"]) == 0
    assert sid not in capsys.readouterr().out
    assert main(["silence", "list", "--all"]) == 0
    assert "expired" in capsys.readouterr().out
    records = read_topic_to_end(kafka_broker.bootstrap, topic)
    assert [r.key for r in records] == [sid.encode(), sid.encode()]
    assert fold_silences(((r.key, r.value) for r in records), datetime.now(UTC)) == []

    assert main(["silence", "expire", sid]) == 0  # idempotent
    assert "already expired" in capsys.readouterr().out
    assert main(["silence", "expire", "sil-nope"]) == 2
    assert "no silence with id" in capsys.readouterr().err


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_relearn_add_from_an_incident_or_a_scope_and_list(
    kafka_broker: KafkaBroker,
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    critical, downvotes, drift = three_incidents()
    publish_incidents(kafka_broker.bootstrap, cli_env.topics.alerts, [critical, downvotes, drift])
    rc = main(["relearn", "add", "--incident", downvotes.incident_id,
               "--reason", "new feedback widget", "--by", "sre-test"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert rc == 0, out
    from_incident = out.splitlines()[0]
    assert from_incident.startswith("rl-")
    rc = main(["relearn", "add", "--model", "support-bot", "--segment", "tenant=acme",
               "--signal", "confidence_shift", "--signal", "input_drift",
               "--reason", "acme moved to the new index"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert rc == 0, out
    from_scope = out.splitlines()[0]
    # Refused, and nothing published: no baseline, no such incident, no scope, no reason.
    assert main(["relearn", "add", "--incident", critical.incident_id, "--reason", "x"]) == 2
    assert "no learned baseline" in capsys.readouterr().err
    assert main(["relearn", "add", "--incident", "inc-nope", "--reason", "x"]) == 1
    assert "unknown incident id 'inc-nope'" in capsys.readouterr().err
    assert main(["relearn", "add", "--reason", "x"]) == 2
    assert "--incident ID, or --model" in capsys.readouterr().err
    assert main(["relearn", "add", "--model", "m", "--reason", " "]) == 2
    assert "reason is required" in capsys.readouterr().err

    records = read_topic_to_end(kafka_broker.bootstrap, relearn_topic(cli_env.topics.control))
    book = fold_relearn_records((r.key, r.value) for r in records)
    assert sorted(book) == sorted([from_incident, from_scope])
    rec = book[from_incident]
    assert (rec.scope, rec.signals) == (downvotes.labels, (SignalKind.DOWNVOTE_RATE,))
    assert (rec.incident_id, rec.requested_by) == (downvotes.incident_id, "sre-test")
    scoped = book[from_scope]
    assert scoped.scope.segment == {"tenant": "acme"}
    assert scoped.signals == (SignalKind.CONFIDENCE_SHIFT, SignalKind.INPUT_DRIFT)

    assert main(["relearn", "list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(from_scope))
    assert "confidence_shift, input_drift on support-bot all versions tenant=acme" in line
    assert "acme moved to the new index" in line
    assert downvotes.incident_id in next(
        ln for ln in out.splitlines() if ln.startswith(from_incident)
    )


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_bad_input_exits_2_without_echoing_secrets(
    cli_env: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SENTINEL_NOTIFY_WEBHOOK_SECRET")
    assert main(["notify", "--sink", "webhook", "--url", "http://127.0.0.1:9/"]) == 2
    assert "SENTINEL_NOTIFY_WEBHOOK_SECRET" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[slack]\nwebhook_url = "https://hooks.example/T0/SECRETPART"\ncolour = 1\n')
    assert main(["notify", "--sink", "slack", "--config-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "slack.colour: unknown key" in err
    assert "SECRETPART" not in err
    with pytest.raises(SystemExit) as exc:
        main(["silence", "add", "--model", "m", "--duration", "2 hours", "--comment", "x"])
    assert exc.value.code == 2
    assert "invalid duration" in capsys.readouterr().err


@pytest.mark.timeout(180)  # a hang guard; includes the session broker's start when first
def test_notify_stops_cleanly_on_sigterm(
    cli_env: Settings, webhook: str, notify_file: Path
) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli.main",
            "notify",
            "--sink",
            "webhook",
            "--url",
            webhook,
            "--config-file",
            str(notify_file),
            "--max-seconds",
            "50",
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        started = proc.stderr.readline()
        assert "notify webhook:" in started
        time.sleep(2)  # let it join the group and poll
        proc.send_signal(SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    assert "stopped: SIGTERM received" in out
    assert "delivered 0" in out
    assert SECRET not in out + err
