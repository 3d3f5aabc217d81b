"""The engine on a real NVIDIA GPU: does it load, is the fit plan right, is it fast.

On a machine with an NVIDIA GPU and a llama.cpp build that can offload:
- the probe and the planner's verdict and GPU layers for a 4k context;
- for each context (4k, 8k, 32k) and layer count (all, about half): the model is loaded
  through the engine, its context filled, and the engine process's GPU memory read from
  NVML (per process) next to the plan's GPU total: rel_error (signed: negative is an
  under-estimate, the dangerous direction); worst_rel_error is the largest in size;
- engine tokens/s (all layers, greedy, 256 tokens) against llama.cpp's own llama-bench
  tg128 on the same model (LLAMA_BENCH): ratio_vs_native.

Without such a GPU it prints {"gpu": false, ...} and exits 0. The model: --model, else
$MODEL, else the built-in one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.bench.common import median, model_path, threads
from workbench.bench.native import native_tg
from workbench.engine.blocking import BlockingEngine
from workbench.engine.protocol import ChatMessage, LoadSpec, Sampling
from workbench.hardware.isolated import probe_isolated
from workbench.hardware.nvidia import NvmlError, PynvmlApi
from workbench.models.fit import FitRequest, MiB, ModelShape, budgets_from_snapshot, plan
from workbench.models.gguf import read_header
from workbench.models.measure import MeasureError, measure

CONTEXTS = (4096, 8192, 32768)
STORY = [ChatMessage("user", "Write a long, detailed story about a lighthouse keeper.")]


def process_gpu_bytes(pid: int) -> int | None:
    """What NVML says process `pid` holds on all NVIDIA GPUs together; None if it does not
    list the process (some containers hide other pid namespaces)."""
    api = PynvmlApi()
    try:
        api.init()
    except NvmlError:
        return None
    try:
        used = [u for i in range(api.device_count()) for p, u in api.compute_processes(i)
                if p == pid and u is not None]
    finally:
        api.shutdown()
    return sum(used) if used else None


def _gpu_total(shape: ModelShape, req: FitRequest, budgets: list, sized: Any) -> int:
    chosen = plan(shape, req, budgets, sized)
    return sum(d.total for d in chosen.devices if d.kind == "gpu")


def _case(path: Path, shape: ModelShape, budgets: list, n_ctx: int, layers: int) -> dict:
    req = FitRequest(n_ctx=n_ctx, n_gpu_layers=layers)
    try:
        sized = measure(path, req)
    except MeasureError:
        sized = None  # the formulas alone
    planned = _gpu_total(shape, req, budgets, sized)
    row: dict[str, Any] = {"n_ctx": n_ctx, "n_gpu_layers": layers,
                           "planned_mib": round(planned / MiB, 1),
                           "method": "llama.cpp sizing" if sized else "formulas"}
    with BlockingEngine() as engine:
        engine.load(LoadSpec(str(path), n_ctx=n_ctx, n_gpu_layers=layers,
                             n_threads=threads()), timeout=600)
        # Fill the context as a long chat would: every KV and compute page is touched.
        engine.chat([ChatMessage("user", "word " * max(n_ctx - 64, 16))],
                    Sampling(temperature=0.0, max_tokens=1), timeout=600)
        actual = process_gpu_bytes(engine.engine.pid or 0)
    row["actual_mib"] = round(actual / MiB, 1) if actual else None
    row["rel_error"] = round((planned - actual) / actual, 4) if actual else None
    return row


def _speeds(path: Path, layers: int, quick: bool) -> dict:
    sampling = Sampling(temperature=0.0, max_tokens=64 if quick else 256, seed=1)
    with BlockingEngine() as engine:
        engine.load(LoadSpec(str(path), n_ctx=4096, n_gpu_layers=layers,
                             n_threads=threads()), timeout=600)
        engine.chat(STORY, Sampling(max_tokens=8))  # warm-up: kernels, caches
        speeds = [engine.chat(STORY, sampling).done.timings.tokens_per_s
                  for _ in range(1 if quick else 3)]
    engine_tps = median(speeds)
    native = native_tg(path, threads=threads(), n_gpu_layers=layers)
    return {"engine_tokens_per_s": round(engine_tps, 2),
            "native_tokens_per_s": round(native, 2) if native else None,
            "ratio_vs_native": round(engine_tps / native, 3) if native else None}


def run(model: str | None = None, quick: bool = False) -> dict:
    snapshot = probe_isolated()
    nvidia = [g for g in snapshot.gpus if g.vendor == "nvidia"]
    offload = bool(snapshot.llama and snapshot.llama.supports_gpu_offload)
    result: dict[str, Any] = {"benchmark": "gpu", "gpu": bool(nvidia and offload),
                              "gpus": [g.name for g in snapshot.gpus],
                              "llama_offload": offload}
    if not result["gpu"]:
        result["reason"] = ("no NVIDIA GPU found" if not nvidia
                            else "this llama.cpp build cannot offload to a GPU")
        return result
    path = model_path(model or os.environ.get("MODEL"))
    shape = ModelShape.from_header(read_header(path))
    budgets = budgets_from_snapshot(snapshot)
    chosen = plan(shape, FitRequest(n_ctx=4096), budgets)
    half = max(1, (shape.n_layer + 1) // 2)
    rows = [_case(path, shape, budgets, n_ctx, layers)
            for n_ctx in (CONTEXTS[:1] if quick else CONTEXTS)
            for layers in (-1, half)]
    errors = [r["rel_error"] for r in rows if r["rel_error"] is not None]
    result.update({
        "model": path.name, "driver": nvidia[0].driver,
        "verdict_4k": chosen.verdict, "planned_gpu_layers_4k": chosen.n_gpu_layers,
        "rows": rows,
        "worst_rel_error": max(errors, key=abs) if errors else None,
        **_speeds(path, -1, quick),
    })
    return result
