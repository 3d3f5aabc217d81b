"""The main window: notice banners on top, the chat page, an engine status line. It also
keeps window geometry in QSettings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.chat.store import ChatStore
from workbench.engine.protocol import EngineDied, EngineError, LoadSpec, ModelInfo
from workbench.engine.remote_http import host_of
from workbench.engine.remote_settings import RemoteConnection
from workbench.hardware.memory import available_memory_bytes
from workbench.hardware.snapshot import HardwareSnapshot
from workbench.models.builtin import BuiltinModelMissing, builtin_model_path, display_name
from workbench.models.fit import (
    DeviceBudget,
    FitError,
    FitPlan,
    ModelShape,
    budgets_from_snapshot,
    fixes_for,
    plan,
)
from workbench.models.gguf import GGUFError, GGUFHeader
from workbench.models.split import read_model_header
from workbench.resources import icon_path
from workbench.settings import ModelSettings, Settings, SettingsStore, config_dir, data_dir
from workbench.ui import notify
from workbench.ui.banners import NoticeBanner
from workbench.ui.chat.page import ChatPage
from workbench.ui.chat.settings_panel import SettingsPanel
from workbench.ui.compare.page import ComparePage
from workbench.ui.compare.runner import CompareRunner
from workbench.ui.engine_controller import EngineController
from workbench.ui.explain.demos import DemosWidget
from workbench.ui.explain.panel import ExplainerPanel
from workbench.ui.hardware.page import HardwarePage
from workbench.ui.lora.page import AdaptersPage
from workbench.ui.models.browser import ModelsPage
from workbench.ui.models.downloads import DownloadsPanel
from workbench.ui.models.library import LibraryPage
from workbench.ui.remote.connect import connect_remote, reconnect_last, use_local
from workbench.ui.remote.dialog import ConnectionDialog
from workbench.ui.serve.page import ServerPage
from workbench.ui.tasks import op


class MainWindow(QMainWindow):
    def __init__(self, store: ChatStore, settings_store: SettingsStore,
                 engine: EngineController | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Workbench")
        self.setWindowIcon(QIcon(str(icon_path())))
        self.store = store
        self.settings_store = settings_store
        self.settings: Settings = settings_store.load()
        self.engine = engine or EngineController(parent=self)
        self.banners: dict[str, NoticeBanner] = {}
        # What to save once the load in flight succeeds: its settings and the path to load
        # at the next start (None: the built-in model).
        self._pending_model: tuple[ModelSettings, str | None] | None = None

        s = self.settings
        self.panel = SettingsPanel(s.sampling, s.model, s.preset, s.user_presets)
        self.chat = ChatPage(store, self.engine, self.panel)
        self.hardware = HardwarePage()
        self.downloads = DownloadsPanel(data_dir() / "downloads")
        self.models = ModelsPage(self.downloads, lambda: self.hardware.snapshot)
        self.library = LibraryPage(list(s.library_folders), data_dir() / "models",
                                   lambda: self.hardware.snapshot)
        self.compare_runner = CompareRunner(
            self.engine, lambda path: self.panel.model_settings().load_spec(path), self)
        self.compare = ComparePage(
            self.compare_runner, self.panel.sampling,
            lambda: self.engine.spec.model_path if self.engine.spec else None,
            self._usable_adapters)
        self.adapters = AdaptersPage(self.engine, s.adapters, data_dir() / "adapters")
        self.server = ServerPage(self.engine, defaults=s.sampling)
        self.connection_dialog: ConnectionDialog | None = None  # while it is open
        self.pages = QStackedWidget()
        self.nav = QListWidget()
        self.nav.setFixedWidth(110)
        for title, page in (("Chat", self.chat), ("Compare", self.compare),
                            ("Adapters", self.adapters), ("Models", self.models),
                            ("Library", self.library), ("Hardware", self.hardware),
                            ("Server", self.server)):
            self.nav.addItem(title)
            self.pages.addWidget(page)
        self.nav.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.nav.setCurrentRow(0)
        self.notice_area = QVBoxLayout()
        self.notice_area.setContentsMargins(6, 6, 6, 0)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.notice_area)
        row = QHBoxLayout()
        row.addWidget(self.nav)
        row.addWidget(self.pages, 1)
        layout.addLayout(row, 1)
        self.setCentralWidget(central)
        self.explainer = ExplainerPanel()
        self.demos = DemosWidget(self.engine)
        self.explainer.add_demos(self.demos)
        self.explainer_dock = QDockWidget("Explainer", self)
        self.explainer_dock.setObjectName("explainer-dock")
        self.explainer_dock.setWidget(self.explainer)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.explainer_dock)
        self.engine_label = QLabel()
        self.statusBar().addPermanentWidget(self.engine_label)
        self._build_menu()

        notify.hub().sig_notice.connect(self.show_notice)
        notify.hub().sig_dismiss.connect(self.dismiss_notice)
        if settings_store.corrections:  # saved corrected: said this once, not every start
            notify.warning("Some settings were out of range", " ".join(
                settings_store.corrections), "Each was set to the nearest valid value.",
                key="settings")
        self.engine.sig_state_changed.connect(self._on_engine_state_changed)
        self.engine.sig_loaded.connect(self._on_engine_loaded)
        self.engine.sig_load_failed.connect(self._on_engine_load_failed)
        self.engine.sig_engine_switched.connect(self._on_engine_switched)
        self.server.sig_connect_requested.connect(self.open_connection_dialog)
        self.server.sig_local_requested.connect(self.use_local_engine)
        self.panel.sig_sampling_changed.connect(self._on_panel_sampling_changed)
        self.panel.sig_user_presets_changed.connect(
            lambda presets: self._save(replace(self.settings, user_presets=presets)))
        self.panel.sig_reload_requested.connect(self.reload_with)
        self.chat.sig_reload_model.connect(self.reload_with)
        self.panel.sig_open_model.connect(self.choose_model_file)
        self.panel.sig_load_builtin.connect(self.load_builtin)
        self.library.sig_load.connect(self._on_library_load)
        self.hardware.sig_snapshot.connect(self.library.refresh)  # fit labels need it
        self.library.sig_models_changed.connect(self._on_library_models_changed)
        self.adapters.sig_adapters_changed.connect(
            lambda adapters: self._save(replace(self.settings, adapters=adapters)))
        self.adapters.sig_show_concept.connect(self._on_adapters_show_concept)
        self.library.sig_folders_changed.connect(
            lambda folders: self._save(replace(self.settings, library_folders=tuple(folders))))
        self.models.sig_downloaded.connect(self._on_models_downloaded)
        self.panel.sig_knob_focused.connect(self._on_panel_knob_focused)
        self.explainer.sig_show_knob.connect(self._on_explainer_show_knob)
        self.engine.sig_chat_done.connect(
            lambda done: self.demos.set_used_tokens(done.timings.n_ctx_used))
        # The next-token demo follows the chat and the knobs.
        self.engine.sig_chat_done.connect(self.refresh_next_token)
        self.engine.sig_loaded.connect(self.refresh_next_token)
        self.panel.sig_sampling_changed.connect(self.refresh_next_token)
        self._restore_window_state()
        self._on_engine_state_changed(self.engine.state)
        self._on_engine_switched(self.engine.kind)

    # ------------------------------------------------------------ model loading

    def show_page(self, title: str) -> None:
        self.nav.setCurrentRow([self.nav.item(i).text() for i in range(self.nav.count())]
                               .index(title))

    def start(self) -> None:
        """Probe the hardware in the background; reconnect to the server the app was on
        when it closed, else load the last model used, or the built-in one on first start."""
        self.hardware.refresh()
        self.library.refresh()
        if reconnect_last(self.engine) is None:
            self.start_local()

    def start_local(self) -> None:
        """Load the last local model used, or the built-in one."""
        path = self.settings.last_model_path
        if path:
            self.load_model(path)
        else:
            self.load_builtin()

    # ------------------------------------------------------------ remote servers

    def open_connection_dialog(self) -> ConnectionDialog:
        """The connection dialog, window-modal; Connect puts the chat on that server."""
        if self.connection_dialog is not None:
            self.connection_dialog.raise_()
            return self.connection_dialog
        dialog = ConnectionDialog(self)
        dialog.accepted.connect(
            lambda: self.connect_to_server(dialog.connection(), dialog.api_key()))
        dialog.finished.connect(self._on_connection_dialog_finished)
        self.connection_dialog = dialog
        dialog.open()
        return dialog

    def _on_connection_dialog_finished(self, _result: int) -> None:
        if self.connection_dialog is not None:
            self.connection_dialog.deleteLater()
            self.connection_dialog = None

    def connect_to_server(self, conn: RemoteConnection, api_key: str | None) -> bool:
        """Chat with `conn.model_id` on its server from now on (a reply in progress is
        stopped; conversations stay). False, and says why, for an unusable address."""
        self._stop_replies()
        try:
            connect_remote(self.engine, conn, api_key)
        except Exception as exc:  # httpx's InvalidURL: the old engine stays in place
            notify.error("Cannot connect", f"“{conn.base_url}” is not a usable address "
                         f"({exc}).", "Write it as http://HOST:PORT/v1.", key="load")
            return False
        self.show_page("Chat")
        return True

    def use_local_engine(self) -> None:
        """Leave the server: back to the local engine and the last local model."""
        self._stop_replies()
        use_local(self.engine)
        self.start_local()

    def _stop_replies(self) -> None:
        """Stop the chat's reply and a comparison (before the engine changes or closes)."""
        if self.chat.active is not None:
            self.chat.stop()
        self.compare_runner.stop()

    def _on_engine_switched(self, _kind: str) -> None:
        self.panel.show_remote(self.engine.unavailable("load_settings"))
        self.compare.set_axes_unavailable({
            "model": self.engine.unavailable("model_file"),
            "adapter": self.engine.unavailable("adapters")})

    def load_builtin(self) -> None:
        try:
            path = builtin_model_path()
        except BuiltinModelMissing as exc:
            notify.error("Built-in model missing", str(exc), key="builtin-missing")
            return
        self.load_model(str(path), remember=False)

    def load_model(self, path: str, remember: bool = True,
                   model: ModelSettings | None = None) -> None:
        """Check the file off the GUI thread, and its fit once the hardware is known, then
        hand it to the engine (the local one: loading a file leaves a remote server). The
        settings are saved once it has loaded: a failed load must not be tried again at
        the next start."""
        model = model or self.panel.model_settings()

        def go(spec: LoadSpec) -> None:
            if self.engine.is_remote:
                use_local(self.engine)
            self._pending_model = (model, path if remember else None)
            self.engine.load(spec)

        def check_fit(header: GGUFHeader, snapshot: HardwareSnapshot | None) -> None:
            fit = self.fit_plan(header, model, snapshot)
            spec = model.load_spec(path, auto_gpu_layers=fit.n_gpu_layers if fit else 0)
            warning = self.fit_warning(header, fit)
            if warning is None:
                go(spec)
                return
            notify.warning(
                "This model may not fit", warning,
                "Loading anyway may make the system swap or the engine run out of memory; "
                "your conversations are safe either way.",
                actions=(("Load anyway", lambda: go(spec)),
                         ("Show the fit", lambda: self.show_fit(path, model))),
                key="load")

        def refused(exc: BaseException) -> None:
            message = str(exc) if isinstance(exc, GGUFError) else f"Cannot read {path}: {exc}"
            notify.error("Cannot load this model", message,
                         "The chat and your conversations are unaffected.", key="load")

        def checked(header: GGUFHeader) -> None:
            # The probe started with the window takes about a second; a model chosen before
            # it ends (the first start's) waits for it rather than load unchecked.
            self.hardware.when_probed(lambda snapshot: check_fit(header, snapshot))

        op(read_model_header, path).success(checked).failure(refused).run()

    def refresh_next_token(self, *_args: object) -> None:
        """The distribution of the reply's next token for this chat (or a greeting)."""
        if self.engine.owner is not None:
            return  # the compare view is driving the engine; its timings stay clean
        messages = self.chat.next_token_messages()
        self.demos.request_distribution(messages, self.panel.sampling())

    def _on_panel_knob_focused(self, key: str, concept: str) -> None:
        self.explainer.show_knob(key, concept)
        self.explainer_dock.show()

    def _on_explainer_show_knob(self, key: str) -> None:
        self.show_page("Chat")
        self.panel.focus_knob(key)

    def _usable_adapters(self) -> list[tuple[str, str]]:
        return [(Path(r.setting.path).stem, r.setting.path) for r in self.adapters.rows
                if r.usable]

    def _on_adapters_show_concept(self, concept: str) -> None:
        self.explainer.show_concept(concept)
        self.explainer_dock.show()

    def _on_library_models_changed(self, models: list) -> None:
        self.compare.set_models([
            (f"{display_name(m) if m.source == 'built-in' else m.name} · {m.quant}",
             str(m.path)) for m in models if not m.error])

    def _on_library_load(self, path: str) -> None:
        self.load_model(path)
        self.show_page("Chat")

    def _on_models_downloaded(self, progress: object) -> None:
        self.library.refresh()
        paths = getattr(progress, "paths", ())
        if paths:
            notify.info("Download finished", f"{paths[0]} is verified and ready.",
                        actions=(("Load it", lambda: self._on_library_load(paths[0])),),
                        key="downloaded")

    def fit_plan(self, header: GGUFHeader, model: ModelSettings,
                 snapshot: HardwareSnapshot | None) -> FitPlan | None:
        """The planner's view of loading `header` with `model` settings on `snapshot`'s
        hardware (None for a header the planner cannot read). Without a snapshot (the
        probe failed) it plans for the RAM available now, and no GPU."""
        try:
            shape = ModelShape.from_header(header)
        except FitError:  # an unusual header: let llama.cpp judge it
            return None
        budgets = (budgets_from_snapshot(snapshot) if snapshot is not None
                   else [DeviceBudget("CPU", "cpu", available_memory_bytes())])
        return plan(shape, model.fit_request(), budgets)

    def fit_warning(self, header: GGUFHeader, result: FitPlan | None) -> str | None:
        """What is wrong, if the plan says it will not fit or names a problem."""
        if result is None:
            return None
        shape = ModelShape.from_header(header)
        if result.verdict != "wont_fit" and not result.problems:
            return None
        if result.verdict != "wont_fit":
            return " ".join(result.problems)
        need = sum(d.total for d in result.devices)
        bpw = header.bits_per_weight
        fixes = " ".join(fixes_for(shape, result, bpw))
        return (f"{header.name} needs about {need / 2**30:,.1f} GiB with these settings, "
                f"more than is free. {fixes}")

    def show_fit(self, path: str, model: ModelSettings) -> None:
        self.show_page("Hardware")
        self.hardware.fit.set_model(path)
        self.hardware.fit.set_request(model.n_ctx, model.type_k, model.flash_attn,
                                      model.n_gpu_layers)

    def reload_with(self, model: ModelSettings) -> None:
        if self.engine.is_remote:  # the panel greys these out; a stray request lands here
            notify.info("These settings are the server's",
                        self.engine.unavailable("load_settings") or "", key="load")
            return
        if self.engine.spec is None:
            self.start()
            return
        self.load_model(self.engine.spec.model_path,
                        remember=self.settings.last_model_path is not None, model=model)

    def choose_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "",
                                              "GGUF models (*.gguf);;All files (*)")
        if path:
            self.load_model(path)

    def _on_engine_loaded(self, info: ModelInfo) -> None:
        notify.dismiss("load")
        if self._pending_model is not None:
            model, path = self._pending_model
            self._pending_model = None
            self._save(replace(self.settings, model=model, last_model_path=path))
        if self.engine.is_remote:
            self.statusBar().showMessage(
                f"Connected to {info.name} on {host_of(self.engine.remote_url or '')}", 5000)
            return
        spec = self.engine.spec
        self.hardware.fit.set_model(info.path)
        if spec is not None:
            self.hardware.fit.set_request(spec.n_ctx, spec.type_k, spec.flash_attn,
                                          spec.n_gpu_layers)
        self.statusBar().showMessage(
            f"Loaded {display_name(info)} in {info.load_seconds:.1f} s", 5000)

    def _on_engine_load_failed(self, event: EngineError | EngineDied) -> None:
        if self.engine.is_remote:
            # The server is down or refuses us: the chat (and its history) stays usable
            # on the local model, one click away.
            notify.error("Could not use the server", event.message, event.hint, key="load",
                         actions=(("Try again", self.engine.reload),
                                  ("Use the local model", self.use_local_engine),
                                  ("Connect to another…", self.open_connection_dialog)))
            return
        self._pending_model = None
        kept = getattr(event, "still_loaded", None)
        if kept is not None:  # the engine kept (or loaded again) the model in use
            notify.error("The model did not load",
                         f"{event.message} Your chat goes on with {display_name(kept)}.",
                         event.hint, key="load")
            return
        notify.error("The model did not load", event.message, event.hint, key="load")

    def _on_engine_state_changed(self, state: str) -> None:
        model = self.engine.model
        pid = self.engine.pid
        if self.engine.is_remote:
            where = host_of(self.engine.remote_url or "")
            text = {"empty": "No model", "loading": f"Connecting to {where}…",
                    "crashed": "Server connection lost"}.get(
                state, f"{model.name} on {where}" if model else state)
            self.engine_label.setText(text)
            return
        text = {"empty": "No model", "loading": "Loading…", "crashed": "Engine stopped"}.get(
            state, f"{display_name(model)} · {model.n_threads} threads" if model else state)
        self.engine_label.setText(f"{text} · engine pid {pid}" if pid else text)

    # ------------------------------------------------------------ settings

    def _save(self, settings: Settings) -> None:
        self.settings = settings
        self.settings_store.save(settings)

    def _on_panel_sampling_changed(self, sampling: object) -> None:
        self._save(replace(self.settings, sampling=sampling, preset=self.panel.preset_name))

    # ------------------------------------------------------------ notices

    def show_notice(self, notice: notify.Notice) -> None:
        if notice.key and notice.key in self.banners:
            self.banners.pop(notice.key).close_notice()
        banner = NoticeBanner(notice)
        self.notice_area.addWidget(banner)
        banner.show()  # children added to a visible window stay hidden until shown
        if notice.key:
            self.banners[notice.key] = banner
            banner.destroyed.connect(lambda *_: self.banners.pop(notice.key, None)
                                     if self.banners.get(notice.key) is banner else None)

    def dismiss_notice(self, key: str) -> None:
        banner = self.banners.pop(key, None)
        if banner is not None:
            banner.close_notice()

    def visible_notices(self) -> list[notify.Notice]:
        return [b.notice for b in self.findChildren(NoticeBanner) if not b.isHidden()]

    # ------------------------------------------------------------ window

    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        new = QAction("&New chat", self, shortcut=QKeySequence.StandardKey.New)
        new.triggered.connect(self.chat.new_conversation)
        open_model = QAction("&Open model…", self, shortcut=QKeySequence.StandardKey.Open)
        open_model.triggered.connect(self.choose_model_file)
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        for action in (new, open_model, quit_action):
            file_menu.addAction(action)
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.explainer_dock.toggleViewAction())

    def _qsettings(self) -> QSettings:
        return QSettings(str(config_dir() / "window.ini"), QSettings.Format.IniFormat)

    def _restore_window_state(self) -> None:
        qs = self._qsettings()
        geometry = qs.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 800)
        state = qs.value("window_state")
        if state is not None:
            self.restoreState(state)
        else:
            # Beside the chat on wide screens; on narrow ones it opens when a knob is focused.
            screen = self.screen().availableGeometry().width() if self.screen() else 0
            self.explainer_dock.setVisible(screen >= 1600)
        self.nav.setCurrentRow(int(qs.value("page", 0) or 0))
        splitter = qs.value("chat_splitter")
        if splitter is not None:
            self.chat.splitter.restoreState(splitter)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._stop_replies()
        self.server.server.shutdown()  # stop listening, cancel its replies, free the engine
        qs = self._qsettings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("chat_splitter", self.chat.splitter.saveState())
        qs.setValue("page", self.nav.currentRow())
        qs.setValue("window_state", self.saveState())
        self.engine.close()
        self.downloads.close_manager()  # running downloads pause, keeping their bytes
        super().closeEvent(event)
