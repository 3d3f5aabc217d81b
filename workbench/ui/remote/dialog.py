"""ConnectionDialog: where a remote OpenAI-compatible server is, its API key, and which of
its models to use.

"Test connection" lists the server's models off the GUI thread; each failure is shown in
the dialog in words. Connecting needs a model, so OK stays disabled until one is chosen.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from workbench.engine.remote_http import DEFAULT_TIMEOUT_S, RemoteError, host_of, list_models
from workbench.engine.remote_keys import get_api_key, key_storage, set_api_key
from workbench.engine.remote_settings import (
    MAX_TIMEOUT_S,
    MIN_TIMEOUT_S,
    RemoteConnection,
    load_recent,
    normalised_url,
)
from workbench.ui.tasks import op

PLACEHOLDER_URL = "http://127.0.0.1:8080/v1"
TEST_TIMEOUT_S = 15.0  # listing models is quick; a silent server should not hold the test
ERROR_STYLE = "color: #b00020;"
OK_STYLE = "color: #2e7d32;"

HELP = (
    "<b>Start a server</b>, then enter its address:<br>"
    "vLLM (on one or more GPUs): <code>vllm serve MODEL --tensor-parallel-size N</code>"
    " &rarr; <code>http://HOST:8000/v1</code><br>"
    "llama.cpp: <code>llama-server -m model.gguf --port 8080</code>"
    " &rarr; <code>http://127.0.0.1:8080/v1</code><br>"
    "Started with <code>--api-key KEY</code>? Enter the same key here. Any "
    "OpenAI-compatible server works (LM Studio, Ollama, hosted APIs). The server loads "
    "and sizes the model: context size, GPU layers and adapters are its settings."
)


class ConnectionDialog(QDialog):
    sig_test_finished = Signal(bool)
    """A connection test ended: True when the server listed its models."""

    def __init__(self, parent: QWidget | None = None, *,
                 recent: list[RemoteConnection] | None = None) -> None:
        """`recent`: the connections offered in the address box (the stored ones if
        None); the first one fills the dialog."""
        super().__init__(parent)
        self.setWindowTitle("Connect to a server")
        self.recent = load_recent() if recent is None else list(recent)
        self._test_id = 0  # a test's result is used only if no later test/edit came
        self._testing = False
        self._tested_url: str | None = None  # the address the listed models belong to
        self._key_typed = False  # the user typed a key: picking an address keeps it
        self._filling = False  # the dialog is filling itself: edits are not the user's

        self.url_combo = QComboBox()
        self.url_combo.setEditable(True)
        self.url_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.url_combo.lineEdit().setPlaceholderText(PLACEHOLDER_URL)
        self.url_combo.setToolTip("The server's API address; most end in /v1.")
        self.url_combo.addItems([c.base_url for c in self.recent])
        self.url_combo.editTextChanged.connect(self._on_url_combo_edited)
        self.url_combo.lineEdit().returnPressed.connect(self._on_url_return_pressed)
        self.key_edit = QLineEdit()
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("none")
        self.key_edit.textEdited.connect(self._on_key_edit_edited)
        self.key_note = QLabel(wordWrap=True)
        self.timeout_spin = QSpinBox(minimum=int(MIN_TIMEOUT_S), maximum=int(MAX_TIMEOUT_S),
                                     value=int(DEFAULT_TIMEOUT_S))
        self.timeout_spin.setSuffix(" s")
        self.timeout_spin.setToolTip("How long the server may stay silent before a request "
                                     "fails. Evaluating a long prompt counts.")
        self.test_button = QPushButton("Test connection")
        self.test_button.setAutoDefault(False)
        self.test_button.clicked.connect(self._on_test_button_clicked)
        self.status = QLabel(wordWrap=True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_combo = QComboBox()
        self.model_combo.setPlaceholderText("Test the connection to list the models")
        self.model_combo.currentIndexChanged.connect(self._on_model_combo_changed)
        self.help = QLabel(HELP, wordWrap=True)
        self.help.setTextFormat(Qt.TextFormat.RichText)
        self.help.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Connect")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Server address:", self.url_combo)
        form.addRow("API key:", self.key_edit)
        form.addRow("", self.key_note)
        form.addRow("Timeout:", self.timeout_spin)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.status, 1)
        form.addRow("", test_row)
        form.addRow("Model:", self.model_combo)
        layout = QVBoxLayout(self)
        layout.addWidget(self.help)
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(560)

        self._show_key_storage()
        if self.recent:
            self._fill_from(self.recent[0])
        else:
            self._on_url_combo_edited(self.url_combo.currentText())

    # ------------------------------------------------------------ answers

    def base_url(self) -> str:
        return self.url_combo.currentText().strip()

    def model_id(self) -> str:
        return self.model_combo.currentText().strip()

    def connection(self) -> RemoteConnection:
        return RemoteConnection(normalised_url(self.base_url()), self.model_id(),
                                float(self.timeout_spin.value()))

    def api_key(self) -> str | None:
        return self.key_edit.text().strip() or None

    def models(self) -> list[str]:
        return [self.model_combo.itemText(i) for i in range(self.model_combo.count())]

    @property
    def testing(self) -> bool:
        return self._testing

    # ------------------------------------------------------------ commands

    def test_connection(self) -> bool:
        """List the server's models in the background; False (and says why) when the
        address cannot even be tried."""
        url = self.base_url()
        if not url:
            self._show_error("Enter the server's address first, such as "
                             f"{PLACEHOLDER_URL}.")
            return False
        try:
            host = host_of(url)
        except Exception as exc:  # httpx's InvalidURL: nothing to connect to
            self._show_error(f"“{url}” is not a usable address ({exc}).",
                             f"Write it as {PLACEHOLDER_URL}.")
            return False
        self._test_id += 1
        test_id = self._test_id
        self._set_models([])
        self._testing = True
        self.test_button.setEnabled(False)
        self._show_status(f"Connecting to {host}…")
        timeout = min(float(self.timeout_spin.value()), TEST_TIMEOUT_S)
        (op(list_models, url, self.api_key(), timeout)
         .success(lambda models: self._test_done(test_id, url, models))
         .failure(lambda exc: self._test_failed(test_id, exc))
         .run())
        return True

    def accept(self) -> None:
        if not self.model_id() or self._testing:
            return
        # The key goes to the keyring (an empty field removes a stored one), never to a file;
        # the connection itself is remembered once it is made (ui.remote.connect).
        set_api_key(self.connection().base_url, self.key_edit.text())
        super().accept()

    def done(self, result: int) -> None:
        self._test_id += 1  # a test still running is answered to nobody
        self._testing = False
        super().done(result)

    # ------------------------------------------------------------ slots

    def _on_test_button_clicked(self) -> None:
        self.test_connection()

    def _on_url_return_pressed(self) -> None:
        if not self.ok_button.isEnabled() and not self._testing:
            self.test_connection()

    def _on_key_edit_edited(self, _text: str) -> None:
        self._key_typed = True
        self._show_key_storage()
        if self._tested_url is not None:
            # Models listed with another key prove nothing about this one.
            self._invalidate("The key changed: test the connection again.")

    def _on_url_combo_edited(self, text: str) -> None:
        if self._filling:
            return
        match = next((c for c in self.recent if c.base_url == text.strip()), None)
        if match is not None:
            self._fill_from(match)
            return
        self._invalidate("")

    def _on_model_combo_changed(self, _index: int) -> None:
        self._update_ok()

    # ------------------------------------------------------------ test results

    def _test_done(self, test_id: int, url: str, models: list[str]) -> None:
        if not isValid(self) or test_id != self._test_id:
            return  # the dialog is gone, or the address changed since
        self._testing = False
        self.test_button.setEnabled(True)
        if not models:
            self._show_error(f"The server at {host_of(url)} offers no models.",
                             "Load a model on the server, then test again.")
            self.sig_test_finished.emit(False)
            return
        previous = next((c.model_id for c in self.recent if c.base_url == url), None)
        self._tested_url = url
        self._set_models(models, previous)
        count = f"{len(models)} model{'s' if len(models) != 1 else ''}"
        self._show_status(f"Connected: the server offers {count}.", style=OK_STYLE)
        self.sig_test_finished.emit(True)

    def _test_failed(self, test_id: int, exc: BaseException) -> None:
        if not isValid(self) or test_id != self._test_id:
            return
        self._testing = False
        self.test_button.setEnabled(True)
        if isinstance(exc, RemoteError):
            self._show_error(exc.message, exc.hint)
        else:  # an address httpx cannot use, and the like
            self._show_error(f"Could not talk to the server: {exc or type(exc).__name__}.",
                             "Check the address.")
        self.sig_test_finished.emit(False)

    # ------------------------------------------------------------ helpers

    def _fill_from(self, conn: RemoteConnection) -> None:
        """A recent connection: its address, timeout, stored key and last model (OK works
        at once; a test confirms the server is there)."""
        self._filling = True
        try:
            if self.url_combo.currentText() != conn.base_url:
                self.url_combo.setEditText(conn.base_url)
            self.timeout_spin.setValue(round(conn.timeout_s))
            if not self._key_typed:
                self.key_edit.setText(get_api_key(conn.base_url) or "")
                self._show_key_storage()
        finally:
            self._filling = False
        self._test_id += 1
        self._testing = False
        self.test_button.setEnabled(True)
        self._tested_url = None
        self._set_models([conn.model_id] if conn.model_id else [])
        self._show_status(f"Last used with {conn.model_id}. Test the connection to see "
                          "all its models." if conn.model_id else "")

    def _invalidate(self, message: str) -> None:
        """The address (or key) changed: what was listed belongs to another server."""
        self._test_id += 1
        self._testing = False
        self._tested_url = None
        self.test_button.setEnabled(True)
        self._set_models([])
        self._show_status(message)

    def _set_models(self, models: list[str], preferred: str | None = None) -> None:
        self.model_combo.clear()
        self.model_combo.addItems(models)
        if models:
            # The first one, unless the model used last time on this server is offered.
            self.model_combo.setCurrentIndex(models.index(preferred)
                                              if preferred in models else 0)
        self._update_ok()

    def _update_ok(self) -> None:
        self.ok_button.setEnabled(bool(self.model_id()) and not self._testing)

    def _show_status(self, text: str, style: str = "") -> None:
        self.status.setStyleSheet(style)
        self.status.setText(text)

    def _show_error(self, message: str, hint: str = "") -> None:
        text = html.escape(message) + (f"<br>{html.escape(hint)}" if hint else "")
        self._show_status(text, ERROR_STYLE)

    def _show_key_storage(self) -> None:
        if key_storage() == "keyring":
            self.key_note.setText("Saved in the system keyring when you connect, never in "
                                  "a file.")
        else:
            self.key_note.setText("This system has no keyring: the key is kept until "
                                  "Workbench closes, not saved.")
