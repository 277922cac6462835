"""The operator console in a real browser (Debian's Chromium, driven by Playwright).

One real worker (``sentinel run``) raises incidents from simulated traffic on the session
broker; one real console (``sentinel console``) serves them; headless Chromium logs in
and uses the pages as an operator would. Checked: the incident list shows exactly the
incidents on the alerts topic and a filter narrows it; a new incident appears without a
reload; an incident page shows its charts and evidence; a silence added in the browser
mutes the next matching detection (the worker's engine records it as muted by that
silence and no trigger reaches the alerts topic); acknowledge and containment publish
records naming who and why; unauthenticated and viewer writes, and writes without the
CSRF token, are refused. The browser's console must stay free of errors throughout.

Screenshots of every page (1280x800 and a phone's 390x844) go to
``$SENTINEL_CONSOLE_SCREENSHOTS`` when set (``docs/console/`` is made that way), else to
the test's temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerting.model import IncidentAction, IncidentEvent, key_id
from alerting.operator import OperatorAction, operator_topic
from alerting.relearn import RelearnRecord, relearn_topic
from alerting.silences import silences_topic
from detectors.base import SignalKind
from streams.console.auth import hash_password
from streams.devtools.broker import free_port
from streams.devtools.scenario import Injection, Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.state import decode as decode_state
from streams.settings import Settings
from tests.conftest import KafkaBroker, per_test_settings
from tests.integration.traffic import (
    AlertsReader,
    after,
    critical_marker,
    output_line,
    publish_lines,
    topic_records,
)
from tests.integration.workers import http_get, wait_for, worker_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = os.environ.get("SENTINEL_CHROMIUM", "/usr/bin/chromium")
H = timedelta(hours=1)
OPERATOR = ("ops", "ops-secret-1")
VIEWER = ("watcher", "viewer-secret-2")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _need_chromium() -> None:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} not found: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")


def _operator_actions(env: Env) -> list[OperatorAction]:
    topic = operator_topic(env.settings.topics.control)
    records = topic_records(env.broker.bootstrap, topic)
    return [OperatorAction.model_validate_json(r.value) for r in records]


def _incident_events(bootstrap: str, topic: str) -> list[IncidentEvent]:
    return [IncidentEvent.model_validate_json(r.value) for r in topic_records(bootstrap, topic)]


def _triggers(bootstrap: str, topic: str) -> list[IncidentEvent]:
    events = _incident_events(bootstrap, topic)
    return [e for e in events if e.action == IncidentAction.TRIGGER]


@dataclass
class Env:
    broker: KafkaBroker
    settings: Settings
    url: str
    dir: Path
    worker_log: Path
    console_log: Path
    shots: Path
    version: str
    versions: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    marker_n: int = 100

    def publish_marker(self, model: str, at: datetime) -> None:
        self.marker_n += 1
        line = critical_marker(model, self.version, at, self.marker_n)
        publish_lines(self.broker.bootstrap, self.settings, [line])

    def health(self) -> dict[str, Any]:
        status, body = http_get(self.url + "/healthz")
        return json.loads(body) if status == 200 else {}


@pytest.fixture(scope="module")
def env(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    _need_chromium()
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    users = [
        {"name": OPERATOR[0], "role": "operator", "password_hash": hash_password(OPERATOR[1])},
        {"name": VIEWER[0], "role": "viewer", "password_hash": hash_password(VIEWER[1])},
    ]
    prefix = f"c{os.getpid()}{int(time.time()) % 100000}"
    settings = per_test_settings(
        kafka_broker.url,
        tmp,
        prefix,
        **{
            "detection.state_flush_seconds": 0.0,
            "console.port": port,
            "console.users": users,
            "console.public_url": f"http://127.0.0.1:{port}",
        },
    )
    scenario = Scenario(
        seed=21,
        duration=7 * H,
        events_per_hour=3600,
        injections=[
            Injection(
                type="toxicity_spike",
                start=3 * H,
                duration=3 * H,
                strength=8.0,
                scope={"model": "support-chat"},
            )
        ],
    )
    sim = Simulator(scenario)
    lines = list(sim.lines())
    versions = {m.name: m.version for m in scenario.models}
    end = scenario.start + scenario.duration
    lines += [
        critical_marker(m, v, after(end, 60 + i), i) for i, (m, v) in enumerate(versions.items())
    ]
    shots = Path(os.environ.get("SENTINEL_CONSOLE_SCREENSHOTS") or tmp / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    worker_log, console_log = tmp / "worker.log", tmp / "console.log"
    reader = AlertsReader(kafka_broker.bootstrap, settings.topics.alerts)
    with worker_process(settings, ["-m", "streams.cli.main", "run"], worker_log):
        publish_lines(kafka_broker.bootstrap, settings, lines, rate=2000.0)

        def markers_paged(events: list[IncidentEvent]) -> bool:
            paged = {e.labels.model for e in events if e.incident_type.startswith("critical")}
            return set(versions) <= paged and any(
                e.incident_type.startswith("toxicity") for e in events
            )

        assert reader.wait(markers_paged, timeout_s=300), worker_log.read_text()[-3000:]
        reader.close()
        with worker_process(settings, ["-m", "streams.cli.main", "console"], console_log):
            url = f"http://127.0.0.1:{port}"
            e = Env(
                kafka_broker,
                settings,
                url,
                tmp,
                worker_log,
                console_log,
                shots,
                next(iter(versions.values())),
                versions,
            )
            wait_for(lambda: e.health().get("caught_up", False), 60, "console", console_log)
            yield e


@pytest.fixture(scope="module")
def browser(env: Env) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, env: Env, viewport: dict[str, int] = DESKTOP) -> Any:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(30_000)

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            env.errors.append(f"{page.url}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: env.errors.append(f"{page.url}: {exc}"))
    return page


def _login(page: Any, env: Env, who: tuple[str, str] = OPERATOR, target: str = "/") -> None:
    page.goto(env.url + target)
    assert "/login" in page.url
    page.fill("input[name=user]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:500]


PAINT_JS = """() => {
  const paint = performance.getEntriesByType('paint');
  const fcp = paint.find(e => e.name === 'first-contentful-paint') || paint[0];
  if (fcp) return fcp.startTime;
  const nav = performance.getEntriesByType('navigation')[0];
  return nav ? nav.domContentLoadedEventEnd : -1;
}"""


def _first_paint_ms(page: Any) -> float:
    """First contentful paint of the page (navigation start = 0), in ms; when Chromium
    recorded no paint entry within 5 s, the end of DOMContentLoaded."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(
            "() => performance.getEntriesByType('paint').length > 0", timeout=5000
        )
    return float(page.evaluate(PAINT_JS))


