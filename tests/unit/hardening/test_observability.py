"""Metrics exposition (parsed back), collection from pipeline state, JSON logs."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from streams.cli.status import detection_need
from streams.contract.decode import Coordinates, DeadLetter, decode
from streams.devtools.simulate import Simulator
from streams.pipeline import state
from streams.pipeline.keys import level_of_key
from streams.pipeline.load import DetectLoad, LoadWatch
from streams.pipeline.observation import Observation
from streams.pipeline.replay import REPLAY_LIMITS, Pipeline
from streams.runtime import observability
from streams.runtime.agents import Service
from streams.runtime.ingress import DeadLetters, Ingress, IngressStats
from streams.runtime.observability import (
    CONTENT_TYPE,
    OTHER_MODELS,
    Histogram,
    MetricFamily,
    Observability,
    logging_config,
    render,
)
from streams.settings import load_settings
from tests.scenarios import toxicity_spike_scenario
from tests.unit.alerting.helpers import ManualClock

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text: str) -> dict[str, Any]:
    """A strict reader of the text format: families with type, help and samples."""
    assert text.endswith("\n")
    families: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            families.setdefault(name, {"samples": []})["help"] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            families.setdefault(name, {"samples": []})["type"] = kind
        else:
            m = _LINE.match(line)
            assert m, f"bad sample line {line!r}"
            name, labels_text, value = m.groups()
            labels: dict[str, str] = {}
            pos = 0
            while labels_text and pos < len(labels_text):
                lm = _LABEL.match(labels_text, pos)
                assert lm, f"bad labels {labels_text!r}"
                raw = lm.group(2)
                labels[lm.group(1)] = re.sub(
                    r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1), raw
                )
                pos = lm.end()
            # The family is the exact name, else the longest family the name extends.
            candidates = [f for f in families if name == f or name.startswith(f + "_")]
            base = name if name in families else max(candidates, key=len, default=None)
            assert base is not None, f"sample {name} before its family"
            families[base]["samples"].append((name, labels, float(value)))
    return families


def test_exposition_round_trips_with_escaping() -> None:
    fam = MetricFamily("sentinel_test_total", "counter", "Help with \\ and\nnewline.")
    tricky = 'a"b\\c\nd'
    fam.add(3, {"topic": tricky, "reason": "x"})
    fam.add(1.5, {})
    gauge = MetricFamily("sentinel_test_gauge", "gauge", "g")
    gauge.add(math.inf, {"k": "v"})
    gauge.add(math.nan)
    text = render([fam, gauge])
    assert "# HELP sentinel_test_total Help with \\\\ and\\nnewline." in text
    parsed = parse(text)
    assert parsed["sentinel_test_total"]["type"] == "counter"
    samples = parsed["sentinel_test_total"]["samples"]
    assert samples[0] == ("sentinel_test_total", {"reason": "x", "topic": tricky}, 3.0)
    assert samples[1] == ("sentinel_test_total", {}, 1.5)
    g = parsed["sentinel_test_gauge"]["samples"]
    assert g[0][2] == math.inf
    assert math.isnan(g[1][2])


def test_invalid_names_are_refused() -> None:
    with pytest.raises(ValueError, match="metric name"):
        MetricFamily("bad-name", "gauge", "x")
    with pytest.raises(ValueError, match="label name"):
        MetricFamily("ok", "gauge", "x").add(1, {"bad-label": "v"})
    with pytest.raises(ValueError, match="twice"):
        render([MetricFamily("a", "gauge", "x"), MetricFamily("a", "gauge", "x")])


def test_histogram_is_cumulative_with_inf_sum_and_count() -> None:
    h = Histogram([1.0, 10.0])
    for v in (0.5, 2.0, 20.0, 30.0):
        h.observe(v, {"event_type": "output"})
    parsed = parse(render([h.family("lat_seconds", "x")]))["lat_seconds"]
    assert parsed["type"] == "histogram"
    buckets = {s[1]["le"]: s[2] for s in parsed["samples"] if s[0] == "lat_seconds_bucket"}
    assert buckets == {"1": 1, "10": 2, "+Inf": 4}
    rest = {s[0]: s[2] for s in parsed["samples"] if s[0] != "lat_seconds_bucket"}
    assert rest == {"lat_seconds_sum": 52.5, "lat_seconds_count": 4}


class _TP(tuple[str, int]):
    @property
    def topic(self) -> str:
        return self[0]

    @property
    def partition(self) -> int:
        return self[1]


def _fake_app(tps: list[_TP], highwater: dict[_TP, int], committed: dict[_TP, int]) -> Any:
    consumer = SimpleNamespace(
        assignment=lambda: set(tps), highwater=highwater.__getitem__, _committed_offset={}
    )
    recovery = SimpleNamespace(completed=SimpleNamespace(is_set=lambda: True))
    return SimpleNamespace(
        consumer=consumer,
        monitor=SimpleNamespace(tp_committed_offsets=committed),
        tables=SimpleNamespace(recovery=recovery),
        rebalancing=False,
        rebalancing_count=2,
        crashed=False,
        state="running",
    )


@pytest.fixture(scope="module")
def pipeline_service() -> tuple[Service, list[Observation]]:
    settings = load_settings(env={})
    scenario = toxicity_spike_scenario()
    pipe = Pipeline(settings, replay=False)
    stats = IngressStats()
    observations: list[Observation] = []
    for offset, line in enumerate(Simulator(scenario).lines()):
        coords = Coordinates("t.outputs", offset % 2, offset)
        result = decode(line.encode(), coords, now=datetime.now(UTC), limits=REPLAY_LIMITS)
        stats.record(coords, result)
        if not isinstance(result, DeadLetter):
            pipe.feed(result, coords)
            observations.extend(pipe._batch[-1:])
    pipe.flush()
    bad = Coordinates("t.inputs", 0, 99)
    stats.record(bad, decode(b"not json", bad, now=datetime.now(UTC)))
    service = Service(
        ingress=Ingress(
            agent=None, source=None, dead_letters=DeadLetters(None, stats), stats=stats
        ),
        joiner=pipe.joiner,
        detect=pipe.detect,
        tables={
            "join": {},  # type: ignore[dict-item]
            "detectors": pipe.detect.detector_store,  # type: ignore[dict-item]
            "engines": pipe.detect.engine_store,  # type: ignore[dict-item]
        },
        topics={},
    )
    return service, observations


def test_collect_reports_pipeline_state(
    pipeline_service: tuple[Service, list[Observation]],
) -> None:
    service, observations = pipeline_service
    tp0, tp1, cl = _TP(("t.outputs", 0)), _TP(("t.outputs", 1)), _TP(("x-join-changelog", 0))
    app = _fake_app([tp0, tp1, cl], {tp0: 120, tp1: 80, cl: 5}, {tp0: 100})
    last = max(o.event.timestamp for o in observations)
    obs = Observability(app, service, ManualClock(last + timedelta(seconds=3)), top_k=5)
    obs.observe_processed(observations[-50:])
    parsed = parse(obs.render())

    def values(name: str) -> list[tuple[dict[str, str], float]]:
        return [(s[1], s[2]) for s in parsed[name]["samples"] if s[0] == name]

    stats = service.ingress.stats
    consumed = dict((lab["topic"], v) for lab, v in values("sentinel_events_consumed_total"))
    assert consumed == {"t.outputs": stats.total_accepted(), "t.inputs": 1}
    assert values("sentinel_events_dead_lettered_total") == [
        ({"reason": "not_json", "topic": "t.inputs"}, 1.0)
    ]
    assert values("sentinel_detect_observations_total")[0][1] == service.detect.stats.observations
    # Per model: every observation counted once, and time spent on each model.
    taken = {lab["model"]: v for lab, v in values("sentinel_detect_model_observations_total")}
    assert sum(taken.values()) == service.detect.stats.observations
    assert set(taken) == {o.model for o in observations}
    spent = {lab["model"]: v for lab, v in values("sentinel_detect_model_seconds_total")}
    assert set(spent) == set(taken)
    assert all(v > 0 for v in spent.values())
    assert values("sentinel_join_joined_total")[0][1] == service.joiner.stats.joined
    open_sev = {lab["severity"]: v for lab, v in values("sentinel_incidents_open")}
    assert set(open_sev) >= {"SEV1", "SEV2", "SEV3", "SEV4"}
    assert sum(open_sev.values()) >= 1, "the toxicity spike should leave an open incident"
    top = values("sentinel_detector_statistic_ratio")
    assert 1 <= len(top) <= 5
    assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)
    assert len({(lab["key"], lab["detector"]) for lab, _ in top}) == len(top)
    assert values("sentinel_detector_statistic_ratio_max")
    lag = {lab["partition"]: v for lab, v in values("sentinel_consumer_lag")}
    assert lag == {"0": 20.0, "1": 80.0}  # changelog excluded; partition 1 never committed
    assert values("sentinel_ready") == [({}, 1.0)]
    count = [v for n, lab, v in parsed["sentinel_processing_latency_seconds"]["samples"]]
    assert (
        sum(
            v
            for n, lab, v in parsed["sentinel_processing_latency_seconds"]["samples"]
            if n.endswith("_count")
        )
        == 50
    )
    assert count
    assert all(v == 0 for _, v in values("sentinel_metrics_errors_total"))


def test_open_incidents_count_engines_read_back_as_stored_bytes(
    pipeline_service: tuple[Service, list[Observation]],
) -> None:
    """A RocksDB table gives its values back as the stored bytes (``StateCodec``): the
    open-incident gauges decode them, and skip one that does not decode."""
    service, observations = pipeline_service
    last = max(o.event.timestamp for o in observations)

    def open_incidents() -> dict[str, float]:
        obs = Observability(_fake_app([], {}, {}), service, ManualClock(last), top_k=5)
        parsed = parse(obs.render())
        samples = parsed["sentinel_incidents_open"]["samples"]
        return {s[1]["severity"]: s[2] for s in samples if s[0] == "sentinel_incidents_open"}

    as_written = open_incidents()
    assert sum(as_written.values()) >= 1
    engines = service.tables["engines"]
    written = dict(engines)  # the fixture is the module's: put its values back
    try:
        for model, value in written.items():
            engines[model] = state.encode(value)
        engines["broken"] = state.COMPRESSED + b"not zlib"
        assert open_incidents() == as_written
    finally:
        engines.clear()
        engines.update(written)


def test_lag_uses_the_end_offsets_asked_at_scrape_time(
    pipeline_service: tuple[Service, list[Observation]],
) -> None:
    """A partition faust has stopped fetching (its buffer is full: the worker is behind)
    keeps a stale high-water mark; the scrape asks the broker, so the lag is not too low."""
    service, _ = pipeline_service
    tp0, tp1 = _TP(("t.outputs", 0)), _TP(("t.outputs", 1))
    app = _fake_app([tp0, tp1], {tp0: 120, tp1: 80}, {tp0: 100, tp1: 80})
    asked: list[tuple[_TP, ...]] = []

    async def highwaters(*tps: _TP) -> dict[_TP, int]:
        asked.append(tps)
        return {tp0: 5120, tp1: 70}  # tp1: older than the fetched mark, which wins

    app.consumer.highwaters = highwaters
    obs = Observability(app, service, ManualClock(datetime.now(UTC)))

    def lag_and_errors() -> tuple[dict[str, float], float]:
        parsed = parse(obs.render())
        lag = parsed["sentinel_consumer_lag"]["samples"]
        errors = parsed["sentinel_metrics_errors_total"]["samples"]
        return (
            {lab["partition"]: v for _, lab, v in lag},
            next(v for _, lab, v in errors if lab["section"] == "end_offsets"),
        )

    assert lag_and_errors() == ({"0": 20.0, "1": 0.0}, 0.0)  # fetched marks only
    asyncio.run(obs.refresh_end_offsets())
    assert set(asked[0]) == {tp0, tp1}
    assert lag_and_errors() == ({"0": 5020.0, "1": 0.0}, 0.0)

    async def unreachable(*tps: _TP) -> dict[_TP, int]:
        raise ConnectionError

    app.consumer.highwaters = unreachable
    asyncio.run(obs.refresh_end_offsets())  # counted, not raised; last answer kept
    assert lag_and_errors() == ({"0": 5020.0, "1": 0.0}, 1.0)

    async def hangs(*tps: _TP) -> dict[_TP, int]:
        await asyncio.sleep(10)
        return {}

    app.consumer.highwaters = hangs
    obs.end_offsets_timeout_s = 0.05
    asyncio.run(obs.refresh_end_offsets())
    assert lag_and_errors()[1] == 2.0


def test_a_failing_section_is_counted_not_fatal(
    pipeline_service: tuple[Service, list[Observation]],
) -> None:
    service, _ = pipeline_service
    app = _fake_app([], {}, {})
    app.consumer = None  # the consumer section breaks
    obs = Observability(app, service, ManualClock(datetime.now(UTC)))
    parsed = parse(obs.render())
    errors = {s[1]["section"]: s[2] for s in parsed["sentinel_metrics_errors_total"]["samples"]}
    assert errors["consumer"] == 1
    assert "sentinel_events_consumed_total" in parsed
    assert not obs.readiness().ready


def test_content_type_is_the_prometheus_text_format() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


PLANTED = ("alice@example.com", "4111 1111 1111 1111", "sk-live0123456789abcdefXYZ", "10.9.8.7")


def test_json_logs_are_one_object_per_line_and_redacted() -> None:
    stream = io.StringIO()
    config = logging_config("info", json_logs=True)
    config["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(config)
    try:
        logger = logging.getLogger("sentinel.test")
        logger.info("user %s paid with %s", PLANTED[0], PLANTED[1], extra={"key": PLANTED[2]})
        logger.warning("multi\nline from %s \u2028 ünïcode", PLANTED[3], extra={"ts": "clash"})
        try:
            raise ValueError(f"bad token={PLANTED[2]}")
        except ValueError:
            logger.exception("failed")
    finally:
        logging.config.dictConfig(logging_config("warning", json_logs=False))
    lines = stream.getvalue().split("\n")
    assert lines[-1] == ""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == 3
    for rec in records:
        assert rec["ts"].endswith("Z")
        assert datetime.fromisoformat(rec["ts"]).tzinfo is not None
        assert rec["logger"] == "sentinel.test"
    assert records[0]["level"] == "INFO"
    assert records[0]["message"] == "user [EMAIL] paid with [CARD]"
    assert records[0]["key"] == "[SECRET]"
    assert records[1]["extra_ts"] == "clash"
    assert "ValueError" in records[2]["exc_info"]
    for planted in PLANTED:
        assert planted not in stream.getvalue()


def test_commands_log_through_the_redacting_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator commands' logging (``alerting_cli.setup_logging``) is redacted as the
    worker's is, with bytes literals hidden: a SASL/PLAIN login's request, a raw dump."""
    from streams.cli.common import setup_logging

    stream = io.StringIO()
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    levels = root.level, kafka.level
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh process (pytest adds its own)
    monkeypatch.setattr("sys.stderr", stream)
    root.setLevel(logging.WARNING)
    kafka.setLevel(logging.WARNING)  # as an earlier non-debug run in this process left it
    try:
        setup_logging("debug")
        connection = logging.getLogger("kafka.net.connection")
        connection.debug("Request 3: SaslAuthenticateRequest(auth_bytes=b'key\\x00key\\x00pw-Zq9')")
        connection.debug("mail from bob@example.com, Send: bytearray(b'pw-Zq9')")
    finally:
        root.setLevel(levels[0])  # setLevel, not setattr: it clears the loggers' caches
        kafka.setLevel(levels[1])
    out = stream.getvalue()
    assert "pw-Zq9" not in out
    assert "SaslAuthenticateRequest(auth_bytes=[BYTES 14])" in out, out
    assert "mail from [EMAIL], Send: [BYTES 6]" in out, out
    assert out.split(" ", 1)[0].endswith("Z"), out  # UTC timestamps, as the worker's


