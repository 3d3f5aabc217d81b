"""A message's rendered Markdown that follows its text as a reply streams in.

Re-rendering a whole reply for each update cost time in proportion to its length (about
35 ms for 20,000 characters, and the event loop stalls that long), so a long reply at
GPU speed made the window stutter. While the text only grows, the blocks before the last
top-level one cannot change (markdown.render_settled): they are put in the document once,
and each update replaces only the last block.

The document stays exactly what setHtml(render_markdown(text)) would give (the tests
compare toHtml()); whatever the incremental path cannot do exactly falls back to that.
"""

from __future__ import annotations

from PySide6.QtGui import QTextCursor, QTextDocument, QTextDocumentFragment
from PySide6.QtWidgets import QTextEdit

from workbench.ui.markdown import render_markdown, render_settled

_END = QTextCursor.MoveOperation.End
_KEEP = QTextCursor.MoveMode.KeepAnchor


class LiveMarkdown:
    def __init__(self, view: QTextEdit) -> None:
        self.view = view
        self._scratch = QTextDocument()
        self._shown: str | None = None  # the text the document shows
        self._settled = ""  # its prefix held in the document as final blocks
        self._settled_end = -1  # where those blocks end in the document (-1: none)
        self._whole = False  # whole renders only, for good (reference definitions seen)

    def show(self, text: str) -> None:
        """Show `text`; when it extends what is shown, only its last block is rendered."""
        if text == self._shown:
            return
        if self._shown is None or self._whole or not text.startswith(self._settled):
            self._render_whole(text)
            return
        split = render_settled(text[len(self._settled):])
        if split is None:
            self._whole = True
            self._render_whole(text)
            return
        n, settled_html, rest_html = split
        # Inside a document, blocks followed by others render with no trailing space.
        settled_html = settled_html.rstrip("\n")
        doc = self.view.document()
        undo = doc.isUndoRedoEnabled()
        doc.setUndoRedoEnabled(False)  # nobody undoes a reply: keep no history of it
        if self._settled_end < 0:  # nothing settled yet: start the document over
            self.view.setHtml(settled_html if n else rest_html)
            if n:
                self._settled_end = self._end(doc)
                self._append(doc, rest_html)
        else:
            cursor = QTextCursor(doc)
            cursor.beginEditBlock()  # one relayout for the whole update
            self._drop_tail(doc)
            if n:
                self._append(doc, settled_html)
                self._settled_end = self._end(doc)
            self._append(doc, rest_html)
            cursor.endEditBlock()
        doc.setUndoRedoEnabled(undo)
        self._settled += text[len(self._settled):][:n]
        self._shown = text

    def _render_whole(self, text: str) -> None:
        self.view.setHtml(render_markdown(text))
        self._shown, self._settled, self._settled_end = text, "", -1

    @staticmethod
    def _end(doc: QTextDocument) -> int:
        cursor = QTextCursor(doc)
        cursor.movePosition(_END)
        return cursor.position()

    def _drop_tail(self, doc: QTextDocument) -> None:
        cursor = QTextCursor(doc)
        cursor.setPosition(self._settled_end)
        block_format, char_format = cursor.blockFormat(), cursor.blockCharFormat()
        cursor.movePosition(_END, _KEEP)
        cursor.removeSelectedText()
        # Deleting the block end can hand the next block's format to the last settled
        # block (an empty <hr> block turned into a paragraph): put its own back.
        cursor.setBlockFormat(block_format)
        cursor.setBlockCharFormat(char_format)

    def _append(self, doc: QTextDocument, html: str) -> None:
        """Add the blocks of `html` after the document's last block, as setHtml of the
        whole would have made them."""
        if not html:
            return
        # A fragment's first block merges into the block it is inserted at, keeping that
        # block's format: a placeholder first block absorbs the merge, and the selection
        # starts at its end, so every real block arrives whole, with its own format.
        self._scratch.setDefaultFont(doc.defaultFont())
        self._scratch.setHtml("<p>x</p>" + html)
        source = QTextCursor(self._scratch)
        source.setPosition(self._scratch.firstBlock().length() - 1)
        source.movePosition(_END, _KEEP)
        cursor = QTextCursor(doc)
        cursor.movePosition(_END)
        cursor.insertFragment(QTextDocumentFragment(source))
