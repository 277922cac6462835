"""Redaction: typed placeholders, Luhn, never raises, idempotent, planted PII never survives."""

from __future__ import annotations

import io
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.redact import (
    CARD,
    EMAIL,
    IBAN,
    IP,
    PHONE,
    SECRET,
    SSN,
    RedactingFilter,
    hide_bytes,
    iban_ok,
    luhn_ok,
    redact,
)

CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to bob.smith+x@example.co.uk now", f"write to {EMAIL} now"),
        ("call +1 415 555 2671 or (415) 555-2671", f"call {PHONE} or {PHONE}"),
        ("call +1.415.555.2671 or +44 20 7946 0958", f"call {PHONE} or {PHONE}"),
        ("card 4111111111111111.", f"card {CARD}."),
        ("from 192.168.10.254:9092", f"from {IP}:9092"),
        ("key sk-proj-AbCdEf0123456789xyz", f"key {SECRET}"),
        ("aws AKIAIOSFODNN7EXAMPLE", f"aws {SECRET}"),
        ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", f"gh {SECRET}"),
        (
            "Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
            f"Authorization: Bearer {SECRET}",
        ),
        ('{"password": "hunter2", "user": "x"}', f'{{"password": "{SECRET}", "user": "x"}}'),
        (
            "digest 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            f"digest {SECRET}",
        ),
        ("order 12 4111 1111 1111 1111 ok", f"order 12 {CARD} ok"),
        ("SSN 123-45-6789.", f"SSN {SSN}."),
        ("ssn 123 45 6789", f"ssn {SSN}"),
        ("pay to DE89 3704 0044 0532 0130 00 today", f"pay to {IBAN} today"),
        ("iban GB82WEST12345698765432", f"iban {IBAN}"),
    ],
)
def test_known_shapes_are_replaced_by_their_placeholder(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("card", CARDS)
def test_cards_pass_luhn_and_are_redacted(card: str) -> None:
    assert luhn_ok("".join(c for c in card if c.isdigit()))
    assert redact(f"paid with {card}.") == f"paid with {CARD}."


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "offset 1234567890 at 1736150400",  # bare digit runs: offsets, epoch seconds
        "req 3f2a1b9c-1234-4c5d-9e8f-0123456789ab",  # dashed UUID
        "model support-chat v12 on 2025-01-06T10:00:00Z",
        "version 1.2.3.4.5",
        # ids are not secrets (issue 17): event/command ids, trace ids, undashed UUIDs
        "event 0123456789abcdef0123456789abcdef seq 2",
        "dedup sentinel-9f86d081884c7d659a2feaa0c55ad015",
        "trace 4BF92F3577B34DA6A3CE929D0E0E4736",
        *(
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
        ),  # never issued
        "DE89 3704 0044 0532 0130 01",  # IBAN check fails
        "date 2025-01-06 and 123-45-67890",
        # decimals in the worker's own log lines (a Luhn-valid fraction; a signed drift)
        "Timer commit is overlapping (interval=2.8 runtime=4.4111111111111111)",
        "producer flush took 0.378282246310005",
        "drift of +1.4652345678901234 sd",
        "shift -0.4111111111111111 and +12.0000000000",
    ],
)
def test_ordinary_operational_text_survives(text: str) -> None:
    assert redact(text) == text


def test_length_is_bounded_and_cut_text_is_marked() -> None:
    out = redact("x" * 500, max_chars=50)
    assert len(out) == 50
    assert out.endswith("…")
    with pytest.raises(ValueError, match="max_chars"):
        redact("x", max_chars=0)


def test_a_secret_is_redacted_before_the_cut_not_half_kept() -> None:
    out = redact("a" * 30 + " bob@example.com", max_chars=40)
    assert "bob" not in out


@settings(max_examples=400, deadline=None)
@given(st.text(), st.integers(min_value=1, max_value=300))
def test_never_raises_bounded_deterministic_idempotent(text: str, max_chars: int) -> None:
    out = redact(text, max_chars=max_chars)
    assert len(out) <= max_chars
    assert redact(text, max_chars=max_chars) == out
    assert redact(out, max_chars=max_chars) == out


