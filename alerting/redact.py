"""Redaction of personal data and secrets from text that leaves the service.

:func:`redact` replaces e-mail addresses, phone numbers, US social security numbers,
IBANs (mod-97 checked), payment card numbers (Luhn checked), API keys and tokens, and IPv4
addresses with typed placeholders (``[EMAIL]``, ``[PHONE]``, ``[SSN]``, ``[IBAN]``,
``[CARD]``, ``[SECRET]``, ``[IP]``) and bounds the length. It is pure and
deterministic, never raises on any string, and is idempotent:
``redact(redact(x)) == redact(x)``. :class:`RedactingFilter` applies it to log records.

What is recognised (and what is not) is a deliberate trade-off for excerpts and log lines:

* phone numbers need a leading ``+`` or NANP separators (``555-123-4567``, ``(555) 123
  4567``): a bare run of ten digits is more often an offset or an epoch time than a phone;
* SSNs are ``AAA-GG-SSSS`` (dashes or single spaces) with the numbers the SSA never
  issues left out (area 000, 666 and 900-999, group 00, serial 0000);
* IBANs are a country code, two check digits and 11-30 letters or digits, optionally in
  groups of four, whose ISO 13616 mod-97 check holds;
* card numbers are 13-19 digits, optionally grouped by single spaces or dashes, that pass
  the Luhn check; a longer digit run is searched for a Luhn-valid run of whole groups;
* secrets: well-known key prefixes (``sk-``, ``AKIA``/``ASIA``, ``ghp_`` and the other
  GitHub prefixes, ``xox?-``, ``AIza``, JWTs), ``Bearer`` tokens, ``key=value`` pairs whose
  key names a secret, hex runs longer than 32 characters and base64 runs of 40+ characters
  that mix digits, upper and lower case. Ids are not secrets and survive: a dashed UUID,
  and hex runs of up to 32 characters (Sentinel's event, incident and command ids, an
  undashed UUID, an OpenTelemetry trace id).

:class:`RedactingFilter` also replaces every bytes literal of a log message
(``b'...'``, ``bytearray(b'...')``) with ``[BYTES n]``: the Kafka client libraries dump
protocol requests at DEBUG, and those hold what text patterns cannot see, e.g. the
SASL/PLAIN login (``SaslAuthenticateRequest(auth_bytes=b'user\\x00user\\x00password')`` in
both aiokafka and kafka-python, and kafka-python's raw ``Send: bytearray(b'...')``) and
the events' own payloads.
"""

from __future__ import annotations

import ast
import logging
import re
from typing import Final

EMAIL: Final = "[EMAIL]"
PHONE: Final = "[PHONE]"
CARD: Final = "[CARD]"
SECRET: Final = "[SECRET]"
IP: Final = "[IP]"
SSN: Final = "[SSN]"
IBAN: Final = "[IBAN]"
HEX_ID_MAX: Final = 32
"""Hex runs up to this length are ids (UUID, trace id, Sentinel's ids), not secrets."""
ELLIPSIS: Final = "…"

_KV_KEYS: Final = (
    r"pass(?:word|wd)?|secret|client[_-]?secret|token|access[_-]?token|refresh[_-]?token"
    r"|api[_-]?key|apikey|access[_-]?key|private[_-]?key|auth(?:orization)?|sasl[_-]?password"
)
_OCTET: Final = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

_SSN: Final = (
    r"(?P<ssn>(?<![\w+-])(?!000|666|9\d\d)\d{3}(?P<ssep>[- ])(?!00)\d{2}(?P=ssep)"
    r"(?!0000)\d{4}(?![\w-]))"
)
_PHONE: Final = (
    # "+1.4652345": a signed decimal, not a phone ("+1.415.555.2671" still is one)
    r"(?P<phone>(?<![\w+])(?!\+\d{1,3}\.\d{5,}(?![\d]*[ .-]\d))"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)"
    r"|(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\w))"
)

