"""A worker whose detection cannot keep up with its traffic says so, on the real broker:
the model and the sample fraction to set (:mod:`streams.pipeline.load`).

Two seconds of a service at 12,000 requests a second (about 60,000 events, some 30,000 a
second of traffic) are published at most at that pace, to a worker whose watch looks
every 5 s. What detection needs of a worker is the traffic's density times what an
observation costs, whatever the publishing pace: at a few hundred microseconds an
observation it needs several workers, and it must warn. A machine several times faster
would still need more than the 60 % at which it warns.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.cli.main import main
from streams.devtools.scenario import Scenario
from streams.devtools.simulate import Simulator
from streams.pipeline.load import WARN_NEED
from streams.settings import Settings
from tests.conftest import KafkaBroker
from tests.integration.traffic import publish_lines
from tests.integration.workers import use_settings_env, wait_for, with_web, worker_process

pytestmark = pytest.mark.integration

_FRACTION = re.compile(r'"([^"]+)" = (\d\.\d\d)')


def _warnings(log: Path) -> list[str]:
    out = []
    for raw in log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            rec = json.loads(raw)
            if rec["level"] == "WARNING" and rec["message"].startswith("detection needed"):
                out.append(rec["message"])
    return out


def test_a_worker_behind_its_traffic_names_the_model_and_the_fraction_to_sample(
    kafka_broker: KafkaBroker,
    service_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings, _ = with_web(service_settings)
    worker = settings.worker.model_copy(update={"load_watch_seconds": 5.0})
    settings = settings.model_copy(update={"worker": worker})
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    scenario = Scenario(
        seed=4,
        start=start,
        duration=timedelta(seconds=2),
        events_per_hour=43_200_000,
        daily_amplitude=0.0,
    )
    lines = list(Simulator(scenario).lines())
    models = {m.name for m in scenario.models}
    log = tmp_path / "worker.log"
    with worker_process(settings, ["-m", "tests.integration.observability_worker"], log):
        # At most at the traffic's own pace: detection's frontier then advances at the
        # pace it detects, not in leaps to the end of a backlog already waiting in full.
        publish_lines(kafka_broker.bootstrap, settings, lines, rate=len(lines) / 2.0)
        wait_for(lambda: bool(_warnings(log)), 240, "a warning that detection falls behind", log)
        # The reading is on the worker's /metrics, and ``sentinel status`` shows it.
        use_settings_env(monkeypatch, settings)
        assert main(["status"]) == 0
        status = capsys.readouterr().out.split("Worker:")[1]
        line = next(x for x in status.splitlines() if "detection:" in x)
        assert "detection: needed " in line, status
        assert re.search(r"of the worker for its traffic over the last [\d,]+ s: ", line), status
        assert any(model in line for model in models), status
    message = _warnings(log)[0]
    need = float(re.search(r"detection needed ([\d,]+)%", message).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert need >= WARN_NEED * 100, message
    fractions = dict(_FRACTION.findall(message))
    assert fractions, message
    assert set(fractions) <= models, message
    assert all(0.01 <= float(f) < 1.0 for f in fractions.values()), message
    assert "observations/s of traffic" in message
