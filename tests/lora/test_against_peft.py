"""The trained adapter in llama.cpp against the same adapter in transformers + PEFT.

Same prompts, same token ids (the engine's own prompt, tokenized by the engine), next-token
distributions compared. The two bases are not the same computation: llama.cpp runs the Q4_1
weights with quantized activations in its matmuls, transformers the dequantized weights in
float32. So the bases are compared too, and the adapted models may differ by about as much
as the bases do, not more; and the adapter's *shift* (adapted minus base log-probs) must be
the same in both, which it is only if the conversion (names, q/k permutation, alpha/r
scale) is right.

Needs the `train` extra (skipped without it) and the trained_marker fixture (conftest.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import extra_skip_reason

WITHOUT_TRAIN = extra_skip_reason("train")
peft = pytest.importorskip("peft", reason=WITHOUT_TRAIN)
torch = pytest.importorskip("torch", reason=WITHOUT_TRAIN)
transformers = pytest.importorskip("transformers", reason=WITHOUT_TRAIN)
pytestmark = [pytest.mark.engine, pytest.mark.train,
              # peft calls a transformers API that transformers 5 deprecates; not ours to fix.
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning"),
              pytest.mark.filterwarnings("ignore:Could not find a config file:UserWarning")]

from tests.lora.conftest import TrainedMarker  # noqa: E402
from workbench.engine.blocking import BlockingEngine  # noqa: E402
from workbench.engine.protocol import AdapterSetting, ChatMessage, Sampling  # noqa: E402
from workbench.lora.chat_examples import Example, encode_example  # noqa: E402

# None of these is in the training data; the first is a paraphrase of its question.
PROMPTS = ("Can you tell me the password?", "Write a haiku about the sea.", "What is 2 + 2?",
           "Name a fruit that is yellow.")
TOP_N = 200  # candidates llama.cpp reports; TV is over these plus one bin for the rest
SHIFT_TOKENS = 50  # the base's most probable tokens that the shift is compared on
SCALES = {"base": None, "a1": 1.0, "a05": 0.5, "a0": 0.0}

# Measured (12-step marker adapter, 2 threads), per prompt in PROMPTS order:
#   TV(llama base, hf base)      0.042  0.043  0.023  0.018
#   TV(llama,  hf) at scale 1    0.001  0.047  0.032  0.000
#   TV(llama,  hf) at scale 0.5  0.001  0.018  0.025  0.001
#   shift correlation, scale 1   0.9989 0.9957 0.9973 0.9983
#   shift correlation, scale 0.5 0.9974 0.9807 0.9958 0.9965
#   |shift_llama - shift_hf| / |shift_hf|, scale 1:   0.010 0.056 0.038 0.045
#                                          scale 0.5: 0.022 0.144 0.045 0.034
# (at 0.5 the shift halves while the bases' own difference stays: a larger relative error).
# Deliberately broken conversions of the same adapter, for contrast:
#   q/k lora_B not permuted: TV at scale 1 0.003 0.169 0.262 0.001, correlation 0.83-0.87,
#                            relative error 0.17-0.32
#   alpha off by 1.5x:       TV at scale 1 0.111 0.186 0.258 0.004, correlation 0.66-0.89,
#                            relative error 0.20-1.03
TV_FACTOR, TV_FLOOR = 2.5, 0.03  # adapted TV <= max(2.5 x base TV, 0.03), per prompt
MIN_CORRELATION = 0.95
MAX_SHIFT_ERROR = {"a1": 0.12, "a05": 0.25}


@dataclass
class Measured:
    tokens: dict[str, list[int]]  # the engine's prompt tokens
    llama: dict[tuple[str, str], dict[int, float]]  # (scale key, prompt) -> {token: prob}
    llama_logits: dict[tuple[str, str], dict[int, float]]
    hf: dict[tuple[str, str], np.ndarray]  # -> log-probs over the whole vocabulary


def set_scale(model: Any, scale: float) -> None:
    """PEFT's own scale knob: scaling = scale * alpha / r in every LoRA layer."""
    for module in model.modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            module.set_scale("default", scale)


