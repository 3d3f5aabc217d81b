"""Generation speed through the engine process next to a raw in-process
llama-cpp-python loop: same model, threads, prompt and greedy sampling, one run.

ratio_vs_raw = engine tokens/s ÷ raw tokens/s (target ≥ 0.95). With LLAMA_BENCH naming
llama.cpp's own llama-bench (bench/native.py), also ratio_vs_native = engine tokens/s ÷
llama-bench's tg128 on the same model and threads."""

from __future__ import annotations

import time

from workbench.bench.common import median, model_path, threads
from workbench.bench.native import native_tg
from workbench.engine.blocking import BlockingEngine
from workbench.engine.generation import TokenText
from workbench.engine.protocol import ChatMessage, LoadSpec, Sampling

PROMPT = [ChatMessage("user", "Write a long, detailed story about a lighthouse keeper.")]
N_CTX = 2048


def raw_tokens_per_s(llm, prompt_text: str, sampling: Sampling) -> tuple[float, int]:
    """The reference: llama-cpp-python's own generate loop, decoding each token's text."""
    import llama_cpp

    pieces = TokenText(llm._model)
    tokens = llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
    llm.reset()
    llm.set_seed(sampling.seed or 0)
    llm.last_n_tokens_size = sampling.repeat_last_n
    first = last = 0.0
    n = 0
    for token in llm.generate(tokens, top_k=sampling.top_k, top_p=sampling.top_p,
                              min_p=sampling.min_p, typical_p=sampling.typical_p,
                              temp=sampling.temperature, repeat_penalty=sampling.repeat_penalty):
        now = time.perf_counter()
        if n == 0:
            first = now
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or n >= sampling.max_tokens:
            break
        pieces.piece(token)
        n += 1
        last = now
    return ((n - 1) / (last - first) if n > 1 else 0.0), n


def run(model: str | None = None, quick: bool = False) -> dict:
    from llama_cpp import Llama

    path = model_path(model)
    n_threads = threads()
    sampling = Sampling(temperature=0.0, max_tokens=64 if quick else 256, seed=1)
    reps = 1 if quick else 5
    engine_speeds, raw_speeds, counts = [], [], set()
    with BlockingEngine() as engine:
        engine.load(LoadSpec(str(path), n_ctx=N_CTX, n_threads=n_threads))
        prompt_text = engine.chat(PROMPT, Sampling(max_tokens=1)).started.prompt_text
        raw = Llama(str(path), n_ctx=N_CTX, n_threads=n_threads, n_threads_batch=n_threads,
                    verbose=False)
        # Alternate the two so drift in machine load hits both alike.
        for _ in range(reps):
            result = engine.chat(PROMPT, sampling)
            engine_speeds.append(result.done.timings.tokens_per_s)
            counts.add(result.done.timings.n_generated_tokens)
            speed, n = raw_tokens_per_s(raw, prompt_text, sampling)
            raw_speeds.append(speed)
            counts.add(n)
        raw.close()
    engine_tps, raw_tps = median(engine_speeds), median(raw_speeds)
    native = native_tg(path, threads=n_threads)
    return {
        "benchmark": "throughput",
        "model": path.name,
        "threads": n_threads,
        "tokens_per_reply": sorted(counts),
        "repetitions": reps,
        "engine_tokens_per_s": round(engine_tps, 2),
        "raw_tokens_per_s": round(raw_tps, 2),
        "ratio_vs_raw": round(engine_tps / raw_tps, 3) if raw_tps else 0.0,
        "native_tokens_per_s": round(native, 2) if native else None,
        "ratio_vs_native": round(engine_tps / native, 3) if native else None,
    }
