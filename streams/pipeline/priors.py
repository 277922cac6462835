"""Small segments start from their parent key's baseline (a shrinkage prior).

A tenant with a few dozen feedback events a day needs ten days to learn a downvote
baseline of its own (``feedback_warmup_events``), and would be watched by nothing until
then. So while a segment key's rate detector warms up, it adopts the baseline of the
closest parent key that has one (model x version, else the model) as a Beta prior worth
``segment_prior_events`` observations: it can alarm from its first event, its threshold is
set for the upper confidence bound of the posterior (prior plus its own observations, see
:meth:`detectors.rate.BernoulliCusum.adopt_prior`), and its own events take over as they
come. While the prior still floors its baseline, the floor follows the parent's
re-estimates (a parent's own baseline is young too when a segment adopts it). Its false
alarms are in the service budget like any key's: the budget already counts every segment
key's tests (:func:`streams.pipeline.detectorset.per_detector_arl0`).

Score charts (confidence, groundedness, judge scores, latency, tokens) take a prior of
another kind: a segment's scores may sit apart from its model's, so only the *shape* of
the parent's reference pools. Once a segment has ``segment_prior_events`` values of its
own, it charts its mean against that shape, standardised by its own mean and spread at
their conservative bounds, until its own reference is complete
(:meth:`detectors.confidence.ConfidenceShift.adopt_prior`); so do numeric drift's mean
charts (:meth:`detectors.drift.NumericDrift.adopt_prior`). Other drift detectors keep
learning their own reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from detectors.base import Detector


class _HasDetectors(Protocol):
    @property
    def detectors(self) -> Mapping[str, Detector[Any]]: ...


def adopt_parent_prior(
    det: Detector[Any], name: str, parents: Sequence[_HasDetectors], strength: float
) -> bool:
    """Give ``det`` (if it has an ``adopt_prior(parent, strength)`` method) the baseline
    of the first parent whose detector of the same name and class can alarm: adopted while
    ``det`` warms up, followed while it floors ``det``'s baseline. Returns whether a prior
    was adopted or moved (0 strength: off)."""
    # Called for every observation of a learning detector: ``getattr``, not an
    # ``isinstance`` check against the runtime protocol (ten times slower). A detector
    # whose prior can no longer change says so (``prior_settled``: a young score chart
    # that has its prior, learning its own reference).
    adopt = getattr(det, "adopt_prior", None)
    if strength <= 0 or adopt is None or getattr(det, "prior_settled", False):
        return False
    for parent in parents:
        theirs = parent.detectors.get(name)
        ready = theirs is not None and type(theirs) is type(det) and theirs.alarm_ready
        if ready and adopt(theirs, strength):
            return True
    return False
