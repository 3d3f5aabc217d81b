"""Browsing the Hub (search, one repository's files, errors) against the loopback Hub, and
the file-name rules for quantizations."""

from __future__ import annotations

import hashlib
import socket

import pytest

from workbench.bench.hub_server import HubServer
from workbench.models.hub import (
    CARD_MAX_BYTES,
    GGUFFile,
    HubError,
    curated_repos,
    group_by_quant,
    nominal_bits_per_weight,
    quant_from_filename,
    repo_details,
    search_gguf,
)

REPO = "bartowski/Tiny-Llama-Instruct-GGUF"
CARD = "---\nlicense: llama3.1\ntags:\n- gguf\n---\n\n# Tiny Llama\n\nQuants of Tiny Llama.\n"
# name -> size: distinct sizes, so every file's bytes (and checksum) differ
FILES = {
    "Tiny-Llama-Instruct-Q4_K_M.gguf": 3000,
    "Tiny-Llama-Instruct-IQ2_XXS.gguf": 1500,
    "Tiny-Llama-Instruct-Q8_0.gguf": 5000,
    "Tiny-Llama-Instruct-Q4_0.gguf": 2900,
    "F16/Tiny-Llama-Instruct-F16-00001-of-00002.gguf": 6000,
    "F16/Tiny-Llama-Instruct-F16-00002-of-00002.gguf": 4000,
    # part 2 of 3 is missing: not offered, llama.cpp could not load it
    "Tiny-Llama-Instruct-BF16-00001-of-00003.gguf": 100,
    "Tiny-Llama-Instruct-BF16-00003-of-00003.gguf": 100,
    "mmproj-Tiny-Llama-f16.gguf": 700,
}


