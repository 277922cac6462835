"""``sentinel notify|contain|status|silence|relearn``: the alerting consumers on the real
broker, and the runtime controls of the workers.

notify --sink webhook|pagerduty|alertmanager|slack
    Deliver every incident event on the alerts topic to one sink
    (:func:`streams.runtime.notify_consumer.run_notify_consumer`); permanent failures go to the
    dead-letter topic. Sink settings come from the notify file (``--config-file``, default
    ``$SENTINEL_NOTIFY_CONFIG`` or ``config/notify.toml``) and ``--url``; secrets from the
    environment (``SENTINEL_NOTIFY_WEBHOOK_SECRET``, ``SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY``,
    ``SENTINEL_NOTIFY_SLACK_WEBHOOK_URL``; they win over the file) and are never printed.
contain [--dry-run]
    Apply playbook containment for every alert and publish the per-model state to the
    compacted control topic. A dry run publishes nothing, commits no offsets, and ends
    once it has read the alerts topic up to where it ended at the start (the current plan).
status [--worker-url URL]
    Containment per model (control topic), open incidents (alerts topic), each open
    incident's delivery state per sink (``<alerts>.delivery``, published by ``notify``),
    silences, and the worker's health (its ``/readyz``) and lag (its group's committed
    offsets against the event topics' ends).
silence add|list|expire
    Runtime silences on the compacted topic ``<topics.control>.silences``
    (:func:`alerting.silences.silences_topic`), keyed by silence id.
relearn add|list
    Baseline re-learns on the compacted topic ``<topics.control>.relearn``
    (:mod:`alerting.relearn`): ``add --incident ID`` re-learns the incident's detector in
    its scope; ``add --model M [--version V] [--segment K=V] [--signal KIND]`` a scope's.

``notify`` and ``contain`` run until SIGINT/SIGTERM, ``--max-seconds`` or ``--until-idle``,
then print a summary. Bad input exits 2; a broker error exits 1; ``notify`` exits 3 when it
dead-lettered events.

Every Kafka client these commands build logs in with the ``kafka.security`` settings
(:func:`streams.kafka.security.kafka_python_kwargs`), as the worker's do; a refused login
(wrong password, untrusted certificate) exits 1 at once, saying why
(:func:`streams.kafka.security.check_login`), instead of after the clients' retries.
"""

from __future__ import annotations

import argparse
import getpass
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from alerting.clock import SystemClock, parse_duration
from alerting.containment import fold_control
from alerting.delivery_state import delivery_topic
from alerting.model import IncidentEvent, Labels, time_text
from alerting.playbooks import load_playbooks
from alerting.policy import ConfigError
from alerting.relearn import (
    RelearnRecord,
    fold_relearn_records,
    new_relearn,
    relearn_topic,
    relearnable,
)
from alerting.silences import SilenceRecord, fold_silence_records, new_silence, silences_topic
from alerting.sink_config import make_sink
from alerting.sinks import Sink
from alerting.status import fold_open_incidents, render_incidents
from alerting.transport import UrllibTransport
from detectors.base import SignalKind
from streams.cli.common import (
    Stopper,
    StopRequestedError,
    add_common,
    add_stop_options,
    client_security,
    connect,
    counts,
    ensure_service_topics,
    name_arg,
    say,
    scope_arg,
    settings_of,
    setup_logging,
)
from streams.cli.notify_config import SECRET_ENV, SINKS, load_notify_file, sink_config
from streams.cli.status import default_worker_url, delivery_section, read_delivery, worker_section
from streams.contract.scope import check_incident_type, check_segment_pair, segment_of
from streams.investigation.incidents import format_table, read_incident_log
from streams.investigation.kafka_read import KafkaHistory
from streams.kafka.clients import SEND_TIMEOUT_S
from streams.kafka.topics import TopicRecord, ensure_compacted_topic, read_topic_to_end
from streams.runtime.consumers import LoopStats, run_containment_consumer
from streams.runtime.notify_consumer import run_notify_consumer
from streams.settings import Settings

EXIT_DEAD_LETTERS = 3
"""``sentinel notify`` ran to its end but dead-lettered events (bad input is 2, a broker
error 1): scripts and supervisors see that deliveries failed."""

# ---- notify ----------------------------------------------------------------------------


