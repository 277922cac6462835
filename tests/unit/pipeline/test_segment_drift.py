"""Input drift confined to one locale is detected by default (issue 13, item 5).

Segment keys with at least ``segment_drift_min_share`` of their model's traffic run the
drift detectors; the model-wide test sees such a drift diluted by the other locales.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from alerting.playbooks import load_playbooks
from alerting.policy import load_policy
from streams.contract.decode import Coordinates
from streams.contract.events import InferenceInput
from streams.detection_settings import DetectionSettings
from streams.pipeline.detect import Detect
from streams.pipeline.observation import Observation
from streams.settings import load_settings

T0 = datetime(2025, 1, 6, tzinfo=UTC)
SHIFT_AT = 8000
"""Input index from which the feature of locale de-DE is shifted (its reference is full)."""


def _inputs(seed: int, n: int) -> list[Observation]:
    """Inputs of one model, one per second: 15 % from locale de-DE, whose feature ``x``
    moves by 2 standard deviations from input ``SHIFT_AT`` on; the rest en-US, unchanged."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        locale = "de-DE" if rng.random() < 0.15 else "en-US"
        x = float(rng.normal())
        if locale == "de-DE" and i >= SHIFT_AT:
            x += 2.0
        event = InferenceInput.model_validate(
            {
                "request_id": f"r{i}",
                "timestamp": T0 + timedelta(seconds=i),
                "gen_ai.request.model": "m",
                "model_version": "v1",
                "numeric_features": {"x": x},
            }
        )
        out.append(Observation(event, "m", "v1", {"locale": locale}, Coordinates("in", 0, i)))
    return out


def _drift_triggers(settings: DetectionSettings, obs: list[Observation]) -> list[tuple[int, str]]:
    """(input index, scope) of every input-drift incident triggered."""
    policy = load_policy(settings.alerting_policy)
    detect = Detect(settings, policy, load_playbooks(settings.playbooks_dir), {}, {})
    out = []
    for k in range(0, len(obs), 500):
        for ev in detect.process(obs[k : k + 500]):
            if ev.action == "trigger" and ev.incident_type.startswith("input_drift"):
                at = round((ev.emitted_at - T0).total_seconds())
                out.append((at, ",".join(f"{a}={b}" for a, b in ev.labels.segment.items())))
    return out


@pytest.mark.slow
def test_input_drift_in_one_locale_is_detected_there_by_default() -> None:
    settings = load_settings(env={}).detection
    assert settings.segment_drift_min_share > 0  # on by default
    obs = _inputs(seed=11, n=11_000)
    found = _drift_triggers(settings, obs)
    local = [at for at, scope in found if scope == "locale=de-DE"]
    assert local, found
    # Before the shift nothing; after it, within 300 inputs (~45 of the locale's: the
    # mean charts; the window test alone took 468 here).
    assert SHIFT_AT <= local[0] < SHIFT_AT + 300, found
    # One incident, named at the locale: the model key's drift is localized there too.
    assert found == [(local[0], "locale=de-DE")], found
    off = settings.model_copy(update={"segment_drift_min_share": 0.0})
    # Without segment keys only the model sees it, diluted to 0.3 sd: its mean charts
    # still page, model-wide and later (the window test alone never did).
    model_only = _drift_triggers(off, obs)
    assert [scope for _, scope in model_only] == [""], model_only
    assert model_only[0][0] > local[0]
