"""Fixtures shared by the LoRA tests: the built-in model's header and one adapter for it."""

from __future__ import annotations

from pathlib import Path

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
