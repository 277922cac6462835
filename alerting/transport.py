"""The HTTP transport of incident delivery: request and response models, and a sender.

A sink builds an :class:`HttpRequest`; an :class:`HttpTransport` posts it and answers with
an :class:`HttpResponse`, or raises :class:`TransportError` when no HTTP answer came. The
retry policy that reads these answers lives in :mod:`alerting.delivery`; this module only
moves bytes, so a test swaps :class:`UrllibTransport` for a scripted one.

No log line or error message here includes a request URL, header or body (they hold
secrets).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from alerting.redact import escape_control


class HttpRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    body: bytes = Field(repr=False)


class HttpResponse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: int
    retry_after_s: float | None = None
    detail: str = Field(
        default="",
        description="The start of the receiver's error body (e.g. Alertmanager's reason for "
        "a 400), control characters escaped; kept in the dead letter's reason.",
    )
    body: bytes = Field(
        default=b"",
        repr=False,
        description="A 2xx answer's body (up to RESPONSE_BODY_MAX bytes), for sinks that read "
        "it (Slack's chat.postMessage returns the message's ts).",
    )


RESPONSE_BODY_MAX = 65_536
ERROR_DETAIL_MAX = 500
"""Characters of a receiver's error body kept in a dead letter's reason."""


def error_detail(body: bytes) -> str:
    """A receiver's error body as one printable line: decoded leniently, control
    characters escaped (it goes into logs), cut at :data:`ERROR_DETAIL_MAX`."""
    escaped = escape_control(body.decode("utf-8", errors="replace").strip())
    return escaped[:ERROR_DETAIL_MAX] + ("..." if len(escaped) > ERROR_DETAIL_MAX else "")


class TransportError(Exception):
    """The request did not get an HTTP response (connection refused, timeout, DNS)."""


class HttpTransport(Protocol):
    def post(self, request: HttpRequest) -> HttpResponse: ...


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


REDIRECT_DETAIL = "a redirect, not followed: give the sink the address it redirects to"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed. urllib turns a redirected POST into a GET without its
    body, which the receiver answers 200 while the page is lost; the 3xx comes back as
    an HTTP error instead (permanent: dead-lettered with :data:`REDIRECT_DETAIL`)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibTransport:
    """A small real transport on the standard library (blocking; call from a thread)."""

    def __init__(self, timeout_s: float = 10.0, *, use_env_proxy: bool = True) -> None:
        self.timeout_s = timeout_s
        self.use_env_proxy = use_env_proxy
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if not use_env_proxy:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def post(self, request: HttpRequest) -> HttpResponse:
        req = urllib.request.Request(
            request.url, data=request.body, headers=request.headers, method="POST"
        )
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                return HttpResponse(status=resp.status, body=resp.read(RESPONSE_BODY_MAX))
        except urllib.error.HTTPError as exc:
            retry = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            try:
                detail = error_detail(exc.read(4 * ERROR_DETAIL_MAX))
            except (OSError, http.client.HTTPException):
                detail = ""
            if 300 <= exc.code < 400:
                detail = REDIRECT_DETAIL  # (not its Location: an address may hold a token)
            return HttpResponse(status=exc.code, retry_after_s=retry, detail=detail)
        except http.client.InvalidURL:
            # (an HTTPException too, but no retry mends it: dead-lettered at once)
            raise ValueError("the sink's URL is not valid") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # The message of a URLError may contain the URL; keep only the class name. An
            # HTTPException is an answer that is not HTTP (a bad status line, an endless
            # header): a receiver or proxy misbehaving, retried like no answer at all.
            raise TransportError(type(exc).__name__) from None
