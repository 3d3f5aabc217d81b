"""Browse GGUF models on the Hugging Face Hub: search, a curated starting list, and one
repository's files grouped by quantization.

Only metadata is fetched here (the Hub API and the model card); file sizes and LFS
checksums come from the Hub at browse time, never from a bundled list, so they cannot go
stale. Every failure becomes a HubError whose message a person can act on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session

from workbench.models.split import split_parts
from workbench.resources import resources_dir

try:  # huggingface_hub 2.x speaks through httpx2, 1.x through httpx (same API)
    import httpx2
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as httpx2  # type: ignore[no-redef]

CARD_MAX_BYTES = 50_000
TIMEOUT_S = 30.0
CURATED_FILE = "curated_models.json"

# What callers may say -> what list_models accepts (ModelSort_T of huggingface_hub 1.x/2.x).
# The Hub always sorts these descending: most downloaded, most liked, newest first.
_SORTS = {
    "downloads": "downloads", "likes": "likes",
    "last_modified": "last_modified", "lastModified": "last_modified", "recent": "last_modified",
    "trending": "trending_score", "trending_score": "trending_score",
    "trendingScore": "trending_score",
    "created_at": "created_at", "createdAt": "created_at",
}
# Asking for just these keeps a search response small on the real Hub.
_EXPAND = ["downloads", "likes", "lastModified", "gated", "tags"]


class HubError(Exception):
    """Browsing the Hub failed. The message says why and what to do."""


@dataclass(frozen=True)
class RepoSummary:
    repo_id: str
    downloads: int
    likes: int
    last_modified: str | None  # ISO 8601
    gated: bool
    tags: tuple[str, ...]


@dataclass(frozen=True)
class CuratedEntry:
    repo_id: str
    family: str
    note: str


@dataclass(frozen=True)
class GGUFFile:
    filename: str  # the first part of a split model: what llama.cpp is given
    parts: tuple[str, ...]
    size: int  # all parts together
    sha256: tuple[str | None, ...]  # per part; None where the Hub gave no LFS checksum
    quant: str
    bits_per_weight: float | None  # nominal, from the quantization's name


@dataclass(frozen=True)
class RepoDetails:
    repo_id: str
    revision: str  # the commit the files were listed at
    files: tuple[GGUFFile, ...]
    card_text: str  # README.md without its YAML header, at most CARD_MAX_BYTES
    license: str | None
    gated: bool
    # Vision projectors (mmproj-*.gguf) are GGUF too, but are not models one can load alone.
    projectors: tuple[GGUFFile, ...] = ()


# ---------------------------------------------------------------- quantization names

_QUANT = re.compile(
    r"(?<![a-z0-9])((?:ud-)?(?:"
    r"iq[1-4]_(?:xxs|xs|nl|s|m)"
    r"|q[2-8]_k(?:_(?:xxl|xl|s|m|l))?"
    r"|q[4-8]_[01](?:_[48]_[48])?"
    r"|tq[12]_0|mxfp4|bf16|fp16|f16|fp32|f32))(?![a-z0-9])",
    re.IGNORECASE)

# Nominal bits per weight of llama.cpp's quantization mixes: the k-quants as llama.cpp's
# quantize README measures them on Llama 2 7B, the i-quants as `llama-quantize --help`
# states them, the plain block types from their block layout. A real file differs with
# the model (vocabulary size, which tensors stay at higher precision), so these serve
# only to order and describe files; sizes come from the Hub.
_NOMINAL_BPW: dict[str, float] = {
    "IQ1_S": 1.56, "IQ1_M": 1.75, "TQ1_0": 1.69, "TQ2_0": 2.06,
    "IQ2_XXS": 2.06, "IQ2_XS": 2.31, "IQ2_S": 2.5, "IQ2_M": 2.7,
    "Q2_K_S": 3.0, "Q2_K": 3.35, "IQ3_XXS": 3.06, "IQ3_XS": 3.3, "IQ3_S": 3.44,
    "IQ3_M": 3.66, "Q3_K_S": 3.5, "Q3_K_M": 3.91, "Q3_K_L": 4.27,
    "IQ4_XS": 4.25, "IQ4_NL": 4.5, "MXFP4": 4.25,
    "Q4_0": 4.5, "Q4_0_4_4": 4.5, "Q4_0_4_8": 4.5, "Q4_0_8_8": 4.5, "Q4_1": 5.0,
    "Q4_K_S": 4.58, "Q4_K_M": 4.84, "Q5_0": 5.5, "Q5_1": 6.0, "Q5_K_S": 5.52, "Q5_K_M": 5.68,
    "Q6_K": 6.56, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0, "F32": 32.0,
    # llama-quantize's names for its default mixes
    "Q3_K": 3.91, "Q4_K": 4.84, "Q5_K": 5.68,
}
# "_L"/"_XL" variants (bartowski, unsloth) keep embeddings and output at 8 bits or more:
# roughly this much above the mix they extend.
_LARGE_VARIANT_EXTRA = 0.4


def quant_from_filename(name: str) -> str:
    """The quantization a file name states ("Q4_K_M", "IQ3_XXS", "BF16"...), upper case;
    the last one if it states several; "unknown" if none."""
    base = name.rsplit("/", 1)[-1]
    found = _QUANT.findall(base)
    if not found:
        return "unknown"
    quant = found[-1].upper()
    return {"FP16": "F16", "FP32": "F32"}.get(quant, quant)


def nominal_bits_per_weight(quant: str) -> float | None:
    """Typical bits per weight of a llama.cpp quantization (nominal: see _NOMINAL_BPW)."""
    q = quant.upper().removeprefix("UD-")
    if q in _NOMINAL_BPW:
        return _NOMINAL_BPW[q]
    m = re.fullmatch(r"(Q[2-8]_K)_(L|XL|XXL)", q)
    if m:  # above the largest mix llama.cpp itself makes for that type
        known = [_NOMINAL_BPW[k] for k in (m[1], *(f"{m[1]}_{s}" for s in "SML"))
                 if k in _NOMINAL_BPW]
        if known:
            return round(max(known) + _LARGE_VARIANT_EXTRA, 2)
    return None


def group_by_quant(files: Iterable[GGUFFile]) -> list[tuple[str, list[GGUFFile]]]:
    """Files by quantization, fewest bits first; unknown quantizations last."""
    groups: dict[str, list[GGUFFile]] = {}
    for f in files:
        groups.setdefault(f.quant, []).append(f)

    def order(item: tuple[str, list[GGUFFile]]) -> tuple[bool, float, int, str]:
        quant, members = item
        bits = members[0].bits_per_weight
        return bits is None, bits or 0.0, min(m.size for m in members), quant

    return [(q, sorted(m, key=lambda f: f.filename)) for q, m in sorted(groups.items(), key=order)]


# ---------------------------------------------------------------- errors


def _hub_error(exc: Exception, what: str, repo_id: str | None = None,
               endpoint: str | None = None) -> HubError:
    """A message for a failure while fetching `what` (e.g. "the model list")."""
    if isinstance(exc, HubError):
        return exc
    endpoint = endpoint or constants.ENDPOINT
    if isinstance(exc, OfflineModeIsEnabled):
        return HubError("Hugging Face offline mode is on (HF_HUB_OFFLINE). Turn it off to "
                        "browse models on the Hub.")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code
        code = exc.response.headers.get("X-Error-Code")
        name = repo_id or "this model"
        if isinstance(exc, GatedRepoError) or code == "GatedRepo":
            if status == 403:
                return HubError(f"{name} is gated and your token has no access yet: accept its "
                                "license on its Hub page with the account of your token.")
            return HubError(f"{name} is gated: accept its license on its Hub page, then add "
                            "a Hugging Face token of that account.")
        if isinstance(exc, RevisionNotFoundError):
            return HubError(f"{name} has no such revision on the Hub.")
        if status == 404 or (isinstance(exc, RepositoryNotFoundError) and status != 401):
            return HubError(f"There is no model {name} on the Hub. Check the name.")
        if status == 401:
            return HubError(f"The Hub wants you to sign in for {name} (it is private or "
                            "gated, or your token is invalid): add a Hugging Face token that "
                            "has access to it.")
        if status == 403:
            return HubError(f"Your Hugging Face token has no access to {name}.")
        if status == 429:
            return HubError("The Hub is limiting requests (HTTP 429). Try again in a few "
                            "minutes, or add a Hugging Face token.")
        if status >= 500:
            return HubError(f"The Hub failed to send {what} (HTTP {status}). It may be busy; "
                            "try again later.")
        return HubError(f"The Hub refused to send {what} (HTTP {status}).")
    if isinstance(exc, httpx2.TimeoutException):
        return HubError(f"The Hub at {endpoint} did not answer in time. Check your "
                        "connection and try again.")
    if isinstance(exc, (httpx2.TransportError, OSError)):
        return HubError(f"Cannot reach the Hub at {endpoint} ({exc}). Check your internet "
                        "connection.")
    return HubError(f"Fetching {what} from the Hub failed: {exc}")


# ---------------------------------------------------------------- search and curated list


def search_gguf(query: str = "", *, sort: str = "downloads", limit: int = 50,
                endpoint: str | None = None, token: str | None = None) -> list[RepoSummary]:
    """Repositories tagged "gguf" whose name contains `query`, best first by `sort`."""
    if sort not in _SORTS:
        raise ValueError(f"sort must be one of {sorted(_SORTS)}, not {sort!r}")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        found = api.list_models(filter="gguf", search=query.strip() or None,
                                sort=_SORTS[sort], limit=max(1, limit),  # type: ignore[arg-type]
                                expand=_EXPAND)  # type: ignore[arg-type]
        return [_summary(m) for m in found]
    except Exception as exc:
        raise _hub_error(exc, "the model list", endpoint=endpoint) from exc


def _summary(model: Any) -> RepoSummary:
    modified = getattr(model, "last_modified", None)
    return RepoSummary(
        repo_id=model.id, downloads=int(model.downloads or 0), likes=int(model.likes or 0),
        last_modified=modified.isoformat() if modified is not None else None,
        gated=bool(model.gated), tags=tuple(model.tags or ()))


def curated_repos() -> list[CuratedEntry]:
    """Well-known instruct models to start from (resources/curated_models.json): repository
    names only, so that what is offered is always what the Hub holds now."""
    path = resources_dir() / CURATED_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    return [CuratedEntry(str(e["repo_id"]), str(e.get("family", "")), str(e.get("note", "")))
            for e in data["models"]]


# ---------------------------------------------------------------- one repository


def _files(siblings: Iterable[Any]) -> tuple[list[GGUFFile], list[GGUFFile]]:
    """(models, projectors) among a repository's files; split parts become one file.
    A split model missing a part is left out: llama.cpp could not load it."""
    by_name = {s.rfilename: s for s in siblings if s.rfilename.lower().endswith(".gguf")}
    models: list[GGUFFile] = []
    projectors: list[GGUFFile] = []
    seen: set[str] = set()
    for name in sorted(by_name):
        parts = split_parts(name)
        if parts[0] in seen or not all(p in by_name for p in parts):
            continue
        seen.add(parts[0])
        entries = [by_name[p] for p in parts]
        lfs = [getattr(e, "lfs", None) for e in entries]
        sizes = [int(e.size or (x.size if x else 0) or 0)
                 for e, x in zip(entries, lfs, strict=True)]
        quant = quant_from_filename(parts[0])
        f = GGUFFile(
            filename=parts[0], parts=tuple(parts), size=sum(sizes),
            sha256=tuple(x.sha256 if x else None for x in lfs),
            quant=quant, bits_per_weight=nominal_bits_per_weight(quant))
        is_projector = parts[0].rsplit("/", 1)[-1].lower().startswith("mmproj")
        (projectors if is_projector else models).append(f)
    return models, projectors


def _license(card_data: Any, tags: Iterable[str]) -> str | None:
    get = card_data.get if card_data is not None else (lambda _key, _default=None: None)
    value = get("license")
    if value == "other" and get("license_name"):
        value = get("license_name")
    if isinstance(value, list):  # the YAML allows a list; the first is the main one
        value = value[0] if value else None
    if value:
        return str(value)
    return next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)


def _strip_front_matter(text: str) -> str:
    """The card without its YAML header (license, tags...): those are shown as fields."""
    m = re.match(r"\A---\s*\n.*?\n---\s*(?:\n|\Z)", text, re.DOTALL)
    return text[m.end():].lstrip("\n") if m else text


def _card_text(repo_id: str, revision: str, endpoint: str, token: str | None) -> str:
    """README.md at `revision`, at most CARD_MAX_BYTES; "" if the repository has none or
    will not show it (gated repositories may hide it)."""
    url = hf_hub_url(repo_id, "README.md", revision=revision, endpoint=endpoint)
    headers = build_hf_headers(token=token)
    data = bytearray()
    try:
        with get_session().stream("GET", url, headers=headers, timeout=TIMEOUT_S,
                                  follow_redirects=True) as response:
            if response.status_code in (401, 403, 404):
                return ""
            if response.status_code >= 400:
                raise HubError(f"The Hub failed to send the model card of {repo_id} "
                               f"(HTTP {response.status_code}). Try again later.")
            # Some cards embed whole documents; the tail is not worth the wait.
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= CARD_MAX_BYTES:
                    break
    except Exception as exc:
        raise _hub_error(exc, f"the model card of {repo_id}", repo_id, endpoint) from exc
    text = bytes(data[:CARD_MAX_BYTES]).decode("utf-8", errors="ignore")
    return _strip_front_matter(text)


def repo_details(repo_id: str, *, revision: str = "main", endpoint: str | None = None,
                 token: str | None = None) -> RepoDetails:
    """A repository's GGUF files (sizes and checksums from the Hub), licence and card."""
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=TIMEOUT_S)
    except Exception as exc:
        raise _hub_error(exc, f"the files of {repo_id}", repo_id, endpoint) from exc
    commit = info.sha or revision
    models, projectors = _files(info.siblings or ())
    # The card is read at the listed commit, so a push in between cannot mix versions.
    card = _card_text(repo_id, commit, endpoint, token)
    return RepoDetails(
        repo_id=info.id or repo_id, revision=commit, files=tuple(models), card_text=card,
        license=_license(info.card_data, info.tags or ()), gated=bool(info.gated),
        projectors=tuple(projectors))
