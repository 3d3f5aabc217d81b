"""Remote GGUF headers through huggingface_hub, against the loopback Hub
(workbench/bench/hub_server.py)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from workbench.bench.hub_server import HubServer
from workbench.models.gguf import GGUFError, describe_quantization, read_header
from workbench.models.remote import read_remote_header

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"


@pytest.fixture
def served(hub: HubServer, builtin_model: Path) -> str:
    """The built-in model, served from disk; returns its file name."""
    hub.add_file(REPO, builtin_model.name, builtin_model)
    hub.add_file(REPO, "README.md", b"# SmolLM2\n")
    return builtin_model.name


def test_remote_header_equals_local_and_downloads_only_the_header(
        hub: HubServer, served: str, builtin_model: Path) -> None:
    remote = read_remote_header(REPO, served, endpoint=hub.endpoint)
    local = read_header(builtin_model)
    assert remote.metadata == local.metadata
    assert remote.tensors == local.tensors
    assert (remote.version, remote.file_size, remote.data_offset, remote.data_end) == (
        local.version, local.file_size, local.data_offset, local.data_end)
    assert remote.path.name == served and remote.source_name == f"{REPO}/{served}"
    assert describe_quantization(remote) == "Q4_1" and remote.context_length == 8192
    served_bytes = hub.bytes_served(REPO, served)
    assert local.data_offset <= served_bytes < 8 * 2**20
    gets = hub.requests_for(served, "GET")
    assert all(r.headers["range"].startswith("bytes=") for r in gets)
    assert [r.status for r in gets] == [206] * len(gets) and len(gets) <= 4


def test_endpoint_defaults_to_the_configured_one(hub: HubServer, served: str) -> None:
    assert read_remote_header(REPO, served).n_params > 100e6


def test_lfs_redirect_to_cdn_keeps_the_token_on_the_hub(
        hub: HubServer, served: str, builtin_model: Path) -> None:
    hub.redirect_lfs = True
    hub.add_repo(REPO, token="hf_secret", gated=True)
    header = read_remote_header(REPO, served, token="hf_secret", endpoint=hub.endpoint)
    assert header.tensors == read_header(builtin_model).tensors
    head, *gets = hub.requests_for(served)
    assert head.method == "HEAD" and head.status == 302 and "authorization" in head.headers
    assert gets and all(r.path.startswith("/cdn/") for r in gets)
    assert not any("authorization" in r.headers for r in gets)


@pytest.mark.parametrize(("token", "pattern"), [
    (None, r"gated model.*accept its terms"),
    ("hf_wrong", r"gated model.*accept its terms"),
])
def test_gated_repo_without_access(hub: HubServer, served: str, token: str | None,
                                   pattern: str) -> None:
    hub.add_repo(REPO, token="hf_secret", gated=True)
    with pytest.raises(GGUFError, match=pattern):
        read_remote_header(REPO, served, token=token, endpoint=hub.endpoint)


def test_private_repo_asks_for_a_token(hub: HubServer, served: str) -> None:
    hub.add_repo(REPO, token="hf_secret")
    with pytest.raises(GGUFError, match=r"no model .* private: sign in"):
        read_remote_header(REPO, served, endpoint=hub.endpoint)


@pytest.mark.parametrize(("status", "pattern"), [
    (404, r"was not found on the Hub"),
    (401, r"needs you to sign in"),
    (403, r"token has no access"),
    (500, r"HTTP 500.*try again later"),
])
def test_http_errors_on_the_metadata_request(hub: HubServer, served: str, status: int,
                                             pattern: str) -> None:
    hub.fail(REPO, served, status)
    with pytest.raises(GGUFError, match=pattern):
        read_remote_header(REPO, served, endpoint=hub.endpoint)


@pytest.mark.parametrize("status", [401, 404, 500, 503])
def test_http_errors_on_the_range_requests(hub: HubServer, served: str, status: int) -> None:
    hub.fail(REPO, served, status, methods=("GET",))
    started = time.perf_counter()
    with pytest.raises(GGUFError, match=r"sign in|not found|HTTP 50\d"):
        read_remote_header(REPO, served, endpoint=hub.endpoint)
    assert time.perf_counter() - started < 5
    assert hub.bytes_served(REPO) == 0


def test_missing_file_repo_and_revision(hub: HubServer, served: str) -> None:
    with pytest.raises(GGUFError, match=r"nope\.gguf was not found"):
        read_remote_header(REPO, "nope.gguf", endpoint=hub.endpoint)
    with pytest.raises(GGUFError, match=r"no model someone/else"):
        read_remote_header("someone/else", served, endpoint=hub.endpoint)
    with pytest.raises(GGUFError, match=r"no revision 'v9'"):
        read_remote_header(REPO, served, revision="v9", endpoint=hub.endpoint)


def test_dropped_connection_is_retried_then_reported(hub: HubServer, served: str) -> None:
    hub.drop_after(REPO, served, 100_000)
    with pytest.raises(GGUFError, match="connection to the Hub dropped"):
        read_remote_header(REPO, served, endpoint=hub.endpoint)
    assert len(hub.requests_for(served, "GET")) == 3  # the first try and two retries


def test_a_drop_that_heals_is_survived(hub: HubServer, served: str, builtin_model: Path) -> None:
    hub.drop_after(REPO, served, 100_000)
    original = hub.file(REPO, served).read

    def read_then_heal(start: int, stop: int) -> bytes:
        hub.drop_after(REPO, served, None)  # only the first response is cut short
        return original(start, stop)

    hub.file(REPO, served).read = read_then_heal  # type: ignore[method-assign]
    assert read_remote_header(REPO, served, endpoint=hub.endpoint).tensors == read_header(
        builtin_model).tensors


def test_connection_refused(hub: HubServer) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GGUFError, match="Cannot reach the Hub"):
        read_remote_header(REPO, "model.gguf", endpoint=f"http://127.0.0.1:{port}")


def test_offline_mode(hub: HubServer, served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GGUFError, match="offline mode"):
        read_remote_header(REPO, served, endpoint=hub.endpoint)
    assert hub.log == []


def test_header_larger_than_the_limit(hub: HubServer, served: str) -> None:
    with pytest.raises(GGUFError, match=r"larger than 1 MiB"):
        read_remote_header(REPO, served, endpoint=hub.endpoint, max_header_bytes=2**20)
    assert hub.bytes_served(REPO, served) <= 2**20


def test_truncated_remote_file(hub: HubServer, builtin_model: Path) -> None:
    with builtin_model.open("rb") as fh:
        hub.add_file(REPO, "cut.gguf", fh.read(3_000_000))
    with pytest.raises(GGUFError, match=r"cut\.gguf is truncated"):
        read_remote_header(REPO, "cut.gguf", endpoint=hub.endpoint)


def test_remote_file_that_is_not_gguf(hub: HubServer, served: str) -> None:
    with pytest.raises(GGUFError, match="not a GGUF model file"):
        read_remote_header(REPO, "README.md", endpoint=hub.endpoint)


def test_server_speaks_the_hub_api(hub: HubServer, served: str, builtin_model: Path,
                                   tmp_path: Path) -> None:
    """The loopback Hub is good enough for HfApi and hf_hub_download (used by later tests)."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url

    hub.add_file(REPO, "sub/dir/notes.txt", b"notes")
    api = HfApi(endpoint=hub.endpoint)
    info = api.model_info(REPO, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    assert sizes == {served: builtin_model.stat().st_size, "README.md": 10, "sub/dir/notes.txt": 5}
    lfs = next(s.lfs for s in info.siblings or [] if s.rfilename == served)
    assert lfs is not None and lfs.size == builtin_model.stat().st_size and len(lfs.sha256) == 64
    assert api.model_info(REPO, revision=info.sha).sha == info.sha
    tree = {e.path for e in api.list_repo_tree(REPO)}
    assert tree == {served, "README.md", "sub"}
    deep = {e.path for e in api.list_repo_tree(REPO, recursive=True)}
    assert deep == {served, "README.md", "sub", "sub/dir", "sub/dir/notes.txt"}
    meta = get_hf_file_metadata(hf_hub_url(REPO, served, endpoint=hub.endpoint))
    assert meta.size == builtin_model.stat().st_size and meta.commit_hash == info.sha
    assert meta.etag == lfs.sha256
    path = hf_hub_download(REPO, "sub/dir/notes.txt", cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == b"notes"
