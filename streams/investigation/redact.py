"""Excerpts of prompts and outputs as investigation shows them: redacted by default.

Redaction itself is :func:`alerting.redact.redact` (emails, phone and card numbers,
secrets, IP addresses), the same filter incident excerpts and logs use. ``--show-text``
is the explicit opt-out. It is a best-effort pattern filter for excerpts shown to
analysts, not a data-loss-prevention system: the raw text stays in Kafka under its own
access control.

>>> shown("mail jane.doe@example.com, card 4111 1111 1111 1111", show_text=False)
'mail [EMAIL], card [CARD]'
>>> excerpt("x" * 100, limit=10)
'xxxxxxxxx…'
"""

from __future__ import annotations

from typing import Final

from alerting.redact import redact

__all__ = ["EXCERPT_CHARS", "excerpt", "redact", "shown"]

EXCERPT_CHARS: Final = 80


def excerpt(text: str, *, limit: int = EXCERPT_CHARS) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def shown(text: str | None, *, show_text: bool, limit: int = EXCERPT_CHARS) -> str | None:
    """What investigation prints for a prompt or output: redacted unless ``show_text``.

    Redaction runs on the whole text before the cut, so a secret is never half-shown.
    """
    if text is None:
        return None
    return excerpt(text if show_text else redact(text, max_chars=len(text) + 1), limit=limit)