@pytest.mark.parametrize(
    ("level", "kafka_warnings", "shown"),
    [("info", True, True), ("info", False, False), ("debug", False, True)],
)
def test_one_shot_commands_leave_the_kafka_clients_retries_to_their_one_line_error(
    monkeypatch: pytest.MonkeyPatch, level: str, kafka_warnings: bool, shown: bool
) -> None:
    """``status`` and ``silence`` end on one line when the broker is unreachable: the
    clients' retry warnings before it are shown by long-running commands and at debug."""
    from streams.cli.common import setup_logging

    stream = io.StringIO()
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    levels = root.level, kafka.level
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr("sys.stderr", stream)
    try:
        setup_logging(level, kafka_warnings=kafka_warnings)
        logging.getLogger("kafka.net.manager").warning("Bootstrap bootstrap-0 not ready")
        logging.getLogger("kafka.net.manager").error("Bootstrap failed")
        logging.getLogger("streams.cli").warning("the command's own warning")
    finally:
        root.setLevel(levels[0])
        kafka.setLevel(levels[1])
    out = stream.getvalue()
    assert ("not ready" in out and "Bootstrap failed" in out) is shown, out
    assert "the command's own warning" in out


def test_a_detector_scan_stops_at_its_time_budget_and_resumes_the_rotation(
    pipeline_service: tuple[Service, list[Observation]],
) -> None:
    """A scrape's detector scan runs on the event loop: it stops once ``scan_budget_s`` is
    spent (checked every 16 keys), says it sampled, and the next scan goes on from there."""
    service, _ = pipeline_service
    live = service.detect.live_sets.live
    assert len(live) > 32
    ticks = [0.0]

    def monotonic() -> float:
        ticks[0] += 0.001  # every look at the clock: 1 ms later
        return ticks[0]

    obs = Observability(
        _fake_app([], {}, {}),
        service,
        ManualClock(datetime.now(UTC)),
        detector_scan_interval_s=0,
        scan_budget_s=0.0015,
        monotonic=monotonic,
    )
    obs.detectors.rescan()
    assert obs.detectors.scan.truncated
    first = obs.detectors.cursor
    assert 0 < first < len(live)
    obs.detectors.rescan()
    assert obs.detectors.cursor > first  # the rotation went on
    generous = Observability(
        _fake_app([], {}, {}), service, ManualClock(datetime.now(UTC)), scan_budget_s=60.0
    )
    generous.detectors.rescan()
    assert generous.detectors.scan.truncated == (len(live) > generous.detectors.max_scan_keys)


