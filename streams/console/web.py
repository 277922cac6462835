"""What every console route shares: the :class:`Console` (its injected parts) and
:class:`Web` (templates, the login session of a request, rendering, and the ``page`` /
``write`` wrappers that put the login, role and CSRF checks in front of each handler).

Kept apart from the routes (:mod:`streams.console.app`,
:mod:`streams.console.incident_routes`) so each route module depends on this one, not
on each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from alerting.containment import describe_action
from alerting.model import IncidentEvent, iso_utc
from alerting.playbooks import PlaybookSet
from streams.console.actions import ActionError, ConsoleActions
from streams.console.auth import COOKIE, Authenticator, Session
from streams.console.state import ConsoleState, Follower
from streams.console.views import heat_class
from streams.settings import Settings

Evidence = Callable[[list[IncidentEvent]], dict[str, Any]]
"""Computes the evidence section of an incident (``sentinel investigate``'s analysis)."""

HASH_THREADS: Final = 2
"""Threads that check passwords (PBKDF2): apart from the default executor, so that a flood
of made-up logins queues behind itself, not in front of operator actions and evidence."""

PageHandler = Callable[[Request, Session], Awaitable[Response]]
WriteHandler = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


@dataclass
class Console:
    """Everything the routes need; built once per process."""

    settings: Settings
    state: ConsoleState
    actions: ConsoleActions
    auth: Authenticator
    playbooks: PlaybookSet
    evidence: Evidence
    postmortem: Callable[[list[IncidentEvent]], str]
    now: Callable[[], datetime]
    follower: Follower | None = None
    secure_cookies: bool = False

    @property
    def cookies_secure(self) -> bool:
        """Whether the session cookie is ``Secure``: when this process serves TLS, when
        ``secure_cookies`` says so, or when operators reach it at an ``https://``
        ``public_url`` (TLS ending at a proxy in front: the browser still sees https)."""
        cfg = self.settings.console
        return (
            self.secure_cookies or bool(cfg.tls_certfile) or cfg.public_url.startswith("https://")
        )


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("streams.console", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["iso"] = lambda d: iso_utc(d) if d is not None else "-"
    env.filters["short"] = lambda d: iso_utc(d)[:19].replace("T", " ") if d is not None else "-"
    env.filters["heat"] = heat_class
    env.filters["action"] = describe_action
    env.globals["quote"] = lambda s: quote(str(s), safe="")
    return env


class Web:
    """Request plumbing shared by the routes of one :class:`Console`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.state = console.state
        self.auth = console.auth
        self.env = _env()
        self._hashing = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="console-login")

    async def login(self, name: str, password: str) -> Session | None:
        """:meth:`Authenticator.login` (a password hash) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._hashing, self.auth.login, name, password)

    async def session_of(self, request: Request) -> Session | None:
        """The request's login: HTTP Basic (scripts) or the session cookie (browsers).

        Only a ``Basic`` header takes the place of the cookie (another scheme, e.g. a
        proxy's ``Bearer``, is not ours). Its password hash (PBKDF2, tens of ms) runs in a
        thread: on the event loop, requests with a made-up Basic header would stall every
        other page, the live updates and ``/healthz`` (see :data:`HASH_THREADS`)."""
        header = basic_header(request)
        if header is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._hashing, self.auth.basic, header)
        cookie = request.cookies.get(COOKIE)
        return self.auth.from_cookie(cookie, time.time()) if cookie else None

    def render(
        self,
        request: Request,
        name: str,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        """Render a template with what every page shows (CSRF token, banner, version)."""
        state, follower = self.state, self.console.follower
        with state.lock:
            progress = state.progress
            banner = None
            if follower is not None and follower.error is not None:
                banner = f"not following Kafka: {follower.error}"
            elif progress.caught_up_s is None:
                banner = (
                    f"reading the topics: {progress.records_read:,} of "
                    f"{progress.records_at_start or 0:,} records"
                )
            version = state.version
        done = request.query_params.get("done")
        if done is not None:  # shown only when the server wrote it (content spoofing)
            path, mac = request.url.path, request.query_params.get("sig")
            done = done if self.auth.check_note(path, done, mac) else None
        html = self.env.get_template(name).render(
            request=request,
            session=session,
            done=done,
            csrf=self.auth.csrf_token(session) if session else "",
            banner=banner,
            version=version,
            public_url=self.console.settings.console.public_url,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def error(
        self, request: Request, session: Session | None, status: int, message: str
    ) -> Response:
        return self.render(request, "error.html", session, status=status, message=message)

    def back(self, path: str, message: str) -> Response:
        """Redirect to ``path`` (unquoted), whose page then says ``message`` in its status
        line: signed (:meth:`Authenticator.note_mac`), as :meth:`render` shows no other."""
        query = urlencode({"done": message, "sig": self.auth.note_mac(path, message)})
        return RedirectResponse(f"{quote(path)}?{query}", status_code=303)

    def page(self, handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a login (redirects to it)."""

        async def wrapped(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None:
                if basic_header(request) is not None:
                    return PlainTextResponse("login refused", status_code=401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            return await handler(request, session)

        return wrapped

    def write(self, handler: WriteHandler) -> Callable[[Request], Awaitable[Response]]:
        """A POST: needs a login, the operator role and the session's CSRF token."""

        async def wrapped(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None:
                return PlainTextResponse(
                    "not logged in: this action needs an operator login", status_code=401
                )
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            token = form.get("csrf") or request.headers.get("x-csrf-token")
            if not self.auth.check_csrf(session, token):
                return self.error(
                    request, session, 403, "the form's CSRF token is missing or wrong"
                )
            if not session.can_act:
                return self.error(
                    request, session, 403, f"{session.user} is a viewer: only operators can act"
                )
            try:
                return await handler(request, session, form)
            except ActionError as exc:
                return self.error(request, session, 400, str(exc))

        return wrapped


def basic_header(request: Request) -> str | None:
    """The request's ``Authorization`` header when its scheme is ``Basic``, else None."""
    header = request.headers.get("authorization", "")
    return header if header.partition(" ")[0].lower() == "basic" else None
