"""The Prometheus text exposition format 0.0.4, written here (no new dependency): metric
families, samples with escaped labels, a fixed-bucket histogram, and :func:`render`.

Used by :mod:`streams.runtime.observability` for the worker's ``/metrics``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 14400.0,
)  # fmt: skip


MetricType = Literal["counter", "gauge", "histogram", "summary", "untyped"]
_NAME_RE: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
Labels = tuple[tuple[str, str], ...]


def _labels(labels: Mapping[str, str] | None) -> Labels:
    items = tuple(sorted((labels or {}).items()))
    for key, _ in items:
        if not _LABEL_RE.match(key) or key.startswith("__"):
            raise ValueError(f"invalid label name {key!r}")
    return tuple((k, str(v)) for k, v in items)


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class Sample:
    suffix: str
    labels: Labels
    value: float


@dataclass
class MetricFamily:
    """One metric: name, type, help, and its samples (``suffix`` for histogram parts)."""

    name: str
    type: MetricType
    help: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> None:
        self.samples.append(Sample(suffix, _labels(labels), float(value)))


def render(families: Iterable[MetricFamily]) -> str:
    """The text exposition of ``families`` (each name once, samples in insertion order)."""
    lines: list[str] = []
    seen: set[str] = set()
    for fam in families:
        if fam.name in seen:
            raise ValueError(f"metric family {fam.name!r} rendered twice")
        seen.add(fam.name)
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for s in fam.samples:
            lab = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in s.labels)
            lines.append(f"{fam.name}{s.suffix}{{{lab}}} {format_value(s.value)}".replace("{}", ""))
    return "\n".join(lines) + "\n"


class Histogram:
    """A labelled histogram with fixed buckets (cumulative on export)."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, value: float, labels: Mapping[str, str] | None = None) -> None:
        key = _labels(labels)
        counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
        i = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        counts[i] += 1
        self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, labels: Mapping[str, str] | None = None) -> int:
        return sum(self._counts.get(_labels(labels), []))

    def family(self, name: str, help_text: str) -> MetricFamily:
        fam = MetricFamily(name, "histogram", help_text)
        for key, counts in sorted(self._counts.items()):
            base = dict(key)
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                fam.add(running, base | {"le": format_value(bound)}, "_bucket")
            fam.add(self._sums[key], base, "_sum")
            fam.add(running, base, "_count")
        return fam
