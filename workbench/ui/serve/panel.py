"""ServerPanel: the switch that serves the loaded model through an OpenAI-compatible API,
where it listens, its optional API key, and what it is doing.

Off at every start. Listening on anything but this computer's loopback address needs an
explicit choice, confirmed in a dialog, and shows a warning while it lasts.
"""

from __future__ import annotations

import json
import shlex

from PySide6.QtCore import Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from workbench.engine.protocol import Sampling
from workbench.serve import settings as serve_settings
from workbench.serve.api import ApiServer, ServeError
from workbench.serve.settings import ALL_INTERFACES, LOOPBACK, ServerSettings, is_loopback
from workbench.ui import notify
from workbench.ui.engine_controller import EngineController
from workbench.ui.serve.backend import ServeQueue

HOSTS = ((LOOPBACK, "This computer only (127.0.0.1)"),
         (ALL_INTERFACES, "All interfaces (0.0.0.0) — other machines can connect"))
NOTICE_KEY = "api-server"


class ServerPanel(QGroupBox):
    sig_running_changed = Signal(bool)
    """The server started (True) or stopped (False)."""
    sig_status = Signal(str)
    """The status line changed (for a status bar)."""

    def __init__(self, engine: EngineController, parent: QWidget | None = None, *,
                 defaults: Sampling | None = None) -> None:
        """`defaults`: sampling for what a request leaves out (Sampling() if None)."""
        super().__init__("API server (OpenAI-compatible)", parent)
        self.engine = engine
        self.defaults = defaults
        self.queue = ServeQueue(engine, self)
        self.server: ApiServer | None = None
        self.error = ""  # why the last start failed, shown in the status line
        stored = serve_settings.load_settings()

        self.switch = QCheckBox("Serve the loaded model to other programs")
        self.switch.setToolTip("Programs that speak OpenAI's API (editors, scripts, agents) "
                               "can then use the model. Requests wait while the chat "
                               "writes a reply, and the chat waits while they run.")
        self.switch.toggled.connect(self._on_switch_toggled)
        self.host = QComboBox()
        for value, label in HOSTS:
            self.host.addItem(label, value)
        if stored.host not in (h for h, _ in HOSTS):
            self.host.addItem(stored.host, stored.host)
        self.host.setCurrentIndex(max(0, self.host.findData(stored.host))
                                  if stored.loopback else 0)  # exposure is re-confirmed
        self._host_index = self.host.currentIndex()
        self.host.currentIndexChanged.connect(self._on_host_changed)
        self.port = QSpinBox(minimum=0, maximum=65535, value=stored.port)
        self.port.setSpecialValueText("any free port")
        self.port.setToolTip("0 picks a free port each time the server starts.")
        self.key = QLineEdit(serve_settings.get_api_key() or "")
        self.key.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        self.key.setPlaceholderText("none: any program on the allowed addresses may connect")
        self.key.editingFinished.connect(self._on_key_edited)
        self.generate = QPushButton("Generate")
        self.generate.setToolTip("Make a new random key")
        self.generate.clicked.connect(self._on_generate_clicked)
        self.key_note = QLabel()
        self.key_note.setWordWrap(True)
        self.exposure_warning = QLabel(
            "⚠ Other machines on your network can reach this server. Set an API key, and "
            "only do this on a network you trust: the traffic is not encrypted.")
        self.exposure_warning.setWordWrap(True)
        self.exposure_warning.setStyleSheet("color: #b35c00;")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.url = QLineEdit()
        self.url.setReadOnly(True)
        self.copy_url = QPushButton("Copy URL")
        self.copy_url.clicked.connect(self._on_copy_url_clicked)
        self.example = QPlainTextEdit()
        self.example.setReadOnly(True)
        self.example.setMaximumHeight(90)

        form = QFormLayout()
        form.addRow("Address:", self.host)
        form.addRow("Port:", self.port)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key, 1)
        key_row.addWidget(self.generate)
        form.addRow("API key:", key_row)
        form.addRow("", self.key_note)
        url_row = QHBoxLayout()
        url_row.addWidget(self.url, 1)
        url_row.addWidget(self.copy_url)
        layout = QVBoxLayout(self)
        layout.addWidget(self.switch)
        layout.addLayout(form)
        layout.addWidget(self.exposure_warning)
        layout.addWidget(self.status)
        layout.addLayout(url_row)
        layout.addWidget(self.example)

        for signal in (self.queue.sig_busy_changed, self.queue.sig_waiting_changed,
                       self.queue.sig_served_changed, engine.sig_loaded,
                       engine.sig_state_changed):
            signal.connect(self._refresh)
        engine.sig_engine_switched.connect(self._on_engine_switched)
        self._show_key_storage()
        self._refresh()

    # ------------------------------------------------------------ commands

    @property
    def running(self) -> bool:
        return self.server is not None

    def settings(self) -> ServerSettings:
        return ServerSettings(host=str(self.host.currentData()), port=self.port.value())

    def start(self) -> bool:
        """Start serving with the panel's settings; False (and says why) if it cannot."""
        if self.server is not None:
            return True
        if self.engine.unavailable("serve"):
            self._set_switch(False)
            self._refresh()  # the status line says why
            return False
        settings = self.settings()
        server = ApiServer(self.queue.backend, settings, api_key=self.key.text().strip(),
                           defaults=self.defaults)
        try:
            server.start()
        except ServeError as exc:
            self.error = str(exc)
            notify.error("The API server did not start", self.error, key=NOTICE_KEY)
            self._set_switch(False)
            self._refresh()
            return False
        self.server, self.error = server, ""
        serve_settings.save_settings(settings)
        notify.dismiss(NOTICE_KEY)
        if not settings.loopback:
            notify.warning("The API server is reachable from your network",
                           f"Other machines can use the model at port {server.port}.",
                           "" if server.api_key else "Set an API key to keep others out.",
                           key=NOTICE_KEY)
        self._set_switch(True)
        self._refresh()
        self.sig_running_changed.emit(True)
        return True

    def stop(self) -> None:
        """Stop serving: requests in progress are cancelled, the engine is given back."""
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        self.queue.cancel_all()
        notify.dismiss(NOTICE_KEY)
        self._set_switch(False)
        self._refresh()
        if server is not None:
            self.sig_running_changed.emit(False)

    def shutdown(self) -> None:
        """For the main window's closeEvent, before the engine is closed."""
        self.stop()

    def confirm_exposure(self, host: str) -> bool:
        """Ask before listening beyond this computer (tests patch this)."""
        answer = QMessageBox.warning(
            self, "Serve to the network?",
            f"Listening on {host} lets other machines on your network use the model "
            "through this server, and what they send is not encrypted.\n\nSet an API key "
            "and only do this on a network you trust. Continue?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def status_text(self) -> str:
        unavailable = self.engine.unavailable("serve")
        if unavailable:
            return f"Unavailable while chatting with a model on a server. {unavailable}"
        if self.server is None:
            return f"Off. {self.error}" if self.error else "Off."
        model = self.queue.model_id
        what = f"Serving {model}" if model else "Running, but no model is loaded"
        served = self.queue.served
        count = f"{served} request{'s' if served != 1 else ''} served"
        if self.queue.busy:
            state = "busy: the API server is using the model"
        elif self.queue.waiting:
            state = "waiting for the chat to finish"
        else:
            state = "idle"
        waiting = f", {self.queue.waiting} waiting" if self.queue.waiting else ""
        where = self.server.url
        if not self.server.settings.loopback:
            where += f" (from other machines: this computer's address, port {self.server.port})"
        return f"{what} at {where} — {count}{waiting}; {state}."

    # ------------------------------------------------------------ widgets

    def _set_switch(self, on: bool) -> None:
        self.switch.blockSignals(True)
        self.switch.setChecked(on)
        self.switch.blockSignals(False)

    def _on_engine_switched(self, _kind: str) -> None:
        if self.engine.unavailable("serve"):
            self.stop()  # its engine is gone
        self._refresh()

    def _on_switch_toggled(self, on: bool) -> None:
        if on:
            self.start()
        else:
            self.stop()

    def _on_host_changed(self, index: int) -> None:
        host = str(self.host.itemData(index))
        if not is_loopback(host) and not self.confirm_exposure(host):
            self.host.blockSignals(True)
            self.host.setCurrentIndex(self._host_index)
            self.host.blockSignals(False)
            return
        self._host_index = index
        self._refresh()

    def _on_key_edited(self) -> None:
        key = self.key.text().strip()
        serve_settings.set_api_key(key)
        if self.server is not None:
            self.server.api_key = key or None  # applies to the next request
        self._show_key_storage()
        self._refresh()

    def _on_generate_clicked(self) -> None:
        self.key.setText(serve_settings.generate_api_key())
        self._on_key_edited()

    def _on_copy_url_clicked(self) -> None:
        if self.server is not None:
            QGuiApplication.clipboard().setText(self.server.url)

    def _show_key_storage(self) -> None:
        if not self.key.text().strip():
            self.key_note.setText("Without a key, any program that can reach the address "
                                  "may use the model.")
        elif serve_settings.key_storage() == "keyring":
            self.key_note.setText("Kept in the system keyring. Clients send it as "
                                  "'Authorization: Bearer KEY'.")
        else:
            self.key_note.setText("This system has no keyring: the key is kept until "
                                  "Workbench closes, not saved.")

    def _refresh(self, *_args: object) -> None:
        running = self.server is not None
        for widget in (self.host, self.port):
            widget.setEnabled(not running)
        self.switch.setEnabled(self.engine.unavailable("serve") is None)
        self.exposure_warning.setVisible(not is_loopback(str(self.host.currentData())))
        self.url.setText(self.server.url if self.server else "")
        for widget in (self.url, self.copy_url, self.example):
            widget.setVisible(running)
        if self.server is not None:
            self.example.setPlainText(self._curl_example(self.server))
        text = self.status_text()
        if text != self.status.text():
            self.status.setText(text)
            self.sig_status.emit(text)

    def _curl_example(self, server: ApiServer) -> str:
        body = json.dumps({"model": self.queue.model_id or "MODEL",
                           "messages": [{"role": "user", "content": "Hello!"}]})
        lines = [f"curl {server.url}/chat/completions \\",
                 '  -H "Content-Type: application/json" \\']
        if server.api_key:
            lines.append('  -H "Authorization: Bearer YOUR_API_KEY" \\')
        lines.append(f"  -d {shlex.quote(body)}")
        return "\n".join(lines)
