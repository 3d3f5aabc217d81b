"""Train a LoRA adapter on a GGUF base model, on the CPU, in a child process the GUI can
watch and stop.

    python -m workbench.lora.train CONFIG.json      (frozen app: workbench --train-lora CONFIG)

The child reads the base with transformers from the GGUF itself (it dequantizes the weights
to float32 and undoes llama.cpp's q/k row order), wraps it with PEFT, learns the assistant
replies of a JSONL chat dataset (chat_examples.py) with a plain AdamW loop, saves the PEFT
adapter and converts it with convert_peft_adapter into a GGUF LoRA for that base. It
reports on stdout, one JSON object per line (anything else there is not an event):

    {"event": "status", "message": "Loading the base model"}
    {"event": "started", "total_steps": N, "trainable_params": P, "sequences": S}
    {"event": "step", "step": i, "total_steps": N, "loss": x, "elapsed_s": t}   (i = 1..N)
    {"event": "saved", "peft_dir": DIR}
    {"event": "done", "gguf": PATH, "peft_dir": DIR, "final_loss": x}
    {"event": "error", "message": ..., "hint": ...}          (then a non-zero exit)

Stopping is terminating the process. Nothing half-written is left under the final names:
the PEFT folder is written beside its place and renamed in, the GGUF is written atomically;
a hard kill (Windows) can leave hidden `.<name>…part` entries, which discard_partial removes.

This module imports no torch: the GUI uses its config, events and command. The torch side
is train_torch.py, the data checks and labels chat_examples.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import random
import secrets
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from workbench.installation import Installation, extra_hint
from workbench.lora.chat_examples import DataError, Example, read_examples
from workbench.lora.gguf_lora import AdapterError

REQUIRED_MODULES = ("torch", "transformers", "peft")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
FROZEN_FLAG = "--train-lora"
EVENT_KINDS = ("status", "started", "step", "saved", "done", "error")
_PART = ".part"

Emit = Callable[[dict[str, Any]], None]


class TrainError(Exception):
    """Training cannot go on; the message and hint are for the user."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass
