"""Requests the app sends to the local worker process (the protocol's transport for
`LocalEngine`). Events travel back as the dataclasses in `protocol`."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.engine.protocol import AdapterSetting, ChatMessage, LoadSpec, Sampling


@dataclass(frozen=True)
class LoadRequest:
    request_id: int
    spec: LoadSpec


@dataclass(frozen=True)
class ChatRequest:
    request_id: int
    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    fresh: bool = False  # evaluate the prompt from an empty KV cache


@dataclass(frozen=True)
class CancelRequest:
    request_id: int | None  # None: whatever chat is running


@dataclass(frozen=True)
class UnloadRequest:
    request_id: int


@dataclass(frozen=True)
class TokenizeRequest:
    request_id: int
    text: str
    special: bool


@dataclass(frozen=True)
class StatsRequest:
    request_id: int


@dataclass(frozen=True)
class DistributionRequest:
    request_id: int
    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    top_n: int


@dataclass(frozen=True)
class PerplexityRequest:
    request_id: int
    text: str


@dataclass(frozen=True)
class SetAdaptersRequest:
    request_id: int
    adapters: tuple[AdapterSetting, ...]


@dataclass(frozen=True)
class ShutdownRequest:
    request_id: int = 0


Request = (
    LoadRequest | ChatRequest | CancelRequest | UnloadRequest | TokenizeRequest | StatsRequest
    | DistributionRequest | PerplexityRequest | SetAdaptersRequest | ShutdownRequest
)
