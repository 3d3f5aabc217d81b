"""Which of PySide6's Qt plugins and data files Workbench's bundle keeps.

Used by the PySide6 hook overrides in this folder (so that a dropped plugin's own
dependencies, e.g. GTK 3 for the gtk3 platform theme, are never analysed or collected) and
once more by packaging/workbench.spec over the finished analysis.

Kept: platforms xcb and offscreen (Linux), windows, cocoa; xcbglintegrations;
platformthemes xdgdesktopportal; platforminputcontexts (compose, ibus); imageformats
svg/ico/gif/jpeg; iconengines svg; styles. Wayland is left out (Qt falls back to XWayland):
it would add libwayland-* dependencies for no gain in a widgets app. No translations: the
app is in English only.
"""

from __future__ import annotations

from pathlib import PurePath

DROP_PLUGIN_DIRS = frozenset({
    "egldeviceintegrations", "generic", "networkinformation", "tls", "sqldrivers",
    "printsupport", "qmltooling", "designer", "vectorimageformats", "multimedia",
    "position", "sensors", "canbus", "sceneparsers", "renderers", "geometryloaders",
    "accessiblebridge",
    "wayland-decoration-client", "wayland-graphics-integration-client",
    "wayland-graphics-integration-server", "wayland-shell-integration",
})
DROP_PLUGINS = {
    "platforms": ("eglfs", "linuxfb", "minimal", "minimalegl", "vkkhrdisplay", "vnc",
                  "wayland", "wayland-egl", "wayland-generic", "direct2d"),
    "imageformats": ("pdf", "tiff", "webp", "tga", "wbmp", "icns"),
    "platformthemes": ("gtk3",),  # links GTK 3, which no installer declares
}


def keep(dest: str) -> bool:
    """False for a bundle path (a file's destination, or its destination folder) that
    Workbench does not need."""
    parts = PurePath(dest).parts
    if "PySide6" not in parts:
        return True
    rest = parts[parts.index("PySide6") + 1:]
    if rest[:1] == ("Qt",):
        rest = rest[1:]
    if rest[:1] == ("translations",):
        return False
    if rest[:1] == ("plugins",) and len(rest) >= 2:
        if rest[1] in DROP_PLUGIN_DIRS:
            return False
        name = rest[-1].lower()
        for bad in DROP_PLUGINS.get(rest[1], ()):
            stem = f"q{bad}"
            if any(name.startswith(p + stem + s) for p in ("lib", "")
                   for s in (".", "d.")):
                return False
    return True


def trimmed(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A hook's (source, destination folder) list without what keep() drops."""
    return [(src, dst) for src, dst in entries
            if keep(str(PurePath(dst) / PurePath(src).name))]
