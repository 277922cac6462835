"""Console logins: salted PBKDF2 password hashes, signed session cookies, CSRF tokens.

Passwords (or tokens) are never stored: ``[[console.users]]`` holds
``pbkdf2_sha256$<iterations>$<salt>$<hash>`` made by :func:`hash_password`. A login (the
form, or HTTP Basic on any request) yields a :class:`Session`; the cookie is
``<user>|<expiry epoch s>|<nonce>|<HMAC>`` signed with the session secret, so the server
keeps no session table. The CSRF token of a session is an HMAC of its nonce: every write
must carry it (form field ``csrf`` or header ``X-CSRF-Token``), and a cross-site page
cannot read it. Tokens from the request are compared as bytes (:func:`_same`): any
text, however odd, is refused rather than raising. Pure functions except
:func:`hash_password`'s random salt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from streams.settings import ConsoleSettings, ConsoleUser

ITERATIONS = 200_000
COOKIE = "sentinel_session"
Role = Literal["operator", "viewer"]


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The ``password_hash`` value for a ``[[console.users]]`` entry."""
    if not password:
        raise ValueError("empty password")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` value."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", _utf8(password), bytes.fromhex(salt), int(iterations))
        want = bytes.fromhex(digest)
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def _utf8(text: str) -> bytes:
    """``text`` as bytes, whatever it holds (a lone surrogate too): never raises."""
    return text.encode("utf-8", "surrogatepass")


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of a token from a request and the expected one, as bytes:
    ``hmac.compare_digest`` raises TypeError on non-ASCII text (an HTTP 500, not a
    refusal)."""
    return hmac.compare_digest(_utf8(given), _utf8(expected))


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    nonce: str

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


class Authenticator:
    """Checks logins against the configured users and signs/verifies session cookies."""

    def __init__(self, settings: ConsoleSettings, *, secret: bytes | None = None) -> None:
        configured = settings.session_secret.get_secret_value().encode()
        self._secret = secret or configured or secrets.token_bytes(32)
        self._users: dict[str, ConsoleUser] = {u.name: u for u in settings.users}
        self.session_seconds = int(settings.session_hours * 3600)
        # A user that does not exist still costs one hash, so timing tells nothing.
        self._dummy = hash_password("x", iterations=ITERATIONS, salt=b"\0" * 16)

    @property
    def has_users(self) -> bool:
        return bool(self._users)

    def login(self, name: str, password: str) -> Session | None:
        user = self._users.get(name)
        ok = verify_password(
            password, user.password_hash.get_secret_value() if user else self._dummy
        )
        if user is None or not ok:
            return None
        return Session(user.name, user.role, secrets.token_hex(8))

    def basic(self, header: str) -> Session | None:
        """A session from an ``Authorization: Basic`` header (scripts, curl)."""
        scheme, _, blob = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:  # bytes: b64decode raises a bare ValueError on non-ASCII text
            decoded = base64.b64decode(_utf8(blob.strip()))
            name, sep, password = decoded.decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        session = self.login(name, password)
        # Basic has no cookie: its CSRF nonce is fixed per user.
        return Session(session.user, session.role, "basic") if session else None

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, _utf8(text), hashlib.sha256).hexdigest()

    def cookie(self, session: Session, now_s: float) -> str:
        body = f"{session.user}|{int(now_s) + self.session_seconds}|{session.nonce}"
        return f"{body}|{self._sign(body)}"

    def from_cookie(self, value: str, now_s: float) -> Session | None:
        body, _, mac = value.rpartition("|")
        if not body or not _same(mac, self._sign(body)):
            return None
        try:
            name, expiry, nonce = body.split("|")
            expires = int(expiry)
        except ValueError:
            return None
        user = self._users.get(name)
        if user is None or expires < now_s:
            return None
        return Session(user.name, user.role, nonce)

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf|{session.user}|{session.nonce}")

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return token is not None and _same(token, self.csrf_token(session))

    def note_mac(self, path: str, message: str) -> str:
        """The signature of a status line (``?done=``) the server shows on ``path`` after
        a write: only what the server said shows there, not text a link was made with."""
        return self._sign(f"done|{path}|{message}")

    def check_note(self, path: str, message: str, mac: str | None) -> bool:
        return mac is not None and _same(mac, self.note_mac(path, message))
