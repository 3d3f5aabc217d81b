"""What the window does with bad settings and failed loads: out-of-range values from
disk are clamped and said once; a load that fails keeps the model the user was chatting
with and is not remembered for the next start; a load never skips the fit check because
the hardware probe had not finished."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.engine.test_load_failure import HUGE_CTX, needs_refused_allocations
from workbench.chat.store import ChatStore
from workbench.settings import ModelSettings, SettingsStore, config_dir, data_dir
from workbench.ui import notify
from workbench.ui.hardware import page as hardware_page
from workbench.ui.main_window import MainWindow


def _window(qtbot) -> MainWindow:
    store = ChatStore(data_dir() / "conversations.db")
    window = MainWindow(store, SettingsStore())
    qtbot.addWidget(window)
    window.destroyed.connect(store.close)
    return window


def _titles(window: MainWindow) -> list[str]:
    return [n.title for n in window.visible_notices()]


def test_out_of_range_settings_are_clamped_and_said_once(qtbot) -> None:
    path = config_dir() / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "sampling": {"temperature": -1, "top_p": 5, "seed": "x", "stop": ["", "END"],
                     "max_tokens": 0},
        "model": {"n_ctx": 0, "type_v": "q8_0", "flash_attn": False},
        "user_presets": {"Mine": {"min_p": 9}}}))
    window = _window(qtbot)
    assert _titles(window) == ["Some settings were out of range"]
    text = window.visible_notices()[0].text
    assert "temperature was -1, outside its range (0 to 2); it is now 0.0." in text
    assert "Preset “Mine”: min_p was 9" in text and "flash attention" in text
    # The knobs show what the engine gets.
    sampling = window.panel.sampling()
    assert (sampling.temperature, sampling.top_p, sampling.seed, sampling.max_tokens,
            sampling.stop) == (0.0, 1.0, None, 1, ("END",))
    assert window.panel.knob_widgets["temperature"].value() == 0.0
    model = window.panel.model_settings()
    assert model.n_ctx == 16 and model.type_v == "q8_0" and model.flash_attn
    window.close()
    # Saved corrected: the next start has nothing to say.
    stored = json.loads(path.read_text())
    assert stored["sampling"]["temperature"] == 0.0 and stored["model"]["flash_attn"]
    assert "Some settings were out of range" not in _titles(_window(qtbot))


@pytest.mark.engine
@needs_refused_allocations
def test_a_load_that_fails_keeps_the_chat_and_is_not_remembered(
        qtbot, fresh_window: MainWindow, builtin_model: Path) -> None:
    window = fresh_window
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        window.start()
    before = window.engine.spec
    with qtbot.waitSignal(window.engine.sig_chat_done, timeout=60_000):
        assert window.chat.send("Hello")
    huge = replace(window.panel.model_settings(), n_ctx=HUGE_CTX)
    window.load_model(str(builtin_model), model=huge)
    # The planner sees it will not fit and asks first; the user insists.
    qtbot.waitUntil(lambda: "This model may not fit" in _titles(window), timeout=20_000)
    with qtbot.waitSignal(window.engine.sig_load_failed, timeout=60_000):
        window.banners["load"].buttons["Load anyway"].click()
    notice = window.banners["load"].notice
    assert notice.title == "The model did not load"
    assert f"{HUGE_CTX:,} tokens" in notice.text and "GiB" in notice.text
    assert "Your chat goes on with SmolLM2 135M Instruct (built-in)" in notice.text
    assert "smaller context" in notice.hint
    # The model the user had is there, ready, with the settings it was loaded with.
    assert window.engine.state == "ready" and window.engine.spec == before
    assert window.engine.model is not None and window.engine.model.n_ctx == before.n_ctx
    assert "Loading" not in window.panel.model_label.text()
    stored = json.loads((config_dir() / "settings.json").read_text())
    assert stored["model"]["n_ctx"] == before.n_ctx  # the failed setting is not kept
    with qtbot.waitSignal(window.engine.sig_chat_done, timeout=60_000):
        assert window.chat.send("Still there?")


@pytest.mark.engine
def test_a_load_waits_for_the_probe_instead_of_skipping_the_fit_check(
        qtbot, fresh_window: MainWindow, builtin_model: Path) -> None:
    window = fresh_window
    assert window.hardware.snapshot is None  # nothing has probed yet
    window.load_model(str(builtin_model), model=ModelSettings(n_ctx=1 << 24))
    qtbot.waitUntil(lambda: "This model may not fit" in _titles(window), timeout=30_000)
    assert window.hardware.snapshot is not None  # the check ran on the probe's answer
    assert window.engine.state == "empty"  # and nothing was loaded behind its back
    # A model that fits loads once the probe has answered.
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        window.load_model(str(builtin_model), model=ModelSettings(n_ctx=1024))


def test_when_the_probe_fails_the_check_uses_the_free_ram(
        qtbot, fresh_window: MainWindow, builtin_model: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(timeout: float = 60) -> None:
        raise RuntimeError("The hardware probe failed: test")

    monkeypatch.setattr(hardware_page, "probe_isolated", broken)
    window = fresh_window
    window.load_model(str(builtin_model), model=ModelSettings(n_ctx=1 << 24))
    qtbot.waitUntil(lambda: "This model may not fit" in _titles(window), timeout=30_000)
    assert "Hardware probe failed" in _titles(window)
    assert window.hardware.snapshot is None and window.engine.state == "empty"
    notify.dismiss("load")


@pytest.mark.engine
@needs_refused_allocations
def test_a_failed_load_after_a_superseded_one_names_what_the_engine_holds(
        qtbot, builtin_model: Path) -> None:
    from workbench.engine.protocol import LoadSpec
    from workbench.ui.engine_controller import EngineController

    engine = EngineController()
    try:
        small = LoadSpec(str(builtin_model), n_ctx=512)
        # The first load is superseded before it is answered; the engine loads it anyway,
        # then fails the second and keeps the first: the controller must say so.
        engine.load(small)
        with qtbot.waitSignal(engine.sig_load_failed, timeout=60_000) as failed:
            engine.load(LoadSpec(str(builtin_model), n_ctx=HUGE_CTX))
        assert failed.args[0].still_loaded is not None
        assert engine.state == "ready" and engine.spec == small
        assert engine.model is not None and engine.model.n_ctx == 512
    finally:
        engine.close()
