from workbench.engine.generation import GenerationResult, find_stop, holdback


def test_holdback_keeps_back_a_possible_stop_prefix() -> None:
    assert holdback("Hello <|im", ["<|im_end|>"]) == 4
    assert holdback("Hello", ["<|im_end|>"]) == 0
    assert holdback("the end.\n", ["\n\n", "END"]) == 1
    assert holdback("", ["abc"]) == 0


def test_find_stop_earliest() -> None:
    assert find_stop("a STOP b END", ["END", "STOP"], 0) == 2
    assert find_stop("nothing here", ["END"], 0) == -1
    assert find_stop("END then END", ["END"], 1) == 9


def test_timings_when_the_first_token_ends_the_reply() -> None:
    # End of turn sampled first: one token time stamp, nothing generated.
    t = GenerationResult("", "stop", 0, first_token_at=10.5, last_token_at=None).timings(
        received=10.0, n_prompt=40, n_cached=30, n_ctx_used=40)
    assert (t.ttft_s, t.generation_s, t.tokens_per_s) == (0.5, 0.0, 0.0)
    assert t.n_evaluated_prompt_tokens == 10
    # Cancelled before any token: no time to first token at all.
    t = GenerationResult("", "cancelled", 0, None, None).timings(10.0, 40, 0, 0, now=10.2)
    assert t.ttft_s == 0.0 and abs(t.prompt_eval_s - 0.2) < 1e-9 and t.generation_s == 0.0
    t = GenerationResult("ab", "length", 3, 1.0, 2.0).timings(0.5, 5, 0, 8)
    assert t.tokens_per_s == 2.0 and t.ttft_s == 0.5
