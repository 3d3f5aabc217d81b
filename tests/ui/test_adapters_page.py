"""The Adapters page on the built-in model: add, inspect, scale live, refuse, import, keep."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine.lora_files import base_shapes, every_block, write_lora
from tests.lora.fakes import write_peft_adapter
from workbench.chat.store import ChatStore
from workbench.engine.protocol import AdapterSetting
from workbench.settings import SettingsStore, data_dir
from workbench.ui.main_window import MainWindow

pytestmark = pytest.mark.engine


@pytest.fixture
def window(qtbot, fresh_window: MainWindow) -> MainWindow:
    with qtbot.waitSignal(fresh_window.engine.sig_loaded, timeout=60_000):
        fresh_window.start()
    qtbot.waitUntil(lambda: fresh_window.adapters.base_header is not None, timeout=10_000)
    fresh_window.show_page("Adapters")
    return fresh_window


@pytest.fixture(scope="module")
def lora(builtin_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    shapes = every_block(base_shapes(builtin_model), "attn_q")
    return write_lora(tmp_path_factory.mktemp("lora") / "q-lora.gguf", shapes, rank=8,
                      alpha=16, std=0.08)


def _applied(qtbot, window: MainWindow, action) -> tuple[AdapterSetting, ...]:
    with qtbot.waitSignal(window.engine.sig_adapters_set, timeout=30_000) as got:
        action()
    return got.args[0].active


def test_add_inspect_and_scale_live(qtbot, window, lora) -> None:
    page, engine = window.adapters, window.engine
    pid, loads = engine.pid, []
    engine.sig_loaded.connect(loads.append)
    active = _applied(qtbot, window, lambda: page.add_adapter(str(lora)))
    assert [a.path for a in active] == [str(lora)] and active[0].scale == 1.0
    row = page.rows[0]
    assert "Applied at 1" in row.status.text()
    details = page.details.text()
    assert "Rank r</b></td><td>8" in details and "attn_q in 30 layers" in details
    assert "Trainable parameters" in details and "% of the base model" in details
    assert "s·α/r = 1 × 2 = 2" in details
    # Moving the slider applies the new scale without a reload.
    active = _applied(qtbot, window, lambda: row.slider.setValue(50))
    assert active[0].scale == 0.5 and engine.pid == pid and not loads
    assert "0.5 × 2 = 1" in page.details.text()
    active = _applied(qtbot, window, lambda: row.enabled.setChecked(False))
    assert active == () and "Off" in row.status.text()
    assert window.settings.adapters == (AdapterSetting(str(lora), 0.5, False),)


def test_an_adapter_for_another_architecture_is_refused_clearly(qtbot, window, tmp_path,
                                                                 builtin_model) -> None:
    shapes = every_block(base_shapes(builtin_model), "attn_q")
    qwen = write_lora(tmp_path / "for-qwen.gguf", shapes, arch="qwen2")
    row = window.adapters.add_adapter(str(qwen))
    qtbot.waitUntil(lambda: bool(row.problems), timeout=10_000)
    assert "qwen2" in row.status.text() and not row.usable
    assert window.adapters.wanted() == () and window.engine.adapters == ()


def test_a_file_that_is_not_an_adapter_says_so(qtbot, window, builtin_model) -> None:
    row = window.adapters.add_adapter(str(builtin_model))
    qtbot.waitUntil(lambda: row.read_error is not None, timeout=10_000)
    assert "adapter" in row.status.text().lower() and not row.usable


def test_adapters_are_kept_and_applied_again_next_start(qtbot, window, lora) -> None:
    _applied(qtbot, window, lambda: window.adapters.add_adapter(str(lora), scale=0.75))
    window.close()
    store = ChatStore(data_dir() / "conversations.db")
    again = MainWindow(store, SettingsStore())
    qtbot.addWidget(again)
    try:
        assert [r.setting for r in again.adapters.rows] == [AdapterSetting(str(lora), 0.75)]
        with qtbot.waitSignal(again.engine.sig_adapters_set, timeout=60_000) as got:
            again.start()
        assert got.args[0].active == (AdapterSetting(str(lora), 0.75),)
    finally:
        again.close()
        store.close()


def test_import_a_peft_adapter(qtbot, window, tmp_path) -> None:
    folder = write_peft_adapter(tmp_path / "smol-peft")
    with qtbot.waitSignal(window.engine.sig_adapters_set, timeout=60_000) as got:
        window.adapters.import_peft(str(folder))
    out = data_dir() / "adapters" / "smol-peft.gguf"
    assert out.exists() and got.args[0].active[0].path == str(out)
    assert any(n.title == "Adapter imported" for n in window.visible_notices())


def test_a_bad_peft_folder_is_reported(qtbot, window, tmp_path) -> None:
    folder = write_peft_adapter(tmp_path / "dora", use_dora=True)
    window.adapters.import_peft(str(folder))
    qtbot.waitUntil(lambda: any(n.title == "Cannot import this adapter"
                                for n in window.visible_notices()), timeout=30_000)
    assert not window.adapters.rows


def test_the_lora_concept_is_one_click_away(qtbot, window, lora) -> None:
    page = window.adapters
    page.add_adapter(str(lora))
    qtbot.waitUntil(lambda: "What is LoRA?" in page.details.text(), timeout=10_000)
    page.details.linkActivated.emit("concept:lora")
    assert window.explainer.current.id == "lora" and window.explainer_dock.isVisible()
