"""A failed load keeps the model that was working (with its adapters), and a context that
does not fit is named as such: its size, the memory llama.cpp asked for, the fixes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.lora_files import base_shapes, every_block, write_lora
from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.protocol import AdapterSetting, ChatMessage, EngineError, LoadSpec, Sampling

pytestmark = pytest.mark.engine
ASK = [ChatMessage("user", "Name a colour.")]
GREEDY = Sampling(temperature=0.0, max_tokens=12, seed=1)
HUGE_CTX = 10_000_000  # about 215 GiB of f16 KV cache for the built-in model


def _overcommits() -> bool:
    """With vm.overcommit_memory=1 every allocation succeeds (until touched), so a context
    too large for the machine is created after all."""
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1"
    except OSError:
        return False


needs_refused_allocations = pytest.mark.skipif(
    _overcommits(), reason="vm.overcommit_memory=1: llama.cpp's huge allocation succeeds")


@pytest.fixture
def engine(builtin_model: Path) -> Iterator[BlockingEngine]:
    with BlockingEngine() as blocking:
        blocking.load(LoadSpec(str(builtin_model), n_ctx=1024))
        yield blocking


def _failed_load(engine: BlockingEngine, spec: LoadSpec) -> EngineError:
    with pytest.raises(EngineFailure) as caught:
        engine.load(spec)
    event = caught.value.event
    assert isinstance(event, EngineError)
    return event


@needs_refused_allocations
def test_a_context_that_does_not_fit_keeps_the_model_and_its_adapter(
        engine: BlockingEngine, builtin_model: Path, tmp_path: Path) -> None:
    lora = write_lora(tmp_path / "q.gguf", every_block(base_shapes(builtin_model), "attn_q"),
                      std=0.08)
    engine.set_adapters([AdapterSetting(str(lora), 1.0)])
    adapted = engine.chat(ASK, GREEDY).done.text
    event = _failed_load(engine, LoadSpec(str(builtin_model), n_ctx=HUGE_CTX))
    assert event.kind == "load_failed"
    # What failed, in numbers: the context size and the memory llama.cpp asked for.
    assert f"context of {HUGE_CTX:,} tokens" in event.message
    assert "GiB of CPU memory" in event.message and "kv cache" in event.message.lower()
    # The fixes, and no blame on the file.
    assert "smaller context (the model was trained on 8,192 tokens)" in event.hint
    assert "quantized KV cache" in event.hint and "file itself is fine" in event.hint
    assert "damaged" not in event.message + event.hint
    # The model in use is back, with its adapter: the same greedy reply as before.
    assert event.still_loaded is not None and event.still_loaded.path == str(builtin_model)
    assert event.still_loaded.n_ctx == 1024
    assert engine.stats().model_loaded
    assert engine.chat(ASK, GREEDY).done.text == adapted
    engine.set_adapters([])
    assert engine.chat(ASK, GREEDY).done.text != adapted  # the adapter was what changed it


def test_a_damaged_file_keeps_the_model(engine: BlockingEngine, builtin_model: Path,
                                        tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(builtin_model.read_bytes()[:5_000_000])
    event = _failed_load(engine, LoadSpec(str(cut)))
    assert event.kind == "load_failed" and "truncated" in event.message
    assert event.still_loaded is not None and event.still_loaded.path == str(builtin_model)
    assert engine.chat(ASK, GREEDY).done.text


@needs_refused_allocations
def test_a_first_load_that_fails_leaves_no_model(builtin_model: Path) -> None:
    with BlockingEngine() as blocking:
        event = _failed_load(blocking, LoadSpec(str(builtin_model), n_ctx=HUGE_CTX))
        assert event.kind == "load_failed" and event.still_loaded is None
        assert not blocking.stats().model_loaded
        blocking.load(LoadSpec(str(builtin_model), n_ctx=1024))  # and it loads afterwards
        assert blocking.chat(ASK, GREEDY).done.text
