"""Smoke tests of the fault benchmark (`python -m workbench.bench faults`): a few damaged
files and one kill of each kind. The full run, with its 20 kills each, is a benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.bench import faults
from workbench.bench.faults_files import CRASHES, cases, run_cases

pytestmark = pytest.mark.engine


def test_damaged_files_get_an_error_not_a_crash(builtin_model: Path, tmp_path: Path) -> None:
    rows, usable = run_cases(builtin_model, tmp_path, quick=True)
    assert {r["name"] for r in rows} == {c.name for c in cases(builtin_model, quick=True)}
    for row in rows:
        assert row["outcome"] not in CRASHES, row
        assert row["outcome"] in ("clear_error", "slow_error", "loaded_anyway"), row
    by_name = {r["name"]: r for r in rows}
    # The repeated token that aborted llama.cpp is now refused by the app's own check.
    assert by_name["bitflip_header_17"]["precheck"] == "GGUFError"
    assert "vocabulary" in by_name["bitflip_header_17"]["message"]
    assert by_name["tensor_type_200"]["precheck"] == "ok"  # llama.cpp's own refusal
    assert usable
    assert not list(tmp_path.iterdir())  # each ~100 MB file is gone after its test


def test_an_engine_kill_is_survived(qapp: object) -> None:
    result = faults.engine_kills(1)
    assert result["engine_kills_survived"] == 1, result


def test_an_app_kill_keeps_the_database() -> None:
    result = faults.app_kills(1)
    assert result["app_kills_db_ok"] == 1, result
    assert result["orphan_workers_killed"] == 0, result
