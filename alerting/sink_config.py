"""Sink configuration: the validated description of one sink, and the sink built from it.

``sentinel notify`` (and the console's pager links) describe a sink as data: one model
per sink type, told apart by ``type`` (:data:`SinkConfig`), unknown keys rejected.
:func:`make_sink` turns it into a :class:`alerting.sinks.Sink`. The configuration is
the CLI's and the console's concern (``streams.cli.notify_config`` builds it from the
notify file); the delivery runner only ever sees the sink.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from alerting.sinks import (
    PAGERDUTY_EVENTS_URL,
    SLACK_POST_MESSAGE_URL,
    AlertmanagerSink,
    PagerDutySink,
    Sink,
    SlackSink,
    SlackThreadSink,
    WebhookFormat,
    WebhookSink,
)

_CFG = ConfigDict(frozen=True, extra="forbid")


class WebhookSinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["webhook"]
    url: str
    secret: SecretStr
    format: WebhookFormat = "incident"
    receiver: str = Field(default="sentinel", description="webhook v4 ``receiver`` field")
    external_url: str = Field(default="", description="webhook v4 ``externalURL`` field")


class PagerDutySinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["pagerduty"]
    routing_key: SecretStr
    url: str = PAGERDUTY_EVENTS_URL
    playbook_base_url: str | None = None
    console_url: str | None = None


class AlertmanagerSinkConfig(BaseModel):
    model_config = _CFG
    type: Literal["alertmanager"]
    url: str = Field(description="Alertmanager's URL (``/api/v2/alerts`` is appended)")
    refresh_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Re-post firing alerts this often; keep it well below Alertmanager's "
        "resolve_timeout (5 min by default). endsAt is 4 refreshes ahead.",
    )
    console_url: str | None = Field(
        default=None,
        description="console.public_url: generatorURL <console_url>/incidents/<id>, and the "
        "playbook URL <console_url>/playbooks/<name> unless playbook_base_url is set",
    )
    playbook_base_url: str | None = None


class SlackSinkConfig(BaseModel):
    """An incoming webhook (``webhook_url``: one channel message per event) or the Web API
    (``token`` and ``channel``: one thread per incident,
    :class:`alerting.sinks.SlackThreadSink`)."""

    model_config = _CFG
    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = SLACK_POST_MESSAGE_URL
    playbook_base_url: str | None = None
    console_url: str | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> SlackSinkConfig:
        api = self.token is not None and bool(self.channel)
        if api == (self.webhook_url is not None):
            raise ValueError("slack: set either webhook_url, or token and channel")
        return self


SinkConfig = Annotated[
    WebhookSinkConfig | PagerDutySinkConfig | AlertmanagerSinkConfig | SlackSinkConfig,
    Field(discriminator="type"),
]


def make_sink(cfg: SinkConfig) -> Sink:
    if isinstance(cfg, WebhookSinkConfig):
        return WebhookSink(
            cfg.url,
            cfg.secret,
            format=cfg.format,
            receiver=cfg.receiver,
            external_url=cfg.external_url,
        )
    if isinstance(cfg, PagerDutySinkConfig):
        return PagerDutySink(
            cfg.routing_key,
            url=cfg.url,
            playbook_base_url=cfg.playbook_base_url,
            console_url=cfg.console_url,
        )
    if isinstance(cfg, AlertmanagerSinkConfig):
        return AlertmanagerSink(
            cfg.url,
            refresh_s=cfg.refresh_s,
            console_url=cfg.console_url,
            playbook_base_url=cfg.playbook_base_url,
        )
    if cfg.webhook_url is None:
        assert cfg.token is not None  # both checked by SlackSinkConfig
        assert cfg.channel is not None
        return SlackThreadSink(
            cfg.token,
            cfg.channel,
            url=cfg.api_url,
            playbook_base_url=cfg.playbook_base_url,
            console_url=cfg.console_url,
        )
    return SlackSink(
        cfg.webhook_url, playbook_base_url=cfg.playbook_base_url, console_url=cfg.console_url
    )
