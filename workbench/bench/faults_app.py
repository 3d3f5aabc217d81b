"""The app process the fault benchmark kills (faults.py): the real window on the
WORKBENCH_HOME it is given, the built-in model loaded, one message sent. Once the reply
has streamed a few tokens it prints `streaming MESSAGE_ID`, then streams on until killed.

    python -m workbench.bench.faults_app HOME SEED
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

PROMPT = "Write a very long story about a ship and her crew."
LONG_REPLY = 4000  # tokens: the reply is still streaming when the kill comes
TOKENS_BEFORE_SIGNAL = 4


def main(argv: list[str]) -> int:
    home, seed = argv[0], int(argv[1])
    os.environ["WORKBENCH_HOME"] = home
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from workbench.chat.store import ChatStore
    from workbench.settings import SettingsStore, data_dir
    from workbench.ui.main_window import MainWindow

    app = QApplication([sys.argv[0]])
    store = ChatStore(data_dir() / "conversations.db")
    store.recover_interrupted()  # as the app's start-up does (workbench/app.py)
    window = MainWindow(store, SettingsStore())
    window.show()
    window.panel.set_sampling(replace(window.panel.sampling(), max_tokens=LONG_REPLY,
                                      seed=seed))
    tokens = 0

    def loaded(_info: object) -> None:
        window.chat.new_conversation()
        if not window.chat.send(PROMPT):
            print("not sent", flush=True)
            app.exit(1)

    def token(_rid: int, _text: str) -> None:
        nonlocal tokens
        tokens += 1
        active = window.chat.active
        if tokens == TOKENS_BEFORE_SIGNAL and active is not None:
            print(f"streaming {active.message_id}", flush=True)

    def failed(event: object) -> None:
        print(f"load failed: {getattr(event, 'message', event)}", flush=True)
        app.exit(1)

    window.engine.sig_loaded.connect(loaded)
    window.engine.sig_token.connect(token)
    window.engine.sig_load_failed.connect(failed)
    window.engine.sig_chat_done.connect(lambda _e: print("done early", flush=True))
    window.load_builtin()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
