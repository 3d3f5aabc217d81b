"""The Compare page on the built-in model: one prompt, one seed, A then B on one engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from workbench.chat.knobs import PRESETS
from workbench.models.requantize import requantize
from workbench.ui import notify
from workbench.ui.main_window import MainWindow

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def q4_0_copy(builtin_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second quantization of the built-in model, made by llama.cpp's quantizer."""
    return requantize(builtin_model, tmp_path_factory.mktemp("quant") / "smollm2.Q4_0.gguf",
                      "Q4_0")


@pytest.fixture
def window(qtbot, fresh_window: MainWindow) -> MainWindow:
    with qtbot.waitSignal(fresh_window.engine.sig_loaded, timeout=60_000):
        fresh_window.start()
    fresh_window.show_page("Compare")
    fresh_window.compare.prompt.setPlainText("Name a colour.")
    fresh_window.compare.max_tokens.setValue(24)
    return fresh_window


def _run(qtbot, window: MainWindow) -> bool:
    with qtbot.waitSignal(window.compare_runner.sig_finished, timeout=120_000) as done:
        assert window.compare.run()
    return bool(done.args[0])


def test_equal_columns_give_identical_replies(qtbot, window) -> None:
    page = window.compare
    for column in page.columns:
        column.sampling_editor.set_sampling(PRESETS["Creative"])
    assert "are the same" in page.differences.text()
    assert _run(qtbot, window)
    a, b = (c.done for c in page.columns)
    assert a is not None and b is not None
    assert a.text and a.text == b.text and a.token_ids and a.token_ids == b.token_ids
    assert "identical" in page.summary.text()
    for column in page.columns:
        assert "tokens/s" in column.stats.text()
        assert f"{len(column.done.token_ids)} tokens" in column.stats.text()


def test_sampling_columns_diverge_and_the_place_is_marked(qtbot, window) -> None:
    page = window.compare
    page.columns[0].sampling_editor.set_sampling(PRESETS["Precise"])
    page.columns[1].sampling_editor.set_sampling(replace(PRESETS["Creative"], temperature=1.8))
    assert "Temperature 0 → 1.8" in page.differences.text()
    window.chat.composer.setPlainText("Hello")
    with qtbot.waitSignal(window.compare_runner.sig_finished, timeout=120_000) as done:
        assert page.run()
        # The chat waits while the compare view drives the engine; the draft is kept.
        assert not window.chat.send()
        assert any("busy" in n.title for n in window.visible_notices())
        assert window.chat.composer.toPlainText() == "Hello"
    assert done.args == [True]
    a, b = (c.done for c in page.columns)
    assert a.text != b.text
    summary = page.summary.text()
    assert "agree" in summary or "differ from the first token" in summary
    assert "#ffe08a" in page.columns[1].reply.toHtml()
    assert window.engine.owner is None and window.chat.send()


def test_two_quantizations_reload_between_runs_and_restore(qtbot, window, q4_0_copy) -> None:
    page = window.compare
    original = window.engine.spec
    page.set_axis("model")
    page.set_models([("built-in Q4_1", original.model_path),
                     ("requantized Q4_0", str(q4_0_copy))])
    assert page.columns[0].model_editor.model_path() == original.model_path
    assert page.columns[1].model_editor.model_path() == str(q4_0_copy)
    assert "smollm2.Q4_0.gguf" in page.differences.text()
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=120_000,
                          check_params_cb=lambda info: info.path == original.model_path):
        assert _run(qtbot, window)
    assert all(c.done is not None and c.done.text for c in page.columns)
    # The user's model and load settings are back.
    assert window.engine.spec == original and window.engine.ready
    assert page.summary.text()


def test_stop_ends_the_run_and_frees_the_engine(qtbot, window) -> None:
    page = window.compare
    page.max_tokens.setValue(2000)
    page.prompt.setPlainText("Write a long story about a dragon.")
    runner = window.compare_runner
    with qtbot.waitSignal(runner.sig_finished, timeout=60_000) as done:
        with qtbot.waitSignal(runner.sig_column_token, timeout=60_000):
            page.run()
        page.stop_button.click()
    assert done.args == [False]
    assert page.columns[0].done.reason == "cancelled" and page.columns[1].done is None
    assert window.engine.owner is None and page.run_button.isEnabled()


def test_a_model_that_fails_to_load_is_reported_and_the_original_comes_back(
        qtbot, window, tmp_path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    page = window.compare
    original = window.engine.spec
    page.set_axis("model")
    page.set_models([("built-in", original.model_path), ("broken", str(bad))])
    # The engine refuses the broken file without unloading the model it has, so the
    # original is still there when the run ends: nothing needs loading back.
    assert not _run(qtbot, window)
    assert any(n.title == "The comparison stopped" for n in window.visible_notices())
    assert page.columns[0].done is not None and page.columns[1].done is None
    assert window.engine.spec == original and window.engine.ready
    assert window.engine.model is not None and window.engine.model.path == original.model_path


def test_cannot_start_without_a_prompt(qtbot, window) -> None:
    window.compare.prompt.setPlainText("")
    assert not window.compare.run()
    assert notify.hub() is not None
    assert any("prompt" in n.text for n in window.visible_notices())


def test_adapter_on_and_off(qtbot, window, builtin_model, tmp_path) -> None:
    from tests.engine.lora_files import base_shapes, every_block, write_lora

    lora = write_lora(tmp_path / "q-lora.gguf",
                      every_block(base_shapes(builtin_model), "attn_q"), std=0.08)
    qtbot.waitUntil(lambda: window.adapters.base_header is not None, timeout=10_000)
    with qtbot.waitSignal(window.engine.sig_adapters_set, timeout=30_000):
        window.adapters.add_adapter(str(lora), scale=0.5)
    page = window.compare
    page.set_axis("adapter")
    a, b = (c.adapter_editor for c in page.columns)
    assert a.adapter_path() == "" and b.adapter_path() == str(lora)
    b.scale.setValue(1.5)
    assert "adapters: none → q-lora × 1.5" in page.differences.text()
    assert _run(qtbot, window)
    done_a, done_b = (c.done for c in page.columns)
    assert done_a.token_ids != done_b.token_ids
    # The user's own setting (× 0.5) is back once the comparison is over.
    qtbot.waitUntil(lambda: window.engine.adapters == window.adapters.wanted(), timeout=10_000)
    assert window.engine.adapters[0].scale == 0.5
