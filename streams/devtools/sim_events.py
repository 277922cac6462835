"""The simulated requests of one block rendered as contract events: JSON lines of the
input, output, feedback and evaluation events (``streams.contract.events``), each with
the time it is delivered at.

Lines are built as strings, not through the pydantic models: the simulator writes
millions of events and the models validate them on the way in anyway. Kept apart from
the random draws (:mod:`streams.devtools.sim_requests`) so the wire format is in one
place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from streams.devtools.scenario import HARM_CATEGORIES, ModelSpec, Scenario
from streams.devtools.sim_requests import Array, Draws, Effects, LaterDraws, Traffic

JUDGE: Final = ("llm-judge", "groundedness")
"""The simulated LLM judge: (evaluator, metric name)."""
GUARDRAIL: Final = ("guardrail/pii", "pii_leak")
"""The simulated output guardrail: (evaluator, check name)."""
_CHANNELS: Final = ("web", "mobile", "api")
_FINISH: Final = ("stop", "length", "content_filter")


@dataclass
class BlockView:
    """Everything one block's events are rendered from. ``versions`` is, per model, its
    base version then the bad deploys' new ones; ``first`` the block's first request
    number; ``start_ms`` the simulation start (epoch ms); ``lag`` the late-delivery delay
    (seconds) of each request's input, output, feedback and evaluation."""

    scenario: Scenario
    versions: list[list[str]]
    first: int
    start_ms: int
    traffic: Traffic
    effects: Effects
    draws: Draws
    later: LaterDraws
    lag: Array


@dataclass
class _Request:
    """The parts of one request's lines that all its events share."""

    i: int
    model: ModelSpec
    common: str
    named: str
    system_hash: str


def render_block(b: BlockView) -> tuple[list[float], list[str]]:
    """The block's events as (delivery times in seconds, JSON lines), request by request."""
    s, tr, d = b.scenario, b.traffic, b.draws
    t_out = tr.t + d.latency_ms / 1000.0
    t_fb = t_out + d.fb_delay
    t_ev = t_out + d.ev_delay
    ts = iso_times(b.start_ms, np.stack([tr.t, t_out, t_fb, t_ev]))
    ts_guard = iso_times(b.start_ms, b.later.t_guard[None, :])[0]
    hashes = [
        [_digest(f"{m.name}:{v}:system") for v in vs]
        for m, vs in zip(s.models, b.versions, strict=True)
    ]
    seg_json = _segments_json(s)
    user_hash = (tr.user * np.uint64(0x9E3779B97F4A7C15)).tolist()
    rows = zip(
        range(len(tr.t)),
        tr.model.tolist(),
        tr.version.tolist(),
        tr.tenant.tolist(),
        tr.feature.tolist(),
        tr.locale.tolist(),
        strict=True,
    )
    emb_l = d.emb.round(3).tolist() if s.embedding_dim else None
    silent = b.effects.silent
    out_t: list[float] = []
    out_lines: list[str] = []
    for i, mi, vi, ti, fi, li in rows:
        if silent[i] == 2:
            continue
        m = s.models[mi]
        rid = f"sim{s.seed}-{b.first + i:09d}"
        req = _Request(
            i,
            m,
            f'"gen_ai.response.id":"{rid}","segment":{seg_json[(ti, fi, li)]},'
            f'"user.hash":"{user_hash[i]:016x}"',
            f'"gen_ai.request.model":"{m.name}","model_version":"{b.versions[mi][vi]}"',
            hashes[mi][vi],
        )
        out_lines.append(_input_line(req, d, ts[0][i], emb_l[i] if emb_l else None))
        out_t.append(tr.t[i] + b.lag[i, 0])
        if silent[i]:
            continue
        out_lines.append(_output_line(req, d, b.later, ts[1][i]))
        out_t.append(t_out[i] + b.lag[i, 1])
        if d.has_fb[i]:
            out_lines.append(_feedback_line(req, d, ts[2][i]))
            out_t.append(t_fb[i] + b.lag[i, 2])
        if d.has_eval[i]:
            out_lines.append(_judge_line(req, d, ts[3][i]))
            out_t.append(t_ev[i] + b.lag[i, 3])
        if b.later.has_guard[i]:
            out_lines.append(_guardrail_line(req, b.later, ts_guard[i]))
            out_t.append(b.later.t_guard[i])
    return out_t, out_lines


