"""The loopback Hub's own features: the model listing and the stall/corrupt faults."""

from __future__ import annotations

import hashlib
import time

import pytest
from huggingface_hub import HfApi
from huggingface_hub.utils import get_session

from workbench.bench.hub_server import HubServer

try:
    import httpx2
except ImportError:  # pragma: no cover - huggingface_hub 1.x
    import httpx as httpx2  # type: ignore[no-redef]


@pytest.fixture
def listed(hub: HubServer) -> HubServer:
    hub.add_repo("a/Llama-GGUF", downloads=10, likes=50, card_data={"license": "llama3.1"},
                 last_modified="2024-05-01T00:00:00.000Z")
    hub.add_file("a/Llama-GGUF", "llama.gguf", b"x" * 100)
    hub.add_repo("b/Qwen-GGUF", downloads=30, likes=5, gated=True,
                 last_modified="2025-01-01T00:00:00.000Z")
    hub.add_file("b/Qwen-GGUF", "qwen.gguf", b"y" * 100)
    hub.add_repo("c/bert", downloads=99)
    hub.add_file("c/bert", "model.bin", b"z" * 10)
    hub.add_repo("d/secret-llama", token="hf_d", tags=["gguf", "private-test"], downloads=1)
    return hub


def test_list_models_filters_sorts_and_limits(listed: HubServer) -> None:
    api = HfApi(endpoint=listed.endpoint)
    by_downloads = list(api.list_models(filter="gguf", sort="downloads", limit=10))
    assert [m.id for m in by_downloads] == ["b/Qwen-GGUF", "a/Llama-GGUF"]
    assert [(m.downloads, m.likes) for m in by_downloads] == [(30, 5), (10, 50)]
    assert by_downloads[0].gated == "auto" and by_downloads[1].gated is False
    assert [m.id for m in api.list_models(filter="gguf", sort="likes")] == [
        "a/Llama-GGUF", "b/Qwen-GGUF"]
    newest = next(iter(api.list_models(filter="gguf", sort="last_modified", limit=1)))
    assert newest.id == "b/Qwen-GGUF" and newest.last_modified.year == 2025
    assert [m.id for m in api.list_models(search="LLAMA")] == ["a/Llama-GGUF"]
    assert len(list(api.list_models(limit=2))) == 2
    (card,) = api.list_models(search="llama", cardData=True)
    assert card.card_data is not None and card.card_data["license"] == "llama3.1"
    # A private repository is listed only to a token that opens it.
    assert "d/secret-llama" in [m.id for m in api.list_models(search="llama", token="hf_d")]
    info = api.model_info("a/Llama-GGUF")
    assert info.card_data["license"] == "llama3.1" and info.gated is False


def test_list_models_direction_one_is_ascending(listed: HubServer) -> None:
    url = f"{listed.endpoint}/api/models?filter=gguf&sort=downloads&direction=1"
    assert [m["id"] for m in get_session().get(url).json()] == ["a/Llama-GGUF", "b/Qwen-GGUF"]


def test_corrupt_flips_one_served_byte_and_keeps_the_true_hash(hub: HubServer) -> None:
    data = bytes(range(256)) * 4096
    hub.add_file("o/r", "m.gguf", data)
    hub.corrupt("o/r", "m.gguf", 5000)
    served = get_session().get(f"{hub.endpoint}/o/r/resolve/main/m.gguf").content
    assert len(served) == len(data) and served != data
    assert [i for i in range(len(data)) if served[i] != data[i]] == [5000]
    assert hub.file("o/r", "m.gguf").sha256 == hashlib.sha256(data).hexdigest()
    hub.corrupt("o/r", "m.gguf", None)
    assert get_session().get(f"{hub.endpoint}/o/r/resolve/main/m.gguf").content == data


def test_stall_goes_silent_then_continues_once(hub: HubServer) -> None:
    data = bytes(range(256)) * 4096
    hub.add_file("o/r", "m.gguf", data)
    hub.stall("o/r", "m.gguf", 100_000, 0.4)
    url = f"{hub.endpoint}/o/r/resolve/main/m.gguf"
    started = time.monotonic()
    assert get_session().get(url).content == data
    assert time.monotonic() - started >= 0.4
    hub.stall("o/r", "m.gguf", 100_000, 5)
    with pytest.raises(httpx2.ReadTimeout):  # a client with a shorter patience gives up
        get_session().get(url, timeout=0.3)
    assert get_session().get(url).content == data  # one stall each time: spent


def test_stall_then_close_cuts_the_body(hub: HubServer) -> None:
    hub.add_file("o/r", "m.gguf", bytes(300_000))
    hub.stall("o/r", "m.gguf", 100_000, 0.05, close=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        get_session().get(f"{hub.endpoint}/o/r/resolve/main/m.gguf")
    assert hub.bytes_served("o/r") == 100_000
