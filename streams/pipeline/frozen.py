"""A detector set's frozen values, stored once per key instead of at every flush.

Most of a mature key's stored state is its fitted references: the sorted reference of
each score chart and drift test, a parent's quantiles (:class:`detectors.base.Frozen`).
They never change once fitted, yet each flush encoded and sent them again with the rest
of the set, every ``state_flush_seconds`` for every key in use: about half of a flush's
bytes (docs/validation.md, "Stop 67").

:class:`FrozenStore` writes a set's record with a reference ``{"$frozen": key}`` in place
of each frozen value of at least :data:`MIN_ITEMS` numbers, and the value once under its
own key, ``#<key id>#<n>`` (a model name cannot start with ``#``, so no detector key is
one), in the same store. A value is recognised as the one written before by identity
(a detector returns its frozen values as they are, never copies), so a flush costs one
walk over the record's dictionaries, not a comparison of contents.

The order of writes keeps every record readable: a value is written before the first
record that names it and deleted (a changelog tombstone) after the first record that no
longer does, and every write of one key goes to its model's changelog partition (the
detector store's ``write_scope``, :mod:`streams.pipeline.live_sets`), so a worker that
takes the partition over reads the values with the records. A record names its values in
``_frozen``: expiry deletes them with it, and a record that does not restore gives them
up. A value missing all the same (a lost changelog write) makes its record unreadable:
the key relearns, as for any record that does not restore
(:func:`streams.pipeline.state.restore`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from detectors.base import Frozen, frozen
from streams.pipeline.join import Store
from streams.pipeline.state import loaded

PREFIX: Final = "#"
"""Store keys of frozen values start with it; detector key ids start with a model name."""

REF: Final = "$frozen"
"""A record's reference to a stored frozen value: ``{REF: key}``."""

NAMES: Final = "_frozen"
"""A record's list of the frozen values it references (their store keys)."""

VALUE: Final = "v"
"""A stored frozen value's field: ``{VALUE: [...]}``."""

MIN_ITEMS: Final = 32
"""Frozen values with fewer numbers stay in the record (a reference costs about as much)."""


def is_frozen_key(key: str) -> bool:
    """Whether a store key holds a frozen value rather than a detector set."""
    return key.startswith(PREFIX)


def _items(value: Frozen) -> int:
    """The numbers in a frozen value (columns of one level count their items)."""
    if value and isinstance(value[0], tuple):
        return sum(len(col) for col in value)
    return len(value)


class FrozenStore:
    """Detector set records over ``store`` with their frozen values written once.

    Per key in memory: the frozen values its last record referenced, by identity, with
    their store keys, and the next value's number. :meth:`forget` drops that when the
    set leaves memory; :meth:`read` rebuilds it when the set comes back."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[str, dict[int, tuple[Frozen, str]]] = {}
        self._next: dict[str, int] = {}

    def write(self, kid: str, data: dict[str, Any]) -> None:
        """Store ``data`` as key ``kid``'s record: new frozen values first, the record,
        then the values it no longer references deleted."""
        known = self._known.get(kid, {})
        used: dict[int, tuple[Frozen, str]] = {}
        new: list[tuple[Frozen, str]] = []

        def ref(value: Any) -> Any:
            if type(value) is not Frozen or _items(value) < MIN_ITEMS:
                return value
            entry = used.get(id(value)) or known.get(id(value))
            if entry is None:
                n = self._next.get(kid, 0)
                self._next[kid] = n + 1
                entry = (value, f"{PREFIX}{kid}#{n}")
                new.append(entry)
            used[id(value)] = entry
            return {REF: entry[1]}

        record = _mapped(data, ref)
        for value, key in new:
            self.store[key] = {VALUE: value}
        names = sorted(key for _, key in used.values())
        self.store[kid] = {**record, NAMES: names} if names else record
        for _, key in known.values():
            if key not in names and key in self.store:
                del self.store[key]
        self._known[kid] = used

    def read(self, kid: str, data: dict[str, Any]) -> dict[str, Any]:
        """Key ``kid``'s record ``data`` (as :func:`~streams.pipeline.state.loaded`
        gives it) with its frozen values in place. Raises KeyError for a value missing
        from the store (the caller relearns)."""
        names = data.get(NAMES)
        if not names:
            self._known.pop(kid, None)
            return data
        values = {key: frozen(loaded(self.store[key])[VALUE]) for key in names}

        def value(node: Any) -> Any:
            if type(node) is dict and len(node) == 1 and REF in node:
                return values[node[REF]]
            return node

        out = _mapped({k: v for k, v in data.items() if k != NAMES}, value)
        self._known[kid] = {id(v): (v, key) for key, v in values.items()}
        self._next[kid] = 1 + max(int(key.rpartition("#")[2]) for key in names)
        return out

    def forget(self, kid: str) -> None:
        """Key ``kid``'s set left memory (its record is written): drop what is known of
        its values; :meth:`read` learns it again."""
        self._known.pop(kid, None)
        self._next.pop(kid, None)

    def retain(self, keep: Callable[[str], bool]) -> None:
        """:meth:`forget` every key but those ``keep`` accepts (a rebalance)."""
        for kid in [k for k in {*self._known, *self._next} if not keep(k)]:
            self.forget(kid)

    def delete(self, kid: str) -> None:
        """Delete key ``kid``'s record and the frozen values it references."""
        names = {key for _, key in self._known.get(kid, {}).values()}
        stored = self.store.get(kid)
        if stored is not None:
            names.update(_names(stored))
            del self.store[kid]
        self._delete(names)
        self.forget(kid)

    def discard(self, kid: str, stored: Any) -> None:
        """Key ``kid``'s stored record ``stored`` did not restore (the key relearns):
        delete the frozen values it names, which its next record will not."""
        self._delete(set(_names(stored)) - {key for _, key in self._known.get(kid, {}).values()})

    def _delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            if is_frozen_key(key) and key in self.store:
                del self.store[key]


def _names(stored: Any) -> list[str]:
    """The frozen values a stored record names (none when it does not decode: expiry and
    relearning delete what they can, they do not fail)."""
    try:
        data = loaded(stored)
    except ValueError:
        return []
    names = data.get(NAMES) if isinstance(data, dict) else None
    return [k for k in names if isinstance(k, str)] if isinstance(names, list) else []


def _mapped(node: dict[str, Any], leaf: Callable[[Any], Any]) -> dict[str, Any]:
    """``node`` with ``leaf`` applied to every value in every dict below it, and to the
    items of its lists of dicts (lists of numbers or of rows, windows and references, are
    leaves: nothing in them is looked at). The same object where ``leaf`` changed nothing
    below it (a record shares the detectors' unchanged values, as ``to_json`` does), else
    a copy: one walk over a record's dicts, no call for its plain numbers."""
    out: dict[str, Any] | None = None
    for k, v in node.items():
        if type(v) in _PLAIN:
            continue
        w = _walked(v, leaf)
        if w is not v:
            if out is None:
                out = dict(node)
            out[k] = w
    return node if out is None else out


def _walked(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """One value of :func:`_mapped`'s walk."""
    t = type(value)
    if t is list:
        if not value or type(value[0]) is not dict:
            return value
        items = [_walked(x, leaf) for x in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    out = leaf(value)
    return _mapped(value, leaf) if t is dict and out is value else out


_PLAIN: Final = (int, float, str, bool, type(None))
