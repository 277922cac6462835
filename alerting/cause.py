"""One cause, one incident: root-cause localization over label cuts, and the grouping rule.

A failure shows in many keys at once: a tenant's excess also shows in its locale cut and
model-wide, a bad version shows as that version and as "all versions", one deploy moves
downvotes, confidence and toxicity together. Two pure pieces turn that into one incident:

* :func:`localize` names the culprit. For the detector that fired, every key of the model
  reports the *excess* of the flagged quantity over its baseline in its current episode
  (:meth:`detectors.base.Detector.excess`). Within each dimension (version, tenant,
  locale, ...) a value's *explanatory power* is its share of the dimension's positive
  excess (Adtributor, Bhagwan et al. 2014); its *surprise* is the log-likelihood ratio of
  its own data against its baseline. A dimension localizes the change to one value when
  that value explains at least ``min_explanatory_power`` of the excess *and* that share
  exceeds its traffic share by ``min_concentration`` (an excess spread over a dimension in
  proportion to traffic, as a model-wide failure is, points at no value of it: the
  "ripple effect" that Squeeze and RiskLoc exploit) and its relative shift is
  ``min_lift_ratio`` times the model's (episodes start at different times in different
  keys, so shares alone favour large cuts; the lift ratio does not). A fresh version needs no
  concentration margin, however much traffic it has taken: it is judged as canary
  analysis judges it, against the versions it replaces, so its lift must be
  ``min_lift_ratio`` times theirs (a rise that moves the old version as much is not the
  deploy's). Of several localizing dimensions the deployed version wins (the deploy is
  the cause), then the largest concentration, then surprise. No localizing dimension: the
  change is model-wide when the model key itself is alarmed, else it stays at the key
  that fired.
* :func:`same_cause` says whether a detection is explained by an open incident: same
  model, scopes that do not contradict each other (tenant=a vs tenant=b do), and signals
  that one cause produces: the same signal family; downvotes (users react to any
  failure); a family and its consequences (:data:`CONSEQUENCES`); one evaluation metric
  read two ways (a guardrail's scores and its block rate, :func:`same_metric`); or any
  signal of a bad deploy's version or of a cut that mixes versions (the model, a segment
  value). Different signal families on merely overlapping cuts (toxicity on tenant=a,
  confidence on locale=de) stay apart, so grouping never hides an unrelated failure.
  The engine adds two rules of time and identity: a signal of another family joins only
  an incident whose cause was still firing when its episode began (a downvote incident
  from hours ago does not absorb a new prompt-injection wave), and a detection localized
  to a freshly deployed version joins only that deploy's incident (the deploy is a new
  cause, named by its version, even when an older incident is still open).

Both are deterministic functions of their inputs (the engine's idempotency relies on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from alerting.model import MAX_CUTS, Cut, Labels, Localization
from detectors.base import Excess

SYMPTOM_FAMILIES = frozenset({"downvote_rate"})
"""Signal families that react to any cause (users downvote toxic, wrong or unsure
answers alike): they join an incident of any family whose scope they do not contradict,
and an incident of theirs alone takes in the cause when it shows (but see
:data:`OWN_PAGE_FAMILIES`)."""

OWN_PAGE_FAMILIES = frozenset({"critical_event"})
"""Signal families that are a page of their own, with their own containment and owners (a
critical output: fallback route, keyword filter, trust and safety): an incident of
symptoms alone does not take them in, where they would only re-score a downvote page."""

GROUNDING_METRICS = ("ground", "faithful", "hallucinat", "factual")
"""Evaluation metric names (substrings) that measure an answer's grounding: a judge of
groundedness or faithfulness scores the same failure the hallucination detectors see."""

CONSEQUENCES: dict[str, tuple[str, ...]] = {
    "prompt_injection_rate": ("hallucination_rate", "evaluation_score*", "evaluation_fail_rate*"),
    "hallucination_rate": tuple(
        f"{kind}:*{metric}*"
        for kind in ("evaluation_score", "evaluation_fail_rate")
        for metric in GROUNDING_METRICS
    ),
}
"""Incident types (``fnmatch`` patterns) that follow from a family's cause: injected
prompts derail the answers' grounding, so a prompt-injection wave also moves the
hallucination rate and the evaluators; a hallucination wave moves the grounding judges
(not a judge of another metric: that is another failure). Either side joins an incident
of the other (in both orders: which one fires first depends on traffic and on how late
the evaluations arrive)."""


EVALUATION_FAMILIES = frozenset(
    {"evaluation_score", "evaluation_fail_rate", "guardrail_block_rate"}
)
"""Signal families of one (evaluator, metric): its score, and its pass or block verdict."""


def same_metric(a: str, b: str) -> bool:
    """Whether incident types ``a`` and ``b`` read one evaluation metric two ways
    (``guardrail_block_rate:guardrail/pii/pii_leak`` and
    ``evaluation_score:guardrail/pii/pii_leak``): a guardrail blocks on its score, a judge
    fails an answer on its, so the score's shift and the verdict's rate are one change."""
    fa, _, ma = a.partition(":")
    fb, _, mb = b.partition(":")
    return bool(ma) and ma == mb and {fa, fb} <= EVALUATION_FAMILIES


def follows(cause: str, effect: str) -> bool:
    """Whether incident type ``effect`` is a consequence of ``cause``'s family."""
    return any(fnmatchcase(effect, p) for p in CONSEQUENCES.get(family_of(cause), ()))


