"""The next token's distribution, stage by stage, as llama.cpp's sampler chain shapes it.

llama-cpp-python builds one chain per reply (`Llama._init_sampler`):

    penalties -> top_k -> typical -> top_p -> min_p -> temp -> dist

with min_keep = 1, or `penalties -> greedy` for temperature 0 and `penalties -> dist` for
a negative temperature. Temperature comes last, so top_p and min_p judge the
temperature-1 probabilities. Each stage below repeats the rule of its counterpart in
llama.cpp's `src/llama-sampler.cpp`, including its float32 arithmetic where a threshold
decides who survives, so the final stage is the distribution the sampler draws from.

The penalties sampler only counts tokens it accepted, and llama-cpp-python accepts only
the tokens it samples, never the prompt: for the first token of a reply it changes
nothing. `recent` lets a caller show a later token's penalties all the same.

Runs inside the engine worker (numpy only; the llama.cpp helpers take a `Llama`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.engine.protocol import Candidate, Distribution, SamplerStage, Sampling

STAGE_NAMES = ("logits", "penalties", "top_k", "typical_p", "top_p", "min_p", "temperature")
_F32 = np.float32


class NotShown(Exception):
    """The settings select a sampler whose stages are not shown (Mirostat)."""


@dataclass
class Stage:
    """One stage's survivors, most probable first, with their full renormalised probs."""

    name: str
    ids: np.ndarray  # int64
    logits: np.ndarray  # float32, descending
    probs: np.ndarray  # float64, sums to 1

    @property
    def n_kept(self) -> int:
        return len(self.ids)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - float(logits.max())
    e = np.exp(shifted)
    return e / e.sum()


def _softmax32(logits: np.ndarray) -> np.ndarray:
    # llama_sampler_softmax_impl: float expf and a float running sum.
    e = np.exp(logits - logits.max()).astype(_F32)
    return (e / np.cumsum(e, dtype=_F32)[-1]).astype(_F32)


def _stage(name: str, ids: np.ndarray, logits: np.ndarray) -> Stage:
    probs = _softmax64(logits)
    # A stage always keeps at least one token and is a distribution over its survivors.
    assert len(ids) >= 1 and abs(float(probs.sum()) - 1.0) < 1e-6, (name, probs.sum())
    return Stage(name, ids, logits, probs)


def _sorted(ids: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-logits, kind="stable")
    return ids[order], logits[order]


def _penalties(ids: np.ndarray, logits: np.ndarray, s: Sampling,
               recent: Sequence[int]) -> np.ndarray:
    """llama_sampler_penalties_apply over the last `repeat_last_n` accepted tokens."""
    disabled = s.repeat_last_n == 0 or (
        s.repeat_penalty == 1.0 and s.frequency_penalty == 0.0 and s.presence_penalty == 0.0)
    if disabled or not recent:
        return logits
    window = recent if s.repeat_last_n < 0 else recent[-s.repeat_last_n:]
    out = logits.copy()
    index = {int(t): i for i, t in enumerate(ids)}
    for token, count in Counter(window).items():
        i = index.get(int(token))
        if i is None:
            continue
        logit = out[i]
        logit = logit * _F32(s.repeat_penalty) if logit <= 0 else logit / _F32(s.repeat_penalty)
        out[i] = logit - _F32(count * s.frequency_penalty + s.presence_penalty)
    return out


def _typical(logits: np.ndarray, p: float) -> np.ndarray:
    """Indices kept by llama_sampler_typical_apply (input sorted by logit, descending)."""
    probs = _softmax32(logits)
    with np.errstate(divide="ignore"):
        logp = np.log(probs).astype(_F32)
    entropy = _F32(-np.cumsum(np.where(probs > 0, probs * logp, 0), dtype=_F32)[-1])
    shifted = np.abs(-logp - entropy)
    order = np.argsort(shifted, kind="stable")
    cum = np.cumsum(probs[order], dtype=_F32)
    # Strictly greater than p here (top_p uses >=); min_keep 1 holds from the first token.
    hit = np.nonzero(cum > _F32(p))[0]
    last = int(hit[0]) + 1 if len(hit) else len(order)
    return order[:last]


