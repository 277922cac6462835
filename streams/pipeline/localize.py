"""The pipeline's side of root-cause localization: read every key's excess for the detector
that fired, and the health of the detectors that judge whether an incident's cause persists.

The decision itself (which cut explains the change, which detections share a cause) is
:mod:`alerting.cause`; this module only gathers its inputs from the keyed detector sets of
one model, read-only (:meth:`detectors.base.Detector.excess`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from alerting.cause import GroupingPolicy, Reading, localize
from alerting.model import Labels, Localization, Probe
from detectors.base import Direction, Signal
from detectors.coverage import POOLED, CategoryRates
from streams.pipeline.detectorset import DetectorSet, decayed
from streams.pipeline.keys import key_id, model_key_of
from streams.pipeline.silence import silent_after

SetOf = Callable[[str], DetectorSet | None]
"""A key id -> its detector set (None when the key has no state)."""


def traffic_at(ds: DetectorSet, t: float) -> float:
    """A key's decayed event count, decayed to event time ``t`` (comparable across keys)."""
    return decayed(ds.traffic, ds.traffic_t, t)


def _direction(signal: Signal) -> Direction:
    return Direction.UP if signal.direction is Direction.UP else Direction.DOWN


def localize_detection(
    name: str,
    signal: Signal,
    fired: Labels,
    keys: Iterable[Labels],
    set_of: SetOf,
    t: float,
    fresh: Callable[[Labels], bool],
    policy: GroupingPolicy,
) -> tuple[Localization | None, tuple[Probe, ...]]:
    """Localize a signal of detector ``name`` over the model's ``keys``; the probe is that
    detector in the culprit's key (for a pooled harm signal, the category whose change is
    alarmed there: :func:`carrying_category`). (None, ()) when the detector reports no
    excess.

    Only the culprit judges whether the cause persists. A key that fired on the culprit's
    change sees it on a share of its traffic, whether it lies inside the culprit (a tenant that
    fired on its model's change), crosses it (a locale that fired on one tenant's change)
    or contains it (the model that fired on one tenant's change): its own reading of
    the change as over comes later than the culprit's, or never while its own baseline
    was estimated low, and such keys held incidents open for hours after their cause
    ended. A change of its own that outlasts the culprit's keeps its detector alarming: it
    joins the incident again (restarting its quiet period), or pages at its own scope."""
    model_ds = set_of(key_id(Labels(model=fired.model)))
    model_traffic = traffic_at(model_ds, t) if model_ds is not None else 0.0
    direction = _direction(signal)
    readings: list[Reading] = []
    for labels in keys:
        ds = set_of(key_id(labels))
        det = ds.detectors.get(name) if ds is not None else None
        if ds is None or det is None:
            continue
        ex = det.excess(signal.feature, direction)
        if ex is None:
            continue
        share = min(1.0, traffic_at(ds, t) / model_traffic) if model_traffic > 0 else None
        readings.append(Reading(labels, ex, share, fresh(labels)))
    if not any(r.labels == fired for r in readings):
        return None, ()
    loc = localize(readings, fired, policy)
    culprit = set_of(key_id(loc.scope))
    det = culprit.detectors.get(name) if culprit is not None else None
    feature = signal.feature
    if isinstance(det, CategoryRates) and feature == POOLED:
        feature = carrying_category(det) or feature
    probe = Probe(key=key_id(loc.scope), detector=name, feature=feature, direction=direction.value)
    return loc, (probe,)


