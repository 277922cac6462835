"""Producer strings cannot forge log entries; dead letters do not flood the log (issue 17).

The formatters are used through :func:`streams.runtime.observability.logging_config`, the
configuration the worker and the commands run with.
"""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from streams.runtime.log_limit import DeadLetterLog, RepeatFilter
from streams.runtime.observability import logging_config

FORGED = "telemetry\n2026-11-29T08:00:00.000Z CRITICAL sentinel: model disabled\x00\x1b[2J\u2028x"


@pytest.fixture(params=[False, True], ids=["text", "json"])
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO, bool]]:
    stream = io.StringIO()
    config = logging_config("info", json_logs=request.param)
    config["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(config)
    try:
        yield logging.getLogger("sentinel.test.logsafety"), stream, request.param
    finally:
        logging.config.dictConfig(logging_config("warning", json_logs=False))


def test_a_producer_string_stays_on_its_own_line(
    captured: tuple[logging.Logger, io.StringIO, bool],
) -> None:
    logger, stream, json_logs = captured
    logger.warning("unknown event_type %s", FORGED)
    out = stream.getvalue()
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert out.endswith("\n")
    for raw in ("\x00", "\x1b", "\u2028"):
        assert raw not in out
    if json_logs:
        assert json.loads(lines[0])["message"] == f"unknown event_type {FORGED}"
    else:
        assert "telemetry\\n2026-11-29T08:00:00.000Z CRITICAL" in lines[0]
        assert "\\x00\\x1b[2J\\u2028x" in lines[0]


def test_a_traceback_cannot_forge_a_record(
    captured: tuple[logging.Logger, io.StringIO, bool],
) -> None:
    logger, stream, json_logs = captured
    try:
        raise ValueError(FORGED)
    except ValueError:
        logger.exception("next stage failed")
    out = stream.getvalue()
    assert "\x00" not in out
    if json_logs:
        assert len(out.splitlines()) == 1
        return
    first, *rest = out.splitlines()
    assert "next stage failed" in first
    assert rest
    assert all(line.startswith("  ") for line in rest), out  # continuation lines only


def _records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sentinel.test.deadletters"]


def test_a_flood_of_dead_letters_is_a_few_lines_with_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("sentinel.test.deadletters")
    dl = DeadLetterLog(logger, interval_s=10)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="sentinel.test.deadletters"):
        for i in range(64_000):  # 64k bad records over 32 s of the injected clock
            reason = "not_json" if i % 4 else "too_large"
            dl.record(t0 + timedelta(milliseconds=i / 2), f"t[0]@{i}", reason, "x" * 500)
        dl.flush(t0 + timedelta(seconds=40))
    lines = _records(caplog)
    # each 10 s interval: its first dead letter, then one summary
    assert len(lines) == 8, lines
    assert lines[0].startswith("dead-lettered t[0]@0: too_large: " + "x" * 200 + "...")
    assert len(lines[0]) < 400
    summaries = [line for line in lines if line.startswith("dead-lettered ") and "more" in line]
    counted = sum(int(line.split()[1]) for line in summaries)
    assert counted + (len(lines) - len(summaries)) == 64_000  # every one accounted for
    assert "not_json" in summaries[0]
    assert "too_large" in summaries[0]


def test_the_interval_is_closed_by_a_tick_without_new_dead_letters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("sentinel.test.deadletters")
    dl = DeadLetterLog(logger, interval_s=5)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="sentinel.test.deadletters"):
        for i in range(3):
            dl.record(t0 + timedelta(seconds=i), f"t[0]@{i}", "not_json", "bad")
        dl.tick(t0 + timedelta(seconds=4))
        assert dl.held == 2
        dl.tick(t0 + timedelta(seconds=5))
    assert dl.held == 0
    assert _records(caplog)[-1].startswith("dead-lettered 2 more record(s) in 5.0 s (not_json 2)")
    with pytest.raises(ValueError, match="interval_s"):
        DeadLetterLog(logger, interval_s=0)


def _record(name: str, msg: str, created: float, *args: object) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)
    record.created = created
    return record


def test_the_libraries_repeated_lines_are_one_per_interval_with_a_count() -> None:
    """A backlog made 137 faust "producer buffer full size N" lines in five minutes."""
    limit = RepeatFilter(interval_s=60.0)
    full = "producer buffer full size %r"
    passed = [
        limit.filter(_record("faust.transport.producer", full, t, size))
        for t, size in [(0.0, 988), (1.0, 9896), (30.0, 12), (59.9, 7)]
    ]
    assert passed == [True, False, False, False]
    later = _record("faust.transport.producer", full, 60.0, 820)
    assert limit.filter(later)
    assert later.getMessage() == (
        "producer buffer full size 820 (3 more like it since the last one were not logged)"
    )
    # another kind, another logger of the libraries, and the service's own lines pass
    assert limit.filter(_record("faust.transport.producer", "producer stopped", 61.0))
    assert limit.filter(_record("aiokafka.consumer.group_coordinator", "coordinator dead", 61.0))
    own = [limit.filter(_record("streams.runtime.ingress", full, 62.0, n)) for n in (1, 2)]
    assert own == [True, True]
    assert not limit.filter(
        _record("aiokafka.consumer.group_coordinator", "coordinator dead", 62.0)
    )


def test_the_worker_log_limits_the_libraries_repeats(
    captured: tuple[logging.Logger, io.StringIO, bool],
) -> None:
    _, stream, _ = captured
    for size in (988, 9896, 12):
        logging.getLogger("faust.transport.producer").warning("producer buffer full size %r", size)
    out = stream.getvalue().splitlines()
    assert len(out) == 1, out
    assert "producer buffer full size 988" in out[0]
