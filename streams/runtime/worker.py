"""Running the faust worker for the service."""

from __future__ import annotations

import faust

from alerting.clock import SystemClock
from streams.kafka.security import check_login
from streams.kafka.topics import ensure_topics
from streams.runtime.agents import register_pipeline
from streams.runtime.app import create_app
from streams.runtime.observability import logging_config, register_observability
from streams.settings import Settings


def quiet_worker(worker: faust.Worker) -> faust.Worker:
    """``worker`` without faust's terminal spinner.

    To animate the spinner on every log message, faust sets the root logger to DEBUG when
    the configured level is WARNING or above, so every debug call of faust and aiokafka
    (one per message produced) built a log record that no handler printed: 3 % of the
    worker's CPU in bench/throughput (py-spy), and debug records meant for nobody.
    """
    worker.spinner = None
    return worker


def build_service(settings: Settings, broker_url: str) -> faust.App:
    """The service app with its topics declared and its agents registered."""
    app = create_app(settings, broker_url=broker_url)
    service = register_pipeline(app, settings)
    register_observability(app, service, SystemClock())
    return app


def run_worker(settings: Settings, broker_url: str) -> int:
    """Run the worker in the foreground until SIGINT/SIGTERM; returns the exit code.

    A refused login (wrong password, untrusted certificate) raises
    :class:`streams.kafka.security.KafkaLoginError` before anything starts, instead of the
    clients retrying it as a network fault.
    """
    bootstrap = broker_url.removeprefix("kafka://").split(";")
    check_login(bootstrap, settings.kafka.security)
    created = ensure_topics(settings, bootstrap)
    if created:
        print(f"sentinel: created topics {', '.join(created)}", flush=True)
    app = build_service(settings, broker_url)
    worker = quiet_worker(
        faust.Worker(
            app,
            loglevel=settings.worker.log_level,
            logging_config=logging_config(settings.worker.log_level, settings.worker.json_logs),
        )
    )
    worker.execute_from_commandline()
    return 0
