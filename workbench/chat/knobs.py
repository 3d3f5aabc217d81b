"""The decoding knobs: their ranges, one-line explanations and the concept each opens,
plus the built-in presets. The UI builds its controls from this table; the concept
explainer attaches to the `concept` ids."""

from __future__ import annotations

from dataclasses import dataclass, replace

from workbench.engine.limits import SAMPLING_LIMITS
from workbench.engine.protocol import Sampling


@dataclass(frozen=True)
class Knob:
    key: str  # a Sampling field; its range is the engine's (engine/limits.py)
    label: str
    kind: str  # "float" | "int" | "choice"
    step: float
    tooltip: str
    concept: str  # concept id in resources/concepts
    choices: tuple[str, ...] = ()
    decimals: int = 2

    @property
    def minimum(self) -> float:
        limit = SAMPLING_LIMITS[self.key]
        return min(limit.choices) if limit.choices else limit.minimum

    @property
    def maximum(self) -> float:
        limit = SAMPLING_LIMITS[self.key]
        return max(limit.choices) if limit.choices else limit.maximum


KNOBS: tuple[Knob, ...] = (
    Knob("temperature", "Temperature", "float", 0.05,
         "Divides the logits before sampling: 0 always takes the top token, higher spreads "
         "the choice over less likely tokens.", "temperature"),
    Knob("top_k", "Top-k", "int", 1,
         "Keep only the k most likely tokens (0 keeps all).", "top-k"),
    Knob("top_p", "Top-p", "float", 0.01,
         "Keep the smallest set of top tokens whose probabilities add up to p.", "top-p"),
    Knob("min_p", "Min-p", "float", 0.01,
         "Drop tokens less likely than min-p times the top token's probability.", "min-p"),
    Knob("typical_p", "Typical-p", "float", 0.01,
         "Keep tokens whose surprise is close to the distribution's average (1 turns it "
         "off).", "typical-p"),
    Knob("repeat_penalty", "Repeat penalty", "float", 0.01,
         "Makes tokens seen in the recent window less likely (1 turns it off).",
         "repetition-penalty"),
    Knob("repeat_last_n", "Penalty window", "int", 8,
         "How many recent tokens the repeat, presence and frequency penalties look at.",
         "repetition-penalty"),
    Knob("presence_penalty", "Presence penalty", "float", 0.05,
         "Subtracts a fixed amount from every token already present in the window.",
         "repetition-penalty"),
    Knob("frequency_penalty", "Frequency penalty", "float", 0.05,
         "Subtracts an amount proportional to how often a token already appeared.",
         "repetition-penalty"),
    Knob("mirostat_mode", "Mirostat", "choice", 1,
         "Steers sampling towards a target surprise instead of top-k/top-p (off, v1, v2).",
         "mirostat", choices=("Off", "Mirostat", "Mirostat 2.0")),
    Knob("mirostat_tau", "Mirostat tau", "float", 0.1,
         "Target surprise in bits: lower is more focused, higher more varied.", "mirostat"),
    Knob("mirostat_eta", "Mirostat eta", "float", 0.01,
         "How fast Mirostat corrects towards its target.", "mirostat"),
    Knob("max_tokens", "Max new tokens", "int", 16,
         "The reply stops after this many tokens.", "context-window"),
)

KNOBS_BY_KEY = {k.key: k for k in KNOBS}

PRESETS: dict[str, Sampling] = {
    "Precise": Sampling(temperature=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0),
    "Balanced": Sampling(),
    "Creative": Sampling(temperature=1.0, top_k=0, top_p=0.98, min_p=0.02,
                         repeat_penalty=1.05),
}


def apply_preset(name: str, base: Sampling, user_presets: dict[str, dict]) -> Sampling:
    """The preset's knobs over `base`; seed, max tokens and stop strings are kept."""
    if name in PRESETS:
        preset = PRESETS[name]
    elif name in user_presets:
        preset = Sampling.from_dict(user_presets[name])
    else:
        raise KeyError(name)
    return replace(preset, seed=base.seed, max_tokens=base.max_tokens, stop=base.stop)
