"""The compare view's logic: one prompt, one seed, two variants that differ in one thing,
and where their replies first part ways. No Qt here; the page drives it.

A variant names what the engine should run: a model file, sampling settings and the LoRA
adapters applied. Both replies use the same fixed seed, so any difference comes
from what the variants change, and two equal variants must give equal replies.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from workbench.chat.knobs import KNOBS_BY_KEY
from workbench.engine.protocol import AdapterSetting, ChatDone, ChatMessage, Sampling

CompareAxis = Literal["sampling", "model", "adapter"]

AXIS_LABELS: dict[CompareAxis, str] = {
    "sampling": "Sampling settings",
    "model": "Model or quantization",
    "adapter": "LoRA adapter on/off or scale",
}

_FINISH_WORDS = {
    "stop": "ended by the model",
    "length": "hit the token limit",
    "stop_string": "hit a stop string",
    "cancelled": "stopped",
    "context_full": "context full",
}


@dataclass(frozen=True)
class Variant:
    label: str  # "A" or "B"
    model_path: str
    sampling: Sampling
    # The adapters to apply for this reply; None leaves whatever is applied as it is.
    adapters: tuple[AdapterSetting, ...] | None = None


@dataclass(frozen=True)
class CompareSetup:
    prompt: str
    seed: int
    a: Variant
    b: Variant
    system_prompt: str = ""

    @property
    def variants(self) -> tuple[Variant, Variant]:
        return self.a, self.b

    def messages(self) -> list[ChatMessage]:
        system = [ChatMessage("system", self.system_prompt)] if self.system_prompt else []
        return [*system, ChatMessage("user", self.prompt)]

    def sampling_for(self, variant: Variant) -> Sampling:
        """The variant's settings with the shared seed: the seed is never what differs."""
        return replace(variant.sampling, seed=self.seed)

    def differences(self) -> list[str]:
        """What differs between A and B, in words ("model", "Temperature 0 → 1", ...)."""
        found = []
        if Path(self.a.model_path) != Path(self.b.model_path):
            found.append(f"model: {Path(self.a.model_path).name} → "
                         f"{Path(self.b.model_path).name}")
        if _applied(self.a.adapters) != _applied(self.b.adapters):
            found.append(f"adapters: {describe_adapters(self.a.adapters)} → "
                         f"{describe_adapters(self.b.adapters)}")
        sa, sb = self.sampling_for(self.a), self.sampling_for(self.b)
        for f in fields(Sampling):
            va, vb = getattr(sa, f.name), getattr(sb, f.name)
            if va != vb:
                knob = KNOBS_BY_KEY.get(f.name)
                label = knob.label if knob else f.name.replace("_", " ")
                found.append(f"{label} {_short(va)} → {_short(vb)}")
        return found

    def problem(self) -> str | None:
        """Why this setup cannot run, in words; None when it can."""
        if not self.prompt.strip():
            return "Write a prompt to compare the two replies on."
        for v in self.variants:
            if not v.model_path:
                return f"Choose a model for column {v.label}."
        return None


def _applied(adapters: tuple[AdapterSetting, ...] | None) -> frozenset | None:
    if adapters is None:
        return None
    return frozenset((str(Path(a.path)), a.scale) for a in adapters if a.applies)


def describe_adapters(adapters: tuple[AdapterSetting, ...] | None) -> str:
    """"none", "as applied", or "name × scale, …"."""
    if adapters is None:
        return "as applied"
    on = [a for a in adapters if a.applies]
    return ", ".join(f"{Path(a.path).stem} × {a.scale:g}" for a in on) or "none"


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ", ".join(map(repr, value)) or "none"
    return str(value)


@dataclass(frozen=True)
class Divergence:
    """Where two replies first differ."""

    identical: bool
    char_index: int  # length of the common text prefix
    token_index: int | None  # first differing token position; None if ids are unknown

    def summary(self, text_a: str, text_b: str) -> str:
        if self.identical:
            return ("The replies are identical, token for token: same seed, same prompt and "
                    "these settings give the same reply.")
        where = (f"for {self.token_index:,} tokens ({self.char_index:,} characters)"
                 if self.token_index is not None else f"for {self.char_index:,} characters")
        if self.char_index == 0 and not self.token_index:
            head = "The replies differ from the first token"
        else:
            head = f"The replies agree {where}"
        rest_a = _snippet(text_a[self.char_index:])
        rest_b = _snippet(text_b[self.char_index:])
        return f"{head}; then A goes on {rest_a} and B {rest_b}."


def _snippet(text: str, width: int = 24) -> str:
    if not text:
        return "(ends there)"
    cut = text[:width].replace("\n", "⏎")
    return f"“{cut}{'…' if len(text) > width else ''}”"


def first_divergence(text_a: str, text_b: str, ids_a: tuple[int, ...] = (),
                     ids_b: tuple[int, ...] = ()) -> Divergence:
    """Compare two replies by text and, where both token id lists are known, by tokens.

    Token ids tell where sampling first chose differently even when the texts still agree
    for a few characters (" the" vs " th" + "e…"); the text prefix is what the view marks.
    """
    n = 0
    for ca, cb in zip(text_a, text_b, strict=False):
        if ca != cb:
            break
        n += 1
    token_index = None
    if ids_a and ids_b:
        token_index = 0
        for ta, tb in zip(ids_a, ids_b, strict=False):
            if ta != tb:
                break
            token_index += 1
    identical = text_a == text_b and (not (ids_a and ids_b) or ids_a == ids_b)
    return Divergence(identical, n, token_index)


@dataclass(frozen=True)
class ColumnStats:
    tokens: int
    tokens_per_s: float
    ttft_s: float
    finish: str

    @classmethod
    def from_done(cls, done: ChatDone) -> ColumnStats:
        t = done.timings
        return cls(t.n_generated_tokens, t.tokens_per_s, t.ttft_s,
                   _FINISH_WORDS.get(done.reason, done.reason))

    def line(self) -> str:
        rate = f"{self.tokens_per_s:,.1f} tokens/s" if self.tokens_per_s else "– tokens/s"
        return (f"{self.tokens:,} tokens · {rate} · first token after "
                f"{self.ttft_s * 1000:,.0f} ms · {self.finish}")
