"""Prompt tokens evaluated and time to first token for turns 1..10 of a scripted chat.

With the KV cache reused, turn N evaluates only what is new since turn N-1 (the closing
of the previous reply and the new user message).
eval_tokens_turn10_over_new = tokens evaluated at turn 10 ÷ new tokens (target ≤ 1.1)."""

from __future__ import annotations

from workbench.bench.common import model_path, threads
from workbench.engine.blocking import BlockingEngine
from workbench.engine.protocol import ChatMessage, LoadSpec, Sampling

QUESTIONS = [
    "Hi! Who are you?", "What is the capital of Italy?", "Name a famous painter.",
    "What is 12 times 12?", "Give me a synonym for happy.", "What colour is the sky?",
    "Name a planet.", "What do bees make?", "Translate 'thank you' into French.",
    "Say goodbye.",
]


def run(model: str | None = None, quick: bool = False) -> dict:
    path = model_path(model)
    sampling = Sampling(temperature=0.0, max_tokens=48, seed=1)
    rows = []
    with BlockingEngine() as engine:
        engine.load(LoadSpec(str(path), n_ctx=4096, n_threads=threads()))
        history = [ChatMessage("system", "You are a helpful assistant. Answer briefly.")]
        previous_total = 0
        for turn, question in enumerate(QUESTIONS, start=1):
            history.append(ChatMessage("user", question))
            result = engine.chat(history, sampling)
            t = result.done.timings
            new = t.n_prompt_tokens - previous_total
            rows.append({
                "turn": turn,
                "prompt_tokens": t.n_prompt_tokens,
                "new_tokens": new,
                "evaluated": t.n_evaluated_prompt_tokens,
                "ttft_ms": round(t.ttft_s * 1000, 1),
            })
            previous_total = t.n_prompt_tokens + t.n_generated_tokens
            history.append(ChatMessage("assistant", result.done.text))
    last = rows[-1]
    return {
        "benchmark": "turns",
        "model": path.name,
        "eval_tokens_turn10_over_new": round(last["evaluated"] / max(last["new_tokens"], 1), 3),
        "full_prompt_turn10": last["prompt_tokens"],
        "evaluated_turn10": last["evaluated"],
        "rows": rows,
    }
