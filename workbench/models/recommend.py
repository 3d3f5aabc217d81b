"""Which quantization of a repository to download: a fit verdict for every file from the
header of one of them.

Reading each file's header remotely costs a round of range requests per file; the files
of one repository are the same model at different quantizations, so one header (say the
smallest file's) gives the architecture, and every other file's weights are that
header's weights scaled by the file's size. The KV cache, compute buffers and context
limits depend on the architecture alone and are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from workbench.models.fit import DeviceBudget, FitPlan, FitRequest, ModelShape, plan
from workbench.models.hub import GGUFFile


@dataclass(frozen=True)
class Recommendation:
    best_full: GGUFFile | None  # the most precise file that runs without splitting
    best_partial: GGUFFile | None  # the most precise file that runs split over GPU and CPU


def scaled_shape(ref_shape: ModelShape, ref_size: int, size: int) -> ModelShape:
    """`ref_shape` (read from a file of `ref_size` bytes) with the weights of a file of
    `size` bytes: the same model at another quantization."""
    # A file is its header (metadata, vocabulary: the same in every quantization) plus its
    # weights; only the weights shrink or grow with the quantization.
    overhead = max(ref_size - ref_shape.weights_bytes, 0)
    ref_weights = ref_size - overhead
    if ref_weights <= 0 or size == ref_size:
        return ref_shape
    ratio = max(size - overhead, 0) / ref_weights

    def scale(n: int) -> int:
        return round(n * ratio)

    return replace(
        ref_shape,
        layer_bytes=tuple(scale(b) for b in ref_shape.layer_bytes),
        token_embd_bytes=scale(ref_shape.token_embd_bytes),
        output_bytes=scale(ref_shape.output_bytes),
        weights_bytes=scale(ref_shape.weights_bytes),
    )


def fit_labels(ref_shape: ModelShape, ref_size: int, files: Iterable[GGUFFile],
               req: FitRequest, budgets: Sequence[DeviceBudget]) -> dict[str, FitPlan]:
    """A plan per file (by filename) on this machine, for the request `req`."""
    return {f.filename: plan(scaled_shape(ref_shape, ref_size, f.size), req, budgets)
            for f in files}


def _fits_whole(p: FitPlan) -> bool:
    """Runs without splitting the model: all on the GPU, or all in RAM where no GPU can
    be used (where one can, a CPU-only verdict means the GPU had no room)."""
    has_gpu = any(d.kind == "gpu" for d in p.devices)
    return p.verdict == "full_gpu" or (p.verdict == "cpu" and not has_gpu)


def recommend(labels: Mapping[str, FitPlan], files: Iterable[GGUFFile]) -> Recommendation:
    """The largest file (for one model, the most bits per weight: nominal figures are only
    approximate, sizes are exact) in each of the two useful verdicts."""
    full: GGUFFile | None = None
    partial: GGUFFile | None = None
    for f in sorted(files, key=lambda f: (f.size, f.filename)):
        p = labels.get(f.filename)
        if p is None:
            continue
        if _fits_whole(p):
            full = f
        elif p.verdict == "partial":
            partial = f
    return Recommendation(best_full=full, best_partial=partial)
