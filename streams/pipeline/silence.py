"""A model whose traffic stops is an incident: all of it, or its outputs while its inputs
continue (the serving path is down while callers keep sending).

Silence is judged against the model's own learned arrival rate. Each model's inputs and
outputs are counted with an exponential decay (half-life :data:`RATE_HALF_LIFE_S` of event
time), which tracks the daily cycle; a decayed count ``c`` at a steady rate ``r`` settles
at ``r * H / ln 2``, so ``r = c * ln 2 / H`` (corrected while the history is short). A
Poisson stream at rate ``r`` is quiet for ``g`` seconds with probability ``exp(-r g)``; the
watch calls a gap silent once that chance falls below :data:`CHANCE` *and* the gap is at
least ``min_gap_s`` (the configured ``silence_minutes``: partitions drift minutes apart in
event time, and a sparse model needs longer). A model is judged only after
:data:`MIN_EVENTS` events and one half-life of history, so a new model never "falls silent"
on its first minutes.

"Now" is given by the caller: the stream's event time of inputs and outputs (another
model's traffic keeps time moving when one model stops; feedback, which trails outputs by
up to hours, does not: a stream that ended is not judged silent by its late feedback) or
event time advanced by the wall clock (a worker whose whole input stopped), see
:meth:`streams.pipeline.detect.Detect.tick_wall`. Pure and in memory; the worker stores
each model's history with its incident engine (:meth:`SilenceWatch.state_of`) and a
restarted worker, or a partition's new owner, resumes it (:meth:`SilenceWatch.resume`), so
a model that stopped before the restart is still found silent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from detectors.base import Direction, Signal, SignalKind
from streams.pipeline.observation import SERVING

RATE_HALF_LIFE_S: Final = 3600.0
"""Memory of the arrival-rate estimate (event time)."""
CHANCE: Final = 1e-6
"""A gap this unlikely at the learned rate is a silence (about one chance alarm per million
expected arrivals' worth of gaps)."""
MIN_EVENTS: Final = 50
"""Events of a stream (inputs or outputs) before its silence is judged."""
DETECTOR: Final = "TrafficSilence"


@dataclass
class _Stream:
    """Arrivals of one event kind of one model."""

    first: float
    last: float
    count: float = 0.0
    """Decayed event count at :attr:`last`."""
    events: int = 0
    wall: float | None = None
    """Wall-clock time of the latest arrival processed (the worker; None offline)."""

    def see(self, t: float) -> None:
        if t > self.last:
            self.count *= math.exp2(-(t - self.last) / RATE_HALF_LIFE_S)
            self.last = t
        self.count += 1.0
        self.events += 1

    def rate(self) -> float:
        """Learned arrivals per second, as of the last arrival (corrected for a history
        shorter than the decay's memory: after ``T`` seconds the count has reached
        ``1 - 2^(-T/H)`` of its steady level)."""
        filled = 1.0 - math.exp2(-(self.last - self.first) / RATE_HALF_LIFE_S)
        return self.count * math.log(2.0) / RATE_HALF_LIFE_S / max(filled, 1e-9)

    def ready(self) -> bool:
        return self.events >= MIN_EVENTS and self.last - self.first >= RATE_HALF_LIFE_S

    def due_gap(self, min_gap_s: float) -> float:
        """The gap (seconds) after which this stream counts as silent."""
        return silent_after(self.rate(), min_gap_s)

    def to_json(self) -> list[float]:
        return [self.first, self.last, self.count, float(self.events)]

    @classmethod
    def from_json(cls, data: Any, wall: float | None) -> _Stream:
        """A stream from :meth:`to_json`'s list; ValueError when it is not one."""
        if not isinstance(data, list) or len(data) != 4:
            raise ValueError(f"a stream's history is 4 numbers, got {data!r}")
        first, last, count, events = (float(x) for x in data)
        if not (math.isfinite(first) and first <= last and count >= 0 and events >= 0):
            raise ValueError(f"not a stream's history: {data!r}")
        return cls(first=first, last=last, count=count, events=int(events), wall=wall)


def silent_after(rate: float, min_gap_s: float) -> float:
    """The gap (seconds) after which a stream of ``rate`` arrivals per second counts as
    stopped: one its rate makes less likely than :data:`CHANCE`, and at least
    ``min_gap_s``."""
    chance_gap = math.log(1.0 / CHANCE) / rate if rate > 0 else math.inf
    return max(min_gap_s, chance_gap)


@dataclass
class _Model:
    inputs: _Stream | None = None
    outputs: _Stream | None = None


class SilenceWatch:
    """Per model: when its inputs and outputs last arrived, and at what rate; says which
    models are silent at a given time (see the module docstring)."""

    def __init__(self, min_gap_s: float) -> None:
        self.min_gap_s = min_gap_s
        self._models: dict[str, _Model] = {}

    def see(self, model: str, kind: str, t: float, wall: float | None = None) -> None:
        """Note an arrival of ``kind`` (``input``/``output``; others are ignored) at event
        time ``t``, processed at wall-clock time ``wall`` (the worker; None offline)."""
        if kind not in SERVING:
            return
        m = self._models.setdefault(model, _Model())
        stream = m.inputs if kind == "input" else m.outputs
        if stream is None:
            stream = _Stream(first=t, last=t)
            if kind == "input":
                m.inputs = stream
            else:
                m.outputs = stream
        stream.see(t)
        if wall is not None:
            stream.wall = wall

    def models(self) -> list[str]:
        return sorted(self._models)

    def __contains__(self, model: object) -> bool:
        return model in self._models

    def forget(self, model: str) -> None:
        """Drop a model's history (its partition moved to another worker)."""
        self._models.pop(model, None)

    def state_of(self, model: str) -> dict[str, list[float]] | None:
        """A model's arrival history as JSON data (None: not seen), for
        :meth:`resume`. Not the wall-clock times: they are this process's."""
        m = self._models.get(model)
        if m is None:
            return None
        kinds = (("input", m.inputs), ("output", m.outputs))
        return {kind: s.to_json() for kind, s in kinds if s is not None}

    def resume(self, model: str, data: Mapping[str, Any], wall: float) -> None:
        """A model's history from :meth:`state_of`, as if its latest arrivals had been
        processed at wall-clock time ``wall`` (the restart): a backlog that the restarted
        worker is still reading is not taken for a silence, which the watch then calls
        ``min_gap_s`` of wall-clock time after the restart at the earliest. Raises
        ValueError for data that is not a history (nothing is changed then)."""
        unknown = set(data) - set(SERVING)
        if unknown:
            raise ValueError(f"unknown event kinds in a traffic history: {sorted(unknown)}")
        inputs, outputs = (data.get(kind) for kind in ("input", "output"))
        self._models[model] = _Model(
            inputs=None if inputs is None else _Stream.from_json(inputs, wall),
            outputs=None if outputs is None else _Stream.from_json(outputs, wall),
        )

    def check(self, model: str, now: float, wall_now: float | None = None) -> Signal | None:
        """A silence signal when ``model`` is silent at ``now``: feature ``all`` (no input
        or output for longer than its due gap), or ``outputs`` (outputs stopped while
        inputs still arrive). None while it is not, or not yet judged.

        ``wall_now`` (the worker): a stream also counts as silent only when nothing of it
        has been *processed* for ``min_gap_s`` of wall-clock time. The worker reads the
        inputs and outputs topics (and their partitions) at their own pace: while it
        catches up on a backlog one can be hours ahead of the other in event time, which
        is skew, not silence."""
        m = self._models.get(model)
        if m is None:
            return None
        streams = [s for s in (m.inputs, m.outputs) if s is not None and s.ready()]
        if not streams:
            return None
        last_any = max(s.last for s in streams)
        latest = max(streams, key=lambda s: s.last)
        if now - last_any >= latest.due_gap(self.min_gap_s) and self._idle(streams, wall_now):
            return _signal("all", latest, now - last_any, self.min_gap_s)
        out, inp = m.outputs, m.inputs
        if (
            out is not None
            and inp is not None
            and out.ready()
            and inp.last - out.last >= out.due_gap(self.min_gap_s)
            and self._idle([out], wall_now)
        ):
            return _signal("outputs", out, inp.last - out.last, self.min_gap_s)
        return None

    def _idle(self, streams: list[_Stream], wall_now: float | None) -> bool:
        """Offline always; in the worker, when none of ``streams`` had an arrival
        processed within ``min_gap_s`` of wall-clock time."""
        if wall_now is None:
            return True
        walls = [s.wall for s in streams if s.wall is not None]
        return not walls or wall_now - max(walls) >= self.min_gap_s


def _signal(feature: str, stream: _Stream, gap_s: float, min_gap_s: float) -> Signal:
    due = stream.due_gap(min_gap_s)
    per_min = stream.rate() * 60.0
    return Signal(
        detector=DETECTOR,
        kind=SignalKind.TRAFFIC_SILENCE,
        statistic=gap_s / 60.0,
        threshold=due / 60.0,
        baseline=per_min,
        observed=0.0,
        effect_size=1.0,
        direction=Direction.DOWN,
        first_index=0,
        last_index=max(0, stream.events - 1),
        n_observations=max(1, stream.events),
        p_value=math.exp(-stream.rate() * gap_s),
        feature=feature,
        details={"silent_minutes": gap_s / 60.0, "expected_per_minute": per_min},
    )
