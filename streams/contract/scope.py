"""What an operator types to name a scope (a silence's, a re-learn's, a filter's), checked
as events and incidents name things, so that it can match something: one definition for
the CLI (argparse types in :mod:`streams.cli.common`) and the console's forms.

Each check returns the value (stripped where said) or raises :class:`ScopeError` with a
message that names the field and the value.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from detectors.base import SignalKind
from streams.contract.events import LabelKey, LabelValue, Name

INCIDENT_KINDS = frozenset(k.value for k in SignalKind)
"""The kinds an incident type starts with (``kind`` or ``kind:feature``)."""


class ScopeError(ValueError):
    """A scope value that cannot match anything; the message says what and why."""


def contract_check(kind: Any, what: str) -> Callable[[str], str]:
    """A check of a value as the event contract checks it (``kind``: one of its string
    types, e.g. ``Name``): a model named ``"a b"`` can match nothing."""
    adapter: TypeAdapter[str] = TypeAdapter(kind)

    def check(text: str) -> str:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            error = exc.errors()[0]
            why = "" if error["type"] == "string_pattern_mismatch" else f" ({error['msg']})"
            raise ScopeError(f"not a {what}: {text!r}{why}") from None

    return check


check_name = contract_check(Name, "model name or version (no spaces or control characters)")
check_label_key = contract_check(
    LabelKey, "segment label (a-z, 0-9, _ . -, starting with a letter)"
)
check_label_value = contract_check(LabelValue, "segment value (1-256 characters)")


def check_segment_pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (each side stripped), checked as segment labels are."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ScopeError(f"a segment is label=value, got {text!r}")
    return check_label_key(key.strip()), check_label_value(value.strip())


def segment_of(
    pairs: Iterable[tuple[str, str]], known: Collection[str] | None = None
) -> dict[str, str]:
    """Segment labels from checked pairs; a label given twice is an error, not the last
    one silently winning. With ``known`` (``detection.segment_labels``), a label the
    detection does not cut by is an error too: a scope naming it (a typo such as
    ``tennant``) can match no incident, and a silence of it would never mute a page."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise ScopeError(f"segment label {key!r} is given twice")
        if known is not None and key not in known:
            labels = ", ".join(known) if known else "none"
            raise ScopeError(
                f"segment label {key!r} is not one the detection cuts by, so it can match "
                f"no incident (detection.segment_labels: {labels})"
            )
        out[key] = value
    return out


def check_incident_type(text: str) -> str:
    """An incident type (stripped): ``kind`` (every feature of it) or ``kind:feature``,
    whose kind is one incidents have (:class:`detectors.base.SignalKind`)."""
    value = text.strip()
    kind, sep, feature = value.partition(":")
    if kind not in INCIDENT_KINDS or (sep and not feature):
        raise ScopeError(
            f"not an incident type: {text!r} (a kind, or kind:feature; kinds: "
            f"{', '.join(sorted(INCIDENT_KINDS))})"
        )
    return value
