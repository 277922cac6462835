"""``sentinel notify|contain|status|silence``: the alerting consumers on the real broker.

notify --sink webhook|pagerduty|alertmanager|slack
    Deliver every incident event on the alerts topic to one sink
    (:func:`alerting.kafka_io.run_notify_consumer`); permanent failures go to the
    dead-letter topic. Sink settings come from the notify file (``--config-file``, default
    ``$SENTINEL_NOTIFY_CONFIG`` or ``config/notify.toml``) and ``--url``; secrets from the
    environment (``SENTINEL_NOTIFY_WEBHOOK_SECRET``, ``SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY``,
    ``SENTINEL_NOTIFY_SLACK_WEBHOOK_URL``; they win over the file) and are never printed.
contain [--dry-run]
    Apply playbook containment for every alert and publish the per-model state to the
    compacted control topic. A dry run publishes nothing, commits no offsets, and ends
    once it has read the alerts topic up to where it ended at the start (the current plan).
status
    Containment per model (control topic), open incidents (alerts topic) and silences.
silence add|list|expire
    Runtime silences on the compacted topic ``<topics.control>.silences``
    (:func:`alerting.silences.silences_topic`), keyed by silence id.

``notify`` and ``contain`` run until SIGINT/SIGTERM, ``--max-seconds`` or ``--until-idle``,
then print a summary. Bad input exits 2; a broker error exits 1; ``notify`` exits 3 when it
dead-lettered events.

Every Kafka client these commands build logs in with the ``kafka.security`` settings
(:func:`streams.security.kafka_python_kwargs`), as the worker's do; a refused login
(wrong password, untrusted certificate) exits 1 at once, saying why
(:func:`streams.security.check_login`), instead of after the clients' retries.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from alerting.clock import SystemClock
from alerting.containment import ContainmentState, ModelContainment
from alerting.delivery import (
    PAGERDUTY_EVENTS_URL,
    AlertmanagerSinkConfig,
    PagerDutySinkConfig,
    RetryPolicy,
    Sink,
    SinkConfig,
    SlackSinkConfig,
    UrllibTransport,
    WebhookFormat,
    WebhookSinkConfig,
    make_sink,
)
from alerting.kafka_io import (
    LoopStats,
    TopicRecord,
    ensure_compacted_topic,
    read_topic_to_end,
    run_containment_consumer,
    run_notify_consumer,
)
from alerting.model import IncidentEvent, iso_utc
from alerting.playbooks import load_playbooks
from alerting.policy import ConfigError, format_validation_error
from alerting.redact import RedactingFilter
from alerting.silences import (
    SilenceRecord,
    fold_silence_records,
    new_silence,
    parse_duration,
    silences_topic,
)
from alerting.status import fold_open_incidents, render_incidents
from streams.broker import LocalBroker, port_accepts
from streams.observability import UtcTextFormatter
from streams.security import check_login, kafka_python_kwargs
from streams.settings import Settings, load_settings

log = logging.getLogger(__name__)

DEFAULT_NOTIFY_CONFIG = Path(__file__).resolve().parent.parent / "config" / "notify.toml"
SINKS = ("webhook", "pagerduty", "alertmanager", "slack")
EXIT_DEAD_LETTERS = 3
"""``sentinel notify`` ran to its end but dead-lettered events (bad input is 2, a broker
error 1): scripts and supervisors see that deliveries failed."""
SECRET_ENV = {
    "webhook": "SENTINEL_NOTIFY_WEBHOOK_SECRET",
    "pagerduty": "SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY",
    "slack": "SENTINEL_NOTIFY_SLACK_WEBHOOK_URL",
}
SEND_TIMEOUT_S = 30.0


def _say(message: str) -> None:
    print(f"sentinel: {message}", file=sys.stderr, flush=True)


# ---- the notify file -------------------------------------------------------------------

_CFG = ConfigDict(frozen=True, extra="forbid")


class HttpOptions(BaseModel):
    model_config = _CFG
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    use_env_proxy: bool = True


class WebhookSection(BaseModel):
    model_config = _CFG
    url: str = ""
    secret: SecretStr | None = None
    format: WebhookFormat = "incident"
    receiver: str = "sentinel"
    external_url: str = ""


class PagerDutySection(BaseModel):
    model_config = _CFG
    url: str = PAGERDUTY_EVENTS_URL
    routing_key: SecretStr | None = None
    playbook_base_url: str | None = None


class AlertmanagerSection(BaseModel):
    model_config = _CFG
    url: str = ""
    refresh_s: float = Field(default=60.0, gt=0, le=3600)
    public_url: str = ""
    playbook_base_url: str | None = None


class SlackSection(BaseModel):
    model_config = _CFG
    webhook_url: SecretStr | None = None
    playbook_base_url: str | None = None


class NotifyFile(BaseModel):
    """``config/notify.toml``: retry policy, HTTP options and one section per sink."""

    model_config = _CFG
    retry: RetryPolicy = RetryPolicy()
    http: HttpOptions = HttpOptions()
    webhook: WebhookSection = WebhookSection()
    pagerduty: PagerDutySection = PagerDutySection()
    alertmanager: AlertmanagerSection = AlertmanagerSection()
    slack: SlackSection = SlackSection()


def load_notify_file(path: Path | None, environ: dict[str, str]) -> tuple[NotifyFile, str]:
    """The notify file (``path``, else ``$SENTINEL_NOTIFY_CONFIG``, else the default if it
    exists, else built-in defaults) and a description of where it came from."""
    if path is None and environ.get("SENTINEL_NOTIFY_CONFIG"):
        path = Path(environ["SENTINEL_NOTIFY_CONFIG"])
    if path is None:
        if not DEFAULT_NOTIFY_CONFIG.exists():
            return NotifyFile(), "built-in defaults"
        path = DEFAULT_NOTIFY_CONFIG
    if not path.exists():
        raise ConfigError(f"notify config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return NotifyFile.model_validate(data), str(path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        # format_validation_error names keys and messages only: never input values (secrets).
        raise ConfigError(format_validation_error(path, exc)) from None


def _check_url(url: str, what: str, *, secret: bool = False) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = "(value hidden)" if secret else repr(url)
        raise ConfigError(f"{what} must be an http(s) URL with a host; got {shown}")


def _secret(
    env_name: str, from_file: SecretStr | None, environ: dict[str, str]
) -> SecretStr | None:
    value = environ.get(env_name)
    return SecretStr(value) if value else from_file


def _required_secret(
    sink: str,
    key: str,
    what: str,
    from_file: SecretStr | None,
    environ: dict[str, str],
    source: str,
) -> SecretStr:
    """The sink's secret from the environment (preferred) or the file; an error names
    both places when it is in neither. The value itself is never echoed."""
    env = SECRET_ENV[sink]
    secret = _secret(env, from_file, environ)
    if secret is None or not secret.get_secret_value():
        raise ConfigError(f"{what} is not set: set {env} (or [{sink}] {key} in {source})")
    return secret


def sink_config(
    sink: str, cfg: NotifyFile, *, url: str | None, environ: dict[str, str], source: str
) -> SinkConfig:
    """Merge file, ``--url`` and secrets from the environment into a validated sink config."""
    if sink == "webhook":
        target = url or cfg.webhook.url
        if not target:
            raise ConfigError(f"webhook sink needs a URL: --url or [webhook] url in {source}")
        _check_url(target, "webhook URL")
        secret = _required_secret(
            "webhook", "secret", "the webhook HMAC secret", cfg.webhook.secret, environ, source
        )
        return WebhookSinkConfig(
            type="webhook",
            url=target,
            secret=secret,
            format=cfg.webhook.format,
            receiver=cfg.webhook.receiver,
            external_url=cfg.webhook.external_url,
        )
    if sink == "pagerduty":
        target = url or cfg.pagerduty.url
        _check_url(target, "PagerDuty events URL")
        key = _required_secret(
            "pagerduty",
            "routing_key",
            "the PagerDuty routing key",
            cfg.pagerduty.routing_key,
            environ,
            source,
        )
        return PagerDutySinkConfig(
            type="pagerduty",
            routing_key=key,
            url=target,
            playbook_base_url=cfg.pagerduty.playbook_base_url,
        )
    if sink == "alertmanager":
        target = url or cfg.alertmanager.url
        if not target:
            raise ConfigError(
                f"alertmanager sink needs a URL: --url or [alertmanager] url in {source}"
            )
        _check_url(target, "Alertmanager URL")
        if cfg.alertmanager.public_url:
            _check_url(cfg.alertmanager.public_url, "[alertmanager] public_url")
        return AlertmanagerSinkConfig(
            type="alertmanager",
            url=target,
            refresh_s=cfg.alertmanager.refresh_s,
            public_url=cfg.alertmanager.public_url,
            playbook_base_url=cfg.alertmanager.playbook_base_url,
        )
    if url:
        raise ConfigError(
            "the Slack webhook URL is a secret and is not taken from the command line "
            f"(it would show in the process list): set {SECRET_ENV['slack']}"
        )
    hook = _required_secret(
        "slack", "webhook_url", "the Slack webhook URL", cfg.slack.webhook_url, environ, source
    )
    _check_url(hook.get_secret_value(), "the Slack webhook URL", secret=True)
    return SlackSinkConfig(
        type="slack", webhook_url=hook, playbook_base_url=cfg.slack.playbook_base_url
    )


# ---- stopping --------------------------------------------------------------------------


class StopRequestedError(Exception):
    """Raised from a retry back-off when the run must end; the event stays uncommitted."""


class Stopper:
    """Decides when a bounded or signalled run ends (checked between polled batches).

    ``until_idle``: stop once no record has arrived for that many seconds, counted from
    the end of the last processed batch (or from the start). ``max_seconds``: stop then,
    also cutting a retry back-off short. A first SIGINT/SIGTERM stops cleanly; a second
    one raises KeyboardInterrupt.
    """

    def __init__(
        self,
        *,
        max_seconds: float | None,
        until_idle: float | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_seconds = max_seconds
        self.until_idle = until_idle
        self._monotonic = monotonic
        self.started = monotonic()
        self._last_activity = self.started
        self._busy = False
        self._event = threading.Event()
        self.reason: str | None = None

    def elapsed(self) -> float:
        return self._monotonic() - self.started

    def on_poll(self, n_records: int) -> None:
        self._busy = n_records > 0

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self._event.set()

    def should_stop(self) -> bool:
        now = self._monotonic()
        if self._busy:
            self._last_activity, self._busy = now, False
        if self.reason is not None:
            return True
        if self.max_seconds is not None and now - self.started >= self.max_seconds:
            self.request(f"--max-seconds {self.max_seconds:g} reached")
        elif self.until_idle is not None and now - self._last_activity >= self.until_idle:
            self.request(f"no new record for {self.until_idle:g} s (--until-idle)")
        return self.reason is not None

    def sleep(self, seconds: float) -> None:
        """A back-off sleep that ends early (raising StopRequestedError) when the run must end."""
        wait = seconds
        if self.max_seconds is not None:
            wait = min(wait, max(0.0, self.max_seconds - self.elapsed()))
        self._event.wait(wait)
        self._busy = True  # retrying is activity, not idleness
        if self.reason is not None or (
            self.max_seconds is not None and self.elapsed() >= self.max_seconds
        ):
            self.should_stop()
            raise StopRequestedError(self.reason or "stopped")

    @contextmanager
    def signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous: dict[signal.Signals, Any] = {}

        def handle(signum: int, _frame: FrameType | None) -> None:
            self.request(f"{signal.Signals(signum).name} received")
            for sig, old in previous.items():  # a second signal interrupts hard
                signal.signal(sig, old)

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handle)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _add_stop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-seconds",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until SIGINT/SIGTERM)",
    )
    p.add_argument(
        "--until-idle",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop once no new record has arrived for this many seconds",
    )
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds: {text!r}")
    return value


# ---- shared plumbing -------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    path: Path | None = getattr(args, "config", None)
    return load_settings(path)


def _connect(settings: Settings) -> tuple[Settings, list[str]]:
    """The brokers to use and the settings to reach them with, the login checked once.

    With no broker configured, a running local broker is used; when it is a secured one
    (``local_broker.security``) and ``kafka.security`` is left at PLAINTEXT, the returned
    settings log in to it as it expects, as ``sentinel run`` does. Raises
    :class:`streams.security.KafkaLoginError` if the broker refuses the login.
    """
    servers = settings.kafka.bootstrap_servers
    if not servers:
        local = settings.local_broker
        if not port_accepts(local.host, local.port):
            raise ConfigError(
                "no broker configured and no local broker running: set kafka.broker in the "
                "config file or SENTINEL_BROKER=kafka://host:port, or start one with "
                "'sentinel kafka up'"
            )
        _say(f"no broker configured: using the local broker on {local.host}:{local.port}")
        servers = [f"{local.host}:{local.port}"]
        broker = LocalBroker(local)
        if broker.secured and settings.kafka.security.security_protocol == "PLAINTEXT":
            kafka = settings.kafka.model_copy(update={"security": broker.client_security()})
            settings = settings.model_copy(update={"kafka": kafka})
    check_login(servers, settings.kafka.security)
    return settings, servers


def _client_security(settings: Settings) -> dict[str, Any]:
    """kafka-python security arguments for every client these commands build (holds the
    password: pass on, never print)."""
    return kafka_python_kwargs(settings.kafka.security)


def _setup_logging(level: str) -> None:
    """Text logs on stderr, redacted as the worker's are (``RedactingFilter``): the Kafka
    clients' debug lines hold protocol dumps, e.g. a SASL/PLAIN password. Like
    ``logging.basicConfig``, it leaves a root logger that already has handlers alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcTextFormatter())
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("alerting").setLevel(level.upper())
    logging.getLogger("kafka").setLevel(logging.NOTSET if level == "debug" else logging.WARNING)


