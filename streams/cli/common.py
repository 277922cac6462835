"""Plumbing shared by every ``sentinel`` subcommand: messages, settings, the broker
connection, logging, Kafka errors, argument types and bounded runs."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

from alerting.clock import parse_duration
from alerting.policy import ConfigError
from alerting.redact import RedactingFilter
from streams.contract.scope import ScopeError, check_name
from streams.devtools.broker import LocalBroker, port_accepts
from streams.kafka.security import check_login, kafka_python_kwargs, server_address
from streams.runtime.consumers import (
    LoopStats,
)
from streams.runtime.log_limit import RepeatFilter
from streams.runtime.observability import UtcTextFormatter
from streams.settings import Settings, load_settings


def say(message: str) -> None:
    """A message for the operator on stderr (not a log line: always shown)."""
    print(f"sentinel: {message}", file=sys.stderr, flush=True)


# ---- stopping --------------------------------------------------------------------------


class StopRequestedError(Exception):
    """Raised from a retry back-off when the run must end; the event stays uncommitted."""


class Stopper:
    """Decides when a bounded or signalled run ends (checked between polled batches).

    ``until_idle``: stop once no record has arrived for that many seconds, counted from
    the end of the last processed batch (or from when the consumer got its partitions:
    :meth:`on_poll`). ``max_seconds``: stop then,
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

    def on_poll(self, n_records: int, ready: bool = True) -> None:
        """After each poll: ``n_records`` polled; ``ready`` once the consumer has partitions.
        Idle time only counts from readiness: a slow group join is not idleness."""
        self._busy = n_records > 0 or not ready

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


def add_stop_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-seconds",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until SIGINT/SIGTERM)",
    )
    p.add_argument(
        "--until-idle",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop once no new record has arrived for this many seconds",
    )
    add_common(p)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds: {text!r}")
    return value


# ---- shared plumbing -------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> Settings:
    path: Path | None = getattr(args, "config", None)
    return load_settings(path)


def connect(settings: Settings) -> tuple[Settings, list[str]]:
    """The brokers to use and the settings to reach them with, the login checked once.

    With no broker configured, a running local broker is used; when it is a secured one
    (``local_broker.security``) and ``kafka.security`` is left at PLAINTEXT, the returned
    settings log in to it as it expects, as ``sentinel run`` does. Raises
    :class:`streams.kafka.security.KafkaLoginError` if the broker refuses the login.
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
        say(f"no broker configured: using the local broker on {local.host}:{local.port}")
        servers = [f"{local.host}:{local.port}"]
        settings = LocalBroker(local).login_settings(settings)
    elif not any(port_accepts(*server_address(server)) for server in servers):
        say(
            f"no broker accepts connections at {', '.join(servers)} yet: the Kafka client "
            "keeps trying for about 30 s"
        )
    check_login(servers, settings.kafka.security)
    return settings, servers


def connected(settings: Settings) -> Settings:
    """:func:`connect`'s settings, with ``kafka.broker`` naming the brokers it found, for
    the parts that read the broker from the settings (history readers, the console)."""
    settings, servers = connect(settings)
    if settings.kafka.broker:
        return settings
    kafka = settings.kafka.model_copy(update={"broker": "kafka://" + ";".join(servers)})
    return settings.model_copy(update={"kafka": kafka})


def client_security(settings: Settings) -> dict[str, Any]:
    """kafka-python security arguments for every client these commands build (holds the
    password: pass on, never print)."""
    return kafka_python_kwargs(settings.kafka.security)


def setup_logging(level: str, *, kafka_warnings: bool = True) -> None:
    """Text logs on stderr, redacted as the worker's are (``RedactingFilter``): the Kafka
    clients' debug lines hold protocol dumps, e.g. a SASL/PLAIN password. Like
    ``logging.basicConfig``, it leaves a root logger that already has handlers alone.

    ``kafka_warnings=False`` (one-shot commands): the Kafka clients log only at
    ``--log-level debug``. Such a command ends on its one-line error when the broker
    cannot be reached; the clients' retry warnings before it only repeat it. A
    long-running command keeps them: they are how it shows connection trouble. Below
    debug, the libraries' repeated lines are limited as the worker's are (``RepeatFilter``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcTextFormatter())
    if level != "debug":
        handler.addFilter(RepeatFilter())
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("alerting").setLevel(level.upper())
    quiet = logging.WARNING if kafka_warnings else logging.CRITICAL + 1
    logging.getLogger("kafka").setLevel(logging.NOTSET if level == "debug" else quiet)


def ensure_service_topics(settings: Settings, bootstrap: list[str]) -> None:
    from streams.kafka.topics import ensure_topics

    created = ensure_topics(settings, bootstrap)
    if created:
        say(f"created topics {', '.join(created)}")


def counts(stats: LoopStats, names: tuple[str, ...]) -> str:
    parts = [f"{n.replace('_', ' ')} {stats.outcomes.get(n, 0)}" for n in names]
    extra = sorted(set(stats.outcomes) - set(names))
    parts += [f"{n.replace('_', ' ')} {stats.outcomes[n]}" for n in extra]
    return ", ".join(parts)


def check_output_path(path: Path) -> None:
    """A file can be written at ``path``: raise :class:`ValueError` for a directory given
    as the file or a missing directory (call before a long job, not after it)."""
    if path.is_dir():
        raise ValueError(f"output {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"output directory not found: {path.parent}")


_V = TypeVar("_V")


def scope_arg(check: Callable[[str], _V]) -> Callable[[str], _V]:
    """An argparse type from a check of :mod:`streams.contract.scope` (its error becomes
    argparse's), so that a filter, silence or re-learn names what events can carry."""

    def arg(text: str) -> _V:
        try:
            return check(text)
        except ScopeError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return arg


name_arg = scope_arg(check_name)


def port_arg(text: str) -> int:
    """An argparse type: a TCP port, 1-65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (1-65535): {text!r}")
    return int(text)


@contextmanager
def output_file(path: Path, *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """Write ``path`` whole or not at all: into a temporary file beside it, renamed over it
    when the block ends without an error (an existing file is kept until then, and is
    kept as it was when the command fails). A missing directory or a directory given as
    the file is a :class:`ValueError` before anything runs."""
    check_output_path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with partial.open("w", encoding=encoding, newline="\n") as fh:
            yield fh
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def refuse_same_file(kept: Path, what: str, *written: Path | None) -> None:
    """``kept`` (the command's ``what``: its input, or another output) must not also be one
    of the ``written`` files, which would destroy it."""
    for path in written:
        if path is not None and path.resolve() == kept.resolve():
            raise ValueError(f"{path} is also the {what}: writing it would destroy that")


def parse_time(text: str, now: datetime) -> datetime:
    """``now``, ``now-<duration>`` or ISO 8601 with an offset; always aware UTC."""
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("now-"):
        return now - parse_duration(value[4:])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601 with an offset, e.g. 2025-01-06T02:00:00Z, "
            "or now, now-6h)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"time {text!r} has no UTC offset: add 'Z' or '+00:00'")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"time {text!r} is out of range in UTC") from None
