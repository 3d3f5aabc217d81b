"""The OpenAI-compatible API server over a real engine with the built-in model, exercised
with OpenAI's own client package and with plain HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.serve.http_client import error_of, open_stream, read_until, request
from workbench.engine.protocol import LoadSpec
from workbench.serve.api import ApiServer, ServeError
from workbench.serve.backend import EngineBackend
from workbench.serve.settings import ServerSettings

pytestmark = pytest.mark.engine
ASK = [{"role": "user", "content": "List three colours of the rainbow."}]
KEY = "wb-test-key-123"


@pytest.fixture(scope="module")
def backend(builtin_model: Path) -> Iterator[EngineBackend]:
    backend = EngineBackend()
    backend.load(LoadSpec(str(builtin_model), n_ctx=2048, n_threads=1))
    yield backend
    backend.close()


@pytest.fixture
def server(backend: EngineBackend) -> Iterator[ApiServer]:
    server = ApiServer(backend)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(server: ApiServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def greedy_text(backend: EngineBackend) -> str:
    """The model's greedy 12-token reply to ASK, through the API (computed once)."""
    server = ApiServer(backend)
    server.start()
    try:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model=backend.model_id() or "", messages=ASK,
                                               temperature=0, max_tokens=12)
    finally:
        server.stop()
    text = reply.choices[0].message.content or ""
    assert len(text) > 12 and reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    return text


def test_models_list_names_the_loaded_model(client: openai.OpenAI,
                                            backend: EngineBackend) -> None:
    model = backend.model_id()
    assert model == "SmolLM2-135M-Instruct.Q4_1"
    assert [m.id for m in client.models.list()] == [model]
    assert client.models.retrieve(model).id == model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_streamed_and_whole_replies_agree(client: openai.OpenAI, backend: EngineBackend,
                                          greedy_text: str) -> None:
    stream = client.chat.completions.create(
        model=backend.model_id() or "", messages=ASK, temperature=0, max_tokens=12,
        stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage
    assert "".join(pieces) == greedy_text
    assert len([p for p in pieces if p]) > 3  # streamed, not delivered whole
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 12 and usage.prompt_tokens > 10


def test_stop_strings_and_max_tokens(client: openai.OpenAI, backend: EngineBackend,
                                     greedy_text: str) -> None:
    stop = greedy_text[4:8]
    reply = client.chat.completions.create(model=backend.model_id() or "", messages=ASK,
                                           temperature=0, max_tokens=12, stop=[stop, "ZZZ"])
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "stop"
    assert stop not in text and greedy_text.startswith(text)
    short = client.chat.completions.create(model=backend.model_id() or "", messages=ASK,
                                           temperature=0, max_tokens=3)
    assert short.usage is not None and short.usage.completion_tokens == 3
    assert greedy_text.startswith(short.choices[0].message.content or "")


def test_a_seed_reproduces_a_sampled_reply(client: openai.OpenAI,
                                           backend: EngineBackend) -> None:
    def sample() -> str:
        reply = client.chat.completions.create(
            model=backend.model_id() or "", messages=ASK, temperature=1.0, top_p=1.0,
            seed=1234, max_tokens=8, extra_body={"top_k": 0, "min_p": 0.0})
        return reply.choices[0].message.content or ""

    assert sample() == sample()


def test_the_api_key_is_checked(backend: EngineBackend) -> None:
    server = ApiServer(backend, api_key=KEY)
    server.start()
    try:
        status, _, body = request(server.url + "/models")
        assert status == 401 and error_of(body)["code"] == "invalid_api_key"
        assert "No API key" in error_of(body)["message"]
        wrong = openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with pytest.raises(openai.AuthenticationError):  # refused before any generation
            wrong.chat.completions.create(model=backend.model_id() or "", messages=ASK)
        right = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)
        assert [m.id for m in right.models.list()] == [backend.model_id()]
        assert request(server.url.removesuffix("/v1") + "/health")[0] == 200  # no key
    finally:
        server.stop()


def test_bad_requests_get_json_errors(server: ApiServer, backend: EngineBackend,
                                      client: openai.OpenAI) -> None:
    url, model = server.url, backend.model_id()
    status, _, body = request(url + "/chat/completions", "POST", raw=b"{not json")
    assert status == 400 and "not valid JSON" in error_of(body)["message"]
    status, _, body = request(url + "/chat/completions", "POST", {"model": model})
    assert status == 400 and error_of(body)["param"] == "messages"
    status, _, body = request(url + "/chat/completions", "POST",
                              {"model": model, "messages": ASK, "temperature": "hot"})
    assert status == 400 and error_of(body)["param"] == "temperature"
    status, _, body = request(url + "/nowhere")
    assert status == 404 and error_of(body)["code"] == "not_found"
    status, _, body = request(url + "/completions", "POST", {"model": model, "prompt": "x"})
    assert status == 501 and "/v1/chat/completions" in error_of(body)["message"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=ASK)  # type: ignore[arg-type]
    long = [{"role": "user", "content": "colour " * 3000}]  # more than the 2048 context
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model or "", messages=long, stream=True)
    assert caught.value.code == "context_length_exceeded"
    # DNS rebinding: a loopback server refuses requests addressed to another name.
    status, _, body = request(url + "/models", headers={"Host": "evil.example:80"})
    assert status == 403


def test_sse_framing_ends_with_done(server: ApiServer, backend: EngineBackend) -> None:
    status, headers, body = request(server.url + "/chat/completions", "POST", {
        "model": backend.model_id(), "messages": ASK, "temperature": 0, "max_tokens": 4,
        "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = body.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


def test_a_client_that_hangs_up_frees_the_engine(server: ApiServer,
                                                 backend: EngineBackend) -> None:
    model = backend.model_id()
    # A reply that would take minutes: hang up once it streams.
    endless = open_stream(server.url + "/chat/completions", {
        "model": model, "messages": ASK, "temperature": 1.0, "max_tokens": 1500,
        "stream": True, "seed": 7})
    assert b"data: " in read_until(endless, b'"content"')
    # A second one waits in the queue behind it; its client gives up waiting.
    queued = open_stream(server.url + "/chat/completions", {
        "model": model, "messages": ASK, "max_tokens": 1500})
    deadline = time.monotonic() + 10
    while backend.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.waiting == 1
    queued.close()
    deadline = time.monotonic() + 5
    while backend.waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.waiting == 0  # dropped from the queue without running
    endless.shutdown(socket.SHUT_RDWR)
    endless.close()
    started = time.monotonic()
    status, _, body = request(server.url + "/chat/completions", "POST", {
        "model": model, "messages": ASK, "temperature": 0, "max_tokens": 2}, timeout=30)
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 2
    assert time.monotonic() - started < 15  # not behind 1500 tokens
    deadline = time.monotonic() + 5  # the last handler ends just after its reply went out
    while server.in_progress and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.in_progress == 0


def test_concurrent_requests_queue_and_all_complete(client: openai.OpenAI,
                                                    backend: EngineBackend,
                                                    greedy_text: str) -> None:
    results: list[str] = []

    def ask() -> None:
        reply = client.chat.completions.create(model=backend.model_id() or "", messages=ASK,
                                               temperature=0, max_tokens=4)
        results.append(reply.choices[0].message.content or "")

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3
    assert all(greedy_text.startswith(r) and r for r in results)


def test_a_taken_port_is_a_clear_error(backend: EngineBackend) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ApiServer(backend, ServerSettings(port=port))
        with pytest.raises(ServeError, match=f"Port {port} .* already in use"):
            server.start()
        assert not server.running
