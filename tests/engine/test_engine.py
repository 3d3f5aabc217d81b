"""The engine process with the built-in model: real llama.cpp, real process boundary."""

from __future__ import annotations

import os
import queue
import signal
import threading
from pathlib import Path

import pytest

from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.protocol import (
    ChatDone,
    ChatMessage,
    EngineDied,
    LoadSpec,
    Sampling,
    Token,
)

pytestmark = pytest.mark.engine
GREEDY = Sampling(temperature=0.0, max_tokens=40, seed=1)
ASK = [ChatMessage("user", "List three colours of the rainbow.")]


def test_a_chat_turn_streams_tokens_with_timings(engine: BlockingEngine) -> None:
    result = engine.chat(ASK, GREEDY)
    done = result.done
    assert done.reason in ("stop", "length")
    assert done.text.strip() and "".join(result.pieces) == done.text
    assert len(result.pieces) > 3  # streamed, not delivered whole
    t = done.timings
    assert t.n_generated_tokens > 0 and t.tokens_per_s > 0 and 0 < t.ttft_s < 30
    assert result.started is not None
    assert result.started.prompt_text.endswith("<|im_start|>assistant\n")
    assert "List three colours" in result.started.prompt_text


def test_temperature_zero_is_deterministic(engine: BlockingEngine) -> None:
    first = engine.chat(ASK, GREEDY).done.text
    # Something else in between, so the KV cache holds a different prefix.
    engine.chat([ChatMessage("user", "Hi")], GREEDY)
    assert engine.chat(ASK, GREEDY).done.text == first


def test_fixed_seed_reproduces_a_sampled_reply(engine: BlockingEngine) -> None:
    warm = Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234, max_tokens=30)
    assert engine.chat(ASK, warm).done.text == engine.chat(ASK, warm).done.text


def test_stop_string_ends_the_reply_before_it(engine: BlockingEngine) -> None:
    free = engine.chat(ASK, GREEDY).done.text
    assert len(free) > 12
    stop = free[5:9]
    result = engine.chat(ASK, Sampling(temperature=0.0, max_tokens=40, stop=(stop,)))
    assert result.done.reason == "stop_string"
    assert stop not in result.done.text and free.startswith(result.done.text)
    assert stop not in "".join(result.pieces)  # never streamed half-way either


def test_max_tokens_and_context_full(engine: BlockingEngine) -> None:
    result = engine.chat(ASK, Sampling(temperature=0.0, max_tokens=3, stop=()))
    assert result.done.reason == "length" and result.done.timings.n_generated_tokens == 3
    huge = [ChatMessage("user", "word " * 3000)]
    with pytest.raises(EngineFailure) as failure:
        engine.chat(huge, GREEDY)
    assert failure.value.event.kind == "context_full"
    assert "context" in failure.value.event.message


def test_second_turn_evaluates_only_new_tokens(engine: BlockingEngine) -> None:
    history = [ChatMessage("system", "You are terse."), ChatMessage("user", "Name a fruit.")]
    first = engine.chat(history, GREEDY)
    history += [ChatMessage("assistant", first.done.text), ChatMessage("user", "Another?")]
    second = engine.chat(history, GREEDY)
    t = second.done.timings
    assert second.started is not None and second.started.n_cached_tokens > 0
    previous_total = first.done.timings.n_prompt_tokens + first.done.timings.n_generated_tokens
    new_tokens = t.n_prompt_tokens - previous_total
    assert t.n_evaluated_prompt_tokens <= new_tokens + 2, (t, previous_total)


def test_cancel_mid_stream(engine: BlockingEngine) -> None:
    long = Sampling(temperature=0.8, max_tokens=2000, seed=3)
    seen = threading.Event()
    events = engine.events

    def stop_after_a_few(_text: str, count=[0]) -> None:  # noqa: B006
        count[0] += 1
        if count[0] == 5:
            seen.set()
            engine.engine.cancel()

    result = engine.chat([ChatMessage("user", "Write a long story about a dragon.")], long,
                         on_token=stop_after_a_few)
    assert seen.is_set()
    assert result.done.reason == "cancelled"
    assert result.done.timings.n_generated_tokens < 50
    assert events.empty()
    # The engine carries on serving.
    assert engine.chat(ASK, Sampling(temperature=0.0, max_tokens=5)).done.reason == "length"


def test_tokenize_and_stats(engine: BlockingEngine) -> None:
    tok = engine.tokenize("Hello world")
    assert len(tok.ids) == len(tok.pieces) >= 2 and "".join(tok.pieces) == "Hello world"
    stats = engine.stats()
    assert stats.model_loaded and stats.n_ctx == 2048 and stats.engine_pid != os.getpid()


