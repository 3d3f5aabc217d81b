"""The explainer beside the chat: knob → concept, concept → knob, search, links."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QUrl

from workbench.ui.explain.panel import ExplainerPanel
from workbench.ui.main_window import MainWindow


@pytest.fixture
def window(fresh_window: MainWindow) -> MainWindow:
    return fresh_window


def test_focusing_a_knob_opens_its_concept_beside_the_chat(qtbot, window) -> None:
    window.explainer_dock.hide()
    window.activateWindow()
    window.panel.focus_knob("top_p")
    qtbot.waitUntil(lambda: window.explainer.current is not None)
    assert window.explainer.current.id == "top-p" and window.explainer_dock.isVisible()
    assert "Top-p" in window.explainer.view.toPlainText() or "top-p" in \
        window.explainer.view.toPlainText().lower()


def test_a_concept_links_back_to_its_knob(qtbot, window) -> None:
    window.show_page("Hardware")
    window.explainer.show_concept("temperature")
    assert "knob:temperature" in window.explainer.view.toHtml()
    window.activateWindow()
    window.explainer.view.anchorClicked.emit(QUrl("knob:temperature"))
    assert window.pages.currentWidget() is window.chat
    qtbot.waitUntil(lambda: window.panel.knob_widgets["temperature"].hasFocus())


def test_search_and_cross_links(qtbot) -> None:
    panel = ExplainerPanel()
    qtbot.addWidget(panel)
    total = panel.list.count()
    assert total >= 38
    panel.search.setText("cache")
    assert 0 < panel.list.count() < total
    assert panel.list.item(0).text().lower().find("cache") >= 0  # a title hit ranks first
    panel.show_concept("kv-cache")
    related = panel.current.related
    assert related
    panel.view.anchorClicked.emit(QUrl(f"concept:{related[0]}"))
    assert panel.current.id == related[0]
    assert not panel.show_concept("no-such-concept")


@pytest.mark.engine
def test_live_demos_follow_the_loaded_model(qtbot, window) -> None:
    demos = window.demos
    with qtbot.waitSignal(window.engine.sig_loaded, timeout=60_000):
        window.start()
    qtbot.waitUntil(lambda: demos.shape is not None, timeout=10_000)
    demos.kv_ctx.setValue(2048)
    assert "45.0 MiB" in demos.kv_text.text()  # what llama.cpp allocates at 2048 (f16)
    demos.set_used_tokens(100)
    assert "100 tokens" in demos.kv_text.text()
    assert "Q4_1" in demos.quant_text.text() and "Q8_0" in demos.quant_text.text()
    demos.lora_rank.setValue(8)
    assert "460,800" in demos.lora_text.text()  # 30 × 8 × ((576+576) + (576+192))
    demos.text_input.setText("Hello world")
    # The first text's tokens may already be shown: wait for the new ones.
    qtbot.waitUntil(lambda: "Hello" in demos.token_view.toPlainText(), timeout=10_000)
    assert "tokens for 11 characters" in demos.token_view.toPlainText()
    assert "■" in demos.mask_view.toPlainText() and "·" in demos.mask_view.toPlainText()


@pytest.mark.engine
def test_next_token_and_perplexity_demos(qtbot, window) -> None:
    from workbench.engine.protocol import Sampling

    demos = window.demos
    with qtbot.waitSignal(window.engine.sig_distribution, timeout=60_000) as got:
        window.start()  # loading the model asks for the first distribution
    stages = [s.name for s in got.args[0].stages]
    assert stages[0] == "logits" and stages[-1] == "temperature"
    qtbot.waitUntil(lambda: "min_p" in demos.next_view.toPlainText(), timeout=10_000)
    # Moving a knob follows at once: top-k 1 leaves a single candidate at 100%.
    with qtbot.waitSignal(window.engine.sig_distribution, timeout=30_000) as got:
        window.panel.knob_widgets["top_k"].setValue(1)
    final = got.args[0].stages[-1]
    assert final.n_kept == 1 and final.candidates[0].prob == pytest.approx(1.0)
    window.panel.set_sampling(Sampling())
    demos.ppl_input.setText("The capital of France is Paris.")
    with qtbot.waitSignal(window.engine.sig_perplexity, timeout=30_000):
        demos.request_perplexity()
    assert "Perplexity" in demos.ppl_view.text() and "nats" in demos.ppl_view.text()
