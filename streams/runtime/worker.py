"""Running the faust worker for the service."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import faust

from alerting.clock import SystemClock
from detectors.arl import known_thresholds
from streams.kafka.security import check_login
from streams.kafka.topics import ensure_topics
from streams.pipeline.calibration import calibrations_path, load_calibrations, save_calibrations
from streams.runtime.agents import register_pipeline
from streams.runtime.app import create_app
from streams.runtime.observability import logging_config, register_observability
from streams.settings import Settings


class ServiceWorker(faust.Worker):
    """faust's worker, stopped at once by a second SIGINT or SIGTERM.

    The first signal stops the worker cleanly: state written, offsets committed, the
    group left. That waits on the broker, so with the broker gone it takes about a minute
    (aiokafka's consumer waits out its requests), and faust ignores any further signal.
    A second signal exits at once, as a crash would: records after the last commit are
    processed again at the next start (at least once), and detector state resumes from
    its changelog.
    """

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        if self._signal_stop_time:
            print(
                f"sentinel: second {sig.name} while stopping: exiting now; records "
                "since the last commit are processed again at the next start",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + sig.value)
        print(
            f"sentinel: {sig.name}: stopping (send it again to exit at once)",
            file=sys.stderr,
            flush=True,
        )
        super()._schedule_shutdown(sig)


def quiet_worker(worker: faust.Worker) -> faust.Worker:
    """``worker`` without faust's terminal spinner.

    To animate the spinner on every log message, faust sets the root logger to DEBUG when
    the configured level is WARNING or above, so every debug call of faust and aiokafka
    (one per message produced) built a log record that no handler printed: 3 % of the
    worker's CPU in bench/throughput (py-spy), and debug records meant for nobody.
    """
    worker.spinner = None
    return worker


CALIBRATION_SAVE_S = 60.0
"""How often the worker writes newly solved thresholds to its calibration cache (s)."""


def build_service(settings: Settings, broker_url: str) -> faust.App:
    """The service app with its topics declared and its agents registered."""
    app = create_app(settings, broker_url=broker_url)
    service = register_pipeline(app, settings)
    register_observability(app, service, SystemClock())
    _keep_calibrations(app, settings)
    return app


def _keep_calibrations(app: faust.App, settings: Settings) -> None:
    """Preload the thresholds solved in earlier runs; save new ones every minute and at
    shutdown (streams.pipeline.calibration)."""
    path = calibrations_path(settings)
    saved = {"n": load_calibrations(path)}

    def save() -> None:
        if len(known_thresholds()) != saved["n"]:
            saved["n"] = save_calibrations(path)

    async def save_periodically() -> None:
        save()

    def save_at_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        save()

    app.timer(CALIBRATION_SAVE_S)(save_periodically)
    app.on_before_shutdown.connect(save_at_shutdown)


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
        ServiceWorker(
            app,
            loglevel=settings.worker.log_level,
            logging_config=logging_config(settings.worker.log_level, settings.worker.json_logs),
        )
    )
    worker.execute_from_commandline()
    return 0