def carrying_category(det: CategoryRates) -> str | None:
    """The named category whose change is alarmed (its episode alarmed, its recovery test
    not read over), the one with the largest excess if several: the probe of a pooled
    detection, which that change raised or helped raise. None when no category is
    alarmed (a rise spread thin over several: the pooled test judges it).

    Why not the pooled test: its rate sums every category, so its recovery test is
    matched to a smaller relative shift than the category's, and categories whose
    baselines were estimated low keep it near its cap long after a one-category change
    has ended (docs/validation.md, stop 44). A rise in another category raises
    detections (and probes) of its own, or the pooled test's next alarm after the
    incident resolves."""
    best: tuple[float, str] | None = None
    for category in det.categories:
        ex = det.excess(category, Direction.UP)
        if ex is not None and ex.alarmed and not ex.recovered:
            best = max(best or (ex.excess, category), (ex.excess, category))
    return best[1] if best is not None else None


def probe_health(
    probes: Iterable[Probe],
    set_of: SetOf,
    min_gap_s: float | None = None,
    ended: dict[str, float] | None = None,
) -> dict[str, bool]:
    """Probe id -> whether the change its detector alarmed on persists: the episode is
    still alarmed and no recovery test has read the change as over (:attr:`detectors.base.
    Excess.recovered`). Probes whose key or detector has no state, or reports no excess,
    are left out: unknown. With ``min_gap_s``, a probe whose key's traffic has stopped
    while its model's goes on (:func:`stopped`) reads as ended.

    ``ended`` (when given) receives, for each probe read as ended, the event time (Unix
    seconds) its change ended by the detector's estimate: where its recovery test last
    stood at its cap (:attr:`detectors.base.Excess.quiet_for`), mapped to a time by the
    key's evidence tracker, or the key's last event for a key whose traffic stopped. The
    estimate holds whichever read the change as ended first, the test or the episode: a
    pooled rate's episode can close before its test has drained, and the test left its
    cap where the change stopped explaining the data either way. Probes with no estimate
    (a detector without a recovery test, or one no alarm armed) are left out."""
    out: dict[str, bool] = {}
    for p in probes:
        ds = set_of(p.key)
        det = ds.detectors.get(p.detector) if ds is not None else None
        if ds is None or det is None:
            continue
        if min_gap_s is not None and stopped(ds, set_of(model_key_of(p.key)), min_gap_s):
            out[p.id] = False
            if ended is not None:
                ended[p.id] = ds.served_t
            continue
        ex = det.excess(p.feature, Direction(p.direction))
        if ex is None:
            continue
        out[p.id] = ex.alarmed and not ex.recovered
        if ended is not None and not out[p.id] and ex.quiet_for is not None:
            ended[p.id] = change_end_t(ds, p.detector, ex.quiet_for)
    return out


def change_end_t(ds: DetectorSet, name: str, quiet_for: int) -> float:
    """Event time of the first observation of detector ``name`` in key ``ds`` after the
    last ``quiet_for`` ones (where its recovery test last stood at its cap): the tracker's
    checkpoint at or after it, else the key's last event (estimates that err late)."""
    tracker = ds.trackers.get(name)
    t = tracker.time_at(tracker.n - quiet_for) if tracker is not None else None
    return ds.traffic_t if t is None else min(t, ds.traffic_t)


def stopped(ds: DetectorSet, model_ds: DetectorSet | None, min_gap_s: float) -> bool:
    """The key stopped serving while its model went on: its last input or output is
    older than the model's by a gap its own serving rate makes a silence
    (:func:`streams.pipeline.silence.silent_after`, at least ``min_gap_s``). A rolled-back
    version or a feature switched off serves no more, so its detectors can never read
    their change as over; its cause is gone with its traffic. Feedback and evaluations of
    what it served before go on arriving for an hour or more and do not count. Judged on
    event times of the data alone, so a backlog or a stream that ended everywhere stops
    nothing."""
    if model_ds is None or model_ds is ds:
        return False
    return model_ds.served_t - ds.served_t > silent_after(ds.served_rate(), min_gap_s)


def known_keys(index: Mapping[str, Labels]) -> list[Labels]:
    """The labels of a model's known keys, most general first (deterministic order)."""
    return sorted(
        index.values(), key=lambda lb: (lb.version is not None, len(lb.segment), key_id(lb))
    )
