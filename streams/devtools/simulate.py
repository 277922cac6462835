"""``sentinel simulate``: realistic, reproducible traffic with injected failures and ground truth.

Requests arrive as a Poisson process whose rate follows a daily cycle; each request spreads
over several models, versions and segments (tenant, feature, locale) and yields an input
and an output event, user feedback on a fraction of outputs 1-30 minutes later, and an
evaluation on a fraction of LLM outputs. A few events are delivered late (out of
event-time order), as real pipelines do. Failures are injected at a chosen time, strength
and scope (see :mod:`streams.devtools.scenario`); what was injected is written as ground
truth.

Nothing reads the wall clock or global randomness: the same configuration and seed give
the same stream byte for byte. Event time is simulated, so a week takes seconds; with
``--rate`` the Kafka publisher paces itself in wall time. Generation is vectorised with
numpy one hour of event time at a time.

Here: the :class:`Simulator` (block iteration, delivery order, ground truth) and the two
ways to run it (:func:`write_jsonl`, :func:`publish`). The scenario and injection models
are in :mod:`streams.devtools.scenario`, one block's random draws in
:mod:`streams.devtools.sim_requests`, and their rendering as event JSON lines in
:mod:`streams.devtools.sim_events`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

from streams.devtools.scenario import (
    HARM_CATEGORIES,
    INJECTION_TYPES,
    SIGNALS,
    Scenario,
    check_scenario,
)
from streams.devtools.sim_events import BlockView, render_block
from streams.devtools.sim_requests import (
    Effects,
    Traffic,
    apply_injection,
    arrivals,
    draw,
    draw_later,
    route,
)
from streams.kafka.security import KafkaSecurity, kafka_python_kwargs
from streams.progress import Progress

GROUND_TRUTH_FORMAT: Final = "sentinel.ground-truth/1"

_BLOCK_S: Final = 3600.0
"""Event time generated per vectorised step (seconds)."""


def _next_version(version: str) -> str:
    m = re.fullmatch(r"(.*?)(\d+)", version)
    return f"{m.group(1)}{int(m.group(2)) + 1}" if m else f"{version}-next"


class Simulator:
    """Generates the stream for a :class:`Scenario`. Iterate :meth:`lines` (JSONL, in
    delivery order); :meth:`ground_truth` describes what was injected."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        check_scenario(scenario)
        self.counts: dict[str, int] = {
            "requests": 0,
            "input": 0,
            "output": 0,
            "feedback": 0,
            "evaluation": 0,
            "late": 0,
        }
        self._affected = [0] * len(scenario.injections)
        self._versions: list[list[str]] = []  # per model: [base, new versions...]
        self._new_version_idx: list[int] = []
        self._scopes: list[dict[str, str]] = []
        for m in scenario.models:
            self._versions.append([m.version])
        for inj in scenario.injections:
            if inj.type == "bad_deploy":
                mi = self._model_index(inj.scope.get("model", scenario.models[0].name))
                new = inj.new_version or _next_version(scenario.models[mi].version)
                self._versions[mi].append(new)
                self._new_version_idx.append(len(self._versions[mi]) - 1)
                self._scopes.append({**inj.scope, "model": scenario.models[mi].name})
            else:
                self._new_version_idx.append(0)
                self._scopes.append(dict(inj.scope))

    def _model_index(self, name: str) -> int:
        for i, m in enumerate(self.scenario.models):
            if m.name == name:
                return i
        raise ValueError(f"unknown model {name!r} in an injection scope")

    # ------------------------------------------------------------------ generation
    def lines(self) -> Iterator[str]:
        """The stream as JSON lines (no trailing newline), in delivery order."""
        s = self.scenario
        rng = np.random.default_rng(s.seed)
        total_s = s.duration.total_seconds()
        start_ms = int(s.start.timestamp() * 1000)
        pend_t: npt.NDArray[np.float64] = np.empty(0)
        pend_lines: list[str] = []
        block_start = 0.0
        while block_start < total_s:
            block_end = min(block_start + _BLOCK_S, total_s)
            new_t, new_lines = self._block(rng, block_start, block_end, start_ms)
            all_t = np.concatenate([pend_t, new_t])
            all_lines = pend_lines + new_lines
            order = np.argsort(all_t, kind="stable")
            ready = all_t[order] < block_end
            for i in order[ready]:
                yield all_lines[i]
            keep = order[~ready]
            pend_t = all_t[keep]
            pend_lines = [all_lines[i] for i in keep]
            block_start = block_end
        yield from pend_lines  # already sorted: late feedback after the end

    def _block(
        self, rng: np.random.Generator, t0: float, t1: float, start_ms: int
    ) -> tuple[npt.NDArray[np.float64], list[str]]:
        """One block ``[t0, t1)`` of event time: its events' delivery times and lines.

        The order of the draws from ``rng`` is part of the output (same seed, same stream),
        so the steps below run in a fixed order and each draws in the order it always has.
        """
        s = self.scenario
        t = arrivals(s, rng, t0, t1)
        n = len(t)
        if n == 0:
            return np.empty(0), []
        first = self.counts["requests"]
        self.counts["requests"] += n
        traffic = route(s, rng, t)
        effects = self._effects(traffic)
        draws = draw(s, rng, traffic, effects)
        # Signals added later draw from their own generator, so that the draws above (and
        # every stream generated before they existed) stay the same.
        xrng = np.random.default_rng([s.seed, 17, int(t0 // _BLOCK_S)])
        later = draw_later(s, xrng, traffic, effects, draws)
        late = rng.random((n, 4)) < s.late_fraction
        lag = rng.exponential(90.0, (n, 4)) * late
        self.counts["late"] += int(late[:, 0].sum() + late[:, 1].sum())
        self.counts["late"] += int((late[:, 2] & draws.has_fb).sum())
        self.counts["late"] += int((late[:, 3] & draws.has_eval).sum())
        out_t, out_lines = render_block(
            BlockView(s, self._versions, first, start_ms, traffic, effects, draws, later, lag)
        )
        silent = effects.silent
        sent = silent == 0
        self.counts["input"] += int((silent < 2).sum())
        self.counts["output"] += int(sent.sum())
        self.counts["feedback"] += int((draws.has_fb & sent).sum())
        self.counts["evaluation"] += int((draws.has_eval & sent).sum())
        self.counts["evaluation"] += int((later.has_guard & sent).sum())
        return np.asarray(out_t, dtype=np.float64), out_lines

    def _effects(self, traffic: Traffic) -> Effects:
        """What the injections active in this block do to each of its requests; counts
        the requests each injection touched (the ground truth's ``affected_requests``)."""
        s = self.scenario
        n = len(traffic.t)
        eff = Effects(
            p_toxic=np.full(n, s.toxicity_rate),
            neg_mult=np.ones(n),
            p_inj=np.full(n, s.prompt_injection_rate),
            conf_shift=np.zeros(n),
            drift=np.zeros(n),
            ground_shift=np.zeros(n),
            judge_shift=np.zeros(n),
            block_mult=np.ones(n),
            silent=np.zeros(n, dtype=np.int8),
            harm_p={c: np.full(n, s.harm_rates.get(c, 0.0)) for c in HARM_CATEGORIES[1:]},
        )
        base_scope = {
            "model": traffic.model,
            "tenant": traffic.tenant,
            "feature": traffic.feature,
            "locale": traffic.locale,
        }
        names = {
            "model": [m.name for m in s.models],
            "tenant": s.tenants,
            "feature": s.features,
            "locale": s.locales,
        }
        for k, inj in enumerate(s.injections):
            a = inj.start.total_seconds()
            b = a + inj.duration.total_seconds()
            mask = (traffic.t >= a) & (traffic.t < b)
            for key, value in self._scopes[k].items():
                if key == "version":
                    vm = np.array([m.version == value for m in s.models])
                    mask &= vm[traffic.model] & (traffic.version == 0)
                else:
                    mask &= base_scope[key] == names[key].index(value)
            self._affected[k] += int(mask.sum())
            apply_injection(inj, mask, eff, traffic, self._new_version_idx[k])
        np.clip(eff.p_toxic, 0.0, 0.95, out=eff.p_toxic)
        np.clip(eff.p_inj, 0.0, 0.95, out=eff.p_inj)
        return eff

    # ------------------------------------------------------------------ ground truth
    def ground_truth(self) -> dict[str, Any]:
        """What was injected, where and when (valid after :meth:`lines` is exhausted)."""
        s = self.scenario
        out = []
        for k, inj in enumerate(s.injections):
            start = s.start + inj.start
            entry: dict[str, Any] = {
                "id": f"inj-{k + 1}",
                "type": inj.type,
                "description": INJECTION_TYPES[inj.type],
                "start": _fmt(start),
                "end": _fmt(start + inj.duration),
                "strength": inj.strength,
                "signals": SIGNALS[inj.type],
                "affected_requests": self._affected[k],
            }
            if inj.type == "harm_spike":
                entry["category"] = inj.harm_category
            entry["scope"] = dict(self._scopes[k])
            if inj.type == "bad_deploy":
                mi = self._model_index(self._scopes[k]["model"])
                entry["old_version"] = s.models[mi].version
                entry["new_version"] = self._versions[mi][self._new_version_idx[k]]
            out.append(entry)
        return {
            "format": GROUND_TRUTH_FORMAT,
            "seed": s.seed,
            "start": _fmt(s.start),
            "end": _fmt(s.start + s.duration),
            "counts": dict(self.counts),
            "injections": out,
            "scenario": s.model_dump(mode="json"),
        }


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------- running it
def write_jsonl(sim: Simulator, out: IO[str], progress: Progress | None = None) -> int:
    """Write the stream to ``out``; returns the number of events. ``progress`` counts
    them, every 10,000 (:mod:`streams.progress`)."""
    n = 0
    buf: list[str] = []
    for line in sim.lines():
        buf.append(line)
        if len(buf) >= 10_000:
            out.write("\n".join(buf) + "\n")
            n += len(buf)
            if progress is not None:
                progress.update(len(buf))
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
        n += len(buf)
    return n


def publish(
    sim: Simulator,
    bootstrap: str | Sequence[str],
    topics: Any,
    *,
    rate: float = 0.0,
    progress: Progress | None = None,
    security: KafkaSecurity | None = None,
) -> int:
    """Publish the stream through :class:`streams.sdk.SentinelPublisher`; ``rate`` events/s
    of wall time (0 = as fast as possible). ``security`` is how the producer logs in (the
    ``kafka.security`` settings; ``None``: PLAINTEXT). Raises ``PublishError`` on delivery
    failures."""
    from streams.contract.events import parse_event
    from streams.sdk import SentinelPublisher

    n = 0
    began = time.monotonic()
    client = kafka_python_kwargs(security) if security is not None else {}
    with SentinelPublisher(bootstrap, topics, **client) as pub:
        for line in sim.lines():
            pub.publish(parse_event(line))
            n += 1
            if rate > 0:
                ahead = n / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            if progress is not None:
                progress.update(1)
    return n
