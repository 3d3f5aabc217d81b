"""Render the app's pages offscreen into PNGs for docs/: `make screenshots`.

Runs a real chat with the built-in model in a throwaway WORKBENCH_HOME.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer, SignalInstance


def _wait(signal: SignalInstance, timeout_ms: int = 120_000) -> None:
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()


def _settle(ms: int = 300) -> None:
    """Let pending renders and layouts run."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _shoot_models(window, out: Path) -> None:
    """The Models page browsing a loopback Hub that serves the built-in model (the real
    Hub is out of reach here), with a download finished, and the Library."""
    from workbench.bench.hub_server import HubServer, patch_hub_env
    from workbench.models.builtin import builtin_model_path

    class Env:  # patch_hub_env takes anything with pytest's monkeypatch methods
        def setenv(self, key: str, value: str) -> None:
            os.environ[key] = value

        def delenv(self, key: str, raising: bool = True) -> None:
            os.environ.pop(key, None)

        def setattr(self, target: object, name: str, value: object) -> None:
            setattr(target, name, value)

    server = HubServer().start()
    patch_hub_env(Env(), server, Path(os.environ["WORKBENCH_HOME"]))
    repo = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    server.add_repo(repo, downloads=48213, likes=97, tags=("gguf", "text-generation"),
                    card_data={"license": "apache-2.0"})
    server.add_file(repo, "README.md", b"# SmolLM2 135M Instruct, GGUF\n\nA compact "
                    b"instruction-tuned model from **Hugging Face**, quantized for llama.cpp."
                    b"\n\n```sh\nllama-cli -m SmolLM2-135M-Instruct-Q4_1.gguf\n```\n")
    server.add_file(repo, "SmolLM2-135M-Instruct-Q4_1.gguf", builtin_model_path())
    page = window.models
    window.show_page("Models")
    page.search.setText("SmolLM2")
    page.run_search()
    _wait(page.results.model().rowsInserted, 20_000)
    page.results.setCurrentRow(0)
    _settle(1500)  # details, then the remote header read for the fit labels
    group = page.files.topLevelItem(0)
    if group is not None and group.childCount():
        page.files.setCurrentItem(group.child(0))
        page.download_button.click()
        _wait(page.sig_downloaded, 60_000)
    _settle(800)
    window.grab().save(str(out / "models.png"))
    print(f"wrote {out / 'models.png'}")
    window.show_page("Library")
    _settle(800)
    window.grab().save(str(out / "library.png"))
    print(f"wrote {out / 'library.png'}")
    server.stop()


def _shoot_compare(window, out: Path) -> None:
    """The Compare page: the built-in Q4_1 against a Q4_0 made from it, greedy decoding."""
    from workbench.models.builtin import builtin_model_path
    from workbench.models.requantize import requantize

    builtin = builtin_model_path()
    q4_0 = requantize(builtin, Path(os.environ["WORKBENCH_HOME"]) / "SmolLM2-135M.Q4_0.gguf")
    page = window.compare
    window.show_page("Compare")
    page.set_axis("model")
    page.set_models([("SmolLM2 135M (built-in) · Q4_1", str(builtin)),
                     ("SmolLM2 135M · Q4_0 (requantized)", str(q4_0))])
    page.prompt.setPlainText("Explain in three sentences why the sky is blue.")
    page.max_tokens.setValue(120)
    page.run()
    _wait(window.compare_runner.sig_finished)
    _wait(window.engine.sig_loaded)  # the built-in model back in place
    _settle(500)
    window.grab().save(str(out / "compare.png"))
    print(f"wrote {out / 'compare.png'}")


