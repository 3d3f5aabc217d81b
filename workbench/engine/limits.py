"""The valid range of every field of `Sampling` and `LoadSpec`, in one place.

The engines refuse a request outside them (`invalid_sampling`, `invalid_load`, naming
the field, the value and the range) rather than pass it to llama.cpp, which would take a
negative temperature as "sample from the whole vocabulary"; the settings loader clamps
what it reads from disk into them; the knobs and the API server take their ranges from
here. The ranges are what llama.cpp can honour, not what is sensible to try.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, get_args

from workbench.engine.protocol import EngineError, KvCacheType, LoadSpec, Sampling

C_INT_MAX = 2**31 - 1
MAX_STOPS = 16  # stop strings per reply: each is checked against every new token


@dataclass(frozen=True)
class Limit:
    """A field's valid values: a number in [minimum, maximum] (whole if `integer`), one of
    `choices`, or a bool; None too where `optional` (it means "automatic")."""

    minimum: float = -math.inf
    maximum: float = math.inf
    integer: bool = False
    optional: bool = False
    choices: tuple[Any, ...] = ()
    boolean: bool = False

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.boolean:
            return isinstance(value, bool)
        if self.choices:  # of the same type: True is not 1, nor 1.0 a mirostat mode
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        return math.isfinite(value) and self.minimum <= value <= self.maximum

    def describe(self) -> str:
        """The range in words, e.g. "0 to 2" or "a whole number from 1 to 1,024, or none"."""
        if self.boolean:
            text = "true or false"
        elif self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.integer:
            text = f"a whole number from {self.minimum:,} to {self.maximum:,}"
        else:
            text = f"{self.minimum:g} to {self.maximum:g}"
        return text + (", or none (automatic)" if self.optional else "")

    def clamp(self, value: Any, default: Any) -> Any:
        """The nearest valid value: a number outside the range becomes its nearest end, a
        value of the wrong kind (or NaN) becomes `default`."""
        if self.allows(value):
            return value
        if (self.boolean or self.choices or isinstance(value, bool)
                or not isinstance(value, int | float) or math.isnan(value)):
            return default
        value = min(max(value, self.minimum), self.maximum)
        return round(value) if self.integer else float(value)


SAMPLING_LIMITS: dict[str, Limit] = {
    "temperature": Limit(0.0, 2.0),
    "top_k": Limit(0, C_INT_MAX, integer=True),  # 0 keeps every token
    "top_p": Limit(0.0, 1.0),
    "min_p": Limit(0.0, 1.0),
    "typical_p": Limit(0.0, 1.0),
    # llama.cpp divides positive logits by it: 0 would make them infinite.
    "repeat_penalty": Limit(0.01, 10.0),
    "repeat_last_n": Limit(0, 1 << 24, integer=True),
    "presence_penalty": Limit(-2.0, 2.0),
    "frequency_penalty": Limit(-2.0, 2.0),
    "mirostat_mode": Limit(choices=(0, 1, 2)),
    "mirostat_tau": Limit(0.0, 20.0),  # bits of surprise; log2 of a 262k vocabulary is 18
    "mirostat_eta": Limit(0.0, 1.0),
    # Seeds are C ints everywhere they are shown or typed; None draws a fresh one.
    "seed": Limit(0, C_INT_MAX, integer=True, optional=True),
    "max_tokens": Limit(1, 1 << 30, integer=True),
}

LOAD_LIMITS: dict[str, Limit] = {
    "n_ctx": Limit(16, 1 << 24, integer=True),
    "n_gpu_layers": Limit(-1, 1 << 16, integer=True),  # -1: all of them
    "n_threads": Limit(1, 1024, integer=True, optional=True),
    "n_batch": Limit(1, 1 << 16, integer=True),
    "n_ubatch": Limit(1, 1 << 16, integer=True),
    "flash_attn": Limit(boolean=True),
    "type_k": Limit(choices=get_args(KvCacheType)),
    "type_v": Limit(choices=get_args(KvCacheType)),
}


class OutOfRange(ValueError):
    """One field's value is outside its valid range."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        super().__init__(f"{name} = {value!r} is outside its valid range ({allowed}).")
        self.name, self.value, self.allowed = name, value, allowed


def _check(obj: object, limits: dict[str, Limit]) -> list[OutOfRange]:
    return [OutOfRange(name, getattr(obj, name), limit.describe())
            for name, limit in limits.items() if not limit.allows(getattr(obj, name))]


def sampling_problems(sampling: Sampling) -> list[OutOfRange]:
    problems = _check(sampling, SAMPLING_LIMITS)
    if not isinstance(sampling.stop, tuple) or not all(isinstance(s, str)
                                                       for s in sampling.stop):
        problems.append(OutOfRange("stop", sampling.stop, "a list of strings"))
    elif len(sampling.stop) > MAX_STOPS:
        problems.append(OutOfRange("stop", f"{len(sampling.stop)} strings",
                                   f"at most {MAX_STOPS} strings"))
    return problems


def load_problems(spec: LoadSpec) -> list[OutOfRange]:
    problems = _check(spec, LOAD_LIMITS)
    if not isinstance(spec.model_path, str) or not spec.model_path:
        problems.append(OutOfRange("model_path", spec.model_path, "the path of a GGUF file"))
    if spec.chat_template is not None and not isinstance(spec.chat_template, str):
        problems.append(OutOfRange("chat_template", spec.chat_template,
                                   "a template name or Jinja text, or none (automatic)"))
    if spec.type_v != "f16" and spec.flash_attn is False:
        # llama.cpp cannot create such a context: its quantized V cache needs flash attention.
        problems.append(OutOfRange("type_v", spec.type_v, "'f16' unless flash_attn is on"))
    return problems


def _refusal(request_id: int, kind: str, problems: list[OutOfRange], what: str,
             hint: str) -> EngineError | None:
    if not problems:
        return None
    return EngineError(request_id, kind, f"{what}: " + " ".join(str(p) for p in problems),
                       hint)


def sampling_error(request_id: int, sampling: Sampling) -> EngineError | None:
    """The engine's refusal of a request with out-of-range sampling, or None if it is valid."""
    return _refusal(request_id, "invalid_sampling", sampling_problems(sampling),
                    "These sampling settings cannot be used",
                    "Set the named knob within its range (a preset resets them all).")


def load_error(request_id: int, spec: LoadSpec) -> EngineError | None:
    """The engine's refusal of a load with out-of-range settings, or None if it is valid."""
    return _refusal(request_id, "invalid_load", load_problems(spec),
                    "The model cannot be loaded with these settings",
                    "Set the named load setting within its range and load again.")


def clamp_fields(values: dict[str, Any], cls: type, limits: dict[str, Limit],
                 where: str) -> tuple[dict[str, Any], list[str]]:
    """`values` (as read from a file) with every out-of-range field clamped to its limits
    (one of the wrong kind takes `cls`'s default), and a note per field changed."""
    defaults = {f.name: f.default for f in fields(cls)}
    out, notes = dict(values), []
    for name, limit in limits.items():
        if name not in values or limit.allows(values[name]):
            continue
        out[name] = limit.clamp(values[name], defaults[name])
        notes.append(f"{where} {name} was {values[name]!r}, outside its range "
                     f"({limit.describe()}); it is now {out[name]!r}.")
    return out, notes
