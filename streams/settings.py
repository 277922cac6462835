"""Typed service settings: TOML file + environment overrides, unknown keys rejected.

The default file is ``config/sentinel.toml``; ``SENTINEL_CONFIG`` or ``--config`` name
another. Environment variables override file values (``SENTINEL_<SECTION>__<KEY>``), and
``SENTINEL_BROKER`` is accepted as a short form of ``SENTINEL_KAFKA__BROKER``. Nothing is
read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import json
import os
import re
import sysconfig
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from alerting.policy import ConfigError, error_text, read_toml
from streams.contract.events import EventTopics, EventType, TopicName
from streams.detection_settings import DetectionSettings
from streams.kafka.security import KafkaSecurity
from streams.pipeline.load import WARN_NEED, WATCH_INTERVAL_S


def config_dir() -> Path:
    """The directory of the shipped configuration (``sentinel.toml``, ``alerting.toml``,
    ``notify.toml``, ``playbooks/``), found one way wherever Sentinel runs.

    A source checkout (or an editable install) uses the repository's ``config/``; an
    installed package (``pip install .``, the container image) uses the copy that the
    wheel installs as data files under ``<prefix>/share/sentinel/config``.
    """
    checkout = Path(__file__).resolve().parent.parent / "config"
    if (checkout / "sentinel.toml").is_file():
        return checkout
    return Path(sysconfig.get_path("data")) / "share" / "sentinel" / "config"


def default_config() -> Path:
    """The service config file used when neither ``--config`` nor ``SENTINEL_CONFIG`` is set."""
    return config_dir() / "sentinel.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    """Where the broker is and how topics are laid out."""

    broker: str = Field(
        default="", description="Broker URL(s), e.g. 'kafka://h1:9092;h2:9092'. Empty = local."
    )
    topic_partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    security: KafkaSecurity = KafkaSecurity()

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, v: str) -> str:
        v = v.strip()
        if not v:
            return v
        if not v.startswith("kafka://"):
            raise ValueError(f"broker must look like 'kafka://host:port', got {v!r}")
        servers = [part.strip() for part in v.removeprefix("kafka://").split(";")]
        for server in servers:
            host, colon, port = server.rpartition(":") if ":" in server else (server, "", "")
            good_port = not colon or (port.isdigit() and 1 <= int(port) <= 65535)
            if not host.strip("[]") or not good_port:
                raise ValueError(
                    f"broker {v!r}: {server!r} is not host:port with a port 1-65535 "
                    "(several brokers: kafka://host1:9092;host2:9092)"
                )
        return v

    @property
    def bootstrap_servers(self) -> list[str]:
        """The broker as a host:port list for kafka-python / aiokafka clients."""
        return [part.strip() for part in self.broker.removeprefix("kafka://").split(";") if part]


class TopicSettings(EventTopics):
    """Topic names; one place so producers, agents and consumers agree (the event topics
    come from the contract, :class:`streams.contract.events.EventTopics`)."""

    alerts: TopicName = "sentinel.alerts"
    dead_letter: TopicName = "sentinel.dead-letter"
    control: TopicName = "sentinel.control"


class WorkerSettings(_Section):
    """The faust worker: identity, state store, web endpoint, logging."""

    app_id: str = Field(default="sentinel", pattern=r"^[A-Za-z0-9._-]+$")
    store: str = Field(default="rocksdb://", pattern=r"^(memory|rocksdb)://$")
    data_dir: Path = Path(".sentinel/worker")
    web_enabled: bool = True
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_host: str = "127.0.0.1"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool = Field(default=False, description="One JSON object per log line.")
    batch_ingress: bool = Field(
        default=True,
        description="Hand raw event records to the ingress agent as one event per partition "
        "per fetch (streams.runtime.batching); false: faust's per-record path.",
    )
    background_solves: bool = Field(
        default=True,
        description="Solve new detector thresholds in a child process (streams.runtime."
        "solves): the event loop never waits for one, and a young key charts on a "
        "conservative bound meanwhile; false: solve in the loop, as replay does.",
    )
    standby_replicas: int = Field(
        default=1,
        ge=0,
        le=8,
        description="With the RocksDB store: how many other workers keep a standby copy of "
        "each table partition, so that a worker taking a partition over reads only its "
        "changelog's tail (0: it reads the changelog whole, and a group spends less CPU: "
        "each standby reads every state write of the partition's owner). The memory store "
        "keeps none: its new owner reads the whole changelog whatever a standby held.",
    )
    load_watch_seconds: float = Field(
        default=WATCH_INTERVAL_S,
        gt=0,
        le=86400,
        description="Wall seconds between two looks at what detection needs of the worker for "
        "its traffic (streams.pipeline.load): at most one warning per interval, when it "
        f"needs {WARN_NEED:.0%} or more, with the sample fractions that would relieve it.",
    )

    @property
    def internal_topics(self) -> dict[str, str]:
        """The worker's own topics between its stages (the join's and detection's
        repartitions), by stage: its lag there is work it has read but not yet done."""
        return {"by_request": f"{self.app_id}-by-request", "by_model": f"{self.app_id}-by-model"}


class LocalBrokerSettings(_Section):
    """The single-node KRaft broker that `sentinel kafka up` runs from Maven Central jars.

    ``security = "sasl_ssl"`` makes its client listener SASL_SSL with SCRAM (SHA-512 and
    SHA-256) and a throwaway certificate authority, so the service's security settings can
    be proven against a real secured broker (see ``LocalBroker.client_security``). The
    SCRAM credentials for ``sasl_username``/``sasl_password`` are created when the storage
    is formatted (first start of a data directory); changing the password later needs a
    new data directory. ``client_auth = "required"`` adds mutual TLS on top: the listener
    then also demands a client certificate signed by the throwaway CA, which makes one for
    the clients.
    """

    # Errors must not echo the input: it may hold the password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kafka_version: str = Field(default="4.1.1", pattern=r"^4\.\d+\.\d+$")
    host: str = "127.0.0.1"
    port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int = Field(default=9093, ge=1, le=65535)
    data_dir: Path = Path(".sentinel/kafka")
    cache_dir: Path = Path("~/.cache/sentinel/kafka")
    heap: str = Field(default="512m", pattern=r"^\d+[mMgG]$")
    start_timeout_s: float = Field(default=60.0, gt=0)
    retention_hours: float = Field(
        default=0.0,
        ge=0,
        description="Delete records whose timestamp is older than this; 0: no time limit. "
        "Kafka judges age by the record timestamps, which the SDK and the simulator set to "
        "event time: with a time limit, a simulated or back-filled stream from the past is "
        "deleted at the next retention check (every 5 min), and replay finds nothing.",
    )
    retention_gb_per_partition: float = Field(
        default=1.0,
        gt=0,
        description="Oldest records are deleted beyond this size per partition (GiB).",
    )
    group_initial_rebalance_delay_ms: int = Field(
        default=3000,
        ge=0,
        le=300_000,
        description="How long the broker waits for more members before a new consumer "
        "group's first assignment (Kafka's group.initial.rebalance.delay.ms; its default, "
        "3000). With 0, the first of several workers started together takes every "
        "partition, reads a backlog, and a rebalance moments later hands half of it to the "
        "others before anything was committed: the group reads it twice "
        "(docs/validation.md, 'Stop 33').",
    )
    security: Literal["plaintext", "sasl_ssl"] = Field(
        default="plaintext",
        description="Client listener: plaintext, or SASL_SSL with SCRAM over TLS.",
    )
    client_auth: Literal["none", "required"] = Field(
        default="none",
        description="TLS client certificates on the sasl_ssl listener: 'required' = mTLS "
        "(a client certificate signed by the throwaway CA, in addition to the SCRAM login).",
    )
    sasl_username: str = Field(
        default="sentinel",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="SCRAM user created at format time (sasl_ssl only).",
    )
    sasl_password: SecretStr = Field(
        default=SecretStr(""),
        repr=False,
        description="Its password (sasl_ssl only); set it through the environment, "
        "SENTINEL_LOCAL_BROKER__SASL_PASSWORD.",
    )

    @field_validator("kafka_version")
    @classmethod
    def _at_least_401(cls, v: str) -> str:
        major, minor, patch = (int(p) for p in v.split("."))
        if (major, minor, patch) < (4, 0, 1):
            raise ValueError("Kafka 4.0.0 dropped JoinGroup v0/v1 used by clients; use >= 4.0.1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> LocalBrokerSettings:
        # An empty default (not None) keeps settings_env() round trips exact.
        has_password = bool(self.sasl_password.get_secret_value())
        if self.security == "sasl_ssl" and not has_password:
            raise ValueError(
                "security sasl_ssl needs sasl_password (SENTINEL_LOCAL_BROKER__SASL_PASSWORD)"
            )
        if self.security == "plaintext" and has_password:
            raise ValueError("sasl_password given but security is plaintext")
        if self.client_auth != "none" and self.security != "sasl_ssl":
            raise ValueError(f"client_auth {self.client_auth} needs security sasl_ssl")
        return self


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("sentinel_environ", default=None)


class _InjectedEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading an injected mapping, not os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


_PASSWORD_HASH = re.compile(r"^pbkdf2_sha256\$\d+\$[0-9a-f]{16,}\$[0-9a-f]{64}$")


class ConsoleUser(_Section):
    """One operator console login: a name, a role and a salted PBKDF2 hash of its password
    or token (``sentinel console hash-password`` makes one; the clear text is never kept).
    ``viewer`` reads every page; ``operator`` may also acknowledge, silence, contain,
    re-learn and resolve."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")
    role: Literal["operator", "viewer"] = "viewer"
    password_hash: SecretStr = Field(
        repr=False,
        description="pbkdf2_sha256$<iterations>$<salt hex>$<hash hex> (not shown by "
        "`sentinel config`: a hash can be attacked offline)",
    )

    @field_validator("password_hash")
    @classmethod
    def _check_hash(cls, v: SecretStr) -> SecretStr:
        if not _PASSWORD_HASH.match(v.get_secret_value()):
            raise ValueError(
                "password_hash must be pbkdf2_sha256$<iterations>$<salt>$<hash>, as "
                "'sentinel console --hash-password' prints it"
            )
        return v