def _shot(page: Any, env: Env, name: str, *, full_page: bool = False) -> None:
    page.screenshot(path=str(env.shots / f"{name}.png"), full_page=full_page)


def test_the_incident_list_shows_the_workers_incidents_and_filters_narrow_it(
    env: Env, browser: Any
) -> None:
    triggers = _triggers(env.broker.bootstrap, env.settings.topics.alerts)
    ids = {e.incident_id for e in triggers}
    page = _page(browser, env)
    _login(page, env, target="/incidents?status=all")
    shown = set(
        page.eval_on_selector_all("tr[data-incident]", "rs => rs.map(r => r.dataset.incident)")
    )
    assert ids <= shown, f"missing in the console: {ids - shown}"
    assert shown <= ids | {e.incident_id for e in triggers}
    _shot(page, env, "incidents")
    models = {e.labels.model for e in triggers}
    assert len(models) >= 2
    model = next(e.labels.model for e in triggers if e.incident_type.startswith("toxicity"))
    page.fill("input[name=model]", model)
    page.select_option("select[name=status]", "all")
    page.click("form#filters button[type=submit]")
    page.wait_for_load_state()
    rows = page.eval_on_selector_all(
        "tr[data-incident]", "rs => rs.map(r => r.children[3].textContent.trim())"
    )
    expected = {e.incident_id for e in triggers if e.labels.model == model}
    assert set(rows) == {model}, rows
    assert len(rows) == len(expected) < len(shown)
    page.select_option("select[name=severity]", "SEV1")
    page.click("form#filters button[type=submit]")
    page.wait_for_load_state()
    sev = page.eval_on_selector_all("tr[data-incident] .sev", "s => s.map(x => x.textContent)")
    assert set(sev) <= {"SEV1"}
    page.fill("input[name=since]", "yesterday")
    page.click("form#filters button[type=submit]")
    assert "not a time" in page.inner_text("main")
    print(f"incident list: {len(shown)} incidents; model {model}: {len(rows)}")