def _kafka_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    def wrapped(args: argparse.Namespace) -> int:
        from kafka.errors import KafkaError

        try:
            return handler(args)
        except KafkaError as exc:
            _say(f"Kafka: {type(exc).__name__}: {exc}")
            return 1
        except TimeoutError as exc:
            _say(f"Kafka: {exc}")
            return 1

    wrapped.__doc__ = handler.__doc__
    return wrapped


def _ensure_service_topics(settings: Settings, bootstrap: list[str]) -> None:
    from streams.topics import ensure_topics

    created = ensure_topics(settings, bootstrap)
    if created:
        _say(f"created topics {', '.join(created)}")


def _counts(stats: LoopStats, names: tuple[str, ...]) -> str:
    parts = [f"{n.replace('_', ' ')} {stats.outcomes.get(n, 0)}" for n in names]
    extra = sorted(set(stats.outcomes) - set(names))
    parts += [f"{n.replace('_', ' ')} {stats.outcomes[n]}" for n in extra]
    return ", ".join(parts)


# ---- notify ----------------------------------------------------------------------------


def cmd_notify(args: argparse.Namespace) -> int:
    """``sentinel notify --sink NAME``."""
    _setup_logging(args.log_level)
    settings = _settings(args)
    environ = dict(os.environ)
    cfg, source = load_notify_file(args.config_file, environ)
    sink: Sink = make_sink(
        sink_config(args.sink, cfg, url=args.url, environ=environ, source=source)
    )
    settings, bootstrap = _connect(settings)
    group = args.group_id or f"{settings.worker.app_id}-notify-{args.sink}"
    _say(
        f"notify {args.sink}: {settings.topics.alerts} -> {args.sink} sink "
        f"(group {group}; dead letters to {settings.topics.dead_letter})"
    )
    _ensure_service_topics(settings, bootstrap)
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
                security=_client_security(settings),
            )
        except StopRequestedError:
            _say(
                "stopped during a retry back-off: that event was not committed and is "
                "delivered again on the next run"
            )
    print(
        f"notify {args.sink}: {stats.processed} record(s) in {stopper.elapsed():.1f} s; "
        f"stopped: {stopper.reason or 'loop ended'}"
    )
    print(
        "  "
        + _counts(
            stats, ("delivered", "duplicate", "dead_lettered", "skipped_replay", "undecodable")
        )
    )
    dead = stats.outcomes.get("dead_lettered", 0) + stats.outcomes.get("undecodable", 0)
    if dead:
        _say(
            f"{dead} event(s) went to the dead-letter topic {settings.topics.dead_letter} "
            f"(see their reasons there); exit status {EXIT_DEAD_LETTERS}"
        )
        return EXIT_DEAD_LETTERS
    return 0


