"""Typed application settings: one schema, defaults in one place, a schema version.

Stored as JSON in the platform's config dir. Window geometry is not here: it belongs to
QSettings in the UI. `WORKBENCH_HOME` moves every file the app writes (tests use it).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from workbench.engine.limits import (
    LOAD_LIMITS,
    MAX_STOPS,
    SAMPLING_LIMITS,
    clamp_fields,
)
from workbench.engine.protocol import AdapterSetting, LoadSpec, Sampling
from workbench.models.fit import FitRequest

SCHEMA_VERSION = 1
APP_NAME = "Workbench"


def data_dir() -> Path:
    """Where conversations and app data live (platformdirs user data dir)."""
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return Path(home) / "data"
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return Path(home) / "config"
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False))


_LOAD_DEFAULTS = LoadSpec(model_path="")
# The engine's load limits; here the GPU layers may also be None: "as many as fit".
MODEL_SETTINGS_LIMITS = {**LOAD_LIMITS, "n_gpu_layers": replace(LOAD_LIMITS["n_gpu_layers"],
                                                                 optional=True)}


@dataclass(frozen=True)
class ModelSettings:
    """How models are loaded: LoadSpec without the path. The defaults are LoadSpec's."""

    n_ctx: int = _LOAD_DEFAULTS.n_ctx
    # None: as many as the fit planner says fit (the user may set a number; -1: all).
    n_gpu_layers: int | None = None
    n_threads: int | None = _LOAD_DEFAULTS.n_threads
    n_batch: int = _LOAD_DEFAULTS.n_batch
    n_ubatch: int = _LOAD_DEFAULTS.n_ubatch
    flash_attn: bool = _LOAD_DEFAULTS.flash_attn
    type_k: str = _LOAD_DEFAULTS.type_k
    type_v: str = _LOAD_DEFAULTS.type_v
    chat_template: str | None = _LOAD_DEFAULTS.chat_template

    def fit_request(self) -> FitRequest:
        """The same settings as the fit planner takes them."""
        return FitRequest(n_ctx=self.n_ctx, type_k=self.type_k, type_v=self.type_v,
                          n_batch=self.n_batch, n_ubatch=self.n_ubatch,
                          flash_attn=self.flash_attn, n_gpu_layers=self.n_gpu_layers)

    def load_spec(self, model_path: str, auto_gpu_layers: int = 0) -> LoadSpec:
        """The engine's load request; `auto_gpu_layers` fills in an automatic choice."""
        values = asdict(self)
        if values["n_gpu_layers"] is None:
            values["n_gpu_layers"] = auto_gpu_layers
        return LoadSpec(model_path=model_path, **values)


@dataclass(frozen=True)
class Settings:
    schema_version: int = SCHEMA_VERSION
    last_model_path: str | None = None  # None: the built-in model
    model: ModelSettings = field(default_factory=ModelSettings)
    sampling: Sampling = field(default_factory=Sampling)
    preset: str = "Balanced"
    user_presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    library_folders: tuple[str, ...] = ()  # extra folders the Library scans for GGUFs
    # LoRA adapters in the Adapters page's list, applied to whichever model is loaded when
    # they fit it (switched off ones stay listed).
    adapters: tuple[AdapterSetting, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sampling"] = self.sampling.to_dict()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], notes: list[str] | None = None) -> Settings:
        """Tolerant: unknown keys are dropped, missing keys take defaults, a bad value
        falls back to the default rather than refusing to start, and a value outside its
        range (engine/limits.py) is clamped into it; each change is added to `notes`."""
        notes = [] if notes is None else notes
        defaults = cls()
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        kwargs["model"] = _model_from_json(_as_dict(data.get("model")), notes)
        kwargs["sampling"] = _sampling_from_json(_as_dict(data.get("sampling")), notes,
                                                 "Sampling:")
        presets = _as_dict(data.get("user_presets"))
        kwargs["user_presets"] = {
            str(name): _sampling_from_json(_as_dict(preset), notes,
                                           f"Preset “{name}”:").to_dict()
            for name, preset in presets.items()}
        kwargs["library_folders"] = tuple(str(f) for f in data.get("library_folders") or ())
        kwargs["adapters"] = _adapters_from_json(data.get("adapters"))
        kwargs["schema_version"] = SCHEMA_VERSION
        return replace(defaults, **kwargs)


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _known(data: dict[str, Any], cls: type) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _model_from_json(data: dict[str, Any], notes: list[str]) -> ModelSettings:
    values, changed = clamp_fields(_known(data, ModelSettings), ModelSettings,
                                   MODEL_SETTINGS_LIMITS, "Model:")
    notes.extend(changed)
    if values.get("type_v", "f16") != "f16" and not values.get("flash_attn", False):
        values["flash_attn"] = True
        notes.append(f"Model: a {values['type_v']} V cache needs flash attention, which is "
                     "now on.")
    template = values.get("chat_template")
    if template is not None and not isinstance(template, str):
        values["chat_template"] = None
    return ModelSettings(**values)


def _sampling_from_json(data: dict[str, Any], notes: list[str], where: str) -> Sampling:
    values, changed = clamp_fields(_known(data, Sampling), Sampling, SAMPLING_LIMITS, where)
    notes.extend(changed)
    stop = values.get("stop", [])
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        notes.append(f"{where} stop was {stop!r}, not a list of strings; it is now empty.")
        values["stop"] = ()
    elif len(stop) > MAX_STOPS:
        notes.append(f"{where} {len(stop)} stop strings; the first {MAX_STOPS} are kept.")
        values["stop"] = tuple(stop[:MAX_STOPS])
    return Sampling.from_dict(values)


def _adapters_from_json(raw: Any) -> tuple[AdapterSetting, ...]:
    out = []
    for item in raw if isinstance(raw, list) else ():
        try:
            out.append(AdapterSetting(path=str(item["path"]),
                                      scale=float(item.get("scale", 1.0)),
                                      enabled=bool(item.get("enabled", True))))
        except (TypeError, KeyError, ValueError, AttributeError):
            continue  # one damaged entry must not lose the others
    return tuple(out)


class SettingsStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "settings.json"
        # What the last load() changed to make the file's values valid, in words. The
        # corrected settings are saved at once, so the app says so once, not every start.
        self.corrections: list[str] = []

    def load(self) -> Settings:
        self.corrections = []
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return Settings()
        except (OSError, ValueError):
            # A damaged file must not stop the app; keep it for inspection.
            self.path.replace(self.path.with_suffix(".json.bad"))
            return Settings()
        if not isinstance(data, dict):
            return Settings()
        settings = Settings.from_json(migrate(data), self.corrections)
        if self.corrections:
            self.save(settings)
        return settings

    def save(self, settings: Settings) -> None:
        """Atomic write: a crash mid-save leaves the old file intact."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".settings-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(settings.to_json(), fh, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring settings written by an older version up to SCHEMA_VERSION."""
    version = int(data.get("schema_version", 1) or 1)
    # Version 1 is the first schema; later versions add steps here, one per version.
    data["schema_version"] = max(version, SCHEMA_VERSION)
    return data