def test_a_new_incident_appears_without_a_reload(env: Env, browser: Any) -> None:
    page = _page(browser, env)
    _login(page, env, target="/incidents?status=all")
    page.evaluate("window.__notReloaded = true")
    env.publish_marker("live-model", datetime.now(UTC))
    page.wait_for_selector("tr[data-incident]:has-text('live-model')", timeout=90_000)
    assert page.evaluate("window.__notReloaded === true")
    assert "live-model" in page.inner_text(".counts")


def test_an_incident_page_shows_its_chart_and_evidence(env: Env, browser: Any) -> None:
    triggers = _triggers(env.broker.bootstrap, env.settings.topics.alerts)
    trigger = next(e for e in triggers if e.incident_type.startswith("toxicity"))
    page = _page(browser, env)
    _login(page, env)
    started = time.monotonic()
    page.goto(f"{env.url}/incidents/{trigger.incident_id}")
    paint = _first_paint_ms(page)
    assert page.locator("svg.chart").count() >= 2
    # The worker keeps re-scoring a firing incident: the page shows the step the console
    # had read when it rendered, so it is matched against every step published by now.
    main = page.inner_text("main")
    events = _incident_events(env.broker.bootstrap, env.settings.topics.alerts)
    shown = [e for e in events if e.incident_id == trigger.incident_id and e.summary in main]
    assert shown, main[:500]
    tox = max(shown, key=lambda e: e.sequence)
    for reason in tox.severity_reasons:
        assert reason in page.inner_text("main")
    page.wait_for_selector("#evidence.loaded table.audit", timeout=90_000)
    evidence = page.inner_text("#evidence")
    # The evidence fragment loads after the page, from the step the console holds then:
    # one of the incident's steps published by now (consecutive steps can share a
    # summary, so the step of the page's summary is not necessarily this one).
    steps = [
        e
        for e in _incident_events(env.broker.bootstrap, env.settings.topics.alerts)
        if e.incident_id == trigger.incident_id
    ]

    def shows(step: IncidentEvent) -> bool:
        return all(
            f"{r.topic}[{r.partition}] {r.first_offset}..{r.last_offset}" in evidence
            for r in step.evidence.ranges
        ) and any(rid in evidence for rid in step.evidence.sample_request_ids)

    assert any(shows(step) for step in steps), evidence[:500]
    assert page.locator("#evidence table.audit tbody tr.flagged").count() >= 1
    assert page.locator("#series-chart svg.chart polyline").count() >= 1
    excerpts = page.eval_on_selector_all(
        "#evidence table.audit td:last-child div", "ds => ds.map(d => d.textContent)"
    )
    assert all(len(x) <= 100 for x in excerpts), excerpts  # redacted excerpts, not raw text
    plot = page.request.get(f"{env.url}/incidents/{tox.incident_id}/plot.png")
    assert plot.status == 200
    assert plot.body()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.locator("ol.steps li").count() >= 1  # the playbook's runbook steps
    assert "User notification draft" in page.inner_text("main")
    print(
        f"incident page: first paint {paint:.0f} ms after navigation start, evidence loaded "
        f"{time.monotonic() - started:.1f} s after navigation"
    )
    for line in env.console_log.read_text(errors="replace").splitlines():
        if "evidence of" in line:
            print(f"console: {line}")
    _shot(page, env, "incident")
    _shot(page, env, "incident-full", full_page=True)
    page.click("text=Post-mortem draft")
    page.wait_for_load_state()
    assert tox.incident_id in page.inner_text("pre.markdown")
    phone = _page(browser, env, PHONE)
    _login(phone, env, target=f"/incidents/{tox.incident_id}")
    phone.wait_for_selector("#evidence.loaded", timeout=90_000)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"page is {width} px wide on a {PHONE['width']} px phone"
    _shot(phone, env, "incident-phone")


