"""The explainer's live demos, computed on the loaded model: KV cache memory (and this
chat's share), quantization sizes, LoRA's trainable parameters, the causal mask and the
tokenizer."""

from __future__ import annotations

import html

from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from workbench.engine.protocol import (
    ChatMessage,
    Distribution,
    EngineError,
    PerplexityResult,
    Sampling,
    Tokenized,
)
from workbench.explain.demos import (
    LORA_TARGETS,
    causal_mask,
    kv_cache,
    lora_parameters,
    quantization,
)
from workbench.models.fit import ModelShape
from workbench.models.gguf import GGUFHeader
from workbench.models.split import read_model_header
from workbench.ui.engine_controller import EngineController
from workbench.ui.fit.panel import fmt_bytes
from workbench.ui.tasks import op


def _page(*widgets: QWidget) -> QWidget:
    page = QWidget()
    layout = QVBoxLayout(page)
    for w in widgets:
        layout.addWidget(w)
    layout.addStretch(1)
    return page


class DemosWidget(QTabWidget):
    def __init__(self, engine: EngineController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.header: GGUFHeader | None = None
        self.shape: ModelShape | None = None
        self.used_tokens = 0
        self._tokenize_id: int | None = None

        self.kv_ctx = QSpinBox(minimum=256, maximum=1 << 20, singleStep=1024, value=4096)
        self.kv_type = QComboBox()
        self.kv_type.addItems(["f16", "q8_0", "q4_0"])
        self.kv_text = QLabel(wordWrap=True)
        kv = QWidget()
        form = QFormLayout(kv)
        form.addRow("Context", self.kv_ctx)
        form.addRow("Cache type", self.kv_type)
        form.addRow(self.kv_text)
        self.addTab(kv, "KV cache")

        self.quant_text = QLabel(wordWrap=True)
        self.addTab(_page(self.quant_text), "Quantization")

        self.lora_rank = QSpinBox(minimum=1, maximum=512, value=8)
        self.lora_targets = QLineEdit("attn_q, attn_v")
        self.lora_targets.setToolTip("Any of: " + ", ".join(LORA_TARGETS))
        self.lora_text = QLabel(wordWrap=True)
        lora = QWidget()
        form = QFormLayout(lora)
        form.addRow("Rank r", self.lora_rank)
        form.addRow("Targets", self.lora_targets)
        form.addRow(self.lora_text)
        self.addTab(lora, "LoRA")

        self.text_input = QLineEdit("The cat sat on the mat.")
        self.token_view = QTextBrowser()
        self.mask_view = QTextBrowser()
        self.addTab(_page(QLabel("Text"), self.text_input, self.token_view), "Tokenizer")
        self.addTab(_page(QLabel("Each row is a token; it may look at the columns marked ■ "
                                 "(itself and what came before), never ahead."),
                          self.mask_view), "Attention mask")
        self.next_view = QTextBrowser()
        self.insertTab(0, _page(QLabel("The next token of the reply, through each stage of "
                                       "llama.cpp's sampler chain, for this chat and the "
                                       "knobs as they are now."), self.next_view),
                       "Next token")
        self.ppl_input = QLineEdit("The capital of France is Paris.")
        self.ppl_view = QLabel(wordWrap=True)
        self.addTab(_page(QLabel("Perplexity of this text under the loaded model"),
                          self.ppl_input, self.ppl_view), "Perplexity")
        self.setCurrentIndex(0)
        self._distribution_id: int | None = None
        self._perplexity_id: int | None = None
        self.ppl_input.editingFinished.connect(self.request_perplexity)
        engine.sig_distribution.connect(self._on_engine_distribution)
        engine.sig_perplexity.connect(self._on_engine_perplexity)
        engine.sig_query_failed.connect(self._on_engine_query_failed)

        for signal in (self.kv_ctx.valueChanged, self.kv_type.currentIndexChanged):
            signal.connect(self.show_kv)
        self.lora_rank.valueChanged.connect(self.show_lora)
        self.lora_targets.textChanged.connect(self.show_lora)
        self.text_input.textChanged.connect(self.request_tokens)
        engine.sig_tokenized.connect(self._on_engine_tokenized)
        engine.sig_loaded.connect(lambda info: self.set_model(info.path))
        engine.sig_engine_switched.connect(self._on_engine_switched)

    # ------------------------------------------------------------ model

    def set_model(self, path: str) -> None:
        if self.engine.is_remote:
            return  # the file is on the server; _on_engine_switched said so
        op(read_model_header, path).success(self.set_header).run()

    def _on_engine_switched(self, _kind: str) -> None:
        """Forget the old engine's model; on a server, say which demos cannot run."""
        self.header = self.shape = None
        self.used_tokens = 0
        file_reason = self.engine.unavailable("model_file") or ""
        note = (f"<i>Unavailable for a model on a server.</i> {html.escape(file_reason)}"
                if file_reason else "")
        for label in (self.kv_text, self.quant_text, self.lora_text):
            label.setText(note)
        ppl_reason = self.engine.unavailable("perplexity")
        self.ppl_view.setText(f"<i>Unavailable on this server.</i> {html.escape(ppl_reason)}"
                              if ppl_reason else "")
        self.ppl_input.setEnabled(ppl_reason is None)
        self.next_view.clear()
        self.token_view.clear()

    def set_header(self, header: GGUFHeader) -> None:
        self.header, self.shape = header, ModelShape.from_header(header)
        self.show_kv()
        self.show_quant()
        self.show_lora()
        self.request_tokens()

    def set_used_tokens(self, n: int) -> None:
        self.used_tokens = n
        self.show_kv()

    # ------------------------------------------------------------ demos

    def show_kv(self) -> None:
        if self.shape is None:
            return
        d = kv_cache(self.shape, self.kv_ctx.value(), self.kv_type.currentText(),
                     self.used_tokens)
        self.kv_text.setText(
            f"<b>{fmt_bytes(d.total_bytes)}</b> reserved for {d.n_ctx:,} tokens "
            f"({d.bytes_per_token / 1024:,.1f} KiB per token: {self.shape.n_layer} layers × "
            f"{self.shape.n_head_kv[0]} KV heads × ({self.shape.head_dim_k} + "
            f"{self.shape.head_dim_v}) numbers × {d.cache_type}).<br>This chat fills "
            f"{d.used_tokens:,} tokens: <b>{fmt_bytes(d.used_bytes)}</b>.")

    def show_quant(self) -> None:
        if self.header is None:
            return
        q = quantization(self.header)
        rows = "".join(f"<tr><td>{name}</td><td align=right>{bpw:.2f}</td>"
                       f"<td align=right>{fmt_bytes(size)}</td></tr>"
                       for name, bpw, size in q.alternatives)
        self.quant_text.setText(
            f"This file: <b>{q.current_type}</b>, {q.current_bpw:.2f} bits per weight, "
            f"{fmt_bytes(q.current_bytes)} of weights for {q.n_params / 1e6:,.0f}M "
            f"parameters.<br>The same model in other types (typical bits per weight):"
            f"<table cellpadding=3><tr><th>Type</th><th>bits/weight</th><th>size</th></tr>"
            f"{rows}</table>")

    def show_lora(self) -> None:
        if self.header is None:
            return
        targets = tuple(t.strip() for t in self.lora_targets.text().split(",") if t.strip())
        d = lora_parameters(self.header, self.lora_rank.value(), targets)
        per = ", ".join(f"{name}: {n:,}" for name, n in d.per_target) or "no such tensors"
        self.lora_text.setText(
            f"<b>{d.trainable:,}</b> trainable parameters ({100 * d.share:.3f}% of "
            f"{d.base_params:,}).<br>{per}<br>Each targeted matrix W (out × in) gets B "
            f"(out × r) and A (r × in): h = Wx + (α/r)·BAx.")

    def request_tokens(self) -> None:
        text = self.text_input.text()
        if text and self.engine.ready:
            self._tokenize_id = self.engine.tokenize(text)

    def _on_engine_tokenized(self, event: Tokenized) -> None:
        if event.request_id != self._tokenize_id:
            return
        chips = " ".join(
            f"<span style='background:#e8f0fe'>{html.escape(p).replace(' ', '·')}</span>"
            f"<sub>{i}</sub>" for p, i in zip(event.pieces, event.ids, strict=True))
        self.token_view.setHtml(f"<p>{len(event.ids)} tokens for "
                                f"{len(self.text_input.text())} characters</p><p>{chips}</p>")
        self.show_mask(list(event.pieces[:12]))

    def request_distribution(self, messages: list[ChatMessage], sampling: Sampling) -> None:
        """Ask for the next token's distribution (call when the chat or the knobs change)."""
        if self.engine.ready and messages:
            self._distribution_id = self.engine.distribution(messages, sampling)

    def _on_engine_distribution(self, event: Distribution) -> None:
        if event.request_id != self._distribution_id:
            return
        blocks = []
        for stage in event.stages:
            rows = "".join(
                f"<tr><td>{html.escape(c.text).replace(' ', '·') or '∅'}</td>"
                f"<td><table cellspacing=0><tr><td bgcolor='#4a7fd6' "
                f"width={max(1, int(c.prob * 160))}></td></tr></table></td>"
                f"<td align=right>{100 * c.prob:.1f}%</td></tr>"
                for c in stage.candidates[:6])
            blocks.append(f"<p><b>{stage.name}</b> — {stage.n_kept:,} tokens left</p>"
                          f"<table cellpadding=1>{rows}</table>")
        self.next_view.setHtml(f"<p>{event.prompt_tokens} prompt tokens</p>"
                               + "".join(blocks))

    def request_perplexity(self) -> None:
        text = self.ppl_input.text().strip()
        if text and self.engine.ready:
            self._perplexity_id = self.engine.perplexity(text)

    def _on_engine_perplexity(self, event: PerplexityResult) -> None:
        if event.request_id != self._perplexity_id:
            return
        worst = sorted(event.tokens, key=lambda t: -t[1])[:3]
        surprising = ", ".join(f"“{html.escape(p)}” ({nll:.1f} nats)" for p, nll in worst)
        self.ppl_view.setText(
            f"Perplexity <b>{event.perplexity:,.1f}</b> over {event.n_tokens} predicted "
            f"tokens (mean {event.mean_nll:.2f} nats per token).<br>Most surprising: "
            f"{surprising}")

    def _on_engine_query_failed(self, event: EngineError) -> None:
        if event.request_id == self._distribution_id:
            self.next_view.setHtml(f"<p>{html.escape(event.message)}</p>")
        elif event.request_id == self._perplexity_id:
            self.ppl_view.setText(html.escape(event.message))

    def show_mask(self, pieces: list[str]) -> None:
        mask = causal_mask(len(pieces))
        head = "".join(f"<th>{html.escape(p)}</th>" for p in pieces)
        rows = "".join(
            f"<tr><th>{html.escape(p)}</th>" + "".join(
                f"<td align=center>{'■' if m else '·'}</td>" for m in row) + "</tr>"
            for p, row in zip(pieces, mask, strict=True))
        self.mask_view.setHtml(f"<table cellpadding=2><tr><th></th>{head}</tr>{rows}</table>")
