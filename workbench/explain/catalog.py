"""The concept catalog: one markdown file per concept under resources/concepts.

Each file opens with a small front-matter block between `---` lines (`key: value`
pairs, one a line) followed by a markdown body. No YAML dependency: the block is
parsed here. Core module: stdlib only, no Qt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REQUIRED_KEYS = ("title", "summary")
KNOWN_KEYS = ("title", "summary", "formula", "knobs", "related", "sources")
_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_LINK_RE = re.compile(r"\[\[([a-z0-9]+(?:-[a-z0-9]+)*)\]\]")


class CatalogError(Exception):
    """A concept file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Concept:
    id: str
    title: str
    summary: str
    body: str
    formula: str | None
    knobs: tuple[str, ...]
    related: tuple[str, ...]
    sources: tuple[str, ...]


def _split_list(value: str, sep: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(sep) if part.strip())


def parse_concept(text: str, concept_id: str, origin: str = "<string>") -> Concept:
    """One concept from the text of its file; CatalogError names `origin` on any problem."""
    if not _ID_RE.match(concept_id):
        raise CatalogError(f"{origin}: bad concept id {concept_id!r}")
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        raise CatalogError(f"{origin}: does not start with a '---' front-matter line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise CatalogError(f"{origin}: front matter is not closed by '---'") from None
    meta: dict[str, str] = {}
    for number, line in enumerate(lines[1:end], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, colon, value = line.partition(":")
        key = key.strip()
        if not colon or not key:
            raise CatalogError(f"{origin}: line {number}: expected 'key: value', got {line!r}")
        if key not in KNOWN_KEYS:
            raise CatalogError(f"{origin}: line {number}: unknown key {key!r}")
        if key in meta:
            raise CatalogError(f"{origin}: line {number}: duplicate key {key!r}")
        meta[key] = value.strip()
    for key in REQUIRED_KEYS:
        if not meta.get(key):
            raise CatalogError(f"{origin}: missing {key!r}")
    body = "\n".join(lines[end + 1 :]).strip()
    if not body:
        raise CatalogError(f"{origin}: empty body")
    return Concept(
        id=concept_id,
        title=meta["title"],
        summary=meta["summary"],
        body=body,
        formula=meta.get("formula") or None,
        knobs=_split_list(meta.get("knobs", ""), ","),
        related=_split_list(meta.get("related", ""), ","),
        sources=_split_list(meta.get("sources", ""), ";"),
    )


def default_folder() -> Path:
    from workbench.resources import resources_dir

    return resources_dir() / "concepts"


class Catalog:
    def __init__(self, concepts: dict[str, Concept]) -> None:
        self._concepts = dict(sorted(concepts.items()))

    @classmethod
    def load(cls, folder: Path | None = None) -> Catalog:
        folder = Path(folder) if folder is not None else default_folder()
        if not folder.is_dir():
            raise CatalogError(f"{folder}: concept folder not found")
        concepts: dict[str, Concept] = {}
        for path in sorted(folder.glob("*.md")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CatalogError(f"{path}: cannot read: {exc}") from exc
            concepts[path.stem] = parse_concept(text, path.stem, str(path))
        for concept in concepts.values():
            for other in concept.related:
                if other not in concepts:
                    raise CatalogError(
                        f"{folder / (concept.id + '.md')}: related id {other!r} does not exist"
                    )
        return cls(concepts)

    def __len__(self) -> int:
        return len(self._concepts)

    def __contains__(self, concept_id: object) -> bool:
        return concept_id in self._concepts

    def get(self, concept_id: str) -> Concept:
        return self._concepts[concept_id]

    def all(self) -> list[Concept]:
        return sorted(self._concepts.values(), key=lambda c: (c.title.lower(), c.id))

    def search(self, query: str) -> list[Concept]:
        """Title hits first, then summary hits, then body hits; each group by title."""
        q = query.strip().lower()
        if not q:
            return self.all()
        ranked: list[tuple[int, Concept]] = []
        for concept in self.all():
            if q in concept.title.lower() or q in concept.id:
                rank = 0
            elif q in concept.summary.lower():
                rank = 1
            elif q in concept.body.lower() or q in (concept.formula or "").lower():
                rank = 2
            else:
                continue
            ranked.append((rank, concept))
        ranked.sort(key=lambda pair: pair[0])  # stable: keeps the title order within a rank
        return [concept for _, concept in ranked]

    def for_knob(self, knob_key: str) -> Concept | None:
        for concept in self._concepts.values():  # sorted by id
            if knob_key in concept.knobs:
                return concept
        return None

    def backlinks(self, concept_id: str) -> list[Concept]:
        return [c for c in self.all() if concept_id in c.related and c.id != concept_id]

    def link_concepts(self, markdown: str) -> str:
        return link_concepts(markdown, self)


def link_concepts(markdown: str, catalog: Catalog | None = None) -> str:
    """`[[id]]` → `[Title](concept:id)`; unknown ids are left as written."""
    if catalog is None:
        catalog = _default_catalog()

    def replace(match: re.Match[str]) -> str:
        concept_id = match.group(1)
        if concept_id not in catalog:
            return match.group(0)
        return f"[{catalog.get(concept_id).title}](concept:{concept_id})"

    return _LINK_RE.sub(replace, markdown)


_DEFAULT: Catalog | None = None


def _default_catalog() -> Catalog:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Catalog.load()
    return _DEFAULT