def test_acknowledge_and_containment_publish_who_and_why(env: Env, browser: Any) -> None:
    triggers = _triggers(env.broker.bootstrap, env.settings.topics.alerts)
    # A critical-event incident is open (nothing resolves it in the test's time) and its
    # playbook has containment actions.
    tox = next(e for e in triggers if e.incident_type.startswith("critical_event"))
    page = _page(browser, env)
    _login(page, env, target=f"/incidents/{tox.incident_id}")
    ack = page.locator("form[action$='/acknowledge']")
    ack.locator("input[name=reason]").fill("on it: checking the moderation model")
    ack.locator("button").click()
    page.wait_for_load_state()
    assert "acknowledged" in page.inner_text("#status")
    contain = page.locator("form[action$='/contain']")
    contain.locator("input[name=reason]").fill("contain per playbook while we look")
    contain.locator("button").click()
    page.wait_for_load_state()
    assert "containment published" in page.inner_text(".done")
    page.wait_for_function(
        "!document.querySelector('#containment').textContent.includes('none in force')",
        timeout=30_000,
    )
    actions = _operator_actions(env)
    mine = {(a.action, a.by, a.reason) for a in actions if a.incident_id == tox.incident_id}
    assert ("acknowledge", OPERATOR[0], "on it: checking the moderation model") in mine
    assert ("contain", OPERATOR[0], "contain per playbook while we look") in mine
    control = topic_records(env.broker.bootstrap, env.settings.topics.control)
    snaps = [json.loads(r.value) for r in control if r.key == tox.labels.model.encode()]
    assert any(m["incident_id"] == tox.incident_id for s in snaps for m in s["measures"])
    # An empty reason is refused with a clear error, and nothing is published.
    before = len(actions)
    answer = page.request.post(
        f"{env.url}/incidents/{tox.incident_id}/resolve",
        form={"csrf": page.input_value("input[name=csrf] >> nth=0"), "reason": " "},
    )
    assert answer.status == 400
    assert "reason is required" in answer.text()
    topic = operator_topic(env.settings.topics.control)
    assert len(topic_records(env.broker.bootstrap, topic)) == before


