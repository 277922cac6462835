"""Folding a compacted control topic: the latest valid record per key.

The runtime control topics (silences, baseline re-learns) are compacted and keyed by a
record id; the latest value per key is the record's current state and a ``None`` value (a
tombstone) deletes it. :func:`fold_latest` is that fold, once for every such topic. Pure:
no Kafka, the state passed in is not mutated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)


def fold_latest(
    records: Iterable[tuple[bytes | None, bytes | None]],
    model: type[R],
    id_of: Callable[[R], str],
    state: dict[str, R] | None = None,
) -> dict[str, R]:
    """Fold ``(key, value)`` pairs, in log order, into the current ``model`` record per id
    (``id_of``). A ``None`` value deletes its key; an invalid value is logged and skipped
    (the stream never stops for one bad record)."""
    out = dict(state or {})
    what = model.__name__
    for key, value in records:
        if value is None:
            if key is not None:
                out.pop(key.decode(errors="replace"), None)
            continue
        try:
            rec = model.model_validate_json(value)
        except ValidationError as exc:
            log.warning("ignoring invalid %s (key %r): %s", what, key, exc)
            continue
        out[id_of(rec)] = rec
    return out