class ConsoleSettings(_Section):
    """``sentinel console``: the operator web console (see docs/console.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    public_url: str = Field(
        default="",
        description="Base URL operators reach the console at (e.g. https://sentinel.example/); "
        "when set, pager payloads link to the incident's console page.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    users: tuple[ConsoleUser, ...] = ()
    tls_certfile: str = Field(default="", description="PEM certificate: serve HTTPS.")
    tls_keyfile: str = Field(default="", description="PEM private key of tls_certfile.")
    session_secret: SecretStr = Field(
        default=SecretStr(""),
        repr=False,
        description="Signs login cookies and CSRF tokens; empty: a random one per start "
        "(logins then end when the console restarts).",
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, v: str) -> str:
        v = v.strip()
        if v and not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError(f"public_url must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> ConsoleSettings:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("tls_certfile and tls_keyfile must be given together")
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("a console user name is given twice")
        return self


class Settings(BaseSettings):
    """All service settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="SENTINEL_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,  # a bad secret must not be echoed in the error
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    worker: WorkerSettings = WorkerSettings()
    local_broker: LocalBrokerSettings = LocalBrokerSettings()
    detection: DetectionSettings = DetectionSettings()
    console: ConsoleSettings = ConsoleSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file, which is passed as init kwargs. load_settings
        # injects the environment mapping (tests pass their own instead of os.environ).
        environ = _ENVIRON.get()
        env = env_settings if environ is None else _InjectedEnvSource(settings_cls, environ)
        return (env, init_settings)


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid configuration in {source} (or its SENTINEL_* environment overrides):"]
    lines += [f"  {error_text(e)}" for e in err.errors()]
    return "\n".join(lines)


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load settings from a TOML file, then environment variables, then ``overrides``.

    ``env`` defaults to ``os.environ``; it is injected so tests need not touch the
    process environment. Raises :class:`ConfigError` naming the offending key.
    """
    environ = dict(os.environ if env is None else env)
    if path is None:
        path = Path(environ["SENTINEL_CONFIG"]) if environ.get("SENTINEL_CONFIG") else None
    file_path = path if path is not None else default_config()
    source = str(file_path)
    data: dict[str, Any] = {}
    if file_path.exists():
        data = read_toml(file_path)
    elif path is not None:
        raise ConfigError(f"config file not found: {path}")
    if "SENTINEL_BROKER" in environ and "SENTINEL_KAFKA__BROKER" not in environ:
        environ["SENTINEL_KAFKA__BROKER"] = environ["SENTINEL_BROKER"]
    environ.pop("SENTINEL_BROKER", None)
    environ.pop("SENTINEL_CONFIG", None)
    _check_env_sections(environ, source)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
        # An override wins over the environment too (the file is passed as init kwargs,
        # below the environment).
        shadowed = f"SENTINEL_{section}__{name}".upper()
        for var in [v for v in environ if v.upper() == shadowed]:
            del environ[var]

    token = _ENVIRON.set(environ)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from exc
    except SettingsError as exc:
        # pydantic-settings names the section ('field "detection"'), not the variable
        found = re.search(r'field "([^"]+)"', str(exc))
        prefix = f"SENTINEL_{found.group(1)}__".upper() if found else "SENTINEL_"
        names = sorted(v for v in environ if v.upper().startswith(prefix)) or [f"{prefix}*"]
        raise ConfigError(
            f"invalid environment override among {', '.join(names)}: a value that is not "
            "valid JSON where a list or table is expected (lists and tables are JSON, "
            """e.g. SENTINEL_DETECTION__SEGMENT_LABELS='["tenant"]')"""
        ) from exc
    finally:
        _ENVIRON.reset(token)
    return _resolve_paths(settings, file_path.parent if path is not None else config_dir())


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    """Make the policy and playbook paths absolute, one rule for every command.

    A relative path that the configuration sets is relative to the directory of the
    config file that sets it (``base``); a default is relative to :func:`config_dir`,
    so the shipped policy and playbooks are found from any working directory and from
    an installed package.
    """
    det = settings.detection
    update: dict[str, Path] = {}
    for name in ("alerting_policy", "playbooks_dir"):
        value: Path = getattr(det, name)
        if not value.is_absolute():
            root = base if name in det.model_fields_set else config_dir()
            update[name] = root / value
    if not update:
        return settings
    return settings.model_copy(update={"detection": det.model_copy(update=update)})


def _check_env_sections(environ: Mapping[str, str], source: str) -> None:
    """Reject ``SENTINEL_<SECTION>__<KEY>`` variables whose section does not exist.

    pydantic-settings skips a variable that matches no field, so a misspelt section
    (``SENTINEL_WORKR__DATA_DIR``) would be ignored without a word. Variables without
    ``__`` belong to other readers (``SENTINEL_NOTIFY_*`` secrets of ``sentinel notify``)
    and are left alone.
    """
    sections = set(Settings.model_fields)
    for key in sorted(environ):
        if not key.startswith("SENTINEL_") or "__" not in key:
            continue
        section = key.removeprefix("SENTINEL_").split("__", 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                f"invalid configuration in {source} (or its SENTINEL_* environment "
                f"overrides):\n  {key}: unknown section {section!r} "
                f"(sections: {', '.join(sorted(sections))})"
            )


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=_env_value)
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in another process.

    Used to hand a validated configuration to a worker subprocess (tests, scale-out).
    Secrets are included in clear text, as the child needs them: pass the mapping only
    to a child's environment, never print or log it.
    """
    env: dict[str, str] = {}
    for section, values in settings.model_dump(mode="python").items():
        for key, value in values.items():
            env[f"SENTINEL_{section.upper()}__{key.upper()}"] = _env_value(value)
    return env


def child_environ(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without its ``SENTINEL_*`` variables, plus :func:`settings_env`: the
    environment of a child process that must run with exactly ``settings`` (a stray
    variable of the parent would override them, or be rejected as an unknown key)."""
    env = {k: v for k, v in environ.items() if not k.startswith("SENTINEL_")}
    return env | settings_env(settings)


def topic_kinds(settings: Settings) -> dict[str, EventType]:
    """The event kind each configured event topic carries by default."""
    return {topic: kind for kind, topic in settings.topics.by_kind().items()}


def kind_topics(settings: Settings) -> dict[EventType, str]:
    """The topic each event kind is published to (the inverse of :func:`topic_kinds`)."""
    return settings.topics.by_kind()
