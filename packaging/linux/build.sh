#!/usr/bin/env bash
# `make package`: the Linux installers, from the .venv that `make setup` built.
#
#   dist/workbench/                     the PyInstaller onedir bundle (packaging/workbench.spec)
#   dist/workbench_<version>_<arch>.deb app in /opt/workbench, /usr/bin/workbench, desktop
#                                       file, hicolor icons, AppStream metainfo
#   dist/Workbench.AppDir/              AppRun + .desktop + icon at the top, app in usr/lib
#   dist/Workbench-<version>-<arch>.AppImage   only where appimagetool and its runtime file
#                                       are present (APPIMAGETOOL, APPIMAGE_RUNTIME)
#
# The .desktop file and the metainfo are checked with desktop-file-validate and
# `appstreamcli validate --no-net` (installed with apt when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
py=${PYTHON:-.venv/bin/python}
app_id=org.workbench.Workbench
here=packaging/linux
build=build/linux
dist=dist
version=$("$py" -c 'import workbench; print(workbench.__version__)')
# The llama.cpp backend the bundle was built with (CMAKE_ARGS), for the file names of the
# GPU downloads: WORKBENCH_FLAVOR=cuda gives workbench_<version>_<arch>-cuda.deb.
flavor=${WORKBENCH_FLAVOR:-cpu}
suffix=$([ "$flavor" = cpu ] || echo "-$flavor")
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
machine=$(uname -m)
started=$(date +%s)

step() { echo "==> $*"; }
copy_tree() {  # hard links where possible: the bundle is ~300 MB and is not modified
    rm -rf "$2"; mkdir -p "$(dirname "$2")"
    cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"
}

# ------------------------------------------------------------------ tools
need_apt=()
command -v desktop-file-validate >/dev/null || need_apt+=(desktop-file-utils)
command -v appstreamcli >/dev/null || need_apt+=(appstream)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
command -v objdump >/dev/null || need_apt+=(binutils)  # PyInstaller reads ELF files with it
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing ${need_apt[*]} (apt)"
        apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "missing: ${need_apt[*]} (install them with apt, or run as root)" >&2
        exit 1
    fi
fi

# ------------------------------------------------------------------ bundle
step "icons from resources/icons/workbench.svg"
QT_QPA_PLATFORM=offscreen "$py" packaging/render_icons.py build/icons

step "PyInstaller bundle -> $dist/workbench/"
t0=$(date +%s)
"$py" -m PyInstaller packaging/workbench.spec --noconfirm --log-level WARN \
    --distpath "$dist" --workpath build/pyinstaller
echo "    built in $(( $(date +%s) - t0 )) s, $(du -sh "$dist/workbench" | cut -f1)"

