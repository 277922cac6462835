"""Redaction of prompt and output excerpts: emails, phone and card numbers, API keys.

Redaction is the default everywhere investigation shows text; ``--show-text`` is the
explicit opt-out. It is a best-effort pattern filter for excerpts shown to analysts, not
a data-loss-prevention system: the raw text stays in Kafka under its own access control.

>>> redact("mail jane.doe@example.com or call +1 (415) 555-0100")
'mail [EMAIL] or call [PHONE]'
>>> redact("card 4111 1111 1111 1111, key sk-live-4f9a8b7c6d5e4f3a2b1c")
'card [CARD], key [API_KEY]'
>>> excerpt("x" * 100, limit=10)
'xxxxxxxxx…'
"""

from __future__ import annotations

import re
from typing import Final

EXCERPT_CHARS: Final = 80

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_KEY_PREFIXED = re.compile(
    r"\b(?:sk|pk|rk|ak|api|key|token|secret|ghp|gho|ghs|github_pat|glpat|xox[abprs]|AKIA|AIza)"
    r"[-_A-Za-z0-9]{12,}"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{12,}")
_LONG_TOKEN = re.compile(r"\b[A-Za-z0-9_+/=-]{32,}\b")
_DIGIT_RUN = re.compile(r"(?<![\w+])\+?\d[\d ().-]{6,}\d(?!\w)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _long_token(m: re.Match[str]) -> str:
    text = m.group(0)
    mixed = any(c.isdigit() for c in text) and any(c.isalpha() for c in text)
    return "[API_KEY]" if mixed else text


def _digits(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = re.sub(r"\D", "", text)
    if 13 <= len(digits) <= 19 and _luhn(digits):
        return "[CARD]"
    if 7 <= len(digits) <= 15:
        return "[PHONE]"
    return "[NUMBER]" if len(digits) > 15 else text


def redact(text: str) -> str:
    """Replace emails, API-key-like tokens, card numbers and phone numbers."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} [API_KEY]", text)
    text = _KEY_PREFIXED.sub("[API_KEY]", text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _LONG_TOKEN.sub(_long_token, text)
    return _DIGIT_RUN.sub(_digits, text)


def excerpt(text: str, *, limit: int = EXCERPT_CHARS) -> str:
    """One line of at most ``limit`` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def shown(text: str | None, *, show_text: bool, limit: int = EXCERPT_CHARS) -> str | None:
    """What investigation prints for a prompt or output: redacted unless ``show_text``."""
    if text is None:
        return None
    return excerpt(text if show_text else redact(text), limit=limit)