_PATTERN: Final = re.compile(
    "|".join(
        [
            # key=value / key: value, where the key names a secret; only the value goes.
            rf"(?P<kv>\b(?:{_KV_KEYS})\b[\"']?\s*[:=]\s*[\"']?)"
            r"(?![Bb]earer\s|[Bb]asic\s)(?P<kvval>[^\s\"',;&]+)",
            r"(?P<bearer>\b(?:[Bb]earer|[Bb]asic)\s+)(?P<bearerval>[A-Za-z0-9._~+/=-]{8,})",
            r"(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})",
            r"(?P<key>"
            r"\bsk-[A-Za-z0-9_-]{16,}"
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
            r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
            r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
            r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
            r"|\bAIza[0-9A-Za-z_-]{35}"
            r"|\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
            r")",
            rf"(?P<ip>(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d))",
            _SSN,
            r"(?P<iban>\b[A-Z]{2}\d{2}"  # compact, or in groups of four
            r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b)",
            # not an email's local part, nor an IPv4 address's first octet, nor the
            # fraction of a decimal number ("0.4111111111111111")
            r"(?P<card>(?<![\w+])(?<!\d\.)\d(?:[ -]?\d){12,}(?![\w@]|\.\d{1,3}\.\d))",
            _PHONE,
            rf"(?P<hex>\b[0-9A-Fa-f]{{{HEX_ID_MAX + 1},}}\b)",
            r"(?P<b64>(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2})",
        ]
    )
)
_IN_DIGITS: Final = re.compile(f"{_SSN}|{_PHONE}")
"""What a digit run that is no card may still hold (the card pattern took it whole)."""
_PLACEHOLDERS: Final = frozenset({EMAIL, PHONE, CARD, SECRET, IP, SSN, IBAN})
_BYTES_LITERAL: Final = re.compile(
    r"bytearray\((?P<a>b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")\)"
    r"|(?<![\w'\"])(?P<b>b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")"
)
_MAX_PASSES: Final = 8


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` on one line: every non-printable character (line breaks, ``\\r``, NUL,
    ESC, tabs, Unicode line and paragraph separators) as its Python escape (``\\n``,
    ``\\x00``, ``\\u2028``). Producer strings in text logs go through this, so a newline
    in an ``event_type`` cannot forge a log entry of its own. ``keep_newlines`` keeps ``\\n``
    (for tracebacks, whose continuation lines the formatter indents).

    >>> escape_control("bad\\n2026-01-01 CRITICAL forged\\x00")
    'bad\\\\n2026-01-01 CRITICAL forged\\\\x00'
    """
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable() or (keep_newlines and ch == "\n")
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def luhn_ok(digits: str) -> bool:
    """True if the digit string passes the Luhn checksum (payment card numbers do)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(text: str) -> str:
    """A digit run: the whole run, or a run of whole groups in it, that is a card."""
    digits = "".join(c for c in text if c.isdigit())
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return CARD
    groups = re.split(r"([ -])", text)  # [group, sep, group, sep, ...]
    words = groups[0::2]
    for i in range(len(words)):
        found, run = 0, ""
        for j in range(i + 1, len(words) + 1):
            run += words[j - 1]
            if len(run) > 19:
                break
            if len(run) >= 13 and luhn_ok(run):
                found = j  # the longest Luhn-valid run of whole groups from group i
        if found:
            head = "".join(groups[: 2 * i])
            tail = "".join(groups[2 * found - 1 :]) if found < len(words) else ""
            return (_card(head) if head else "") + CARD + (_card(tail) if tail else "")
    # A long hex secret can be all digits; the rest may hold a phone or social security
    # number.
    kept = "".join(
        SECRET if i % 2 == 0 and len(g) > HEX_ID_MAX else g for i, g in enumerate(groups)
    )
    return _IN_DIGITS.sub(_replace, kept)


def iban_ok(text: str) -> bool:
    """True if ``text`` (spaces allowed) passes the ISO 13616 IBAN check (mod 97 == 1)."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _b64_like(text: str) -> bool:
    body = text.rstrip("=")
    return (
        any(c.isdigit() for c in body)
        and any(c.isupper() for c in body)
        and any(c.islower() for c in body)
    )


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "kvval":
        value = m.group("kvval")
        return m.group("kv") + (value if value in _PLACEHOLDERS else SECRET)
    if kind == "bearerval":
        return m.group("bearer") + SECRET
    if kind == "email":
        return EMAIL
    if kind == "key" or kind == "hex":
        return SECRET
    if kind == "ip":
        return IP
    if kind == "ssn":
        return SSN
    if kind == "iban":
        text = m.group(0)
        if iban_ok(text):
            return IBAN
        head, sep, tail = text.rpartition(" ")  # the last group may be the next word
        return IBAN + sep + tail if sep and iban_ok(head) else text
    if kind == "card":
        return _card(m.group(0))
    if kind == "phone":
        return PHONE
    if kind == "b64":
        return SECRET if _b64_like(m.group(0)) else m.group(0)
    return m.group(0)  # pragma: no cover - every alternative is named


def _bytes_placeholder(m: re.Match[str]) -> str:
    literal = m.group("a") or m.group("b")
    try:
        size = len(ast.literal_eval(literal))
    except (ValueError, SyntaxError):  # not a literal after all (odd escapes): size unknown
        return "[BYTES]"
    return f"[BYTES {size}]"


def hide_bytes(text: str) -> str:
    """``text`` with every bytes literal (``b'..'``, ``bytearray(b'..')``) replaced by
    ``[BYTES n]`` (n: its length). For log messages, not excerpts: protocol dumps.

    >>> hide_bytes("SaslAuthenticateRequest(auth_bytes=b'user:pw')")
    'SaslAuthenticateRequest(auth_bytes=[BYTES 7])'
    """
    return _BYTES_LITERAL.sub(_bytes_placeholder, text)


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + ELLIPSIS


def redact(text: str, *, max_chars: int = 200) -> str:
    """``text`` with personal data and secrets replaced, at most ``max_chars`` long.

    Redaction runs on the whole text before it is cut, so a secret is never half-kept;
    a cut text ends with ``…``. Raises ``ValueError`` only if ``max_chars < 1``.

    >>> redact("mail bob@example.com from 10.1.2.3, card 4111 1111 1111 1111")
    'mail [EMAIL] from [IP], card [CARD]'
    >>> redact("Authorization: Bearer abcdef123456789", max_chars=30)
    'Authorization: Bearer [SECRET]'
    """
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if not isinstance(text, str):  # a logging arg or a caller's mistake: still safe
        text = str(text)
    out = text
    # Cutting can make a new match at the end (a digit run cut to a Luhn-valid length);
    # iterate to the fixpoint so that the result is stable under a second redact().
    for _ in range(_MAX_PASSES):
        nxt = _truncate(_PATTERN.sub(_replace, out), max_chars)
        if nxt == out:
            break
        out = nxt
    return out


# logging.LogRecord attributes that are not "extra" fields.
STANDARD_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class RedactingFilter(logging.Filter):
    """A log filter that redacts the message (with its args; bytes literals hidden, see
    :func:`hide_bytes`), extra string fields and the formatted traceback of every record.
    It never drops a record and never raises."""

    def __init__(self, name: str = "", *, max_chars: int = 4000) -> None:
        super().__init__(name)
        self.max_chars = max_chars

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # wrong args for the format: keep what we can, safely
            message = f"{record.msg!s} (unformattable log arguments)"
        record.msg = redact(hide_bytes(message), max_chars=self.max_chars)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in STANDARD_RECORD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value, max_chars=self.max_chars))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, max_chars=self.max_chars * 4)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, max_chars=self.max_chars * 4)
        return True
