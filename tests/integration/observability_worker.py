"""The service worker with observability, for the integration test (settings: SENTINEL_*).

``python -m tests.integration.observability_worker``. It builds the service the way
``streams.runtime.worker.build_service`` does (app factory + pipeline), then registers the
metrics/health/readiness views, and logs JSON lines.
"""

from __future__ import annotations

import faust

from alerting.clock import SystemClock
from streams.kafka.topics import ensure_topics
from streams.runtime.agents import register_pipeline
from streams.runtime.app import create_app
from streams.runtime.observability import logging_config, register_observability
from streams.settings import load_settings


def main() -> None:  # pragma: no cover - runs in a subprocess
    settings = load_settings()
    ensure_topics(settings, settings.kafka.bootstrap_servers)
    app = create_app(settings)
    service = register_pipeline(app, settings)
    register_observability(app, service, SystemClock())
    worker = faust.Worker(
        app, loglevel="info", logging_config=logging_config("info", json_logs=True)
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
