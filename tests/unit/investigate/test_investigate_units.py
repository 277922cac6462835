"""Pure parts of investigation: redaction, time parsing, backtest matching, filters."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerting.model import Severity
from alerting.redact import redact
from streams.cli.common import parse_time
from streams.investigation import redact as redact_module
from streams.investigation.history import IncidentSpan, compare
from streams.investigation.redact import excerpt, shown

T0 = datetime(2025, 1, 6, tzinfo=UTC)


def test_redact_doctests_run() -> None:
    assert doctest.testmod(redact_module).failed == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to a.b+c@mail.example.co.uk now", "write to [EMAIL] now"),
        ("call +49 30 1234567 today", "call [PHONE] today"),
        ("visa 4242-4242-4242-4242", "visa [CARD]"),
        ("Authorization: Bearer abcdefghijklmnop123", "Authorization: Bearer [SECRET]"),
        ("token ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8", "token [SECRET]"),
        ("x " + "a1" * 20, "x [SECRET]"),
        ("order 12345 shipped in 2024", "order 12345 shipped in 2024"),
    ],
)
def test_redact_replaces_sensitive_tokens_only(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_excerpts_are_one_short_line_and_redacted_by_default() -> None:
    text = "line one\nmail me: x@y.org " + "z" * 200
    short = shown(text, show_text=False)
    assert short is not None
    assert len(short) <= 80
    assert "\n" not in short
    assert "[EMAIL]" in short
    assert "x@y.org" in (shown(text, show_text=True) or "")
    assert shown(None, show_text=False) is None
    assert excerpt("abc", limit=3) == "abc"


def test_parse_time_accepts_offsets_and_relative_times() -> None:
    now = T0 + timedelta(hours=5)
    assert parse_time("2025-01-06T02:00:00Z", now) == T0 + timedelta(hours=2)
    assert parse_time("2025-01-06T03:00:00+01:00", now) == T0 + timedelta(hours=2)
    assert parse_time("now", now) == now
    assert parse_time("now-90m", now) == now - timedelta(minutes=90)
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_time("2025-01-06T02:00:00", now)
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday", now)


def _span(iid: str, key: str, start_min: int, end_min: int | None, sev: Severity) -> IncidentSpan:
    return IncidentSpan(
        incident_id=iid,
        dedup_key=key,
        incident_type="toxicity_rate:toxicity",
        labels="m all versions",
        triggered_at=T0 + timedelta(minutes=start_min),
        resolved_at=None if end_min is None else T0 + timedelta(minutes=end_min),
        severity=sev,
        worst_severity=sev,
        summary="",
    )


def test_compare_matches_by_key_and_overlap() -> None:
    a = [
        _span("a1", "k1", 0, 30, Severity.SEV2),
        _span("a2", "k2", 0, 30, Severity.SEV2),
        _span("a3", "k3", 100, 130, Severity.SEV3),
        _span("a4", "k1", 200, None, Severity.SEV2),
    ]
    b = [
        _span("b1", "k1", 10, 40, Severity.SEV2),  # overlaps a1: unchanged, 10 min later
        _span("b2", "k2", 5, 20, Severity.SEV1),  # overlaps a2: severity changed
        _span("b3", "k3", 140, 150, Severity.SEV3),  # same key, no overlap: appeared
        _span("b4", "k4", 50, 60, Severity.SEV3),  # new key: appeared
    ]
    rows = compare(a, b, T0 + timedelta(hours=6))
    by = {(r.baseline.incident_id if r.baseline else None): r for r in rows}
    assert by["a1"].change == "unchanged"
    assert by["a1"].shift_minutes == pytest.approx(10.0)
    assert by["a2"].change == "severity"
    assert by["a3"].change == "disappeared"
    assert by["a4"].change == "disappeared"
    appeared = sorted(
        r.candidate.incident_id for r in rows if r.change == "appeared" and r.candidate
    )
    assert appeared == ["b3", "b4"]
    assert rows[0].to_json()["change"] in {"unchanged", "severity"}


def test_duration_of_a_firing_incident_runs_to_now() -> None:
    """Issue 17: ``sentinel incidents`` showed 0.0 min for firing incidents."""
    from datetime import timedelta

    from alerting.engine import IncidentEngine
    from alerting.model import IncidentAction, IncidentStatus
    from streams.investigation.incidents import duration_text
    from tests.unit.alerting.helpers import T0, detection, playbooks, policy

    [firing] = IncidentEngine(policy(), playbooks()).observe(detection(T0))
    firing = firing.model_copy(update={"first_seen": T0})  # one event, as a critical one
    assert firing.first_seen == firing.last_seen
    assert duration_text(firing, T0 + timedelta(minutes=12)) == "12.0+"
    resolved = firing.model_copy(
        update={
            "action": IncidentAction.RESOLVE,
            "status": IncidentStatus.RESOLVED,
            "last_seen": T0 + timedelta(minutes=30),
        }
    )
    assert duration_text(resolved, T0 + timedelta(days=3)) == "30.0"


def test_an_incidents_evidence_ranges_are_listed_merged() -> None:
    """A trigger and its updates repeat and extend each other's ranges: listed once, as
    the offsets they cover per partition (a live incident printed 4202..4632, 4632..4632)."""
    from alerting.model import EventRange
    from streams.investigation.report import merged_ranges

    def rng(topic: str, partition: int, first: int, last: int) -> EventRange:
        return EventRange(topic=topic, partition=partition, first_offset=first, last_offset=last)

    ranges = [
        rng("outputs", 1, 4202, 4632),
        rng("outputs", 1, 4632, 4632),
        rng("outputs", 1, 4633, 4700),
        rng("outputs", 1, 4800, 4810),
        rng("outputs", 0, 10, 20),
        rng("inputs", 1, 4202, 4632),
        rng("outputs", 1, 4202, 4632),
    ]
    assert merged_ranges(ranges) == [
        ("inputs", 1, 4202, 4632),
        ("outputs", 0, 10, 20),
        ("outputs", 1, 4202, 4700),
        ("outputs", 1, 4800, 4810),
    ]


def test_a_file_backtest_shows_progress_per_configuration(tmp_path: Path) -> None:
    import io

    from streams.cli.main import main
    from streams.investigation.history import backtest_lines
    from streams.settings import load_settings

    events = tmp_path / "in.jsonl"
    assert main(["simulate", "--duration", "10m", "--out", str(events), "--quiet"]) == 0
    lines = events.read_bytes().splitlines()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True  # a bar on a terminal (elsewhere: streams.progress.LineProgress)

    bar = Terminal()
    settings = load_settings(env={})
    backtest_lines(lines, settings, settings, progress=True, progress_stream=bar)
    shown = bar.getvalue()
    assert len(lines) > 1000  # tqdm prints 1.01k: the bars reach their total
    assert "backtest baseline: 100%|##########|" in shown
    assert "backtest candidate: 100%|##########|" in shown


def test_a_file_backtest_reads_the_file_as_it_goes_with_the_same_result(tmp_path: Path) -> None:
    """``backtest --input FILE`` held the whole file in memory; it now reads it once per
    configuration, and the comparison is the same as over the lines held."""
    from streams.cli.main import main
    from streams.investigation.history import backtest_lines
    from streams.settings import load_settings

    events = tmp_path / "in.jsonl"
    argv = ["simulate", "--duration", "3h", "--out", str(events), "--quiet"]
    assert main([*argv, "--inject", "downvote_spike:1h:1h:8"]) == 0
    settings = load_settings(env={})
    held = backtest_lines(events.read_bytes().splitlines(), settings, settings)
    read = backtest_lines(events, settings, settings)
    assert read.baseline.lines == held.baseline.lines == len(events.read_bytes().splitlines())
    assert [e.model_dump() for e in read.candidate.incidents] == [
        e.model_dump() for e in held.candidate.incidents
    ]
    assert read.counts() == held.counts()
