"""Console startup and first paint with 100k incident events on the alerts topic.

    .venv/bin/python bench/console.py [--events 100000] [--chromium /usr/bin/chromium]

Starts its own single-node broker (or uses SENTINEL_BENCH_BROKER=host:port), publishes
N incident events (25 models, 4 lifecycle steps per incident: trigger, two updates,
resolve; every 10th incident left open) to a fresh alerts topic, then starts
``sentinel console`` as a user would and measures:

- startup: process start until ``/healthz`` says the topics were read to their end
  (the in-memory index built), and the console's own read time;
- first paint: headless Chromium (Debian's) logs in and opens an incident page and the
  incident list; the browser's first-contentful-paint entry (navigation start = 0) and
  the page's load time are printed.

Timings are printed, never asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kafka import KafkaProducer  # noqa: E402

from alerting.model import (  # noqa: E402
    EventRange,
    Evidence,
    IncidentAction,
    IncidentEvent,
    IncidentStatus,
    Labels,
    Severity,
    event_id_of,
)
from bench.broker import bench_broker  # noqa: E402
from detectors.base import Direction, Signal, SignalKind  # noqa: E402
from streams.console.auth import hash_password  # noqa: E402
from streams.devtools.broker import free_port  # noqa: E402
from streams.settings import load_settings  # noqa: E402
from tests.integration.workers import child_env  # noqa: E402

USER, PASSWORD = "bench", "bench-password"
STEPS = (
    (IncidentAction.TRIGGER, IncidentStatus.FIRING),
    (IncidentAction.UPDATE, IncidentStatus.ESCALATED),
    (IncidentAction.UPDATE, IncidentStatus.ESCALATED),
    (IncidentAction.RESOLVE, IncidentStatus.RESOLVED),
)


def _say(msg: str) -> None:
    print(f"[console-bench] {msg}", file=sys.stderr, flush=True)


def incident_events(n: int) -> list[IncidentEvent]:
    """At least ``n`` incident events: lifecycle steps of incidents over 25 models."""
    start = datetime(2025, 1, 6, tzinfo=UTC)
    out: list[IncidentEvent] = []
    i = -1
    while len(out) < n:
        i += 1
        model = f"model-{i % 25:02d}"
        labels = Labels(model=model, segment={"tenant": f"t{i % 7}"} if i % 3 else {})
        first = start + timedelta(minutes=i)
        steps = STEPS if i % 10 else STEPS[:3]  # every 10th incident stays open
        for seq, (action, status) in enumerate(steps, start=1):
            at = first + timedelta(minutes=10 * seq)
            signal = Signal(
                kind=SignalKind.TOXICITY_RATE,
                detector="ToxicityRate",
                statistic=12.0 + seq,
                threshold=11.5,
                baseline=0.01,
                observed=0.04 + 0.01 * seq,
                effect_size=3.0,
                n_observations=1000 + 100 * seq,
                direction=Direction.UP,
                first_index=0,
                last_index=1000 + 100 * seq,
                feature="toxicity",
            )
            incident_id = f"inc-bench-{i:06d}"
            out.append(
                IncidentEvent(
                    event_id=event_id_of(incident_id, seq),
                    incident_id=incident_id,
                    dedup_key=f"sentinel-bench-{i:06d}",
                    sequence=seq,
                    action=action,
                    status=status,
                    severity=Severity.from_rank(1 + i % 4),
                    severity_reasons=("effect size 3.00 >= 1 (+3)", "bench"),
                    labels=labels,
                    incident_type="toxicity_rate:toxicity",
                    summary=f"bench incident {i} on {model}",
                    evidence=Evidence(
                        signal=signal,
                        ranges=(
                            EventRange(
                                topic="bench.outputs",
                                partition=0,
                                first_offset=i * 10,
                                last_offset=i * 10 + 9,
                            ),
                        ),
                        sample_request_ids=(f"req-{i}-a", f"req-{i}-b"),
                        window_start=first,
                        window_end=at,
                    ),
                    first_seen=first,
                    last_seen=at,
                    emitted_at=at,
                    note="bench",
                )
            )
    return out


def _publish(bootstrap: str, topic: str, events: list[IncidentEvent]) -> float:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=50, batch_size=1024 * 1024, acks=1
    )
    began = time.monotonic()
    for e in events:
        producer.send(topic, key=e.key(), value=e.to_json_bytes())
    producer.flush(timeout=300)
    producer.close()
    return time.monotonic() - began


def _health(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except OSError:
        return {}


PAINT_JS = """() => {
  const paint = performance.getEntriesByType('paint');
  const fcp = paint.find(e => e.name === 'first-contentful-paint') || paint[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return {fcp: fcp ? fcp.startTime : null, load: nav ? nav.loadEventEnd : null,
          response: nav ? nav.responseEnd : null};
}"""


WAIT_PAINT_JS = "() => performance.getEntriesByType('paint').length > 0"


def _browser(url: str, chromium: str, incident_id: str) -> dict[str, dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, Any]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(url + "/login")
            page.fill("input[name=user]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            for name, path in (
                ("incident page", f"/incidents/{incident_id}"),
                ("incident list (open + last 24 h)", "/incidents"),
                ("incident list (all, first 500 rows)", "/incidents?status=all"),
            ):
                page.goto(url + path)
                page.wait_for_load_state("load")
                # Paint entries are queued after the frame is shown: wait for one (5 s).
                page.wait_for_function(WAIT_PAINT_JS, timeout=5000)
                out[name] = page.evaluate(PAINT_JS)
        finally:
            browser.close()
    return out


def main() -> int:
    """The run, phase by phase in the order its report prints (long on purpose: one
    straight script reads better than helpers that each print a piece)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--chromium", default=os.environ.get("SENTINEL_CHROMIUM", "/usr/bin/chromium")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sentinel-console-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with bench_broker(tmp, _say) as bootstrap:
            suffix = str(int(time.time()))
            port = free_port()
            settings = load_settings(
                env={},
                overrides={
                    "kafka.broker": f"kafka://{bootstrap}",
                    "worker.app_id": f"cbench-{suffix}",
                    "topics.alerts": f"cbench{suffix}.alerts",
                    "topics.control": f"cbench{suffix}.control",
                    "topics.dead_letter": f"cbench{suffix}.dead-letter",
                    "console.port": port,
                    "console.users": [
                        {
                            "name": USER,
                            "role": "operator",
                            "password_hash": hash_password(PASSWORD),
                        }
                    ],
                },
            )
            from streams.kafka.topics import ensure_topics

            ensure_topics(settings, [bootstrap])
            events = incident_events(args.events)
            size = sum(len(e.to_json_bytes()) for e in events)
            _say(f"publishing {len(events):,} incident events ({size / 1e6:.1f} MB)")
            publish_s = _publish(bootstrap, settings.topics.alerts, events)
            _say(f"published in {publish_s:.1f} s; starting sentinel console")
            url = f"http://127.0.0.1:{port}"
            log = (tmp / "console.log").open("wb")
            began = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli.main", "console", "--log-level", "warning"],
                env=child_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
            try:
                first_answer = None
                health: dict[str, Any] = {}
                while time.monotonic() - began < 600:
                    health = _health(url)
                    if health and first_answer is None:
                        first_answer = time.monotonic() - began
                    if health.get("caught_up"):
                        break
                    time.sleep(0.1)
                ready = time.monotonic() - began
                if not health.get("caught_up"):
                    raise SystemExit("the console did not catch up in 600 s")
                open_id = events[-2].incident_id  # an open (unresolved) incident? any will do
                paints = _browser(url, args.chromium, open_id)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
                log.close()
            print(f"incident events on the alerts topic: {len(events):,} ({size / 1e6:.1f} MB)")
            print(f"incidents: {health.get('incidents'):,}")
            print(f"console process start -> HTTP answering: {first_answer:.2f} s")
            print(f"console process start -> topics read, index built: {ready:.2f} s")
            print(
                f"  of which reading and folding the topics: {health.get('startup_read_s'):.2f} s"
            )
            for name, p in paints.items():
                fcp = p.get("fcp")
                print(
                    f"{name}: first contentful paint {fcp:.0f} ms, load {p.get('load'):.0f} ms "
                    f"(navigation start = 0)"
                    if fcp is not None
                    else f"{name}: no paint entry; load {p.get('load')} ms"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