class GroupingPolicy(BaseModel):
    """How detections are localized and grouped into incidents (``[grouping]`` in the
    alerting policy). ``enabled = false`` restores one incident per key and type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    min_explanatory_power: float = Field(default=0.6, gt=0.0, le=1.0)
    """A cut must carry at least this share of its dimension's excess to be the culprit."""
    min_concentration: float = Field(default=0.25, ge=0.0, le=1.0)
    """...and that share must exceed its traffic share by this much (not for a fresh
    version: see the module docstring)."""
    min_surprise: float = Field(default=3.0, ge=0.0)
    """...and its own data must be this unlikely under its baseline (log-LR, nats)."""
    min_lift_ratio: float = Field(default=1.3, ge=1.0)
    """...and its relative shift must be this many times the model-wide one (a cut that
    holds all the excess with a share s of the traffic shifts 1/s times as much as the
    model; one that merely carries its share of a model-wide failure, as much)."""


@dataclass(frozen=True)
class Reading:
    """One key's excess for the detector that fired (input of :func:`localize`)."""

    labels: Labels
    excess: Excess
    traffic_share: float | None = None
    fresh_version: bool = False


def dimension_of(labels: Labels) -> str:
    """'model', 'version' or the (single) segment label name of a key."""
    if labels.segment:
        return ",".join(sorted(labels.segment))
    return "version" if labels.version is not None else "model"


def localize(
    readings: Sequence[Reading], fired: Labels, policy: GroupingPolicy | None = None
) -> Localization:
    """The cut that explains the change, with every cut's explanatory power (see the
    module docstring). ``fired`` is the key whose detector alarmed."""
    policy = policy or GroupingPolicy()
    by_dim: dict[str, list[Reading]] = {}
    for r in readings:
        by_dim.setdefault(dimension_of(r.labels), []).append(r)
    cuts: list[Cut] = []
    candidates: list[tuple[tuple[float, float, float], Cut]] = []
    model_cut: Cut | None = None
    model_lift = next((_lift(r.excess) for r in by_dim.get("model", [])), None)
    replaced_lift = _pooled_lift(
        [r.excess for r in by_dim.get("version", []) if not r.fresh_version]
    )
    for dim, group in sorted(by_dim.items()):
        positive = sum(max(r.excess.excess, 0.0) for r in group)
        for r in group:
            ep = _explanatory_power(r, dim, positive)
            cut = _cut_of(r, dim, ep)
            cuts.append(cut)
            if dim == "model":
                model_cut = cut
                continue
            reference = replaced_lift if r.fresh_version else model_lift
            if (rank := _culprit_rank(r, ep, reference, policy)) is not None:
                candidates.append((rank, cut))
    cuts.sort(key=lambda c: (-c.explanatory_power, -c.surprise, c.dimension))
    shown = tuple(cuts[:MAX_CUTS])
    if candidates:
        _, best = max(candidates, key=lambda rc: rc[0])
        return _localized(best, shown)
    if model_cut is not None and model_cut.alarmed and model_cut.surprise >= policy.min_surprise:
        return Localization(
            scope=Labels(model=fired.model),
            dimension="model",
            explanatory_power=1.0,
            reason="no single version or segment value carries the excess: model-wide",
            cuts=shown,
        )
    return Localization(
        scope=fired,
        dimension=dimension_of(fired),
        explanatory_power=next((c.explanatory_power for c in cuts if c.labels == fired), 0.0),
        reason="no cut explains the excess yet: the key that fired",
        cuts=shown,
    )


def _explanatory_power(r: Reading, dim: str, positive: float) -> float:
    """A key's share of its dimension's ``positive`` excess; the model key, alone in its
    dimension, explains all of it when it has any excess."""
    if dim == "model":
        return 1.0 if r.excess.excess > 0 else 0.0
    return max(r.excess.excess, 0.0) / positive if positive > 0 else 0.0


