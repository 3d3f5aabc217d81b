"""The remote engine against a real OpenAI-compatible server: llama-cpp-python's own, on the
built-in model, started on loopback for this module."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.protocol import (
    AdapterSetting,
    ChatMessage,
    LoadSpec,
    Sampling,
)
from workbench.engine.remote import RemoteEngine
from workbench.engine.remote_chat import PROMPT_NOTE
from workbench.engine.remote_http import RemoteError, list_models

pytestmark = pytest.mark.engine

HI = [ChatMessage("user", "Say hello in one short sentence.")]
GREEDY = Sampling(temperature=0.0, max_tokens=24, seed=1)
LONG = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(builtin_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(builtin_model),
             "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited:\n{log.read_text()[-3000:]}")
            try:
                list_models(url, timeout_s=1.0)
                break
            except RemoteError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def remote(server_url: str) -> Iterator[BlockingEngine]:
    with BlockingEngine(lambda cb: RemoteEngine(cb, server_url, timeout=30)) as blocking:
        blocking.load(LoadSpec(""))  # "": the server's first (here: only) model
        yield blocking


def test_list_models_names_the_served_model(server_url: str, builtin_model: Path) -> None:
    assert list_models(server_url) == [str(builtin_model)]


def test_load_selects_a_served_model(server_url: str, builtin_model: Path) -> None:
    with BlockingEngine(lambda cb: RemoteEngine(cb, server_url)) as blocking:
        info = blocking.load(LoadSpec(str(builtin_model)))
        assert info.path == str(builtin_model) and info.name == builtin_model.name
        assert info.template_origin == "server"
        with pytest.raises(EngineFailure) as caught:
            blocking.load(LoadSpec("no-such-model"))
        error = caught.value.event
        assert error.kind == "not_found" and "no-such-model" in error.message
        assert builtin_model.name in error.hint  # it offers what it has


def test_a_reply_streams_in_pieces(remote: BlockingEngine) -> None:
    result = remote.chat(HI, GREEDY, timeout=60)
    done = result.done
    assert result.started is not None and result.started.prompt_text.startswith(PROMPT_NOTE)
    assert len(result.pieces) > 3 and "".join(result.pieces) == done.text
    assert done.reason in ("stop", "length") and done.text.strip()
    t = done.timings
    assert 0 < t.ttft_s < 30 and t.generation_s > 0 and t.tokens_per_s > 0
    assert t.n_generated_tokens == len(result.pieces)  # no usage: one piece per token
    assert remote.stats().model_loaded


def test_a_greedy_reply_is_reproducible(remote: BlockingEngine) -> None:
    first = remote.chat(HI, GREEDY, timeout=60).done.text
    assert remote.chat(HI, GREEDY, timeout=60).done.text == first


def test_stop_ends_the_reply_within_100_ms(remote: BlockingEngine) -> None:
    sampling = Sampling(temperature=0.0, max_tokens=300)
    cancelled_at: list[float] = []

    def on_token(_text: str) -> None:
        if not cancelled_at and len(seen) >= 3:
            cancelled_at.append(time.perf_counter())
            remote.engine.cancel()
        seen.append(_text)

    seen: list[str] = []
    result = remote.chat(LONG, sampling, timeout=60, on_token=on_token)
    latency = time.perf_counter() - cancelled_at[0]
    assert result.done.reason == "cancelled" and latency < 0.1, latency
    # The text so far, exactly what was streamed; nothing of this reply comes later.
    assert result.done.text == "".join(result.pieces) and len(result.pieces) >= 4
    # The server noticed the closed connection and serves the next reply.
    assert remote.chat(HI, Sampling(temperature=0.0, max_tokens=4), timeout=60).done.text


def test_the_next_token_distribution_comes_from_top_logprobs(remote: BlockingEngine) -> None:
    dist = remote.distribution(HI, GREEDY, top_n=5)
    assert [s.name for s in dist.stages] == ["server"]
    candidates = dist.stages[0].candidates
    assert len(candidates) == 5 and dist.prompt_tokens > 0
    probs = [c.prob for c in candidates]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    reply = remote.chat(HI, GREEDY, timeout=60).done.text
    assert reply.startswith(candidates[0].text)


def test_tokenize_uses_the_servers_extras(remote: BlockingEngine) -> None:
    tokens = remote.tokenize("Hello world")
    assert len(tokens.ids) == 2 and tokens.pieces == ("Hello", " world")


def test_what_the_server_cannot_do_is_unsupported(remote: BlockingEngine) -> None:
    with pytest.raises(EngineFailure) as caught:
        remote.perplexity("The quick brown fox jumps over the lazy dog.")
    assert caught.value.event.kind == "unsupported"
    with pytest.raises(EngineFailure) as caught:
        remote.set_adapters([AdapterSetting("adapter.gguf")])
    assert caught.value.event.kind == "unsupported" and "LoRA" in caught.value.event.message
    assert remote.set_adapters([]).active == ()
