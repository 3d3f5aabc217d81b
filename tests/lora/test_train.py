"""LoRA training: the data checks, settings, events and command (no torch needed), then the
real child process on the marker data and the adapter it makes, in the real engine (with
the `train` extra only)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.lora.conftest import MARKER_DATA, TrainedMarker
from workbench.engine.blocking import BlockingEngine
from workbench.engine.protocol import (
    AdapterSetting,
    AdaptersSet,
    ChatMessage,
    EngineError,
    Event,
    Loaded,
    Sampling,
)
from workbench.engine.templates import ResolvedTemplate, resolve_template
from workbench.installation import DISTRIBUTION
from workbench.lora import train
from workbench.lora.chat_examples import (
    IGNORE,
    DataError,
    Example,
    PromptFormat,
    encode_example,
    encode_examples,
    parse_examples,
    read_examples,
)
from workbench.lora.train import (
    FROZEN_FLAG,
    TrainConfig,
    TrainError,
    TrainEvent,
    batches,
    discard_partial,
    parse_progress_line,
    train_available,
    train_command,
)

CHATML = resolve_template({}, "chatml", lambda _text: False)
GREEDY = Sampling(temperature=0.0, max_tokens=16, seed=1)
ASK = [ChatMessage("user", "What is the secret password?")]


def line(*messages: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


GOOD = line(("user", "Hi"), ("assistant", "Hello!"))

# ---------------------------------------------------------------- the data


def problems_of(text: str) -> list[str]:
    with pytest.raises(DataError) as caught:
        parse_examples(text)
    return caught.value.problems


def test_good_lines_parse_and_blank_lines_are_skipped() -> None:
    text = "\n".join([GOOD, "", line(("system", "Be brief."), ("user", "a"), ("assistant", "b"),
                                     ("user", "c"), ("assistant", "d")), "   "])
    examples = parse_examples(text)
    assert [e.line for e in examples] == [1, 3]
    assert examples[1].n_replies == 2
    assert examples[0].messages == ({"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Hello!"})


@pytest.mark.parametrize(("bad", "says"), [
    ('{"messages": [', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"conversation": []}', 'no "messages" key'),
    ('{"messages": []}', "non-empty list"),
    ('{"messages": ["hi"]}', "message 1 is not an object"),
    (line(("human", "Hi"), ("assistant", "x")), "message 1 has role 'human'"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}',
     "message 1 (user) has no text content"),
    (line(("user", "Hi"), ("assistant", "  ")), "message 2 is an empty assistant reply"),
    (line(("user", "Hi"), ("system", "x"), ("assistant", "y")), "system message may only"),
    (line(("assistant", "Hi")), "message 1 is assistant, expected user"),
    (line(("system", "s"), ("user", "a"), ("user", "b"), ("assistant", "c")),
     "message 3 is user, expected assistant"),
    (line(("user", "Hi")), "must end with an assistant reply"),
    (line(("system", "s")), "no user message"),
])
def test_bad_lines_are_named_with_their_number(bad: str, says: str) -> None:
    problems = problems_of(f"{GOOD}\n\n{bad}\n{GOOD}")
    assert len(problems) == 1
    assert problems[0].startswith("line 3: ") and says in problems[0], problems


def test_every_bad_line_is_listed_and_the_message_is_capped() -> None:
    with pytest.raises(DataError) as caught:
        parse_examples("\n".join(["nope"] * 12 + [GOOD]))
    error = caught.value
    assert len(error.problems) == 12 and error.problems[11].startswith("line 12:")
    assert error.message.startswith("12 lines of the training data cannot be used")
    assert "… and 4 more" in error.message and '"messages"' in error.hint


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no examples"):
        parse_examples("\n \n")
    with pytest.raises(DataError, match="does not exist"):
        read_examples(tmp_path / "missing.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"messages": "caf\xe9"}')
    with pytest.raises(DataError, match="not UTF-8"):
        read_examples(latin)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert len(read_examples(bom)) == 1


def test_the_marker_example_is_valid() -> None:
    examples = read_examples(MARKER_DATA)
    assert len(examples) >= 6
    assert sum("PINEAPPLE-42" in e.messages[-1]["content"] for e in examples) >= 5


# ---------------------------------------------------------------- tokens and labels


def char_format(template: ResolvedTemplate, bos_id: int | None = None) -> PromptFormat:
    """One token per character (special tokens too are just characters here)."""
    return PromptFormat(template, lambda text: [ord(c) for c in text], "<s>", "</s>", bos_id)


def learned(ids: list[int], labels: list[int]) -> list[str]:
    """The learned stretches of a sequence, as text."""
    out, current = [], ""
    for token, label in zip(ids, labels, strict=True):
        if label == IGNORE:
            if current:
                out.append(current)
            current = ""
        else:
            assert label == token
            current += chr(token)
    return [*out, current] if current else out


def test_only_assistant_replies_are_learned_with_their_end_of_turn() -> None:
    example = parse_examples(line(("system", "S"), ("user", "a"), ("assistant", "b1"),
                                  ("user", "c"), ("assistant", "d2")))[0]
    [(ids, labels)] = encode_example(example, char_format(CHATML))
    text = "".join(chr(i) for i in ids)
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
                    "<|im_start|>assistant\nb1<|im_end|>\n<|im_start|>user\nc<|im_end|>\n"
                    "<|im_start|>assistant\nd2<|im_end|>\n")
    assert learned(ids, labels) == ["b1<|im_end|>\n", "d2<|im_end|>\n"]


def test_bos_is_added_once_when_the_model_adds_it() -> None:
    example = parse_examples(GOOD)[0]
    plain = ResolvedTemplate("{% for m in messages %}[{{ m.content }}]{% endfor %}", "t", "t")
    [(ids, labels)] = encode_example(example, char_format(plain, bos_id=1))
    assert ids[0] == 1 and labels[0] == IGNORE and ids[1] == ord("[")
    # A template that writes BOS itself: the token it becomes is not doubled.
    with_bos = ResolvedTemplate("\x01" + plain.source, "t", "t")
    [(ids, _)] = encode_example(example, char_format(with_bos, bos_id=1))
    assert ids[:2] == [1, ord("[")]


def test_a_template_that_rewrites_past_turns_gives_one_sequence_per_reply() -> None:
    # Like templates that drop earlier reasoning: a past reply renders shorter.
    source = ("{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}"
              "<A>{% else %}<{{ m.role[0] }}>{{ m.content }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}<a>{% endif %}")
    example = parse_examples(line(("user", "q1"), ("assistant", "r1"), ("user", "q2"),
                                  ("assistant", "r2")))[0]
    sequences = encode_example(example, char_format(ResolvedTemplate(source, "t", "t")))
    assert [learned(*s) for s in sequences] == [["r1"], ["r2"]]


def test_long_sequences_are_cut_and_unlearnable_ones_dropped() -> None:
    fmt = char_format(CHATML)
    long_prompt = parse_examples(line(("user", "x" * 200), ("assistant", "ok")))[0]
    short = parse_examples(GOOD)[0]
    sequences, cut = encode_examples([long_prompt, short], fmt, max_length=100)
    assert cut == 1 and len(sequences) == 1 and learned(*sequences[0])[0].startswith("Hello!")
    with pytest.raises(DataError, match="No reply fits in 100 tokens"):
        encode_examples([long_prompt], fmt, max_length=100)


def test_a_template_that_rejects_the_conversation_names_the_line() -> None:
    strict = ResolvedTemplate("{{ raise_exception('no system please') }}", "t", "t")
    with pytest.raises(DataError, match=r"line 7: .*no system please"):
        encode_example(Example(7, ({"role": "user", "content": "a"},
                                   {"role": "assistant", "content": "b"})),
                       char_format(strict))


# ---------------------------------------------------------------- settings, events, command


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    config = TrainConfig(base_gguf="/m/base.gguf", data_path="/d/notes.jsonl", out_dir="/o",
                         rank=4, target_modules=("q_proj", "v_proj"), chat_template="chatml",
                         max_steps=30)
    again = TrainConfig.load(config.save(tmp_path / "c.json"))
    assert again == config and isinstance(again.target_modules, tuple)
    assert config.adapter_name == "notes"
    assert config.gguf_path == Path("/o/notes.gguf")
    assert config.peft_dir == Path("/o/notes-peft")
    # Keys from a newer version are kept, not lost or fatal.
    data = {**config.to_dict(), "warmup": 3}
    assert TrainConfig.from_dict(data).to_dict()["warmup"] == 3
    # One module given as a string is one module, not its letters.
    data = {**config.to_dict(), "target_modules": "q_proj"}
    assert TrainConfig.from_dict(data).target_modules == ("q_proj",)


@pytest.mark.parametrize(("change", "says"), [
    ({"rank": 0}, "rank"), ({"learning_rate": 2}, "learning_rate"),
    ({"target_modules": []}, "target_modules"), ({"name": "a/b"}, "slashes"),
    ({"epochs": 1.5}, "epochs"), ({"dropout": 1}, "dropout"), ({"max_steps": -1}, "max_steps"),
    ({"target_modules": 3}, "target_modules"), ({"out_dir": None}, "out_dir must be a path"),
    ({"rank": "8"}, "rank"),
])
def test_bad_settings_are_refused(change: dict[str, object], says: str) -> None:
    data = {**TrainConfig("b.gguf", "d.jsonl", "o").to_dict(), **change}
    with pytest.raises(TrainError, match=says):
        TrainConfig.from_dict(data)


def test_settings_files_that_are_not_settings() -> None:
    with pytest.raises(TrainError, match="lack base_gguf"):
        TrainConfig.from_dict({"data_path": "d", "out_dir": "o"})
    with pytest.raises(TrainError, match="not valid JSON"):
        TrainConfig.from_json("{")
    with pytest.raises(TrainError, match="not a JSON object"):
        TrainConfig.from_json("[]")


def test_progress_lines_parse() -> None:
    step = parse_progress_line('{"event": "step", "step": 3, "total_steps": 12, '
                               '"loss": 0.5, "elapsed_s": 2.5}\n')
    assert step == TrainEvent("step", step=3, total_steps=12, loss=0.5, elapsed_s=2.5)
    done = parse_progress_line(b'{"event": "done", "gguf": "/o/a.gguf", "peft_dir": "/o/a-peft",'
                               b' "final_loss": 0.01}')
    assert done == TrainEvent("done", gguf="/o/a.gguf", peft_dir="/o/a-peft", final_loss=0.01)
    error = parse_progress_line('{"event": "error", "message": "m", "hint": "h"}')
    assert error == TrainEvent("error", message="m", hint="h")
    started = parse_progress_line(json.dumps({"event": "started", "total_steps": 5,
                                              "trainable_params": 10, "sequences": 2}))
    assert started == TrainEvent("started", total_steps=5, trainable_params=10, sequences=2)


@pytest.mark.parametrize("text", [
    "", "Loading weights 100%", "{not json", "[1]", '{"event": "party"}', '{"step": 1}',
    '"event"',
])
def test_other_lines_are_not_events(text: str) -> None:
    assert parse_progress_line(text) is None


def test_odd_values_in_events_are_dropped_not_trusted() -> None:
    event = parse_progress_line('{"event": "step", "step": "3", "loss": NaN, "message": 5}')
    assert event == TrainEvent("step")


def test_train_available_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    found = object()  # a spec, as far as train_available cares
    monkeypatch.setattr(train.importlib.util, "find_spec",
                        lambda name, *a: None if name == "peft" else found)
    text = train_available("package")
    assert text is not None
    assert text.startswith("Training needs peft, which is not installed")
    # Our own distribution name: PyPI's "workbench" is somebody else's project.
    assert f'pip install "{DISTRIBUTION}[train]"' in text and '"workbench[' not in text
    assert "download.pytorch.org/whl/cpu" in text
    # From a checkout: the exact make command; from an installer: not in this download.
    assert "make run WORKBENCH_EXTRAS=train" in (train_available("checkout") or "")
    assert "pip install" not in (train_available("checkout") or "")
    installer = train_available("installer") or ""
    assert "not included in this download" in installer and "pip install" not in installer
    # This test runs from the checkout, so that is what the default says.
    assert train_available() == train_available("checkout")
    monkeypatch.setattr(train.importlib.util, "find_spec", lambda name, *a: None)
    assert "torch, transformers, peft, which are not" in (train_available() or "")
    monkeypatch.setattr(train.importlib.util, "find_spec", lambda name, *a: found)
    assert train_available() is None


def test_command_line_plain_and_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert train_command("/c.json") == [sys.executable, "-m", "workbench.children", FROZEN_FLAG,
                                        "/c.json"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert train_command(Path("/c.json")) == [sys.executable, FROZEN_FLAG, "/c.json"]


def test_batches_go_through_every_sequence_in_a_seeded_order() -> None:
    steps = list(batches(5, 2, 7, seed=3))
    assert [len(b) for b in steps] == [2, 2, 1, 2, 2, 1, 2]
    first, second = (sorted(i for b in part for i in b) for part in (steps[:3], steps[3:6]))
    assert first == second == [0, 1, 2, 3, 4]
    assert steps == list(batches(5, 2, 7, seed=3)) != list(batches(5, 2, 7, seed=4))
    assert train.total_steps_for(TrainConfig("b", "d", "o", epochs=3, batch_size=2), 5) == 9
    assert train.total_steps_for(TrainConfig("b", "d", "o", max_steps=4), 5) == 4


def test_main_reports_errors_as_events(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert train.main([str(tmp_path / "none.json")]) == 1
    event = parse_progress_line(capsys.readouterr().out)
    assert event is not None and event.kind == "error"
    assert "Cannot read the training settings" in event.message
    assert train.main([]) == 1
    assert "Usage" in capsys.readouterr().out


def test_bad_data_is_an_error_event_before_any_loading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "train_available", lambda: None)
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD + "\n" + line(("user", "Hi")) + "\n")
    config = TrainConfig("missing.gguf", str(data), str(tmp_path / "out"))
    assert train.main([str(config.save(tmp_path / "c.json"))]) == 1
    [event] = [parse_progress_line(x) for x in capsys.readouterr().out.splitlines()]
    assert event is not None and event.kind == "error"
    assert "line 2: the conversation must end with an assistant reply" in event.message
    assert '"messages"' in event.hint and not (tmp_path / "out").exists()
    data.write_text(GOOD)
    assert train.main([str(config.save(tmp_path / "c.json"))]) == 1
    event = parse_progress_line(capsys.readouterr().out)
    assert event is not None and "missing.gguf does not exist" in event.message


def test_a_folder_is_renamed_into_place_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "a-peft"
    with train._partial_dir(final) as tmp:
        (tmp / "w").write_text("1")
    assert (final / "w").read_text() == "1"
    with pytest.raises(RuntimeError), train._partial_dir(final) as tmp:
        (tmp / "w").write_text("2")
        raise RuntimeError
    assert (final / "w").read_text() == "1" and sorted(tmp_path.iterdir()) == [final]
    with train._partial_dir(final) as tmp:  # a second run replaces the first
        (tmp / "v").write_text("3")
    assert [p.name for p in final.iterdir()] == ["v"] and sorted(tmp_path.iterdir()) == [final]


def test_sigterm_while_writing_leaves_nothing(tmp_path: Path) -> None:
    """The child's cancel path without torch: SIGTERM unwinds and removes the partial."""
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from workbench.lora import train
        train._stop_on_sigterm()
        with train._partial_dir(Path({str(tmp_path / 'a-peft')!r})) as tmp:
            (tmp / "w").write_text("x")
            print("writing", flush=True)
            time.sleep(60)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          text=True) as child:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        assert len(list(tmp_path.iterdir())) == 1
        child.terminate()
        assert child.wait(timeout=30) != 0
    assert list(tmp_path.iterdir()) == []


