"""LoRA adapters applied live in the engine: real llama.cpp, real adapter files.

The adapters are small random LoRAs written here with the gguf package (tests/engine/
lora_files.py) against the built-in model's own tensor shapes. The header checks are
workbench.lora.gguf_lora's (tests/lora/test_gguf_lora.py); AdapterSlots' own refusals are
also tested here without a process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.engine.lora_files import base_shapes, every_block, write_lora
from workbench.engine.adapters import WRONG_MODEL_HINT, AdapterSlots
from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.protocol import (
    AdapterSetting,
    AdaptersSet,
    ChatMessage,
    EngineError,
    Event,
    Loaded,
    LoadSpec,
    ModelInfo,
    Sampling,
)
from workbench.lora.gguf_lora import AdapterError
from workbench.models.gguf import read_header

ENGINE = pytest.mark.engine
ASK = [ChatMessage("user", "Name a fruit you like.")]
GREEDY = Sampling(temperature=0.0, max_tokens=16, seed=1)
# Comparisons are between runs that evaluate the prompt the same way (in one batch, from an
# empty KV cache): llama.cpp's one-token and batched kernels round differently, and in this
# small quantized model that grows to tenths of a logit (up to ~0.6 measured, with or without
# an adapter). Identical runs agree bit for bit; an adapter or a stale cache moves logits by
# tenths at least.
SAME = 1e-4


@dataclass(frozen=True)
class Loras:
    q: Path  # attn_q in every block
    up: Path  # ffn_up in every block
    wrong_arch: Path
    wrong_shape: Path
    truncated: Path
    corrupt: Path
    not_gguf: Path
    bad_for_llama: Path  # passes the header checks, refused by llama.cpp itself
    model: Path  # the base model: a model, not an adapter
    missing: Path


@pytest.fixture(scope="module")
def shapes(builtin_model: Path) -> dict[str, tuple[int, ...]]:
    return base_shapes(builtin_model)


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, builtin_model: Path,
          shapes: dict[str, tuple[int, ...]]) -> Loras:
    d = tmp_path_factory.mktemp("loras")
    q = write_lora(d / "q.gguf", every_block(shapes, "attn_q"), seed=1)
    up = write_lora(d / "up.gguf", every_block(shapes, "ffn_up"), seed=2)
    wrong_arch = write_lora(d / "qwen2.gguf", every_block(shapes, "attn_q"), arch="qwen2")
    # attn_k is 576 -> 192 in SmolLM2 (3 KV heads): an adapter for a 576 -> 576 attn_k
    # fits a model with as many KV heads as query heads.
    k = {"blk.3.attn_k.weight": shapes["blk.3.attn_q.weight"]}
    wrong_shape = write_lora(d / "k.gguf", k)
    data = q.read_bytes()
    truncated = d / "truncated.gguf"
    truncated.write_bytes(data[:len(data) // 2])
    corrupt = d / "corrupt.gguf"
    rng = np.random.default_rng(3)
    corrupt.write_bytes(data[:8] + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    not_gguf = d / "adapter_model.safetensors"
    not_gguf.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    bad_for_llama = d / "alora.gguf"
    _write_bad_alora(bad_for_llama, every_block(shapes, "attn_q"))
    return Loras(q, up, wrong_arch, wrong_shape, truncated, corrupt, not_gguf, bad_for_llama,
                 builtin_model, d / "missing.gguf")


def _write_bad_alora(path: Path, targets: dict[str, tuple[int, ...]]) -> None:
    """A LoRA whose aLoRA invocation tokens are a string: llama.cpp returns NULL for it."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    writer.add_string("adapter.alora.invocation_tokens", "not a list")
    for name, (n_in, n_out) in targets.items():
        writer.add_tensor(f"{name}.lora_a", np.zeros((8, n_in), dtype=np.float32))
        writer.add_tensor(f"{name}.lora_b", np.zeros((n_out, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@dataclass
class Rig:
    engine: BlockingEngine
    info: ModelInfo


@pytest.fixture(scope="module")
def rig(builtin_model: Path) -> Iterator[Rig]:
    with BlockingEngine() as blocking:
        info = blocking.load(LoadSpec(str(builtin_model), n_ctx=2048))
        yield Rig(blocking, info)


@pytest.fixture
def engine(rig: Rig) -> Iterator[BlockingEngine]:
    """The module's engine, with no adapter active before and after each test."""
    rig.engine.set_adapters([])
    yield rig.engine
    rig.engine.set_adapters([])


def logits(engine: BlockingEngine, messages: list[ChatMessage] = ASK) -> dict[int, float]:
    """The raw logits of the most likely next tokens (the "logits" stage)."""
    d = engine.distribution(messages, Sampling(), top_n=40)
    stage = d.stages[0]
    assert stage.name == "logits"
    return {c.token_id: c.logit for c in stage.candidates}


def gap(a: dict[int, float], b: dict[int, float]) -> float:
    """Largest logit difference over the tokens both list; inf if they share none."""
    common = a.keys() & b.keys()
    if not common:
        return math.inf
    return max(abs(a[t] - b[t]) for t in common)


def same(a: dict[int, float], b: dict[int, float]) -> bool:
    return a.keys() == b.keys() and gap(a, b) <= SAME


def reply(engine: BlockingEngine, messages: list[ChatMessage] = ASK) -> str:
    return engine.chat(messages, GREEDY).done.text


def set_live(engine: BlockingEngine, adapters: list[AdapterSetting]) -> tuple[AdaptersSet,
                                                                                float]:
    """set_adapters, watching every event on the way: no reload may happen."""
    started = time.perf_counter()
    rid = engine.engine.set_adapters(adapters)
    seen: list[Event] = []
    while True:
        event = engine.events.get(timeout=60)
        seen.append(event)
        assert not isinstance(event, (Loaded, EngineError)), seen
        if isinstance(event, AdaptersSet) and event.request_id == rid:
            return event, time.perf_counter() - started


# ---------------------------------------------------------------- engine


def empty_cache(engine: BlockingEngine, loras: Loras) -> None:
    """Leave no adapter active and an empty KV cache (any change of adapters empties it)."""
    engine.set_adapters([AdapterSetting(str(loras.q), 1.0)])
    engine.set_adapters([])


@ENGINE
def test_scale_zero_disabled_or_none_is_the_base_model(engine: BlockingEngine,
                                                       loras: Loras) -> None:
    empty_cache(engine, loras)
    base, base_reply = logits(engine), reply(engine)
    applied = engine.set_adapters([AdapterSetting(str(loras.q), 1.0)])
    assert applied.active == (AdapterSetting(str(loras.q), 1.0),)
    assert gap(logits(engine), base) > 0.1  # scale 1 changes the logits
    for off in ([AdapterSetting(str(loras.q), 0.0)],
                [AdapterSetting(str(loras.q), 1.0, enabled=False)],
                []):
        engine.set_adapters([AdapterSetting(str(loras.q), 1.0)])
        assert engine.set_adapters(off).active == ()
        assert same(logits(engine), base), off
        assert reply(engine) == base_reply, off


@ENGINE
def test_scales_change_live_without_a_reload(rig: Rig, engine: BlockingEngine, loras: Loras,
                                             tmp_path: Path) -> None:
    pid = engine.engine.pid
    empty_cache(engine, loras)
    base = logits(engine)
    path = tmp_path / "q.gguf"
    path.write_bytes(loras.q.read_bytes())
    seen: dict[float, dict[int, float]] = {}
    took: dict[float, float] = {}
    for scale in (1.0, 2.0, 0.5):
        event, took[scale] = set_live(engine, [AdapterSetting(str(path), scale)])
        assert event.active == (AdapterSetting(str(path), scale),)
        seen[scale] = logits(engine)
        # Read once: the engine needs the file no more (new scales are only a number).
        path.unlink(missing_ok=True)
    assert engine.engine.pid == pid and engine.stats().engine_pid == pid
    assert gap(seen[1.0], base) > 0.1
    assert gap(seen[2.0], seen[1.0]) > 0.1 and gap(seen[0.5], seen[1.0]) > 0.1
    # Roughly linear for a small change: a larger scale moves the logits further.
    assert gap(seen[2.0], base) > gap(seen[0.5], base)
    assert max(took[2.0], took[0.5]) < rig.info.load_seconds / 4, (took, rig.info)


@ENGINE
def test_a_change_empties_the_kv_cache(engine: BlockingEngine, loras: Loras) -> None:
    empty_cache(engine, loras)
    base = engine.chat(ASK, GREEDY)
    assert base.started is not None and base.started.n_cached_tokens == 0

    engine.set_adapters([AdapterSetting(str(loras.q), 1.0)])
    first = engine.chat(ASK, GREEDY)
    assert first.started is not None and first.started.n_cached_tokens == 0
    t = first.done.timings
    assert t.n_evaluated_prompt_tokens == t.n_prompt_tokens

    # The same set again changes nothing, so the cache is kept.
    engine.set_adapters([AdapterSetting(str(loras.q), 1.0)])
    again = engine.chat(ASK, GREEDY)
    assert again.started is not None and again.started.n_cached_tokens > 0

    # Back at scale 0 after scale 1: evaluated afresh, the base model's own reply.
    engine.set_adapters([AdapterSetting(str(loras.q), 0.0)])
    back = engine.chat(ASK, GREEDY)
    assert back.started is not None and back.started.n_cached_tokens == 0
    assert back.done.text == base.done.text


@ENGINE
def test_distribution_and_perplexity_see_the_adapters(engine: BlockingEngine,
                                                      loras: Loras) -> None:
    q = [AdapterSetting(str(loras.q), 1.5)]
    engine.set_adapters(q)
    fresh = logits(engine)  # evaluated from an empty cache with the adapter
    engine.set_adapters([])
    base = logits(engine)  # the cache now holds this prompt, evaluated without it
    engine.set_adapters(q)
    assert same(logits(engine), fresh)  # not the adapter-less cache's logits
    assert gap(fresh, base) > 0.1
    text = "The quick brown fox jumps over the lazy dog."
    with_q = engine.perplexity(text)
    engine.set_adapters([])
    assert abs(engine.perplexity(text).mean_nll - with_q.mean_nll) > 1e-3


@ENGINE
def test_two_adapters_apply_together(engine: BlockingEngine, loras: Loras) -> None:
    q, up = AdapterSetting(str(loras.q), 1.0), AdapterSetting(str(loras.up), 1.0)
    base = logits(engine)
    engine.set_adapters([q])
    only_q = logits(engine)
    engine.set_adapters([up])
    only_up = logits(engine)
    assert engine.set_adapters([q, up]).active == (q, up)
    both = logits(engine)
    for one in (base, only_q, only_up):
        assert gap(both, one) > 0.1
    # Dropping one leaves exactly the other.
    engine.set_adapters([q, AdapterSetting(str(loras.up), 1.0, enabled=False)])
    assert same(logits(engine), only_q)


@ENGINE
def test_a_rewritten_adapter_file_is_read_again(engine: BlockingEngine, loras: Loras,
                                                tmp_path: Path) -> None:
    path = tmp_path / "mine.gguf"
    path.write_bytes(loras.q.read_bytes())
    engine.set_adapters([AdapterSetting(str(path), 1.0)])
    as_q = logits(engine)
    path.write_bytes(loras.up.read_bytes())  # retrained, say: same name, new weights
    engine.set_adapters([AdapterSetting(str(path), 1.0)])
    as_up = logits(engine)
    assert gap(as_up, as_q) > 0.1
    engine.set_adapters([AdapterSetting(str(loras.up), 1.0)])
    assert same(logits(engine), as_up)
    assert engine.stats().model_loaded  # the replaced adapter was freed without harm


# What each unfit file's refusal says.
REFUSALS = {
    "wrong_arch": "The adapter is for the qwen2 architecture, but the model is llama.",
    "wrong_shape": "blk.3.attn_k.weight has shape [576, 192] in the model, but the adapter "
                   "changes a [576, 576] matrix",
    "model": "is a model, not a LoRA adapter",
    "truncated": "truncated",
    "corrupt": "corrupt.gguf",
    "not_gguf": "is not a GGUF file",
    "missing": "does not exist",
    "bad_for_llama": "llama.cpp could not read the adapter",
}


@ENGINE
@pytest.mark.parametrize(("which", "says"), list(REFUSALS.items()), ids=list(REFUSALS))
def test_unfit_adapters_are_refused_and_the_engine_goes_on(
        engine: BlockingEngine, loras: Loras, which: str, says: str) -> None:
    pid = engine.engine.pid
    q = [AdapterSetting(str(loras.q), 1.0)]
    engine.set_adapters(q)
    with_q = logits(engine)
    bad = AdapterSetting(str(getattr(loras, which)), 1.0)
    with pytest.raises(EngineFailure) as failure:
        engine.set_adapters([*q, bad])
    event = failure.value.event
    assert isinstance(event, EngineError) and event.kind == "adapter"
    assert says in event.message, event.message
    assert event.hint
    # Nothing changed: the previous adapter still applies, the engine still serves.
    assert engine.engine.pid == pid
    assert same(logits(engine), with_q)
    assert engine.chat(ASK, Sampling(temperature=0.0, max_tokens=3)).done.reason == "length"
    # Disabled, a bad adapter is not even looked at.
    engine.set_adapters([AdapterSetting(bad.path, 1.0, enabled=False)])


@ENGINE
def test_adapters_need_a_model_and_go_with_it(builtin_model: Path, loras: Loras) -> None:
    with BlockingEngine() as blocking:
        with pytest.raises(EngineFailure) as failure:
            blocking.set_adapters([AdapterSetting(str(loras.q), 1.0)])
        assert failure.value.event.kind == "not_loaded"  # type: ignore[union-attr]
        spec = LoadSpec(str(builtin_model), n_ctx=512)
        blocking.load(spec)
        base = logits(blocking)
        blocking.set_adapters([AdapterSetting(str(loras.q), 1.0)])
        assert gap(logits(blocking), base) > 0.1
        blocking.load(spec)  # a new model starts without adapters
        assert same(logits(blocking), base)
        blocking.set_adapters([AdapterSetting(str(loras.q), 1.0)])  # read again for it
        assert gap(logits(blocking), base) > 0.1


# ---------------------------------------------------------------- without a process


def _slots(builtin_model: Path, model_path: Path | None = None,
           **metadata: object) -> AdapterSlots:
    """Slots for the built-in model with no llama.cpp behind them: only refusals that come
    before llama.cpp is asked can be tested so."""
    header = read_header(builtin_model)
    header.metadata.update(metadata)
    return AdapterSlots(None, str(model_path or builtin_model), header)


def test_bad_requests_are_refused_before_llama_cpp(builtin_model: Path, loras: Loras) -> None:
    slots = _slots(builtin_model)
    with pytest.raises(AdapterError, match="not a number"):
        slots.apply([AdapterSetting(str(loras.q), math.nan)])
    twice = [AdapterSetting(str(loras.q), 1.0),
             AdapterSetting(f"{loras.q.parent}/./{loras.q.name}", 0.5)]
    with pytest.raises(AdapterError, match="twice"):
        slots.apply(twice)
    # Nothing applies: the same (empty) set as now, so nothing to do.
    assert slots.apply([AdapterSetting(str(loras.q), 0.0),
                        AdapterSetting(str(loras.up), 1.0, enabled=False)]) is False


def test_unfit_adapters_are_refused_with_every_fatal_problem(builtin_model: Path,
                                                             loras: Loras) -> None:
    slots = _slots(builtin_model)
    with pytest.raises(AdapterError) as refused:
        slots.apply([AdapterSetting(str(loras.wrong_shape), 1.0)])
    assert refused.value.message == (
        "blk.3.attn_k.weight has shape [576, 192] in the model, but the adapter changes a "
        "[576, 576] matrix.")
    assert refused.value.hint == WRONG_MODEL_HINT
    with pytest.raises(AdapterError, match="does not exist"):
        slots.apply([AdapterSetting(str(loras.missing), 1.0)])


def test_a_split_model_is_checked_against_all_its_parts(builtin_model: Path, loras: Loras,
                                                        tmp_path: Path) -> None:
    # A split model's first part lists only its own tensors; AdapterSlots reads all parts
    # when an adapter first needs them. Here they cannot be read (the "parts" are gone):
    # the metadata is still checked, the tensors are left to llama.cpp.
    gone = _slots(builtin_model, tmp_path / "gone-00001-of-00002.gguf", **{"split.count": 2})
    gone._check(str(loras.wrong_shape))  # llama.cpp would refuse it
    with pytest.raises(AdapterError, match="qwen2 architecture"):
        gone._check(str(loras.wrong_arch))
    # Readable "parts" (here the one-file model itself) give every tensor.
    whole = _slots(builtin_model, **{"split.count": 2})
    with pytest.raises(AdapterError, match=r"\[576, 192\]"):
        whole._check(str(loras.wrong_shape))