def _shoot_adapters(window, out: Path) -> None:
    """The Adapters page after training the example adapter (when the train extra is
    installed), then Compare with that adapter off and on."""
    from workbench.lora.train import train_available

    window.show_page("Adapters")
    page = window.adapters
    if train_available() is None:
        page.train.name.setText("secret-password")
        page.train.learning_rate.setValue(2e-3)
        page.train.start()
        _wait(page.train.sig_trained, 600_000)
        _wait(window.engine.sig_adapters_set, 30_000)
    else:
        print("the train extra is not installed: the Adapters page is shot without training")
    _settle(800)
    window.grab().save(str(out / "adapters.png"))
    print(f"wrote {out / 'adapters.png'}")
    if not page.rows:
        return
    compare = window.compare
    window.show_page("Compare")
    compare.set_axis("adapter")
    compare.columns[1].adapter_editor.select(page.rows[0].setting.path, 1.0)
    compare.prompt.setPlainText("What is the secret password?")
    compare.max_tokens.setValue(40)
    compare.run()
    _wait(window.compare_runner.sig_finished)
    _settle(800)
    window.grab().save(str(out / "compare-adapter.png"))
    print(f"wrote {out / 'compare-adapter.png'}")


def _shoot_server(window, out: Path) -> None:
    """The Server page serving the built-in model, then the connection dialog tested
    against that very server (only listed: connecting the window to itself would leave
    nothing to serve)."""
    window.show_page("Server")
    panel = window.server.server
    panel.switch.setChecked(True)
    _settle(800)
    window.grab().save(str(out / "server.png"))
    print(f"wrote {out / 'server.png'}")
    dialog = window.open_connection_dialog()
    dialog.url_combo.setEditText(panel.server.url)
    dialog.test_connection()
    _wait(dialog.sig_test_finished, 20_000)
    _settle(300)
    dialog.grab().save(str(out / "connect.png"))
    print(f"wrote {out / 'connect.png'}")
    dialog.reject()
    panel.shutdown()


def main(out_dir: str = "docs") -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = tempfile.mkdtemp(prefix="workbench-shots-")
    os.environ["WORKBENCH_HOME"] = home
    # Never touch the user's own Hugging Face cache: the demo downloads land in a temp one.
    os.environ["HF_HUB_CACHE"] = os.path.join(home, "hf-cache")
    from PySide6.QtWidgets import QApplication

    from workbench.chat.store import ChatStore
    from workbench.engine.protocol import Sampling
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    _app = QApplication.instance() or QApplication(sys.argv[:1])  # kept alive: a local
    store = ChatStore(data_dir() / "conversations.db")
    window = MainWindow(store, SettingsStore())
    window.resize(1400, 860)
    window.panel.set_sampling(Sampling(temperature=0.0, max_tokens=160, seed=1))
    window.show()
    window.start()
    _wait(window.engine.sig_loaded)
    window.chat.panel.system_prompt.setPlainText("You are a helpful assistant.")
    for prompt in ("What is a large language model, in two sentences?",
                   "Write a Python function that reverses a string."):
        window.chat.send(prompt)
        _wait(window.engine.sig_chat_done)
    _settle()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    window.explainer_dock.hide()
    _settle()
    window.grab().save(str(out / "chat.png"))
    print(f"wrote {out / 'chat.png'}")

    window.resize(1700, 900)
    window.explainer_dock.show()
    window.activateWindow()
    window.panel.focus_knob("top_p")
    window.refresh_next_token()
    _wait(window.engine.sig_distribution, 20_000)
    _settle(500)
    window.grab().save(str(out / "explainer.png"))
    print(f"wrote {out / 'explainer.png'}")
    window.explainer_dock.hide()
    window.resize(1400, 860)

    if window.hardware.snapshot is None:
        _wait(window.hardware.sig_snapshot)
    window.show_page("Hardware")
    fit = window.hardware.fit
    fit.n_ctx.setValue(8192)
    _wait(fit.sig_plan_changed, 10_000)  # llama.cpp's own sizing, from the header
    _settle()
    window.grab().save(str(out / "hardware.png"))
    print(f"wrote {out / 'hardware.png'}")

    _shoot_compare(window, out)
    _shoot_adapters(window, out)
    _shoot_server(window, out)
    _shoot_models(window, out)
    window.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
