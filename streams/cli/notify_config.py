"""The notify file (``config/notify.toml``) and the sink configuration built from it.

Sink settings come from the notify file (``--config-file``, default
``$SENTINEL_NOTIFY_CONFIG`` or the shipped ``notify.toml``) and ``--url``; secrets from the
environment (``SENTINEL_NOTIFY_WEBHOOK_SECRET``, ``SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY``,
``SENTINEL_NOTIFY_SLACK_WEBHOOK_URL``; they win over the file) and are never printed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from alerting.delivery import RetryPolicy
from alerting.policy import ConfigError, format_validation_error, read_toml
from alerting.sink_config import (
    AlertmanagerSinkConfig,
    PagerDutySinkConfig,
    SinkConfig,
    SlackSinkConfig,
    WebhookSinkConfig,
)
from alerting.sinks import PAGERDUTY_EVENTS_URL, SLACK_POST_MESSAGE_URL, WebhookFormat
from streams.settings import config_dir

DEFAULT_NOTIFY_CONFIG = config_dir() / "notify.toml"
SINKS = ("webhook", "pagerduty", "alertmanager", "slack")
SLACK_TOKEN_ENV = "SENTINEL_NOTIFY_SLACK_TOKEN"
"""The Slack bot token (``chat:write``) of the Web API mode (``[slack] channel``)."""
SECRET_ENV = {
    "webhook": "SENTINEL_NOTIFY_WEBHOOK_SECRET",
    "pagerduty": "SENTINEL_NOTIFY_PAGERDUTY_ROUTING_KEY",
    "slack": "SENTINEL_NOTIFY_SLACK_WEBHOOK_URL",
}

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
    playbook_base_url: str | None = None


class SlackSection(BaseModel):
    """``webhook_url`` (an incoming webhook: one message per event), or ``channel`` with
    the bot token in ``$SENTINEL_NOTIFY_SLACK_TOKEN`` (the Web API: one thread per
    incident)."""

    model_config = _CFG
    webhook_url: SecretStr | None = None
    channel: str | None = None
    token: SecretStr | None = None
    api_url: str = SLACK_POST_MESSAGE_URL
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
        return NotifyFile.model_validate(read_toml(path)), str(path)
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
    sink: str,
    cfg: NotifyFile,
    *,
    url: str | None,
    environ: dict[str, str],
    source: str,
    console_url: str | None = None,
) -> SinkConfig:
    """Merge file, ``--url`` and secrets from the environment into a validated sink config.
    ``console_url`` (``console.public_url``) links pages to the operator console."""
    if sink == "webhook":
        return _webhook_config(cfg.webhook, url, environ, source)
    if sink == "pagerduty":
        return _pagerduty_config(cfg.pagerduty, url, environ, source, console_url)
    if sink == "alertmanager":
        return _alertmanager_config(cfg.alertmanager, url, source, console_url)
    return _slack_config(cfg.slack, url, environ, source, console_url)


def _webhook_config(
    section: WebhookSection, url: str | None, environ: dict[str, str], source: str
) -> WebhookSinkConfig:
    """The webhook sink: a URL (``--url`` wins) and its HMAC secret are required."""
    target = url or section.url
    if not target:
        raise ConfigError(f"webhook sink needs a URL: --url or [webhook] url in {source}")
    _check_url(target, "webhook URL")
    secret = _required_secret(
        "webhook", "secret", "the webhook HMAC secret", section.secret, environ, source
    )
    return WebhookSinkConfig(
        type="webhook",
        url=target,
        secret=secret,
        format=section.format,
        receiver=section.receiver,
        external_url=section.external_url,
    )


def _pagerduty_config(
    section: PagerDutySection,
    url: str | None,
    environ: dict[str, str],
    source: str,
    console_url: str | None,
) -> PagerDutySinkConfig:
    """The PagerDuty sink: the events URL has a default; the routing key is required."""
    target = url or section.url
    _check_url(target, "PagerDuty events URL")
    key = _required_secret(
        "pagerduty",
        "routing_key",
        "the PagerDuty routing key",
        section.routing_key,
        environ,
        source,
    )
    return PagerDutySinkConfig(
        type="pagerduty",
        routing_key=key,
        url=target,
        playbook_base_url=section.playbook_base_url,
        console_url=console_url,
    )


def _alertmanager_config(
    section: AlertmanagerSection, url: str | None, source: str, console_url: str | None
) -> AlertmanagerSinkConfig:
    """The Alertmanager sink: a URL (``--url`` wins) is required; no secret."""
    target = url or section.url
    if not target:
        raise ConfigError(f"alertmanager sink needs a URL: --url or [alertmanager] url in {source}")
    _check_url(target, "Alertmanager URL")
    return AlertmanagerSinkConfig(
        type="alertmanager",
        url=target,
        refresh_s=section.refresh_s,
        playbook_base_url=section.playbook_base_url,
        console_url=console_url,
    )


def _slack_config(
    section: SlackSection,
    url: str | None,
    environ: dict[str, str],
    source: str,
    console_url: str | None,
) -> SlackSinkConfig:
    """The Slack sink: the Web API when ``[slack] channel`` is set (bot token required),
    else an incoming webhook whose URL is a secret, never taken from ``--url``."""
    if url:
        raise ConfigError(
            "the Slack webhook URL is a secret and is not taken from the command line "
            f"(it would show in the process list): set {SECRET_ENV['slack']}"
        )
    if section.channel:
        token = _secret(SLACK_TOKEN_ENV, section.token, environ)
        if token is None or not token.get_secret_value():
            raise ConfigError(
                f"the Slack bot token is not set: set {SLACK_TOKEN_ENV} (or [slack] token in "
                f"{source}); [slack] channel posts through the Web API"
            )
        _check_url(section.api_url, "the Slack API URL")
        return SlackSinkConfig(
            type="slack",
            token=token,
            channel=section.channel,
            api_url=section.api_url,
            playbook_base_url=section.playbook_base_url,
            console_url=console_url,
        )
    hook = _required_secret(
        "slack", "webhook_url", "the Slack webhook URL", section.webhook_url, environ, source
    )
    _check_url(hook.get_secret_value(), "the Slack webhook URL", secret=True)
    return SlackSinkConfig(
        type="slack",
        webhook_url=hook,
        playbook_base_url=section.playbook_base_url,
        console_url=console_url,
    )
