"""The OpenAI chat API's JSON, both ways: a request body to messages and `Sampling`, and
replies, stream chunks and errors in the shapes OpenAI's clients parse.

Sampling knobs outside the OpenAI API are read under the names llama.cpp's server and vLLM
use (the names `workbench.engine.remote_chat.sampling_fields` sends): top_k, min_p,
typical_p, repeat_penalty / repetition_penalty, repeat_last_n, mirostat / mirostat_mode,
mirostat_tau, mirostat_eta, and llama.cpp's cache_prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from workbench.engine.limits import C_INT_MAX, MAX_STOPS, SAMPLING_LIMITS, Limit
from workbench.engine.protocol import ChatDone, ChatMessage, EngineError, Sampling

# No max_tokens: the reply may run until the context is full, as with OpenAI's API.
UNLIMITED_TOKENS = int(SAMPLING_LIMITS["max_tokens"].maximum)
FINISH_REASONS = {"stop": "stop", "stop_string": "stop", "length": "length",
                  "context_full": "length", "cancelled": "stop"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    """A request the server answers with an error, in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.kind, self.param, self.code = kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class ChatCall:
    """A parsed /v1/chat/completions request."""

    model: str
    messages: list[ChatMessage]
    sampling: Sampling
    stream: bool
    include_usage: bool
    fresh: bool


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def _number(body: dict[str, Any], name: str, limit: Limit, *,
            field: str | None = None) -> float | int | None:
    """The request's `name` checked against the engine's range of Sampling.`field`."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"'{name}' must be a number.", name)
    if limit.integer or limit.choices:
        if isinstance(value, float) and not value.is_integer():
            raise bad(f"'{name}' must be an integer.", name)
        value = int(value)
    if not limit.allows(value):
        raise bad(f"'{name}' must be {limit.describe()}; got {value}.", name)
    return value


def _text_of(content: Any, index: int) -> str:
    """A message's text: a string, null, or a list of text parts (images are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad(f"Only text content is supported; messages[{index}] has a "
                          f"'{kind}' part.", f"messages[{index}].content")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise bad(f"messages[{index}].content must be a string or a list of text parts.",
              f"messages[{index}].content")


