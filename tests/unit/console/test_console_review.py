"""The console app in-process (the real :func:`create_app`, no Kafka, no browser), for what
a review of it found: each test fails on the code before its fix. Requests are ASGI calls
on one event loop, as under uvicorn; nothing here asserts on elapsed time (a slow part is
a stub that waits on an event, with a timeout only so that a regression fails instead of
hanging)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette

from alerting.engine import IncidentEngine
from alerting.model import IncidentEvent, Labels, key_id
from detectors.base import SignalKind
from streams.cli.main import main
from streams.console.actions import ActionError, ConsoleActions
from streams.console.app import create_app
from streams.console.auth import COOKIE, Authenticator, Session, hash_password
from streams.console.state import ConsoleState, Sources
from streams.console.views import model_views
from streams.console.web import Console
from streams.contract.scope import ScopeError, segment_of
from streams.investigation.incidents import duration_text
from streams.pipeline.detectorset import DetectorSet
from streams.pipeline.state import stamp
from streams.settings import load_settings
from tests.unit.alerting.helpers import T0, detection, minutes, playbooks, policy, signal
from tests.unit.console.test_console_parts import _actions, _lifecycle

OPS = ("ops", "s3cret")
GUARD_S = 10.0
"""How long a stub waits for a test to release it: only so that a regression fails (the
order of events is wrong) rather than hangs; no assertion depends on it."""


def _trigger(
    kind: SignalKind = SignalKind.TOXICITY_RATE, feature: str | None = "hate"
) -> IncidentEvent:
    [t] = IncidentEngine(policy(), playbooks()).observe(
        detection(sig=signal(kind, feature=feature))
    )
    return t


class _Sent:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def __call__(self, topic: str, key: bytes, value: bytes) -> None:
        self.records.append((topic, key, value))


@dataclass
class _Built:
    app: Starlette
    console: Console
    state: ConsoleState
    sent: _Sent


def _build(
    events: Sequence[IncidentEvent] = (),
    *,
    now: Callable[[], datetime] | None = None,
    auth: type[Authenticator] = Authenticator,
    extra: dict[str, object] | None = None,
) -> _Built:
    users = [
        {
            "name": OPS[0],
            "role": "operator",
            "password_hash": hash_password(OPS[1], iterations=1000),
        }
    ]
    settings = load_settings(env={}, overrides={"console.users": users, **(extra or {})})
    state = ConsoleState(Sources.of(settings))
    for e in events:
        state.apply(state.sources.alerts, e.key(), e.to_json_bytes())
    state.index.refresh()
    clock = now or (lambda: T0 + minutes(1))
    sent = _Sent()
    console = Console(
        settings=settings,
        state=state,
        actions=ConsoleActions(state, sent, playbooks(), clock),
        auth=auth(settings.console, secret=b"k" * 32),
        playbooks=playbooks(),
        evidence=lambda evs: {"error": "no kafka here"},
        postmortem=lambda evs: "postmortem",
        now=clock,
    )
    return _Built(create_app(console), console, state, sent)


@dataclass
class _Resp:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


async def _acall(
    app: Starlette,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    query: str = "",
) -> _Resp:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8080),
    }
    out = _Resp(0)
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out.status = msg["status"]
            out.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in msg["headers"]]
        elif msg["type"] == "http.response.body":
            out.body += msg.get("body", b"")

    await app(scope, receive, send)
    return out


def _call(app: Starlette, method: str, path: str, **kw: Any) -> _Resp:
    return asyncio.run(_acall(app, method, path, **kw))


def _form(form: dict[str, str]) -> dict[str, Any]:
    return {
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "body": urlencode(form).encode(),
    }


def _login(app: Starlette) -> str:
    r = _call(app, "POST", "/login", **_form({"user": OPS[0], "password": OPS[1], "next": "/"}))
    [cookie] = [v for v in r.header("set-cookie") if v.startswith(COOKIE)]
    return cookie.split(";")[0]


def _csrf(app: Starlette, cookie: str) -> str:
    page = _call(app, "GET", "/silences", headers={"cookie": cookie}).text
    match = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
    assert match is not None
    return match.group(1)


def _post(app: Starlette, path: str, cookie: str, form: dict[str, str]) -> _Resp:
    kw = _form({**form, "csrf": _csrf(app, cookie)})
    kw["headers"]["cookie"] = cookie
    return _call(app, "POST", path, **kw)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- 1: nothing is published before every record of the action is valid --------------------


def test_a_refused_audit_record_publishes_neither_the_silence_nor_the_containment() -> None:
    """The operator action refuses a reason over 2000 characters: the silence and the
    containment snapshot were published before it was built (a 400 after publishing;
    a retry published twice)."""
    t, _ = _lifecycle()
    actions, _, sent = _actions([t])
    too_long = "known issue " + "x" * 2000
    with pytest.raises(ActionError, match="at most 2000"):
        actions.silence_incident(t.incident_id, by="ops", reason=too_long, duration="2h")
    with pytest.raises(ActionError, match="at most 2000"):
        actions.contain(t.incident_id, by="ops", reason=too_long)
    with pytest.raises(ActionError, match="at most 2000"):
        actions.acknowledge(t.incident_id, by="ops", reason=too_long)
    assert sent.records == []
    actions.contain(t.incident_id, by="ops", reason="x" * 2000)  # the limit itself is fine
    assert len(sent.records) == 2


def test_the_reason_fields_say_their_limit() -> None:
    t = _trigger(SignalKind.CONFIDENCE_SHIFT, None)  # re-learnable: all five forms
    built = _build([t])
    page = _call(
        built.app, "GET", f"/incidents/{t.incident_id}", headers={"cookie": _login(built.app)}
    ).text
    inputs = re.findall(r'<input name="reason"[^>]*>', page)
    assert len(inputs) == 5
    assert all('maxlength="2000"' in i for i in inputs)


def test_the_duration_field_takes_what_the_server_takes() -> None:
    t = _trigger()
    built = _build([t])
    page = _call(
        built.app, "GET", f"/incidents/{t.incident_id}", headers={"cookie": _login(built.app)}
    ).text
    match = re.search(r'name="duration" required value="2h" size="5" pattern="([^"]+)"', page)
    assert match is not None
    for text, ok in (("2h", True), ("1.5h", True), ("1d12h", True), ("2 h", False), ("h", False)):
        assert bool(re.fullmatch(match.group(1), text)) == ok, text


# -- 2: the Basic password hash runs off the event loop ------------------------------------


def test_a_basic_login_being_checked_does_not_hold_up_other_requests() -> None:
    """``/healthz`` is answered while a Basic header's password check is still running:
    the check ran on the event loop, so every request waited for each hash."""
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    class SlowAuth(Authenticator):
        def login(self, name: str, password: str) -> Session | None:
            entered.set()
            release.wait(GUARD_S)
            order.append("basic checked")
            return super().login(name, password)

    built = _build(auth=SlowAuth)

    async def run() -> tuple[int, int]:
        basic = asyncio.create_task(
            _acall(built.app, "GET", "/incidents", headers={"authorization": _basic("nobody", "x")})
        )
        assert await asyncio.to_thread(entered.wait, GUARD_S)
        health = await _acall(built.app, "GET", "/healthz")
        order.append("healthz answered")
        release.set()
        return health.status, (await basic).status

    assert asyncio.run(run()) == (200, 401)
    assert order == ["healthz answered", "basic checked"]


# -- 3: odd bytes in a token are a refusal, not a 500 --------------------------------------


def test_non_ascii_tokens_are_refused_not_errors() -> None:
    auth = Authenticator(_build().console.settings.console, secret=b"k" * 32)
    session = auth.login(*OPS)
    assert session is not None
    assert auth.basic("Basic \xe9\xe9") is None
    assert auth.basic("Basic " + base64.b64encode("ops:é".encode()).decode()) is None
    assert auth.from_cookie("ops|1|n|\xe9", now_s=0) is None
    assert not auth.check_csrf(session, "é")
    assert not auth.check_csrf(session, "\ud800")
    built = _build([_trigger()])
    app, cookie = built.app, _login(built.app)
    assert (
        _call(app, "GET", "/incidents", headers={"authorization": "Basic \xe9\xe9"}).status == 401
    )
    r = _call(app, "GET", "/incidents", headers={"cookie": f"{COOKIE}=ops|1|n|\xe9"})
    assert (r.status, r.header("location")) == (303, ["/login?next=/incidents"])
    kw = _form({"csrf": "é", "model": "m"})
    kw["headers"]["cookie"] = cookie
    assert _call(app, "POST", "/silences", **kw).status == 403


# -- 4: one incident's evidence read holds up no other incident ----------------------------


def test_evidence_in_the_cache_or_of_another_incident_does_not_wait_for_a_slow_read() -> None:
    """While incident A's evidence is read (a Kafka read: seconds), B's cached evidence
    and C's (not cached, quick) are served: one lock covered every computation."""
    a, b, c = (
        _trigger().model_copy(
            update={"incident_id": f"inc-{n}", "event_id": f"ev-{n}", "dedup_key": n}
        )
        for n in "abc"
    )
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def evidence(events: list[IncidentEvent]) -> dict[str, Any]:
        which = events[-1].incident_id
        if which == a.incident_id:
            entered.set()
            release.wait(GUARD_S)
        order.append(which)
        return {"error": f"stub {which}"}

    built = _build([a, b, c])
    built.console.evidence = evidence
    cookie = _login(built.app)

    async def get(incident: IncidentEvent) -> _Resp:
        path = f"/incidents/{incident.incident_id}/evidence"
        return await _acall(built.app, "GET", path, headers={"cookie": cookie})

    async def run() -> list[int]:
        first_b = await get(b)  # now cached
        slow = asyncio.create_task(get(a))
        assert await asyncio.to_thread(entered.wait, GUARD_S)
        cached_b, fresh_c = await get(b), await get(c)
        order.append("b and c answered")
        release.set()
        return [first_b.status, cached_b.status, fresh_c.status, (await slow).status]

    assert asyncio.run(run()) == [200, 200, 200, 200]
    assert order == ["inc-b", "inc-c", "b and c answered", "inc-a"]


