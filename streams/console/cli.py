"""``sentinel console``: serve the operator console (uvicorn), or make a password hash.

    sentinel console                  serve on console.host:console.port
    sentinel console --hash-password  read a password (or token) and print its hash for
                                      a [[console.users]] entry

The console needs at least one user in ``[console]`` (it never serves anonymously), the
broker (as every other command: ``kafka.broker`` or a running local broker) and serves
HTTPS when ``console.tls_certfile``/``tls_keyfile`` are set.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alerting.model import IncidentEvent
from alerting.operator import operator_topic
from alerting.playbooks import load_playbooks
from alerting.policy import ConfigError
from alerting.relearn import relearn_topic
from alerting.silences import silences_topic
from streams.console.actions import ConsoleActions, kafka_sender
from streams.console.app import create_app
from streams.console.auth import Authenticator, hash_password
from streams.console.state import ConsoleState, Follower, Sources, kafka_consumer_factory
from streams.console.web import Console, Evidence
from streams.kafka.security import kafka_python_kwargs
from streams.kafka.topics import ensure_compacted_topic
from streams.settings import Settings, load_settings

log = logging.getLogger(__name__)

AUDIT_LIMIT = 20


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _history(settings: Settings) -> Any:
    """A :class:`KafkaHistory` whose consumer skips kafka-python's pure-Python CRC checks
    (they made reading an incident's evidence take tens of seconds; the broker checked the
    CRCs when the records were produced). The login was checked when the console started."""
    from kafka import KafkaConsumer

    from streams.investigation.kafka_read import KafkaHistory

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        client_id="sentinel-console-evidence",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        check_crcs=False,
        **kafka_python_kwargs(settings.kafka.security),
    )
    return KafkaHistory(settings, consumer=consumer)


def make_evidence(settings: Settings) -> Evidence:
    """``sentinel investigate``'s analysis of an incident, for its page: the audit trail
    (redacted), the recomputed statistic (SVG and the same PNG as ``--plot``)."""
    from streams.console.views import series_chart
    from streams.investigation.audit import investigate
    from streams.investigation.chart import plot_series
    from streams.investigation.report import audit_order, format_series

    def run(events: list[IncidentEvent]) -> dict[str, Any]:
        began = time.monotonic()
        with _history(settings) as history:
            connected = time.monotonic()
            inv = investigate(settings, events, history)
        log.info(
            "evidence of %s: %d records read in %.2f s (connect %.2f s)",
            events[-1].incident_id,
            inv.records_read,
            time.monotonic() - connected,
            connected - began,
        )
        found: dict[str, Any] = {
            "inv": inv,
            "entries": audit_order(inv, AUDIT_LIMIT),
            "series_text": format_series(inv.series),
            "series_svg": None,
            "png": None,
        }
        if inv.series is not None and inv.series.times:
            found["series_svg"] = series_chart(inv.series, inv.events)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "plot.png"
                title = f"{inv.incident.incident_id}: {inv.incident.incident_type} on " + (
                    inv.incident.labels.describe()
                )
                plot_series(inv.series, path, title)
                found["png"] = path.read_bytes()
        return found

    return run


def make_postmortem(settings: Settings) -> Any:
    from streams.investigation.postmortem import find_playbook, read_containment, render_postmortem

    def run(events: list[IncidentEvent]) -> str:
        with _history(settings) as history:
            containment = read_containment(history, settings.topics.control, events[-1].incident_id)
        playbook = find_playbook(events, str(settings.detection.playbooks_dir))
        return render_postmortem(
            events,
            containment,
            playbook,
            control_topic=settings.topics.control,
            generated_at=_utc_now(),
        )

    return run


def ensure_console_topics(settings: Settings, servers: list[str]) -> None:
    """The silences and re-learn topics (compacted) and the operator-action topic
    (time-retained)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    security = kafka_python_kwargs(settings.kafka.security)
    for compacted in (silences_topic, relearn_topic):
        ensure_compacted_topic(
            servers,
            compacted(settings.topics.control),
            replication_factor=settings.kafka.replication_factor,
            security=security,
        )
    topic = operator_topic(settings.topics.control)
    admin = KafkaAdminClient(bootstrap_servers=servers, client_id="sentinel-admin", **security)
    try:
        if topic not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, 1, settings.kafka.replication_factor)])
    finally:
        admin.close()


def build_console(settings: Settings) -> tuple[Console, Any]:
    """The console's parts on the live broker that ``settings`` name; returns it and the
    producer to close."""
    from kafka import KafkaProducer

    servers = settings.kafka.bootstrap_servers
    state = ConsoleState(Sources.of(settings))
    follower = Follower(state, kafka_consumer_factory(settings, servers))
    producer = KafkaProducer(
        bootstrap_servers=servers, acks="all", **kafka_python_kwargs(settings.kafka.security)
    )
    playbooks = load_playbooks(settings.detection.playbooks_dir)
    console = Console(
        settings=settings,
        state=state,
        actions=ConsoleActions(state, kafka_sender(producer), playbooks, _utc_now),
        auth=Authenticator(settings.console),
        playbooks=playbooks,
        evidence=make_evidence(settings),
        postmortem=make_postmortem(settings),
        now=_utc_now,
        follower=follower,
    )
    return console, producer


def cmd_console(args: argparse.Namespace) -> int:
    """``sentinel console [--hash-password]``."""
    if args.hash_password:
        if sys.stdin.isatty():
            password = getpass.getpass("password or token: ")
            if getpass.getpass("again: ") != password:
                raise ConfigError("the two entries differ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        print(hash_password(password))
        return 0
    import uvicorn

    from streams.cli.common import connected, ensure_service_topics, setup_logging

    setup_logging(args.log_level)
    settings = load_settings(getattr(args, "config", None))
    cfg = settings.console
    if not cfg.users:
        raise ConfigError(
            "the console serves no one anonymously: add a [[console.users]] entry with "
            "name, role (operator or viewer) and password_hash from "
            "'sentinel console --hash-password'"
        )
    for path in filter(None, (cfg.tls_certfile, cfg.tls_keyfile)):
        if not Path(path).is_file():
            raise ConfigError(f"console TLS file not found: {path}")
    settings = connected(settings)
    servers = settings.kafka.bootstrap_servers
    ensure_service_topics(settings, servers)
    ensure_console_topics(settings, servers)
    console, producer = build_console(settings)
    host = args.host or cfg.host
    port = args.port if args.port is not None else cfg.port
    scheme = "https" if cfg.tls_certfile else "http"
    print(
        f"sentinel: console on {scheme}://{host}:{port}/ (reading "
        f"{', '.join(console.state.sources.all())})",
        file=sys.stderr,
        flush=True,
    )
    assert console.follower is not None
    console.follower.start()
    try:
        uvicorn.run(
            create_app(console),
            host=host,
            port=port,
            ssl_certfile=cfg.tls_certfile or None,
            ssl_keyfile=cfg.tls_keyfile or None,
            log_level=args.log_level,
            timeout_graceful_shutdown=3,
            access_log=args.log_level == "debug",
        )
    finally:
        console.follower.stop()
        producer.close(timeout=10)
    return 0


def register(sub: Any) -> None:
    """Add ``console`` to the ``sentinel`` subparsers ``sub``."""
    from streams.cli.common import port_arg

    p = sub.add_parser("console", help="serve the operator web console")
    p.add_argument("--host", help="bind address (default: console.host)")
    p.add_argument("--port", type=port_arg, help="port (default: console.port)")
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (stdin or prompt) and print its hash for [[console.users]]",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.set_defaults(handler=cmd_console)
