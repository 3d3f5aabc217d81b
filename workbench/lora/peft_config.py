"""A PEFT LoRA adapter's adapter_config.json, read as plain JSON (no peft, no torch).

The fields mirror peft.LoraConfig (src/peft/tuners/lora/config.py), with its defaults for
any that are missing. Only what decides how an adapter converts is typed; the rest stays
in `raw` so that LoRA variants this importer cannot express can be named and refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.lora.gguf_lora import AdapterError

CONFIG_NAME = "adapter_config.json"

# Options that change what the adapter computes in ways a GGUF LoRA (h = Wx + s·α/r·BAx
# on plain weights) cannot express: a variant name per option.
_VARIANTS: dict[str, str] = {
    "use_dora": "DoRA (weight-decomposed LoRA)",
    "use_qalora": "QALoRA",
    "use_bdlora": "block-diagonal LoRA",
    "lora_bias": "LoRA with a bias on lora_B",
    "layer_replication": "layer replication",
    "target_parameters": "LoRA on raw parameters (MoE experts)",
    "trainable_token_indices": "trainable tokens",
    "megatron_config": "Megatron parallel LoRA",
    "arrow_config": "Arrow routing",
    "kasa_config": "KaSA",
    "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA",
}
# Initialisations that rewrite the base weights: such an adapter only fits the rewritten
# base, unless it was saved with path_initial_model_for_weight_conversion.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq")
# Modules whose LoRA would change the embeddings or the output head.
EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "embed_in", "embed_out")


@dataclass(frozen=True)
class PeftLoraConfig:
    r: int = 8
    lora_alpha: float = 8.0
    target_modules: tuple[str, ...] | str | None = None  # a str is a regex (fullmatch)
    use_dora: bool = False
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    modules_to_save: tuple[str, ...] = ()
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    bias: str = "none"
    layers_to_transform: tuple[int, ...] | None = None
    base_model_name_or_path: str | None = None
    task_type: str | None = None
    peft_type: str = "LORA"
    alora_invocation_tokens: tuple[int, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def rank_for(self, module: str) -> int:
        """The rank PEFT gives `module` ("model.layers.0.self_attn.q_proj")."""
        key = pattern_key(self.rank_pattern, module)
        return self.rank_pattern[key] if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        key = pattern_key(self.alpha_pattern, module)
        return self.alpha_pattern[key] if key is not None else self.lora_alpha

    def scaling_for(self, module: str, rank: int) -> float:
        """PEFT's factor on lora_B(lora_A(x)): α/r, or α/√r with rsLoRA."""
        alpha = self.alpha_for(module)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def pattern_key(patterns: Mapping[str, Any], module: str) -> str | None:
    """The rank_pattern/alpha_pattern key that applies to `module`, as PEFT picks it
    (peft.utils.other.get_pattern_key: the first key K with re.match(rf"(.*\\.)?({K})$"))."""
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        except re.error as exc:
            raise AdapterError(f"{CONFIG_NAME} has a pattern that is not a valid regex: "
                               f"{key!r} ({exc}).", "Fix or remove the pattern.") from exc
    return None


def _bad(what: str, value: Any) -> AdapterError:
    return AdapterError(f"{CONFIG_NAME}: {what} (found {value!r}).",
                        "The adapter config is damaged or not from PEFT; save it again.")