class TrainConfig:
    """Everything one training run needs; written to JSON for the child process."""

    base_gguf: str
    data_path: str
    out_dir: str
    name: str = ""  # "" = the data file's stem; gives <name>.gguf and <name>-peft/
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    learning_rate: float = 1e-3
    # For a few dozen examples (the CPU case): the marker example needs ~20 steps at 1e-3.
    epochs: int = 10
    max_steps: int = 0  # > 0: exactly this many steps (the data is gone through again)
    batch_size: int = 4
    max_length: int = 512  # tokens per conversation; longer ones are cut
    seed: int = 0
    threads: int = 0  # 0: every core this process may use
    chat_template: str | None = None  # as LoadSpec.chat_template: None = the GGUF's
    extra: dict[str, Any] = field(default_factory=dict)  # kept for newer versions' keys

    @property
    def adapter_name(self) -> str:
        return self.name.strip() or Path(self.data_path).stem or "lora"

    @property
    def gguf_path(self) -> Path:
        return Path(self.out_dir) / f"{self.adapter_name}.gguf"

    @property
    def peft_dir(self) -> Path:
        return Path(self.out_dir) / f"{self.adapter_name}-peft"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        extra = data.pop("extra")
        return {**extra, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        missing = [k for k in ("base_gguf", "data_path", "out_dir") if k not in data]
        if missing:
            raise TrainError(f"The training settings lack {', '.join(missing)}.",
                             "Start the training from the app again.")
        kwargs = {k: v for k, v in data.items() if k in known}
        modules = kwargs.get("target_modules", DEFAULT_TARGETS)
        kwargs["target_modules"] = (tuple(modules) if isinstance(modules, (list, tuple))
                                    else (modules,))
        config = cls(**kwargs, extra={k: v for k, v in data.items() if k not in known})
        problems = config.problems()
        if problems:
            raise TrainError("Unusable training settings: " + "; ".join(problems) + ".",
                             "Change the settings and start again.")
        return config

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TrainError(f"The training settings are not valid JSON: {exc}.") from None
        if not isinstance(data, dict):
            raise TrainError("The training settings are not a JSON object.")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(self.to_json(), encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TrainError(f"Cannot read the training settings {path}: {exc.strerror}.") \
                from None
        return cls.from_json(text)

    def problems(self) -> list[str]:
        """What is wrong with the numbers (empty: nothing)."""
        out = [f"{name} must be a path" for name in ("base_gguf", "data_path", "out_dir")
               if not isinstance(getattr(self, name), str) or not getattr(self, name)]
        for name in ("rank", "epochs", "batch_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                out.append(f"{name} must be a whole number of at least 1")
        for name in ("max_steps", "seed", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                out.append(f"{name} must be a whole number, 0 or more")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            out.append("learning_rate must be between 0 and 1")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            out.append("alpha must be above 0")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            out.append("dropout must be at least 0 and below 1")
        if not self.target_modules or not all(isinstance(m, str) and m
                                              for m in self.target_modules):
            out.append("target_modules must name at least one module")
        if not isinstance(self.name, str) or "/" in self.name or "\\" in self.name:
            out.append("name must not contain slashes")
        return out


# ---------------------------------------------------------------- for the GUI


@dataclass(frozen=True)
class TrainEvent:
    """One progress line of the child, parsed."""

    kind: str  # one of EVENT_KINDS
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    elapsed_s: float = 0.0
    trainable_params: int = 0
    sequences: int = 0
    message: str = ""
    hint: str = ""
    peft_dir: str = ""
    gguf: str = ""
    final_loss: float | None = None


def parse_progress_line(line: str | bytes) -> TrainEvent | None:
    """The event on one stdout line, or None for anything else (stray library output)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("event") not in EVENT_KINDS:
        return None

    def num(key: str, kind: type) -> Any:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return kind(value) if kind is int or math.isfinite(value) else None

    def text(key: str) -> str:
        value = data.get(key)
        return value if isinstance(value, str) else ""

    return TrainEvent(
        kind=data["event"], step=num("step", int) or 0,
        total_steps=num("total_steps", int) or 0, loss=num("loss", float),
        elapsed_s=num("elapsed_s", float) or 0.0,
        trainable_params=num("trainable_params", int) or 0,
        sequences=num("sequences", int) or 0, message=text("message"), hint=text("hint"),
        peft_dir=text("peft_dir"), gguf=text("gguf"), final_loss=num("final_loss", float))


def train_command(config_path: str | os.PathLike[str]) -> list[str]:
    """The command line of the child process for a saved TrainConfig: `python -m
    workbench.children --train-lora PATH`, or in a frozen app `APP --train-lora PATH`."""
    from workbench.children import child_command

    return child_command(FROZEN_FLAG, [str(config_path)])


def train_available(installation: Installation | None = None) -> str | None:
    """None when training can run here; otherwise what is missing and how to add it, in
    words that fit how this copy was installed (installer, checkout or pip)."""
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return (f"Training needs {', '.join(missing)}, which {verb} not installed.\n"
            + extra_hint("train", installation))


def discard_partial(config: TrainConfig) -> list[Path]:
    """Remove what a killed run left half-written in out_dir; returns what was removed."""
    out = Path(config.out_dir)
    removed: list[Path] = []
    if not out.is_dir():
        return removed
    # Ours (_partial_dir) and convert_peft_adapter's: ".<name>-peft.….part", ".<name>.gguf.….part"
    prefixes = (f".{config.peft_dir.name}.", f".{config.gguf_path.name}.")
    for entry in out.iterdir():
        if not (entry.name.startswith(prefixes) and entry.name.endswith(_PART)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


# ---------------------------------------------------------------- the child


def batches(n: int, batch_size: int, total_steps: int, seed: int) -> Iterator[list[int]]:
    """Sequence indices for each step: pass after pass over the data, each in a fresh
    seeded order and cut into batches (the last of a pass may be smaller)."""
    rng = random.Random(seed)
    step = 0
    while n > 0:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n, batch_size):
            if step == total_steps:
                return
            yield order[i:i + batch_size]
            step += 1


def total_steps_for(config: TrainConfig, n_sequences: int) -> int:
    if config.max_steps > 0:
        return config.max_steps
    return config.epochs * math.ceil(n_sequences / config.batch_size)


@contextlib.contextmanager
def _partial_dir(final: Path) -> Iterator[Path]:
    """A folder beside `final`, renamed to it on success and removed otherwise."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its folder is private (0700), and this one becomes the user's.
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}{_PART}")
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists():  # a directory cannot be replaced in one rename
            old = final.with_name(f".{final.name}.old-{os.getpid()}{_PART}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def run(config: TrainConfig, emit: Emit) -> None:
    """Train, save and convert, reporting through `emit`. Raises TrainError, DataError or
    AdapterError with texts for the user."""
    from workbench.lora.train_torch import load_base, make_format, train_lora

    examples: list[Example] = read_examples(config.data_path)  # fails fast, before torch
    if not Path(config.base_gguf).is_file():
        raise TrainError(f"The base model {config.base_gguf} does not exist.",
                         "Choose the model's .gguf file.")
    emit({"event": "status", "message": "Loading the base model"})
    base = load_base(config)
    fmt = make_format(config, base)
    emit({"event": "status", "message": "Training"})
    final_loss = train_lora(config, base, fmt, examples, emit)
    with _partial_dir(config.peft_dir) as tmp:
        base.model.save_pretrained(str(tmp))
        (tmp / "train_config.json").write_text(config.to_json(), encoding="utf-8")
    emit({"event": "saved", "peft_dir": str(config.peft_dir)})
    emit({"event": "status", "message": "Converting to GGUF"})
    from workbench.lora.peft_import import convert_peft_adapter

    info = convert_peft_adapter(config.peft_dir, config.base_gguf, config.gguf_path)
    emit({"event": "done", "gguf": str(info.path), "peft_dir": str(config.peft_dir),
          "final_loss": final_loss})


def _stop_on_sigterm() -> Any:
    """Make SIGTERM raise SystemExit; returns the previous handler (None: not set).

    The default SIGTERM ends Python without unwinding; as SystemExit, the `finally` blocks
    remove half-written files."""
    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):  # not the main thread
        return None


def _emitter(stream: TextIO) -> Emit:
    def emit(event: dict[str, Any]) -> None:
        stream.write(json.dumps(event) + "\n")
        stream.flush()

    return emit


def _events_stream(whole_process: bool) -> TextIO:
    """The stream events go to: stdout. As a process, stdout's file descriptor is moved
    aside and fd 1 becomes stderr, so that even native code's prints stay out of it."""
    if not whole_process:
        return sys.stdout
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)


def main(argv: list[str] | None = None) -> int:
    """The child process (argv None: sys.argv); also callable in-process with argv."""
    args = sys.argv[1:] if argv is None else argv
    # Events own stdout; whatever libraries print goes to stderr instead.
    # A whole process: run as `-m` (argv None) or by the frozen app's --train-lora flag.
    whole_process = argv is None or bool(getattr(sys, "frozen", False))
    emit = _emitter(_events_stream(whole_process))
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    previous = _stop_on_sigterm()
    try:
        if len(args) != 1:
            raise TrainError("Usage: python -m workbench.lora.train CONFIG.json")
        config = TrainConfig.load(args[0])
        missing = train_available()
        if missing:
            raise TrainError("Training is not available.", missing)
        run(config, emit)
        return 0
    except (TrainError, DataError, AdapterError) as exc:
        emit({"event": "error", "message": exc.message, "hint": exc.hint})
        return 1
    except MemoryError:
        emit({"event": "error", "message": "Training ran out of memory.",
              "hint": "Lower the batch size or the maximum length."})
        return 1
    except Exception as exc:
        traceback.print_exc()
        emit({"event": "error", "message": f"Training failed: {type(exc).__name__}: {exc}",
              "hint": "The details are in the training log. Please report this."})
        return 1
    finally:
        sys.stdout = real_stdout
        if previous is not None:  # main() called in-process (tests): leave it as it was
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    # Run the imported module's main, not __main__'s copy: train_torch imports
    # workbench.lora.train, and its TrainError must be the class main() catches.
    from workbench.lora.train import main as _main

    raise SystemExit(_main())