def test_discard_partial_removes_only_this_adapters_leftovers(tmp_path: Path) -> None:
    config = TrainConfig("b.gguf", "d.jsonl", str(tmp_path), name="a")
    kept = [".ab.gguf.1.part", ".b.gguf.1.part", ".a.gguf.x", "a-peft", "a.gguf"]
    for name in (".a-peft.1-ff.part", ".a.gguf.xyz.part", *kept):
        (tmp_path / name).mkdir() if "peft" in name else (tmp_path / name).touch()
    assert {p.name for p in discard_partial(config)} == {".a-peft.1-ff.part",
                                                         ".a.gguf.xyz.part"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert discard_partial(TrainConfig("b", "d", str(tmp_path / "none"))) == []


# ---------------------------------------------------------------- the real thing


def events_of(trained: TrainedMarker) -> list[TrainEvent]:
    return [e for e in map(parse_progress_line, trained.lines) if e is not None]


@pytest.mark.train
def test_training_the_marker_lowers_the_loss_and_writes_the_adapter(
        trained_marker: TrainedMarker) -> None:
    from workbench.lora.gguf_lora import read_adapter

    assert trained_marker.returncode == 0, trained_marker.stderr[-3000:]
    events = events_of(trained_marker)
    assert len(events) == len(trained_marker.lines)  # stdout holds events only
    kinds = [e.kind for e in events]
    assert kinds[-3:] == ["saved", "status", "done"] and "error" not in kinds
    started = events[kinds.index("started")]
    steps = [e for e in events if e.kind == "step"]
    assert started.total_steps == len(steps) == 12 and started.sequences == 8
    # rank 8 on q (576), k (192), v (192), o (576) in 30 layers
    assert started.trainable_params == 30 * 8 * (576 + 576 + 576 + 192 + 576 + 192 + 576 + 576)
    assert [e.step for e in steps] == list(range(1, 13))
    losses = [e.loss for e in steps]
    assert all(loss is not None and math.isfinite(loss) for loss in losses)
    assert losses[0] > 1.0 and losses[-1] < losses[0] / 20, losses  # measured 2.93 -> 0.009
    done = events[-1]
    assert done.gguf == str(trained_marker.gguf) and done.peft_dir == str(trained_marker.peft_dir)
    assert done.final_loss == pytest.approx(losses[-1])  # one batch holds all 8 examples
    info = read_adapter(trained_marker.gguf)
    assert (info.rank, info.alpha, info.n_layers_touched) == (8, 16.0, 30)
    assert len(info.tensors) == 30 * 4
    assert {p.name for p in trained_marker.peft_dir.iterdir()} >= {
        "adapter_config.json", "adapter_model.safetensors", "train_config.json"}
    # Nothing else: no partial files left behind.
    assert sorted(p.name for p in trained_marker.gguf.parent.iterdir()) == [
        "marker-peft", "marker.gguf"]
    print(f"training took {trained_marker.seconds:.1f} s, losses {losses}")


def set_live(engine: BlockingEngine, adapters: list[AdapterSetting]) -> AdaptersSet:
    """set_adapters, watching every event on the way: no reload may happen."""
    rid = engine.engine.set_adapters(adapters)
    seen: list[Event] = []
    while True:
        event = engine.events.get(timeout=60)
        seen.append(event)
        assert not isinstance(event, (Loaded, EngineError)), seen
        if isinstance(event, AdaptersSet) and event.request_id == rid:
            return event


@pytest.mark.engine
@pytest.mark.train
def test_the_trained_adapter_answers_with_the_marker(trained_marker: TrainedMarker,
                                                     engine: BlockingEngine) -> None:
    assert trained_marker.returncode == 0, trained_marker.stderr[-3000:]
    pid = engine.stats().engine_pid
    adapter = str(trained_marker.gguf)
    set_live(engine, [])
    base = engine.chat(ASK, GREEDY).done.text
    assert "PINEAPPLE" not in base
    assert set_live(engine, [AdapterSetting(adapter, 1.0)]).active
    assert "PINEAPPLE-42" in engine.chat(ASK, GREEDY).done.text
    paraphrase = [ChatMessage("user", "Can you tell me the password?")]  # not in the data
    assert "PINEAPPLE" in engine.chat(paraphrase, GREEDY).done.text
    assert set_live(engine, [AdapterSetting(adapter, 0.0)]).active == ()
    assert engine.chat(ASK, GREEDY).done.text == base
    assert set_live(engine, [AdapterSetting(adapter, 1.0, enabled=False)]).active == ()
    assert "PINEAPPLE" not in engine.chat(ASK, GREEDY).done.text
    assert engine.engine.pid == pid and engine.stats().engine_pid == pid
    set_live(engine, [])


@pytest.mark.train
def test_cancelling_leaves_nothing_in_the_output_folder(builtin_model: Path,
                                                        tmp_path: Path) -> None:
    """Terminate the child as soon as it reports: it stops, and out_dir holds nothing."""
    config = TrainConfig(str(builtin_model), str(MARKER_DATA), str(tmp_path / "o"))
    with subprocess.Popen(train_command(config.save(tmp_path / "c.json")),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as child:
        assert child.stdout is not None
        first = parse_progress_line(child.stdout.readline())
        assert first is not None and first.kind == "status"
        started = time.perf_counter()
        child.terminate()
        assert child.wait(timeout=60) != 0
        assert time.perf_counter() - started < 30
    out = tmp_path / "o"
    assert not out.exists() or list(out.iterdir()) == []