# ---- contain ---------------------------------------------------------------------------


def cmd_contain(args: argparse.Namespace) -> int:
    """``sentinel contain [--dry-run]``."""
    _setup_logging(args.log_level)
    settings = _settings(args)
    playbooks = load_playbooks(settings.detection.playbooks_dir)
    settings, bootstrap = _connect(settings)
    if not args.dry_run:
        _ensure_service_topics(settings, bootstrap)
    group = args.group_id or f"{settings.worker.app_id}-containment"
    stopper = Stopper(max_seconds=args.max_seconds, until_idle=args.until_idle)
    stats = LoopStats()
    mode = "DRY RUN (publishes nothing, commits nothing)" if args.dry_run else f"group {group}"
    _say(
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
            security=_client_security(settings),
        )
    print(
        f"contain{' --dry-run' if args.dry_run else ''}: {stats.processed} record(s) in "
        f"{stopper.elapsed():.1f} s; stopped: {stopper.reason or ended}"
    )
    print("  " + _counts(stats, ("published", "would_publish", "no_action", "undecodable")))
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


def containment_state(records: list[TopicRecord]) -> tuple[ContainmentState, int]:
    state = ContainmentState()
    bad = 0
    for r in records:
        if r.value is None:
            continue
        try:
            state = state.with_snapshot(ModelContainment.model_validate_json(r.value))
        except ValidationError:
            bad += 1
    return state, bad


