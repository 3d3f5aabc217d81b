"""Shared pieces of the benchmarks."""

from __future__ import annotations

import statistics
from pathlib import Path

from workbench.engine.worker import default_threads
from workbench.models.builtin import builtin_model_path


def model_path(model: str | None) -> Path:
    return Path(model) if model else builtin_model_path()


def threads() -> int:
    return default_threads()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
