"""The compare view's core: what differs, where two replies part, the numbers shown."""

from __future__ import annotations

from workbench.chat.compare import (
    ColumnStats,
    CompareSetup,
    Variant,
    first_divergence,
)
from workbench.engine.protocol import ChatDone, Sampling, Timings


def _setup(a: Sampling, b: Sampling, path_b: str = "/m/a.gguf") -> CompareSetup:
    return CompareSetup("Hi", 7, Variant("A", "/m/a.gguf", a), Variant("B", path_b, b))


def test_differences_name_the_changed_knobs_and_never_the_seed() -> None:
    setup = _setup(Sampling(temperature=0.0, seed=1), Sampling(temperature=1.0, seed=99))
    assert setup.differences() == ["Temperature 0 → 1"]
    assert setup.sampling_for(setup.a).seed == setup.sampling_for(setup.b).seed == 7
    assert _setup(Sampling(), Sampling()).differences() == []
    model = _setup(Sampling(), Sampling(), path_b="/m/b.Q4_0.gguf").differences()
    assert model == ["model: a.gguf → b.Q4_0.gguf"]


def test_problem_names_what_is_missing() -> None:
    assert _setup(Sampling(), Sampling()).problem() is None
    empty = CompareSetup("  ", 1, Variant("A", "/m", Sampling()), Variant("B", "/m", Sampling()))
    assert "prompt" in (empty.problem() or "")
    no_model = CompareSetup("x", 1, Variant("A", "/m", Sampling()), Variant("B", "", Sampling()))
    assert "column B" in (no_model.problem() or "")


def test_messages_carry_the_system_prompt_when_given() -> None:
    setup = CompareSetup("Q", 1, Variant("A", "/m", Sampling()), Variant("B", "/m", Sampling()),
                         system_prompt="Be brief.")
    assert [(m.role, m.content) for m in setup.messages()] == [("system", "Be brief."),
                                                               ("user", "Q")]


def test_first_divergence_by_text_and_by_token() -> None:
    same = first_divergence("The sea.", "The sea.", (1, 2, 3), (1, 2, 3))
    assert same.identical and same.char_index == 8 and same.token_index == 3
    # Tokens part at index 1 (" th" vs " the") though the text agrees for 6 characters.
    d = first_divergence("The them", "The thin", (10, 11, 12), (10, 13, 14))
    assert not d.identical and d.char_index == 6 and d.token_index == 1
    assert "1 tokens (6 characters)" in d.summary("The them", "The thin")
    assert "“em”" in d.summary("The them", "The thin")
    prefix = first_divergence("abc", "abcdef")
    assert not prefix.identical and prefix.char_index == 3 and prefix.token_index is None
    assert "(ends there)" in prefix.summary("abc", "abcdef")
    first = first_divergence("x", "y", (1,), (2,))
    assert first.summary("x", "y").startswith("The replies differ from the first token")


def test_column_stats_line() -> None:
    t = Timings(n_prompt_tokens=10, n_evaluated_prompt_tokens=10, n_generated_tokens=11,
                ttft_s=0.25, prompt_eval_s=0.25, generation_s=0.5, n_ctx_used=21)
    line = ColumnStats.from_done(ChatDone(1, "length", "x", t)).line()
    assert line == "11 tokens · 20.0 tokens/s · first token after 250 ms · hit the token limit"


def test_adapter_differences_ignore_switched_off_entries() -> None:
    from workbench.engine.protocol import AdapterSetting

    on = (AdapterSetting("/a/marker.gguf", 1.0),)
    off = (AdapterSetting("/a/marker.gguf", 0.0),)
    base = Variant("A", "/m", Sampling(), adapters=())
    setup = CompareSetup("Q", 1, base, Variant("B", "/m", Sampling(), adapters=on))
    assert setup.differences() == ["adapters: none → marker × 1"]
    same = CompareSetup("Q", 1, base, Variant("B", "/m", Sampling(), adapters=off))
    assert same.differences() == []
