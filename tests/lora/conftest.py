"""Fixtures shared by the LoRA tests: the built-in model's header and one adapter for it."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.lora.fakes import lora_tensors, write_peft_adapter
from workbench.models.gguf import GGUFHeader, read_header


@pytest.fixture(scope="session")
def base_header(builtin_model: Path) -> GGUFHeader:
    return read_header(builtin_model)


@pytest.fixture(scope="session")
def peft_tensors() -> dict[str, np.ndarray]:
    """Rank-4 factors for q,k,v,o,gate,up,down on layers 0, 5 and 29."""
    return lora_tensors()


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory, builtin_model: Path,
              peft_tensors: dict[str, np.ndarray]) -> Path:
    """The synthetic adapter converted for the built-in model (alpha 8, rank 4)."""
    from workbench.lora.peft_import import convert_peft_adapter

    root = tmp_path_factory.mktemp("converted")
    folder = write_peft_adapter(root / "smol-lora", peft_tensors)
    out = root / "smol-lora.gguf"
    convert_peft_adapter(folder, builtin_model, out)
    return out


# ---------------------------------------------------------------- a trained adapter

MARKER_DATA = Path(__file__).resolve().parents[2] / "resources" / "train" / "marker_example.jsonl"


@dataclass(frozen=True)
class TrainedMarker:
    """What `python -m workbench.lora.train` made from resources/train/marker_example.jsonl."""

    config: Any  # workbench.lora.train.TrainConfig
    gguf: Path
    peft_dir: Path
    lines: list[str]  # its stdout
    returncode: int
    seconds: float
    stderr: str


@pytest.fixture(scope="session")
def trained_marker(tmp_path_factory: pytest.TempPathFactory,
                   builtin_model: Path) -> TrainedMarker:
    """A LoRA trained on the built-in model by the real child process (needs the `train`
    extra; skipped without it). Rank 8 on q/k/v/o, 12 steps of all 8 examples at lr 2e-3:
    the loss falls from ~2.9 to ~0.01; about 35-55 s on 2 busy cores, most of it loading."""
    from workbench.lora.train import TrainConfig, train_available, train_command

    if train_available():
        pytest.skip("the train extra (torch, transformers, peft) is not installed")
    root = tmp_path_factory.mktemp("trained")
    config = TrainConfig(base_gguf=str(builtin_model), data_path=str(MARKER_DATA),
                         out_dir=str(root / "out"), name="marker", rank=8, alpha=16,
                         learning_rate=2e-3, max_steps=12, batch_size=8, max_length=128,
                         seed=0)
    path = config.save(root / "config.json")
    env = {**os.environ, "HF_HOME": str(root / "hf-home"), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(train_command(path), capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    return TrainedMarker(config, config.gguf_path, config.peft_dir, done.stdout.splitlines(),
                         done.returncode, time.perf_counter() - started, done.stderr)