def cmd_notify(args: argparse.Namespace) -> int:
    """``sentinel notify --sink NAME``."""
    setup_logging(args.log_level)
    settings = settings_of(args)
    environ = dict(os.environ)
    cfg, source = load_notify_file(args.config_file, environ)
    sink: Sink = make_sink(
        sink_config(
            args.sink,
            cfg,
            url=args.url,
            environ=environ,
            source=source,
            console_url=settings.console.public_url or None,
        )
    )
    settings, bootstrap = connect(settings)
    group = args.group_id or f"{settings.worker.app_id}-notify-{args.sink}"
    say(
        f"notify {args.sink}: {settings.topics.alerts} -> {args.sink} sink "
        f"(group {group}; dead letters to {settings.topics.dead_letter})"
    )
    ensure_service_topics(settings, bootstrap)
    stopper = Stopper(max_seconds=args.max_seconds, until_idle=args.until_idle)
    stats = LoopStats()
    with stopper.signals():
        try:
            run_notify_consumer(
                ",".join(bootstrap),
                settings.topics.alerts,
                sink,
                dead_letter_topic=settings.topics.dead_letter,
                should_stop=stopper.should_stop,
                group_id=group,
                transport=UrllibTransport(cfg.http.timeout_s, use_env_proxy=cfg.http.use_env_proxy),
                retry=cfg.retry,
                clock=SystemClock(),
                sleep=stopper.sleep,
                stats=stats,
                on_poll=stopper.on_poll,
                security=client_security(settings),
                state_topic=delivery_topic(settings.topics.alerts),
            )
        except StopRequestedError:
            say(
                "stopped during a retry back-off: that event was not committed and is "
                "delivered again on the next run"
            )
    print(
        f"notify {args.sink}: {stats.processed} record(s) in {stopper.elapsed():.1f} s; "
        f"stopped: {stopper.reason or 'loop ended'}"
    )
    print(
        "  "
        + counts(
            stats,
            ("delivered", "duplicate", "stale", "dead_lettered", "skipped_replay", "undecodable"),
        )
    )
    dead = stats.outcomes.get("dead_lettered", 0) + stats.outcomes.get("undecodable", 0)
    if dead:
        say(
            f"{dead} event(s) went to the dead-letter topic {settings.topics.dead_letter} "
            f"(see their reasons there); exit status {EXIT_DEAD_LETTERS}"
        )
        return EXIT_DEAD_LETTERS
    return 0


# ---- contain ---------------------------------------------------------------------------


def cmd_contain(args: argparse.Namespace) -> int:
    """``sentinel contain [--dry-run]``."""
    setup_logging(args.log_level)
    settings = settings_of(args)
    playbooks = load_playbooks(settings.detection.playbooks_dir)
    settings, bootstrap = connect(settings)
    if not args.dry_run:
        ensure_service_topics(settings, bootstrap)
    group = args.group_id or f"{settings.worker.app_id}-containment"
    stopper = Stopper(max_seconds=args.max_seconds, until_idle=args.until_idle)
    stats = LoopStats()
    mode = "DRY RUN (publishes nothing, commits nothing)" if args.dry_run else f"group {group}"
    say(
        f"contain: {settings.topics.alerts} -> {settings.topics.control} with "
        f"{len(playbooks)} playbooks; {mode}"
    )
    ended = "end of the alerts topic (the current plan)" if args.dry_run else "loop ended"
    with stopper.signals():
        state = run_containment_consumer(
            ",".join(bootstrap),
            settings.topics.alerts,
            settings.topics.control,
            playbooks,
            dry_run=args.dry_run,
            should_stop=stopper.should_stop,
            dead_letter_topic=None if args.dry_run else settings.topics.dead_letter,
            group_id=group,
            clock=SystemClock(),
            stats=stats,
            on_poll=stopper.on_poll,
            security=client_security(settings),
        )
    print(
        f"contain{' --dry-run' if args.dry_run else ''}: {stats.processed} record(s) in "
        f"{stopper.elapsed():.1f} s; stopped: {stopper.reason or ended}"
    )
    print("  " + counts(stats, ("published", "would_publish", "no_action", "undecodable")))
    print(state.render())
    return 0


# ---- status ----------------------------------------------------------------------------


def _decode_events(records: list[TopicRecord]) -> tuple[list[IncidentEvent], int]:
    events: list[IncidentEvent] = []
    bad = 0
    for r in records:
        try:
            if r.value is None:
                raise ValueError("empty value")
            events.append(IncidentEvent.model_validate_json(r.value))
        except (ValidationError, ValueError):
            bad += 1
    return events, bad


