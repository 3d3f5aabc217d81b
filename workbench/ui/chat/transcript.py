"""The conversation transcript: one MessageView per message in a scroll area.

Streaming touches only the reply being written, and re-renders its markdown at most
every RENDER_INTERVAL_MS, so a long history costs nothing per token; within the reply,
only its last Markdown block is rendered again (LiveMarkdown), so a long reply costs
no more per update than a short one.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.chat.store import Message
from workbench.ui.chat.live_markdown import LiveMarkdown

RENDER_INTERVAL_MS = 50

_STATUS_TEXT = {
    "stopped": "Stopped",
    "interrupted": "Interrupted: the engine stopped before the reply was finished",
    "error": "Failed",
}


def format_stats(stats: dict) -> str:
    """'42 tokens · 31.5 tok/s · first token 0.12 s'."""
    if not stats:
        return ""
    parts = []
    if "n_generated_tokens" in stats:
        parts.append(f"{stats['n_generated_tokens']} tokens")
    if stats.get("tokens_per_s"):
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if stats.get("ttft_s"):
        parts.append(f"first token {stats['ttft_s']:.2f} s")
    if stats.get("n_prompt_tokens"):
        cached = stats["n_prompt_tokens"] - stats.get("n_evaluated_prompt_tokens", 0)
        parts.append(f"prompt {stats['n_prompt_tokens']} ({cached} cached)")
    reason = stats.get("reason")
    if reason in ("length", "context_full", "stop_string"):
        parts.append({"length": "hit max tokens", "context_full": "context full",
                      "stop_string": "stop string"}[reason])
    return " · ".join(parts)


class _Body(QTextBrowser):
    """Rich text that grows to fit its content instead of scrolling."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)

    def _fit(self) -> None:
        height = int(self.document().size().height()) + 4
        if height != self.height():
            self.setFixedHeight(height)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.document().setTextWidth(self.viewport().width())
        self._fit()

    def sizeHint(self) -> QSize:
        return QSize(400, int(self.document().size().height()) + 4)


class MessageView(QFrame):
    sig_copy = Signal(int)
    """Copy this message's text (message id)."""
    sig_edit = Signal(int)
    """Edit this user message and send again (message id)."""
    sig_regenerate = Signal(int)
    """Generate this reply again (message id)."""
    sig_view_prompt = Signal(int)
    """Show the exact prompt text sent for this reply (message id)."""

    def __init__(self, message: Message, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message_id = message.id
        self.role = message.role
        self.text = message.content
        self.setObjectName(f"message-{message.role}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setProperty("role", message.role)

        self.header = QLabel("You" if message.role == "user" else "Assistant")
        self.header.setStyleSheet("font-weight: 600;")
        self.body = _Body(self)
        self._live = LiveMarkdown(self.body)
        self.footer = QLabel()
        self.footer.setStyleSheet("color: palette(mid); font-size: 11px;")
        self.footer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        top = QHBoxLayout()
        top.addWidget(self.header)
        top.addStretch(1)
        self.buttons: dict[str, QToolButton] = {}
        actions = [("Copy", self.sig_copy)]
        if message.role == "user":
            actions.append(("Edit", self.sig_edit))
        else:
            actions += [("Regenerate", self.sig_regenerate), ("View prompt", self.sig_view_prompt)]
        for label, signal in actions:
            button = QToolButton(text=label)
            button.setAutoRaise(True)
            button.clicked.connect(lambda _=False, s=signal: s.emit(self.message_id))
            top.addWidget(button)
            self.buttons[label] = button

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addLayout(top)
        layout.addWidget(self.body)
        layout.addWidget(self.footer)

        self._render_timer = QTimer(self, singleShot=True, interval=RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self.render)
        self.render()
        self.set_status(message.status, message.stats)

    def render(self) -> None:
        self._live.show(self.text)

    def append_text(self, text: str) -> None:
        self.text += text
        if not self._render_timer.isActive():
            self._render_timer.start()

    def set_text(self, text: str) -> None:
        self.text = text
        self._render_timer.stop()
        self.render()

    def set_status(self, status: str, stats: dict | None = None) -> None:
        self.status = status
        streaming = status == "streaming"
        for label in ("Regenerate", "View prompt", "Edit"):
            if label in self.buttons:
                self.buttons[label].setEnabled(not streaming)
        parts = [p for p in (_STATUS_TEXT.get(status, ""), format_stats(stats or {})) if p]
        if streaming:
            parts = ["Writing…"]
        self.footer.setText(" · ".join(parts))
        self.footer.setVisible(bool(parts))
        if not streaming and self._render_timer.isActive():
            self._render_timer.stop()
            self.render()


class Transcript(QScrollArea):
    sig_copy = Signal(int)
    """Copy a message (id)."""
    sig_edit = Signal(int)
    """Edit a user message (id)."""
    sig_regenerate = Signal(int)
    """Regenerate a reply (id)."""
    sig_view_prompt = Signal(int)
    """Show the prompt behind a reply (id)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        inner = QWidget()
        self._layout = QVBoxLayout(inner)
        self._layout.setSpacing(8)
        self._layout.addStretch(1)
        self.setWidget(inner)
        self.views: dict[int, MessageView] = {}
        self.placeholder = QLabel(
            "Say hello. The model runs on this computer; nothing leaves it.",
            alignment=Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setStyleSheet("color: palette(mid); padding: 40px;")
        self._layout.insertWidget(0, self.placeholder)
        self.verticalScrollBar().rangeChanged.connect(self._on_range_changed)
        self._follow = True

    def clear(self) -> None:
        for view in self.views.values():
            view.deleteLater()
        self.views.clear()
        self.placeholder.show()

    def set_messages(self, messages: list[Message]) -> None:
        self.clear()
        for message in messages:
            self.add_message(message)
        self._follow = True

    def add_message(self, message: Message) -> MessageView:
        view = MessageView(message)
        for name in ("sig_copy", "sig_edit", "sig_regenerate", "sig_view_prompt"):
            getattr(view, name).connect(getattr(self, name).emit)
        self._layout.insertWidget(self._layout.count() - 1, view)
        self.views[message.id] = view
        self.placeholder.hide()
        self._follow = True
        return view

    def remove_from(self, message_id: int) -> None:
        """Remove a message and all after it (edit-and-resend, regenerate)."""
        for mid in [m for m in self.views if m >= message_id]:
            self.views.pop(mid).deleteLater()
        if not self.views:
            self.placeholder.show()

    def _on_range_changed(self, _min: int, maximum: int) -> None:
        # Keep the newest text in view while streaming, unless the user scrolled up.
        bar = self.verticalScrollBar()
        if self._follow or bar.value() >= bar.maximum() - 80:
            bar.setValue(maximum)
            self._follow = False


def copy_to_clipboard(text: str) -> None:
    QGuiApplication.clipboard().setText(text)