def _segments_json(s: Scenario) -> dict[tuple[int, int, int], str]:
    """The ``segment`` object of every (tenant, feature, locale) index triple."""
    seg_json = {}
    for ti in range(len(s.tenants)):
        for fi in range(len(s.features)):
            for li in range(len(s.locales)):
                seg_json[(ti, fi, li)] = (
                    f'{{"tenant":"{s.tenants[ti]}","feature":"{s.features[fi]}",'
                    f'"locale":"{s.locales[li]}"}}'
                )
    return seg_json


def _input_line(r: _Request, d: Draws, ts: str, emb: list[float] | None) -> str:
    i, name = r.i, r.model.name
    doc = d.docs[i]
    doc_ids = (
        f'"poisoned-{doc[0] % 7}","{name}-doc-{doc[1]}"'
        if d.injected[i]
        else f'"{name}-doc-{doc[0]}","{name}-doc-{doc[1]}","{name}-doc-{doc[2]}"'
    )
    emb_part = ',"embedding":[' + ",".join(f"{x:.3f}" for x in emb) + "]" if emb else ""
    return (
        f'{{"event_type":"input","schema_version":"1",{r.common},"timestamp":"{ts}",'
        f'{r.named},"system_instructions_hash":"{r.system_hash}",'
        f'"retrieved_doc_ids":[{doc_ids}],'
        f'"numeric_features":{{"prompt_tokens":{d.prompt_tokens[i]},'
        f'"retrieval_top_score":{d.retrieval[i]:.4f}}},'
        f'"categorical_features":{{"channel":"{_CHANNELS[d.channel[i]]}"}}{emb_part}}}'
    )


def _output_line(r: _Request, d: Draws, later: LaterDraws, ts: str) -> str:
    i, m = r.i, r.model
    scores = ",".join(f'"{c}":{d.mod[i, j]:.4f}' for j, c in enumerate(HARM_CATEGORIES))
    if m.kind == "llm":
        extra = (
            f'"groundedness":{d.ground[i]:.4f},"gen_ai.usage.input_tokens":'
            f"{d.prompt_tokens[i]},"
            f'"gen_ai.usage.output_tokens":{d.out_tokens[i]},'
            f'"gen_ai.response.finish_reasons":["{_FINISH[later.finish[i]]}"],'
        )
    else:
        extra = f'"label":"{m.labels[d.label[i] % len(m.labels)]}",' if m.labels else ""
    return (
        f'{{"event_type":"output","schema_version":"1",{r.common},"timestamp":"{ts}",'
        f'{r.named},"confidence":{d.conf[i]:.4f},"moderation":{{{scores}}},'
        f'"prompt_injection":{d.inj_score[i]:.4f},{extra}"latency_ms":{d.latency_ms[i]:.1f}}}'
    )


def _feedback_line(r: _Request, d: Draws, ts: str) -> str:
    i = r.i
    what = (
        f'"vote":"{"down" if d.negative[i] else "up"}"'
        if d.fb_is_vote[i]
        else f'"rating":{d.rating[i]}'
    )
    return (
        f'{{"event_type":"feedback","schema_version":"1",{r.common},'
        f'"timestamp":"{ts}",{r.named + "," if d.fb_named[i] else ""}{what}}}'
    )


def _judge_line(r: _Request, d: Draws, ts: str) -> str:
    judge = d.judge[r.i]
    return (
        f'{{"event_type":"evaluation","schema_version":"1",{r.common},'
        f'"timestamp":"{ts}",{r.named},"evaluator":"{JUDGE[0]}",'
        f'"gen_ai.evaluation.name":"{JUDGE[1]}",'
        f'"gen_ai.evaluation.score.value":{judge:.4f},'
        f'"passed":{"true" if judge >= 0.5 else "false"}}}'
    )


def _guardrail_line(r: _Request, later: LaterDraws, ts: str) -> str:
    i = r.i
    return (
        f'{{"event_type":"evaluation","schema_version":"1",{r.common},'
        f'"timestamp":"{ts}",{r.named},"evaluator":"{GUARDRAIL[0]}",'
        f'"gen_ai.evaluation.name":"{GUARDRAIL[1]}","kind":"guardrail",'
        f'"gen_ai.evaluation.score.value":{later.guard_score[i]:.4f},'
        f'"passed":{"false" if later.blocked[i] else "true"}}}'
    )


def iso_times(start_ms: int, seconds: npt.NDArray[np.float64]) -> list[list[str]]:
    """ISO 8601 UTC timestamps (ms, ``Z``) of offsets in seconds from ``start_ms``."""
    ms = (start_ms + np.floor(seconds * 1000.0)).astype("int64").astype("datetime64[ms]")
    strings = np.char.add(np.datetime_as_string(ms, unit="ms"), "Z")
    return [list(row) for row in strings.tolist()]


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
