#!/usr/bin/env bash
# The macOS download: Workbench.app in a .dmg, signed and notarized.
#
#   make setup                                   # on the Mac: .venv with llama.cpp (Metal
#   .venv/bin/pip install -e '.[package]'        #   is llama.cpp's default on Apple Silicon)
#   packaging/macos/build_dmg.sh
#
# -> dist/Workbench.app and dist/Workbench-<version>-macos-<arch>.dmg
#
# Signing and notarization happen when these are set (CI: repository secrets):
#   CODESIGN_IDENTITY   "Developer ID Application: Name (TEAMID)", in the login keychain
#                       (or a keychain the CI job imported the .p12 into)
#   NOTARY_PROFILE      a profile stored with `xcrun notarytool store-credentials`, or
#   APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD   (an app-specific password)
# Without CODESIGN_IDENTITY the app gets an ad-hoc signature: it runs on this Mac (and the
# self-test below runs), but Gatekeeper refuses it on others.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
version=$("$py" -c 'import workbench; print(workbench.__version__)')
arch=$(uname -m)
app=dist/Workbench.app
dmg=dist/Workbench-$version-macos-$arch.dmg
entitlements=packaging/macos/entitlements.plist
identity=${CODESIGN_IDENTITY:-}

echo "==> icons and the PyInstaller bundle"
"$py" packaging/render_icons.py build/icons
"$py" -m PyInstaller packaging/workbench.spec --noconfirm --distpath dist \
    --workpath build/pyinstaller

notarize() {  # submit a .zip or .dmg and wait for Apple's verdict
    if [ -n "${NOTARY_PROFILE:-}" ]; then
        xcrun notarytool submit "$1" --keychain-profile "$NOTARY_PROFILE" --wait
    elif [ -n "${APPLE_ID:-}" ]; then
        xcrun notarytool submit "$1" --apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" \
            --password "$APPLE_APP_PASSWORD" --wait
    else
        echo "    not notarized: set NOTARY_PROFILE or APPLE_ID/APPLE_TEAM_ID/APPLE_APP_PASSWORD"
        return 1
    fi
}

echo "==> signing"
if [ -n "$identity" ]; then
    # Inside out: every Mach-O file (dylibs, Python extension modules, the executable)
    # with the hardened runtime and a secure timestamp, deepest first, then the bundle.
    find "$app/Contents" -type f -print0 | while IFS= read -r -d '' f; do
        if file -b "$f" | grep -q 'Mach-O'; then
            echo "$(awk -F/ '{print NF}' <<<"$f") $f"
        fi
    done | sort -rn | cut -d' ' -f2- | while IFS= read -r f; do
        codesign --force --timestamp --options runtime --entitlements "$entitlements" \
            --sign "$identity" "$f"
    done
    codesign --force --timestamp --options runtime --entitlements "$entitlements" \
        --sign "$identity" "$app"
    codesign --verify --deep --strict --verbose=2 "$app"
else
    echo "    CODESIGN_IDENTITY not set: ad-hoc signature (runs on this Mac only)"
    codesign --force --deep --sign - "$app"
fi

echo "==> self-test of the frozen app (built-in model, Metal)"
"$app/Contents/MacOS/workbench" --self-test

if [ -n "$identity" ]; then
    echo "==> notarizing the app"
    ditto -c -k --keepParent "$app" build/Workbench-notarize.zip
    if notarize build/Workbench-notarize.zip; then
        xcrun stapler staple "$app"
    fi
fi

echo "==> $dmg"
staging=build/dmg
rm -rf "$staging" "$dmg"
mkdir -p "$staging"
cp -R "$app" "$staging/"
ln -s /Applications "$staging/Applications"
# ULFO (LZFSE) is smaller than UDZO and reads on macOS 10.11+; the app needs 12+.
hdiutil create -volname "Workbench" -srcfolder "$staging" -fs HFS+ -format ULFO -ov "$dmg"
if [ -n "$identity" ]; then
    codesign --force --timestamp --sign "$identity" "$dmg"
    echo "==> notarizing the .dmg"
    if notarize "$dmg"; then
        xcrun stapler staple "$dmg"
        spctl --assess --type open --context context:primary-signature --verbose "$dmg"
    fi
fi
echo "==> done: $dmg ($(du -h "$dmg" | cut -f1))"