# ------------------------------------------------------------------ shared desktop files
# share/ as the .deb and the AppDir both lay it out under usr/.
share=$build/share
rm -rf "$share"
install -Dm644 "$here/$app_id.desktop" "$share/applications/$app_id.desktop"
install -Dm644 "$here/$app_id.metainfo.xml" "$share/metainfo/$app_id.metainfo.xml"
install -Dm644 resources/icons/workbench.svg "$share/icons/hicolor/scalable/apps/$app_id.svg"
for png in build/icons/png/*.png; do
    size=$(basename "$png" .png)
    install -Dm644 "$png" "$share/icons/hicolor/${size}x${size}/apps/$app_id.png"
done

step "validating the desktop file and the AppStream metainfo"
desktop-file-validate "$share/applications/$app_id.desktop"
appstreamcli validate --no-net "$share/metainfo/$app_id.metainfo.xml"

# ------------------------------------------------------------------ .deb
step ".deb"
deb_root=$build/deb
rm -rf "$deb_root"
copy_tree "$dist/workbench" "$deb_root/opt/workbench"
mkdir -p "$deb_root/usr/bin" "$deb_root/usr/share/doc/workbench" "$deb_root/DEBIAN"
ln -s /opt/workbench/workbench "$deb_root/usr/bin/workbench"
cp -r "$share/." "$deb_root/usr/share/"
cat > "$deb_root/usr/share/doc/workbench/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: Workbench
License: MIT
Comment: Bundles Python, Qt (PySide6-Essentials, LGPLv3), llama.cpp (MIT), NumPy
 (BSD-3-Clause) and the SmolLM2-135M-Instruct model (Apache-2.0) under their own licenses.
COPYRIGHT

# Depends: the X11/xcb/GL/fontconfig/FreeType/D-Bus/GLib packages the bundle leaves to the
# system (system-libs.txt), and the newest glibc symbol version any bundled file needs.
depends=$(awk '!/^#/ && NF >= 2 && $2 != "-" { $1 = ""; sub(/^ /, ""); print }' \
              "$here/system-libs.txt" | awk '!seen[$0]++' | paste -sd, | sed 's/,/, /g')
glibc=$(find "$dist/workbench" -type f \( -name '*.so*' -o -perm -u+x \) -print0 |
        xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' |
        sed 's/GLIBC_//' | sort -uV | tail -1)
installed_kb=$(du -sk --exclude=DEBIAN "$deb_root" | cut -f1)
cat > "$deb_root/DEBIAN/control" <<CONTROL
Package: workbench
Version: $version
Architecture: $arch
Maintainer: Workbench developers <workbench@users.noreply.invalid>
Installed-Size: $installed_kb
Depends: libc6 (>= $glibc), $depends
Section: science
Priority: optional
Description: run, tune and understand local language models
 Workbench runs GGUF language models on this computer through llama.cpp (CPU
 build), shows what each sampling knob does, compares settings, quantizations
 and LoRA adapters, and finds and downloads models that fit this machine.
 It carries its own Python, Qt and llama.cpp, and a built-in model
 (SmolLM2-135M-Instruct) so that it chats offline at once.
CONTROL
deb=$dist/workbench_${version}_${arch}${suffix}.deb
t0=$(date +%s)
dpkg-deb --build --root-owner-group "$deb_root" "$deb" >/dev/null
echo "    $deb: $(du -h "$deb" | cut -f1) in $(( $(date +%s) - t0 )) s"
echo "    Depends: libc6 (>= $glibc), $depends"

# ------------------------------------------------------------------ AppDir / AppImage
step "AppDir"
appdir=$dist/Workbench.AppDir
rm -rf "$appdir"
copy_tree "$dist/workbench" "$appdir/usr/lib/workbench"
cp -r "$share" "$appdir/usr/share"
# appimagetool looks for the AppStream file under its older name.
mv "$appdir/usr/share/metainfo/$app_id.metainfo.xml" \
   "$appdir/usr/share/metainfo/$app_id.appdata.xml"
install -m755 "$here/AppRun" "$appdir/AppRun"
cp "$here/$app_id.desktop" "$appdir/$app_id.desktop"
cp build/icons/png/256.png "$appdir/$app_id.png"
ln -s "$app_id.png" "$appdir/.DirIcon"
echo "    $appdir"

appimagetool=${APPIMAGETOOL:-$(command -v appimagetool || command -v appimagetool-"$machine".AppImage || true)}
runtime=${APPIMAGE_RUNTIME:-build/appimage/runtime-$machine}
if [ -n "$appimagetool" ] && [ -x "$appimagetool" ] && [ -f "$runtime" ]; then
    step "AppImage"
    image=$dist/Workbench-$version-$machine$suffix.AppImage
    ARCH=$machine "$appimagetool" --no-appstream --runtime-file "$runtime" "$appdir" "$image"
    echo "    $image: $(du -h "$image" | cut -f1)"
else
    echo "skipped: AppImage: appimagetool and its runtime file (runtime-$machine) are not on" \
         "this machine (set APPIMAGETOOL and APPIMAGE_RUNTIME to build it from $appdir)"
fi

echo "==> done in $(( $(date +%s) - started )) s:" \
     "bundle $(du -sh "$dist/workbench" | cut -f1), .deb $(du -h "$deb" | cut -f1)"
