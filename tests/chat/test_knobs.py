from dataclasses import fields

from workbench.chat.knobs import KNOBS, PRESETS, apply_preset
from workbench.engine.protocol import Sampling


def test_every_knob_is_a_sampling_field_with_a_tooltip_and_concept() -> None:
    names = {f.name for f in fields(Sampling)}
    for knob in KNOBS:
        assert knob.key in names
        assert knob.tooltip.endswith(".") and knob.concept
        assert knob.minimum <= getattr(Sampling(), knob.key) <= knob.maximum


def test_presets_keep_seed_length_and_stops() -> None:
    base = Sampling(seed=7, max_tokens=99, stop=("X",))
    precise = apply_preset("Precise", base, {})
    assert precise.temperature == 0.0 and (precise.seed, precise.max_tokens, precise.stop) == (
        7, 99, ("X",))
    mine = apply_preset("Mine", base, {"Mine": Sampling(top_k=3).to_dict()})
    assert mine.top_k == 3 and mine.seed == 7
    assert set(PRESETS) == {"Precise", "Balanced", "Creative"}