# -- 5: a silence on a label the detection does not cut by ---------------------------------


def test_a_segment_label_the_detection_does_not_cut_by_is_refused() -> None:
    known = ("tenant", "locale")
    assert segment_of([("tenant", "acme")], known) == {"tenant": "acme"}
    with pytest.raises(ScopeError, match=r"'tennant'.*detection\.segment_labels: tenant, locale"):
        segment_of([("tennant", "acme")], known)
    assert segment_of([("tennant", "acme")]) == {"tennant": "acme"}  # no settings: shape only


def test_the_silence_form_refuses_a_label_the_detection_does_not_cut_by() -> None:
    built = _build()
    cookie = _login(built.app)
    labels = ", ".join(built.console.settings.detection.segment_labels)
    form = {"model": "support-bot", "duration": "2h", "comment": "acme maintenance"}
    r = _post(built.app, "/silences", cookie, {**form, "segment": "tennant=acme"})
    assert r.status == 400
    assert "segment label &#39;tennant&#39; is not one the detection cuts by" in r.text
    assert f"detection.segment_labels: {labels}" in r.text
    assert built.sent.records == []
    assert _post(built.app, "/silences", cookie, {**form, "segment": "tenant=acme"}).status == 303
    assert len(built.sent.records) == 1


def test_silence_add_in_the_cli_refuses_it_too_before_asking_the_broker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["silence", "add", "--model", "m", "--duration", "2h", "--comment", "x"]
    assert main([*argv, "--segment", "tennant=acme"]) == 2
    err = capsys.readouterr().err
    assert "segment label 'tennant' is not one the detection cuts by" in err
    labels = ", ".join(load_settings(None).detection.segment_labels)
    assert f"detection.segment_labels: {labels}" in err