@pytest.mark.parametrize("kind", ["missing", "not_gguf", "truncated"])
def test_bad_model_files_give_clear_errors(kind: str, tmp_path: Path,
                                           builtin_model: Path) -> None:
    path = tmp_path / "model.gguf"
    if kind == "not_gguf":
        path.write_text("<html>Not found</html>")
    elif kind == "truncated":
        with builtin_model.open("rb") as src:
            path.write_bytes(src.read(10_000_000))
    expected = {"missing": "does not exist", "not_gguf": "not a GGUF",
                "truncated": "truncated"}[kind]
    with BlockingEngine() as blocking:
        with pytest.raises(EngineFailure, match=expected) as failure:
            blocking.load(LoadSpec(str(path)))
        assert failure.value.event.kind == "load_failed"
        pid = blocking.engine.pid
        assert pid is not None  # the engine survived the bad file
        blocking.load(LoadSpec(str(builtin_model), n_ctx=512))
        assert blocking.engine.pid == pid


def test_engine_killed_mid_stream_is_reported(builtin_model: Path) -> None:
    events: queue.Queue = queue.Queue()
    with BlockingEngine() as blocking:
        blocking.load(LoadSpec(str(builtin_model), n_ctx=1024))
        engine = blocking.engine
        pid = engine.pid
        rid = engine.chat([ChatMessage("user", "Tell me a long story.")],
                          Sampling(max_tokens=2000, seed=2))
        while True:
            event = blocking.events.get(timeout=60)
            if isinstance(event, Token):
                os.kill(pid, signal.SIGKILL)
                break
        while True:
            event = blocking.events.get(timeout=30)
            events.put(event)
            if isinstance(event, (EngineDied, ChatDone)):
                break
        assert isinstance(event, EngineDied)
        assert event.request_id == rid and event.exit_code == -signal.SIGKILL
        assert "killed" in event.message and "saved" in event.hint
        assert not engine.alive
        # Reload starts a fresh worker.
        blocking.load(LoadSpec(str(builtin_model), n_ctx=512))
        assert engine.pid not in (None, pid)


def test_gguf_without_template_gets_a_fallback_from_its_vocabulary(
        tmp_path: Path, builtin_model: Path, engine: BlockingEngine) -> None:
    # Rename the metadata key in place (same length, so every offset stays valid): the
    # file then has no chat template, as many hand-converted GGUFs do not.
    data = bytearray(builtin_model.read_bytes())
    key = b"tokenizer.chat_template"
    at = data.index(key)
    data[at:at + len(key)] = b"tokenizer.chat_templatX"
    bare = tmp_path / "no-template.gguf"
    bare.write_bytes(data)
    with BlockingEngine() as blocking:
        info = blocking.load(LoadSpec(str(bare), n_ctx=1024))
        assert (info.template_origin, info.template_name) == ("builtin:chatml", "chatml")
        result = blocking.chat([ChatMessage("system", "Be brief."), *ASK], GREEDY)
        prompt = result.started.prompt_text
        assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                          "List three colours of the rainbow.<|im_end|>\n"
                          "<|im_start|>assistant\n")
        assert result.done.reason == "stop" and "<|im_end|>" not in result.done.text
        # Same words as with the GGUF's own template, which renders this prompt identically.
        with_own = engine.chat([ChatMessage("system", "Be brief."), *ASK], GREEDY)
        assert with_own.started.prompt_text == prompt
        assert with_own.done.text == result.done.text
        # And the user can override the format.
        info = blocking.load(LoadSpec(str(bare), n_ctx=1024, chat_template="alpaca"))
        assert info.template_origin == "override"
        assert "### Instruction:" in blocking.chat(ASK, GREEDY).started.prompt_text


def test_a_closed_engine_stays_closed(builtin_model: Path) -> None:
    blocking = BlockingEngine()
    blocking.load(LoadSpec(str(builtin_model), n_ctx=512))
    blocking.close()
    assert not blocking.engine.alive
    blocking.engine.tokenize("late request")  # e.g. a widget finishing after shutdown
    assert not blocking.engine.alive and blocking.engine.pid is None


def test_fresh_replies_do_not_depend_on_the_cache(engine: BlockingEngine) -> None:
    warm = Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=42, max_tokens=24)
    ask = [ChatMessage("user", "Name a colour.")]
    first = engine.chat(ask, warm, fresh=True)
    second = engine.chat(ask, warm, fresh=True)  # its prompt is fully cached: ignored
    assert first.started.n_cached_tokens == second.started.n_cached_tokens == 0
    assert first.done.text == second.done.text
    assert first.done.token_ids == second.done.token_ids and first.done.token_ids
