"""Perplexity of a text under the loaded model. Runs inside the engine worker.

The chat path evaluates with logits for the last position only (`logits_all=False`), so
this decodes through llama.cpp's batch API itself, asking for every position's logits.
It overwrites the KV cache; the caller's `Llama` is reset afterwards so the next chat
turn evaluates its prompt from scratch instead of trusting a cache that no longer holds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from workbench.engine.protocol import PerplexityResult

# Rows of n_vocab logits turned into log-probabilities at a time: bounds the float64
# scratch memory for large vocabularies.
_ROWS = 64


def token_nlls(llm: Any, tokens: list[int]) -> np.ndarray:
    """Negative log-likelihood (nats) of tokens[1:], each given the tokens before it."""
    n_vocab, n_batch = llm.n_vocab(), llm.n_batch
    targets = np.asarray(tokens[1:], dtype=np.int64)
    nll = np.empty(len(targets), dtype=np.float64)
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.reset()
    try:
        # The last token predicts nothing we score: positions 0 .. n-2 are enough.
        inputs = tokens[:-1]
        for start in range(0, len(inputs), n_batch):
            chunk = inputs[start:start + n_batch]
            llm._batch.set_batch(batch=chunk, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            rows = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), n_vocab))
            for r in range(0, len(chunk), _ROWS):
                block = rows[r:r + _ROWS].astype(np.float64)
                top = block.max(axis=1, keepdims=True)
                logz = top[:, 0] + np.log(np.exp(block - top).sum(axis=1))
                want = targets[start + r:start + r + len(block)]
                nll[start + r:start + r + len(block)] = logz - block[np.arange(len(block)),
                                                                     want]
    finally:
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.reset()
    return nll


def score_text(request_id: int, llm: Any, tokens: list[int],
               piece: Callable[[int], str]) -> PerplexityResult:
    """Perplexity over tokens[1:]: the first token has nothing before it to predict it."""
    nll = token_nlls(llm, tokens)
    mean = float(nll.mean())
    return PerplexityResult(
        request_id, len(nll), mean, math.exp(mean),
        tuple((piece(t), float(v)) for t, v in zip(tokens[1:], nll, strict=True)))
