"""The GGUF models on this computer: in the Hugging Face cache, in the app's models
folder and in folders the user added. Listing reads only headers; deleting frees disk.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import CacheNotFound

from workbench.models.gguf import GGUFHeader, describe_quantization
from workbench.models.hub import quant_from_filename
from workbench.models.split import read_model_header, split_parts
from workbench.settings import data_dir


@dataclass(frozen=True)
class LocalModel:
    path: Path  # what llama.cpp is given: the first part of a split model
    parts: tuple[Path, ...]  # the parts present on disk, in order
    size_bytes: int
    source: str  # "hf_cache" | "app" | "folder"
    repo_id: str | None  # for the HF cache
    name: str
    architecture: str
    n_params: int
    quant: str
    context_length: int | None
    has_chat_template: bool
    error: str | None  # why the header could not be read; the fields above are then guesses


def _is_gguf(name: str) -> bool:
    # An interrupted download is "<name>.gguf.incomplete" (or a hash plus .incomplete).
    return name.lower().endswith(".gguf")


def _group(paths: Iterable[Path]) -> list[list[Path]]:
    """Paths grouped into models: the parts of a split model together, in order."""
    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    for p in paths:
        names = split_parts(p.name)
        groups.setdefault((p.parent, names[0]), {})[p.name] = p
    result = []
    for (_, _first), found in groups.items():
        order = split_parts(next(iter(found)))
        result.append([found[n] for n in order if n in found])
    return result


def _describe(parts: list[Path], source: str, repo_id: str | None) -> LocalModel:
    first = parts[0]
    size = 0
    for p in parts:
        with contextlib.suppress(OSError):  # vanished since the listing: counts nothing
            size += p.stat().st_size
    quant = quant_from_filename(first.name)
    try:
        header: GGUFHeader | None = read_model_header(first)
        error = None
    except Exception as exc:  # one damaged file must not hide the rest of the library
        header, error = None, str(exc) or type(exc).__name__
    if header is None:
        return LocalModel(first, tuple(parts), size, source, repo_id, first.stem, "unknown", 0,
                          quant, None, False, error)
    if quant == "unknown":  # the name does not say: the dominant tensor type does
        quant = describe_quantization(header)
    return LocalModel(first, tuple(parts), size, source, repo_id, header.name,
                      header.architecture, header.n_params, quant, header.context_length,
                      header.chat_template is not None, None)


def _walk_ggufs(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, onerror=lambda _err: None):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / f for f in files if _is_gguf(f)]
    return sorted(found)


def _hf_cache_models(cache_dir: Path | None) -> list[tuple[list[Path], str]]:
    if cache_dir is None:
        # Read at call time: scan_cache_dir's own default is frozen when it is imported.
        from huggingface_hub import constants

        cache_dir = Path(constants.HF_HUB_CACHE)
    try:
        info = scan_cache_dir(cache_dir)
    except (CacheNotFound, OSError, ValueError):  # none yet, or not a folder
        return []
    found: list[tuple[list[Path], str]] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # Newest revision first, so a file kept in several is listed from the newest.
        for rev in sorted(repo.revisions, key=lambda r: -r.last_modified):
            paths = sorted(f.file_path for f in rev.files if _is_gguf(f.file_name))
            found += [(group, repo.repo_id) for group in _group(paths)]
    return found


def default_app_models_dir() -> Path:
    """Where the app puts the models it downloads."""
    return data_dir() / "models"


def scan_library(folders: Sequence[Path] = (), *, app_models_dir: Path | None = None,
                 hf_cache_dir: Path | None = None,
                 include_hf_cache: bool = True) -> list[LocalModel]:
    """Every GGUF model found, each once (by the resolved path of its first part): the HF
    cache first, then the app's folder, then the user's folders (searched recursively).
    `app_models_dir` None: the app's data folder; `hf_cache_dir` None: huggingface_hub's."""
    candidates: list[tuple[list[Path], str, str | None]] = []
    if include_hf_cache:
        candidates += [(g, "hf_cache", repo) for g, repo in _hf_cache_models(hf_cache_dir)]
    app_dir = app_models_dir if app_models_dir is not None else default_app_models_dir()
    for folder, source in [(app_dir, "app"), *((Path(f), "folder") for f in folders)]:
        if folder.is_dir():
            candidates += [(g, source, None) for g in _group(_walk_ggufs(folder))]
    seen: set[Path] = set()
    models = []
    for parts, source, repo_id in candidates:
        key = parts[0].resolve()
        if key in seen:
            continue
        seen.add(key)
        models.append(_describe(parts, source, repo_id))
    return models


def _snapshot_dir(path: Path) -> Path | None:
    """The snapshots/<commit> folder `path` lies in, if it is in an HF cache."""
    for parent in path.parents:
        if parent.parent.name == "snapshots":
            return parent
    return None


def _delete_from_hf_cache(model: LocalModel) -> int:
    snapshot = _snapshot_dir(Path(os.path.abspath(model.path)))
    if snapshot is None:
        raise ValueError(f"{model.path} is not in a Hugging Face cache.")
    cache_dir = snapshot.parents[2]
    info = scan_cache_dir(cache_dir)
    wanted = {Path(os.path.abspath(p)) for p in model.parts}
    files = [f for repo in info.repos for rev in repo.revisions for f in rev.files
             if Path(os.path.abspath(f.file_path)) in wanted]
    # The same blobs may be linked from other snapshots of the repository (an older
    # revision): those links go too, or the disk space would not be freed.
    blobs = {f.blob_path for f in files}
    repo_dir = snapshot.parents[1]
    files += [f for repo in info.repos if repo.repo_path == repo_dir
              for rev in repo.revisions for f in rev.files
              if f.blob_path in blobs and f not in files]
    if not files:
        return 0
    # huggingface_hub's own strategy: snapshot links first, then the blobs nothing else
    # references (including its cache-wide shared store).
    strategy = info.delete_files(*files)
    strategy.execute()
    return strategy.expected_freed_size


def delete_model(model: LocalModel) -> int:
    """Delete a model's files from disk; returns the bytes freed."""
    if model.source == "hf_cache":
        return _delete_from_hf_cache(model)
    freed = 0
    for part in model.parts:
        try:
            size = part.stat().st_size
            part.unlink()
        except FileNotFoundError:
            continue
        freed += size
    return freed


def reveal_command(path: Path, platform: str | None = None) -> list[str]:
    """The command that shows `path` in the system's file manager."""
    platform = platform or sys.platform
    if platform == "darwin":
        return ["open", "-R", str(path)]
    if platform.startswith("win"):
        return ["explorer", "/select,", str(path)]
    # xdg-open cannot select a file: it opens the folder holding it.
    return ["xdg-open", str(path if path.is_dir() else path.parent)]
