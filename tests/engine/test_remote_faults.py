"""The remote engine against a loopback server that fails in every way the issue lists:
each failure gets a clear message, streamed text is not lost, and the engine goes on."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterator

import pytest

from tests.engine.openai_faults import MODEL, FaultServer
from workbench.engine import remote_keys
from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.protocol import ChatDone, ChatMessage, LoadSpec, Sampling, Token
from workbench.engine.remote import RemoteEngine
from workbench.engine.remote_http import RemoteError, api_url, list_models

HI = [ChatMessage("user", "Hi")]
GREEDY = Sampling(temperature=0.0, max_tokens=16)


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def connect(url: str, timeout: float = 5.0, api_key: str | None = None) -> BlockingEngine:
    return BlockingEngine(lambda cb: RemoteEngine(cb, url, api_key=api_key, timeout=timeout))


@pytest.fixture
def remote(faults: FaultServer) -> Iterator[BlockingEngine]:
    with connect(faults.url) as blocking:
        blocking.load(LoadSpec(MODEL))
        yield blocking


def failure(blocking: BlockingEngine, pieces: list[str] | None = None) -> EngineFailure:
    with pytest.raises(EngineFailure) as caught:
        blocking.chat(HI, GREEDY, timeout=10,
                      on_token=pieces.append if pieces is not None else None)
    return caught.value


def still_works(blocking: BlockingEngine, faults: FaultServer) -> None:
    faults.mode = "ok"
    assert blocking.chat(HI, GREEDY, timeout=10).done.text == "Hello, world!"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_addresses_get_v1_only_when_bare() -> None:
    assert api_url("localhost:8080") == "http://localhost:8080/v1"
    assert api_url("http://h:1/v1/") == "http://h:1/v1"
    assert api_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"


def test_a_refused_connection_says_so() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(RemoteError) as caught:
        list_models(url)
    assert caught.value.kind == "connection" and "refused" in caught.value.message
    assert "server is running" in caught.value.hint
    with connect(url) as blocking, pytest.raises(EngineFailure) as load_failed:
        blocking.load(LoadSpec(MODEL))
    assert load_failed.value.event.kind == "connection"


def test_a_name_that_does_not_resolve_says_so() -> None:
    with pytest.raises(RemoteError) as caught:
        list_models("http://no-such-server.invalid:8080")
    assert caught.value.kind == "connection" and "does not resolve" in caught.value.message


def test_a_server_that_never_answers_times_out(faults: FaultServer) -> None:
    with connect(faults.url, timeout=0.5) as blocking:
        blocking.load(LoadSpec(MODEL))
        faults.mode = "hang"
        started = time.monotonic()
        error = failure(blocking).event
        assert time.monotonic() - started < 3
        assert error.kind == "timeout" and "stopped answering" in error.message
        assert "0.5 s" in error.message and "timeout" in error.hint
        still_works(blocking, faults)


def test_a_wrong_api_key_is_named(remote: BlockingEngine, faults: FaultServer) -> None:
    faults.mode = "401"
    error = failure(remote).event
    assert error.kind == "auth" and "needs an API key" in error.message
    assert "API key" in error.hint
    with connect(faults.url, api_key="sk-wrong") as keyed, pytest.raises(EngineFailure) as e:
        keyed.load(LoadSpec(MODEL))
    assert e.value.event.kind == "auth" and "not accepted" in e.value.event.message
    still_works(remote, faults)


def test_rate_limiting_honours_retry_after(remote: BlockingEngine,
                                           faults: FaultServer) -> None:
    faults.mode = "429"
    error = failure(remote).event
    assert error.kind == "rate_limited" and "limiting requests" in error.message
    assert "wait 7 s" in error.hint
    still_works(remote, faults)


def test_a_server_error_passes_on_the_servers_words(remote: BlockingEngine,
                                                    faults: FaultServer) -> None:
    faults.mode = "500"
    error = failure(remote).event
    assert error.kind == "server" and "500 Internal Server Error" in error.message
    assert "CUDA error: out of memory" in error.message
    still_works(remote, faults)


@pytest.mark.parametrize(("mode", "kind", "words"), [
    ("bad_json", "protocol", "not valid JSON"),
    ("disconnect", "connection", "broke off after 2 pieces"),
    ("error_event", "server", "slot unavailable"),
])
def test_a_reply_that_breaks_off_keeps_what_streamed(
        remote: BlockingEngine, faults: FaultServer, mode: str, kind: str,
        words: str) -> None:
    faults.mode = mode
    pieces: list[str] = []
    error = failure(remote, pieces).event
    # Every piece before the failure was delivered: the caller holds the partial reply.
    assert pieces == ["Hello", ","]
    assert error.kind == kind and words in error.message, error
    faults.release.set()
    still_works(remote, faults)


def test_stray_lines_in_the_stream_are_ignored(remote: BlockingEngine,
                                               faults: FaultServer) -> None:
    faults.mode = "garbage"
    result = remote.chat(HI, GREEDY, timeout=10)
    assert result.done.text == "Hello, world!" and len(result.pieces) == 4


def test_a_web_page_instead_of_a_stream_is_a_protocol_error(remote: BlockingEngine,
                                                            faults: FaultServer) -> None:
    faults.mode = "html"
    error = failure(remote).event
    assert error.kind == "protocol" and "OpenAI-compatible" in error.hint
    still_works(remote, faults)


def test_knobs_go_out_under_llama_cpp_and_vllm_names(remote: BlockingEngine,
                                                     faults: FaultServer) -> None:
    sampling = Sampling(temperature=0.3, top_k=7, min_p=0.2, typical_p=0.9,
                        repeat_penalty=1.3, seed=5, stop=("\n\n",), max_tokens=9)
    remote.chat(HI, sampling, timeout=10, fresh=True)
    body = faults.bodies[-1]
    assert body["model"] == MODEL and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert (body["temperature"], body["top_k"], body["min_p"], body["typical_p"]) == (
        0.3, 7, 0.2, 0.9)
    assert body["repeat_penalty"] == body["repetition_penalty"] == 1.3
    assert (body["seed"], body["stop"], body["max_tokens"]) == (5, ["\n\n"], 9)
    assert body["cache_prompt"] is False  # fresh: llama.cpp evaluates the prompt again


def test_a_strict_server_gets_standard_fields_only(remote: BlockingEngine,
                                                   faults: FaultServer) -> None:
    faults.mode = "strict"
    assert remote.chat(HI, GREEDY, timeout=10).done.text == "Hello, world!"
    assert "top_k" in faults.bodies[-2] and "top_k" not in faults.bodies[-1]
    remote.chat(HI, GREEDY, timeout=10)
    assert len(faults.bodies) == 3  # no second refusal: the engine remembers


def test_what_the_server_cannot_tell_is_unsupported(remote: BlockingEngine) -> None:
    for ask in (lambda: remote.tokenize("Hello"), lambda: remote.distribution(HI, GREEDY)):
        with pytest.raises(EngineFailure) as caught:
            ask()
        assert caught.value.event.kind == "unsupported", caught.value.event
    assert "token probabilities" in caught.value.event.message


def test_stop_before_the_server_answers_is_immediate(remote: BlockingEngine,
                                                     faults: FaultServer) -> None:
    faults.mode = "hang"
    engine = remote.engine
    rid = engine.chat(HI, GREEDY)
    time.sleep(0.3)  # the request is out, no answer yet
    cancelled_at = time.perf_counter()
    engine.cancel()
    while True:
        event = remote.events.get(timeout=5)
        if isinstance(event, ChatDone) and event.request_id == rid:
            break
        assert not isinstance(event, Token)
    assert time.perf_counter() - cancelled_at < 0.1
    assert event.reason == "cancelled" and event.text == ""
    # The request thread was woken, not left waiting for the timeout.
    started = time.monotonic()
    still_works(remote, faults)
    assert time.monotonic() - started < 2
    with pytest.raises(queue.Empty):  # nothing of the cancelled reply comes later
        while True:
            event = remote.events.get(timeout=0.2)
            assert getattr(event, "request_id", None) != rid


def test_api_keys_fall_back_to_memory_without_a_keyring() -> None:
    assert remote_keys.key_storage() == "memory"
    remote_keys.set_api_key("localhost:8080", " sk-1 ")
    assert remote_keys.get_api_key("http://LOCALHOST:8080/v1/") == "sk-1"
    assert remote_keys.get_api_key("http://other:8080") is None
    remote_keys.delete_api_key("http://localhost:8080")
    assert remote_keys.get_api_key("localhost:8080") is None


def test_api_keys_go_to_the_keyring_one_entry_per_server(memory_keyring) -> None:
    assert remote_keys.key_storage() == "keyring"
    remote_keys.set_api_key("localhost:8080", "sk-1")
    remote_keys.set_api_key("http://other:9000/v1", "sk-2")
    assert memory_keyring.store == {
        ("workbench-remote", "http://localhost:8080/v1"): "sk-1",
        ("workbench-remote", "http://other:9000/v1"): "sk-2"}
    assert remote_keys.get_api_key("http://LOCALHOST:8080/") == "sk-1"
    remote_keys.set_api_key("localhost:8080", "  ")  # an empty key removes the entry
    assert remote_keys.get_api_key("localhost:8080") is None
    assert len(memory_keyring.store) == 1
