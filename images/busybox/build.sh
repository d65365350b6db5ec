#!/usr/bin/env bash
# Builds the `busybox` reference image, a plain rootfs tarball for tests:
#
#   images/busybox/build.sh OUT.tar
#
#   /bin/busybox          Debian's busybox-static (statically linked)
#   /bin/APPLET           a symlink to busybox for every applet it lists
#                         (sh, ls, cat, sed, awk, find, tar, gzip, ...)
#   /sbin -> bin, /usr/bin -> ../bin, /usr/sbin -> ../bin
#   /etc/passwd, /etc/group   root (0) and builder (1000), nobody (65534)
#   /tmp (1777), /work, /proc, /dev, /sys, /root, /home/builder: empty
#
# Reproducible: entries sorted by name, every mtime SOURCE_DATE_EPOCH,
# numeric owner 0:0, fixed modes, GNU format; the same busybox-static
# package version gives the same bytes. Run as root on Debian 12; installs
# busybox-static if missing. Takes a second.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi
out=$1
# Default: 2024-01-01T00:00:00Z. Any fixed value gives reproducible output.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export LC_ALL=C.UTF-8 TZ=UTC

busybox=/bin/busybox
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "error: $busybox is not a static busybox (apt-get install busybox-static)" >&2
    exit 1
fi

outdir=$(dirname "$out")
mkdir -p "$outdir"
work=$(mktemp -d "$outdir/.busybox.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
umask 022
mkdir -p "$root"/{bin,etc,tmp,work,proc,dev,sys,root,home/builder,usr}

install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list | LC_ALL=C sort -u); do
    case $applet in
        busybox | */* | "") ;;
        *) ln -s busybox "$root/bin/$applet" ;;
    esac
done
# `[[` is not an applet everywhere, `[` is: make sure the test aliases exist.
for applet in sh test '['; do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
builder:x:1000:1000:builder:/home/builder:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
builder:x:1000:
nogroup:x:65534:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"
find "$root" -type d -exec chmod 0755 {} +
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

tar --create --file="$work/out.tar" --directory="$root" \
    --sort=name --mtime="@$SOURCE_DATE_EPOCH" \
    --owner=0 --group=0 --numeric-owner --format=gnu \
    --no-acls --no-xattrs --no-selinux \
    .
chmod 0644 "$work/out.tar"
mv -f "$work/out.tar" "$out"
echo "$out: $(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1)"
