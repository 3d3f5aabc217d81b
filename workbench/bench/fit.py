"""Calibration of the fit planner on a real model.

For each context × KV cache type:
- the planner's CPU total next to what the engine process really holds (its RSS) after
  a warm-up that fills the context: rel_error; worst_rel_error is the largest (target
  ≤ 0.10);
- llama.cpp's buffer sizes from the header alone (no_alloc, a sparse file) next to the
  sizes it reports when it loads the model for real: kv_ and compute_sizing_rel_error."""

from __future__ import annotations

from workbench.bench.common import model_path, threads
from workbench.engine.blocking import BlockingEngine
from workbench.engine.protocol import ChatMessage, LoadSpec, Sampling
from workbench.models.fit import DeviceBudget, FitRequest, MiB, ModelShape, layout
from workbench.models.gguf import read_header
from workbench.models.measure import measure

BIG = DeviceBudget("CPU", "cpu", 1 << 50)  # calibration asks "how much", not "does it fit"


def _rel(estimate: float, actual: float) -> float:
    return round(abs(estimate - actual) / actual, 4) if actual else 0.0


def run(model: str | None = None, quick: bool = False) -> dict:
    path = model_path(model)
    header = read_header(path)
    shape = ModelShape.from_header(header)
    contexts = [512] if quick else sorted({512, 2048, 8192, shape.n_ctx_train})
    kv_types = [("f16", False)] if quick else [("f16", False), ("q8_0", True)]
    rows = []
    for n_ctx in contexts:
        for kv, fa in kv_types:
            req = FitRequest(n_ctx=n_ctx, type_k=kv, type_v=kv, flash_attn=fa)
            sized = measure(path, req)
            planned = layout(shape, req, 0, [BIG], sized).devices[0]
            real = measure(path, req, no_alloc=False)
            with BlockingEngine() as engine:
                engine.load(LoadSpec(str(path), n_ctx=n_ctx, type_k=kv, type_v=kv,
                                     flash_attn=fa, n_threads=threads()))
                # Fill the context so every buffer page is touched, as a long chat would.
                words = max(n_ctx - 64, 16)
                engine.chat([ChatMessage("user", "word " * words)],
                            Sampling(temperature=0.0, max_tokens=1), timeout=600)
                rss = engine.stats().rss_bytes
            rows.append({
                "n_ctx": n_ctx, "kv": kv, "flash_attn": fa,
                "estimate_mib": round(planned.total / MiB, 1),
                "rss_mib": round(rss / MiB, 1),
                "rel_error": _rel(planned.total, rss),
                "kv_sizing_rel_error": _rel(sized.kv_bytes, real.kv_bytes),
                "compute_sizing_rel_error": _rel(sum(sized.compute_bytes.values()),
                                                 sum(real.compute_bytes.values())),
                "kv_formula_rel_error": _rel(layout(shape, req, 0, [BIG]).devices[0].kv,
                                             real.kv_bytes),
            })
    return {
        "benchmark": "fit",
        "model": path.name,
        "method": "tensor table + KV sized by llama.cpp (no_alloc) + resident compute "
                  "formula + runtime reserve",
        "rows": rows,
        "worst_rel_error": max(r["rel_error"] for r in rows),
    }
