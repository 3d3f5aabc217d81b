from workbench.engine.generation import find_stop, holdback


def test_holdback_keeps_back_a_possible_stop_prefix() -> None:
    assert holdback("Hello <|im", ["<|im_end|>"]) == 4
    assert holdback("Hello", ["<|im_end|>"]) == 0
    assert holdback("the end.\n", ["\n\n", "END"]) == 1
    assert holdback("", ["abc"]) == 0


def test_find_stop_earliest() -> None:
    assert find_stop("a STOP b END", ["END", "STOP"], 0) == 2
    assert find_stop("nothing here", ["END"], 0) == -1
    assert find_stop("END then END", ["END"], 1) == 9
