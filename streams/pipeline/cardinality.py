"""Bounded label cardinality: over a limit, label values fold into an ``other`` key.

Every distinct segment value (``tenant=t-123``) and version gets its own detector keys, so
a producer sending a fresh tenant id per request used to grow memory and the changelog
without bound (about 10 KB of RSS per tenant). :class:`CardinalityFold` admits at most
``max_label_values`` distinct values per (model, segment label) and ``max_versions``
versions per model; later values map to :data:`OTHER` (one shared key that still sees
their traffic), counted per (model, label) and warned about once per (model, label).

State is explicit and bounded: one set of admitted values per (model, label), at most the
limit each. It lives in memory only. After a restart (or a rebalance) the sets start empty
and are refilled in arrival order, so a value folded before may get its own key again
while slots are free; a key that no longer receives traffic because its value now folds
expires after ``detection.idle_key_hours`` (:mod:`streams.pipeline.detect`), which also
releases its slot here (:meth:`CardinalityFold.release`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

log = logging.getLogger(__name__)

OTHER: Final = "other"
"""The value that label values over the limit fold into."""

VERSION_LABEL: Final = "version"
"""The label name under which versions are folded and counted."""


class CardinalityFold:
    """Admits label values up to a limit per (model, label); the rest become :data:`OTHER`."""

    def __init__(self, max_label_values: int, max_versions: int) -> None:
        if max_label_values < 1 or max_versions < 1:
            raise ValueError("cardinality limits must be at least 1")
        self.max_label_values = max_label_values
        self.max_versions = max_versions
        self._admitted: dict[tuple[str, str], set[str]] = {}
        self.folded: Counter[tuple[str, str]] = Counter()
        """Observations whose value was folded into ``other``, by (model, label)."""
        self._warned: set[tuple[str, str]] = set()

    def value(self, model: str, label: str, value: str) -> str:
        """``value``, or :data:`OTHER` if (model, label) already has its limit of values."""
        key = (model, label)
        admitted = self._admitted.get(key)
        if admitted is None:
            admitted = self._admitted[key] = set()
        if value in admitted:
            return value
        limit = self.max_versions if label == VERSION_LABEL else self.max_label_values
        if len(admitted) < limit and value != OTHER:
            admitted.add(value)
            return value
        self.folded[key] += 1
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "model %r label %r has reached its limit of %d distinct values: further "
                "values fold into %r (counted in sentinel_label_values_folded_total; logged "
                "once)",
                model,
                label,
                limit,
                OTHER,
                extra={"model": model, "label": label, "limit": limit},
            )
        return OTHER

    def version(self, model: str, version: str) -> str:
        """The version's own name, or :data:`OTHER` over ``max_versions``."""
        return self.value(model, VERSION_LABEL, version)

    def release(self, model: str, label: str, value: str) -> None:
        """Free ``value``'s slot (its key expired): a new value may take it."""
        admitted = self._admitted.get((model, label))
        if admitted is not None:
            admitted.discard(value)
            if not admitted:
                del self._admitted[(model, label)]

    def admitted(self) -> dict[tuple[str, str], int]:
        """Distinct values admitted now, by (model, label) (for metrics)."""
        return {key: len(values) for key, values in self._admitted.items()}

    def clear(self) -> None:
        """Forget admitted values (partitions were reassigned); counters are kept."""
        self._admitted.clear()
