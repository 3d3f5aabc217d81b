"""The local library: a Hugging Face cache with its real layout, the app's folder and a
user folder, built in tmp_path with small GGUFs; listing, de-duplication and deletion."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from workbench.models.library import LocalModel, delete_model, reveal_command, scan_library

TENSORS = {f"blk.{i}.weight": np.ones((i + 1, 8), dtype=np.float32) for i in range(4)}
N_PARAMS = sum(a.size for a in TENSORS.values())
OLD, NEW = "a" * 40, "b" * 40  # two cached commits of org/tiny-GGUF


def write_gguf(path: Path, name: str = "tiny", *, split_max_tensors: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    w.add_name(name)
    w.add_context_length(256)
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a"])
    for tname, array in TENSORS.items():
        w.add_tensor(tname, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def cache_file(cache: Path, repo_id: str, commit: str, filename: str, source: Path) -> Path:
    """Put `source` in the cache as huggingface_hub does: a blob named by its hash and a
    relative symlink to it in snapshots/<commit>; refs/main names the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    data = source.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return link


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    cache = tmp_path / "hf"
    src = tmp_path / "src"
    q8 = write_gguf(src / "tiny-Q8_0.gguf")
    f16 = write_gguf(src / "tiny-F16.gguf", name="tiny f16")
    # The Q8 file is in two commits (the same blob), the F16 only in the newest.
    cache_file(cache, "org/tiny-GGUF", OLD, "tiny-Q8_0.gguf", q8)
    cache_file(cache, "org/tiny-GGUF", NEW, "tiny-Q8_0.gguf", q8)
    cache_file(cache, "org/tiny-GGUF", NEW, "tiny-F16.gguf", f16)
    (src / "README.md").write_text("# tiny\n")
    cache_file(cache, "org/tiny-GGUF", NEW, "README.md", src / "README.md")
    # A split model in a subfolder of another repository.
    write_gguf(src / "split" / "big-Q4_K_M.gguf", name="big", split_max_tensors=2)
    for part in sorted((src / "split").glob("big-Q4_K_M-*.gguf")):
        cache_file(cache, "org/big-GGUF", NEW, f"Q4_K_M/{part.name}", part)
    # An interrupted download: only ever a blob, never listed.
    (cache / "models--org--tiny-GGUF" / "blobs" / "deadbeef.incomplete").write_bytes(b"GGUF")
    return cache


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    app, mine = tmp_path / "app-models", tmp_path / "mine"
    write_gguf(app / "app-model-Q4_0.gguf", name="app model")
    write_gguf(mine / "nested" / "split-model.gguf", name="split", split_max_tensors=2)
    (mine / "corrupt-Q5_K_M.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    (mine / "half.gguf.incomplete").write_bytes(b"GGUF")
    (mine / "notes.txt").write_text("not a model")
    return app, mine


def by_name(models: list[LocalModel]) -> dict[str, LocalModel]:
    return {m.path.name: m for m in models}


def test_scan_lists_every_source(cache: Path, folders: tuple[Path, Path]) -> None:
    app, mine = folders
    models = scan_library([mine], app_models_dir=app, hf_cache_dir=cache)
    found = by_name(models)
    assert sorted(found) == sorted([
        "tiny-Q8_0.gguf", "tiny-F16.gguf", "big-Q4_K_M-00001-of-00002.gguf",
        "app-model-Q4_0.gguf", "split-model-00001-of-00002.gguf", "corrupt-Q5_K_M.gguf"])
    assert not any("incomplete" in str(p) for m in models for p in m.parts)

    q8 = found["tiny-Q8_0.gguf"]
    assert (q8.source, q8.repo_id, q8.name, q8.architecture) == ("hf_cache", "org/tiny-GGUF",
                                                                 "tiny", "llama")
    assert (q8.n_params, q8.quant, q8.context_length, q8.has_chat_template, q8.error) == (
        N_PARAMS, "Q8_0", 256, True, None)
    assert q8.size_bytes == q8.path.resolve().stat().st_size  # the blob's size
    assert q8.path.parent.name == NEW  # listed once, from the newest commit

    big = found["big-Q4_K_M-00001-of-00002.gguf"]
    assert big.repo_id == "org/big-GGUF" and len(big.parts) == 2 and big.n_params == N_PARAMS
    assert big.size_bytes == sum(p.stat().st_size for p in big.parts)
    assert big.path.parent.name == "Q4_K_M"

    split = found["split-model-00001-of-00002.gguf"]
    assert (split.source, split.repo_id, split.name, split.error) == ("folder", None, "split", None)
    assert [p.name for p in split.parts] == [f"split-model-0000{i}-of-00002.gguf"
                                             for i in (1, 2)]
    assert split.quant == "F32"  # the name says nothing: the tensors do

    app_model = found["app-model-Q4_0.gguf"]
    assert (app_model.source, app_model.quant) == ("app", "Q4_0")


def test_unreadable_file_is_listed_with_its_error(folders: tuple[Path, Path]) -> None:
    app, mine = folders
    corrupt = by_name(scan_library([mine], app_models_dir=app,
                                   include_hf_cache=False))["corrupt-Q5_K_M.gguf"]
    assert corrupt.error and "corrupt-Q5_K_M.gguf" in corrupt.error
    assert (corrupt.name, corrupt.architecture, corrupt.n_params) == ("corrupt-Q5_K_M",
                                                                      "unknown", 0)
    assert corrupt.quant == "Q5_K_M" and corrupt.size_bytes == 48


def test_split_model_with_a_missing_part(folders: tuple[Path, Path]) -> None:
    app, mine = folders
    (mine / "nested" / "split-model-00002-of-00002.gguf").unlink()
    split = by_name(scan_library([mine], app_models_dir=app, include_hf_cache=False))[
        "split-model-00001-of-00002.gguf"]
    assert len(split.parts) == 1 and split.error and "missing" in split.error


def test_each_file_is_listed_once(cache: Path, folders: tuple[Path, Path]) -> None:
    app, mine = folders
    # The app folder again as a user folder, and a link to a cached blob in a user folder.
    (mine / "linked.gguf").symlink_to(
        cache / "models--org--tiny-GGUF" / "snapshots" / NEW / "tiny-F16.gguf")
    models = scan_library([mine, app, mine], app_models_dir=app, hf_cache_dir=cache)
    keys = [m.path.resolve() for m in models]
    assert len(keys) == len(set(keys)) == 6
    assert by_name(models)["app-model-Q4_0.gguf"].source == "app"
    assert "linked.gguf" not in by_name(models)


def test_sources_can_be_left_out(tmp_path: Path, cache: Path) -> None:
    assert scan_library(hf_cache_dir=cache, include_hf_cache=False,
                        app_models_dir=tmp_path / "none") == []
    # No cache at all is an empty cache, not an error.
    assert scan_library(hf_cache_dir=tmp_path / "no-cache",
                        app_models_dir=tmp_path / "none") == []
    # The default app folder lives under WORKBENCH_HOME (set for every test).
    assert scan_library(include_hf_cache=False) == []


def test_delete_from_the_cache_frees_the_blob(cache: Path) -> None:
    q8 = by_name(scan_library(hf_cache_dir=cache, include_hf_cache=True,
                              app_models_dir=cache / "none"))["tiny-Q8_0.gguf"]
    blob = q8.path.resolve()
    size = blob.stat().st_size
    assert delete_model(q8) == size
    assert not blob.exists()
    repo = cache / "models--org--tiny-GGUF"
    # Both commits' links went, so nothing points at a missing blob.
    assert not any(repo.glob("snapshots/*/tiny-Q8_0.gguf"))
    after = by_name(scan_library(hf_cache_dir=cache, app_models_dir=cache / "none"))
    assert "tiny-Q8_0.gguf" not in after
    assert after["tiny-F16.gguf"].error is None  # the rest of the repository is intact
    assert (repo / "snapshots" / NEW / "README.md").exists()


def test_delete_a_cached_split_model(cache: Path) -> None:
    big = by_name(scan_library(hf_cache_dir=cache, app_models_dir=cache / "none"))[
        "big-Q4_K_M-00001-of-00002.gguf"]
    blobs = [p.resolve() for p in big.parts]
    size = sum(b.stat().st_size for b in blobs)
    assert delete_model(big) == size
    assert not any(b.exists() for b in blobs)
    assert "big-Q4_K_M-00001-of-00002.gguf" not in by_name(
        scan_library(hf_cache_dir=cache, app_models_dir=cache / "none"))


def test_delete_from_a_folder(folders: tuple[Path, Path]) -> None:
    app, mine = folders
    split = by_name(scan_library([mine], app_models_dir=app, include_hf_cache=False))[
        "split-model-00001-of-00002.gguf"]
    sizes = sum(p.stat().st_size for p in split.parts)
    assert delete_model(split) == sizes
    assert not any(p.exists() for p in split.parts)
    assert (mine / "corrupt-Q5_K_M.gguf").exists()
    # Deleting again (already gone) frees nothing and does not fail.
    assert delete_model(split) == 0


def test_reveal_command(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    assert reveal_command(model, "linux") == ["xdg-open", str(tmp_path)]
    assert reveal_command(model, "darwin") == ["open", "-R", str(model)]
    assert reveal_command(model, "win32") == ["explorer", "/select,", str(model)]
    assert reveal_command(tmp_path, "linux") == ["xdg-open", str(tmp_path)]
