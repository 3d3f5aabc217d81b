"""Chat examples for LoRA training: read and check a JSONL file, and turn one conversation
into token ids plus labels, with the loss on the assistant's replies only.

One example per line: {"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}
(the format of OpenAI's and Hugging Face TRL's chat datasets). Blank lines are skipped;
other keys are ignored.

Pure Python: no torch, so the checks run (and are tested) without the `train` extra. The
prompt text comes from the engine's own template code (workbench.engine.templates), so a
trained reply follows exactly the prompt the engine sends at inference time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.engine.templates import ResolvedTemplate, TemplateError, render_prompt

ROLES = ("system", "user", "assistant")
IGNORE = -100  # the label torch's cross_entropy skips: no loss on prompt tokens
_MAX_SHOWN = 8  # problems listed in the message; all are in DataError.problems

_FORMAT_HINT = ('Each line must be one JSON object like {"messages": [{"role": "user", '
                '"content": "…"}, {"role": "assistant", "content": "…"}]}.')


class DataError(Exception):
    """The training data cannot be used. `problems` lists each one ("line 3: …")."""

    def __init__(self, message: str, hint: str = "",
                 problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message, self.hint, self.problems = message, hint, list(problems)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Example:
    """One checked conversation and the line it came from (1-based)."""

    line: int
    messages: tuple[dict[str, str], ...]

    @property
    def n_replies(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)


def _check_messages(value: object) -> tuple[list[dict[str, str]], str | None]:
    """The messages in their plain form, or a problem (without the line number)."""
    if not isinstance(value, dict):
        return [], f"expected a JSON object, found {type(value).__name__}"
    messages = value.get("messages")
    if messages is None:
        return [], 'no "messages" key'
    if not isinstance(messages, list) or not messages:
        return [], '"messages" must be a non-empty list'
    plain: list[dict[str, str]] = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            return [], f"message {i} is not an object"
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return [], f"message {i} has role {role!r}; use system, user or assistant"
        if not isinstance(content, str):
            return [], f"message {i} ({role}) has no text content"
        if role == "assistant" and not content.strip():
            return [], f"message {i} is an empty assistant reply"
        plain.append({"role": role, "content": content})
    return plain, _check_order([m["role"] for m in plain])


def _check_order(roles: list[str]) -> str | None:
    # Most chat templates insist on this order (some raise an error otherwise), and a
    # trailing user turn would teach nothing.
    first = 1 if roles[0] == "system" else 0
    turns = roles[first:]
    if "system" in turns:
        return "a system message may only come first"
    if not turns:
        return "there is no user message and no assistant reply"
    for i, role in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return (f"message {first + i + 1} is {role}, expected {expected} "
                    "(user and assistant take turns, user first)")
    if turns[-1] != "assistant":
        return "the conversation must end with an assistant reply (that is what is learned)"
    return None


def parse_examples(text: str) -> list[Example]:
    """Check JSONL text; raise DataError listing every bad line."""
    examples: list[Example] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg}, column {exc.colno})")
            continue
        messages, problem = _check_messages(value)
        if problem:
            problems.append(f"line {number}: {problem}")
        else:
            examples.append(Example(number, tuple(messages)))
    if problems:
        shown = "\n".join(problems[:_MAX_SHOWN])
        more = len(problems) - _MAX_SHOWN
        if more > 0:
            shown += f"\n… and {more} more"
        noun = "line" if len(problems) == 1 else "lines"
        raise DataError(f"{len(problems)} {noun} of the training data cannot be used:\n{shown}",
                        _FORMAT_HINT, problems)
    if not examples:
        raise DataError("The training data holds no examples.", _FORMAT_HINT)
    return examples


def read_examples(path: str | os.PathLike[str]) -> list[Example]:
    """parse_examples on a file, with file problems as DataError too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # tolerate a BOM from Windows editors
    except FileNotFoundError:
        raise DataError(f"The training data {p} does not exist.",
                        "Choose a .jsonl file.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{p.name} is not UTF-8 text (byte {exc.start}).",
                        "Save it as UTF-8 JSONL.") from None
    except OSError as exc:
        raise DataError(f"Cannot read {p.name}: {exc.strerror}.", "Choose another file.") from None
    return parse_examples(text)


# ---------------------------------------------------------------- tokens and labels


@dataclass(frozen=True)
class PromptFormat:
    """How the engine turns messages into tokens (see EngineWorker._build_prompt)."""

    template: ResolvedTemplate
    encode: Callable[[str], list[int]]  # text with special tokens parsed, no BOS added
    bos_text: str = ""
    eos_text: str = ""
    bos_id: int | None = None  # set when the model adds BOS (tokenizer.ggml.add_bos_token)

    def render(self, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
        return render_prompt(self.template, list(messages), bos_token=self.bos_text,
                             eos_token=self.eos_text, add_generation_prompt=generation_prompt)


Sequence_ = tuple[list[int], list[int]]  # token ids, labels (IGNORE where not learned)


def encode_example(example: Example, fmt: PromptFormat) -> list[Sequence_]:
    """Token ids and labels for one conversation: each assistant reply is learned (up to
    and including the template's end-of-turn text), everything else is context.

    Normally one sequence; a template that renders past turns differently once the
    conversation goes on (some drop earlier reasoning) gives one sequence per reply.
    """
    sequences: list[Sequence_] = []
    ids: list[int] = []
    labels: list[int] = []
    done = ""  # the text `ids` holds
    messages = list(example.messages)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        try:
            prompt = fmt.render(messages[:i], True)
            full = fmt.render(messages[: i + 1], False)
        except TemplateError as exc:
            raise DataError(f"line {example.line}: {exc}",
                            "Check the conversation, or train with another chat template.",
                            [f"line {example.line}: {exc}"]) from None
        if not full.startswith(prompt):
            raise DataError(
                f"line {example.line}: the chat template does not render reply {i + 1} after "
                "its prompt, so the reply cannot be told apart from the prompt.",
                "Train with another chat template.")
        if not (done and prompt.startswith(done)):
            if ids:
                sequences.append((ids, labels))
            ids, labels, done = [], [], ""
            if fmt.bos_id is not None:
                ids, labels = [fmt.bos_id], [IGNORE]
        context = fmt.encode(prompt[len(done):])
        if fmt.bos_id is not None and len(ids) == 1 and context[:1] == [fmt.bos_id]:
            context = context[1:]  # the template wrote BOS itself: not twice (as the engine)
        # The reply is tokenized on its own, as the model generates it after the prompt.
        reply = fmt.encode(full[len(prompt):])
        ids += context + reply
        labels += [IGNORE] * len(context) + reply
        done = full
    if ids:
        sequences.append((ids, labels))
    return sequences


def encode_examples(examples: Sequence[Example], fmt: PromptFormat,
                    max_length: int) -> tuple[list[Sequence_], int]:
    """All sequences, cut to max_length tokens; (sequences, how many were cut). Raises
    DataError when none keeps a learned token."""
    out: list[Sequence_] = []
    cut = 0
    for example in examples:
        for ids, labels in encode_example(example, fmt):
            if len(ids) > max_length:
                cut += 1
                ids, labels = ids[:max_length], labels[:max_length]
            # At least one learned token after the first (the first is never predicted).
            if any(label != IGNORE for label in labels[1:]):
                out.append((ids, labels))
    if not out:
        raise DataError(f"No reply fits in {max_length} tokens.",
                        "Raise the maximum length or shorten the examples.")
    return out, cut
