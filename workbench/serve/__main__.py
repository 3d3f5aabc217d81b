"""Serve a GGUF model through the OpenAI-compatible API without the GUI.

    python -m workbench.serve [MODEL.gguf] [--host 127.0.0.1] [--port 8080] [--n-ctx 4096]

Without a model path the built-in model is served. The API key, if any, comes from the
WORKBENCH_API_KEY environment variable (never from the command line, which other users
of the machine can read).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from workbench.engine.protocol import LoadSpec
from workbench.serve.api import ApiServer, ServeError
from workbench.serve.backend import EngineBackend
from workbench.serve.settings import LOOPBACK, ServerSettings, is_loopback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a GGUF file (default: the built-in model)")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--n-ctx", type=int, default=LoadSpec("").n_ctx)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    args = parser.parse_args(argv)
    if args.model is None:
        from workbench.models.builtin import builtin_model_path

        args.model = str(builtin_model_path())
    if not is_loopback(args.host):
        print(f"Warning: serving on {args.host}: other machines on the network can reach "
              "the model.", file=sys.stderr)
    backend = EngineBackend()
    try:
        backend.load(LoadSpec(args.model, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers))
        server = ApiServer(backend, ServerSettings(args.host, args.port),
                           api_key=os.environ.get("WORKBENCH_API_KEY"))
        server.start()
    except ServeError as exc:
        print(exc, file=sys.stderr)
        backend.close()
        return 2
    except Exception as exc:
        print(f"Cannot serve {args.model}: {exc}", file=sys.stderr)
        backend.close()
        return 1
    print(f"Serving {backend.model_id()} at {server.url} (Ctrl+C stops)", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())  # a service manager's stop
    try:
        while not stopped.wait(0.5):  # a timed wait: Ctrl+C interrupts it on Windows too
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
