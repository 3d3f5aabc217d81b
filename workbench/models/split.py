"""Split GGUF models: `name-00001-of-00003.gguf` and its sibling parts, read as one model.

llama.cpp's gguf-split writes the model's metadata into part 1 and spreads the tensors over
all parts; each part carries `split.no` (0-based), `split.count` and `split.tensors.count`.
llama.cpp is given part 1 and finds the others next to it, so every part must be present
and complete before a load is attempted.
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from workbench.models.gguf import (
    ByteSource,
    GGUFError,
    GGUFHeader,
    check_complete,
    open_source,
    parse_source,
    read_header,
)

# The name llama.cpp's gguf-split gives parts (see llama_split_path).
_SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})(?P<ext>\.gguf)$",
                         re.IGNORECASE)

KEY_NO, KEY_COUNT, KEY_TENSORS = "split.no", "split.count", "split.tensors.count"


def _split_name(filename: str) -> tuple[str, str, int, int, str] | None:
    """(folder prefix, stem prefix, part number, part count, extension) of a part name."""
    folder, _, base = filename.rpartition("/")
    m = _SPLIT_NAME.match(base)
    if m is None:
        return None
    no, count = int(m["no"]), int(m["count"])
    if not 1 <= no <= count:
        return None
    return (folder + "/" if folder else ""), m["prefix"], no, count, m["ext"]


def split_parts(filename: str) -> list[str]:
    """All part names of the split model `filename` belongs to, in order; [filename] if
    it is not a split part. A folder prefix ("Q4_K_M/x-00001-of-00002.gguf") is kept."""
    parsed = _split_name(filename)
    if parsed is None:
        return [filename]
    folder, prefix, _, count, ext = parsed
    return [f"{folder}{prefix}-{i:05d}-of-{count:05d}{ext}" for i in range(1, count + 1)]


def _int_key(metadata: dict[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_part(header: GGUFHeader, index: int, count: int) -> None:
    name = header.parts[0].name
    declared = _int_key(header.metadata, KEY_COUNT)
    if declared is not None and declared != count:
        raise GGUFError(
            f"{name} belongs to a model split into {declared} files, but {count} were given. "
            "Download all parts of the model into one folder.")
    no = _int_key(header.metadata, KEY_NO)
    if no is not None and no != index:
        raise GGUFError(
            f"{name} is part {no + 1} of its model, but was given as part {index + 1}. "
            "Parts may have been renamed or mixed up with another model's; download them again.")


def read_split_header(sources: list[str | os.PathLike[str] | ByteSource]) -> GGUFHeader:
    """Read the parts of a split model, in order, as one model.

    Metadata comes from part 1; tensors from all parts, each tagged with its part;
    file_size is the total. Raises GGUFError if a part is damaged, truncated, out of
    order, or the parts disagree on how many there are.
    """
    if not sources:
        raise GGUFError("No model file was given.")
    count = len(sources)
    parts: list[GGUFHeader] = []
    with ExitStack() as stack:
        for index, source in enumerate(sources):
            src = stack.enter_context(open_source(source))
            header = parse_source(src)
            _check_part(header, index, count)
            check_complete(header)
            parts.append(header)
    model = parts[0]
    for index, header in enumerate(parts[1:], start=1):
        model.tensors.extend(replace(t, part=index) for t in header.tensors)
        model.parts.extend(header.parts)
    model.file_size = sum(p.size for p in model.parts)
    seen: set[str] = set()
    for t in model.tensors:
        if t.name in seen:
            raise GGUFError(
                f"The parts of {model.parts[0].name} both hold tensor {t.name}: they come from "
                "different models. Download all parts again.")
        seen.add(t.name)
    expected = _int_key(model.metadata, KEY_TENSORS)
    if expected is not None and expected != len(model.tensors):
        raise GGUFError(
            f"{model.parts[0].name} should have {expected:,} tensors over its {count} parts, "
            f"but they hold {len(model.tensors):,}. A part is from another model or damaged; "
            "download the parts again.")
    return model


def read_model_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """The header of the model at `path`: one file, or all parts of a split model when
    `path` is any of its parts (the others are looked for in the same folder)."""
    p = Path(path)
    names = split_parts(p.name)
    if _split_name(p.name) is None:
        header = read_header(p)
        declared = _int_key(header.metadata, KEY_COUNT)
        if declared is not None and declared > 1:
            raise GGUFError(
                f"{p.name} is one part of a model split into {declared} files, but its name "
                "does not say which (llama.cpp expects name-00001-of-"
                f"{declared:05d}.gguf). Restore the original file names.")
        return header
    paths = [p.with_name(PurePosixPath(n).name) for n in names]
    missing = [q.name for q in paths if not q.exists()]
    if missing:
        listed = ", ".join(missing)
        raise GGUFError(
            f"{p.name} is one part of a model split into {len(paths)} files, but "
            f"{listed} {'is' if len(missing) == 1 else 'are'} missing from {p.parent}. "
            "Download all parts into the same folder.")
    return read_split_header(list(paths))
