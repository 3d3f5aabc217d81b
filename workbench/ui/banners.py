"""A notice from the one error channel (ui/notify.py), shown as a banner on top of the
main window: title, text, hint, its actions and Dismiss."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from workbench.ui import notify

_LEVEL_COLOURS = {"error": "#fdecea", "warning": "#fff4e5", "info": "#e8f4fd"}


class NoticeBanner(QFrame):
    def __init__(self, notice: notify.Notice, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.notice = notice
        self.setObjectName(f"notice-{notice.level}")
        self.setStyleSheet(f"QFrame#{self.objectName()} {{ background: "
                           f"{_LEVEL_COLOURS[notice.level]}; border-radius: 4px; }}")
        text = f"<b>{notice.title}</b> — {notice.text}"
        if notice.hint:
            text += f"<br><span>{notice.hint}</span>"
        self.label = QLabel(text, wordWrap=True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QHBoxLayout(self)
        layout.addWidget(self.label, 1)
        self.buttons: dict[str, QPushButton] = {}
        for label, callback in notice.actions:
            button = QPushButton(label)
            button.clicked.connect(callback)
            button.clicked.connect(self.close_notice)
            layout.addWidget(button)
            self.buttons[label] = button
        close = QPushButton("Dismiss")
        close.clicked.connect(self.close_notice)
        layout.addWidget(close)

    def close_notice(self) -> None:
        self.hide()
        self.deleteLater()
