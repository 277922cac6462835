"""The statistic chart of an investigation: one model (:class:`ChartModel`) drawn as a PNG by
``sentinel investigate --plot`` (:func:`plot_series`) and as SVG by the console, so both
show the same thing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alerting.model import IncidentEvent, iso_utc
from streams.investigation.audit import StatisticSeries


@dataclass(frozen=True)
class OpenInterval:
    """A shaded interval of the chart: the incident's open interval."""

    start: datetime
    end: datetime
    label: str


@dataclass(frozen=True)
class ChartModel:
    """What the statistic chart shows, for the PNG (:func:`plot_series`) and the console
    alike: ``statistic / threshold`` over event time (``nan`` while learning), the
    threshold at 1, the alarms, the trigger, the incident's open interval, its lifecycle
    marks (escalation, resolve) as emitted and the operator re-learns of its detector."""

    title: str
    times: list[datetime]
    ratio: list[float]
    alarms: list[int]
    trigger_index: int | None
    recorded_trigger: datetime | None
    open_interval: OpenInterval | None
    marks: list[tuple[datetime, str]]


def chart_model(
    series: StatisticSeries, title: str, events: Sequence[IncidentEvent] = ()
) -> ChartModel:
    """The chart of ``series`` for an incident with lifecycle ``events``."""
    interval: OpenInterval | None = None
    marks: list[tuple[datetime, str]] = []
    if events:
        start = min(ev.first_seen for ev in events)
        resolves = [ev.emitted_at for ev in events if ev.action.value == "resolve"]
        end = resolves[-1] if resolves and events[-1].status.value == "resolved" else None
        label = "incident open" if end is not None else "incident open (still)"
        interval = OpenInterval(start, end or max(ev.last_seen for ev in events), label)
        seen: set[str] = set()
        for ev in events:
            kind = "resolved" if ev.action.value == "resolve" else ev.status.value
            if kind in ("escalated", "resolved") and kind not in seen:
                seen.add(kind)
                marks.append((ev.emitted_at, kind))
    marks += [(at, "re-learned") for at, _ in series.relearns]
    return ChartModel(
        title=title,
        times=list(series.times),
        ratio=list(series.ratio),
        alarms=list(series.alarms),
        trigger_index=series.trigger_index,
        recorded_trigger=series.recorded_trigger,
        open_interval=interval,
        marks=marks,
    )


def plot_series(
    series: StatisticSeries, path: Path, title: str, events: Sequence[IncidentEvent] = ()
) -> Path:
    """Write a PNG of :func:`chart_model`: ``statistic / threshold`` over event time with
    the threshold line, the alarms, the trigger and the incident's open interval; the time
    axis carries dates (with the year) when the series spans days."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure

    chart = chart_model(series, title, events)
    x = [_day(t) for t in chart.times]
    fig: Figure = plt.figure(figsize=(12, 4.5), dpi=100)
    try:
        ax = fig.add_subplot(1, 1, 1)
        _draw(ax, chart, x)
        _axes(ax, chart, x)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _day(t: datetime) -> float:
    """Matplotlib's date axis counts days since 1970-01-01 UTC (its default epoch)."""
    return t.timestamp() / 86400.0


def _draw(ax: Any, chart: ChartModel, x: list[float]) -> None:
    """The chart's content on ``ax`` (a matplotlib Axes), each part with its legend label:
    open interval, learning span, ratio, threshold, alarms, triggers, lifecycle marks."""
    if chart.open_interval is not None:
        ax.axvspan(
            _day(chart.open_interval.start),
            _day(chart.open_interval.end),
            color="tab:red",
            alpha=0.08,
            label=chart.open_interval.label,
        )
    learning = [i for i, r in enumerate(chart.ratio) if math.isnan(r)]
    if learning:
        ax.axvspan(
            x[learning[0]], x[learning[-1]], color="0.85", alpha=0.5, label="learning baseline"
        )
    ax.plot(x, chart.ratio, color="tab:blue", lw=1.2, label="statistic / threshold")
    ax.axhline(1.0, color="tab:red", ls="--", lw=1.2, label="threshold (alarm at 1)")
    if chart.alarms:
        ax.scatter(
            [x[i] for i in chart.alarms],
            [min(chart.ratio[i], 1e9) for i in chart.alarms],
            color="tab:orange",
            s=18,
            zorder=3,
            label="recomputed alarms",
        )
    if chart.trigger_index is not None:
        i = chart.trigger_index
        ax.scatter(
            [x[i]],
            [chart.ratio[i]],
            marker="*",
            s=220,
            color="tab:red",
            zorder=4,
            label="trigger (recomputed)",
        )
    if chart.recorded_trigger is not None:
        ax.axvline(
            _day(chart.recorded_trigger), color="0.3", ls=":", lw=1.0, label="recorded trigger"
        )
    colors = {"escalated": "tab:purple", "resolved": "tab:green", "re-learned": "tab:olive"}
    labelled: set[str] = set()
    for when, what in chart.marks:
        label = what if what not in labelled else "_nolegend_"  # one legend entry a kind
        labelled.add(what)
        ax.axvline(_day(when), color=colors.get(what, "0.5"), ls="-.", lw=1.2, label=label)


def _axes(ax: Any, chart: ChartModel, x: list[float]) -> None:
    """Limits that show everything drawn (ratio from 0, at least up to 1.6), a UTC date
    axis, labels, title, grid and the legend beside the plot."""
    from matplotlib import dates as mdates

    untyped: Any = mdates  # the locators and formatters are not annotated
    finite = [r for r in chart.ratio if math.isfinite(r)]
    ax.set_ylim(bottom=0.0, top=max([1.6, *(r * 1.08 for r in finite)]))
    ends = [x[0], x[-1]] if x else []
    if chart.open_interval is not None:
        ends += [_day(chart.open_interval.start), _day(chart.open_interval.end)]
    ends += [_day(t) for t, _ in chart.marks]
    lo, hi = min(ends), max(ends)
    pad = max((hi - lo) * 0.02, 1.0 / 1440)  # at least a minute
    ax.set_xlim(lo - pad, hi + pad)
    locator = untyped.AutoDateLocator(tz=UTC, minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(untyped.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel("event time (UTC)")
    ax.set_ylabel("statistic / threshold")
    ax.set_title(chart.title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def series_to_json(series: StatisticSeries) -> dict[str, Any]:
    return {
        "detector": series.detector,
        "times": [iso_utc(t) for t in series.times],
        "ratio": [None if math.isnan(r) else r for r in series.ratio],
        "alarms": series.alarms,
        "trigger_index": series.trigger_index,
        "reproduced": series.reproduced,
        "relearns": [{"at": iso_utc(at), "what": what} for at, what in series.relearns],
    }