def _read_silences(bootstrap: list[str], settings: Settings) -> dict[str, SilenceRecord]:
    records = read_topic_to_end(
        bootstrap, silences_topic(settings.topics.control), security=client_security(settings)
    )
    return fold_silence_records((r.key, r.value) for r in records)


def cmd_status(args: argparse.Namespace) -> int:
    """``sentinel status``."""
    setup_logging(args.log_level, kafka_warnings=False)
    settings, bootstrap = connect(settings_of(args))
    now = datetime.now(UTC)
    security = client_security(settings)
    control = read_topic_to_end(bootstrap, settings.topics.control, security=security)
    state, bad_control = fold_control(r.value for r in control)
    print(f"Containment ({settings.topics.control}, {len(control)} record(s)):")
    print(_indent(state.render()))
    if bad_control:
        print(f"  ({bad_control} invalid control record(s) skipped)")
    alerts = read_topic_to_end(bootstrap, settings.topics.alerts, security=security)
    events, bad_alerts = _decode_events(alerts)
    open_ = fold_open_incidents(events)
    print(f"\nOpen incidents ({settings.topics.alerts}, {len(alerts)} record(s)): {len(open_)}")
    print(_indent(render_incidents(open_)))
    if bad_alerts:
        print(f"  ({bad_alerts} undecodable alert record(s) skipped)")
    states, n_states, bad_states = read_delivery(settings, bootstrap, security)
    topic = delivery_topic(settings.topics.alerts)
    print(f"\nDelivery per sink ({topic}, {n_states} record(s)):")
    print(_indent(delivery_section(open_, states)))
    if bad_states:
        print(f"  ({bad_states} undecodable delivery record(s) skipped)")
    silences = [r for r in _read_silences(bootstrap, settings).values() if r.is_active(now)]
    print(f"\nSilences ({silences_topic(settings.topics.control)}): {len(silences)} in force")
    print(_indent(render_silences(silences, now)))
    url = args.worker_url or default_worker_url(settings)
    print("\nWorker:")
    print(_indent(worker_section(settings, bootstrap, security, url)))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# ---- silence ---------------------------------------------------------------------------


_segment = scope_arg(check_segment_pair)
_incident_type = scope_arg(check_incident_type)