def _read_silences(bootstrap: list[str], settings: Settings) -> dict[str, SilenceRecord]:
    records = read_topic_to_end(
        bootstrap, silences_topic(settings.topics.control), security=_client_security(settings)
    )
    return fold_silence_records((r.key, r.value) for r in records)


def cmd_status(args: argparse.Namespace) -> int:
    """``sentinel status``."""
    _setup_logging(args.log_level)
    settings, bootstrap = _connect(_settings(args))
    now = datetime.now(UTC)
    security = _client_security(settings)
    control = read_topic_to_end(bootstrap, settings.topics.control, security=security)
    state, bad_control = containment_state(control)
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
    silences = [r for r in _read_silences(bootstrap, settings).values() if r.is_active(now)]
    print(f"\nSilences ({silences_topic(settings.topics.control)}): {len(silences)} in force")
    print(_indent(render_silences(silences, now)))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# ---- silence ---------------------------------------------------------------------------


def _segment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"--segment wants key=value, got {text!r}")
    return key.strip(), value.strip()


def _duration(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _aware(text: str) -> datetime:
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
    rows = [("ID", "STATE", "MATCHES", "STARTS", "ENDS", "BY", "COMMENT")]
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
                iso_utc(s.starts_at),
                iso_utc(r.ends_at()),
                s.created_by,
                s.comment,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def _publish(
    settings: Settings, bootstrap: list[str], topic: str, key: bytes, value: bytes
) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **_client_security(settings))
    try:
        producer.send(topic, key=key, value=value).get(timeout=SEND_TIMEOUT_S)
    finally:
        producer.close(timeout=SEND_TIMEOUT_S)


