"""The Server page, both directions: chat with a model another machine serves (vLLM,
SGLang, llama.cpp's server) and serve the loaded model to other programs."""

from __future__ import annotations

import html

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from workbench.engine.protocol import Sampling
from workbench.ui.engine_controller import EngineController
from workbench.ui.serve.panel import ServerPanel


class ServerPage(QWidget):
    sig_connect_requested = Signal()
    """The user wants to chat with a model on a server (open the connection dialog)."""
    sig_local_requested = Signal()
    """The user wants the local engine back."""

    def __init__(self, engine: EngineController, defaults: Sampling | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        remote = QGroupBox("Use a model on a server")
        self.engine_label = QLabel()
        self.engine_label.setWordWrap(True)
        self.connect_button = QPushButton("Connect to a server…")
        self.connect_button.clicked.connect(self.sig_connect_requested.emit)
        self.local_button = QPushButton("Use the local engine")
        self.local_button.clicked.connect(self.sig_local_requested.emit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.connect_button)
        buttons.addWidget(self.local_button)
        buttons.addStretch(1)
        help_text = QLabel(
            "When a model is too big for this computer, run it on a server and chat with it "
            "here: <code>vllm serve MODEL --tensor-parallel-size N</code> (then "
            "<code>http://HOST:8000/v1</code>), or llama.cpp's <code>llama-server -m "
            "model.gguf --port 8080</code> (then <code>http://HOST:8080/v1</code>). Chat, "
            "Stop, the knobs, Compare and the next-token demo (from the server's top "
            "log-probabilities) work remotely; what a server cannot do is shown as "
            "unavailable.")
        help_text.setWordWrap(True)
        column = QVBoxLayout(remote)
        column.addWidget(self.engine_label)
        column.addLayout(buttons)
        column.addWidget(help_text)
        self.server = ServerPanel(engine, defaults=defaults)
        layout = QVBoxLayout(self)
        layout.addWidget(remote)
        layout.addWidget(self.server)
        layout.addStretch(1)
        engine.sig_state_changed.connect(lambda _s: self.show_engine())
        self.show_engine()

    def show_engine(self) -> None:
        url = self.engine.remote_url
        model = self.engine.model.name if self.engine.model else "no model yet"
        if url:
            self.engine_label.setText(f"Chatting with <b>{html.escape(model)}</b> on "
                                      f"<code>{html.escape(url)}</code>.")
        else:
            self.engine_label.setText(f"Using the local engine (llama.cpp on this computer): "
                                      f"{html.escape(model)}.")
        self.local_button.setEnabled(bool(url))