def test_a_silence_added_in_the_browser_mutes_the_next_matching_detection(
    env: Env, browser: Any
) -> None:
    page = _page(browser, env)
    _login(page, env, target="/silences")
    form = page.locator("form.add-silence")
    form.locator("input[name=model]").fill("muted-model")
    form.locator("input[name=type]").fill("critical_event")
    form.locator("input[name=duration]").fill("2h")
    form.locator("input[name=comment]").fill("maintenance of muted-model")
    form.locator("button").click()
    page.wait_for_load_state()
    silence_id = page.inner_text(".done").strip()
    assert silence_id.startswith("sil-")
    assert page.locator(f"tr[data-silence='{silence_id}']").count() == 1
    records = topic_records(env.broker.bootstrap, silences_topic(env.settings.topics.control))
    assert any(r.key == silence_id.encode() for r in records)
    _shot(page, env, "silences")
    # Give the worker's silence follower its poll (1 s) before the detection arrives.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
    now = datetime.now(UTC)
    env.publish_marker("muted-model", now)
    env.publish_marker("loud-model", now)
    engines = f"{env.settings.worker.app_id}-engines-changelog"

    def muted() -> bool:
        for r in topic_records(env.broker.bootstrap, engines):
            key = r.key.decode().strip('"') if r.key else ""
            if key == "muted-model" and r.value:
                incidents = decode_state(r.value).get("incidents", [])
                if any(i.get("muted_by") and silence_id in i["muted_by"] for i in incidents):
                    return True
        return False

    wait_for(muted, 90, "the worker to record the detection as muted", env.worker_log)
    wait_for(
        lambda: any(
            e.labels.model == "loud-model"
            for e in _triggers(env.broker.bootstrap, env.settings.topics.alerts)
        ),
        90,
        "the unsilenced model's page",
        env.worker_log,
    )
    paged = {e.labels.model for e in _triggers(env.broker.bootstrap, env.settings.topics.alerts)}
    assert "muted-model" not in paged
    # Expire it in the browser: it leaves the list of silences in force.
    page.goto(env.url + "/silences")
    page.locator(f"tr[data-silence='{silence_id}'] button").click()
    page.wait_for_load_state()
    assert page.locator(f"tr[data-silence='{silence_id}']").count() == 0


def _ordinary(model: str, version: str, at: datetime, n: int) -> str:
    """An ordinary output: low moderation scores."""
    return output_line(model, version, at, f"recent-{model}-{n}", {"toxicity": 0.01})


RECENT = 600
"""Outputs of support-chat published at the wall clock's time before the re-learn: the
earlier tests' markers moved event time past the scenario's keys (idle keys expire)."""


def test_a_relearn_from_the_incident_page_restarts_that_detector_in_the_worker(
    env: Env, browser: Any
) -> None:
    """Re-learn baseline on the toxicity incident: the record names its scope and kind; the
    worker, at the scope's next event, drops that key's harm detector (which starts again
    from that event), keeps the others, and notes the re-learn in the key's state."""
    triggers = _triggers(env.broker.bootstrap, env.settings.topics.alerts)
    tox = next(
        e for e in triggers if e.incident_type.startswith("toxicity") and not e.labels.segment
    )
    key = key_id(tox.labels)
    detectors = f"{env.settings.worker.app_id}-detectors-changelog"
    version = env.versions["support-chat"]

    def latest_state() -> dict[str, Any]:
        for r in reversed(topic_records(env.broker.bootstrap, detectors)):
            if r.key and r.key.decode().strip('"') == key and r.value:
                return dict(decode_state(r.value))
        return {}

    now = datetime.now(UTC)
    lines = [
        _ordinary("support-chat", version, now - timedelta(seconds=RECENT - i), i)
        for i in range(RECENT)
    ]
    publish_lines(env.broker.bootstrap, env.settings, lines, rate=2000.0)
    wait_for(
        lambda: latest_state().get("t", {}).get("harm", {}).get("n", 0) >= RECENT,
        90,
        "the worker to learn from the recent outputs",
        env.worker_log,
    )
    page = _page(browser, env)
    _login(page, env, target=f"/incidents/{tox.incident_id}")
    form = page.locator("form.relearn")
    form.locator("input[name=reason]").fill("new moderation model: its scores run higher")
    form.locator("button").click()
    page.wait_for_load_state()
    done = page.inner_text(".done")
    assert "re-learn published: toxicity_rate on support-chat" in done, done
    [rec] = [
        RelearnRecord.model_validate_json(r.value)
        for r in topic_records(env.broker.bootstrap, relearn_topic(env.settings.topics.control))
    ]
    assert rec.id in done
    assert (rec.scope, rec.signals) == (tox.labels, (SignalKind.TOXICITY_RATE,))
    assert (rec.requested_by, rec.incident_id) == (OPERATOR[0], tox.incident_id)
    actions = _operator_actions(env)
    assert any(a.action == "relearn" and a.detail == rec.id for a in actions)
    # The worker follows the re-learn topic (1 s polls) and applies it at the scope's next
    # event: one every 3 s until its state shows it.
    last = [0.0]

    def applied() -> bool:
        if time.monotonic() - last[0] >= 3.0:
            last[0] = time.monotonic()
            line = _ordinary("support-chat", version, datetime.now(UTC), RECENT + env.marker_n)
            env.marker_n += 1
            publish_lines(env.broker.bootstrap, env.settings, [line])
        return latest_state().get("relearned") == list(rec.mark())

    wait_for(applied, 90, "the worker to apply the re-learn", env.worker_log)
    state = latest_state()
    assert state["t"]["harm"]["n"] < 50  # started again after the re-learn
    assert state["t"]["confidence"]["n"] >= RECENT  # kept: not in the re-learn
    assert f"re-learning harm on key {key}" in env.worker_log.read_text()