# -- 6, 7: the Models page -----------------------------------------------------------------


def _detectors(big: int) -> dict[str, dict[str, Any]]:
    settings = load_settings(env={}).detection
    seg = stamp("detectors", DetectorSet(settings, "segment", 1e6).to_json())
    top = stamp("detectors", DetectorSet(settings, "model", 1e6).to_json())
    out = {key_id(Labels(model="aaa-search")): top, key_id(Labels(model="support-bot")): top}
    for i in range(big):
        out[key_id(Labels(model="aaa-search", segment={"tenant": f"t{i:03d}"}))] = seg
    return out


def test_every_model_keeps_its_section_and_says_how_many_keys_are_not_shown() -> None:
    """500 keys across all models, alphabetically: a model sorting after a big one had no
    section at all, and nothing said so."""
    detection_settings = load_settings(env={}).detection
    views = model_views(_detectors(5), {}, detection_settings, max_keys=3)
    assert [(v.model, len(v.rows), v.hidden) for v in views] == [
        ("aaa-search", 3, 3),
        ("support-bot", 1, 0),
    ]
    assert views[0].rows[0].level == "model"  # the model's own key comes first
    t = _trigger()
    built = _build([t])
    with built.state.lock:
        built.state.detectors.update(_detectors(520))
    page = _call(built.app, "GET", "/models", headers={"cookie": _login(built.app)}).text
    assert re.findall(r"<h2>(\S+) <span", page) == ["aaa-search", t.labels.model]
    assert "21 more keys of aaa-search not shown" in page


@pytest.mark.parametrize(
    "record",
    [
        {"deploys": None},
        stamp("engine", {"deploys": None}),
        stamp("engine", {"deploys": 5, "current_versions": []}),
        stamp("engine", {"deploys": [1, {"version": "v2"}], "current_versions": {"m": 3}}),
    ],
)
def test_an_odd_engine_record_does_not_break_the_models_page(record: dict[str, Any]) -> None:
    built = _build()
    with built.state.lock:
        built.state.apply(built.state.sources.engines, b"m", json.dumps(record).encode())
    assert _call(built.app, "GET", "/models", headers={"cookie": _login(built.app)}).status == 200
    views = model_views({}, {"m": record}, built.console.settings.detection)
    assert all(v.current_version is None for v in views)


