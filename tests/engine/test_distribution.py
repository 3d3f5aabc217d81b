"""The next-token distribution and perplexity, against llama.cpp itself.

The sampler-agreement test draws tokens with llama-cpp-python's own sampler chain on the
same prompt in this process (tests may import llama_cpp; only the GUI process must not)
and compares the frequencies with what the engine displays.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.engine import distribution as dist
from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.protocol import ChatMessage, Distribution, Sampling

pytestmark = pytest.mark.engine
ASK = [ChatMessage("user", "Name a fruit you like.")]
GREEDY = Sampling(temperature=0.0, max_tokens=30, seed=1)
# Filters that all bite, and penalties that would bite if the prompt counted: they must
# not change the first token of a reply (llama-cpp-python never feeds the prompt to them).
AGREE = Sampling(temperature=1.3, top_k=40, top_p=0.9, min_p=0.02, repeat_penalty=1.5,
                 presence_penalty=0.5, frequency_penalty=0.2)


@pytest.fixture(scope="module")
def llm(builtin_model: Path) -> Iterator[Any]:
    from llama_cpp import Llama

    model = Llama(model_path=str(builtin_model), n_ctx=2048, verbose=False)
    yield model
    model.close()


def prompt_logits(engine: BlockingEngine, llm: Any, messages: list[ChatMessage]) -> np.ndarray:
    """Raw logits of the next token after the exact prompt the engine sends."""
    prompt = engine.chat(messages, Sampling(temperature=0.0, max_tokens=1)).started
    assert prompt is not None
    tokens = llm.tokenize(prompt.prompt_text.encode(), add_bos=False, special=True)
    assert len(tokens) == prompt.n_prompt_tokens
    llm.reset()
    llm.eval(tokens)
    return dist.last_logits(llm)


def final(d: Distribution) -> dict[int, float]:
    return {c.token_id: c.prob for c in d.stages[-1].candidates}


def test_stages_come_in_chain_order_and_are_distributions(engine: BlockingEngine) -> None:
    d = engine.distribution(ASK, Sampling(), top_n=20)
    assert tuple(s.name for s in d.stages) == dist.STAGE_NAMES
    assert d.prompt_tokens > 5
    n_vocab = d.stages[0].n_kept
    assert n_vocab > 1000 and d.stages[1].n_kept == n_vocab
    for prev, stage in zip(d.stages, d.stages[1:], strict=False):
        assert 1 <= stage.n_kept <= prev.n_kept
    for stage in d.stages:
        probs = [c.prob for c in stage.candidates]
        assert len(probs) == min(20, stage.n_kept)
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1 + 1e-6
        if stage.n_kept <= 20:
            assert sum(probs) == pytest.approx(1, abs=1e-6)


def test_full_stages_sum_to_one_on_raw_logits(engine: BlockingEngine, llm: Any) -> None:
    logits = prompt_logits(engine, llm, ASK)
    for stage in dist.sampler_stages(logits, AGREE):
        assert float(stage.probs.sum()) == pytest.approx(1, abs=1e-9)
        assert len(set(stage.ids.tolist())) == stage.n_kept


def test_top_k_one_and_temperature_zero_are_one_hot_on_the_argmax(
        engine: BlockingEngine) -> None:
    for sampling in (Sampling(top_k=1, temperature=0.8), Sampling(temperature=0.0)):
        d = engine.distribution(ASK, sampling)
        argmax = max(d.stages[0].candidates, key=lambda c: c.logit).token_id
        last = d.stages[-1]
        assert last.n_kept == 1 and final(d) == {argmax: 1.0}


def test_greedy_reply_starts_with_the_shown_argmax(engine: BlockingEngine) -> None:
    before = engine.chat(ASK, GREEDY).done.text
    engine.chat([ChatMessage("user", "Hi")], GREEDY)  # something else in the cache
    d = engine.distribution(ASK, GREEDY)
    # The distribution left this prompt evaluated in the cache: the reply reuses it.
    result = engine.chat(ASK, GREEDY)
    assert result.started is not None and result.started.n_cached_tokens == d.prompt_tokens - 1
    assert result.done.text == before
    assert before.startswith(d.stages[-1].candidates[0].text)


def test_min_p_removes_exactly_the_improbable_tokens(engine: BlockingEngine, llm: Any) -> None:
    logits = prompt_logits(engine, llm, ASK).astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    only_min_p = Sampling(temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, min_p=0.01)
    expected = int((p >= 0.01 * p.max()).sum())
    d = engine.distribution(ASK, only_min_p, top_n=500)
    assert d.stages[4].n_kept == p.size  # nothing before min_p cut
    assert d.stages[5].n_kept == expected and d.stages[6].n_kept == expected
    kept = {c.token_id for c in d.stages[5].candidates}
    assert kept == set(np.nonzero(p >= 0.01 * p.max())[0].tolist())


def test_displayed_distribution_matches_llama_cpp_sampling(
        engine: BlockingEngine, llm: Any) -> None:
    shown = engine.distribution(ASK, AGREE, top_n=200)
    assert shown.stages[-1].n_kept <= 200  # every survivor is displayed
    assert shown.stages[1].candidates == shown.stages[0].candidates  # penalties: no-op
    probs = final(shown)

    logits = prompt_logits(engine, llm, ASK)
    local = dist.sampler_stages(logits, AGREE)
    assert [s.n_kept for s in local] == [s.n_kept for s in shown.stages]

    # Fresh chains (as every reply builds one), seeded 0..N-1: independent first tokens.
    n = 16000
    llm.last_n_tokens_size = AGREE.repeat_last_n
    draws: Counter[int] = Counter()
    for seed in range(n):
        llm.set_seed(seed)
        chain = llm._init_sampler(
            top_k=AGREE.top_k, top_p=AGREE.top_p, min_p=AGREE.min_p,
            typical_p=AGREE.typical_p, temp=AGREE.temperature,
            repeat_penalty=AGREE.repeat_penalty, frequency_penalty=AGREE.frequency_penalty,
            presence_penalty=AGREE.presence_penalty)
        draws[chain.sample(llm._ctx, -1)] += 1
        chain.close()
    assert set(draws) <= set(probs)  # never a token the display says was cut

    tv = 0.5 * sum(abs(draws[t] / n - p) for t, p in probs.items())
    # E|f_i - p_i| <= sqrt(p_i(1-p_i)/N), so E[TV] <= ½·Σ sqrt(p_i(1-p_i)/N) (~0.018 for
    # these ~26 survivors); TV's SD is ~0.0025 here, so 0.03 is about 6 SDs above its
    # mean, yet below what temperature-first ordering (~0.06) or penalising the prompt
    # (~0.04) would give. Seeds are fixed: the outcome is deterministic anyway.
    expected = 0.5 * sum(math.sqrt(p * (1 - p) / n) for p in probs.values())
    bound = 0.03
    assert expected < 0.65 * bound, expected
    assert tv <= bound, (tv, expected)

    # Chi-square over cells expecting >= 5 draws (the rest pooled), against its 99.9%
    # quantile (Wilson-Hilferty; z = 3.09).
    cells, pooled_obs, pooled_exp = [], 0, 0.0
    for t, p in probs.items():
        if p * n >= 5:
            cells.append((draws[t], p * n))
        else:
            pooled_obs, pooled_exp = pooled_obs + draws[t], pooled_exp + p * n
    if pooled_exp >= 5:
        cells.append((pooled_obs, pooled_exp))
    chi2 = sum((o - e) ** 2 / e for o, e in cells)
    k = len(cells) - 1
    critical = k * (1 - 2 / (9 * k) + 3.09 * math.sqrt(2 / (9 * k))) ** 3
    print(f"TV {tv:.4f} (E ≤ {expected:.4f}, bound {bound}); chi2 {chi2:.1f} on {k} df "
          f"(99.9% {critical:.1f})")
    assert chi2 < critical


def test_mirostat_is_not_shown(engine: BlockingEngine) -> None:
    with pytest.raises(EngineFailure) as info:
        engine.distribution(ASK, Sampling(mirostat_mode=2))
    assert info.value.event.kind == "unsupported"


def test_perplexity_prefers_natural_text_and_keeps_chat_working(
        engine: BlockingEngine) -> None:
    before = engine.chat(ASK, GREEDY).done.text
    sentence = "The children walked to school together on a sunny morning in early spring."
    words = sentence.rstrip(".").split()
    random.Random(3).shuffle(words)
    natural = engine.perplexity(sentence)
    shuffled = engine.perplexity(" ".join(words) + ".")
    assert natural.n_tokens == len(natural.tokens) >= 10
    assert "".join(piece for piece, _ in natural.tokens) in sentence
    assert math.isfinite(natural.perplexity) and natural.perplexity > 1
    assert natural.perplexity == pytest.approx(math.exp(natural.mean_nll))
    assert natural.mean_nll == pytest.approx(np.mean([v for _, v in natural.tokens]))
    assert natural.perplexity < shuffled.perplexity
    # Perplexity overwrote the KV cache: the next turn must evaluate from scratch.
    after = engine.chat(ASK, GREEDY)
    assert after.started is not None and after.started.n_cached_tokens == 0
    assert after.done.text == before


def test_perplexity_beyond_the_context_is_refused(engine: BlockingEngine) -> None:
    with pytest.raises(EngineFailure) as info:
        engine.perplexity("word " * 3000)
    assert info.value.event.kind == "context_full"