def test_unauthenticated_viewer_and_forged_writes_are_refused(env: Env, browser: Any) -> None:
    triggers = _triggers(env.broker.bootstrap, env.settings.topics.alerts)
    target = f"{env.url}/incidents/{triggers[0].incident_id}/acknowledge"
    anonymous = browser.new_context()
    try:
        answer = anonymous.request.post(target, form={"reason": "x", "csrf": "x"})
        assert answer.status == 401
        page_answer = anonymous.request.get(env.url + "/incidents", max_redirects=0)
        assert page_answer.status == 303
        assert "/login" in page_answer.headers["location"]
    finally:
        anonymous.close()
    page = _page(browser, env)
    _login(page, env, who=VIEWER, target=f"/incidents/{triggers[0].incident_id}")
    assert page.locator("form[action$='/acknowledge']").count() == 0
    assert "viewer" in page.inner_text("main")
    csrf = page.get_attribute("meta[name=csrf-token]", "content")
    assert csrf
    answer = page.request.post(target, form={"reason": "viewer tries", "csrf": csrf})
    assert answer.status == 403
    assert "viewer" in answer.text()
    operator = _page(browser, env)
    _login(operator, env)
    forged = operator.request.post(target, form={"reason": "no token"})
    assert forged.status == 403
    assert "CSRF" in forged.text()
    wrong = operator.request.post(target, form={"reason": "wrong token", "csrf": "0" * 64})
    assert wrong.status == 403
    bad_login = browser.new_context().new_page()
    bad_login.goto(env.url + "/login")
    bad_login.fill("input[name=user]", OPERATOR[0])
    bad_login.fill("input[name=password]", "not-the-password")
    bad_login.click("button[type=submit]")
    assert "wrong user or password" in bad_login.inner_text("main")


def test_models_page_and_screenshots_then_no_console_errors(env: Env, browser: Any) -> None:
    page = _page(browser, env)
    _login(page, env, target="/models")
    cells = page.locator("table.heatmap td.heat")
    assert cells.count() > 0
    assert "support-chat" in page.inner_text("main")
    assert page.locator("table.heatmap tbody tr").count() >= 3
    # Seven simulated hours leave detectors still learning (the judge's fail rate needs
    # 20 failed verdicts): each cell says what its baseline lacks, with units.
    waiting = page.locator("table.heatmap td.heat-learning .awaiting").all_inner_texts()
    assert waiting, "no learning detector on the Models page"
    unit = re.compile(r"\d[\d,]* of [\d,]+ (reference )?(observations|flagged|values)")
    assert all(unit.search(text) for text in waiting), waiting
    _shot(page, env, "models")
    phone = _page(browser, env, PHONE)
    _login(phone, env, target="/incidents?status=all")
    _shot(phone, env, "incidents-phone")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"] + 1, f"incident list is {width} px wide on a phone"
    assert env.errors == [], "\n".join(env.errors)
