"""The console's web app (Starlette): pages, actions, live updates.

Built by :func:`create_app` from injected parts (state, actions, authenticator, an
evidence function, a clock), so tests and ``sentinel console`` run the same app.
Pages are server-rendered Jinja2 templates (autoescaped); ``static/console.js`` adds live
updates over server-sent events (``/events``) and loads the slower evidence section after
the page is shown. Every page needs a login; every POST also needs the session's CSRF
token and the operator role.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerting.containment import describe_action
from alerting.model import IncidentEvent, Severity, iso_utc
from alerting.playbooks import PlaybookSet
from streams.console.actions import ActionError, ConsoleActions
from streams.console.auth import COOKIE, Authenticator, Session
from streams.console.state import ConsoleState, Follower
from streams.console.views import heat_class, lifecycle_chart, model_views
from streams.investigation.incidents import IncidentFilter, duration_minutes, triggered_at
from streams.settings import Settings

INCIDENT_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SSE_POLL_S: Final = 0.5
SSE_HEARTBEAT_S: Final = 15.0

Evidence = Callable[[list[IncidentEvent]], dict[str, Any]]
"""Computes the evidence section of an incident (``sentinel investigate``'s analysis)."""


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


def create_app(console: Console) -> Starlette:
    env = _env()
    state, auth = console.state, console.auth

    def session_of(request: Request) -> Session | None:
        header = request.headers.get("authorization")
        if header:
            return auth.basic(header)
        cookie = request.cookies.get(COOKIE)
        return auth.from_cookie(cookie, time.time()) if cookie else None

    def render(
        request: Request,
        name: str,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        with state.lock:
            progress = state.progress
            banner = None
            if console.follower is not None and console.follower.error is not None:
                banner = f"not following Kafka: {console.follower.error}"
            elif progress.caught_up_s is None:
                banner = (
                    f"reading the topics: {progress.records_read:,} of "
                    f"{progress.records_at_start or 0:,} records"
                )
            version = state.version
        html = env.get_template(name).render(
            request=request,
            session=session,
            csrf=auth.csrf_token(session) if session else "",
            banner=banner,
            version=version,
            public_url=console.settings.console.public_url,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def error(request: Request, session: Session | None, status: int, message: str) -> Response:
        return render(request, "error.html", session, status=status, message=message)

    def page(handler: Callable[[Request, Session], Any]) -> Callable[[Request], Any]:
        """A page that needs a login (redirects to it)."""

        async def wrapped(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                if request.headers.get("authorization"):
                    return PlainTextResponse("login refused", status_code=401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            result: Response = await handler(request, session)
            return result

        return wrapped

    def write(handler: Callable[[Request, Session, dict[str, str]], Any]) -> Callable[..., Any]:
        """A POST: needs a login, the operator role and the session's CSRF token."""

        async def wrapped(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return PlainTextResponse(
                    "not logged in: this action needs an operator login", status_code=401
                )
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            token = form.get("csrf") or request.headers.get("x-csrf-token")
            if not auth.check_csrf(session, token):
                return error(request, session, 403, "the form's CSRF token is missing or wrong")
            if not session.can_act:
                return error(
                    request, session, 403, f"{session.user} is a viewer: only operators can act"
                )
            try:
                result: Response = await handler(request, session, form)
            except ActionError as exc:
                return error(request, session, 400, str(exc))
            return result

        return wrapped

    # -- login -----------------------------------------------------------------------

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", None, next=request.query_params.get("next", "/"))

    async def login(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("user", "")), str(form.get("password", ""))
        target = str(form.get("next", "/"))
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        session = await asyncio.to_thread(auth.login, name, password)
        if session is None:
            return render(
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
            secure=console.secure_cookies,
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # -- incidents -------------------------------------------------------------------

    def parse_filter(request: Request) -> tuple[IncidentFilter, dict[str, str], list[str]]:
        from streams.cli.common import parse_time

        q = request.query_params
        raw = {k: q.get(k, "").strip() for k in ("model", "type", "severity", "status", "since")}
        problems: list[str] = []
        severity = None
        if raw["severity"]:
            try:
                severity = Severity(raw["severity"])
            except ValueError:
                problems.append(f"severity must be one of {', '.join(s.value for s in Severity)}")
        status = raw["status"] or "open_recent"
        if status not in ("open", "resolved", "all", "open_recent"):
            problems.append("status must be open, resolved, all or open_recent")
            status = "open_recent"
        since = None
        now = console.now()
        if raw["since"]:
            try:
                since = parse_time(raw["since"], now)
            except ValueError as exc:
                problems.append(str(exc))
        elif status == "open_recent":
            since = now - timedelta(hours=24)
        flt = IncidentFilter(
            model=raw["model"] or None,
            severity=severity,
            incident_type=raw["type"] or None,
            since=since,
            status="all" if status == "open_recent" else status,  # type: ignore[arg-type]
        )
        raw["status"] = status
        return flt, raw, problems

    def incident_rows(flt: IncidentFilter, status: str) -> list[dict[str, Any]]:
        with state.lock:
            if status == "open_recent":
                # Open ones whatever their age, plus those resolved in the last 24 h.
                open_ = state.incidents(
                    IncidentFilter(
                        model=flt.model,
                        severity=flt.severity,
                        incident_type=flt.incident_type,
                        status="open",
                    )
                )
                recent = state.incidents(flt)
                seen: dict[str, IncidentEvent] = {e.incident_id: e for e in recent}
                seen.update({e.incident_id: e for e in open_})
                events = sorted(
                    seen.values(), key=lambda e: (e.first_seen, e.incident_id), reverse=True
                )
            else:
                events = state.incidents(flt)
            return [{"event": e, "overlay": state.overlay(e.incident_id)} for e in events[:500]] + (
                [{"more": len(events) - 500}] if len(events) > 500 else []
            )

    async def incidents(request: Request, session: Session) -> Response:
        flt, raw, problems = parse_filter(request)
        rows = incident_rows(flt, raw["status"])
        with state.lock:
            counts = state.counts_by_model()
            total = len(state.index)
        fragment = bool(request.query_params.get("fragment"))
        template = "incident_rows.html" if fragment else "incidents.html"
        return render(
            request,
            template,
            session,
            rows=rows,
            counts=counts,
            total=total,
            filters=raw,
            problems=problems,
            severities=[s.value for s in Severity],
            query=urlencode({k: v for k, v in raw.items() if v}),
        )

    async def incident(request: Request, session: Session) -> Response:
        incident_id = request.path_params["incident_id"]
        if not INCIDENT_ID.match(incident_id):
            return error(request, session, 400, "not an incident id")
        with state.lock:
            try:
                events = state.history(incident_id)
            except LookupError:
                return error(request, session, 404, f"unknown incident {incident_id}")
            ov = state.overlay(incident_id)
            actions = state.incident_actions(incident_id)
            measures = state.measures(events[-1])
            silences = [
                r
                for r in state.silence_records.values()
                if r.is_active(console.now())
                and r.silence.matches(events[-1].labels, events[-1].incident_type)
            ]
        latest = events[-1]
        playbook = console.playbooks.get(latest.playbook.name) if latest.playbook else None
        playbook = playbook or console.playbooks.for_type(latest.incident_type)
        notification = playbook.render_notification(latest) if playbook else None
        planned = playbook.containment if playbook else ()
        containment_planned = [describe_action(a) for a in planned]
        related = related_cuts(latest)
        template = "incident_live.html" if request.query_params.get("fragment") else "incident.html"
        return render(
            request,
            template,
            session,
            ev=latest,
            events=events,
            overlay=ov,
            actions=actions,
            measures=measures,
            silences=silences,
            playbook=playbook,
            notification=notification,
            containment_planned=containment_planned,
            related=related,
            chart=lifecycle_chart(events),
            triggered=triggered_at(events),
            duration=duration_minutes(latest),
        )

    def related_cuts(latest: IncidentEvent) -> list[IncidentEvent]:
        """Other incidents of the same model whose scope overlaps this one's, or that
        share its type: the other cuts in which the same cause may show."""
        with state.lock:
            others = [
                e
                for e in state.index.latest()
                if e.labels.model == latest.labels.model and e.incident_id != latest.incident_id
            ]
        near = [
            e
            for e in others
            if e.labels.covers(latest.labels)
            or latest.labels.covers(e.labels)
            or e.incident_type.split(":")[0] == latest.incident_type.split(":")[0]
        ]
        return sorted(near, key=lambda e: e.first_seen, reverse=True)[:20]

    evidence_lock = threading.Lock()
    evidence_cache: dict[str, dict[str, Any]] = {}

    async def evidence(request: Request, session: Session) -> Response:
        incident_id = request.path_params["incident_id"]
        with state.lock:
            try:
                events = state.history(incident_id)
            except LookupError:
                return error(request, session, 404, f"unknown incident {incident_id}")
        cache_key = events[-1].event_id

        def compute() -> dict[str, Any]:
            with evidence_lock:
                if cache_key not in evidence_cache:
                    evidence_cache.clear() if len(evidence_cache) > 64 else None
                    evidence_cache[cache_key] = console.evidence(events)
                return evidence_cache[cache_key]

        try:
            found = await asyncio.to_thread(compute)
        except Exception as exc:  # the rest of the page stays usable
            found = {"error": f"{type(exc).__name__}: {exc}"}
        return render(request, "evidence.html", session, ev=events[-1], **found)

    async def plot(request: Request, session: Session) -> Response:
        incident_id = request.path_params["incident_id"]
        with state.lock:
            try:
                events = state.history(incident_id)
            except LookupError:
                return PlainTextResponse("unknown incident", status_code=404)
        found = await asyncio.to_thread(lambda: evidence_cache.get(events[-1].event_id))
        png = found.get("png") if found else None
        if png is None:
            return PlainTextResponse(
                "no plot yet: open the incident page first (it computes the evidence)",
                status_code=404,
            )
        return Response(png, media_type="image/png")

    async def postmortem(request: Request, session: Session) -> Response:
        incident_id = request.path_params["incident_id"]
        with state.lock:
            try:
                events = state.history(incident_id)
            except LookupError:
                return error(request, session, 404, f"unknown incident {incident_id}")
        text = await asyncio.to_thread(console.postmortem, events)
        if request.query_params.get("format") == "md":
            return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")
        return render(request, "postmortem.html", session, ev=events[-1], text=text)

    # -- actions ---------------------------------------------------------------------

    def back(incident_id: str, message: str) -> Response:
        return RedirectResponse(
            f"/incidents/{quote(incident_id)}?{urlencode({'done': message})}", status_code=303
        )

    async def act(request: Request, session: Session, form: dict[str, str]) -> Response:
        incident_id = request.path_params["incident_id"]
        what = request.path_params["action"]
        reason = form.get("reason", "")
        a = console.actions
        if what == "acknowledge":
            await asyncio.to_thread(a.acknowledge, incident_id, by=session.user, reason=reason)
            return back(incident_id, "acknowledged")
        if what == "resolve":
            await asyncio.to_thread(a.resolve, incident_id, by=session.user, reason=reason)
            return back(incident_id, "resolved by hand")
        if what == "silence":
            rec = await asyncio.to_thread(
                a.silence_incident,
                incident_id,
                by=session.user,
                reason=reason,
                duration=form.get("duration", ""),
            )
            return back(incident_id, f"silenced until {iso_utc(rec.ends_at())} ({rec.id})")
        if what == "contain":
            act_ = await asyncio.to_thread(a.contain, incident_id, by=session.user, reason=reason)
            return back(incident_id, f"containment published: {act_.detail}")
        raise ActionError(f"unknown action {what!r}")

    # -- models ----------------------------------------------------------------------

    async def models(request: Request, session: Session) -> Response:
        with state.lock:
            detectors = dict(state.detectors)
            engines = dict(state.engines)
            counts = state.counts_by_model()
        views = await asyncio.to_thread(model_views, detectors, engines, console.settings.detection)
        return render(request, "models.html", session, views=views, counts=counts)

    # -- silences --------------------------------------------------------------------

    async def silences(request: Request, session: Session) -> Response:
        show_all = bool(request.query_params.get("all"))
        now = console.now()
        with state.lock:
            records = sorted(
                (r for r in state.silence_records.values() if show_all or r.is_active(now)),
                key=lambda r: r.silence.starts_at,
                reverse=True,
            )
        return render(
            request, "silences.html", session, records=records, now=now, show_all=show_all
        )

    async def add_silence(request: Request, session: Session, form: dict[str, str]) -> Response:
        segment: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in form.get("segment", "").split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ActionError(f"segment wants label=value pairs separated by commas: {part!r}")
            segment[key.strip()] = value.strip()
        rec = await asyncio.to_thread(
            console.actions.add_silence,
            model=form.get("model", ""),
            version=form.get("version"),
            segment=segment,
            incident_type=form.get("type"),
            duration=form.get("duration", ""),
            comment=form.get("comment", ""),
            by=session.user,
        )
        return RedirectResponse(f"/silences?{urlencode({'done': rec.id})}", status_code=303)

    async def expire_silence(request: Request, session: Session, form: dict[str, str]) -> Response:
        sid = request.path_params["silence_id"]
        await asyncio.to_thread(console.actions.expire_silence, sid, by=session.user)
        return RedirectResponse(f"/silences?{urlencode({'done': sid + ' expired'})}", 303)

    # -- live updates and health -----------------------------------------------------

    async def events(request: Request, session: Session) -> Response:
        async def stream() -> AsyncIterator[str]:
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

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def healthz(request: Request) -> Response:
        with state.lock:
            p = state.progress
            body = {
                "following": console.follower is None or console.follower.error is None,
                "caught_up": p.caught_up_s is not None,
                "startup_read_s": p.caught_up_s,
                "records_read": p.records_read,
                "incidents": len(state.index),
                "version": state.version,
            }
        return JSONResponse(body, status_code=200 if body["following"] else 503)

    async def root(request: Request) -> Response:
        return RedirectResponse("/incidents", status_code=303)

    static = Path(__file__).resolve().parent / "static"
    routes = [
        Route("/", root),
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/incidents", page(incidents)),
        Route("/incidents/{incident_id}", page(incident)),
        Route("/incidents/{incident_id}/evidence", page(evidence)),
        Route("/incidents/{incident_id}/plot.png", page(plot)),
        Route("/incidents/{incident_id}/postmortem", page(postmortem)),
        Route(
            "/incidents/{incident_id}/{action:str}",
            write(act),
            methods=["POST"],
        ),
        Route("/models", page(models)),
        Route("/silences", page(silences), methods=["GET"]),
        Route("/silences", write(add_silence), methods=["POST"]),
        Route("/silences/{silence_id}/expire", write(expire_silence), methods=["POST"]),
        Route("/events", page(events)),
        Mount("/static", app=StaticFiles(directory=static), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])


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
