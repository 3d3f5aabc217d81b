#!/usr/bin/env bash
# `make deb-install-test`: the .deb that `make package` built, installed with apt on a clean
# Debian 12 (a minimal debootstrap, nothing else on it), then the installed app's
# --self-test, then its removal.
#
# It proves what `make package-test` cannot from an extracted .deb: that the package's
# Depends pull in every system library the app needs (installed without Recommends), that
# /usr/bin/workbench starts the app from /opt/workbench, and that removing the package
# leaves nothing of it behind. Needs root (debootstrap, chroot, mount) and Debian's
# mirror (DEBIAN_MIRROR, default deb.debian.org); the first run downloads about 40 MB for
# the base system and 30 MB of X11/GL libraries. Without root it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' workbench/__init__.py)
deb=$(ls dist/workbench_"$version"_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "FAIL: no dist/workbench_${version}_*.deb: run make package" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
    echo "skipped: installing on a clean Debian 12 needs root (debootstrap, chroot)"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

root=$(mktemp -d /var/tmp/workbench-deb12.XXXXXX)
chmod 755 "$root"  # it becomes /: users (and apt's _apt) must be able to enter it
cleanup() {
    for fs in dev/pts dev proc; do
        mountpoint -q "$root/$fs" && umount -l "$root/$fs"
    done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT

echo "==> a clean Debian 12 (debootstrap --variant=minbase bookworm)"
started=$(date +%s)
debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    >"$root.log" 2>&1 || { tail -20 "$root.log"; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
echo "    $(( $(date +%s) - started )) s"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive "$@"; }

echo "==> apt-get install --no-install-recommends ./$(basename "$deb")"
cp "$deb" "$root/tmp/"
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$deb")" >/dev/null
in_root dpkg -s workbench | grep -E '^(Version|Installed-Size):' | sed 's/^/    /'

failed=0
fail() { echo "FAIL: $*"; failed=1; }
for path in /usr/bin/workbench /opt/workbench/workbench \
            /usr/share/applications/org.workbench.Workbench.desktop \
            /usr/share/metainfo/org.workbench.Workbench.metainfo.xml \
            /usr/share/icons/hicolor/256x256/apps/org.workbench.Workbench.png; do
    # /usr/bin/workbench is a link to /opt/...: test it inside the new root.
    in_root test -e "$path" || fail "$path is not installed"
done

echo "==> /usr/bin/workbench --self-test (as a user, clean environment, offscreen)"
in_root useradd -m tester
report=$(chroot "$root" env -i PATH=/usr/bin:/bin HOME=/home/tester QT_QPA_PLATFORM=offscreen \
         setpriv --reuid=tester --regid=tester --init-groups \
         /usr/bin/workbench --self-test 2>"$root/tmp/self-test.err" | grep '^{' | tail -1) || true
if echo "$report" | grep -q '"ok": true'; then
    echo "ok    $report"
else
    fail "--self-test of the installed app: ${report:-no report}"
    tail -20 "$root/tmp/self-test.err"
fi

echo "==> apt-get remove workbench"
in_root apt-get remove -y -qq workbench >/dev/null
for path in /usr/bin/workbench /opt/workbench; do
    if in_root test -e "$path" || [ -L "$root$path" ]; then fail "$path is left after removal"; fi
done

[ "$failed" = 0 ] && echo "deb install test passed" || exit 1
