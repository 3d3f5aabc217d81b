"""The Hardware page and the Fit panel, offscreen."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.hardware.snapshot import (
    CpuInfo,
    GpuInfo,
    GpuProcess,
    HardwareSnapshot,
    LlamaBuild,
    MemoryInfo,
)
from workbench.models.gguf import read_header
from workbench.ui.fit.panel import FitPanel
from workbench.ui.hardware.page import HardwarePage, gpu_build_hint

GiB = 2**30


def fake_snapshot(ram_free: int = 20 * GiB, gpus: tuple[GpuInfo, ...] = (),
                  offload: bool = False) -> HardwareSnapshot:
    return HardwareSnapshot(
        os="Linux", os_version="6.8", machine="x86_64",
        cpu=CpuInfo("Test CPU 9000", 8, 16, ("avx2", "fma")),
        memory=MemoryInfo(32 * GiB, ram_free), gpus=gpus,
        llama=LlamaBuild(offload, (), "CPU : AVX2 = 1"))


NVIDIA = GpuInfo(vendor="nvidia", index=0, name="NVIDIA RTX 4090", total_bytes=24 * GiB,
                 free_bytes=4 * GiB, used_bytes=20 * GiB, driver="555.1",
                 unified_memory=False, processes=(GpuProcess(42, "game.exe", 19 * GiB),))


def test_hardware_page_probes_this_machine(qtbot) -> None:
    page = HardwarePage()
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.sig_snapshot, timeout=60_000):
        page.refresh()
    assert page.snapshot is not None and page.snapshot.cpu.physical_cores >= 1
    assert page.snapshot.cpu.model in page.system_label.text()
    assert "free" in page.ram_bar.format()
    assert "GPU offload" in page.llama_label.text() and "CPU" in page.llama_label.text()
    assert page.refresh_button.isEnabled()


def test_gpu_list_and_cpu_build_hint(qtbot) -> None:
    page = HardwarePage()
    qtbot.addWidget(page)
    page.show_snapshot(fake_snapshot(gpus=(NVIDIA,)))
    texts = [w.text() for w in page.gpu_box.findChildren(type(page.status))]
    assert any("NVIDIA RTX 4090" in t for t in texts) and any("game.exe" in t for t in texts)
    assert "GGML_CUDA" in page.llama_label.text()  # a CPU build on a GPU machine says so
    assert gpu_build_hint(fake_snapshot(gpus=(NVIDIA,), offload=True)) == ""


def test_fit_panel_follows_the_knobs(qtbot, builtin_model: Path) -> None:
    panel = FitPanel()
    qtbot.addWidget(panel)
    panel.show()  # llama.cpp's sizing runs only for a visible panel
    panel.set_snapshot(fake_snapshot())
    with qtbot.waitSignal(panel.sig_plan_changed):
        panel.set_header(read_header(builtin_model))
    assert panel.plan is not None and panel.plan.verdict == "cpu"
    assert "Fits in system memory" in panel.verdict.text()
    small_kv = panel.plan.devices[0].kv
    panel.n_ctx.setValue(8192)
    assert panel.plan.devices[0].kv == small_kv * 2  # 4096 -> 8192 cells
    panel.kv_type.setCurrentText("q8_0")
    assert panel.flash_attn.isChecked()  # a quantized V cache needs it: switched on
    assert panel.plan.devices[0].kv < small_kv * 2
    assert panel.table.columnCount() == 1 and panel.table.item(0, 0).text().endswith("MiB")
    # llama.cpp's own sizing arrives in the background and takes over the KV figure.
    qtbot.waitUntil(lambda: panel.plan.method["kv"] == "llama.cpp (no_alloc)", timeout=30_000)


def test_hidden_fit_panel_does_not_start_sizing(qtbot, builtin_model: Path) -> None:
    panel = FitPanel()
    qtbot.addWidget(panel)
    panel.set_header(read_header(builtin_model))
    assert not panel._measure_timer.isActive()  # nobody is looking: no child process
    panel.show()
    assert panel._measure_timer.isActive()


def test_fit_panel_says_what_to_do_when_it_does_not_fit(qtbot, builtin_model: Path) -> None:
    panel = FitPanel()
    qtbot.addWidget(panel)
    panel.set_snapshot(fake_snapshot(ram_free=250 * 2**20))
    panel.set_header(read_header(builtin_model))
    panel.n_ctx.setValue(8192)
    assert panel.plan.verdict == "wont_fit" and "Does not fit" in panel.verdict.text()
    assert "context of" in panel.details.text() and panel.plan.max_ctx < 8192


@pytest.mark.engine
def test_loading_a_model_that_will_not_fit_warns_first(qtbot, builtin_model: Path) -> None:
    from workbench.chat.store import ChatStore
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    store = ChatStore(data_dir() / "conversations.db")
    window = MainWindow(store, SettingsStore())
    qtbot.addWidget(window)
    window.hardware.show_snapshot(fake_snapshot(ram_free=100 * 2**20))
    window.load_model(str(builtin_model))
    qtbot.waitUntil(lambda: "load" in window.banners, timeout=10_000)
    banner = window.banners["load"]
    assert banner.notice.title == "This model may not fit" and "GiB" in banner.notice.text
    assert window.engine.state == "empty"  # nothing loaded behind the user's back
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        banner.buttons["Load anyway"].click()
    window.close()
    store.close()


@pytest.mark.engine
def test_gpu_layers_default_to_the_planners_choice(qtbot, builtin_model: Path) -> None:
    from workbench.chat.store import ChatStore
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    store = ChatStore(data_dir() / "conversations.db")
    window = MainWindow(store, SettingsStore())
    qtbot.addWidget(window)
    roomy = GpuInfo(vendor="nvidia", index=0, name="Big GPU", total_bytes=24 * GiB,
                    free_bytes=20 * GiB, used_bytes=4 * GiB, driver="", unified_memory=False)
    window.hardware.show_snapshot(fake_snapshot(gpus=(roomy,), offload=True))
    assert window.panel.n_gpu_layers.text() == "Auto"
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        window.load_model(str(builtin_model))
    assert window.engine.spec.n_gpu_layers == 31  # 30 blocks + the output layer: all of it
    # An explicit choice wins.
    window.panel.n_gpu_layers.setValue(5)
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        window.load_model(str(builtin_model))
    assert window.engine.spec.n_gpu_layers == 5
    window.close()
    store.close()
