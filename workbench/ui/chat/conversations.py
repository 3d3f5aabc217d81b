"""The conversation list: search, new, rename, delete."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from workbench.chat.store import ChatStore


class ConversationList(QWidget):
    sig_selected = Signal(int)
    """The user opened a conversation (id)."""
    sig_new = Signal()
    """The user asked for a new conversation."""
    sig_deleted = Signal(int)
    """A conversation was deleted (id)."""
    sig_renamed = Signal(int)
    """A conversation was renamed (id)."""

    def __init__(self, store: ChatStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.search = QLineEdit(placeholderText="Search chats…", clearButtonEnabled=True)
        self.new_button = QPushButton("New chat")
        self.list = QListWidget()
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        top.addWidget(self.new_button)
        layout.addLayout(top)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)

        self._search_timer = QTimer(self, singleShot=True, interval=150)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(self._search_timer.start)
        self.new_button.clicked.connect(self.sig_new.emit)
        self.list.currentItemChanged.connect(self._on_list_current_changed)
        self.list.customContextMenuRequested.connect(self._on_list_context_menu)
        self._selecting = False

    def refresh(self, select: int | None = None) -> None:
        current = select if select is not None else self.current_id()
        self._selecting = True
        self.list.clear()
        for conv in self.store.list_conversations(self.search.text().strip()):
            item = QListWidgetItem(conv.title or "Untitled")
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
            item.setToolTip(conv.title)
            self.list.addItem(item)
            if conv.id == current:
                self.list.setCurrentItem(item)
        self._selecting = False

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def select(self, conversation_id: int) -> None:
        self.refresh(select=conversation_id)

    def _on_list_current_changed(self, item: QListWidgetItem | None, _prev: object) -> None:
        if item is not None and not self._selecting:
            self.sig_selected.emit(item.data(Qt.ItemDataRole.UserRole))

    def _on_list_context_menu(self, pos) -> None:
        item = self.list.itemAt(pos)
        if item is None:
            return
        cid = item.data(Qt.ItemDataRole.UserRole)
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.rename(cid))
        menu.addAction("Delete…", lambda: self.delete(cid))
        menu.exec(self.list.mapToGlobal(pos))

    def rename(self, conversation_id: int, title: str | None = None) -> None:
        if title is None:
            old = self.store.get_conversation(conversation_id).title
            title, ok = QInputDialog.getText(self, "Rename chat", "Title:", text=old)
            if not ok:
                return
        title = title.strip()
        if title:
            self.store.rename_conversation(conversation_id, title)
            self.refresh()
            self.sig_renamed.emit(conversation_id)

    def delete(self, conversation_id: int, confirm: bool = True) -> None:
        if confirm:
            title = self.store.get_conversation(conversation_id).title
            answer = QMessageBox.question(
                self, "Delete chat", f"Delete “{title}” and all its messages?")
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.store.delete_conversation(conversation_id)
        self.refresh()
        self.sig_deleted.emit(conversation_id)
