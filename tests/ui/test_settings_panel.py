from __future__ import annotations

from workbench.engine.protocol import Sampling
from workbench.settings import ModelSettings
from workbench.ui.chat.settings_panel import (
    SettingsPanel,
    format_stop_strings,
    parse_stop_strings,
)


def make_panel(qtbot) -> SettingsPanel:
    panel = SettingsPanel(Sampling(), ModelSettings(), "Balanced", {})
    qtbot.addWidget(panel)
    panel.show()
    return panel


def test_focusing_a_knob_names_its_concept(qtbot) -> None:
    panel = make_panel(qtbot)
    panel.activateWindow()
    with qtbot.waitSignal(panel.sig_knob_focused) as blocker:
        panel.knob_widgets["top_p"].setFocus()
    assert blocker.args == ["top_p", "top-p"]


def test_knobs_presets_and_user_presets(qtbot) -> None:
    panel = make_panel(qtbot)
    assert panel.preset_name == "Balanced"
    with qtbot.waitSignal(panel.sig_sampling_changed) as blocker:
        panel.knob_widgets["temperature"].setValue(1.3)
    assert blocker.args[0].temperature == 1.3 and panel.preset_name == "Custom"
    panel.fixed_seed.setChecked(True)
    panel.seed.setValue(42)
    panel.stop_strings.setPlainText("END\n\\n\\n")
    assert panel.sampling().seed == 42 and panel.sampling().stop == ("END", "\n\n")
    with qtbot.waitSignal(panel.sig_user_presets_changed) as saved:
        panel.store_user_preset("Hot")
    assert saved.args[0]["Hot"]["temperature"] == 1.3 and panel.preset_name == "Hot"
    panel._on_preset_activated("Precise")
    assert panel.sampling().temperature == 0.0 and panel.sampling().seed == 42
    assert panel.preset_name == "Precise"


def test_stop_string_escapes_roundtrip() -> None:
    stops = ("a\nb", "\t", "plain")
    assert parse_stop_strings(format_stop_strings(stops)) == stops
