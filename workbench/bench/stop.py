"""How fast Stop takes effect: from cancel() to the engine's 'cancelled' reply arriving
in the app, while tokens stream and while a long prompt is being evaluated.

ratio_vs_target = worst latency ÷ 100 ms (target ≤ 1). The per-token time is printed
as the other reference: during streaming, a stop can wait for at most one token."""

from __future__ import annotations

import threading
import time

from workbench.bench.common import model_path, threads
from workbench.engine.blocking import BlockingEngine
from workbench.engine.protocol import ChatMessage, LoadSpec, Sampling

TARGET_S = 0.100


def _stop_latency(engine: BlockingEngine, messages: list[ChatMessage], after_tokens: int,
                  delay_s: float = 0.0) -> tuple[float, str]:
    sampling = Sampling(temperature=0.8, max_tokens=4000, seed=7)
    state = {"count": 0, "cancelled_at": 0.0}
    fired = threading.Event()

    def cancel() -> None:
        state["cancelled_at"] = time.perf_counter()
        engine.engine.cancel()

    def on_token(_text: str) -> None:
        state["count"] += 1
        if after_tokens and state["count"] == after_tokens and not fired.is_set():
            fired.set()
            cancel()

    if not after_tokens:  # cancel during prompt evaluation, from another thread
        timer = threading.Timer(delay_s, cancel)
        timer.start()
    result = engine.chat(messages, sampling, on_token=on_token)
    return time.perf_counter() - state["cancelled_at"], result.done.reason


def run(model: str | None = None, quick: bool = False) -> dict:
    path = model_path(model)
    trials = 2 if quick else 8
    streaming, prompt_eval, reasons = [], [], set()
    with BlockingEngine() as engine:
        engine.load(LoadSpec(str(path), n_ctx=8192, n_batch=2048, n_ubatch=512,
                             n_threads=threads()))
        story = [ChatMessage("user", "Write a very long story about a ship.")]
        for i in range(trials):
            latency, reason = _stop_latency(engine, story, after_tokens=10 + i)
            streaming.append(latency)
            reasons.add(reason)
        # A prompt that takes well over a second to evaluate; stop 0.3 s into it.
        for i in range(trials):
            long_prompt = [ChatMessage("user", f"{i} " + "The quick brown fox. " * 1200)]
            latency, reason = _stop_latency(engine, long_prompt, after_tokens=0, delay_s=0.3)
            prompt_eval.append(latency)
            reasons.add(reason)
        token_time = 1 / max(engine.chat(story, Sampling(temperature=0.0, max_tokens=64))
                             .done.timings.tokens_per_s, 1e-9)
    worst = max(streaming + prompt_eval)
    return {
        "benchmark": "stop",
        "model": path.name,
        "trials": trials,
        "streaming_stop_ms_median": round(sorted(streaming)[len(streaming) // 2] * 1000, 1),
        "streaming_stop_ms_max": round(max(streaming) * 1000, 1),
        "prompt_eval_stop_ms_median": round(sorted(prompt_eval)[len(prompt_eval) // 2] * 1000,
                                            1),
        "prompt_eval_stop_ms_max": round(max(prompt_eval) * 1000, 1),
        "per_token_ms": round(token_time * 1000, 1),
        "reasons": sorted(reasons),
        "ratio_vs_target": round(worst / TARGET_S, 3),
    }
