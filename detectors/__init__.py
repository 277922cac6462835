"""Pure online detectors: no Kafka, no faust, no I/O.

Every detector follows one contract (see :mod:`detectors.base`): the constructor stores
hyper-parameters only, ``update(x)`` advances small serializable state and returns a
:class:`~detectors.base.Signal` when a change is found, and the state can be saved and
restored with ``get_state()`` / ``set_state()``.
"""

from detectors.base import Detector, Direction, Signal, SignalKind

__all__ = ["Detector", "Direction", "Signal", "SignalKind"]
