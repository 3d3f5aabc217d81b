"""The engine protocol: what the app asks of an inference engine and what it hears back.

It is deliberately narrow (load, chat stream, cancel, unload, tokenize, stats, two
inspection requests: the next-token distribution and perplexity, and LoRA adapters) so that
a remote OpenAI-compatible server can implement it as well as the local llama.cpp worker (it
can answer `distribution` from top_logprobs, with the final stage only, and `set_adapters`
with EngineError(kind="unsupported")).
Requests and events are plain frozen dataclasses: they pickle across a process boundary
and map onto JSON for an HTTP transport.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

KvCacheType = Literal["f16", "q8_0", "q4_0"]
FinishReason = Literal["stop", "length", "stop_string", "cancelled", "context_full"]


@dataclass(frozen=True)
class LoadSpec:
    """How to load a model. Defaults live here and nowhere else."""

    model_path: str
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    n_threads: int | None = None  # None: physical cores, chosen by the engine
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attn: bool = False
    type_k: KvCacheType = "f16"
    type_v: KvCacheType = "f16"
    # None: the GGUF's own template (or a fallback chosen from its metadata);
    # a builtin template name, or raw Jinja source.
    chat_template: str | None = None


@dataclass(frozen=True)
class Sampling:
    """Decoding settings for one reply. Stored with every reply so it can be reproduced."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat_mode: int = 0  # 0 off, 1 Mirostat, 2 Mirostat 2.0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int | None = None  # None: a fresh random seed per reply
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # An empty stop string would end every reply before its first token: such entries
        # (a blank line in the stop box, "" from an API client) are dropped here, where
        # every Sampling is made. Ranges are checked by the engines (engine/limits.py).
        if isinstance(self.stop, tuple | list) and (
                isinstance(self.stop, list) or "" in self.stop):
            object.__setattr__(self, "stop", tuple(s for s in self.stop if s != ""))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sampling:
        """Build from stored settings, ignoring unknown keys (older or newer versions)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        return cls(**kwargs)


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class AdapterSetting:
    """One GGUF LoRA adapter and how strongly it applies (the UI offers -2..2).

    Disabled adapters and scale 0 are not applied; they are kept in the list so that turning
    them back on costs nothing (the engine keeps them read).
    """

    path: str
    scale: float = 1.0
    enabled: bool = True

    @property
    def applies(self) -> bool:
        return self.enabled and self.scale != 0.0


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    architecture: str
    n_params: int
    size_bytes: int
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    n_threads: int
    template_origin: str  # "gguf" | "override" | "builtin:<name>"
    template_name: str
    load_seconds: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Loaded:
    request_id: int
    info: ModelInfo


@dataclass(frozen=True)
class ChatStarted:
    """The prompt was built: the exact text sent, and how much of it the KV cache held."""

    request_id: int
    prompt_text: str
    n_prompt_tokens: int
    n_cached_tokens: int  # reused from the previous turn, not evaluated again


@dataclass(frozen=True)
class Token:
    request_id: int
    text: str  # may hold several tokens' text; empty pieces are not sent


@dataclass(frozen=True)
class Timings:
    n_prompt_tokens: int
    n_evaluated_prompt_tokens: int
    n_generated_tokens: int
    ttft_s: float  # request received -> first token sampled
    prompt_eval_s: float
    generation_s: float  # first token -> last token
    n_ctx_used: int  # tokens in the KV cache after the reply

    @property
    def tokens_per_s(self) -> float:
        if self.n_generated_tokens <= 1 or self.generation_s <= 0:
            return 0.0
        return (self.n_generated_tokens - 1) / self.generation_s

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens_per_s"] = self.tokens_per_s
        return data


@dataclass(frozen=True)
class ChatDone:
    request_id: int
    reason: FinishReason
    text: str  # the whole reply
    timings: Timings
    # The sampled token ids, where the engine knows them (a remote server may not).
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Tokenized:
    request_id: int
    ids: tuple[int, ...]
    pieces: tuple[str, ...]


@dataclass(frozen=True)
class Stats:
    request_id: int
    model_loaded: bool
    n_ctx: int
    n_ctx_used: int
    rss_bytes: int
    engine_pid: int


@dataclass(frozen=True)
class Candidate:
    """One token of a sampler stage's survivors."""

    token_id: int
    text: str
    logit: float  # the logit as this stage leaves it (after penalties, after temperature)
    prob: float  # renormalised over this stage's survivors


