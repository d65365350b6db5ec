#!/bin/sh
# Builds a minimal root filesystem from Debian's busybox-static, for tests
# and benchmarks until the image importer exists.
#
#   scripts/busybox-rootfs.sh DEST
#
# DEST is created (or emptied of a previous build) and receives:
#   bin/busybox and one symlink per applet, usr/bin -> ../bin, sbin -> bin,
#   etc/passwd and etc/group with root, builder (1000) and nobody,
#   empty mount points dev, proc, tmp, work (and no sys: the sandbox
#   mounts none).
# Everything is owned by the caller, directories 0755 and files 0644 (0755
# for busybox), so that an unprivileged user can read the tree.
set -eu

BUSYBOX=${BUSYBOX:-/bin/busybox}
if [ $# -ne 1 ]; then
    echo "usage: $0 DEST" >&2
    exit 2
fi
DEST=$1
if [ ! -x "$BUSYBOX" ]; then
    echo "error: $BUSYBOX not found: apt-get install busybox-static" >&2
    exit 1
fi
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "error: $BUSYBOX is dynamically linked: apt-get install busybox-static" >&2
    exit 1
fi

# Build beside DEST and rename, so that a half-built tree is never used.
parent=$(dirname "$DEST")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.busybox-rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"
umask 022

mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/dev" "$tmp/proc" "$tmp/tmp" "$tmp/work" "$tmp/usr/local/bin"
cp "$BUSYBOX" "$tmp/bin/busybox"
chmod 0755 "$tmp/bin/busybox"
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$tmp/bin/$applet"
done
ln -s bin "$tmp/sbin"
ln -s ../bin "$tmp/usr/bin"
ln -s ../bin "$tmp/usr/sbin"

cat >"$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
builder:x:1000:1000:builder:/tmp:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$tmp/etc/group" <<'GROUP'
root:x:0:
builder:x:1000:
nogroup:x:65534:
GROUP
printf 'localhost\n' >"$tmp/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$tmp/etc/hosts"

rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