def test_the_detector_gauges_rank_every_detector_that_can_alarm(
    pipeline_service: tuple[Service, list[Observation]],
) -> None:
    """``sentinel_detectors_learning`` counts the detectors that cannot alarm yet; one of
    several tests (harm categories) that can alarm while a rare category still learns is
    ranked with its ratio. Before, such a detector was counted as learning and never
    ranked: a dashboard of the harm ratios missed it."""
    service, _ = pipeline_service
    live = service.detect.live_sets.live
    obs = Observability(
        _fake_app([], {}, {}), service, ManualClock(datetime.now(UTC)), scan_budget_s=60.0
    )
    obs.detectors.max_scan_keys = len(live)
    obs.detectors.rescan()
    scan = obs.detectors.scan
    assert not scan.truncated
    dets = [
        (level_of_key(key), name.partition(":")[0], det)
        for key, ds in live.items()
        for name, det in ds.detectors.items()
    ]
    assert any(det.learning and det.alarm_ready for _, _, det in dets), "no partly learned one"
    assert scan.learning == Counter((lvl, kind) for lvl, kind, det in dets if not det.alarm_ready)
    assert {(lvl, kind) for lvl, kind, det in dets if det.alarm_ready} <= set(scan.max_by)


def test_the_need_gauge_shows_the_watchs_last_reading(
    pipeline_service: tuple[Service, list[Observation]],
) -> None:
    service, observations = pipeline_service
    load = DetectLoad()  # the service's own counts stay as the other tests read them
    now = [0.0]
    watch = LoadWatch(load, lambda m: 1.0, interval_s=300.0, clock=lambda: now[0])
    load.reached(1_000.0)
    load.add("support-chat", 150.0, 150_000)
    load.add("summarizer", 75.0, 75_000)
    load.reached(1_600.0)  # 600 s of traffic in 300 s: catching up, needs 37.5 %
    now[0] = 300.0
    assert watch.check() is None
    obs = Observability(
        _fake_app([], {}, {}),
        dataclasses.replace(service, load_watch=watch),
        ManualClock(max(o.event.timestamp for o in observations)),
    )
    text = obs.render()
    parsed = parse(text)
    need = {s[1]["model"]: s[2] for s in parsed["sentinel_detect_need_ratio"]["samples"]}
    assert need == {"support-chat": pytest.approx(0.25), "summarizer": pytest.approx(0.125)}
    [(_, _, window)] = parsed["sentinel_detect_need_window_seconds"]["samples"]
    assert window == 300.0
    # What ``sentinel status`` makes of it.
    assert detection_need(text) == (
        "needed 38% of the worker for its traffic over the last 300 s: keeps up "
        "(support-chat 25%, summarizer 12%)"
    )


def test_models_past_the_first_hundred_are_summed_and_no_counter_goes_down(
    pipeline_service: tuple[Service, list[Observation]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, observations = pipeline_service
    monkeypatch.setattr(observability, "LOAD_MODELS", 2)
    load = DetectLoad()
    detect = SimpleNamespace(**{**vars(service.detect), "load": load})
    view = dataclasses.replace(service, detect=detect)  # type: ignore[arg-type]
    obs = Observability(
        _fake_app([], {}, {}), view, ManualClock(max(o.event.timestamp for o in observations))
    )

    def taken() -> dict[str, float]:
        samples = parse(obs.render())["sentinel_detect_model_observations_total"]["samples"]
        return {s[1]["model"]: s[2] for s in samples}

    load.add("a", 1.0, 10)
    load.add("b", 1.0, 20)
    load.add("c", 1.0, 30)
    assert taken() == {"a": 10, "b": 20, OTHER_MODELS: 30}
    load.add("d", 50.0, 5_000)  # busier than all: still summed, the first two stay named
    assert taken() == {"a": 10, "b": 20, OTHER_MODELS: 5_030}
