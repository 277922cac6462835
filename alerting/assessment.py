"""What a detection says on its own, before it meets an incident.

:func:`assess` turns one detection into the parts an incident takes from it: severity
with its reasons (the policy's scoring, floored by the playbook), the evidence, the
playbook and its deadline, and the deploy suspected of causing it. It is a pure function
of the policy, the playbooks, the detection and the deploy of its scope, so the engine
(:mod:`alerting.engine`) can apply it to opening, reopening and updating alike, and its
idempotency is kept: the same inputs give the same assessment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from alerting.incident import minutes
from alerting.model import DeployRef, Detection, Evidence, PlaybookRef, Severity
from alerting.playbooks import Playbook, PlaybookSet
from alerting.policy import AlertingPolicy, score_severity

__all__ = ["BAD_DEPLOY_PLAYBOOK", "Assessment", "assess", "choose_playbook"]

BAD_DEPLOY_PLAYBOOK = "bad_deploy"


@dataclass(frozen=True)
class Assessment:
    """What a detection says on its own: severity with reasons, evidence, playbook."""

    severity: Severity
    reasons: tuple[str, ...]
    evidence: Evidence
    playbook: PlaybookRef | None
    deadline: timedelta
    recent_deploy: DeployRef | None


def choose_playbook(
    playbooks: PlaybookSet, incident_type: str, deploy: DeployRef | None
) -> Playbook | None:
    """The ``bad_deploy`` playbook when a recent deploy is suspected (and one is loaded),
    else the playbook for the incident type."""
    if deploy is not None:
        bad = playbooks.get(BAD_DEPLOY_PLAYBOOK)
        if bad is not None:
            return bad
    return playbooks.for_type(incident_type)


def assess(
    policy: AlertingPolicy,
    playbooks: PlaybookSet,
    detection: Detection,
    deploy: DeployRef | None,
    now: datetime,
) -> Assessment:
    """Severity, evidence, playbook and deadline of a detection; ``deploy`` is the deploy
    of the scope it is localized to (or of its key), a suspect while it is within
    ``bad_deploy_window_minutes``."""
    signal = detection.signal
    warm = policy.warmup
    recent_deploy = (
        deploy
        if deploy is not None and now - deploy.deployed_at < minutes(warm.bad_deploy_window_minutes)
        else None
    )
    playbook = choose_playbook(playbooks, detection.incident_type, recent_deploy)
    floor = playbook.detection.severity_floor if playbook else None
    severity, reasons = score_severity(policy.severity, signal, detection.blast_radius, floor)
    if recent_deploy is not None:
        age = (now - recent_deploy.deployed_at).total_seconds() / 60
        reasons = (
            *reasons,
            f"version {recent_deploy.version} deployed {age:.0f} min ago "
            f"(n={signal.n_observations} observations: enough evidence despite warm-up)",
        )
    evidence = Evidence(
        signal=signal,
        ranges=detection.ranges,
        sample_request_ids=detection.sample_request_ids,
        window_start=detection.window_start,
        window_end=detection.at,
        blast_radius=detection.blast_radius,
        localization=detection.localization,
    )
    pref = PlaybookRef(name=playbook.name, path=playbook.path) if playbook else None
    deadline = minutes(
        playbook.deadline_minutes if playbook else policy.lifecycle.default_deadline_minutes
    )
    return Assessment(severity, reasons, evidence, pref, deadline, recent_deploy)
