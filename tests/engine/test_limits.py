"""Every Sampling and LoadSpec field has its valid range in one place (engine/limits.py);
the engines refuse a request outside it, naming the field, the value and the range."""

from __future__ import annotations

import math
import queue
from dataclasses import fields, replace
from pathlib import Path

import pytest

from workbench.chat.knobs import KNOBS, PRESETS
from workbench.engine.blocking import BlockingEngine, EngineFailure
from workbench.engine.limits import (
    LOAD_LIMITS,
    SAMPLING_LIMITS,
    Limit,
    load_problems,
    sampling_problems,
)
from workbench.engine.protocol import (
    ChatMessage,
    EngineError,
    Event,
    LoadSpec,
    Sampling,
)
from workbench.engine.remote import RemoteEngine

ASK = [ChatMessage("user", "Say hi.")]
SHORT = Sampling(temperature=0.0, max_tokens=8, seed=1)

OUT_OF_RANGE_SAMPLING = [
    ("temperature", -1.0), ("temperature", math.nan), ("temperature", 2.5),
    ("top_k", -5), ("top_k", 2.5), ("top_p", 1.5), ("min_p", -0.1), ("typical_p", 2.0),
    ("repeat_penalty", 0.0), ("repeat_last_n", -1), ("presence_penalty", 3.0),
    ("frequency_penalty", -2.5), ("mirostat_mode", 3), ("mirostat_mode", True),
    ("mirostat_tau", -1.0), ("mirostat_eta", 1.5), ("seed", -1), ("seed", 2**31),
    ("max_tokens", 0), ("temperature", "hot"),
]
OUT_OF_RANGE_LOAD = [
    ("n_ctx", 0), ("n_ctx", 1 << 25), ("n_gpu_layers", -2), ("n_threads", 0),
    ("n_batch", 0), ("n_ubatch", 1 << 17), ("flash_attn", 1), ("type_k", "q2_k"),
    ("type_v", "f32"),
]


def test_every_field_has_a_range_and_the_defaults_are_in_it() -> None:
    assert set(SAMPLING_LIMITS) == {f.name for f in fields(Sampling)} - {"stop"}
    assert set(LOAD_LIMITS) == {f.name for f in fields(LoadSpec)} - {
        "model_path", "chat_template"}  # checked as a path and as text
    assert sampling_problems(Sampling()) == []
    assert load_problems(LoadSpec("model.gguf")) == []
    for preset in PRESETS.values():
        assert sampling_problems(preset) == []


def test_the_knobs_take_their_ranges_from_the_limits() -> None:
    for knob in KNOBS:
        limit = SAMPLING_LIMITS[knob.key]
        assert (knob.minimum, knob.maximum) == ((min(limit.choices), max(limit.choices))
                                                if limit.choices
                                                else (limit.minimum, limit.maximum))


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE_SAMPLING)
def test_out_of_range_sampling_is_named_with_its_range(name: str, value: object) -> None:
    problems = sampling_problems(replace(Sampling(), **{name: value}))
    assert [p.name for p in problems] == [name]
    text = str(problems[0])
    assert name in text and repr(value) in text and SAMPLING_LIMITS[name].describe() in text


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE_LOAD)
def test_out_of_range_load_settings_are_named(name: str, value: object) -> None:
    problems = load_problems(replace(LoadSpec("m.gguf", flash_attn=True), **{name: value}))
    assert [p.name for p in problems] == [name]
    assert LOAD_LIMITS[name].describe() in str(problems[0])


def test_out_of_range_pairs_and_paths_are_named() -> None:
    # llama.cpp cannot create a context with a quantized V cache and no flash attention.
    problems = load_problems(LoadSpec("m.gguf", type_v="q8_0", flash_attn=False))
    assert [p.name for p in problems] == ["type_v"] and "flash_attn" in str(problems[0])
    assert load_problems(LoadSpec("m.gguf", type_v="q8_0", flash_attn=True)) == []
    assert [p.name for p in load_problems(LoadSpec(""))] == ["model_path"]
    assert [p.name for p in sampling_problems(Sampling(stop=tuple("abcdefghijklmnopq")))] \
        == ["stop"]


def test_empty_stop_strings_are_dropped() -> None:
    assert Sampling(stop=("", "END", "")).stop == ("END",)
    assert Sampling(stop=["a", ""]).stop == ("a",)  # type: ignore[arg-type]
    assert Sampling.from_dict({"stop": ["", "x"]}).stop == ("x",)


def test_out_of_range_values_clamp_to_the_nearest_end() -> None:
    assert Limit(0.0, 2.0).clamp(-1.0, 0.7) == 0.0
    assert Limit(0.0, 2.0).clamp(9, 0.7) == 2.0
    assert Limit(0.0, 2.0).clamp(math.nan, 0.7) == 0.7
    assert Limit(1, 10, integer=True).clamp(3.6, 5) == 4
    assert Limit(choices=(0, 1, 2)).clamp(7, 0) == 0
    assert Limit(0, 5, integer=True, optional=True).clamp(None, 3) is None


@pytest.mark.engine
def test_the_engine_refuses_invalid_sampling_and_goes_on(engine: BlockingEngine) -> None:
    with pytest.raises(EngineFailure) as caught:
        engine.chat(ASK, replace(SHORT, temperature=-1.0))
    event = caught.value.event
    assert isinstance(event, EngineError) and event.kind == "invalid_sampling"
    assert "temperature = -1.0" in event.message and "0 to 2" in event.message
    with pytest.raises(EngineFailure) as caught:  # the next-token view refuses it too
        engine.distribution(ASK, replace(SHORT, top_p=7.0))
    assert caught.value.event.kind == "invalid_sampling"
    assert "top_p" in caught.value.event.message
    assert engine.chat(ASK, SHORT).done.text  # nothing broke


@pytest.mark.engine
def test_the_engine_refuses_an_invalid_load_and_keeps_its_model(
        engine: BlockingEngine, builtin_model: Path) -> None:
    for spec, says in ((LoadSpec(str(builtin_model), n_ctx=0), "n_ctx = 0"),
                       (LoadSpec(str(builtin_model), type_v="q4_0", flash_attn=False),
                        "type_v = 'q4_0'")):
        with pytest.raises(EngineFailure) as caught:
            engine.load(spec)
        event = caught.value.event
        assert isinstance(event, EngineError) and event.kind == "invalid_load"
        assert says in event.message
        assert event.still_loaded is not None and event.still_loaded.path == str(builtin_model)
    assert engine.chat(ASK, SHORT).done.text


def test_a_remote_engine_refuses_invalid_sampling_before_sending() -> None:
    events: queue.Queue[Event] = queue.Queue()
    # Port 9 (discard) is closed here: a request that reached the network would fail with
    # a connection error, not this.
    remote = RemoteEngine(events.put, "http://127.0.0.1:9/v1")
    try:
        rid = remote.chat(ASK, replace(SHORT, min_p=-0.5))
        event = events.get(timeout=10)
    finally:
        remote.close()
    assert isinstance(event, EngineError) and event.request_id == rid
    assert event.kind == "invalid_sampling" and "min_p = -0.5" in event.message
