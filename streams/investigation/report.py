"""An investigation as text: the report ``sentinel investigate`` prints, the order the
audit trail is shown in (the console uses it too), the statistic's path as a text chart,
and why a recomputation did not reproduce the alarm.

Apart from :mod:`streams.investigation.audit`, which reads the records and recomputes
the statistic: this module only formats what it found.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from alerting.model import EventRange, effect_text, iso_utc, minutes_text, values_text
from streams.investigation.audit import AuditEntry, Investigation, StatisticSeries
from streams.investigation.incidents import opening_event, triggered_at


def _fmt_scores(scores: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in scores.items()) or "-"


def audit_order(inv: Investigation, limit: int) -> list[AuditEntry]:
    """The opening trigger's sampled request ids first (the detection the user
    investigates), then the later updates' samples, then flagged events, then the rest;
    by time within. Returned in time order."""
    first = set(opening_event(inv.events).evidence.sample_request_ids) if inv.events else set()
    samples = {rid for ev in inv.events for rid in ev.evidence.sample_request_ids}

    def rank(e: AuditEntry) -> tuple[int, bool, datetime, int]:
        group = 0 if e.request_id in first else 1 if e.request_id in samples else 2
        return group, not e.flagged, e.time, e.coords.offset

    ranked = sorted(inv.evidence, key=rank)
    return sorted(ranked[:limit], key=lambda e: (e.time, e.coords.offset))


def merged_ranges(ranges: Iterable[EventRange]) -> list[tuple[str, int, int, int]]:
    """``(topic, partition, first, last)`` offsets covered by ``ranges`` (an incident's
    events repeat and extend each other's), overlapping or adjacent ones merged."""
    out: list[tuple[str, int, int, int]] = []
    for r in sorted(ranges, key=lambda r: (r.topic, r.partition, r.first_offset)):
        if out and out[-1][:2] == (r.topic, r.partition) and r.first_offset <= out[-1][3] + 1:
            topic, partition, first, last = out[-1]
            out[-1] = (topic, partition, first, max(last, r.last_offset))
        else:
            out.append((r.topic, r.partition, r.first_offset, r.last_offset))
    return out


def format_investigation(inv: Investigation, *, limit: int = 20) -> str:
    ev = inv.incident
    sig = ev.evidence.signal
    out = [
        f"incident {ev.incident_id}  {ev.severity.value}  {ev.status.value}"
        f"{'  (replay: never paged)' if ev.replay else ''}",
        f"  {ev.summary}",
        f"  type {ev.incident_type}; labels {ev.labels.describe()}",
        f"  first seen {iso_utc(ev.first_seen)}; triggered {iso_utc(triggered_at(inv.events))}; "
        f"last seen {iso_utc(ev.last_seen)}",
        f"  detector {sig.detector}: statistic {sig.statistic:.3f} / threshold "
        f"{sig.threshold:.3f}; {values_text(sig)} (effect {effect_text(sig)}, "
        f"n={sig.n_observations})",
        "  evidence ranges: "
        + ", ".join(
            f"{topic}[{partition}] {first}..{last}"
            for topic, partition, first, last in merged_ranges(
                r for e in inv.events for r in e.evidence.ranges
            )
        ),
        f"  read {inv.records_read} records with timestamps {iso_utc(inv.history_from)} .. "
        f"{iso_utc(inv.history_to)}; {len(inv.evidence)} events in the ranges carry the "
        f"incident's labels, {inv.flagged} of them flagged by the detector",
        f"  look-back {minutes_text(inv.lookback)} before the evidence window"
        + (
            ": reached the first retained record of every partition (a longer --lookback "
            "reads nothing more)"
            if inv.from_beginning
            else ""
        ),
    ]
    if inv.doc_stats:
        out.append("")
        out.append("retrieved documents in flagged events (flagged / all events in the ranges):")
        out += [f"  {doc}: {k} / {n}" for doc, k, n in inv.doc_stats]
    out.append("")
    out.append(f"audit trail (at most {limit} events; sampled and flagged first; text redacted):")
    for e in audit_order(inv, limit):
        c = e.coords
        mark = "*" if e.flagged else " "
        out.append(
            f"{mark} {iso_utc(e.time)}  {e.request_id}  {e.event_type}  {e.model} {e.version}  "
            f"{c.topic}[{c.partition}]@{c.offset}"
        )
        out.append(f"    scores: {_fmt_scores(e.scores)}")
        if e.system_hash or e.doc_ids:
            sys_hash = (e.system_hash or "-")[:23]
            out.append(f"    system: {sys_hash}  docs: {', '.join(e.doc_ids) or '-'}")
        if e.prompt is not None:
            out.append(f"    prompt: {e.prompt}")
        if e.output is not None:
            out.append(f"    output: {e.output}")
    out.append("")
    out += format_series(inv.series)
    if inv.series is not None and inv.series.times and inv.series.trigger_index is None:
        out.append("  why: " + not_reproduced_reason(inv))
    return "\n".join(out)


def not_reproduced_reason(inv: Investigation) -> str:
    """Why the recomputed detector did not fire, specifically: what the read covered and
    how far the recomputed statistic got."""
    series = inv.series
    if series is None or not series.times:
        return "no observation of the incident's key was found in the records read"
    n = len(series.times)
    if series.ready_index is None:
        more = (
            "every partition was read from its first retained record, so no longer look-back "
            "can give it more history"
            if inv.from_beginning
            else f"try a longer --lookback than {minutes_text(inv.lookback)}"
        )
        return (
            f"the detector was still learning its baseline after all {n} observations of the "
            f"key read; {more}"
        )
    finite = [(r, i) for i, r in enumerate(series.ratio) if math.isfinite(r)]
    peak, at = max(finite) if finite else (0.0, series.ready_index)
    reached = (
        f"its warm-up ended at observation {series.ready_index} "
        f"({iso_utc(series.times[series.ready_index])}) and its statistic peaked at "
        f"{peak:.2f} of the threshold at {iso_utc(series.times[at])}"
    )
    if inv.from_beginning:
        return (
            f"{reached}; every partition was read from its first retained record (a longer "
            "--lookback reads the same records), so the worker's detector differed: its state "
            "came from earlier history or a restored changelog, or it saw the events in a "
            "different order"
        )
    return (
        f"{reached}; the baseline was learned from the {minutes_text(inv.lookback)} look-back "
        "only and differs from the worker's: try a longer --lookback"
    )


def format_series(series: StatisticSeries | None, points: int = 12) -> list[str]:
    if series is None or not series.times:
        return ["statistic: no observations of the incident's key in the fetched history"]
    lines = [
        f"statistic of {series.detector} over {len(series.times)} observations "
        "(statistic / threshold; alarm at 1.00):"
    ]
    if series.trigger_index is not None:
        i = series.trigger_index
        verdict = (
            "reproduces the recorded trigger"
            if series.reproduced
            else f"differs from the recorded trigger {iso_utc(series.recorded_trigger)}"
            if series.recorded_trigger
            else ""
        )
        lines.append(
            f"  recomputed alarm at {iso_utc(series.times[i])} (observation {i}, "
            f"ratio {series.ratio[i]:.2f}): {verdict}"
        )
    else:
        lines.append("  the recomputed detector did not fire (why: below)")
    lines += [f"  {iso_utc(at)}: {what}; a new baseline from there" for at, what in series.relearns]
    end = series.trigger_index if series.trigger_index is not None else len(series.times) - 1
    step = max(1, (end + 1) // points)
    for i in [*range(0, end, step), end]:
        r = series.ratio[i]
        text = "learning" if math.isnan(r) else f"{r:5.2f} {'#' * min(40, round(r * 20))}"
        lines.append(f"  {iso_utc(series.times[i])}  {text}")
    return lines
