"""The model browser: search the Hub for GGUF repositories (or pick from a curated
shortlist), see a repository's files grouped by quantization with their size, bits per
weight and whether they fit this machine — judged from a remote header read, before any
download — with the best picks named, the model card and license, and download."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from workbench.hardware.snapshot import HardwareSnapshot
from workbench.models import tokens
from workbench.models.downloads import DownloadRequest
from workbench.models.fit import VERDICT_LABELS, FitRequest, ModelShape, budgets_from_snapshot
from workbench.models.gguf import GGUFHeader
from workbench.models.hub import (
    GGUFFile,
    RepoDetails,
    RepoSummary,
    curated_repos,
    group_by_quant,
    repo_details,
    search_gguf,
)
from workbench.models.library import default_app_models_dir
from workbench.models.recommend import fit_labels, recommend
from workbench.models.remote import read_remote_model_header
from workbench.ui import notify
from workbench.ui.fit.panel import VERDICT_COLOURS, fmt_bytes
from workbench.ui.markdown import render_markdown
from workbench.ui.models.downloads import DownloadsPanel
from workbench.ui.tasks import op

SORTS = {"Most downloads": "downloads", "Most likes": "likes", "Newest": "last_modified"}


class ModelsPage(QSplitter):
    sig_downloaded = Signal(object)
    """A verified download finished (Progress)."""

    def __init__(self, downloads: DownloadsPanel,
                 snapshot: Callable[[], HardwareSnapshot | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Vertical, parent)
        self.downloads = downloads
        self.snapshot = snapshot
        self.details: RepoDetails | None = None
        self.shape: ModelShape | None = None
        self.shape_size = 0

        self.search = QLineEdit(placeholderText="Search GGUF models on Hugging Face…")
        self.sort = QComboBox()
        self.sort.addItems(list(SORTS))
        self.search_button = QPushButton("Search")
        self.curated_button = QPushButton("Curated")
        self.results = QListWidget()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        row = QHBoxLayout()
        row.addWidget(self.search, 1)
        row.addWidget(self.search_button)
        left_layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.sort, 1)
        row.addWidget(self.curated_button)
        left_layout.addLayout(row)
        left_layout.addWidget(self.results, 1)

        self.title = QLabel("Pick a repository")
        self.title.setWordWrap(True)
        self.n_ctx = QSpinBox(minimum=512, maximum=1 << 20, singleStep=1024, value=4096)
        self.n_ctx.setToolTip("The context you want: fit labels and picks follow it.")
        self.picks = QLabel()
        self.picks.setWordWrap(True)
        self.files = QTreeWidget()
        self.files.setHeaderLabels(["Quantization / file", "Size", "Bits/weight", "Fit"])
        self.files.setColumnWidth(0, 360)
        self.download_button = QPushButton("Download")
        self.download_button.setEnabled(False)
        self.target = QComboBox()
        self.target.addItem("to the Hugging Face cache (shared with other tools)", None)
        self.target.addItem("to Workbench's models folder", str(default_app_models_dir()))
        self.target.addItem("to a folder I choose…", "choose")
        self.target.activated.connect(self._on_target_activated)
        self.token_button = QPushButton("Hugging Face token…")
        self.card = QTextBrowser()
        self.card.setOpenExternalLinks(True)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.addWidget(self.title)
        row = QHBoxLayout()
        row.addWidget(QLabel("Context"))
        row.addWidget(self.n_ctx)
        row.addStretch(1)
        row.addWidget(self.token_button)
        row.addWidget(self.download_button)
        row.addWidget(self.target)
        right_layout.addLayout(row)
        right_layout.addWidget(self.picks)
        right_layout.addWidget(self.files, 2)
        right_layout.addWidget(QLabel("Model card"))
        right_layout.addWidget(self.card, 1)

        top = QSplitter()
        top.addWidget(left)
        top.addWidget(right)
        top.setSizes([320, 900])
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(downloads)
        self.addWidget(top)
        self.addWidget(scroll)
        self.setSizes([620, 200])

        self.search_button.clicked.connect(self.run_search)
        self.search.returnPressed.connect(self.run_search)
        self.curated_button.clicked.connect(self.show_curated)
        self.results.currentItemChanged.connect(self._on_results_current_changed)
        self.files.itemSelectionChanged.connect(self._on_files_selection_changed)
        self.download_button.clicked.connect(self.download_selected)
        self.token_button.clicked.connect(self.ask_token)
        self.n_ctx.valueChanged.connect(self._show_fit)
        downloads.sig_finished.connect(self.sig_downloaded.emit)
        self.show_curated()

    # ------------------------------------------------------------ lists

    def show_curated(self) -> None:
        self.results.clear()
        for entry in curated_repos():
            item = QListWidgetItem(f"{entry.repo_id}\n{entry.family} — {entry.note}")
            item.setData(Qt.ItemDataRole.UserRole, entry.repo_id)
            self.results.addItem(item)

    def run_search(self) -> None:
        query, sort = self.search.text().strip(), SORTS[self.sort.currentText()]
        self.search_button.setEnabled(False)
        (op(search_gguf, query, sort=sort, token=tokens.get_token())
         .success(self.show_results).failure(self._on_hub_failed)
         .finally_(self._on_search_finished).run())

    def _on_search_finished(self) -> None:
        self.search_button.setEnabled(True)

    def show_results(self, repos: list[RepoSummary]) -> None:
        self.results.clear()
        for repo in repos:
            lock = " 🔒" if repo.gated else ""
            item = QListWidgetItem(f"{repo.repo_id}{lock}\n↓ {repo.downloads:,} · ♥ "
                                   f"{repo.likes:,}")
            item.setData(Qt.ItemDataRole.UserRole, repo.repo_id)
            self.results.addItem(item)
        if not repos:
            self.results.addItem("No GGUF repositories match.")

    def _on_hub_failed(self, exc: BaseException) -> None:
        notify.error("Hugging Face Hub", str(exc),
                     "Check the connection, or add a token for gated models.", key="hub")

    # ------------------------------------------------------------ one repository

    def _on_results_current_changed(self, item: QListWidgetItem | None, _prev: object) -> None:
        repo_id = item.data(Qt.ItemDataRole.UserRole) if item else None
        if repo_id:
            self.open_repo(repo_id)

    def open_repo(self, repo_id: str) -> None:
        self.title.setText(f"<b>{repo_id}</b> — loading…")
        self.files.clear()
        self.picks.clear()
        (op(repo_details, repo_id, token=tokens.get_token())
         .success(self.show_details).failure(self._on_hub_failed).run())

    def show_details(self, details: RepoDetails) -> None:
        self.details, self.shape = details, None
        lock = " · 🔒 gated: accept the license on the Hub and add a token" if details.gated \
            else ""
        self.title.setText(f"<b>{details.repo_id}</b> · license: "
                           f"{details.license or 'not stated'}{lock}")
        self.card.setHtml(render_markdown(details.card_text or "(no model card)"))
        self.files.clear()
        for quant, files in group_by_quant(list(details.files)):
            group = QTreeWidgetItem([quant])
            group.setFirstColumnSpanned(False)
            for f in files:
                name = f.filename + (f" (+{len(f.parts) - 1} parts)" if len(f.parts) > 1
                                     else "")
                bpw = f"{f.bits_per_weight:.2f}" if f.bits_per_weight else "?"
                child = QTreeWidgetItem([name, fmt_bytes(f.size), bpw, "…"])
                child.setData(0, Qt.ItemDataRole.UserRole, f)
                group.addChild(child)
            self.files.addTopLevelItem(group)
            group.setExpanded(True)
        if details.files:
            # One header tells the architecture; the other quantizations scale with size.
            smallest = min(details.files, key=lambda f: f.size)
            self.shape_size = smallest.size
            (op(read_remote_model_header, details.repo_id, smallest.filename,
                revision=details.revision, token=tokens.get_token())
             .success(self._on_header).failure(self._on_header_failed).run())

    def _on_header(self, header: GGUFHeader) -> None:
        self.shape = ModelShape.from_header(header)
        self._show_fit()

    def _on_header_failed(self, exc: BaseException) -> None:
        self.picks.setText(f"Fit unknown: the model's header could not be read ({exc}).")

    def _show_fit(self) -> None:
        if self.details is None or self.shape is None:
            return
        files = list(self.details.files)
        req = FitRequest(n_ctx=self.n_ctx.value())
        labels = fit_labels(self.shape, self.shape_size, files, req,
                            budgets_from_snapshot(self.snapshot()))
        for i in range(self.files.topLevelItemCount()):
            group = self.files.topLevelItem(i)
            for j in range(group.childCount()):
                child = group.child(j)
                f: GGUFFile = child.data(0, Qt.ItemDataRole.UserRole)
                plan = labels.get(f.filename)
                if plan is not None:
                    child.setText(3, VERDICT_LABELS[plan.verdict])
                    child.setForeground(3, _colour(plan.verdict))
        best = recommend(labels, files)
        lines = []
        if best.best_full is not None:
            lines.append(f"Best that fits whole: <b>{best.best_full.quant}</b> "
                         f"({fmt_bytes(best.best_full.size)})")
        if best.best_partial is not None:
            lines.append(f"Best with partial GPU offload: <b>{best.best_partial.quant}</b> "
                         f"({fmt_bytes(best.best_partial.size)})")
        self.picks.setText("<br>".join(lines) or
                           f"No file of this repository fits at {req.n_ctx:,} tokens of "
                           f"context on this machine.")

    # ------------------------------------------------------------ actions

    def selected_file(self) -> GGUFFile | None:
        items = self.files.selectedItems()
        return items[0].data(0, Qt.ItemDataRole.UserRole) if items else None

    def _on_files_selection_changed(self) -> None:
        self.download_button.setEnabled(self.selected_file() is not None)

    def download_selected(self) -> None:
        f = self.selected_file()
        if f is None or self.details is None:
            return
        self.downloads.start(DownloadRequest(self.details.repo_id, tuple(f.parts),
                                             revision=self.details.revision,
                                             folder=self.target.currentData()))

    def _on_target_activated(self, index: int) -> None:
        if self.target.itemData(index) != "choose":
            return
        folder = QFileDialog.getExistingDirectory(self, "Download models to")
        if not folder:
            self.target.setCurrentIndex(0)
            return
        self.target.insertItem(index, f"to {folder}", folder)
        self.target.setCurrentIndex(index)

    def ask_token(self) -> None:
        token, ok = QInputDialog.getText(self, "Hugging Face token",
                                         "Token (for gated or private models):",
                                         QLineEdit.EchoMode.Password)
        if ok and token.strip():
            tokens.set_token(token.strip())
            where = ("the system keyring" if tokens.token_storage() == "keyring" else
                     "memory for this session only (no system keyring was found)")
            notify.info("Token saved", f"Your token is kept in {where}.", key="token")


def _colour(verdict: str):
    from PySide6.QtGui import QColor

    return QColor(VERDICT_COLOURS[verdict])