def content(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return b"GGUF" + (seed * (size // len(seed) + 1))[: size - 4]


@pytest.fixture
def repo(hub: HubServer) -> str:
    hub.add_repo(REPO, downloads=500, likes=20, last_modified="2024-06-01T00:00:00.000Z",
                 card_data={"license": "llama3.1", "base_model": "meta/tiny"})
    for name, size in FILES.items():
        hub.add_file(REPO, name, content(name, size))
    hub.add_file(REPO, "README.md", CARD.encode())
    hub.add_file(REPO, "config.json", b"{}")
    return REPO


@pytest.fixture
def listed(hub: HubServer) -> None:
    """Four GGUF repositories (three about llama) and one that is not GGUF."""
    for repo_id, downloads, likes, modified in [
        ("a/llama-small-GGUF", 900, 5, "2023-01-01T00:00:00.000Z"),
        ("b/llama-big-GGUF", 100, 50, "2025-03-01T00:00:00.000Z"),
        ("c/Llama-mid-GGUF", 500, 20, "2024-06-01T00:00:00.000Z"),
        ("d/qwen-GGUF", 10_000, 99, "2024-01-01T00:00:00.000Z"),
    ]:
        hub.add_repo(repo_id, downloads=downloads, likes=likes, last_modified=modified)
        hub.add_file(repo_id, "model-Q4_K_M.gguf", content(repo_id, 64))
    hub.add_repo("e/llama-safetensors", downloads=99_999, likes=999)
    hub.add_file("e/llama-safetensors", "model.safetensors", b"{}")
    hub.add_repo("f/llama-gated-GGUF", downloads=1, likes=1, gated=True, token="secret")
    hub.add_file("f/llama-gated-GGUF", "model-Q8_0.gguf", content("f", 64))


# -- search ------------------------------------------------------------------------------


@pytest.mark.usefixtures("listed")
def test_search_by_query_and_sort_order(hub: HubServer) -> None:
    found = search_gguf("llama")
    assert [r.repo_id for r in found] == [
        "a/llama-small-GGUF", "c/Llama-mid-GGUF", "b/llama-big-GGUF", "f/llama-gated-GGUF"]
    first = found[0]
    assert (first.downloads, first.likes, first.gated) == (900, 5, False)
    assert first.last_modified is not None and first.last_modified.startswith("2023-01-01")
    assert "gguf" in first.tags
    assert found[-1].gated

    by_likes = [r.repo_id for r in search_gguf("llama", sort="likes")]
    assert by_likes[:3] == ["b/llama-big-GGUF", "c/Llama-mid-GGUF", "a/llama-small-GGUF"]
    recent = [r.repo_id for r in search_gguf("llama", sort="last_modified")]
    assert recent == ["b/llama-big-GGUF", "c/Llama-mid-GGUF", "f/llama-gated-GGUF",
                      "a/llama-small-GGUF"]


@pytest.mark.usefixtures("listed")
def test_search_limit_empty_query_and_filter(hub: HubServer) -> None:
    assert [r.repo_id for r in search_gguf("llama", limit=1)] == ["a/llama-small-GGUF"]
    everything = [r.repo_id for r in search_gguf("", endpoint=hub.endpoint)]
    assert everything[0] == "d/qwen-GGUF"  # most downloaded GGUF repository
    assert "e/llama-safetensors" not in everything  # not GGUF
    assert search_gguf("no-such-model") == []
    query = hub.log[-1].path
    assert "filter=gguf" in query and "sort=downloads" in query


def test_search_rejects_an_unknown_sort() -> None:
    with pytest.raises(ValueError, match="sort must be one of"):
        search_gguf("llama", sort="size")


# -- one repository ----------------------------------------------------------------------


def test_repo_details_groups_quants_and_split_models(hub: HubServer, repo: str) -> None:
    details = repo_details(repo)
    assert details.repo_id == repo and details.revision == hub.repos[repo].commit
    by_name = {f.filename: f for f in details.files}
    assert set(by_name) == {
        "Tiny-Llama-Instruct-Q4_K_M.gguf", "Tiny-Llama-Instruct-IQ2_XXS.gguf",
        "Tiny-Llama-Instruct-Q8_0.gguf", "Tiny-Llama-Instruct-Q4_0.gguf",
        "F16/Tiny-Llama-Instruct-F16-00001-of-00002.gguf"}
    split = by_name["F16/Tiny-Llama-Instruct-F16-00001-of-00002.gguf"]
    assert split.parts == ("F16/Tiny-Llama-Instruct-F16-00001-of-00002.gguf",
                           "F16/Tiny-Llama-Instruct-F16-00002-of-00002.gguf")
    assert split.size == 10_000 and split.quant == "F16" and split.bits_per_weight == 16.0
    assert split.sha256 == tuple(hashlib.sha256(content(p, FILES[p])).hexdigest()
                                 for p in split.parts)
    q8 = by_name["Tiny-Llama-Instruct-Q8_0.gguf"]
    assert (q8.size, q8.quant, q8.parts) == (5000, "Q8_0", ("Tiny-Llama-Instruct-Q8_0.gguf",))
    assert q8.sha256 == (hashlib.sha256(content(q8.filename, 5000)).hexdigest(),)
    assert [f.filename for f in details.projectors] == ["mmproj-Tiny-Llama-f16.gguf"]

    groups = group_by_quant(details.files)
    assert [q for q, _ in groups] == ["IQ2_XXS", "Q4_0", "Q4_K_M", "Q8_0", "F16"]


def test_repo_details_license_and_card(hub: HubServer, repo: str) -> None:
    details = repo_details(repo, endpoint=hub.endpoint)
    assert details.license == "llama3.1" and not details.gated
    # The YAML header is shown as fields, not as card text.
    assert details.card_text.startswith("# Tiny Llama") and "license:" not in details.card_text


def test_long_card_is_truncated_and_missing_card_is_empty(hub: HubServer, repo: str) -> None:
    hub.add_file(repo, "README.md", ("# Big\n" + "x" * 200_000).encode())
    card = repo_details(repo).card_text
    assert card.startswith("# Big") and len(card.encode()) <= CARD_MAX_BYTES
    del hub.repos[repo].files["README.md"]
    assert repo_details(repo).card_text == ""


def test_license_other_and_from_tags(hub: HubServer) -> None:
    hub.add_repo("x/a-GGUF", card_data={"license": "other", "license_name": "tiny-license"})
    hub.add_file("x/a-GGUF", "a-Q4_0.gguf", content("a", 64))
    assert repo_details("x/a-GGUF").license == "tiny-license"
    hub.add_repo("x/b-GGUF", tags=["gguf", "license:apache-2.0"])
    hub.add_file("x/b-GGUF", "b-Q4_0.gguf", content("b", 64))
    details = repo_details("x/b-GGUF")
    assert details.license == "apache-2.0" and details.card_text == ""


def test_gated_repo_needs_a_token(hub: HubServer, repo: str) -> None:
    hub.add_repo(repo, token="secret", gated=True)
    with pytest.raises(HubError, match=r"gated.*token"):
        repo_details(repo)
    with pytest.raises(HubError, match="accept its license"):
        repo_details(repo, token="wrong")
    details = repo_details(repo, token="secret")
    assert details.gated and len(details.files) == 5


def test_private_repo_asks_to_sign_in(hub: HubServer, repo: str) -> None:
    hub.add_repo(repo, token="secret")
    with pytest.raises(HubError, match="token"):
        repo_details(repo)


def test_missing_repo(hub: HubServer) -> None:
    with pytest.raises(HubError, match="no model nobody/nothing-GGUF on the Hub"):
        repo_details("nobody/nothing-GGUF")


def test_server_error_and_connection_refused(hub: HubServer, repo: str) -> None:
    hub.fail(repo, "README.md", 503)
    with pytest.raises(HubError, match="HTTP 503"):
        repo_details(repo)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HubError, match="Cannot reach the Hub"):
        repo_details(repo, endpoint=f"http://127.0.0.1:{port}")


# -- names, bits and the curated list ------------------------------------------------------


@pytest.mark.parametrize(("name", "quant"), [
    ("Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
    ("qwen2.5-7b-instruct-q5_k_m-00001-of-00002.gguf", "Q5_K_M"),
    ("Q8_0/Model-Q8_0-00002-of-00003.gguf", "Q8_0"),
    ("gemma-2-9b-it-IQ3_XXS.gguf", "IQ3_XXS"),
    ("model.IQ4_NL.gguf", "IQ4_NL"),
    ("Phi-3-mini-4k-instruct-fp16.gguf", "F16"),
    ("model-bf16.gguf", "BF16"),
    ("model-f32.gguf", "F32"),
    ("gemma-2-2b-it-Q4_0_4_4.gguf", "Q4_0_4_4"),
    ("Mistral-7B-Instruct-v0.3-Q6_K_L.gguf", "Q6_K_L"),
    ("Qwen3-8B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
    ("model-f16.Q2_K.gguf", "Q2_K"),  # the last one named wins
    ("Phi-3-mini-4k-instruct-q4.gguf", "unknown"),
    ("BIQ4_XS.gguf", "unknown"),  # only whole tokens count
    ("model.gguf", "unknown"),
])
def test_quant_from_filename(name: str, quant: str) -> None:
    assert quant_from_filename(name) == quant


def test_nominal_bits_order_the_usual_quants() -> None:
    order = ["IQ1_S", "IQ2_XXS", "Q2_K", "IQ3_M", "Q3_K_M", "IQ4_XS", "Q4_0", "Q4_K_M",
             "Q4_K_L", "Q5_K_M", "Q6_K", "Q6_K_L", "Q8_0", "F16", "F32"]
    bits = [nominal_bits_per_weight(q) for q in order]
    assert all(b is not None for b in bits) and bits == sorted(bits)
    assert nominal_bits_per_weight("Q4_K_M") == pytest.approx(4.85, abs=0.05)
    assert nominal_bits_per_weight("Q8_0") == 8.5
    assert nominal_bits_per_weight("UD-Q4_K_XL") > nominal_bits_per_weight("Q4_K_M")
    assert nominal_bits_per_weight("unknown") is None


def test_unknown_quants_group_last() -> None:
    def f(name: str, size: int) -> GGUFFile:
        quant = quant_from_filename(name)
        return GGUFFile(name, (name,), size, (None,), quant, nominal_bits_per_weight(quant))

    groups = group_by_quant([f("m-q4.gguf", 10), f("m-Q8_0.gguf", 30), f("m-Q2_K.gguf", 5),
                             f("m-Q8_0-b.gguf", 31)])
    assert [(q, [x.filename for x in fs]) for q, fs in groups] == [
        ("Q2_K", ["m-Q2_K.gguf"]), ("Q8_0", ["m-Q8_0-b.gguf", "m-Q8_0.gguf"]),
        ("unknown", ["m-q4.gguf"])]


def test_curated_list() -> None:
    entries = curated_repos()
    assert len(entries) >= 10
    ids = [e.repo_id for e in entries]
    assert len(set(ids)) == len(ids)
    assert "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF" in ids
    assert all(e.repo_id.count("/") == 1 and e.family and e.note for e in entries)
