"""Tokenizing on a remote server. The OpenAI API has no such call; the servers that run
open models do, each its own way:

- llama.cpp: POST /tokenize {content, add_special, parse_special, with_pieces}
  -> {tokens: [{id, piece}]} (pieces as text, or as a list of bytes when not valid UTF-8)
- vLLM: POST /tokenize {model, prompt, add_special_tokens} -> {tokens: [ids]}
- llama-cpp-python: POST /extras/tokenize {model, input} -> {tokens: [ids]}
  (always parses special tokens)

The first two share a route, so one body serves both. Where no pieces come back, each
distinct token is turned back into text with the matching /detokenize.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workbench.engine.protocol import Tokenized
from workbench.engine.remote_http import RemoteError

Post = Callable[..., Any]  # RemoteEngine._post(url, body, *, allow_missing) -> JSON | None
ROUTES = {"/tokenize": "/detokenize", "/extras/tokenize": "/extras/detokenize"}


def _body(route: str, model: str, text: str, special: bool) -> dict[str, Any]:
    if route == "/extras/tokenize":
        return {"model": model, "input": text}
    return {"model": model, "content": text, "prompt": text, "add_special": False,
            "add_special_tokens": False, "parse_special": special, "with_pieces": True}


def _piece(value: Any) -> str:
    if isinstance(value, list):  # llama.cpp: the bytes of a piece that is not valid UTF-8
        return bytes(b & 0xFF for b in value if isinstance(b, int)).decode(
            "utf-8", errors="replace")
    return str(value)


def _detokenized(data: Any) -> str:
    if isinstance(data, dict):
        for key in ("content", "prompt", "text"):  # llama.cpp, vLLM, llama-cpp-python
            if isinstance(data.get(key), str):
                return data[key]
    return ""


def tokenize_remote(post: Post, root: str, model: str, request_id: int, text: str,
                    special: bool, known_route: str | None) -> tuple[str, Tokenized]:
    """(the route that worked, the tokens); RemoteError(kind="unsupported") where the
    server has no tokenizer route."""
    routes = [known_route] if known_route else list(ROUTES)
    for route in routes:
        try:
            data = post(root + route, _body(route, model, text, special), allow_missing=True)
        except RemoteError as err:
            if err.kind != "bad_request":  # a route that exists but wants another body
                raise
            continue
        if data is None:
            continue
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            continue
        ids: list[int] = []
        pieces: list[str | None] = []
        for token in tokens:
            if isinstance(token, dict):
                ids.append(int(token.get("id", -1)))
                pieces.append(_piece(token["piece"]) if "piece" in token else None)
            else:
                ids.append(int(token))
                pieces.append(None)
        missing = {i for i, p in zip(ids, pieces, strict=True) if p is None}
        texts: dict[int, str] = {}
        for token_id in sorted(missing):
            answer = post(root + ROUTES[route], {"model": model, "tokens": [token_id]},
                          allow_missing=True)
            texts[token_id] = _detokenized(answer)
        full = tuple(p if p is not None else texts.get(i, "")
                     for i, p in zip(ids, pieces, strict=True))
        return route, Tokenized(request_id, tuple(ids), full)
    raise RemoteError("unsupported", "This server cannot show how it splits text into "
                      "tokens.",
                      "llama.cpp's server, vLLM and llama-cpp-python's server can; hosted "
                      "APIs usually cannot. A local model always can.")