@dataclass(frozen=True)
class SamplerStage:
    # "logits" | "penalties" | "top_k" | "typical_p" | "top_p" | "min_p" | "temperature"
    name: str
    candidates: tuple[Candidate, ...]  # the top `top_n` survivors, most probable first
    n_kept: int  # how many tokens survive this stage


@dataclass(frozen=True)
class Distribution:
    """The next token's distribution after each stage of the sampler chain, in chain order.

    The last stage is what the next chat turn with the same messages and settings samples
    its first token from.
    """

    request_id: int
    stages: tuple[SamplerStage, ...]
    prompt_tokens: int


@dataclass(frozen=True)
class PerplexityResult:
    request_id: int
    n_tokens: int  # predicted tokens: all but the first
    mean_nll: float  # nats per token
    perplexity: float  # exp(mean_nll)
    tokens: tuple[tuple[str, float], ...]  # (piece, nll in nats) for each predicted token


@dataclass(frozen=True)
class Unloaded:
    request_id: int


@dataclass(frozen=True)
class AdaptersSet:
    """The adapters now applied (enabled, non-zero scale), in request order."""

    request_id: int
    active: tuple[AdapterSetting, ...]


@dataclass(frozen=True)
class EngineError:
    """A request failed; the engine is still alive. Texts are written for users."""

    request_id: int
    # "load_failed" | "invalid_load" | "invalid_sampling" | "not_loaded" | "context_full"
    # | "template" | "busy" | "unsupported" | "adapter" | "internal"; from a remote server
    # also "connection" | "timeout" | "auth" | "not_found" | "rate_limited" | "server"
    # | "bad_request" | "protocol" (remote_http)
    kind: str
    message: str
    hint: str = ""
    # For a failed load: the model the engine holds afterwards (the one that was loaded
    # before, kept or loaded again), or None when it holds none.
    still_loaded: ModelInfo | None = None


@dataclass(frozen=True)
class EngineDied:
    """The engine process is gone (crash, OOM kill, kill -9). Sent by the client, not the worker."""

    request_id: int  # the request in flight, or 0
    exit_code: int | None
    message: str
    hint: str


Event = (
    Loaded | ChatStarted | Token | ChatDone | Tokenized | Stats | Distribution
    | PerplexityResult | Unloaded | AdaptersSet | EngineError | EngineDied
)
EventCallback = Callable[[Event], None]


class Engine(abc.ABC):
    """An inference engine. Calls return a request id at once; results arrive as events.

    Events are delivered to the callback given at construction, on a thread owned by the
    engine: a GUI must hop them to its own thread.
    """

    @abc.abstractmethod
    def load(self, spec: LoadSpec) -> int: ...

    @abc.abstractmethod
    def chat(self, messages: list[ChatMessage], sampling: Sampling, *,
             fresh: bool = False) -> int:
        """Stream a reply. `fresh` evaluates the whole prompt from an empty cache: a reply
        then depends only on messages, settings and seed, not on what ran before (batched
        and one-token evaluation give slightly different logits), as the compare view
        needs. Otherwise the cached prefix of the previous turn is reused."""

    @abc.abstractmethod
    def cancel(self, request_id: int | None = None) -> None:
        """Stop the running chat (or the given one). The reply ends with reason 'cancelled'."""

    @abc.abstractmethod
    def unload(self) -> int: ...

    @abc.abstractmethod
    def tokenize(self, text: str, *, special: bool = False) -> int: ...

    @abc.abstractmethod
    def stats(self) -> int: ...

    @abc.abstractmethod
    def distribution(self, messages: list[ChatMessage], sampling: Sampling,
                     top_n: int = 20) -> int:
        """The next token's distribution, stage by stage, for the reply a chat with these
        messages and settings would start. Answered with a `Distribution`."""

    @abc.abstractmethod
    def perplexity(self, text: str) -> int:
        """How well the model predicts `text`. Answered with a `PerplexityResult`."""

    @abc.abstractmethod
    def set_adapters(self, adapters: Sequence[AdapterSetting]) -> int:
        """Make exactly these adapters active with these scales (disabled ones or scale 0
        are not applied), replacing whatever was active; an empty list removes all.
        Answered with `AdaptersSet`, or EngineError(kind="adapter") when one cannot be used
        (then the previous adapters stay active). Loading a model starts with none."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the engine (stop the worker process, close connections)."""
