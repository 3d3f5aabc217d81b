"""The chat page: conversations on the left, the transcript and composer in the middle,
settings on the right. It owns the flow of one reply: store the user's message, stream
the reply into its view, and save it however it ends (done, stopped, crashed)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.chat.store import ChatStore, Message
from workbench.engine.protocol import ChatDone, ChatMessage, ChatStarted, EngineDied, EngineError
from workbench.ui import notify
from workbench.ui.chat.conversations import ConversationList
from workbench.ui.chat.settings_panel import SettingsPanel
from workbench.ui.chat.transcript import Transcript, copy_to_clipboard
from workbench.ui.engine_controller import EngineController

SAVE_PARTIAL_EVERY_S = 1.0
TITLE_LENGTH = 48


@dataclass
class ActiveReply:
    request_id: int
    message_id: int
    conversation_id: int
    text: str = ""
    stopped: bool = False
    prompt_text: str = ""
    saved_at: float = 0.0


class Composer(QPlainTextEdit):
    sig_submit = Signal()
    """Enter was pressed (Shift+Enter inserts a newline)."""
    sig_escape = Signal()
    """Esc was pressed."""

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() == Qt.Key.Key_Escape:
            self.sig_escape.emit()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
                event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            self.sig_submit.emit()
            return
        super().keyPressEvent(event)


class ChatPage(QWidget):
    sig_reload_model = Signal(object)
    """Reload the model with new ModelSettings."""

    def __init__(self, store: ChatStore, engine: EngineController, panel: SettingsPanel,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store, self.engine, self.panel = store, engine, panel
        self.conversation_id: int | None = None
        self.active: ActiveReply | None = None
        self.editing_message_id: int | None = None
        self.n_ctx_used = 0
        self.context_start: dict[int, int] = {}  # conversation -> first message id sent
        # Replies stopped in the UI whose engine timings have not arrived yet: rid -> msg id.
        self._stopped_ids: dict[int, int] = {}

        self.conversations = ConversationList(store)
        self.transcript = Transcript()
        self.composer = Composer(placeholderText="Message the model… (Enter to send, "
                                                 "Shift+Enter for a new line)")
        self.composer.setFixedHeight(90)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.edit_label = QLabel()
        self.edit_label.setStyleSheet("color: palette(highlight);")
        self.edit_label.hide()
        self.context_meter = QProgressBar()
        self.context_meter.setTextVisible(True)
        self.context_meter.setToolTip("Tokens of this conversation in the model's context.")
        self.context_meter.setMinimumWidth(220)
        self.status_label = QLabel()

        middle = QWidget()
        mid = QVBoxLayout(middle)
        mid.setContentsMargins(0, 0, 0, 0)
        mid.addWidget(self.transcript, 1)
        mid.addWidget(self.edit_label)
        row = QHBoxLayout()
        row.addWidget(self.composer, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        row.addLayout(buttons)
        mid.addLayout(row)
        meter_row = QHBoxLayout()
        meter_row.addWidget(self.status_label, 1)
        meter_row.addWidget(QLabel("Context"))
        meter_row.addWidget(self.context_meter)
        mid.addLayout(meter_row)

        self.splitter = QSplitter()
        self.splitter.addWidget(self.conversations)
        self.splitter.addWidget(middle)
        self.splitter.addWidget(panel)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([220, 760, 360])
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.splitter)

        self.send_button.clicked.connect(self.send)
        self.composer.sig_submit.connect(self.send)
        self.composer.sig_escape.connect(self._on_composer_escape)
        self.stop_button.clicked.connect(self.stop)
        self.conversations.sig_selected.connect(self.open_conversation)
        self.conversations.sig_new.connect(self.new_conversation)
        self.conversations.sig_deleted.connect(self._on_conversations_deleted)
        self.transcript.sig_copy.connect(self._on_transcript_copy)
        self.transcript.sig_edit.connect(self.begin_edit)
        self.transcript.sig_regenerate.connect(self.regenerate)
        self.transcript.sig_view_prompt.connect(self.view_prompt)
        self.panel.sig_system_prompt_changed.connect(self._on_panel_system_prompt_changed)
        engine.sig_token.connect(self._on_engine_token)
        engine.sig_chat_started.connect(self._on_engine_chat_started)
        engine.sig_chat_done.connect(self._on_engine_chat_done)
        engine.sig_chat_failed.connect(self._on_engine_chat_failed)
        engine.sig_died.connect(self._on_engine_died)
        engine.sig_state_changed.connect(self._on_engine_state_changed)
        engine.sig_loaded.connect(lambda info: self._update_meter())

        self.conversations.refresh()
        existing = store.list_conversations()
        if existing:
            self.open_conversation(existing[0].id)
            self.conversations.select(existing[0].id)
        self._on_engine_state_changed(engine.state)

    # ------------------------------------------------------------ conversations

    def new_conversation(self) -> int:
        conv = self.store.create_conversation(
            system_prompt=self.panel.system_prompt.toPlainText() if self.conversation_id
            is None else "")
        self.conversations.select(conv.id)
        self.open_conversation(conv.id)
        return conv.id

    def open_conversation(self, conversation_id: int) -> None:
        if self.active is not None and self.active.conversation_id != conversation_id:
            self.stop()
        self.conversation_id = conversation_id
        conv = self.store.get_conversation(conversation_id)
        self.panel.set_system_prompt(conv.system_prompt)
        messages = self.store.messages(conversation_id)
        self.transcript.set_messages(messages)
        last_stats = next((m.stats for m in reversed(messages) if m.stats), {})
        self.n_ctx_used = int(last_stats.get("n_ctx_used", 0))
        self.cancel_edit()
        self._update_meter()

    def _on_conversations_deleted(self, conversation_id: int) -> None:
        if conversation_id == self.conversation_id:
            self.conversation_id = None
            self.transcript.clear()
            remaining = self.store.list_conversations()
            if remaining:
                self.conversations.select(remaining[0].id)
                self.open_conversation(remaining[0].id)

    def _on_panel_system_prompt_changed(self, text: str) -> None:
        if self.conversation_id is not None:
            self.store.set_system_prompt(self.conversation_id, text)

    # ------------------------------------------------------------ sending

    def send(self, text: str | None = None) -> bool:
        """Send the composer's text (or `text`). Returns False if nothing was sent."""
        text = (self.composer.toPlainText() if text is None else text).strip()
        if not text or self.active is not None or not self._engine_free():
            return False
        # "busy" right after Stop: the engine is closing the old reply and queues this one.
        if self.engine.state not in ("ready", "busy"):
            notify.warning("No model is ready",
                           "Wait for the model to finish loading, or load one first.",
                           key="engine-not-ready")
            return False
        if self.conversation_id is None:
            self.new_conversation()
        cid = self.conversation_id
        assert cid is not None
        if self.editing_message_id is not None:
            self.store.delete_messages_from(self.editing_message_id)
            self.transcript.remove_from(self.editing_message_id)
            self.cancel_edit()
        if not self.store.messages(cid):
            self.store.rename_conversation(cid, _title_from(text))
        user = self.store.add_message(cid, "user", text)
        self.transcript.add_message(user)
        self.composer.clear()
        self.conversations.refresh()
        self._start_reply(cid)
        return True

    def _history(self, conversation_id: int) -> list[ChatMessage]:
        conv = self.store.get_conversation(conversation_id)
        start = self.context_start.get(conversation_id, 0)
        history = [ChatMessage("system", conv.system_prompt)] if conv.system_prompt else []
        for m in self.store.messages(conversation_id):
            if m.id < start or m.status == "streaming" or m.status == "error":
                continue
            if m.role == "assistant" and not m.content:
                continue
            history.append(ChatMessage(m.role, m.content))
        return history

    def next_token_messages(self) -> list[ChatMessage]:
        """What the next reply would be sent: the chat up to its last user message, plus
        the composer's text if any (for the explainer's next-token demo)."""
        history = self._history(self.conversation_id) if self.conversation_id else []
        draft = self.composer.toPlainText().strip()
        if draft:
            return [*history, ChatMessage("user", draft)]
        while history and history[-1].role != "user":
            history.pop()
        return history or [ChatMessage("user", "Hello! Who are you?")]

    def _start_reply(self, conversation_id: int) -> None:
        sampling = self.panel.sampling()
        history = self._history(conversation_id)
        reply = self.store.add_message(conversation_id, "assistant", "", status="streaming",
                                       settings=sampling.to_dict())
        self.transcript.add_message(reply)
        rid = self.engine.chat(history, sampling)
        self.active = ActiveReply(rid, reply.id, conversation_id, saved_at=time.monotonic())
        self._set_busy(True)

    def stop(self) -> None:
        """Stop the reply now: the UI settles at once, the engine catches up."""
        active = self.active
        if active is None:
            return
        self.engine.cancel()
        active.stopped = True
        self._finish(active, "stopped", {"reason": "cancelled"})

    def regenerate(self, message_id: int) -> None:
        if self.active is not None or not self.engine.ready or not self._engine_free():
            return
        message = self.store.get_message(message_id)
        self.store.delete_messages_from(message_id)
        self.transcript.remove_from(message_id)
        self._start_reply(message.conversation_id)

    def begin_edit(self, message_id: int) -> None:
        if self.active is not None:
            return
        message = self.store.get_message(message_id)
        self.editing_message_id = message_id
        self.composer.setPlainText(message.content)
        self.composer.setFocus()
        self.edit_label.setText("Editing a message: sending replaces it and everything after "
                                "it. Esc cancels.")
        self.edit_label.show()

    def cancel_edit(self) -> None:
        self.editing_message_id = None
        self.edit_label.hide()

    def _on_composer_escape(self) -> None:
        if self.editing_message_id is not None:
            self.cancel_edit()
            self.composer.clear()

    def view_prompt(self, message_id: int) -> None:
        message = self.store.get_message(message_id)
        dialog = QDialog(self)
        dialog.setWindowTitle("Prompt sent to the model")
        dialog.setObjectName("prompt-dialog")
        text = QPlainTextEdit(readOnly=True)
        text.setPlainText(message.prompt_text or "(no prompt recorded for this reply)")
        layout = QVBoxLayout(dialog)
        layout.addWidget(QLabel("The exact text the chat template produced, special tokens "
                                "included:"))
        layout.addWidget(text)
        dialog.resize(700, 500)
        dialog.show()
        self.prompt_dialog = dialog

    def _on_transcript_copy(self, message_id: int) -> None:
        view = self.transcript.views.get(message_id)
        copy_to_clipboard(view.text if view else self.store.get_message(message_id).content)

    # ------------------------------------------------------------ engine events

    def _on_engine_chat_started(self, event: ChatStarted) -> None:
        active = self.active
        if active is None or event.request_id != active.request_id:
            return
        active.prompt_text = event.prompt_text
        self.store.update_message(active.message_id, prompt_text=event.prompt_text)
        self.n_ctx_used = event.n_prompt_tokens
        self._update_meter()

    def _on_engine_token(self, request_id: int, text: str) -> None:
        active = self.active
        if active is None or request_id != active.request_id or active.stopped:
            return
        active.text += text
        view = self.transcript.views.get(active.message_id)
        if view is not None:
            view.append_text(text)
        now = time.monotonic()
        if now - active.saved_at >= SAVE_PARTIAL_EVERY_S:
            # A crash of the whole app then loses at most a second of the reply.
            self.store.update_message(active.message_id, content=active.text)
            active.saved_at = now

    def _on_engine_chat_done(self, event: ChatDone) -> None:
        stats = {**event.timings.to_dict(), "reason": event.reason}
        self.n_ctx_used = event.timings.n_ctx_used
        self._update_meter()
        active = self.active
        if active is None or event.request_id != active.request_id:
            # The reply was already stopped in the UI: keep its text, add the numbers.
            self._attach_late_stats(event, stats)
            return
        status = "stopped" if event.reason == "cancelled" else "complete"
        self._finish(active, status, stats, text=event.text)
        if event.reason == "context_full":
            self._offer_context_choices(active.conversation_id, partial=True)

    def _attach_late_stats(self, event: ChatDone, stats: dict) -> None:
        mid = self._stopped_ids.pop(event.request_id, None)
        if mid is None:
            return
        try:
            message = self.store.update_message(mid, stats=stats | {"reason": "cancelled"})
        except KeyError:
            return
        view = self.transcript.views.get(mid)
        if view is not None:
            view.set_status(message.status, message.stats)

    def _on_engine_chat_failed(self, event: EngineError) -> None:
        active = self.active
        if active is None or event.request_id != active.request_id:
            return
        if active.text:
            # A remote server can fail mid-reply: keep what streamed, marked interrupted.
            self._finish(active, "interrupted", {"reason": "error", "kind": event.kind})
            notify.error("The reply broke off", event.message, event.hint)
            return
        self.active = None
        self._set_busy(False)
        # No reply came: remove the empty placeholder rather than keep an empty message.
        self.store.delete_messages_from(active.message_id)
        self.transcript.remove_from(active.message_id)
        if event.kind == "context_full":
            self._offer_context_choices(active.conversation_id, partial=False)
        else:
            notify.error("The model could not reply", event.message, event.hint)

    def _on_engine_died(self, event: EngineDied) -> None:
        active = self.active
        if active is not None:
            self._finish(active, "interrupted", {"reason": "engine_died"})
        notify.error("The engine stopped", event.message, event.hint,
                     actions=(("Reload model", self.engine.reload),), key="engine-died")

    def _on_engine_state_changed(self, state: str) -> None:
        self.status_label.setText({
            "empty": "No model loaded", "loading": "Loading model…", "ready": "Ready",
            "busy": "Writing…", "crashed": "Engine stopped — reload to go on"}.get(state, state))
        self.send_button.setEnabled(state in ("ready", "busy") and self.active is None)
        self.panel.show_model(self.engine.model, state)
        if state == "ready":
            notify.dismiss("engine-died")
            notify.dismiss("engine-not-ready")

    # ------------------------------------------------------------ helpers

    def _engine_free(self) -> bool:
        """False (and says why) while another page drives the engine."""
        if self.engine.owner is None:
            return True
        notify.warning("The model is busy",
                       f"The {self.engine.owner} view is using the model right now.",
                       "Wait for it to finish, or press Stop there; your message is kept.",
                       key="engine-not-ready")
        return False

    def _finish(self, active: ActiveReply, status: str, stats: dict,
                text: str | None = None) -> None:
        if text is None:
            text = active.text
        if status == "stopped" and active.stopped:
            text = active.text  # what the user saw when they pressed Stop
            self._stopped_ids[active.request_id] = active.message_id
        message = self.store.update_message(active.message_id, content=text, status=status,
                                            stats=stats, prompt_text=active.prompt_text)
        view = self.transcript.views.get(active.message_id)
        if view is not None:
            view.set_text(text)
            view.set_status(status, message.stats)
        self.active = None
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)
        self.send_button.setEnabled(not busy and self.engine.state in ("ready", "busy"))

    def _update_meter(self) -> None:
        n_ctx = self.engine.model.n_ctx if self.engine.model else 0
        self.context_meter.setMaximum(max(n_ctx, 1))
        self.context_meter.setValue(min(self.n_ctx_used, max(n_ctx, 1)))
        if n_ctx:
            text = f"{self.n_ctx_used:,} / {n_ctx:,} tokens"
        elif self.engine.model:  # a server that does not say its context size
            text = f"{self.n_ctx_used:,} tokens (context size not reported)"
        else:
            text = "no model"
        self.context_meter.setFormat(text)

    def _offer_context_choices(self, conversation_id: int, partial: bool) -> None:
        model = self.engine.model
        bigger = min((model.n_ctx if model else 4096) * 2, max(model.n_ctx_train, 1)) \
            if model else 8192
        text = ("The reply stopped because the context is full." if partial else
                "This conversation no longer fits in the model's context.")
        actions = [
            ("Drop oldest messages", lambda: self.drop_oldest(conversation_id)),
            ("New chat with last message", lambda: self.move_last_to_new(conversation_id)),
        ]
        if model and bigger > model.n_ctx:
            actions.append((f"Reload with {bigger:,} context",
                            lambda: self.sig_reload_model.emit(
                                replace(self.panel.model_settings(), n_ctx=bigger))))
        notify.warning("Context full", text,
                       "Older messages stay in the chat either way; this only chooses what "
                       "the model sees.", actions=tuple(actions), key="context-full")

    def drop_oldest(self, conversation_id: int) -> None:
        """Send only the newer half of the conversation from now on, then retry."""
        messages = [m for m in self.store.messages(conversation_id)
                    if m.id >= self.context_start.get(conversation_id, 0)]
        users = [m for m in messages if m.role == "user"]
        if len(users) < 2:
            notify.error("Cannot shorten", "The last message alone does not fit.",
                         "Start a new chat or load the model with a larger context.")
            return
        keep_from = users[len(users) // 2]
        self.context_start[conversation_id] = keep_from.id
        notify.dismiss("context-full")
        self._retry_last(conversation_id)

    def move_last_to_new(self, conversation_id: int) -> None:
        messages = self.store.messages(conversation_id)
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        if last_user is None:
            return
        system = self.store.get_conversation(conversation_id).system_prompt
        self.store.delete_messages_from(last_user.id)
        conv = self.store.create_conversation(system_prompt=system)
        self.conversations.select(conv.id)
        self.open_conversation(conv.id)
        notify.dismiss("context-full")
        self.send(last_user.content)

    def _retry_last(self, conversation_id: int) -> None:
        messages: list[Message] = self.store.messages(conversation_id)
        if messages and messages[-1].role == "assistant":
            self.store.delete_messages_from(messages[-1].id)
            self.transcript.remove_from(messages[-1].id)
        if self.engine.ready:
            self._start_reply(conversation_id)


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1].rstrip() + "…"
