"""The windowed two-sample drift test and its calibration to a false-alarm target.

:class:`WindowedDrift` compares a sliding window of the latest ``window`` observations
with a reference sample (the first ``reference_size`` observations of the stream), testing
every ``stride`` observations, one test per feature. Calibration, with no simulation:

* Holm's correction across features keeps the chance that a test time raises any alarm
  under no change at most ``alpha`` (a rejection happens exactly when Bonferroni rejects).
* By linearity of expectation, ``alpha = stride / arl0`` makes the expected number of
  alarming test times per observation at most ``1 / arl0``, whatever the dependence between
  overlapping windows; alarms can only be rarer than that, so ARL0 >= ``arl0``.

After an alarm the window is emptied and refilled, so one shift gives one signal per
``window`` observations, not one per test.

This module holds the scheme (windows, test times, Holm, the signal); the concrete drift
detectors in :mod:`detectors.drift` only say how an input becomes per-feature values and
which test compares them.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from detectors.base import DEFAULT_ARL0, Detector, Direction, JsonState, Signal, SignalKind
from detectors.mean_chart import reference_awaiting
from detectors.twosample import holm_reject

__all__ = ["WindowedDrift"]

X = TypeVar("X")


class WindowedDrift(Detector[X], Generic[X]):
    """Reference-vs-window two-sample tests every ``stride`` events, Holm across features.

    Common parameters: ``arl0`` (target expected events between false alarms),
    ``reference_size`` (the first events, no alarms meanwhile), ``window`` (events per
    test) and ``stride`` (events between tests, default ``window // 4``).

    Subclasses turn an input into a row of per-feature values (``_row``), fit what they
    need from the reference rows (``_fit``), and test a window (``_test``).
    """

    kind: ClassVar[SignalKind] = SignalKind.INPUT_DRIFT

    def __init__(
        self,
        arl0: float = DEFAULT_ARL0,
        reference_size: int = 1000,
        window: int = 200,
        stride: int | None = None,
    ) -> None:
        self.arl0 = arl0
        self.reference_size = reference_size
        self.window = window
        self.stride = stride
        self._check()
        self._reset()

    def _check(self) -> None:
        if self.window < 1 or not 1 <= self._stride <= self.window:
            raise ValueError("need window >= 1 and 1 <= stride <= window")
        if self.reference_size < 2 or self.arl0 <= self._stride:
            raise ValueError("need reference_size >= 2 and arl0 > stride")

    @property
    def _stride(self) -> int:
        """Events between tests; by default a quarter window (50 for the default 200)."""
        return self.stride if self.stride is not None else max(1, self.window // 4)

    def set_arl0(self, arl0: float) -> None:
        """Retarget: the next tests run at ``alpha = stride / arl0``; windows are kept."""
        if arl0 <= self._stride:
            raise ValueError("need arl0 > stride")
        self.arl0 = arl0

    @property
    def alpha(self) -> float:
        """Family-wise false-alarm probability per test time: ``stride / arl0`` (the
        window test's share of ``arl0`` when a subclass runs other tests beside it)."""
        return self._stride / (self.arl0 * self._window_share)

    @property
    def _window_share(self) -> float:
        """``1 / `` the share of the false-alarm budget the window test spends."""
        return 1.0

    def _reset(self) -> None:
        self._n = 0
        self._ref: list[list[Any]] = []
        self._fitted: JsonState = {}
        self._win: list[list[Any]] = []
        self._pos = 0
        self._since = 0
        self._last_p = 1.0

    def get_state(self) -> JsonState:
        # The lists copied, not their rows: a row is never changed once made (the
        # window replaces rows, the reference appends and drops them), and a flush
        # reads every mature key's state.
        return {
            "n": self._n,
            "ref": list(self._ref),
            "fitted": self._fitted,
            "win": list(self._win),
            "pos": self._pos,
            "since": self._since,
            "last_p": self._last_p,
        }

    def set_state(self, state: JsonState) -> None:
        self._n = state["n"]
        self._ref = [list(r) for r in state["ref"]]
        self._fitted = state["fitted"]
        self._win = [list(r) for r in state["win"]]
        self._pos = state["pos"]
        self._since = state["since"]
        self._last_p = state["last_p"]
        self._restore()

    def _restore(self) -> None:
        """Rebuild caches derived from ``_fitted`` after ``set_state``."""

    @property
    def learning(self) -> bool:
        """Until the reference is complete (a young numeric key may skip values it
        alarms on, see :meth:`detectors.drift.NumericDrift.adopt_prior`)."""
        return not self._fitted

    def awaiting(self) -> str:
        """The observations its reference still lacks."""
        if self.alarm_ready:
            return ""
        return reference_awaiting(len(self._ref), self.reference_size, None, "observations")

    @property
    def statistic(self) -> float:
        """``-log10`` of the last Bonferroni-adjusted smallest p-value."""
        return -math.log10(max(self._last_p, 1e-300))

    @property
    def threshold(self) -> float:
        return -math.log10(self.alpha)

    @abc.abstractmethod
    def _row(self, x: X) -> list[Any]:
        """Per-feature values of one observation (after ``_fit`` has run, if needed)."""

    def _ref_row(self, x: X) -> list[Any]:
        """The row kept for the reference; by default the same as ``_row``."""
        return self._row(x)

    @abc.abstractmethod
    def _fit(self, ref: list[list[Any]]) -> JsonState:
        """JSON-compatible summary of the reference that ``_test`` needs."""

    @abc.abstractmethod
    def _test(self, rows: list[list[Any]]) -> list[tuple[str, float, float, float, float]]:
        """Per feature: ``(name, p_value, effect_size, baseline, observed)``."""

    def update(self, x: X) -> Signal | None:
        n = self._n
        self._n = n + 1
        if not self._fitted:
            self._reference(self._ref_row(x))
            return None
        return self._push(n, self._row(x))

    def push_row(self, row: list[Any]) -> Signal | None:
        """:meth:`update` of an observation given as its row, once the reference is
        fitted: for a caller that holds the row's values already (the score charts'
        distribution test), without a mapping built and read back per value."""
        if not self._fitted:
            raise ValueError("push_row needs the reference fitted (see learning)")
        n = self._n
        self._n = n + 1
        return self._push(n, row)

    def push_rows(self, rows: list[list[Any]]) -> list[Signal]:
        """:meth:`push_row` of each row in turn, the rows between two tests added as
        slices (the window holds what the steps leave; each test runs where a step would).
        A subclass whose ``_push`` does more per row overrides this too."""
        if not self._fitted:
            raise ValueError("push_rows needs the reference fitted (see learning)")
        return self._window_rows(rows)

    def _window_rows(self, rows: list[list[Any]]) -> list[Signal]:
        """The window's part of :meth:`push_rows`."""
        signals: list[Signal] = []
        i = 0
        while i < len(rows):
            due = max(self.window - len(self._win), self._stride - self._since, 1)
            take = min(due, len(rows) - i)
            self._add(rows[i : i + take])
            self._n += take
            i += take
            if take == due:
                self._since = 0
                signal = self._run_test(self._n - 1)
                if signal is not None:
                    signals.append(signal)
        return signals

    def _add(self, rows: list[list[Any]]) -> None:
        """Put ``rows`` in the window as steps would, without testing."""
        win = self._win
        room = self.window - len(win)
        win.extend(rows[:room])
        rest = rows[max(room, 0) :]
        while rest:
            take = min(len(rest), self.window - self._pos)
            win[self._pos : self._pos + take] = rest[:take]
            self._pos = (self._pos + take) % self.window
            rest = rest[take:]
        self._since += len(rows)

    def _reference(self, row: list[Any]) -> None:
        """Add a row to the reference; fit it once complete."""
        self._ref.append(row)
        if len(self._ref) == self.reference_size:
            self._fitted = self._fit(self._ref)
            self._ref = []
            self._restore()

    def update_many(self, xs: Iterable[X]) -> list[Signal]:
        """Like sequential updates, with the per-feature rows computed in one batch."""
        batch = list(xs)
        i = 0
        signals: list[Signal] = []
        while i < len(batch) and not self._fitted:
            signal = self.update(batch[i])  # alarms only from a young key's prior
            if signal is not None:
                signals.append(signal)
            i += 1
        if i < len(batch):
            signals += self.push_rows(self._rows(batch[i:]))
        return signals

    def _rows(self, xs: list[X]) -> list[list[Any]]:
        """Rows of many observations; override to vectorise (must equal ``_row`` exactly)."""
        return [self._row(x) for x in xs]

    def _push(self, n: int, row: list[Any]) -> Signal | None:
        if len(self._win) < self.window:
            self._win.append(row)
        else:
            self._win[self._pos] = row
            self._pos = (self._pos + 1) % self.window
        self._since += 1
        if len(self._win) < self.window or self._since < self._stride:
            return None
        self._since = 0
        return self._run_test(n)

    def _run_test(self, n: int) -> Signal | None:
        results = self._test(self._win)
        p = np.array([r[1] for r in results])
        m = p.size
        self._last_p = min(1.0, float(p.min()) * m)
        reject = holm_reject(p, self.alpha)
        if not reject.any():
            return None
        best = int(np.argmin(p))
        name, p_best, effect, baseline, observed = results[best]
        details = {f"p:{r[0]}": float(r[1]) for r, rej in zip(results, reject, strict=True) if rej}
        details["alpha"] = self.alpha
        self._win, self._pos, self._since = [], 0, 0
        return Signal(
            detector=type(self).__name__,
            kind=self.kind,
            statistic=self.statistic,
            threshold=self.threshold,
            baseline=baseline,
            observed=observed,
            effect_size=effect,
            direction=Direction.BOTH,
            first_index=n - self.window + 1,
            last_index=n,
            n_observations=self.window,
            p_value=min(1.0, p_best * m),
            feature=name,
            details=details,
        )
