"""Detector metrics of a worker: a sampled, time-budgeted scan of detector statistics.

``/metrics`` shows, per level and detector kind, how close the live detectors are to
alarm (statistic / threshold), which keys are closest, how many still learn, and the
bounds on detector keys (label values folded into ``other``, idle keys expired). Reading
every detector on every scrape does not scale (a full scan of the table took 1.5 s at
30k keys, on the event loop), so :class:`DetectorMetrics` samples: at most every
``interval_s``, over a rotating sample of ``max_scan_keys`` live keys, within
``scan_budget_s``. Kept apart from :mod:`streams.runtime.observability`, which collects
the worker's other metrics and serves them, because the sampling is a policy of its own.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streams.pipeline.keys import LEVELS, level_of_key
from streams.runtime.exposition import MetricFamily

if TYPE_CHECKING:
    from streams.runtime.agents import Service


@dataclass
class DetectorScan:
    """The result of one :meth:`DetectorMetrics.rescan` (what the gauges show until the next)."""

    at: float = -math.inf
    keys: Counter[str] = field(default_factory=Counter)
    top: list[tuple[float, str, str, str]] = field(default_factory=list)  # ratio, key, lvl, kind
    max_by: dict[tuple[str, str], float] = field(default_factory=dict)
    learning: Counter[tuple[str, str]] = field(default_factory=Counter)
    truncated: bool = False


class DetectorMetrics:
    """The detector gauges of one worker's ``service``, from a sampled scan (see the
    module docstring); ``monotonic`` is injected so tests can spend the time budget."""

    def __init__(
        self,
        service: Service,
        *,
        top_k: int = 20,
        interval_s: float = 30.0,
        max_scan_keys: int = 500,
        scan_budget_s: float = 0.015,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self.top_k = top_k
        self.interval_s = interval_s
        self.max_scan_keys = max_scan_keys
        self.scan_budget_s = scan_budget_s
        self._monotonic = monotonic
        self.scan = DetectorScan()
        self.cursor = 0

    def rescan(self) -> None:
        """Read detector statistics from the live (in-memory) detector sets, sampled: each
        scan reads the keys of the last top list (so the keys closest to alarm stay
        watched), then at most ``max_scan_keys`` keys in rotation, and stops when
        ``scan_budget_s`` is spent. Nothing is deserialised, and the live sets are at most
        ``detection.max_live_keys``, so a scrape stays fast at 100k keys (a full scan of
        the table took 1.5 s at 30k). Key counts come exactly from the detect stage's key
        tracker, not from the scan."""
        detect = self._service.detect
        live = detect.live_sets.live
        began = self._monotonic()
        scan = DetectorScan(at=began)
        kids = list(live)
        start = self.cursor % len(kids) if kids else 0
        chosen = kids[start : start + self.max_scan_keys]
        if len(chosen) < self.max_scan_keys:
            chosen += kids[: min(start, self.max_scan_keys - len(chosen))]
        # The last top list first (the keys closest to alarm stay watched), then the
        # rotation, until the time budget is spent: a scrape's cost is bounded on a busy
        # machine too (it runs on the event loop); the rotation resumes where it stopped.
        top = [key for _, key, _, _ in self.scan.top if key in live]
        order = list(dict.fromkeys([*top, *chosen]))
        rotated = 0
        best: dict[tuple[str, str], tuple[float, str]] = {}
        for i, key in enumerate(order):
            if i % 16 == 15 and self._monotonic() - began > self.scan_budget_s:
                break
            if i >= len(top):
                rotated += 1
            ds = live[key]
            level = level_of_key(key)
            for name, det in ds.detectors.items():
                kind = name.partition(":")[0]
                if not det.alarm_ready:
                    scan.learning[(level, kind)] += 1
                    continue
                ratio = det.heat()
                if ratio is None:
                    continue
                if ratio > scan.max_by.get((level, kind), -math.inf):
                    scan.max_by[(level, kind)] = ratio
                if ratio > best.get((key, kind), (-math.inf, ""))[0]:
                    best[(key, kind)] = (ratio, level)
        self.cursor = start + rotated
        scan.truncated = rotated < len(kids)
        ranked = sorted(((r, k, lvl, kind) for (k, kind), (r, lvl) in best.items()), reverse=True)
        scan.top = ranked[: self.top_k]
        for level in LEVELS:
            scan.keys[level] = detect.live_sets.idle.by_level[level]
        self.scan = scan

    def families(self) -> list[MetricFamily]:
        """The detector gauges (rescanned when the last scan is older than ``interval_s``)
        and the bounds on detector keys."""
        if self._monotonic() - self.scan.at >= self.interval_s:
            self.rescan()
        scan = self.scan
        keys = MetricFamily("sentinel_detector_keys", "gauge", "Detector keys by level.")
        for key_level in LEVELS:
            keys.add(scan.keys[key_level], {"level": key_level})
        learning = MetricFamily(
            "sentinel_detectors_learning",
            "gauge",
            "Detectors that cannot alarm yet (learning their baseline).",
        )
        for (level, kind), n in sorted(scan.learning.items()):
            learning.add(n, {"level": level, "detector": kind})
        top = MetricFamily(
            "sentinel_detector_statistic_ratio",
            "gauge",
            f"statistic / threshold of the {self.top_k} keys closest to alarm (1 = alarm).",
        )
        for ratio, key, level, kind in scan.top:
            top.add(ratio, {"key": key, "level": level, "detector": kind})
        worst = MetricFamily(
            "sentinel_detector_statistic_ratio_max",
            "gauge",
            "Largest statistic / threshold over all keys, by level and detector.",
        )
        for (level, kind), ratio in sorted(scan.max_by.items()):
            worst.add(ratio, {"level": level, "detector": kind})
        trunc = MetricFamily(
            "sentinel_detector_scan_truncated",
            "gauge",
            "1 if the last scan sampled max_scan_keys of more live keys (statistics gauges "
            "are then over a rotating sample; key counts are exact).",
        )
        trunc.add(int(scan.truncated))
        return [keys, learning, top, worst, trunc, *self.bounds()]

    def bounds(self) -> list[MetricFamily]:
        """Label values folded into 'other', the most admitted per label, keys expired."""
        detect = self._service.detect
        folded = MetricFamily(
            "sentinel_label_values_folded_total",
            "counter",
            "Observations whose label value (or version) was over its per-model limit and "
            "fed the 'other' key instead, by label.",
        )
        by_label: Counter[str] = Counter()
        for (_, label), n in detect.fold.folded.items():
            by_label[label] += n
        for label in sorted(by_label):
            folded.add(by_label[label], {"label": label})
        admitted = MetricFamily(
            "sentinel_label_values_max",
            "gauge",
            "Largest number of distinct values admitted for one model, by label.",
        )
        most: dict[str, int] = {}
        for (_, label), n in detect.fold.admitted().items():
            most[label] = max(most.get(label, 0), n)
        for label in sorted(most):
            admitted.add(most[label], {"label": label})
        expired = MetricFamily(
            "sentinel_detector_keys_expired_total",
            "counter",
            "Detector keys dropped after detection.idle_key_hours without an event.",
        )
        expired.add(detect.live_sets.idle.expired)
        return [folded, admitted, expired]