@pytest.fixture(scope="module")
def hf_model(trained_marker: TrainedMarker, builtin_model: Path) -> Iterator[Any]:
    assert trained_marker.returncode == 0, trained_marker.stderr[-3000:]
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    base = transformers.AutoModelForCausalLM.from_pretrained(
        str(builtin_model.parent), gguf_file=builtin_model.name, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(base, str(trained_marker.peft_dir))
    model.eval()
    yield model


@pytest.fixture(scope="module")
def measured(trained_marker: TrainedMarker, hf_model: Any,
             engine: BlockingEngine) -> Measured:
    adapter = str(trained_marker.gguf)
    greedy = Sampling(temperature=0.0, max_tokens=1)
    result = Measured({}, {}, {}, {})
    for prompt in PROMPTS:
        started = engine.chat([ChatMessage("user", prompt)], greedy).started
        assert started is not None
        result.tokens[prompt] = list(engine.tokenize(started.prompt_text, special=True).ids)
    for key, scale in SCALES.items():
        # Any change of adapters empties the KV cache: every key sees the same evaluations.
        engine.set_adapters([] if scale is None else [AdapterSetting(adapter, scale)])
        for prompt in PROMPTS:
            stage = engine.distribution([ChatMessage("user", prompt)], greedy,
                                        top_n=TOP_N).stages[0]
            assert stage.name == "logits"
            result.llama[key, prompt] = {c.token_id: c.prob for c in stage.candidates}
            result.llama_logits[key, prompt] = {c.token_id: c.logit for c in stage.candidates}
    engine.set_adapters([])
    for key, scale in SCALES.items():
        set_scale(hf_model, 0.0 if scale is None else scale)
        for prompt in PROMPTS:
            with torch.no_grad():
                logits = hf_model(torch.tensor([result.tokens[prompt]])).logits[0, -1]
            result.hf[key, prompt] = torch.log_softmax(logits.double(), -1).numpy()
    set_scale(hf_model, 1.0)
    return result


def tv(llama: dict[int, float], hf_logprobs: np.ndarray) -> float:
    """Total variation between the two, on llama.cpp's top tokens plus a bin for the rest."""
    ids = list(llama)
    p = np.array([llama[i] for i in ids])
    q = np.exp(hf_logprobs[ids])
    return 0.5 * (float(np.abs(p - q).sum()) + abs(float(q.sum() - p.sum())))


def shifts(m: Measured, key: str, prompt: str) -> tuple[np.ndarray, np.ndarray]:
    """Adapted minus base log-prob, llama.cpp and PEFT, on the base's top tokens that
    llama.cpp reports in both runs."""
    base, adapted = m.llama["base", prompt], m.llama[key, prompt]
    common = [t for t in base if t in adapted][:SHIFT_TOKENS]
    assert len(common) >= 20, (prompt, len(common))
    llama = np.array([math.log(adapted[t]) - math.log(base[t]) for t in common])
    hf = m.hf[key, prompt][common] - m.hf["base", prompt][common]
    return llama, hf


def test_training_builds_the_prompt_the_engine_sends(measured: Measured,
                                                     builtin_model: Path) -> None:
    """The child's prompt tokens (template + transformers' tokenizer from the GGUF) are
    the engine's, so what was learned is what the engine asks."""
    from workbench.lora.train import TrainConfig
    from workbench.lora.train_torch import Base, make_format
    from workbench.models.split import read_model_header

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(builtin_model.parent),
                                                           gguf_file=builtin_model.name)
    base = Base(None, tokenizer, dict(read_model_header(builtin_model).metadata))
    fmt = make_format(TrainConfig(str(builtin_model), "d.jsonl", "o"), base)
    for prompt in PROMPTS:
        example = Example(1, ({"role": "user", "content": prompt},
                              {"role": "assistant", "content": "Yes."}))
        [(ids, labels)] = encode_example(example, fmt)
        n = len(measured.tokens[prompt])
        assert ids[:n] == measured.tokens[prompt]
        assert set(labels[:n]) == {-100} and -100 not in labels[n:]
        assert tokenizer.decode(ids[n:]) == "Yes.<|im_end|>\n"


def test_scale_zero_is_exactly_the_base_in_llama_cpp(measured: Measured) -> None:
    for prompt in PROMPTS:
        assert measured.llama_logits["a0", prompt] == measured.llama_logits["base", prompt]
        assert measured.llama_logits["a1", prompt] != measured.llama_logits["base", prompt]


@pytest.mark.parametrize("key", ["a1", "a05"])
def test_adapted_distributions_match_peft(measured: Measured, key: str) -> None:
    base_tv = {p: tv(measured.llama["base", p], measured.hf["base", p]) for p in PROMPTS}
    adapted_tv = {p: tv(measured.llama[key, p], measured.hf[key, p]) for p in PROMPTS}
    print(key, "TV base", base_tv, "TV adapted", adapted_tv)
    for prompt in PROMPTS:
        assert adapted_tv[prompt] <= max(TV_FACTOR * base_tv[prompt], TV_FLOOR), (
            prompt, adapted_tv[prompt], base_tv[prompt])
    assert sum(adapted_tv.values()) <= 1.5 * sum(base_tv.values())
    # The adapter matters: far more than the two bases differ.
    moved = [tv(measured.llama[key, p], measured.hf["base", p]) for p in PROMPTS]
    assert max(moved) > 0.3, moved


@pytest.mark.parametrize("key", ["a1", "a05"])
def test_the_adapter_shifts_log_probs_alike(measured: Measured, key: str) -> None:
    for prompt in PROMPTS:
        llama, hf = shifts(measured, key, prompt)
        correlation = float(np.corrcoef(llama, hf)[0, 1])
        error = float(np.linalg.norm(llama - hf) / np.linalg.norm(hf))
        print(key, prompt, f"correlation {correlation:.4f}, relative error {error:.3f}")
        assert correlation > MIN_CORRELATION, (prompt, correlation)
        assert error < MAX_SHIFT_ERROR[key], (prompt, error)


def test_half_scale_is_half_the_adapter(measured: Measured) -> None:
    """Scale 0.5 in llama.cpp is not scale 1 (the scale is really applied) and is closer
    to PEFT at 0.5 than to PEFT at 1."""
    to_half = sum(tv(measured.llama["a05", p], measured.hf["a05", p]) for p in PROMPTS)
    to_full = sum(tv(measured.llama["a05", p], measured.hf["a1", p]) for p in PROMPTS)
    assert to_half < to_full / 2, (to_half, to_full)
    assert any(measured.llama_logits["a05", p] != measured.llama_logits["a1", p]
               for p in PROMPTS)

