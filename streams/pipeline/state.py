"""Versioned state: every value the pipeline keeps in a store carries the version of its
shape, checked when it is read back.

Detector sets, join entries and incident engines live in faust changelog tables (and in
replay's dicts). When a release changes the shape of one of them, a worker restoring the
old values must not crash its agent deep in a stream: a value of another version is
dropped and relearned (detectors start a new baseline, a join entry is forgotten, an
engine starts without open incidents), logged once per store and counted
(``sentinel_state_resets_total`` on ``/metrics``). Bump a version here whenever the
corresponding ``to_json``/``get_state`` changes shape in a way its reader cannot take:
a key added that the reader does without when absent (``BernoulliCusum``'s optional
keys, ``AdaptiveBernoulliCusum``'s ``scan``) keeps the version, so an upgrade does not
relearn every baseline.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeAlias, TypeVar

log = logging.getLogger(__name__)

StateKind: TypeAlias = Literal["detectors", "join", "engine", "traffic"]

STATE_VERSIONS: Final[Mapping[StateKind, int]] = {
    "detectors": 5,
    "join": 2,
    "engine": 3,
    "traffic": 1,
}
"""The current shape of each kind of state (1 was the unversioned shape before them;
traffic 1: a model's traffic beside its engine, ``streams.pipeline.detect.traffic_key``;
engine 3: incidents grouped by cause; detectors 3: every harm category, evaluations;
detectors 4: the key's first event time and the rates detectors were calibrated at, for
run lengths that follow traffic; detectors 5: frozen values stored apart from the record,
:mod:`streams.pipeline.frozen`)."""

ALSO_READ: Final[Mapping[StateKind, frozenset[int]]] = {"detectors": frozenset({4})}
"""Older versions the current reader still takes as they are (detectors 4 is a record
with every value in place), so that an upgrade keeps its baselines."""

VERSION_KEY: Final = "_v"

RESETS: Counter[StateKind] = Counter()
"""Values dropped on restore, by kind, since the process started (exported as a metric)."""

_T = TypeVar("_T")


def stamp(kind: StateKind, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` marked with the current version of ``kind`` (for writing to a store)."""
    return {**data, VERSION_KEY: STATE_VERSIONS[kind]}


def readable(kind: StateKind, data: Any) -> bool:
    """Whether ``data`` (a stored value as data) has a version of ``kind`` this release
    reads: the current one or one of :data:`ALSO_READ`."""
    version = data.get(VERSION_KEY) if isinstance(data, dict) else None
    return version == STATE_VERSIONS[kind] or version in ALSO_READ.get(kind, ())


def restore(kind: StateKind, data: Any, build: Callable[[dict[str, Any]], _T]) -> _T | None:
    """``build(data)`` if ``data`` is a value of a version of ``kind`` this release reads
    (:func:`readable`; its data, or its bytes as :func:`loaded` takes them); else
    ``None`` (the caller relearns), logged once per kind and counted."""
    try:
        data = loaded(data)
    except ValueError as exc:
        reason = f"does not decode ({exc})"
    else:
        if readable(kind, data):
            try:
                return build(data)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                reason = f"does not restore ({type(exc).__name__}: {exc})"
        else:
            version = data.get(VERSION_KEY) if isinstance(data, dict) else None
            reason = f"has version {version!r}, this release writes {STATE_VERSIONS[kind]}"
    if not RESETS[kind]:
        log.warning(
            "stored %s state %s: dropping it and relearning (counted in "
            "sentinel_state_resets_total; logged once)",
            kind,
            reason,
        )
    RESETS[kind] += 1
    return None


def loaded(value: Any) -> Any:
    """A stored value as data: bytes (:func:`encode`'s, as the worker's state tables read
    them back from a changelog or RocksDB: see ``streams.runtime.agents.StateCodec``)
    decoded, anything else (a value this process wrote) as it is. Raises ValueError for
    bytes that do not decode."""
    return decode(value) if isinstance(value, bytes) else value


COMPRESSED: Final = b"\x00z1"
"""The tag of a compressed value (:func:`encode`): a NUL byte cannot start JSON text, so a
value written before compression (plain JSON) is still read."""


LEVEL: Final = 1
"""zlib's fastest level: a fifth of level 6's compression time for about an eighth more
bytes on mature detector sets (docs/validation.md, "Stop 66"). Any level decodes alike."""


def encode(data: Any) -> bytes:
    """A stored value's bytes: compact JSON, zlib-compressed behind :data:`COMPRESSED`.

    A detector set's JSON repeats its field names and holds its reference samples as
    decimal text, so it compresses well; the size is what a changelog record, a RocksDB
    value and a restore cost per key (``bench/state.py``, docs/validation.md). Level
    :data:`LEVEL`: the worker encodes every touched key at each flush, in its event loop.
    """
    text = json.dumps(data, separators=(",", ":"), allow_nan=True).encode()
    return COMPRESSED + zlib.compress(text, LEVEL)


def decode(raw: bytes) -> Any:
    """A stored value from :func:`encode`'s bytes, or from plain JSON (older records)."""
    if raw.startswith(COMPRESSED):
        try:
            raw = zlib.decompress(raw[len(COMPRESSED) :])
        except zlib.error as exc:
            raise ValueError(f"a compressed state value does not decompress: {exc}") from exc
    return json.loads(raw)
