"""The console's incident routes: the filtered list, one incident's page and its slower
parts (evidence, plot, post-mortem), and the operator actions on an incident.

One :class:`IncidentRoutes` per app holds the evidence cache the incident page fills and
the plot route reads. The shared request plumbing is in :mod:`streams.console.web`.
"""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from alerting.containment import describe_action
from alerting.model import IncidentEvent, Severity, iso_utc
from alerting.relearn import relearnable
from streams.console.actions import ActionError
from streams.console.auth import Session
from streams.console.views import lifecycle_chart
from streams.console.web import Web
from streams.investigation.incidents import IncidentFilter, duration_text, triggered_at

INCIDENT_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STATUSES: Final = ("open", "resolved", "all", "open_recent")
_MAX_ROWS: Final = 500
_EVIDENCE_CACHE: Final = 64


class IncidentRoutes:
    """Handlers for ``/incidents`` and ``/incidents/{incident_id}/...``."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.console = web.console
        self.state = web.state
        self._evidence_lock = threading.Lock()
        self._evidence_cache: dict[str, dict[str, Any]] = {}
        self._computing: dict[str, threading.Lock] = {}
        """Per event id whose evidence is being computed: the lock its readers wait on."""

    # -- the list --------------------------------------------------------------------

    def parse_filter(self, request: Request) -> tuple[IncidentFilter, dict[str, str], list[str]]:
        """The list's filter from the query string, the raw values (to show back in the
        form) and what was wrong with them (shown, not an error page)."""
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
        if status not in _STATUSES:
            problems.append("status must be open, resolved, all or open_recent")
            status = "open_recent"
        since = None
        now = self.console.now()
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

    def incident_rows(self, flt: IncidentFilter, status: str) -> list[dict[str, Any]]:
        """The list's rows, newest first, at most 500 (then a "more" row)."""
        state = self.state
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
            rows = [
                {"event": e, "overlay": state.overlay(e.incident_id)} for e in events[:_MAX_ROWS]
            ]
            return rows + ([{"more": len(events) - _MAX_ROWS}] if len(events) > _MAX_ROWS else [])

    async def incidents(self, request: Request, session: Session) -> Response:
        flt, raw, problems = self.parse_filter(request)
        rows = self.incident_rows(flt, raw["status"])
        with self.state.lock:
            counts = self.state.counts_by_model()
            total = len(self.state.index)
        shown = sum(1 for row in rows if "event" in row)  # not the "N more" row
        fragment = bool(request.query_params.get("fragment"))
        template = "incident_rows.html" if fragment else "incidents.html"
        return self.web.render(
            request,
            template,
            session,
            rows=rows,
            shown=shown,
            counts=counts,
            total=total,
            filters=raw,
            problems=problems,
            severities=[s.value for s in Severity],
            query=urlencode({k: v for k, v in raw.items() if v}),
        )

    # -- one incident ----------------------------------------------------------------

    async def incident(self, request: Request, session: Session) -> Response:
        incident_id = request.path_params["incident_id"]
        if not INCIDENT_ID.match(incident_id):
            return self.web.error(request, session, 400, "not an incident id")
        state = self.state
        with state.lock:
            try:
                events = state.history(incident_id)
            except LookupError:
                return self.web.error(request, session, 404, f"unknown incident {incident_id}")
            ov = state.overlay(incident_id)
            actions = state.incident_actions(incident_id)
            measures = state.measures(events[-1])
            silences = [
                r
                for r in state.silence_records.values()
                if r.is_active(self.console.now())
                and r.silence.matches(events[-1].labels, events[-1].incident_type)
            ]
        latest = events[-1]
        playbooks = self.console.playbooks
        playbook = playbooks.get(latest.playbook.name) if latest.playbook else None
        playbook = playbook or playbooks.for_type(latest.incident_type)
        notification = playbook.render_notification(latest) if playbook else None
        planned = playbook.containment if playbook else ()
        template = "incident_live.html" if request.query_params.get("fragment") else "incident.html"
        return self.web.render(
            request,
            template,
            session,
            ev=latest,
            events=events,
            overlay=ov,
            actions=actions,
            measures=measures,
            silences=silences,
            relearnable=relearnable(latest.evidence.signal.kind),
            playbook=playbook,
            notification=notification,
            containment_planned=[describe_action(a) for a in planned],
            related=self.related_cuts(latest),
            chart=lifecycle_chart(events),
            triggered=triggered_at(events),
            duration=duration_text(latest, self.console.now()),  # as `sentinel incidents`
        )

    def related_cuts(self, latest: IncidentEvent) -> list[IncidentEvent]:
        """Other incidents of the same model whose scope overlaps this one's, or that
        share its type: the other cuts in which the same cause may show."""
        with self.state.lock:
            others = [
                e
                for e in self.state.index.latest()
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

    def _history(self, incident_id: str) -> list[IncidentEvent] | None:
        """The incident's events, or None when it is unknown."""
        with self.state.lock:
            try:
                return self.state.history(incident_id)
            except LookupError:
                return None

    def _evidence_of(self, events: list[IncidentEvent]) -> dict[str, Any]:
        """The evidence (audit rows, series, plot) of an incident as of its latest event,
        computed once per event and shared by the evidence fragment and the plot: an
        update that arrives between the two computes it again instead of losing the plot.

        The shared lock covers only the cache: a computation (a Kafka read, seconds) holds
        the lock of its own event id, so that one incident's read holds up neither the
        cached evidence nor the reads of other incidents, only a second read of itself."""
        key = events[-1].event_id
        with self._evidence_lock:
            found = self._evidence_cache.get(key)
            if found is not None:
                return found
            computing = self._computing.setdefault(key, threading.Lock())
        try:
            with computing:
                with self._evidence_lock:
                    found = self._evidence_cache.get(key)
                if found is None:
                    found = self.console.evidence(events)
                    with self._evidence_lock:
                        if len(self._evidence_cache) > _EVIDENCE_CACHE:
                            self._evidence_cache.clear()
                        self._evidence_cache[key] = found
                return found
        finally:
            with self._evidence_lock:
                if self._computing.get(key) is computing:
                    del self._computing[key]

    async def _evidence(self, events: list[IncidentEvent]) -> dict[str, Any]:
        """:meth:`_evidence_of` in a thread; a cached one straight from the event loop, so
        that it does not queue for a thread behind other incidents' reads."""
        with self._evidence_lock:
            found = self._evidence_cache.get(events[-1].event_id)
        if found is not None:
            return found
        return await asyncio.to_thread(self._evidence_of, events)

    async def evidence(self, request: Request, session: Session) -> Response:
        incident_id = request.path_params["incident_id"]
        events = self._history(incident_id)
        if events is None:
            return self.web.error(request, session, 404, f"unknown incident {incident_id}")
        try:
            found = await self._evidence(events)
        except Exception as exc:  # the rest of the page stays usable
            found = {"error": f"{type(exc).__name__}: {exc}"}
        return self.web.render(request, "evidence.html", session, ev=events[-1], **found)

    async def plot(self, request: Request, session: Session) -> Response:
        events = self._history(request.path_params["incident_id"])
        if events is None:
            return PlainTextResponse("unknown incident", status_code=404)
        try:
            found = await self._evidence(events)
        except Exception as exc:
            return PlainTextResponse(f"no plot: {type(exc).__name__}: {exc}", status_code=503)
        png = found.get("png")
        if png is None:
            return PlainTextResponse("no plot: the evidence has no series", status_code=404)
        return Response(png, media_type="image/png")

    async def postmortem(self, request: Request, session: Session) -> Response:
        incident_id = request.path_params["incident_id"]
        events = self._history(incident_id)
        if events is None:
            return self.web.error(request, session, 404, f"unknown incident {incident_id}")
        text = await asyncio.to_thread(self.console.postmortem, events)
        if request.query_params.get("format") == "md":
            return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")
        return self.web.render(request, "postmortem.html", session, ev=events[-1], text=text)

    # -- actions ---------------------------------------------------------------------

    async def act(self, request: Request, session: Session, form: dict[str, str]) -> Response:
        incident_id = request.path_params["incident_id"]
        what = request.path_params["action"]
        reason = form.get("reason", "")
        a = self.console.actions

        def back(message: str) -> Response:  # to the incident's page, saying what was done
            return self.web.back(f"/incidents/{incident_id}", message)

        if what == "acknowledge":
            await asyncio.to_thread(a.acknowledge, incident_id, by=session.user, reason=reason)
            return back("acknowledged")
        if what == "resolve":
            await asyncio.to_thread(a.resolve, incident_id, by=session.user, reason=reason)
            return back("resolved by hand")
        if what == "silence":
            rec = await asyncio.to_thread(
                a.silence_incident,
                incident_id,
                by=session.user,
                reason=reason,
                duration=form.get("duration", ""),
            )
            return back(f"silenced until {iso_utc(rec.ends_at())} ({rec.id})")
        if what == "relearn":
            learn = await asyncio.to_thread(a.relearn, incident_id, by=session.user, reason=reason)
            return back(f"re-learn published: {learn.describe()} ({learn.id})")
        if what == "contain":
            act_ = await asyncio.to_thread(a.contain, incident_id, by=session.user, reason=reason)
            return back(f"containment published: {act_.detail}")
        raise ActionError(f"unknown action {what!r}")
