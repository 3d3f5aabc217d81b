"""The app's one channel for telling the user something went wrong (or needs a choice).

Anything in the UI reports through `error(...)`/`info(...)`; the main window shows it as
a banner with optional actions. Tests connect to `hub().sig_notice` to see what a user
would see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal


@dataclass(frozen=True)
class Notice:
    level: str  # "error" | "warning" | "info"
    title: str
    text: str
    hint: str = ""
    actions: tuple[tuple[str, Callable[[], None]], ...] = field(default=())
    key: str = ""  # a notice with the same key replaces the previous one


class NoticeHub(QObject):
    sig_notice = Signal(object)
    """A Notice for the user."""
    sig_dismiss = Signal(str)
    """Remove the notice with this key."""


_hub: NoticeHub | None = None


def hub() -> NoticeHub:
    global _hub
    if _hub is None:
        _hub = NoticeHub()
    return _hub


def error(title: str, text: str, hint: str = "",
          actions: tuple[tuple[str, Callable[[], None]], ...] = (), key: str = "") -> None:
    hub().sig_notice.emit(Notice("error", title, text, hint, actions, key))


def warning(title: str, text: str, hint: str = "",
            actions: tuple[tuple[str, Callable[[], None]], ...] = (), key: str = "") -> None:
    hub().sig_notice.emit(Notice("warning", title, text, hint, actions, key))


def info(title: str, text: str, hint: str = "",
         actions: tuple[tuple[str, Callable[[], None]], ...] = (), key: str = "") -> None:
    hub().sig_notice.emit(Notice("info", title, text, hint, actions, key))


def dismiss(key: str) -> None:
    hub().sig_dismiss.emit(key)
