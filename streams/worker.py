"""Running the faust worker for the service."""

from __future__ import annotations

import faust

from alerting.clock import SystemClock
from streams.agents import register_pipeline
from streams.app import create_app
from streams.observability import logging_config, register_observability
from streams.settings import Settings
from streams.topics import ensure_topics


def build_service(settings: Settings, broker_url: str) -> faust.App:
    """The service app with its topics declared and its agents registered."""
    app = create_app(settings, broker_url=broker_url)
    service = register_pipeline(app, settings)
    register_observability(app, service, SystemClock())
    return app


def run_worker(settings: Settings, broker_url: str) -> int:
    """Run the worker in the foreground until SIGINT/SIGTERM; returns the exit code."""
    created = ensure_topics(settings, broker_url.removeprefix("kafka://").split(";"))
    if created:
        print(f"sentinel: created topics {', '.join(created)}", flush=True)
    app = build_service(settings, broker_url)
    worker = faust.Worker(
        app,
        loglevel=settings.worker.log_level,
        logging_config=logging_config(settings.worker.log_level, settings.worker.json_logs),
    )
    worker.execute_from_commandline()
    return 0