def duration_arg(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def aware_arg(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a timezone (e.g. ...Z): {text!r}")
    return value.astimezone(UTC)


def render_silences(records: list[SilenceRecord], now: datetime) -> str:
    if not records:
        return "no silences"
    rows: list[tuple[str, ...]] = []
    for r in sorted(records, key=lambda r: (r.silence.starts_at, r.id)):
        s = r.silence
        scope = [f"model={s.model}"]
        if s.version is not None:
            scope.append(f"version={s.version}")
        scope += [f"{k}={v}" for k, v in sorted(s.segment.items())]
        if s.incident_type is not None:
            scope.append(f"type={s.incident_type}")
        rows.append(
            (
                r.id,
                r.state(now),
                " ".join(scope),
                time_text(s.starts_at),
                time_text(r.ends_at()),
                s.created_by,
                s.comment,
            )
        )
    return format_table(("ID", "STATE", "MATCHES", "STARTS", "ENDS", "BY", "COMMENT"), rows)


def _publish(
    settings: Settings, bootstrap: list[str], topic: str, key: bytes, value: bytes
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_security(settings))
    try:
        producer.send(topic, key=key, value=value).get(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close(timeout=SEND_TIMEOUT_S)


def _publish_control(
    settings: Settings, bootstrap: list[str], topic: str, key: bytes, value: bytes
) -> None:
    """Publish a record to a compacted control topic, created first when missing."""
    if ensure_compacted_topic(
        bootstrap,
        topic,
        replication_factor=settings.kafka.replication_factor,
        security=client_security(settings),
    ):
        say(f"created compacted topic {topic}")
    _publish(settings, bootstrap, topic, key, value)


def _created_by() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def cmd_silence(args: argparse.Namespace) -> int:
    """``sentinel silence add|list|expire``."""
    setup_logging(args.log_level, kafka_warnings=False)
    settings = settings_of(args)
    segment: dict[str, str] = {}
    if args.silence_action == "add":  # checked before the broker is asked anything
        if not args.comment.strip():
            raise ConfigError("--comment must say why (it is shown to whoever gets paged next)")
        segment = segment_of(args.segment or [], settings.detection.segment_labels)
    settings, bootstrap = connect(settings)
    topic = silences_topic(settings.topics.control)
    now = datetime.now(UTC)
    if args.silence_action == "add":
        rec = new_silence(
            model=args.model,
            version=args.version,
            segment=segment,
            incident_type=args.type,
            duration=args.duration,
            now=now,
            starts_at=args.starts_at,
            comment=args.comment.strip(),
            created_by=args.created_by or _created_by(),
        )
        _publish_control(settings, bootstrap, topic, rec.key(), rec.to_json_bytes())
        print(rec.id)
        print(render_silences([rec], now))
        return 0
    records = _read_silences(bootstrap, settings)
    if args.silence_action == "list":
        shown = [r for r in records.values() if args.all or r.is_active(now)]
        print(render_silences(shown, now))
        return 0
    current = records.get(args.id)
    if current is None:
        raise ConfigError(f"no silence with id {args.id!r} on {topic}")
    if not current.is_active(now):
        print(f"{args.id} already {current.state(now)} at {time_text(current.ends_at())}")
        return 0
    expired = current.expire(now)
    _publish(settings, bootstrap, topic, expired.key(), expired.to_json_bytes())
    print(f"{args.id} expired at {time_text(now)}")
    return 0


# ---- relearn ---------------------------------------------------------------------------

RELEARNABLE: Final = tuple(k.value for k in SignalKind if relearnable(k))


def _read_relearns(bootstrap: list[str], settings: Settings) -> dict[str, RelearnRecord]:
    records = read_topic_to_end(
        bootstrap, relearn_topic(settings.topics.control), security=client_security(settings)
    )
    return fold_relearn_records((r.key, r.value) for r in records)


def render_relearns(records: list[RelearnRecord]) -> str:
    if not records:
        return "no re-learns"
    rows: list[tuple[str, ...]] = []
    for r in sorted(records, key=RelearnRecord.mark):
        rows.append(
            (
                r.id,
                time_text(r.requested_at),
                r.requested_by,
                r.describe(),
                r.incident_id or "-",
                r.reason,
            )
        )
    return format_table(("ID", "REQUESTED", "BY", "RE-LEARNS", "INCIDENT", "REASON"), rows)


def _incident_scope(settings: Settings, incident_id: str) -> tuple[Labels, SignalKind] | None:
    """The scope and signal kind of an incident's latest event on the alerts topic (None:
    no event of it there)."""
    with KafkaHistory(settings) as history:
        log = read_incident_log(history, settings.topics.alerts)
    try:
        latest = log.history(incident_id)[-1]
    except LookupError:
        return None
    return latest.labels, latest.evidence.signal.kind


def _narrowed(args: argparse.Namespace) -> bool:
    """Whether ``relearn add`` was given a scope of its own (``--model``, ``--version``,
    ``--segment``), which an ``--incident`` (it names its scope) cannot take beside it."""
    return args.model is not None or args.version is not None or bool(args.segment)


def cmd_relearn(args: argparse.Namespace) -> int:
    """``sentinel relearn add|list``."""
    setup_logging(args.log_level, kafka_warnings=False)
    if args.relearn_action == "add" and args.incident is not None and _narrowed(args):
        raise ConfigError(
            "give --incident (it names its scope) or --model with --version and --segment, not both"
        )
    settings, bootstrap = connect(settings_of(args))
    topic = relearn_topic(settings.topics.control)
    if args.relearn_action == "list":
        print(render_relearns(list(_read_relearns(bootstrap, settings).values())))
        return 0
    signals = [SignalKind(k) for k in args.signal or []]
    if args.incident is not None:
        found = _incident_scope(settings, args.incident)
        if found is None:
            say(
                f"unknown incident id {args.incident!r}: no event for it on topic "
                f"{settings.topics.alerts!r}"
            )
            return 1
        scope, kind = found
        signals = signals or [kind]
    elif args.model is not None:
        segment = segment_of(args.segment or [], settings.detection.segment_labels)
        scope = Labels(model=args.model, version=args.version, segment=segment)
    else:
        raise ConfigError("say what re-learns: --incident ID, or --model (and a narrower scope)")
    try:
        rec = new_relearn(
            scope,
            signals,
            now=datetime.now(UTC),
            by=args.by or _created_by(),
            reason=args.reason,
            incident_id=args.incident,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _publish_control(settings, bootstrap, topic, rec.key(), rec.to_json_bytes())
    print(rec.id)
    print(render_relearns([rec]))
    say(
        "each worker applies it to the keys in scope as they are next used; until a "
        "detector has learned its new baseline, that key is not watched for that signal"
    )
    return 0


# ---- registration ----------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``sentinel`` subparsers ``sub``.

    Each subcommand sets ``handler`` (a function taking the parsed
    :class:`argparse.Namespace` and returning an exit code) with ``set_defaults``.
    """
    notify = sub.add_parser(
        "notify",
        help="deliver incidents from the alerts topic to a sink",
        description="Deliver every incident event on the alerts topic to one sink. Secrets "
        "come from " + ", ".join(SECRET_ENV.values()) + " or the notify file.",
    )
    notify.add_argument("--sink", required=True, choices=SINKS)
    notify.add_argument("--url", help="sink URL (overrides the notify file; not for slack)")
    notify.add_argument(
        "--config-file",
        type=Path,
        default=None,
        help="notify TOML (default: $SENTINEL_NOTIFY_CONFIG or config/notify.toml)",
    )
    notify.add_argument("--group-id", help="consumer group (default: <app_id>-notify-<sink>)")
    add_stop_options(notify)
    notify.set_defaults(handler=cmd_notify)

    contain = sub.add_parser(
        "contain", help="publish playbook containment for alerts to the control topic"
    )
    contain.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be published for the alerts so far, then end; publish nothing",
    )
    contain.add_argument("--group-id", help="consumer group (default: <app_id>-containment)")
    add_stop_options(contain)
    contain.set_defaults(handler=cmd_contain)

    status = sub.add_parser(
        "status",
        help="containment per model, open incidents, their delivery per sink, silences in "
        "force, and the worker's health and lag",
    )
    add_common(status)
    status.add_argument(
        "--worker-url",
        help="the worker's web endpoint for /readyz "
        "(default http://<worker.web_host>:<worker.web_port>)",
    )
    status.set_defaults(handler=cmd_status)

    silence = sub.add_parser("silence", help="add, list or expire runtime silences")
    ssub = silence.add_subparsers(dest="silence_action", required=True, metavar="ACTION")
    add = ssub.add_parser("add", help="mute matching incidents for a while")
    add.add_argument("--model", required=True, type=name_arg)
    add.add_argument("--version", type=name_arg)
    add.add_argument(
        "--segment", type=_segment, action="append", metavar="KEY=VALUE", help="repeatable"
    )
    add.add_argument(
        "--type",
        type=_incident_type,
        help="incident type: a kind (toxicity_rate matches every category) or kind:feature",
    )
    add.add_argument("--duration", required=True, type=duration_arg, help="e.g. 90m, 2h, 1d")
    add.add_argument("--starts-at", type=aware_arg, help="ISO 8601 with timezone (default: now)")
    add.add_argument("--comment", required=True)
    add.add_argument("--created-by", help="default: the current user")
    lst = ssub.add_parser("list", help="silences in force (and pending)")
    lst.add_argument("--all", action="store_true", help="also ended and expired ones")
    exp = ssub.add_parser("expire", help="end a silence now")
    exp.add_argument("id")
    for p in (add, lst, exp):
        add_common(p)
        p.set_defaults(handler=cmd_silence)

    relearn = sub.add_parser(
        "relearn",
        help="take a scope's current level as normal: its detectors learn a new baseline",
        description="Publish a re-learn: in every key the scope covers (a model covers its "
        "versions and segments), the detectors of the given signal kinds start again and "
        "learn a new baseline from the traffic that follows. For an intended change (new "
        "prompt, retrained judge) or a baseline that no longer describes normal traffic.",
    )
    rsub = relearn.add_subparsers(dest="relearn_action", required=True, metavar="ACTION")
    radd = rsub.add_parser("add", help="re-learn an incident's detector, or a scope's")
    radd.add_argument("--incident", help="the incident's scope and signal kind")
    radd.add_argument("--model", type=name_arg, help="a scope: the model and all its keys")
    radd.add_argument("--version", type=name_arg, help="narrow the scope to one version")
    radd.add_argument(
        "--segment", type=_segment, action="append", metavar="KEY=VALUE", help="repeatable"
    )
    radd.add_argument(
        "--signal",
        choices=RELEARNABLE,
        action="append",
        metavar="KIND",
        help="repeatable; default: the incident's kind, or every kind for a --model scope "
        f"({', '.join(RELEARNABLE)})",
    )
    radd.add_argument("--reason", required=True, help="why this level is normal (audit trail)")
    radd.add_argument("--by", help="default: the current user")
    rlst = rsub.add_parser("list", help="every re-learn requested, oldest first")
    for p in (radd, rlst):
        add_common(p)
        p.set_defaults(handler=cmd_relearn)


__all__ = ["register"]
