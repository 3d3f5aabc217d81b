"""Chat templates: turn a conversation into the exact prompt text a model was trained on.

The GGUF's own Jinja template (``tokenizer.chat_template``) is used when it has one. Older
or hand-made GGUFs often lack it, so a builtin format is then chosen from the vocabulary
(special tokens are the surest sign of a format) and the architecture. The user may
override either way, by builtin name or with raw Jinja source.

Rendering follows Hugging Face / llama.cpp conventions (sandboxed Jinja, ``bos_token``,
``raise_exception``, ...), so templates written for them work unchanged. Templates that
start with ``{{ bos_token }}`` put the BOS text in the prompt; a caller whose tokenizer
adds BOS itself should drop it with :func:`strip_leading_bos`.

This is a core module: no Qt here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(Exception):
    """A chat template could not be compiled or rendered. The message is for users."""


# Builtin formats, written to match the official (Hugging Face) templates. Each is one
# line of Jinja, so trim_blocks/lstrip_blocks cannot change its output.
_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_LLAMA3 = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

_ALTERNATE = (
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
)

# Meta's Llama 2 chat format: system prompt inside the first [INST] in <<SYS>> tags.
_LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}"
    "{% endif %}"
    "{% for message in loop_messages %}" + _ALTERNATE +
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + content | trim + ' ' + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
)

# Mistral Instruct v0.1/v0.2 (v1 tokenizer); the optional system prompt is folded into
# the first user turn, as Mistral's own updated template does.
_MISTRAL = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
    "{{ bos_token }}"
    "{% for message in loop_messages %}" + _ALTERNATE +
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system_message is defined %}"
    "{{ ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}"
    "{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported, with the exception"
    " of an initial optional system message!') }}"
    "{% endif %}"
    "{% endfor %}"
)

# Gemma has no system role; like Gemma 3's template, it becomes the first user turn's prefix.
_GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] | trim + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}" + _ALTERNATE +
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '')"
    " + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# Phi-3 / Phi-3.5 instruct.
_PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Plain Alpaca style: needs no special tokens, so any model can at least follow it.
_ALPACA = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] | trim + '\n\n' }}{% set loop_messages = messages[1:] %}"
    "{% else %}"
    "{{ 'Below is an instruction that describes a task. Write a response that"
    " appropriately completes the request.\n\n' }}"
    "{% set loop_messages = messages %}"
    "{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '### Instruction:\n' + message['content'] | trim + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '### Response:\n' + message['content'] | trim + '\n\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": _CHATML,
    "llama3": _LLAMA3,
    "llama2": _LLAMA2,
    "mistral": _MISTRAL,
    "gemma": _GEMMA,
    "phi3": _PHI3,
    "alpaca": _ALPACA,
}

# End-of-turn text to stop on besides EOS/EOG: a model may print it as plain text
# (e.g. when the GGUF does not mark it end-of-generation).
_BUILTIN_STOPS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_end|>",),
    "llama3": ("<|eot_id|>",),
    "llama2": ("[INST]",),
    "mistral": ("[INST]",),
    "gemma": ("<end_of_turn>",),
    "phi3": ("<|end|>",),
    "alpaca": ("### Instruction:",),
}

# Markers looked for in a GGUF's (or custom) template source, in order.
_KNOWN_STOPS: tuple[str, ...] = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|eot|>",
    "<end_of_turn>",
    "<|end|>",
    "<|END_OF_TURN_TOKEN|>",
    "<|endofturn|>",
    "### Instruction:",
)


@dataclass(frozen=True)
class ResolvedTemplate:
    source: str  # Jinja source
    origin: str  # "gguf" | "override" | "builtin:<name>"
    name: str  # builtin name, or "gguf" / "custom"
    stop_strings: tuple[str, ...] = ()


def template_names() -> list[str]:
    """Builtin template names, for a UI combo box."""
    return list(BUILTIN_TEMPLATES)


def infer_stop_strings(source: str) -> tuple[str, ...]:
    """End-of-turn markers that a template's source text uses."""
    found = [s for s in _KNOWN_STOPS if s in source]
    # gpt-oss ends each channel (analysis, final) with <|end|>: stopping there would cut
    # the reply after the model's reasoning. Its real end is <|return|>, an EOG token.
    if "<|end|>" in found and "<|return|>" in source:
        found.remove("<|end|>")
    return tuple(found)


