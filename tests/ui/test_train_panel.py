"""The training panel: how to enable it without the extra; a real short run and a cancel
with it (torch, transformers and peft run in the child process only)."""

from __future__ import annotations

import json

import pytest

from workbench.installation import extra_hint
from workbench.lora.train import TrainEvent
from workbench.settings import data_dir
from workbench.ui.lora import train_panel
from workbench.ui.main_window import MainWindow


@pytest.fixture
def window(qtbot, fresh_window: MainWindow) -> MainWindow:
    with qtbot.waitSignal(fresh_window.engine.sig_loaded, timeout=60_000):
        fresh_window.start()
    fresh_window.show_page("Adapters")
    return fresh_window


def _small(panel: train_panel.TrainPanel) -> None:
    panel.rank.setValue(2)
    for module, box in panel.targets.items():
        box.setChecked(module == "q_proj")
    panel.max_steps.setValue(3)
    panel.name.setText("tiny")


def test_without_the_extra_the_panel_says_how_to_enable_it(qtbot, fresh_window) -> None:
    panel = fresh_window.adapters.train
    panel.show_availability("Training needs torch, which is not installed.\n"
                            + extra_hint("train", "checkout"))
    assert not panel.controls.isEnabled() and not panel.unavailable.isHidden()
    assert panel.learning_rate.value() == 2e-3  # the default, not the spin box's minimum
    assert "make run WORKBENCH_EXTRAS=train" in panel.unavailable.text()


def test_events_drive_the_progress_bar_and_the_loss_plot(qtbot, fresh_window) -> None:
    panel = fresh_window.adapters.train
    panel.handle_event(TrainEvent("started", total_steps=10, trainable_params=1234,
                                  sequences=6))
    for step, loss in ((1, 3.0), (2, 2.5), (3, 1.0)):
        panel.handle_event(TrainEvent("step", step=step, total_steps=10, loss=loss))
    assert panel.progress.maximum() == 10 and panel.progress.value() == 3
    assert panel.plot.points == [(1, 3.0), (2, 2.5), (3, 1.0)]
    assert "loss 1.000" in panel.status.text()
    image = panel.plot.grab().toImage()
    blue = sum(1 for x in range(image.width()) for y in range(image.height())
               if image.pixelColor(x, y).name() == "#2a6fdb")
    assert blue > 20  # the line is drawn


def test_bad_examples_are_refused_before_anything_starts(qtbot, window, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    panel = window.adapters.train
    panel.data.setText(str(bad))
    panel.start()
    qtbot.waitUntil(lambda: any(n.title == "Cannot train on this file"
                                for n in window.visible_notices()), timeout=10_000)
    assert not panel.running


@pytest.mark.train
def test_a_short_run_adds_and_applies_the_adapter(qtbot, window) -> None:
    panel = window.adapters.train
    _small(panel)
    with qtbot.waitSignal(window.engine.sig_adapters_set, timeout=240_000,
                          check_params_cb=lambda e: bool(e.active)) as applied:
        panel.start()
        qtbot.waitUntil(lambda: panel.running, timeout=10_000)
    out = data_dir() / "adapters" / "tiny.gguf"
    assert out.exists() and applied.args[0].active[0].path == str(out)
    assert panel.progress.value() == panel.progress.maximum() == 3
    assert len(panel.plot.points) == 3 and "Trained tiny.gguf" in panel.status.text()
    assert json.loads((data_dir() / "adapters" / ".tiny.train.json").read_text())["rank"] == 2


@pytest.mark.train
def test_cancel_stops_and_keeps_nothing(qtbot, window) -> None:
    panel = window.adapters.train
    _small(panel)
    panel.max_steps.setValue(500)
    panel.start()
    qtbot.waitUntil(lambda: panel.progress.maximum() == 500, timeout=180_000)
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.running, timeout=30_000)
    assert "Cancelled" in panel.status.text()
    leftovers = [p.name for p in (data_dir() / "adapters").iterdir()
                 if not p.name.endswith(".train.json")]
    assert leftovers == [] and not window.adapters.rows
