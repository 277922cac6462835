"""Detector keys: which levels an observation feeds, their ids, and the false-alarm budget.

A failure often lives in one tenant or locale and is invisible model-wide, while cutting by
every label combination leaves each key too few events. So every observation feeds keys at
several levels: the model, model x version, and model x each single segment label. This
module is the one definition of those levels, used by the worker, replay, investigation
and metrics alike.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from alerting.model import Labels, key_id, labels_of_key
from streams.detection_settings import DetectionSettings
from streams.pipeline.cardinality import CardinalityFold
from streams.pipeline.observation import Observation

Level: TypeAlias = Literal["model", "version", "segment"]
LEVELS: Final[tuple[Level, ...]] = ("model", "version", "segment")
"""Key levels, most general first."""


def key_levels(
    obs: Observation, settings: DetectionSettings, fold: CardinalityFold | None = None
) -> list[tuple[Level, Labels, str]]:
    """The detector keys an observation feeds, most general first: (level, labels, key id).

    With ``fold``, versions and segment values over their limit per model become
    ``other`` (:mod:`streams.pipeline.cardinality`): the one place values are folded."""
    version = obs.version if fold is None else fold.version(obs.model, obs.version)
    levels: list[tuple[Level, Labels]] = [
        ("model", Labels(model=obs.model)),
        ("version", Labels(model=obs.model, version=version)),
    ]
    for label in settings.segment_labels:
        value = obs.segment.get(label)
        if value is not None:
            if fold is not None:
                value = fold.value(obs.model, label, value)
            levels.append(("segment", Labels(model=obs.model, segment={label: value})))
    return [(level, labels, key_id(labels)) for level, labels in levels]


def event_labels(levels: list[tuple[Level, Labels, str]]) -> Labels:
    """The labels of one event from its :func:`key_levels`: its model, (folded) version and
    every (folded) segment label it carries. A detector judged once per event at the model
    level (a critical event) is labelled with them, so its incident names the version and
    segment the event came from."""
    model = levels[0][1].model
    version: str | None = None
    segment: dict[str, str] = {}
    for level, labels, _ in levels:
        if level == "version":
            version = labels.version
        elif level == "segment":
            segment.update(labels.segment)
    return Labels(model=model, version=version, segment=segment)


def model_of_key(kid: str) -> str:
    """The model of a :func:`~alerting.model.key_id`."""
    return kid.partition("|")[0]


def model_key_of(kid: str) -> str:
    """The model-level key of a :func:`~alerting.model.key_id`."""
    return key_id(Labels(model=model_of_key(kid)))


def level_of(labels: Labels) -> Level:
    """The level of a key from its labels."""
    if labels.segment:
        return "segment"
    return "version" if labels.version is not None else "model"


def level_of_key(kid: str) -> Level:
    """The level of a key from its :func:`~alerting.model.key_id` (metrics read keys from
    the store)."""
    return level_of(labels_of_key(kid))


__all__ = [
    "LEVELS",
    "Level",
    "event_labels",
    "key_id",
    "key_levels",
    "level_of",
    "level_of_key",
    "model_key_of",
    "model_of_key",
]
