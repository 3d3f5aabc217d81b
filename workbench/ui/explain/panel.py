"""The concept explainer: a searchable, cross-linked catalog beside the chat. Focusing a
knob opens its concept; a concept links back to its knob."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtWidgets import (
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from workbench.explain.catalog import Catalog, Concept, link_concepts
from workbench.ui.markdown import render_markdown


class ExplainerPanel(QWidget):
    sig_show_knob = Signal(str)
    """The user followed a concept's link to a knob (knob key)."""

    def __init__(self, catalog: Catalog | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog or Catalog.load()
        self.current: Concept | None = None
        self.search = QLineEdit(placeholderText="Search concepts…", clearButtonEnabled=True)
        self.list = QListWidget()
        self.view = QTextBrowser()
        self.view.setOpenLinks(False)  # concept: and knob: links are ours; http goes out
        self.view.anchorClicked.connect(self._on_view_anchor_clicked)
        self.hint = QLabel("Focus a knob in the chat's side panel to see what it does.")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: palette(mid);")

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.list)
        splitter.addWidget(self.view)
        splitter.setSizes([160, 520])
        self.splitter = splitter
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.hint)
        layout.addWidget(splitter, 1)

        self.search.textChanged.connect(self._fill_list)
        self.list.currentItemChanged.connect(self._on_list_current_changed)
        self._fill_list("")

    def add_demos(self, demos: QWidget) -> None:
        """Live demos on the loaded model, under the concept text."""
        self.splitter.addWidget(demos)
        self.splitter.setSizes([140, 380, 260])

    def _fill_list(self, query: str) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for concept in self.catalog.search(query):
            item = QListWidgetItem(concept.title)
            item.setToolTip(concept.summary)
            item.setData(Qt.ItemDataRole.UserRole, concept.id)
            self.list.addItem(item)
            if self.current is not None and concept.id == self.current.id:
                self.list.setCurrentItem(item)
        self.list.blockSignals(False)

    def _on_list_current_changed(self, item: QListWidgetItem | None, _prev: object) -> None:
        if item is not None:
            self.show_concept(item.data(Qt.ItemDataRole.UserRole))

    def show_concept(self, concept_id: str) -> bool:
        """Show a concept; False if the catalog has no such id."""
        try:
            concept = self.catalog.get(concept_id)
        except KeyError:
            return False
        self.current = concept
        self.view.setHtml(concept_html(concept, self.catalog))
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == concept_id:
                self.list.blockSignals(True)
                self.list.setCurrentRow(i)
                self.list.blockSignals(False)
        return True

    def show_knob(self, knob_key: str, concept_id: str = "") -> None:
        """A knob got focus: open its concept."""
        concept = self.catalog.for_knob(knob_key)
        self.show_concept(concept.id if concept else concept_id)

    def _on_view_anchor_clicked(self, url: QUrl) -> None:
        if url.scheme() == "concept":
            self.show_concept(url.path() or url.toString().split(":", 1)[1])
        elif url.scheme() == "knob":
            self.sig_show_knob.emit(url.path() or url.toString().split(":", 1)[1])
        else:
            from PySide6.QtGui import QDesktopServices

            QDesktopServices.openUrl(url)


def concept_html(concept: Concept, catalog: Catalog) -> str:
    """Title, summary, formula, body, then links: related concepts and the knobs."""
    parts = [f"<h2>{html.escape(concept.title)}</h2>",
             f"<p><i>{html.escape(concept.summary)}</i></p>"]
    if concept.formula:
        parts.append(f"<p style='font-family: monospace; background: #f3f5f7; padding: 4px'>"
                     f"{html.escape(concept.formula)}</p>")
    parts.append(render_markdown(link_concepts(concept.body)))
    if concept.knobs:
        links = ", ".join(f"<a href='knob:{k}'>{html.escape(k)}</a>" for k in concept.knobs)
        parts.append(f"<p><b>Try it:</b> {links}</p>")
    related = []
    for rid in concept.related:
        try:
            related.append(f"<a href='concept:{rid}'>{html.escape(catalog.get(rid).title)}</a>")
        except KeyError:
            continue
    if related:
        parts.append(f"<p><b>Related:</b> {' · '.join(related)}</p>")
    if concept.sources:
        parts.append("<p style='color: gray; font-size: small'>Sources: "
                     f"{html.escape('; '.join(concept.sources))}</p>")
    return "".join(parts)
