"""The worker and delivery sections of ``sentinel status`` (issue 18 item 5).

- Worker health: the worker's own ``/readyz`` (:mod:`streams.runtime.observability`) over
  HTTP, at ``--worker-url`` (default ``http://<worker.web_host>:<worker.web_port>``).
- Detection: what the worker's detection needed of it for its traffic over the last
  interval, from its ``/metrics`` (:mod:`streams.pipeline.load`): whether one worker keeps
  up, and the models that needed most.
- Worker lag: the worker group's committed offsets against the log-end offsets of the
  event topics and of its internal topics (events read but not yet joined or detected:
  "lag 0" on the event topics alone is not "caught up"), from the broker
  (:mod:`streams.kafka.lag`), so it shows while the worker is down too.
- Delivery: each open incident's state per sink from the delivery-state topic that
  ``sentinel notify`` publishes (:mod:`alerting.delivery_state`), and closed incidents
  whose last delivery failed or is still retrying.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.request
from collections.abc import Sequence

from alerting.delivery_state import (
    DeliveryMap,
    delivery_topic,
    fold_delivery_states,
    problems,
    render_delivery,
)
from alerting.model import IncidentEvent
from alerting.redact import escape_control
from streams.kafka.clients import ClientSecurity
from streams.kafka.lag import group_lag, render_lag
from streams.kafka.topics import read_topic_to_end
from streams.pipeline.load import SHOWN_MODELS, WARN_NEED
from streams.settings import Settings

HEALTH_TIMEOUT_S = 3.0


def default_worker_url(settings: Settings) -> str | None:
    """The worker's web endpoint from the settings (None when its web server is off)."""
    w = settings.worker
    return f"http://{w.web_host}:{w.web_port}" if w.web_enabled else None


def worker_health(url: str | None, timeout_s: float = HEALTH_TIMEOUT_S) -> str:
    """One line: ``ready``, ``not ready (<checks>)`` or ``unreachable (<why>)``."""
    if url is None:
        return "unknown (worker.web_enabled is false: no /readyz to ask)"
    target = url.rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"unreachable at {target} ({escape_control(str(reason))})"
    try:
        checks = json.loads(body)  # {"ready": bool, <check>: value, ...}
    except ValueError:
        checks = {}
    if not isinstance(checks, dict):
        checks = {}
    detail = ", ".join(f"{k}={v}" for k, v in sorted(checks.items()) if k != "ready")
    state = "ready" if status == 200 else f"not ready (HTTP {status})"
    return f"{state} at {target}" + (f": {escape_control(detail)}" if detail else "")


_NEED = re.compile(r'^sentinel_detect_need_ratio\{model="((?:[^"\\]|\\.)*)"\} (\S+)$')
_WINDOW = re.compile(r"^sentinel_detect_need_window_seconds (\S+)$")


def detection_need(metrics: str) -> str:
    """One line from the worker's ``/metrics`` text: what its detection needed of it for
    its traffic over its last interval (``sentinel_detect_need_ratio`` over
    ``sentinel_detect_need_window_seconds``, see :mod:`streams.pipeline.load`), in all and
    for the models that needed most."""
    lines = metrics.splitlines()
    window = next((float(m.group(1)) for x in lines if (m := _WINDOW.match(x))), None)
    if window is None:
        return (
            "not measured yet (the first reading comes worker.load_watch_seconds after the "
            "worker starts)"
        )
    needs = sorted(
        ((float(m.group(2)), m.group(1)) for x in lines if (m := _NEED.match(x))), reverse=True
    )
    total = sum(n for n, _ in needs)
    if not math.isfinite(total):
        return f"unreadable ({total} from sentinel_detect_need_ratio)"
    shown = round(total, 2)  # the verdict agrees with the percentage printed
    verdict = (
        "cannot keep up: sample the busiest (detection.sample_fractions) or add workers"
        if shown >= 1.0
        else f"at or near capacity (warns from {WARN_NEED:.0%})"
        if shown >= WARN_NEED
        else "keeps up"
    )
    top = ", ".join(f"{escape_control(model)} {n:.0%}" for n, model in needs[:SHOWN_MODELS])
    return (
        f"needed {total:.0%} of the worker for its traffic over the last {window:,.0f} s: "
        f"{verdict}" + (f" ({top})" if top else "")
    )


def worker_metrics(url: str | None, timeout_s: float = HEALTH_TIMEOUT_S) -> str | None:
    """The worker's ``/metrics`` text; None when there is no web server or it does not
    answer (the health line says why)."""
    if url is None:
        return None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout_s) as resp:
            return str(resp.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError):
        return None


def worker_section(
    settings: Settings, bootstrap: Sequence[str], security: ClientSecurity, url: str | None
) -> str:
    internal = settings.worker.internal_topics.values()
    topics = [*settings.topics.by_kind().values(), *internal]
    lags = group_lag(bootstrap, security, settings.worker.app_id, topics)
    health = worker_health(url)
    lines = [f"health: {health}"]
    metrics = None if health.startswith(("unreachable", "unknown")) else worker_metrics(url)
    if metrics is not None:
        lines.append(f"detection: {detection_need(metrics)}")
    lines.append(render_lag(settings.worker.app_id, lags, internal))
    return "\n".join(lines)


def read_delivery(
    settings: Settings, bootstrap: Sequence[str], security: ClientSecurity
) -> tuple[DeliveryMap, int, int]:
    """Folded delivery states, records read and undecodable records skipped."""
    records = read_topic_to_end(
        list(bootstrap), delivery_topic(settings.topics.alerts), security=security
    )
    states, bad = fold_delivery_states(r.value for r in records)
    return states, len(records), bad


def delivery_section(open_: list[IncidentEvent], states: DeliveryMap) -> str:
    text = render_delivery(open_, states)
    closed = problems(states, (e.incident_id for e in open_))
    if closed:
        text += "\nclosed incidents whose last delivery did not succeed:"
        text += "".join(f"\n{s.incident_id}  {s.label}: {s.describe()}" for s in closed)
    return text
