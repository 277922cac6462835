"""Solved detector thresholds kept on disk between runs.

An exact ARL calibration is a linear solve (tens of milliseconds to a second for rare
rates), and detectors with learned baselines ask for one each time a baseline is
re-estimated: 43 % of a short replay's time went there. :mod:`detectors.arl` solves each
``(p0, p1, arl0, rate)`` once per process; this module carries that table from one run to
the next (the worker's and replay's ``<worker.data_dir>/calibrations.json``), so a
baseline seen before costs no solve at all. Detectors stay free of I/O: the file is read
and written here.

A missing, unreadable or other-version file is not an error: the thresholds are solved
again (a warning says why).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from detectors.arl import ThresholdKey, add_thresholds, known_thresholds
from streams.settings import Settings

log = logging.getLogger(__name__)

VERSION: Final = 2
"""Format of the file; bump when the lattice or the calibration rule changes."""


def calibrations_path(settings: Settings) -> Path:
    """Where the worker and replay keep solved thresholds."""
    return settings.worker.data_dir / "calibrations.json"


def load_calibrations(path: Path) -> int:
    """Preload the thresholds saved at ``path``; returns how many (0 when none usable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.warning("ignoring calibration cache %s: %s", path, exc)
        return 0
    if not isinstance(data, dict) or data.get("version") != VERSION:
        log.warning("ignoring calibration cache %s: not version %d", path, VERSION)
        return 0
    try:
        entries: dict[ThresholdKey, int] = {
            (float(p0), float(p1), float(arl0), None if rate is None else float(rate)): int(h)
            for p0, p1, arl0, rate, h in data["bernoulli"]
        }
        add_thresholds(entries)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring calibration cache %s: %s", path, exc)
        return 0
    return len(entries)


def save_calibrations(path: Path) -> int:
    """Write every threshold known to this process to ``path`` (atomically); returns how
    many."""
    rows = [[*key, h] for key, h in sorted(known_thresholds().items(), key=_order)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": VERSION, "bernoulli": rows}), encoding="utf-8")
    tmp.replace(path)
    return len(rows)


@contextlib.contextmanager
def kept_calibrations(settings: Settings) -> Iterator[None]:
    """Thresholds solved before are loaded for the block and what it solved is saved after
    it, however it ends (the offline commands: replay of a file or of Kafka, backtest)."""
    path = calibrations_path(settings)
    load_calibrations(path)
    try:
        yield
    finally:
        save_calibrations(path)


def _order(item: tuple[ThresholdKey, int]) -> tuple[float, float, float, float]:
    p0, p1, arl0, rate = item[0]
    return p0, p1, arl0, -1.0 if rate is None else rate
