from __future__ import annotations

import json
from pathlib import Path

from workbench.engine.protocol import Sampling
from workbench.settings import SCHEMA_VERSION, ModelSettings, Settings, SettingsStore, config_dir


def test_settings_live_under_workbench_home(workbench_home: Path) -> None:
    assert config_dir().is_relative_to(workbench_home)


def test_defaults_roundtrip(tmp_path: Path) -> None:
    store = SettingsStore(tmp_path / "s.json")
    assert store.load() == Settings()
    changed = Settings(sampling=Sampling(temperature=0.2, stop=("END",)),
                       model=ModelSettings(n_ctx=8192), preset="Custom",
                       user_presets={"Mine": Sampling(top_k=5).to_dict()})
    store.save(changed)
    again = store.load()
    assert again == changed and again.sampling.stop == ("END",)
    assert json.loads((tmp_path / "s.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_damaged_or_foreign_settings_fall_back_to_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    assert SettingsStore(path).load() == Settings()
    assert (tmp_path / "s.json.bad").exists()
    path.write_text(json.dumps({"sampling": {"temperature": 1.5, "future_knob": 3},
                                "model": {"n_ctx": 1024, "unknown": 1}, "extra": True}))
    loaded = SettingsStore(path).load()
    assert loaded.sampling.temperature == 1.5 and loaded.model.n_ctx == 1024


def test_model_settings_mirror_load_spec() -> None:
    from dataclasses import fields

    from workbench.engine.protocol import LoadSpec

    assert [f.name for f in fields(ModelSettings)] == [
        f.name for f in fields(LoadSpec) if f.name != "model_path"]
    assert ModelSettings().load_spec("/m.gguf") == LoadSpec("/m.gguf")
    # GPU layers default to the planner's choice, passed in at load time.
    assert ModelSettings().load_spec("/m.gguf", auto_gpu_layers=31).n_gpu_layers == 31
    assert ModelSettings(n_gpu_layers=4).load_spec("/m.gguf", 31).n_gpu_layers == 4
    req = ModelSettings(n_ctx=2048, type_k="q8_0", flash_attn=True).fit_request()
    assert (req.n_ctx, req.type_k, req.flash_attn, req.n_gpu_layers) == (2048, "q8_0", True,
                                                                         None)


def test_model_settings_make_a_load_spec() -> None:
    spec = ModelSettings(n_ctx=1234, type_k="q8_0").load_spec("/m.gguf")
    assert (spec.model_path, spec.n_ctx, spec.type_k) == ("/m.gguf", 1234, "q8_0")