def _created_by() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def cmd_silence(args: argparse.Namespace) -> int:
    """``sentinel silence add|list|expire``."""
    _setup_logging(args.log_level)
    settings, bootstrap = _connect(_settings(args))
    topic = silences_topic(settings.topics.control)
    now = datetime.now(UTC)
    if args.silence_action == "add":
        if not args.comment.strip():
            raise ConfigError("--comment must say why (it is shown to whoever gets paged next)")
        segment = dict(args.segment or [])
        if len(segment) != len(args.segment or []):
            raise ConfigError("--segment: a label is given twice")
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
        if ensure_compacted_topic(
            bootstrap,
            topic,
            replication_factor=settings.kafka.replication_factor,
            security=_client_security(settings),
        ):
            _say(f"created compacted topic {topic}")
        _publish(settings, bootstrap, topic, rec.key(), rec.to_json_bytes())
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
        print(f"{args.id} already {current.state(now)} at {iso_utc(current.ends_at())}")
        return 0
    expired = current.expire(now)
    _publish(settings, bootstrap, topic, expired.key(), expired.to_json_bytes())
    print(f"{args.id} expired at {iso_utc(now)}")
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
    _add_stop_options(notify)
    notify.set_defaults(handler=_kafka_errors(cmd_notify))

    contain = sub.add_parser(
        "contain", help="publish playbook containment for alerts to the control topic"
    )
    contain.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be published for the alerts so far, then end; publish nothing",
    )
    contain.add_argument("--group-id", help="consumer group (default: <app_id>-containment)")
    _add_stop_options(contain)
    contain.set_defaults(handler=_kafka_errors(cmd_contain))

    status = sub.add_parser(
        "status", help="containment per model, open incidents and silences in force"
    )
    _add_common(status)
    status.set_defaults(handler=_kafka_errors(cmd_status))

    silence = sub.add_parser("silence", help="add, list or expire runtime silences")
    ssub = silence.add_subparsers(dest="silence_action", required=True, metavar="ACTION")
    add = ssub.add_parser("add", help="mute matching incidents for a while")
    add.add_argument("--model", required=True)
    add.add_argument("--version")
    add.add_argument(
        "--segment", type=_segment, action="append", metavar="KEY=VALUE", help="repeatable"
    )
    add.add_argument("--type", help="incident type (prefix on kind: toxicity_rate matches all)")
    add.add_argument("--duration", required=True, type=_duration, help="e.g. 90m, 2h, 1d")
    add.add_argument("--starts-at", type=_aware, help="ISO 8601 with timezone (default: now)")
    add.add_argument("--comment", required=True)
    add.add_argument("--created-by", help="default: the current user")
    lst = ssub.add_parser("list", help="silences in force (and pending)")
    lst.add_argument("--all", action="store_true", help="also ended and expired ones")
    exp = ssub.add_parser("expire", help="end a silence now")
    exp.add_argument("id")
    for p in (add, lst, exp):
        _add_common(p)
        p.set_defaults(handler=_kafka_errors(cmd_silence))


__all__ = [
    "NotifyFile",
    "Stopper",
    "load_notify_file",
    "register",
    "sink_config",
]
