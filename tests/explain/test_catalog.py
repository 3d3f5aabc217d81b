"""The concept catalog: every concept exists, parses and links; knobs resolve; the
bodies are written fresh rather than lifted from the study notes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.chat.knobs import KNOBS
from workbench.explain.catalog import Catalog, CatalogError, link_concepts

IDS = (
    "tokenization", "embeddings", "self-attention", "multi-head-attention", "causal-mask",
    "positional-encodings", "layernorm", "transformer-variants", "next-token-prediction",
    "perplexity", "greedy-decoding", "beam-search", "temperature", "top-k", "top-p", "min-p",
    "typical-p", "repetition-penalty", "mirostat", "seeds-and-determinism", "context-window",
    "kv-cache", "quantization", "gpu-offload", "flash-attention", "grouped-query-attention",
    "sliding-window-attention", "mixture-of-experts", "scaling-laws", "lora", "qlora", "sft",
    "rlhf", "dpo", "chat-templates", "hallucination", "prompt-injection", "batching",
)
APP_KNOBS = {
    "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
    "presence_penalty", "frequency_penalty", "mirostat_mode", "mirostat_tau", "mirostat_eta",
    "seed", "max_tokens", "stop", "n_ctx", "n_gpu_layers", "n_batch", "flash_attn", "type_k",
    "type_v", "chat_template",
}


def _seeds_dir() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "seeds"
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.mark.parametrize("concept_id", IDS)
def test_every_concept_exists_and_is_well_formed(catalog: Catalog, concept_id: str) -> None:
    concept = catalog.get(concept_id)
    assert concept.id == concept_id
    assert concept.title
    assert 0 < len(concept.summary) < 120, concept.summary
    words = len(concept.body.split())
    assert 120 <= words <= 350, f"{concept_id}: {words} words"
    assert concept.sources
    for key in concept.knobs:
        assert key in APP_KNOBS, f"{concept_id}: unknown knob {key}"


def test_no_extra_concepts(catalog: Catalog) -> None:
    assert {c.id for c in catalog.all()} == set(IDS)


def test_related_ids_resolve_and_are_not_self(catalog: Catalog) -> None:
    for concept in catalog.all():
        assert concept.related, concept.id
        for other in concept.related:
            assert other in catalog, f"{concept.id} -> {other}"
            assert other != concept.id


def test_body_links_resolve(catalog: Catalog) -> None:
    for concept in catalog.all():
        for target in re.findall(r"\[\[([^\]]+)\]\]", concept.body):
            assert target in catalog, f"{concept.id}: [[{target}]]"


def test_every_app_knob_has_a_concept(catalog: Catalog) -> None:
    for knob in KNOBS:
        assert knob.concept in catalog, knob.concept
        assert catalog.for_knob(knob.key) is not None, knob.key
    for key in APP_KNOBS:
        assert catalog.for_knob(key) is not None, key
    assert catalog.for_knob("temperature").id == "temperature"
    assert catalog.for_knob("repeat_last_n").id == "repetition-penalty"
    assert catalog.for_knob("no_such_knob") is None


def test_get_unknown_raises(catalog: Catalog) -> None:
    with pytest.raises(KeyError):
        catalog.get("no-such-concept")


def test_all_is_sorted_by_title(catalog: Catalog) -> None:
    titles = [c.title.lower() for c in catalog.all()]
    assert titles == sorted(titles)


def test_search_ranks_title_hit_first(catalog: Catalog) -> None:
    hits = catalog.search("temperature")
    assert hits[0].id == "temperature"
    assert len(hits) > 1  # other concepts mention temperature in summary or body
    hits = catalog.search("KV CACHE")
    assert hits[0].id == "kv-cache"
    assert catalog.search("") == catalog.all()
    assert catalog.search("zzzz-not-there") == []


def test_search_orders_summary_before_body(catalog: Catalog) -> None:
    hits = catalog.search("logits")
    ranks = []
    for c in hits:
        if "logits" in c.title.lower():
            ranks.append(0)
        elif "logits" in c.summary.lower():
            ranks.append(1)
        else:
            ranks.append(2)
    assert ranks == sorted(ranks)


def test_backlinks(catalog: Catalog) -> None:
    back = {c.id for c in catalog.backlinks("temperature")}
    assert "top-p" in back
    assert "temperature" not in back
    for concept in catalog.all():
        for other in concept.related:
            assert concept in catalog.backlinks(other)


def test_links_converted(catalog: Catalog) -> None:
    text = "See [[top-p]] and [[kv-cache]], not [[nope]]."
    out = link_concepts(text, catalog)
    assert "[Top-p (nucleus sampling)](concept:top-p)" in out or "(concept:top-p)" in out
    assert f"[{catalog.get('kv-cache').title}](concept:kv-cache)" in out
    assert "[[nope]]" in out
    assert catalog.link_concepts("[[min-p]]") == f"[{catalog.get('min-p').title}](concept:min-p)"
    assert link_concepts("[[temperature]]") == "[Temperature](concept:temperature)"


def test_summaries_and_bodies_are_original() -> None:
    seeds = _seeds_dir()
    if seeds is None:
        pytest.skip("study notes (../shared/seeds) not present")
    n = 10
    seen: set[tuple[str, ...]] = set()
    for path in sorted(seeds.glob("*.txt")):
        words = _words(path.read_text(encoding="utf-8", errors="replace"))
        seen.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    assert seen
    problems = []
    for concept in Catalog.load().all():
        for field in (concept.body, concept.summary):
            words = _words(field)
            for i in range(len(words) - n + 1):
                if tuple(words[i : i + n]) in seen:
                    problems.append(f"{concept.id}: {' '.join(words[i : i + n])}")
    assert not problems, problems


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = "---\ntitle: Alpha\nsummary: First.\nrelated: beta\nknobs: temperature\n---\nAlpha body.\n"


def test_loads_a_small_folder(tmp_path: Path) -> None:
    _write(tmp_path, "alpha.md", GOOD)
    _write(tmp_path, "beta.md", "---\ntitle: Beta\nsummary: Second, mentions alpha.\n"
           "formula: y = x\nsources: a; b\n---\nBeta body.\n")
    cat = Catalog.load(tmp_path)
    assert [c.id for c in cat.all()] == ["alpha", "beta"]
    beta = cat.get("beta")
    assert beta.formula == "y = x" and beta.sources == ("a", "b") and beta.related == ()
    assert cat.get("alpha").formula is None
    assert [c.id for c in cat.search("alpha")] == ["alpha", "beta"]
    assert [c.id for c in cat.backlinks("beta")] == ["alpha"]
    assert cat.for_knob("temperature").id == "alpha"


@pytest.mark.parametrize(
    "text",
    [
        "title: No front matter\n",
        "---\ntitle: Unclosed\nsummary: x\nbody\n",
        "---\ntitle: X\n---\nNo summary.\n",
        "---\ntitle: X\nsummary: y\nnonsense line\n---\nbody\n",
        "---\ntitle: X\nsummary: y\ncolour: red\n---\nbody\n",
        "---\ntitle: X\nsummary: y\n---\n\n",
        "---\ntitle: X\nsummary: y\nrelated: missing-one\n---\nbody\n",
    ],
)
def test_malformed_file_names_itself(tmp_path: Path, text: str) -> None:
    _write(tmp_path, "alpha.md", GOOD.replace("related: beta\n", ""))
    bad = _write(tmp_path, "broken-one.md", text)
    with pytest.raises(CatalogError) as info:
        Catalog.load(tmp_path)
    assert str(bad) in str(info.value)