def _top_p(logits: np.ndarray, p: float) -> int:
    """How many of the (descending) tokens llama_sampler_top_p_apply keeps: up to and
    including the one whose cumulative probability reaches p."""
    cum = np.cumsum(_softmax32(logits), dtype=_F32)
    hit = np.nonzero(cum >= _F32(p))[0]
    return int(hit[0]) + 1 if len(hit) else len(logits)


def sampler_stages(logits: np.ndarray, sampling: Sampling,
                   recent: Sequence[int] = ()) -> list[Stage]:
    """Every stage of the chain llama-cpp-python builds for `sampling`, on raw `logits`.

    Stages the chain does not contain for these settings (top_k .. min_p under greedy or a
    negative temperature) pass their input through, so the list always has the same names.
    """
    s = sampling
    if s.temperature > 0 and s.mirostat_mode in (1, 2):
        raise NotShown("The distribution is not shown for Mirostat, which replaces "
                       "top-k, typical, top-p, min-p and temperature with its own rule.")
    ids, cur = _sorted(np.arange(len(logits), dtype=np.int64), np.asarray(logits, dtype=_F32))
    stages = [_stage("logits", ids, cur)]

    ids, cur = _sorted(ids, _penalties(ids, cur, s, recent))
    stages.append(_stage("penalties", ids, cur))

    truncating = s.temperature > 0
    if truncating and 0 < s.top_k < len(ids):
        ids, cur = ids[:s.top_k], cur[:s.top_k]
    stages.append(_stage("top_k", ids, cur))

    if truncating and s.typical_p < 1.0:
        keep = _typical(cur, s.typical_p)
        ids, cur = _sorted(ids[keep], cur[keep])
    stages.append(_stage("typical_p", ids, cur))

    if truncating and s.top_p < 1.0:
        n = _top_p(cur, s.top_p)
        ids, cur = ids[:n], cur[:n]
    stages.append(_stage("top_p", ids, cur))

    if truncating and s.min_p > 0.0:
        # min logit for p_i >= min_p * p_max, computed in float as llama.cpp does
        floor = _F32(cur[0]) + _F32(np.log(_F32(s.min_p)))
        keep = cur >= floor
        ids, cur = ids[keep], cur[keep]
    stages.append(_stage("min_p", ids, cur))

    if s.temperature > 0:
        cur = (cur / _F32(s.temperature)).astype(_F32)
        stages.append(_stage("temperature", ids, cur))
    elif s.temperature == 0:
        # The greedy sampler: the first token with the highest logit.
        stages.append(_stage("temperature", ids[:1], cur[:1]))
    else:
        # A negative temperature: llama-cpp-python samples the penalised logits as they are.
        stages.append(_stage("temperature", ids, cur))
    return stages


def to_distribution(request_id: int, stages: list[Stage], prompt_tokens: int, top_n: int,
                    piece: Any) -> Distribution:
    """The protocol event; `piece(token_id) -> str` gives a token's text."""
    top_n = max(1, top_n)
    out = []
    for st in stages:
        cands = tuple(
            Candidate(int(t), piece(int(t)), float(lg), float(p))
            for t, lg, p in zip(st.ids[:top_n], st.logits[:top_n], st.probs[:top_n],
                                strict=True)
        )
        out.append(SamplerStage(st.name, cands, st.n_kept))
    return Distribution(request_id, tuple(out), prompt_tokens)


# ---------------------------------------------------------------- llama.cpp side


def eval_prompt(llm: Any, tokens: list[int]) -> None:
    """Evaluate `tokens` the way `Llama.generate` does before its first sample: keep the
    longest cached prefix and decode the rest, always at least the last token.

    Afterwards the KV cache holds exactly `tokens` with fresh logits, so the next chat turn
    with the same prompt samples at once instead of evaluating it again.
    """
    if llm.n_tokens == len(tokens) and not llm._requires_eval and \
            list(llm._input_ids) == tokens:
        return
    prefix = 0
    for a, b in zip(llm._input_ids, tokens, strict=False):
        if a != b:
            break
        prefix += 1
    reuse = min(prefix, len(tokens) - 1)
    if reuse > 0 and llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
        llm.n_tokens = reuse
    else:
        llm.reset()
    llm.eval(tokens[llm.n_tokens:])


def last_logits(llm: Any) -> np.ndarray:
    """A copy of the logits of the last evaluated position."""
    ptr = llm._ctx.get_logits_ith(-1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(_F32, copy=True)