def resolve_template(
    metadata: dict[str, str], override: str | None, has_token: Callable[[str], bool]
) -> ResolvedTemplate:
    """Pick the template for a model.

    ``override``: None or blank = automatic; a builtin name = that builtin; anything else
    is raw Jinja source. ``has_token(text)`` says whether the vocabulary holds a token
    with that exact text (used only when the GGUF has no template).
    """
    if override is not None and override.strip():
        key = override.strip().lower()
        if key in BUILTIN_TEMPLATES:
            return _builtin(key, origin="override")
        return ResolvedTemplate(
            source=override, origin="override", name="custom",
            stop_strings=infer_stop_strings(override),
        )

    gguf_source = metadata.get("tokenizer.chat_template") or ""
    if isinstance(gguf_source, str) and gguf_source.strip():
        return ResolvedTemplate(
            source=gguf_source, origin="gguf", name="gguf",
            stop_strings=infer_stop_strings(gguf_source),
        )

    name = _guess_builtin(metadata, has_token)
    return _builtin(name, origin=f"builtin:{name}")


def _builtin(name: str, *, origin: str) -> ResolvedTemplate:
    return ResolvedTemplate(
        source=BUILTIN_TEMPLATES[name], origin=origin, name=name,
        stop_strings=_BUILTIN_STOPS[name],
    )


def _safe_probe(has_token: Callable[[str], bool], text: str) -> bool:
    # A probe that fails (odd vocabulary, engine quirk) just means "no evidence".
    try:
        return bool(has_token(text))
    except Exception:
        return False


def _guess_builtin(metadata: dict[str, str], has_token: Callable[[str], bool]) -> str:
    arch = str(metadata.get("general.architecture", "")).lower()
    names = " ".join(
        str(metadata.get(k, "")) for k in ("general.name", "general.basename", "general.finetune")
    ).lower()
    mistral_like = arch.startswith(("mistral", "mixtral")) or "mistral" in names or (
        "mixtral" in names
    )

    # Special tokens first: they are what the model was actually trained with.
    if _safe_probe(has_token, "<|im_start|>"):
        return "chatml"
    if _safe_probe(has_token, "<|start_header_id|>"):
        return "llama3"
    if _safe_probe(has_token, "<start_of_turn>"):
        return "gemma"
    if _safe_probe(has_token, "<|user|>") and _safe_probe(has_token, "<|end|>"):
        return "phi3"
    if _safe_probe(has_token, "[INST]"):
        return "mistral" if mistral_like else "llama2"

    # No telling tokens: go by architecture (and the name, since Mistral GGUFs often
    # declare plain "llama").
    if mistral_like:
        return "mistral"
    if arch.startswith(("qwen", "internlm", "stablelm", "minicpm")):
        return "chatml"
    if arch.startswith("gemma"):
        return "gemma"
    if arch in ("phi3", "phimoe"):
        return "phi3"
    if arch == "llama":
        if "llama-3" in names or "llama 3" in names or "llama3" in names:
            return "llama3"
        return "llama2"
    return "alpaca"


# ---------------------------------------------------------------- rendering


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None,
    separators: tuple[str, str] | None = None, sort_keys: bool = False,
) -> str:
    # Jinja's own tojson HTML-escapes (<, >, &); chat templates want plain JSON, as HF gives.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
        sort_keys=sort_keys,
    )


def _make_env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _make_env()


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    # Compiling costs far more than rendering; a chat renders the same source every turn.
    return _ENV.from_string(source)


def _describe(template: ResolvedTemplate) -> str:
    if template.origin == "gguf":
        return "The model's built-in chat template"
    if template.origin == "override":
        if template.name == "custom":
            return "The custom chat template"
        return f"The chat template '{template.name}' (chosen in settings)"
    return f"The fallback chat template '{template.name}'"


def render_prompt(
    template: ResolvedTemplate,
    messages: list[dict[str, str]],
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = True,
) -> str:
    """Render ``messages`` ({"role", "content"} dicts) to prompt text.

    Raises TemplateError with a message naming the template when it cannot be compiled,
    rejects the conversation (``raise_exception``) or fails while rendering.
    """
    what = _describe(template)
    try:
        compiled = _compile(template.source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"{what} has a syntax error (line {exc.lineno}): {exc.message}"
        ) from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{what} could not be compiled: {exc}") from exc

    try:
        return compiled.render(
            messages=[dict(m) for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            # HF passes these as None when unused; some templates test them.
            tools=None,
            documents=None,
        )
    except TemplateError as exc:
        raise TemplateError(f"{what} rejected the conversation: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{what} failed to render: {exc}") from exc
    except Exception as exc:  # templates can hit TypeError etc. on odd input
        raise TemplateError(f"{what} failed to render: {type(exc).__name__}: {exc}") from exc


def strip_leading_bos(prompt: str, bos_token: str) -> str:
    """Drop the BOS text a template put first, for tokenizers that add BOS themselves
    (llama.cpp does the same, so BOS is not doubled)."""
    if bos_token and prompt.startswith(bos_token):
        return prompt[len(bos_token):]
    return prompt
