"""Which keys' detectors judge whether an incident's cause persists (its probes)."""

from __future__ import annotations

from alerting.model import Labels
from streams.pipeline.keys import key_id
from streams.pipeline.localize import probe_keys

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
