"""The console's web app (Starlette): pages, actions, live updates.

Built by :func:`create_app` from injected parts (a :class:`~streams.console.web.Console`:
state, actions, authenticator, an evidence function, a clock), so tests and ``sentinel
console`` run the same app. Pages are server-rendered Jinja2 templates (autoescaped);
``static/console.js`` adds live updates over server-sent events (``/events``) and loads
the slower evidence section after the page is shown. Every page needs a login; every POST
also needs the session's CSRF token and the operator role.

Here: the route table, the login, models, silences, live-update and health routes, and
the security headers. The incident routes are in :mod:`streams.console.incident_routes`,
the plumbing they share (rendering, login and CSRF checks) in :mod:`streams.console.web`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.console.actions import ActionError
from streams.console.auth import COOKIE, Session
from streams.console.incident_routes import IncidentRoutes
from streams.console.views import model_views
from streams.console.web import Console, Web
from streams.contract.scope import ScopeError, check_segment_pair, segment_of

SSE_POLL_S: Final = 0.5
SSE_HEARTBEAT_S: Final = 15.0


def create_app(console: Console) -> Starlette:
    """The console's ASGI app: every route, the static files and the security headers."""
    web = Web(console)
    inc = IncidentRoutes(web)
    app = _AppRoutes(web)
    page, write = web.page, web.write
    static = Path(__file__).resolve().parent / "static"
    routes = [
        Route("/", app.root),
        Route("/healthz", app.healthz),
        Route("/login", app.login_page, methods=["GET"]),
        Route("/login", app.login, methods=["POST"]),
        Route("/logout", app.logout, methods=["POST"]),
        Route("/incidents", page(inc.incidents)),
        Route("/incidents/{incident_id}", page(inc.incident)),
        Route("/incidents/{incident_id}/evidence", page(inc.evidence)),
        Route("/incidents/{incident_id}/plot.png", page(inc.plot)),
        Route("/incidents/{incident_id}/postmortem", page(inc.postmortem)),
        Route(
            "/incidents/{incident_id}/{action:str}",
            write(inc.act),
            methods=["POST"],
        ),
        Route("/models", page(app.models)),
        Route("/silences", page(app.silences), methods=["GET"]),
        Route("/silences", write(app.add_silence), methods=["POST"]),
        Route("/silences/{silence_id}/expire", write(app.expire_silence), methods=["POST"]),
        Route("/events", page(app.events)),
        Mount("/static", app=StaticFiles(directory=static), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])


class _AppRoutes:
    """Handlers for the login, models, silences, live-update and health routes."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.console = web.console
        self.state = web.state

    # -- login -----------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        next_ = request.query_params.get("next", "/")
        return self.web.render(request, "login.html", None, next=next_)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("user", "")), str(form.get("password", ""))
        target = str(form.get("next", "/"))
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        auth = self.web.auth
        session = await self.web.login(name, password)
        if session is None:
            return self.web.render(
                request,
                "login.html",
                None,
                status=401,
                next=target,
                failed="wrong user or password",
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            auth.cookie(session, time.time()),
            max_age=auth.session_seconds,
            httponly=True,
            samesite="strict",
            secure=self.console.cookies_secure,
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            COOKIE, httponly=True, samesite="strict", secure=self.console.cookies_secure
        )
        return response

    # -- models ----------------------------------------------------------------------

    async def models(self, request: Request, session: Session) -> Response:
        state = self.state
        with state.lock:
            detectors = dict(state.detectors)
            engines = dict(state.engines)
            counts = state.counts_by_model()
        detection = self.console.settings.detection
        views = await asyncio.to_thread(model_views, detectors, engines, detection)
        return self.web.render(request, "models.html", session, views=views, counts=counts)

    # -- silences --------------------------------------------------------------------

    async def silences(self, request: Request, session: Session) -> Response:
        show_all = bool(request.query_params.get("all"))
        now = self.console.now()
        with self.state.lock:
            records = sorted(
                (r for r in self.state.silence_records.values() if show_all or r.is_active(now)),
                key=lambda r: r.silence.starts_at,
                reverse=True,
            )
        return self.web.render(
            request, "silences.html", session, records=records, now=now, show_all=show_all
        )

    async def add_silence(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        parts = filter(None, (p.strip() for p in form.get("segment", "").split(",")))
        known = self.console.settings.detection.segment_labels
        try:  # the CLI's checks (streams.contract.scope): one definition of a scope
            segment = segment_of((check_segment_pair(part) for part in parts), known)
        except ScopeError as exc:
            raise ActionError(f"{exc} (segment: label=value pairs separated by commas)") from None
        actions = self.console.actions
        rec = actions.silence_record(  # checks only: no I/O
            model=form.get("model", ""),
            version=form.get("version"),
            segment=segment,
            incident_type=form.get("type"),
            duration=form.get("duration", ""),
            comment=form.get("comment", ""),
            by=session.user,
        )
        await asyncio.to_thread(actions.publish_silence, rec)
        return self.web.back("/silences", rec.id)

    async def expire_silence(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        sid = request.path_params["silence_id"]
        await asyncio.to_thread(self.console.actions.expire_silence, sid, by=session.user)
        return self.web.back("/silences", f"{sid} expired")

    # -- live updates and health -----------------------------------------------------

    async def events(self, request: Request, session: Session) -> Response:
        return StreamingResponse(
            self._changes(request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _changes(self, request: Request) -> AsyncIterator[str]:
        """Server-sent events: ``change`` with the new state version and what changed,
        polled every ``SSE_POLL_S``; a heartbeat comment after ``SSE_HEARTBEAT_S`` quiet."""
        state = self.state
        with state.lock:
            seen = state.version
        yield f"event: hello\ndata: {seen}\n\n"
        quiet = 0.0
        while not await request.is_disconnected():
            await asyncio.sleep(SSE_POLL_S)
            with state.lock:
                version = state.version
                what = state.changed_since(seen) if version != seen else []
            if version != seen:
                seen = version
                quiet = 0.0
                items = ",".join(sorted(set(what))[:50])
                yield f"event: change\ndata: {version} {items}\n\n"
            else:
                quiet += SSE_POLL_S
                if quiet >= SSE_HEARTBEAT_S:
                    quiet = 0.0
                    yield ": heartbeat\n\n"

    async def healthz(self, request: Request) -> Response:
        follower = self.console.follower
        with self.state.lock:
            p = self.state.progress
            body = {
                "following": follower is None or follower.error is None,
                "caught_up": p.caught_up_s is not None,
                "startup_read_s": p.caught_up_s,
                "records_read": p.records_read,
                "incidents": len(self.state.index),
                "version": self.state.version,
            }
        return JSONResponse(body, status_code=200 if body["following"] else 503)

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/incidents", status_code=303)


class SecurityHeaders:
    """ASGI middleware: a strict Content-Security-Policy (only this origin's scripts,
    styles and images; no framing) and no MIME sniffing, on every response."""

    HEADERS: Final = (
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            b"frame-ancestors 'none'; form-action 'self'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