_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_SAFE = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@st.composite
def _pii(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(["email", "card", "phone", "ip", "sk", "akia", "ghp", "hex", "ssn", "iban"])
    )
    word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
    if kind == "email":
        return f"{draw(word)}@{draw(word)}.{draw(st.sampled_from(['com', 'org', 'io', 'de']))}"
    if kind == "card":
        body = draw(st.text(alphabet="0123456789", min_size=14, max_size=15))
        body = draw(st.sampled_from(["4", "5", "3"])) + body
        check = next(d for d in "0123456789" if luhn_ok(body + d))
        digits = body + check
        sep = draw(st.sampled_from(["", " ", "-"]))
        return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))
    if kind == "phone":
        d = draw(st.text(alphabet="0123456789", min_size=10, max_size=10))
        return draw(
            st.sampled_from(
                [
                    f"+1 {d[:3]} {d[3:6]} {d[6:]}",
                    f"({d[:3]}) {d[3:6]}-{d[6:]}",
                    f"{d[:3]}-{d[3:6]}-{d[6:]}",
                ]
            )
        )
    if kind == "ip":
        parts = draw(st.lists(st.integers(0, 255), min_size=4, max_size=4))
        return ".".join(map(str, parts))
    if kind == "sk":
        return "sk-" + draw(st.text(alphabet=_ALNUM, min_size=20, max_size=40))
    if kind == "akia":
        return "AKIA" + draw(
            st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16)
        )
    if kind == "ghp":
        return "ghp_" + draw(st.text(alphabet=_ALNUM, min_size=36, max_size=36))
    if kind == "ssn":
        area = draw(st.integers(1, 899).filter(lambda a: a != 666))
        group, serial = draw(st.integers(1, 99)), draw(st.integers(1, 9999))
        sep = draw(st.sampled_from(["-", " "]))
        return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
    if kind == "iban":
        country = draw(st.sampled_from(["DE", "GB", "FR", "NL", "ES"]))
        bban = draw(st.text(alphabet="0123456789", min_size=14, max_size=24))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
        compact = f"{country}{check:02d}{bban}"
        assert iban_ok(compact)
        if draw(st.booleans()):
            return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
        return compact
    return draw(st.text(alphabet="0123456789abcdef", min_size=40, max_size=64))


@settings(max_examples=500, deadline=None)
@given(_SAFE, _pii(), _SAFE)
def test_planted_pii_never_survives(prefix: str, planted: str, suffix: str) -> None:
    text = f"{prefix} {planted} {suffix}"
    out = redact(text, max_chars=10_000)
    assert planted not in out
    assert redact(out, max_chars=10_000) == out


def _logger(stream: io.StringIO) -> logging.Logger:
    logger = logging.getLogger(f"test.redact.{id(stream)}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(message)s %(user)s"))
    logger.handlers = [handler]
    return logger


def test_filter_redacts_message_args_extras_and_tracebacks() -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    try:
        raise RuntimeError("token=s3cr3tvalue123")
    except RuntimeError:
        logger.exception(
            "login %s from %s", "bob@example.com", "10.0.0.7", extra={"user": "ann@x.io"}
        )
    out = stream.getvalue()
    for leaked in ("bob@example.com", "10.0.0.7", "ann@x.io", "s3cr3tvalue123"):
        assert leaked not in out
    assert all(p in out for p in (EMAIL, IP, SECRET))


def test_filter_survives_bad_format_args() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items for %s", ("many",), None)
    assert RedactingFilter().filter(record)
    assert "unformattable" in record.getMessage()


# Debug lines the Kafka clients write during a SASL/PLAIN login (aiokafka 0.12,
# kafka-python 3.0.12), as seen against the real broker; the password is "pw-Zq9".
_PLAIN_LOGIN_LINES = (
    "Request to kafka-1:9092 3: SaslAuthenticateRequest_v1("
    "sasl_auth_bytes=b'api-key\\x00api-key\\x00pw-Zq9')",
    "node=1[kafka-1:9092] Sending request 3 SaslAuthenticateRequest(version=2, "
    "auth_bytes=b'api-key\\x00api-key\\x00pw-Zq9')",
    "node=1[kafka-1:9092] Send: bytearray(b'\\x00\\x00\\x00O\\x00$\\x00\\x02\\x00\\x00"
    "\\x00\\x03\\x00\\x17kafka-python-producer-1\\x00,api-key\\x00api-key\\x00pw-Zq9\\x00')",
    'Received: b"it\'s \\\\ pw-Zq9"',
)


@pytest.mark.parametrize("line", _PLAIN_LOGIN_LINES)
def test_filter_hides_bytes_literals_such_as_a_plain_login(line: str) -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    logger.warning("%s", line, extra={"user": "-"})
    out = stream.getvalue()
    assert "pw-Zq9" in line
    assert "pw-Zq9" not in out
    # The text before the literal is kept as it was.
    assert out.startswith(re.split(r"(?:bytearray\()?b['\"]", line)[0] + "[BYTES "), out


def test_hide_bytes_counts_the_bytes_and_keeps_other_text() -> None:
    assert hide_bytes("key=b'abc' value=b'' n=3") == "key=[BYTES 3] value=[BYTES 0] n=3"
    assert hide_bytes("bytearray(b'\\x00\\x01')") == "[BYTES 2]"
    # Not bytes literals: quotes in prose, a word ending in b, an unterminated literal.
    for text in ("Herb's 'garden'", "crab'", "b'unterminated", "it's b ok"):
        assert hide_bytes(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a digit run before an address must not take its first octet (then no pattern
        # sees the address); found by test_planted_pii_never_survives
        ("00000000000000000000 0.0.0.0 ", "00000000000000000000 [IP] "),
        ("000000000000 10.1.2.3", "000000000000 [IP]"),
        # a digit run that is no card may hold a social security number
        ("0000 001-01-0001 ", "0000 [SSN] "),
        ("card 4111111111111111.00", "card [CARD].00"),
    ],
)
def test_a_digit_run_that_is_no_card_hides_no_other_pii(text: str, expected: str) -> None:
    assert redact(text, max_chars=10_000) == expected
