"""What the pages compute from the folded state: charts, the detector heat map, deploys.

Pure functions over :mod:`alerting` models and detector-table JSON; no Kafka, no HTTP.
Charts are inline SVG drawn here (no JavaScript library, nothing fetched from the
internet); each point carries a ``<title>`` so hovering shows its values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any, Final

from alerting.model import IncidentEvent, iso_utc
from streams.detection_settings import DetectionSettings
from streams.investigation.audit import StatisticSeries
from streams.investigation.chart import chart_model
from streams.pipeline.detect import is_traffic_key
from streams.pipeline.detectorset import DetectorSet, per_detector_arl0
from streams.pipeline.frozen import FrozenStore, is_frozen_key
from streams.pipeline.keys import Level, level_of_key, model_of_key
from streams.pipeline.state import readable

MAX_POINTS: Final = 600


@dataclass(frozen=True)
class Point:
    time: datetime
    value: float
    label: str


def _polyline(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


@dataclass(frozen=True)
class _Frame:
    """A chart's plot area: where time ``t0 .. t0 + span_t`` (epoch s) and values
    ``0 .. top`` land in an SVG of ``width`` x ``height``."""

    width: int
    height: int
    t0: float
    span_t: float
    top: float
    pad_l: int = 56
    pad_t: int = 24
    pad_r: int = 12
    pad_b: int = 36

    @property
    def w(self) -> int:
        return self.width - self.pad_l - self.pad_r

    @property
    def h(self) -> int:
        return self.height - self.pad_t - self.pad_b

    def x(self, when: datetime) -> float:
        return self.pad_l + (when.timestamp() - self.t0) / self.span_t * self.w

    def y(self, value: float) -> float:
        return self.pad_t + self.h - max(0.0, min(value, self.top)) / self.top * self.h

    def xy(self, p: Point) -> tuple[float, float]:
        return self.x(p.time), self.y(p.value)


_COLORS: Final = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b")


def svg_chart(
    series: dict[str, Sequence[Point]],
    *,
    title: str,
    y_label: str,
    threshold: float | None = None,
    width: int = 720,
    height: int = 260,
    marks: Sequence[Point] = (),
    bands: Sequence[tuple[datetime, datetime, str]] = (),
) -> str:
    """A line chart over time of one or more named series, with a dashed threshold line.

    ``marks`` are drawn as stars (e.g. the trigger), ``bands`` as shaded time intervals
    (e.g. the incident's open interval, titled with their label). The SVG scales to its container
    (``viewBox``), so it is usable on a phone.
    """
    pts = [p for ps in series.values() for p in ps if math.isfinite(p.value)]
    if not pts:
        return (
            f'<svg class="chart" viewBox="0 0 {width} 60" role="img" aria-label="{escape(title)}">'
            f'<text x="8" y="30">{escape(title)}: no data</text></svg>'
        )
    t0 = min([p.time.timestamp() for p in pts] + [b[0].timestamp() for b in bands])
    t1 = max([p.time.timestamp() for p in pts] + [b[1].timestamp() for b in bands])
    top = max([*(p.value for p in pts), (threshold or 0.0) * 1.15, 1e-9])
    f = _Frame(width, height, t0, max(t1 - t0, 1.0), top)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{f.pad_l}" y="16" class="chart-title">{escape(title)}</text>',
        f'<line x1="{f.pad_l}" y1="{f.pad_t + f.h}" x2="{f.pad_l + f.w}" y2="{f.pad_t + f.h}" '
        'class="axis"/>',
        f'<line x1="{f.pad_l}" y1="{f.pad_t}" x2="{f.pad_l}" y2="{f.pad_t + f.h}" class="axis"/>',
    ]
    for start, end, label in bands:
        xa, xb = f.x(start), f.x(end)
        out.append(
            f'<rect x="{xa:.1f}" y="{f.pad_t}" width="{max(xb - xa, 1.0):.1f}" height="{f.h}" '
            f'fill="#d62728" fill-opacity="0.08"><title>{escape(label)}</title></rect>'
        )
    out += _ticks(f, y_label, pts[0].time)
    if threshold is not None and threshold <= top:
        y = f.pad_t + f.h - threshold / top * f.h
        out.append(
            f'<line x1="{f.pad_l}" y1="{y:.1f}" x2="{f.pad_l + f.w}" y2="{y:.1f}" '
            'class="threshold"/>'
        )
    out += _lines(f, series)
    for p in marks:
        if math.isfinite(p.value):
            x, y = f.xy(p)
            out.append(
                f'<text x="{x:.1f}" y="{y + 6:.1f}" class="mark" text-anchor="middle">★'
                f"<title>{escape(p.label)}</title></text>"
            )
    if threshold is not None:
        out.append(
            f'<text x="{f.pad_l + f.w}" y="{f.pad_t + 12}" class="legend threshold-label" '
            f'text-anchor="end">threshold</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _ticks(f: _Frame, y_label: str, like: datetime) -> list[str]:
    """Value ticks (0, half, top), the first and last time (in ``like``'s zone, shown as
    UTC) and the rotated y-axis label."""
    out = []
    for frac in (0.0, 0.5, 1.0):
        y = f.pad_t + f.h - frac * f.h
        out.append(f'<text x="{f.pad_l - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">')
        out.append(f"{f.top * frac:.3g}</text>")
    for frac, anchor in ((0.0, "start"), (1.0, "end")):
        t = datetime.fromtimestamp(f.t0 + frac * f.span_t, tz=like.tzinfo)
        x = f.pad_l + frac * f.w
        out.append(
            f'<text x="{x:.1f}" y="{f.height - 8}" class="tick" text-anchor="{anchor}">'
            f"{escape(iso_utc(t)[:16].replace('T', ' '))} UTC</text>"
        )
    mid = f.pad_t + f.h / 2
    out.append(
        f'<text x="12" y="{mid:.1f}" class="tick" '
        f'transform="rotate(-90 12 {mid:.1f})" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    return out


def _lines(f: _Frame, series: dict[str, Sequence[Point]]) -> list[str]:
    """Each series as a polyline (with a hoverable dot per point when there are at most
    80) and its legend entry."""
    out = []
    for i, (name, points) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        finite = [p for p in points if math.isfinite(p.value)]
        out.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.6" '
            f'points="{_polyline([f.xy(p) for p in finite])}"/>'
        )
        if len(finite) <= 80:
            for p in finite:
                x, y = f.xy(p)
                out.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                    f"<title>{escape(p.label)}</title></circle>"
                )
        out.append(
            f'<text x="{f.pad_l + 8}" y="{f.pad_t + 12 + 14 * i}" fill="{color}" class="legend">'
            f"{escape(name)}</text>"
        )
    return out


def lifecycle_chart(events: Sequence[IncidentEvent]) -> str:
    """The recorded signal at every lifecycle step: statistic against its threshold, and
    the observed rate against its baseline, as the engine published them."""
    stat: list[Point] = []
    thr: list[Point] = []
    obs: list[Point] = []
    base: list[Point] = []
    for e in events:
        s = e.evidence.signal
        t = e.emitted_at
        step = f"{e.action.value} #{e.sequence} at {iso_utc(t)}"
        stat.append(Point(t, s.statistic, f"{step}: statistic {s.statistic:.3f}"))
        thr.append(Point(t, s.threshold, f"{step}: threshold {s.threshold:.3f}"))
        obs.append(Point(t, s.observed, f"{step}: observed {s.observed:.4f}"))
        base.append(Point(t, s.baseline, f"{step}: baseline {s.baseline:.4f}"))
    first = svg_chart(
        {"statistic": stat, "threshold": thr},
        title="detector statistic and threshold at each lifecycle step",
        y_label="statistic",
    )
    second = svg_chart(
        {"observed": obs, "baseline": base},
        title="observed value and baseline at each lifecycle step",
        y_label="value",
    )
    return first + second


def series_chart(series: StatisticSeries, events: Sequence[IncidentEvent] = ()) -> str:
    """The recomputed statistic / threshold over every observation of the incident's key
    (``sentinel investigate``'s series), thinned to :data:`MAX_POINTS`: the same
    :func:`~streams.investigation.chart.chart_model` as ``sentinel investigate --plot``
    (threshold, trigger, the incident's open interval and lifecycle marks)."""
    chart = chart_model(series, series.detector, events)
    n = len(series.times)
    step = max(1, math.ceil(n / MAX_POINTS))
    keep = sorted({*range(0, n, step), *series.alarms, n - 1} if n else set())
    pts = [
        Point(
            series.times[i],
            series.ratio[i],
            f"{iso_utc(series.times[i])}: statistic {series.statistic[i]:.3f} / threshold "
            f"{series.threshold[i]:.3f} = {series.ratio[i]:.2f}",
        )
        for i in keep
        if not math.isnan(series.ratio[i])
    ]
    marks = []
    if series.trigger_index is not None:
        i = series.trigger_index
        marks.append(
            Point(series.times[i], series.ratio[i], f"trigger at {iso_utc(series.times[i])}")
        )
    bands = []
    if chart.open_interval is not None:
        iv = chart.open_interval
        bands.append((iv.start, iv.end, f"{iv.label}: {iso_utc(iv.start)} .. {iso_utc(iv.end)}"))
    for when, what in chart.marks:
        bands.append((when, when, f"{what} at {iso_utc(when)}"))
    return svg_chart(
        {"statistic / threshold": pts},
        title=f"{series.detector}: statistic / threshold per observation (alarm at 1)",
        y_label="ratio",
        threshold=1.0,
        marks=marks,
        bands=bands,
    )


# -- the Models page --------------------------------------------------------------------


@dataclass
class KeyRow:
    """One detector key: its observations and, per detector kind, statistic / threshold."""

    key: str
    level: str
    observations: int
    ratios: dict[str, float | None] = field(default_factory=dict)  # None: still learning
    awaiting: dict[str, str] = field(default_factory=dict)
    """Per kind still learning: what its detector needs before it can alarm
    (:meth:`detectors.base.Detector.awaiting`)."""


@dataclass
class ModelView:
    model: str
    rows: list[KeyRow] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    deploys: list[dict[str, Any]] = field(default_factory=list)
    current_version: str | None = None
    hidden: int = 0
    """Detector keys of this model past the page's limit, not shown (segment keys are the
    first left out)."""


def heat_class(ratio: float | None) -> str:
    """CSS class of a heat-map cell: how close the detector is to its threshold."""
    if ratio is None:
        return "heat-learning"
    for bound, name in ((0.25, "heat-0"), (0.5, "heat-1"), (0.75, "heat-2"), (1.0, "heat-3")):
        if ratio < bound:
            return name
    return "heat-4"


def model_views(
    detectors: dict[str, dict[str, Any]],
    engines: dict[str, dict[str, Any]],
    settings: DetectionSettings,
    *,
    max_keys: int = 500,
) -> list[ModelView]:
    """Per model, its detector keys (rows) and detector kinds (columns), from the
    detector table's changelog, and its versions and deploys from the engine table's.

    At most ``max_keys`` keys per model (model and version keys first, then segments by
    name), and :attr:`ModelView.hidden` says how many more: a limit across all models
    dropped whole models that sort after a big one, open incidents and all."""
    arl0 = per_detector_arl0(settings)
    views: dict[str, ModelView] = {}
    frozen = FrozenStore(detectors)  # the sets' fitted references, stored apart
    order = {"model": 0, "version": 1, "segment": 2}
    by_model: dict[str, list[tuple[int, str, Level]]] = {}
    for key in detectors:
        if not is_frozen_key(key):
            level = level_of_key(key)
            by_model.setdefault(model_of_key(key), []).append((order[level], key, level))
    shown: list[tuple[str, Level]] = []
    for model, keys in by_model.items():
        keys.sort()
        shown += [(key, level) for _, key, level in keys[:max_keys]]
        if len(keys) > max_keys:
            views[model] = ModelView(model, hidden=len(keys) - max_keys)
    for key, level in shown:
        model = model_of_key(key)
        state = detectors[key]
        if not readable("detectors", state):
            continue  # another release's state: the worker relearns it
        try:
            ds = DetectorSet.from_json(frozen.read(key, state), settings, level, arl0)
        except (KeyError, ValueError, TypeError):
            continue
        view = views.setdefault(model, ModelView(model))
        row = KeyRow(key, level, max((t.n for t in ds.trackers.values()), default=0))
        kinds = Counter(name.split(":")[0] for name in ds.detectors)
        for name, det in ds.detectors.items():
            kind, _, features = name.partition(":")
            ratio = det.heat()
            if ratio is not None:
                ratio = max(0.0, ratio)  # a window test's -log10 p reads -0.0 at p = 1
            elif not det.alarm_ready:
                # Several of one kind at a key (one per evaluator and metric): say which.
                which = f"{features}: " if kinds[kind] > 1 and features else ""
                row.awaiting.setdefault(kind, which + det.awaiting())
            old = row.ratios.get(kind)
            if kind not in row.ratios or (ratio is not None and (old is None or ratio > old)):
                row.ratios[kind] = ratio
            if kind not in view.kinds:
                view.kinds.append(kind)
        if level == "model":
            view.versions = list(ds.versions)
        view.rows.append(row)
    for model, state in engines.items():
        if is_traffic_key(model) or not readable("engine", state):
            continue  # a model's traffic beside its engine, or another release's state
        deploys, current = state.get("deploys"), state.get("current_versions")
        view = views.setdefault(model, ModelView(model))
        if isinstance(deploys, list):  # an odd record shows no deploys, not an error page
            view.deploys = sorted(
                (d for d in deploys if isinstance(d, dict)),
                key=lambda d: str(d.get("deployed_at", "")),
            )
        if isinstance(current, dict) and isinstance(current.get(model), str):
            view.current_version = current[model]
    for view in views.values():
        view.kinds.sort()
        view.rows.sort(key=lambda r: (order[r.level], r.key))
    return [views[m] for m in sorted(views)]
