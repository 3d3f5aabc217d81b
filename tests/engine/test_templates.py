from __future__ import annotations

from datetime import datetime

import pytest

from workbench.engine.templates import (
    BUILTIN_TEMPLATES,
    ResolvedTemplate,
    TemplateError,
    render_prompt,
    resolve_template,
    strip_leading_bos,
    template_names,
)

CONVO = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
]

EXPECTED = {
    "chatml": (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "gemma": (
        "<bos><start_of_turn>user\nYou are helpful.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    "mistral": "<s> [INST] You are helpful.\n\nHi [/INST] Hello!</s> [INST] How are you? [/INST]",
    "llama2": (
        "<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST] Hello! </s>"
        "<s>[INST] How are you? [/INST]"
    ),
    "phi3": (
        "<|system|>\nYou are helpful.<|end|>\n<|user|>\nHi<|end|>\n"
        "<|assistant|>\nHello!<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n"
    ),
    "alpaca": (
        "You are helpful.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n"
        "### Instruction:\nHow are you?\n\n### Response:\n"
    ),
}

SPECIAL = {
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma": ("<bos>", "<eos>"),
}


def _no_tokens(_text: str) -> bool:
    return False


def _vocab(*tokens: str):
    return lambda text: text in tokens


def _render(name: str, messages: list[dict[str, str]], **kw: bool) -> str:
    bos, eos = SPECIAL.get(name, ("<s>", "</s>"))
    tmpl = resolve_template({}, name, _no_tokens)
    return render_prompt(tmpl, messages, bos_token=bos, eos_token=eos, **kw)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_renders_exact_format(name: str) -> None:
    assert _render(name, CONVO) == EXPECTED[name]


def test_all_builtins_listed_and_render() -> None:
    names = template_names()
    for required in ("chatml", "llama3", "llama2", "mistral", "gemma", "phi3", "alpaca"):
        assert required in names
    assert names == list(BUILTIN_TEMPLATES)


def test_without_system_and_without_generation_prompt() -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    assert _render("gemma", msgs, add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n"
    )
    assert _render("mistral", msgs) == "<s> [INST] Hi [/INST]"
    assert _render("alpaca", msgs).startswith("Below is an instruction")


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_prefix_stability(name: str) -> None:
    turn1 = CONVO[:2]
    prompt1 = _render(name, turn1)
    reply = "Hello!"
    turn2 = [*turn1, {"role": "assistant", "content": reply}, {"role": "user", "content": "More"}]
    prompt2 = _render(name, turn2)
    assert prompt2.startswith(prompt1 + reply)


def test_stop_strings() -> None:
    expected = {
        "chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>",
        "phi3": "<|end|>", "alpaca": "### Instruction:",
    }
    for name, stop in expected.items():
        assert stop in resolve_template({}, name, _no_tokens).stop_strings


def test_resolve_prefers_gguf_template() -> None:
    src = "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}"
    meta = {"tokenizer.chat_template": src, "general.architecture": "llama"}
    t = resolve_template(meta, None, _vocab("[INST]"))
    assert (t.origin, t.name, t.source) == ("gguf", "gguf", src)
    assert t.stop_strings == ()  # no end-of-turn marker in that source
    meta["tokenizer.chat_template"] = "x <|im_end|> y"
    assert resolve_template(meta, "", _no_tokens).stop_strings == ("<|im_end|>",)


def test_resolve_override_by_name_and_raw() -> None:
    meta = {"tokenizer.chat_template": "gguf one"}
    t = resolve_template(meta, "gemma", _no_tokens)
    assert (t.origin, t.name, t.source) == ("override", "gemma", BUILTIN_TEMPLATES["gemma"])
    assert t.stop_strings == ("<end_of_turn>",)

    raw = "{% for m in messages %}{{ m['content'] }}<|eot_id|>{% endfor %}"
    t = resolve_template(meta, raw, _no_tokens)
    assert (t.origin, t.name, t.source) == ("override", "custom", raw)
    assert t.stop_strings == ("<|eot_id|>",)
    assert render_prompt(t, CONVO[1:2], bos_token="", eos_token="") == "Hi<|eot_id|>"


@pytest.mark.parametrize(
    ("tokens", "meta", "expected"),
    [
        (("<|im_start|>", "<|im_end|>"), {"general.architecture": "llama"}, "chatml"),
        (("<|start_header_id|>",), {"general.architecture": "llama"}, "llama3"),
        (("<start_of_turn>",), {}, "gemma"),
        (("<|user|>", "<|end|>"), {"general.architecture": "llama"}, "phi3"),
        (("[INST]",), {"general.architecture": "llama", "general.name": "Mistral 7B"}, "mistral"),
        (("[INST]",), {"general.architecture": "llama", "general.name": "Llama 2 7B"}, "llama2"),
        (("<|user|>",), {"general.architecture": "starcoder"}, "alpaca"),  # phi3 needs both
    ],
)
def test_fallback_by_probes(tokens: tuple[str, ...], meta: dict[str, str], expected: str) -> None:
    t = resolve_template(meta, None, _vocab(*tokens))
    assert (t.origin, t.name) == (f"builtin:{expected}", expected)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"general.architecture": "qwen2"}, "chatml"),
        ({"general.architecture": "gemma2"}, "gemma"),
        ({"general.architecture": "phi3"}, "phi3"),
        ({"general.architecture": "llama"}, "llama2"),
        ({"general.architecture": "llama", "general.name": "mistralai_Mistral 7B"}, "mistral"),
        ({"general.architecture": "gpt2"}, "alpaca"),
        ({}, "alpaca"),
    ],
)
def test_fallback_by_architecture(meta: dict[str, str], expected: str) -> None:
    t = resolve_template({**meta, "tokenizer.chat_template": "  "}, None, _no_tokens)
    assert (t.origin, t.name) == (f"builtin:{expected}", expected)