def parse_messages(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise bad("'messages' must be a non-empty list.", "messages")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise bad(f"messages[{i}] must be an object.", f"messages[{i}]")
        role = ROLES.get(str(item.get("role", "")))
        if role is None:
            raise bad(f"messages[{i}] has role {item.get('role')!r}; this server takes "
                      "system, developer, user and assistant messages (no tools).",
                      f"messages[{i}].role")
        messages.append(ChatMessage(role, _text_of(item.get("content"), i)))
    return messages


def _stops(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise bad("'stop' must be a string or a list of strings.", "stop")
    if len(items) > MAX_STOPS:
        raise bad(f"At most {MAX_STOPS} stop strings are allowed.", "stop")
    return tuple(items)  # Sampling drops empty ones


# Request fields read as they are (a Sampling field of the same name) and those read under
# llama.cpp's or vLLM's names.
_PLAIN = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p",
          "typical_p", "repeat_last_n", "mirostat_tau", "mirostat_eta")
_ALIASES = {"repeat_penalty": "repeat_penalty", "repetition_penalty": "repeat_penalty",
            "mirostat": "mirostat_mode", "mirostat_mode": "mirostat_mode"}
_ANY_INT = Limit(-C_INT_MAX - 1, 2**63 - 1, integer=True)


def parse_sampling(body: dict[str, Any], defaults: Sampling) -> Sampling:
    """The request's knobs over `defaults` (what a request leaves out stays as there),
    each checked against the engine's range for it (engine/limits.py)."""
    values: dict[str, Any] = {}
    for name in _PLAIN:
        if (value := _number(body, name, SAMPLING_LIMITS[name])) is not None:
            values[name] = value
    for name, field in _ALIASES.items():
        if (value := _number(body, name, SAMPLING_LIMITS[field])) is not None:
            values[field] = value
    if (top_k := _number(body, "top_k", _ANY_INT)) is not None:
        values["top_k"] = min(max(0, int(top_k)), C_INT_MAX)  # 0 or -1: off
    tokens = SAMPLING_LIMITS["max_tokens"]
    limit = _number(body, "max_completion_tokens", tokens)
    if limit is None:
        limit = _number(body, "max_tokens", tokens)
    values["max_tokens"] = UNLIMITED_TOKENS if limit is None else limit
    if (seed := _number(body, "seed", _ANY_INT)) is not None:
        # -1 is llama.cpp's "random"; other seeds fold into the engine's range.
        values["seed"] = None if seed == -1 else int(seed) % (C_INT_MAX + 1)
    else:
        values["seed"] = None
    values["stop"] = _stops(body.get("stop"))
    return replace(defaults, **values)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    n = _number(body, "n", Limit(1, C_INT_MAX, integer=True))
    if n not in (None, 1):
        raise bad("Only one choice per request is supported ('n' must be 1).", "n")
    if body.get("tools") or body.get("functions"):
        raise bad("Tools and function calling are not supported by this server.", "tools")
    if body.get("logprobs"):
        raise bad("Log probabilities are not supported by this server.", "logprobs")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
        raise bad("Only text replies are supported ('response_format' must be text).",
                  "response_format")


def parse_chat_request(body: Any, defaults: Sampling) -> ChatCall:
    """A /v1/chat/completions body, checked; ApiError(400) says what is wrong."""
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required: use the id /v1/models lists.", "model")
    _refuse_unsupported(body)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object.", "stream_options")
    sampling = parse_sampling(body, defaults)
    # A seeded request promises the same reply for the same request: evaluate the prompt
    # from an empty cache, since a reused cache can shift the logits slightly (the engine's
    # `fresh`). llama.cpp's `cache_prompt` decides explicitly.
    cache_prompt = body.get("cache_prompt")
    fresh = (cache_prompt is False) or (cache_prompt is None and sampling.seed is not None)
    return ChatCall(model=model, messages=parse_messages(body.get("messages")),
                    sampling=sampling, stream=stream,
                    include_usage=bool(options.get("include_usage")), fresh=fresh)


# ---------------------------------------------------------------- replies


def usage_of(done: ChatDone) -> dict[str, int]:
    prompt, completion = done.timings.n_prompt_tokens, done.timings.n_generated_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion_body(cid: str, created: int, model: str, done: ChatDone) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "logprobs": None,
                     "message": {"role": "assistant", "content": done.text},
                     "finish_reason": FINISH_REASONS.get(done.reason, "stop")}],
        "usage": usage_of(done),
    }


def chunk_body(cid: str, created: int, model: str, delta: dict[str, Any],
               finish_reason: str | None = None, *, with_usage: bool) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None,
                     "finish_reason": finish_reason}],
    }
    if with_usage:
        chunk["usage"] = None  # OpenAI: null on every chunk but the last
    return chunk


def usage_chunk(cid: str, created: int, model: str, done: ChatDone) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": None, "choices": [],
            "usage": usage_of(done)}


def models_body(model_id: str | None, created: int) -> dict[str, Any]:
    data = [] if model_id is None else [model_entry(model_id, created)]
    return {"object": "list", "data": data}


def model_entry(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "workbench"}


def error_for(event: EngineError) -> ApiError:
    """An engine's failure as the HTTP error a client gets."""
    text = f"{event.message} {event.hint}".strip()
    if event.kind == "context_full":
        return ApiError(400, text, code="context_length_exceeded", param="messages")
    if event.kind in ("not_loaded", "engine_died", "busy", "connection", "timeout"):
        return ApiError(503, text, kind="server_error", code=event.kind)
    return ApiError(500, text, kind="server_error", code=event.kind)