def test_a_detector_record_nested_too_deep_is_counted_not_raised() -> None:
    """A ``RecursionError`` out of :meth:`ConsoleState.apply` ended the follower thread."""
    built = _build()
    with built.state.lock:
        built.state.apply(built.state.sources.detectors, b"m|*|", b"[" * 100_000 + b"]" * 100_000)
    assert built.state.invalid[built.state.sources.detectors] == 1


# -- 8, 9: what the incident pages say -----------------------------------------------------


def test_an_open_incidents_duration_runs_to_now_as_in_the_cli() -> None:
    t = _trigger()
    now = T0 + minutes(95)
    built = _build([t], now=lambda: now)
    page = _call(
        built.app, "GET", f"/incidents/{t.incident_id}", headers={"cookie": _login(built.app)}
    ).text
    assert duration_text(t, now) == "105.0+"
    assert "(105.0+ min)" in page


def test_the_row_count_counts_incidents_not_the_more_row() -> None:
    t = _trigger()
    many = [
        t.model_copy(
            update={"incident_id": f"inc-{i:04d}", "event_id": f"ev-{i}", "dedup_key": f"k{i}"}
        )
        for i in range(520)
    ]
    built = _build(many)
    page = _call(
        built.app, "GET", "/incidents", headers={"cookie": _login(built.app)}, query="status=all"
    ).text
    assert "500 shown of 520 incidents" in page
    assert "20 more: narrow the filter" in page


# -- 10: cookies, other Authorization schemes, the status line -----------------------------


@pytest.mark.parametrize(
    ("url", "secure"), [("https://sentinel.example", True), ("http://x", False), ("", False)]
)
def test_the_cookie_is_secure_when_operators_reach_the_console_over_https(
    url: str, secure: bool
) -> None:
    """TLS may end at a proxy in front: the browser still talks https to it."""
    app = _build(extra={"console.public_url": url}).app
    r = _call(app, "POST", "/login", **_form({"user": OPS[0], "password": OPS[1]}))
    [cookie] = r.header("set-cookie")
    assert ("; secure" in cookie.lower()) == secure


def test_only_a_basic_header_takes_the_place_of_the_session_cookie() -> None:
    built = _build([_trigger()])
    cookie = _login(built.app)
    bearer = {"authorization": "Bearer proxy-token"}
    assert _call(built.app, "GET", "/incidents", headers={"cookie": cookie, **bearer}).status == 200
    assert _call(built.app, "GET", "/incidents", headers=bearer).status == 303  # to the login
    good = {"authorization": _basic(*OPS)}
    assert _call(built.app, "GET", "/incidents", headers=good).status == 200
    bad = {"cookie": cookie, "authorization": _basic("ops", "wrong")}
    assert _call(built.app, "GET", "/incidents", headers=bad).status == 401


def _status_line(page: str) -> str | None:
    match = re.search(r'<div class="done" role="status">(.*?)</div>', page)
    return match.group(1) if match else None


def test_the_status_line_shows_only_what_the_server_said() -> None:
    """``?done=<any text>`` was shown as an official status line (content spoofing): each
    redirect after a write now signs its message for its page."""
    t = _trigger()
    built = _build([t])
    app, cookie = built.app, _login(built.app)
    spoof = urlencode({"done": "Session expired: sign in again at https://evil.example"})
    assert (
        _status_line(_call(app, "GET", "/incidents", headers={"cookie": cookie}, query=spoof).text)
        is None
    )
    r = _post(app, f"/incidents/{t.incident_id}/acknowledge", cookie, {"reason": "on it"})
    [location] = r.header("location")
    path, _, query = location.partition("?")
    assert path == f"/incidents/{t.incident_id}"
    assert (
        _status_line(_call(app, "GET", path, headers={"cookie": cookie}, query=query).text)
        == "acknowledged"
    )
    # The same signature on another page, or another message, shows nothing.
    assert (
        _status_line(_call(app, "GET", "/silences", headers={"cookie": cookie}, query=query).text)
        is None
    )
    forged = query.replace("acknowledged", "resolved")
    assert (
        _status_line(_call(app, "GET", path, headers={"cookie": cookie}, query=forged).text) is None
    )
    r = _post(app, "/silences", cookie, {"model": "m", "duration": "2h", "comment": "maintenance"})
    path, _, query = r.header("location")[0].partition("?")
    shown = _status_line(_call(app, "GET", path, headers={"cookie": cookie}, query=query).text)
    assert shown is not None
    assert shown.startswith("sil-")
