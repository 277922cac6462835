"""Request sampling for a model busier than one worker can detect on.

A model's detection runs on one worker (the detect stage is partitioned by model, so that
its keys' holds, priors, budgets and localization stay together), and with every detector
on a worker detects on about 1,500 events per second (README, "Capacity"). A model that
publishes more would build lag without bound: every page later than the last. With
``detection.sample_fractions`` a model's detection sees a fixed fraction of its requests
instead, and one worker keeps up with it.

The rule, in one place (:class:`Sampler`, applied by the join for the worker and replay
alike):

- A request is in the sample when a hash of its request id falls below the model's
  fraction (:func:`request_draw`): the same decision on every worker, in every replay,
  and for every event of the request (input, output, feedback, evaluations), so joins and
  per-request rates stay whole.
- Events of requests outside the sample are joined (join state is unchanged) and then
  dropped, counted in ``JoinStats.unsampled``, except a critical output
  (:func:`streams.pipeline.rules.is_critical`): one such output is an incident on its
  own, so it goes on to the critical-event test alone (``Observation.sampled`` is False)
  and to no rate, shift or drift detector, whose sample stays unbiased.

What it costs, by construction: a detector's delay in its own observations is what it
was, so in minutes it grows by ``1 / fraction`` (seconds, on a model busy enough to need
this); its false pages per week do not change (the budget is in time); a sparse segment
gets the fraction of its few events, so it warms up and detects that much later.
"""

from __future__ import annotations

import dataclasses
import hashlib

from streams.contract.events import InferenceOutput
from streams.detection_settings import DetectionSettings
from streams.pipeline.observation import Observation
from streams.pipeline.rules import is_critical

_SCALE = float(1 << 64)


def request_draw(request_id: str) -> float:
    """A request id's position in [0, 1): uniform over ids, the same everywhere (a stable
    hash of the id, not Python's per-process ``hash``)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def sample_fraction(settings: DetectionSettings, model: str) -> float:
    """The fraction of ``model``'s requests that detection sees (1.0: every request)."""
    return settings.sample_fractions.get(model, 1.0)


def sampled_models(settings: DetectionSettings) -> dict[str, float]:
    """The models whose detection sees part of their requests, with that part."""
    return {m: f for m, f in settings.sample_fractions.items() if f < 1.0}


def reaches(obs: Observation, level: str) -> bool:
    """Whether ``obs`` feeds (and counts in the traffic of) a key of ``level``: every
    level in the sample; outside it (a critical output) the model key alone, where
    :meth:`~streams.pipeline.detectorset.DetectorSet.update` gives it to the critical
    test only."""
    return obs.sampled or level == "model"


class Sampler:
    """Which observations detection sees (module docstring)."""

    def __init__(self, settings: DetectionSettings) -> None:
        self.settings = settings
        self.active = bool(sampled_models(settings))

    def keep(self, obs: Observation) -> Observation | None:
        """``obs`` itself when its request is in its model's sample (or its model is not
        sampled); a copy marked ``sampled=False`` for a critical output outside it; None
        for any other event outside it."""
        fraction = sample_fraction(self.settings, obs.model)
        if fraction >= 1.0 or request_draw(obs.event.request_id) < fraction:
            return obs
        event = obs.event
        if isinstance(event, InferenceOutput) and is_critical(event.moderation, self.settings):
            return dataclasses.replace(obs, sampled=False)
        return None
