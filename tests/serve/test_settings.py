"""The server's address and key storage, and the request mapping (no engine needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.engine.protocol import Sampling
from workbench.serve import settings as serve_settings
from workbench.serve.backend import model_id_for
from workbench.serve.openai_format import (
    UNLIMITED_TOKENS,
    ApiError,
    parse_chat_request,
    parse_sampling,
)
from workbench.serve.settings import ServerSettings, is_loopback, load_settings, save_settings

ASK = [{"role": "user", "content": "Hi"}]


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com", ""))
    assert ServerSettings().loopback and ServerSettings().port == 0
    assert ServerSettings("0.0.0.0", 8080).problem() is None
    assert "not a valid port" in (ServerSettings(port=70000).problem() or "")
    assert "not an IP address" in (ServerSettings("my host").problem() or "")


def test_the_address_is_kept_but_never_the_key(workbench_home: Path) -> None:
    assert load_settings() == ServerSettings()
    save_settings(ServerSettings("0.0.0.0", 8123))
    assert load_settings() == ServerSettings("0.0.0.0", 8123)
    serve_settings.set_api_key("wb-secret")
    assert "wb-secret" not in serve_settings.settings_path().read_text()
    serve_settings.settings_path().write_text("[broken")
    assert load_settings() == ServerSettings()


def test_the_key_falls_back_to_memory_without_a_keyring() -> None:
    assert serve_settings.get_api_key() is None
    key = serve_settings.generate_api_key()
    assert key.startswith("wb-") and len(key) > 20 and key != serve_settings.generate_api_key()
    serve_settings.set_api_key(f"  {key} ")
    assert serve_settings.key_storage() == "memory" and serve_settings.get_api_key() == key
    serve_settings.set_api_key("")
    assert serve_settings.get_api_key() is None


def test_model_ids() -> None:
    assert model_id_for("/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf") == "Qwen2.5-7B-Instruct-Q4_K_M"
    assert model_id_for(r"C:\models\a.GGUF") == "a"
    assert model_id_for("meta-llama/Llama-3.1-8B") == "Llama-3.1-8B"


def test_request_fields_map_onto_sampling() -> None:
    s = parse_sampling({"temperature": 0.2, "top_p": 0.5, "max_tokens": 7, "seed": 3,
                        "stop": "END", "presence_penalty": 0.5, "frequency_penalty": -0.5,
                        "top_k": -1, "min_p": 0.1, "typical_p": 0.9,
                        "repetition_penalty": 1.3, "mirostat": 2}, Sampling())
    assert (s.temperature, s.top_p, s.max_tokens, s.seed, s.stop) == (0.2, 0.5, 7, 3, ("END",))
    assert (s.presence_penalty, s.frequency_penalty) == (0.5, -0.5)
    assert (s.top_k, s.min_p, s.typical_p, s.repeat_penalty, s.mirostat_mode) == (
        0, 0.1, 0.9, 1.3, 2)
    plain = parse_sampling({}, Sampling(temperature=0.3))
    assert plain.temperature == 0.3 and plain.max_tokens == UNLIMITED_TOKENS
    assert plain.seed is None and plain.stop == ()
    assert parse_sampling({"max_completion_tokens": 5, "max_tokens": 9}, Sampling()).max_tokens == 5
    assert parse_sampling({"seed": -1}, Sampling()).seed is None
    assert parse_sampling({"stop": ["a", "", "b"]}, Sampling()).stop == ("a", "b")


def test_messages_and_what_is_refused() -> None:
    call = parse_chat_request({"model": "m", "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                     {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None}]}, Sampling())
    assert [(m.role, m.content) for m in call.messages] == [
        ("system", "Be brief."), ("user", "Hi there"), ("assistant", "")]
    assert not call.stream and not call.fresh
    seeded = parse_chat_request({"model": "m", "messages": ASK, "seed": 1, "stream": True,
                                 "stream_options": {"include_usage": True}}, Sampling())
    assert seeded.fresh and seeded.stream and seeded.include_usage
    cases = {
        "n": {"n": 2}, "tools": {"tools": [{"type": "function"}]},
        "logprobs": {"logprobs": True}, "temperature": {"temperature": -1},
        "max_tokens": {"max_tokens": 0}, "stop": {"stop": [1]}, "stream": {"stream": "yes"},
        "messages[0].content": {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].role": {"messages": [{"role": "tool", "content": "x"}]},
    }
    for param, extra in cases.items():
        with pytest.raises(ApiError) as caught:
            parse_chat_request({"model": "m", "messages": ASK, **extra}, Sampling())
        assert caught.value.status == 400 and caught.value.param == param, param
    with pytest.raises(ApiError, match="'model' is required"):
        parse_chat_request({"messages": ASK}, Sampling())