def _int(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(f"{key} must be a positive whole number", value)
    return value


def _number(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{key} must be a number", value)
    return float(value)


def _flag(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false", value)
    return value


def _names(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _bad(f"{key} must be a list of module names", value)


def _pattern(raw: Mapping[str, Any], key: str, as_int: bool) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise _bad(f"{key} must be a mapping of module patterns to numbers", value)
    for k, v in value.items():
        ok = isinstance(v, int) and v > 0 if as_int else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            raise _bad(f"{key}[{k!r}] must be a {'positive whole ' if as_int else ''}number", v)
    return {k: (int(v) if as_int else float(v)) for k, v in value.items()}


def _target_modules(raw: Mapping[str, Any]) -> tuple[str, ...] | str | None:
    value = raw.get("target_modules")
    if value is None or isinstance(value, str):
        return value
    return _names(raw, "target_modules")


def _layers(raw: Mapping[str, Any]) -> tuple[int, ...] | None:
    value = raw.get("layers_to_transform")
    if value is None:
        return None
    items = [value] if isinstance(value, int) else value
    if (not isinstance(items, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in items)):
        raise _bad("layers_to_transform must be a layer number or a list of them", value)
    return tuple(items)


def _tokens(raw: Mapping[str, Any]) -> tuple[int, ...] | None:
    value = raw.get("alora_invocation_tokens")
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32
                       for v in value)):
        raise _bad("alora_invocation_tokens must be a list of token ids", value)
    return tuple(value)


def _optional_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def parse_peft_config(raw: Mapping[str, Any]) -> PeftLoraConfig:
    """A PeftLoraConfig from the decoded JSON; raises AdapterError on wrong types."""
    bias = raw.get("bias", "none")
    if not isinstance(bias, str):
        raise _bad("bias must be 'none', 'all' or 'lora_only'", bias)
    return PeftLoraConfig(
        r=_int(raw, "r", 8),
        lora_alpha=_number(raw, "lora_alpha", 8.0),
        target_modules=_target_modules(raw),
        use_dora=_flag(raw, "use_dora"),
        use_rslora=_flag(raw, "use_rslora"),
        fan_in_fan_out=_flag(raw, "fan_in_fan_out"),
        modules_to_save=_names(raw, "modules_to_save") or (),
        rank_pattern=_pattern(raw, "rank_pattern", as_int=True),
        alpha_pattern=_pattern(raw, "alpha_pattern", as_int=False),
        bias=bias,
        layers_to_transform=_layers(raw),
        base_model_name_or_path=_optional_str(raw, "base_model_name_or_path"),
        task_type=_optional_str(raw, "task_type"),
        peft_type=_optional_str(raw, "peft_type") or "LORA",
        alora_invocation_tokens=_tokens(raw),
        raw=dict(raw),
    )


def read_peft_config(adapter_dir: str | Path) -> PeftLoraConfig:
    """Read `adapter_dir`/adapter_config.json. Raises AdapterError."""
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(
            f"{Path(adapter_dir).name} has no {CONFIG_NAME}.",
            "Choose the folder PEFT saved the adapter into (save_pretrained writes "
            f"{CONFIG_NAME} and adapter_model.safetensors).")
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{CONFIG_NAME} cannot be read: {exc}.",
                           "The file is damaged; save the adapter again.") from exc
    if not isinstance(raw, dict):
        raise _bad("the file must hold a JSON object", type(raw).__name__)
    return parse_peft_config(raw)


def refuse_unsupported(config: PeftLoraConfig) -> None:
    """Raise AdapterError if the adapter uses something a GGUF LoRA cannot express."""
    if config.peft_type.upper() != "LORA":
        raise AdapterError(
            f"The adapter is a {config.peft_type} adapter, not a LoRA.",
            "Only LoRA adapters can be converted for llama.cpp.")
    used = [name for key, name in _VARIANTS.items() if config.raw.get(key)]
    if used:
        raise AdapterError(
            f"The adapter uses {', '.join(used)}, which llama.cpp cannot apply.",
            "Train a plain LoRA (e.g. use_dora=False), or merge the adapter into the model "
            "with PEFT and convert the merged model instead.")
    init = config.raw.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_REWRITING_INITS):
        raise AdapterError(
            f"The adapter was initialised with {init}, which also changes the base model's "
            "weights, so it does not fit the original model.",
            "Save it with PEFT's path_initial_model_for_weight_conversion to get a plain "
            "LoRA, then import that.")
    if config.bias != "none":
        raise AdapterError(
            f"The adapter trains biases too (bias={config.bias!r}); llama.cpp applies only "
            "the LoRA matrices.", "Train with bias='none', or merge the adapter with PEFT.")
    if config.modules_to_save:
        raise AdapterError(
            "The adapter also saves fully trained modules (modules_to_save: "
            f"{', '.join(config.modules_to_save)}), which a LoRA file cannot carry.",
            "Train without modules_to_save, or merge the adapter with PEFT and convert the "
            "merged model.")
    targets = config.target_modules if isinstance(config.target_modules, tuple) else ()
    embedding = [t for t in targets if t.rsplit(".", 1)[-1] in EMBEDDING_MODULES]
    if embedding:
        raise AdapterError(
            f"The adapter changes the embeddings or the output head ({', '.join(embedding)}), "
            "which this importer does not convert.",
            "Train with LoRA on the attention and MLP projections only.")
