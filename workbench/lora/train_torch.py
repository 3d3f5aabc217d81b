"""The torch side of LoRA training (train.py runs it in the child process): load the GGUF
base with transformers, wrap it with PEFT, and run the AdamW loop.

torch, transformers and peft (the `train` extra) are imported inside the functions, so this
module imports without them (the architecture test imports every core module).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.engine.templates import TemplateError, resolve_template
from workbench.lora.chat_examples import (
    IGNORE,
    Example,
    PromptFormat,
    encode_examples,
)
from workbench.lora.train import Emit, TrainConfig, TrainError, batches, total_steps_for


@dataclass
class Base:
    """The base model as transformers reads it, ready for PEFT."""

    model: Any  # a PeftModel once train_lora has wrapped it
    tokenizer: Any
    metadata: dict[str, Any]


def _threads(config: TrainConfig) -> int:
    if config.threads > 0:
        return config.threads
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def load_base(config: TrainConfig) -> Base:
    """The GGUF's weights, dequantized to float32, and its tokenizer, via transformers."""
    # Loading a local file must never reach for the network (and would hang offline).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    from workbench.models.gguf import GGUFError
    from workbench.models.split import read_model_header

    torch.set_num_threads(_threads(config))
    hf_logging.disable_progress_bar()  # a bar per tensor; the GUI shows our events instead
    path = Path(config.base_gguf)
    try:
        header = read_model_header(path)
    except GGUFError as exc:
        raise TrainError(str(exc), "Choose the base model's .gguf file.") from exc
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent),
                                                               gguf_file=path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, NotImplementedError, OSError) as exc:
        raise TrainError(
            f"transformers cannot read {path.name} for training "
            f"({header.architecture}): {exc}",
            "Train on a model transformers can load from GGUF (Llama, Qwen2/3, Mistral "
            "and others), in a common quantization (F16, Q8_0, Q4_K …).") from exc
    return Base(model, tokenizer, dict(header.metadata))


def make_format(config: TrainConfig, base: Base) -> PromptFormat:
    """The prompt format the engine uses for this model (same template, same BOS rule)."""
    tok = base.tokenizer

    def encode(text: str) -> list[int]:
        # Special tokens in the text (<|im_start|>) are parsed, as llama.cpp does with
        # special=True; no BOS is added here.
        return list(tok(text, add_special_tokens=False)["input_ids"])

    metadata = {k: str(v) for k, v in base.metadata.items()}
    try:
        template = resolve_template(metadata, config.chat_template,
                                    lambda text: len(encode(text)) == 1)
    except TemplateError as exc:
        raise TrainError(str(exc), "Choose a chat format for the model.") from exc

    def token_text(key: str) -> tuple[int | None, str]:
        value = base.metadata.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None, ""
        return value, tok.convert_ids_to_tokens(value) or ""

    bos_id, bos_text = token_text("tokenizer.ggml.bos_token_id")
    _, eos_text = token_text("tokenizer.ggml.eos_token_id")
    add_bos = str(base.metadata.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
    return PromptFormat(template, encode, bos_text, eos_text,
                        bos_id if add_bos else None)


def _wrap(config: TrainConfig, model: Any) -> Any:
    import peft

    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha,
                           lora_dropout=config.dropout, bias="none",
                           target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as exc:
        raise TrainError(f"PEFT cannot put LoRA on {', '.join(config.target_modules)}: {exc}",
                         "Choose target modules the model has (for Llama-like models: "
                         "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                         "down_proj).") from exc


def _batch(sequences: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors; padding is masked out and never learned."""
    import torch

    width = max(len(ids) for ids, _ in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (seq_ids, seq_labels) in enumerate(sequences):
        n = len(seq_ids)
        ids[row, :n] = torch.tensor(seq_ids)
        labels[row, :n] = torch.tensor(seq_labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def train_lora(config: TrainConfig, base: Base, fmt: PromptFormat, examples: list[Example],
               emit: Emit) -> float:
    """Wrap base.model with LoRA and train it; returns the mean loss of the last pass
    over the data (the last step alone is one batch's loss, noisier)."""
    import torch

    sequences, cut = encode_examples(examples, fmt, config.max_length)
    if cut:
        emit({"event": "status",
              "message": f"{cut} conversations are longer than {config.max_length} tokens "
                         "and were cut"})
    torch.manual_seed(config.seed)  # LoRA's A matrices start random
    model = _wrap(config, base.model)
    base.model = model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    total = total_steps_for(config, len(sequences))
    per_pass = math.ceil(len(sequences) / config.batch_size)
    pad_id = base.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    emit({"event": "started", "total_steps": total, "trainable_params": trainable,
          "sequences": len(sequences)})
    started = time.perf_counter()
    losses: list[float] = []
    for step, rows in enumerate(batches(len(sequences), config.batch_size, total,
                                        config.seed), 1):
        out = model(**_batch([sequences[i] for i in rows], pad_id))
        loss = out.loss
        if not torch.isfinite(loss):
            raise TrainError(f"The loss became {loss.item()} at step {step}.",
                             "Lower the learning rate.")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        emit({"event": "step", "step": step, "total_steps": total, "loss": losses[-1],
              "elapsed_s": round(time.perf_counter() - started, 3)})
    model.eval()
    last = losses[-min(per_pass, len(losses)):]
    return sum(last) / len(last)
