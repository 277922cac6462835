"""Pure online detectors: no Kafka, no faust, no I/O.

Every detector follows one contract (see :mod:`detectors.base`): the constructor stores
hyper-parameters only, ``update(x)`` advances small serializable state and returns a
:class:`~detectors.base.Signal` when a change is found, and the state can be saved and
restored with ``get_state()`` / ``set_state()``. Thresholds follow from ``arl0``, the
target expected number of events between false alarms (see :mod:`detectors.arl`).
"""

from detectors.adaptive_rate import AdaptiveBernoulliCusum
from detectors.base import DEFAULT_ARL0, Detector, Direction, Excess, Signal, SignalKind
from detectors.confidence import ConfidenceShift
from detectors.drift import (
    AlibiOnlineDrift,
    CategoricalDrift,
    EmbeddingDrift,
    LabelMixDrift,
    NumericDrift,
)
from detectors.moderation import CriticalEventDetector, ToxicityRate
from detectors.rate import BernoulliCusum, DownvoteSpike, PromptInjectionRate
from detectors.registry import REGISTRY, create

__all__ = [
    "DEFAULT_ARL0",
    "REGISTRY",
    "AdaptiveBernoulliCusum",
    "AlibiOnlineDrift",
    "BernoulliCusum",
    "CategoricalDrift",
    "ConfidenceShift",
    "CriticalEventDetector",
    "Detector",
    "Direction",
    "DownvoteSpike",
    "EmbeddingDrift",
    "Excess",
    "LabelMixDrift",
    "NumericDrift",
    "PromptInjectionRate",
    "Signal",
    "SignalKind",
    "ToxicityRate",
    "create",
]