def _cut_of(r: Reading, dim: str, ep: float) -> Cut:
    """The reported cut of one key: its episode's figures and explanatory power ``ep``."""
    return Cut(
        labels=r.labels,
        dimension=dim,
        n=r.excess.n,
        baseline=r.excess.baseline,
        observed=r.excess.observed,
        excess=r.excess.excess,
        surprise=r.excess.surprise,
        explanatory_power=min(1.0, ep),
        traffic_share=r.traffic_share,
        alarmed=r.excess.alarmed,
    )


def _culprit_rank(
    r: Reading, ep: float, reference_lift: float | None, policy: GroupingPolicy
) -> tuple[float, float, float] | None:
    """How a version or segment key ranks as the culprit (a fresh version first, then
    concentration, then surprise), or None when it does not localize the change: it must
    pass the four tests of the module docstring (explanatory power, concentration over its
    traffic share, surprise, and lift over ``reference_lift``: the model's, or for a fresh
    version the versions' it replaces)."""
    share = r.traffic_share if r.traffic_share is not None else 0.0
    concentration = ep - (0.0 if r.fresh_version else share)
    lifted = (
        reference_lift is None
        or reference_lift <= 0
        or _lift(r.excess) >= policy.min_lift_ratio * reference_lift
    )
    if (
        ep >= policy.min_explanatory_power
        and concentration >= policy.min_concentration
        and r.excess.surprise >= policy.min_surprise
        and lifted
    ):
        return (1.0 if r.fresh_version else 0.0, concentration, r.excess.surprise)
    return None


def _localized(best: Cut, shown: tuple[Cut, ...]) -> Localization:
    """The localization to the culprit cut ``best``, with its reason in words."""
    of_traffic = f", {best.traffic_share:.0%} of traffic" if best.traffic_share is not None else ""
    reason = (
        f"{best.labels.describe()} carries {best.explanatory_power:.0%} of the excess "
        f"over its {best.dimension} cut{of_traffic} (surprise {best.surprise:.1f} nats)"
    )
    return Localization(
        scope=best.labels,
        dimension=best.dimension,
        explanatory_power=best.explanatory_power,
        reason=reason,
        cuts=shown,
    )


def _lift(ex: Excess) -> float:
    """Relative shift of an episode: excess per observation over its scale (the
    baseline's size, or the reference standard deviation of a mean shift)."""
    return _pooled_lift([ex]) or 0.0


def _pooled_lift(episodes: Sequence[Excess]) -> float | None:
    """The relative shift of several keys' episodes taken together (their excess over
    their observations' scales; None without observations): the versions a fresh one
    replaces, weighed by their traffic, so a straggler version's few noisy observations
    do not set the bar."""
    weight = sum(ex.n * _scale(ex) for ex in episodes if ex.n > 0)
    if weight <= 0:
        return None
    return sum(ex.excess for ex in episodes if ex.n > 0) / weight


def _scale(ex: Excess) -> float:
    return ex.scale if ex.scale is not None else max(abs(ex.baseline), 1e-9)


def family_of(incident_type: str) -> str:
    """The signal family of an incident type: ``toxicity_rate:hate`` -> ``toxicity_rate``."""
    return incident_type.split(":", 1)[0]


def contradicts(a: Labels, b: Labels) -> bool:
    """Do two scopes exclude each other (other model, other version, or another value of
    the same segment label)?"""
    if a.model != b.model:
        return True
    if a.version is not None and b.version is not None and a.version != b.version:
        return True
    return any(b.segment.get(k, v) != v for k, v in a.segment.items())


def nested(a: Labels, b: Labels) -> bool:
    """One scope contains the other."""
    return a.covers(b) or b.covers(a)


def same_cause(
    incident_scope: Labels,
    incident_types: Iterable[str],
    deploy: bool,
    detection_scope: Labels,
    detection_key: Labels,
    detection_type: str,
) -> bool:
    """Whether one cause explains the open incident and the detection (module docstring).
    ``incident_types``: the incident's types or families so far; ``detection_type``: the
    detection's incident type (e.g. ``evaluation_score:llm-judge/groundedness``)."""
    if contradicts(incident_scope, detection_scope) or contradicts(incident_scope, detection_key):
        return False
    types = set(incident_types)
    families = {family_of(t) for t in types}
    detection_family = family_of(detection_type)
    if detection_family in families:
        return True
    if detection_family in SYMPTOM_FAMILIES:
        return True
    if families <= SYMPTOM_FAMILIES and detection_family not in OWN_PAGE_FAMILIES:
        return True
    if any(
        follows(t, detection_type) or follows(detection_type, t) or same_metric(t, detection_type)
        for t in types
    ):
        return True
    # A bad deploy explains any signal on its version and on the cuts that mix versions
    # (the model, each segment value): the deploy's share of them carries its excess.
    return deploy and (nested(incident_scope, detection_scope) or detection_scope.version is None)
