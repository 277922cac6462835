"""Which keys' detectors judge whether an incident's cause persists (its probes), and
when a probe's key has stopped receiving traffic."""

from __future__ import annotations

import numpy as np

from alerting.model import Labels
from streams.detection_settings import DetectionSettings
from streams.pipeline.detectorset import DetectorSet
from streams.pipeline.keys import key_id
from streams.pipeline.localize import probe_keys, stopped

MODEL = Labels(model="support-chat")
ACME = Labels(model="support-chat", segment={"tenant": "acme"})
V13 = Labels(model="support-chat", version="v13")
FR = Labels(model="support-chat", segment={"locale": "fr-FR"})


def test_a_segment_that_fired_on_its_models_change_is_not_a_probe() -> None:
    """The model's own recovery decides; the tenant's, on a fraction of the traffic,
    would only come later."""
    assert probe_keys(ACME, MODEL) == (key_id(MODEL),)
    assert probe_keys(V13, MODEL) == (key_id(MODEL),)


def test_a_culprit_narrower_than_or_beside_the_key_that_fired_keeps_both() -> None:
    """The model fired on one tenant's change: both read it (the model's diluted change
    ends when the tenant's does). Two cuts beside each other: both."""
    assert probe_keys(MODEL, ACME) == (key_id(MODEL), key_id(ACME))
    assert probe_keys(FR, ACME) == (key_id(FR), key_id(ACME))
    assert probe_keys(ACME, ACME) == (key_id(ACME),)


def _flowing(rate_per_s: float, start: float, end: float) -> DetectorSet:
    ds = DetectorSet(DetectionSettings(), "version", 1e6)
    for t in np.arange(start, end, 1.0 / rate_per_s):
        ds.see_traffic(float(t))
    return ds


def test_a_key_whose_traffic_stopped_while_its_model_flows_has_stopped() -> None:
    """A version at 1 event/s rolled back at 3,600 s: stopped once the model has gone on
    for longer than the 10-minute floor (its rate alone would call 14 s a silence)."""
    version = _flowing(1.0, 0.0, 3600.0)
    model = _flowing(2.0, 0.0, 3600.0 + 601.0)
    assert stopped(version, model, 600.0)
    early = _flowing(2.0, 0.0, 3600.0 + 590.0)
    assert not stopped(version, early, 600.0)
    assert not stopped(model, model, 600.0)  # the model key itself never
    assert not stopped(version, None, 600.0)


def test_a_sparse_key_is_not_stopped_within_the_gaps_its_rate_makes_likely() -> None:
    """A tenant at one event every 5 minutes: a silence only after ln(1e6) ~ 13.8 of its
    gaps (~69 minutes), not after the 10-minute floor."""
    tenant = _flowing(1 / 300, 0.0, 6 * 3600.0)
    last = tenant.traffic_t
    assert not stopped(tenant, _flowing(1.0, 0.0, last + 3600.0), 600.0)
    assert stopped(tenant, _flowing(1.0, 0.0, last + 5000.0), 600.0)