def test_failing_probe_is_ignored() -> None:
    def broken(_text: str) -> bool:
        raise RuntimeError("boom")

    t = resolve_template({"general.architecture": "qwen2"}, None, broken)
    assert t.name == "chatml"


def test_broken_template_raises_template_error() -> None:
    t = ResolvedTemplate(source="{% for m in messages %}{{ m", origin="gguf", name="gguf")
    with pytest.raises(TemplateError, match="model's built-in chat template"):
        render_prompt(t, CONVO, bos_token="", eos_token="")


def test_render_time_error_is_wrapped() -> None:
    t = ResolvedTemplate(source="{{ messages[0]['content'] + 1 }}", origin="override",
                         name="custom")
    with pytest.raises(TemplateError, match="custom chat template"):
        render_prompt(t, CONVO, bos_token="", eos_token="")


def test_raise_exception_surfaces_message() -> None:
    # Official Gemma-style alternation check: two user turns in a row.
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateError, match="roles must alternate"):
        _render("gemma", bad)
    t = ResolvedTemplate(source="{{ raise_exception('No tools here, sorry') }}",
                         origin="gguf", name="gguf")
    with pytest.raises(TemplateError, match="No tools here, sorry"):
        render_prompt(t, CONVO, bos_token="", eos_token="")


def test_hf_style_globals_and_sandbox() -> None:
    src = (
        "{{ strftime_now('%Y') }}|{{ messages | length }}|{{ {'a': '<b>'} | tojson }}|"
        "{{ tools is none }}|{% for m in messages %}{% if loop.index > 1 %}{% break %}"
        "{% endif %}{{ m.role }}{% endfor %}"
    )
    t = resolve_template({"tokenizer.chat_template": src}, None, _no_tokens)
    out = render_prompt(t, CONVO, bos_token="", eos_token="")
    assert out == f'{datetime.now().year}|4|{{"a": "<b>"}}|True|system'

    # The sandbox forbids mutating the caller's data.
    t = ResolvedTemplate(source="{{ messages.append(1) }}", origin="gguf", name="gguf")
    with pytest.raises(TemplateError):
        render_prompt(t, CONVO, bos_token="", eos_token="")


def test_gguf_style_template_with_default_system() -> None:
    # Shape of Qwen2.5 templates: a default system prompt, multi-line with whitespace control.
    src = """{%- for message in messages %}
    {%- if loop.first and messages[0]['role'] != 'system' %}
        {{- '<|im_start|>system\nDefault.<|im_end|>\n' }}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
    t = resolve_template({"tokenizer.chat_template": src}, None, _no_tokens)
    out = render_prompt(t, [{"role": "user", "content": "Hi"}], bos_token="", eos_token="")
    assert out == (
        "<|im_start|>system\nDefault.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert t.stop_strings == ("<|im_end|>",)


def test_strip_leading_bos() -> None:
    assert strip_leading_bos("<s>[INST] x", "<s>") == "[INST] x"
    assert strip_leading_bos("<|im_start|>", "<s>") == "<|im_start|>"
    assert strip_leading_bos("abc", "") == "abc"
