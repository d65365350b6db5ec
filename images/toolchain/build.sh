#!/usr/bin/env bash
# Builds the `toolchain` reference image: Debian 12 (bookworm) minbase plus
# gcc, make and libc6-dev, as a plain rootfs tarball for `hermetic image import`.
#
#   images/toolchain/build.sh OUT.tar
#
# Reproducible: two runs against the same mirror content give the same bytes.
# mmdebstrap honours SOURCE_DATE_EPOCH (mtimes, tar order, machine-id, logs);
# this script also removes what differs between hosts (resolv.conf, hostname)
# or between runs (apt caches, *-old backups, .pyc files).
#
# The mirror is the one this machine's apt configuration names for bookworm,
# bookworm-updates and bookworm-security (deb822 *.sources or one-line
# *.list), so the image carries the packages the machine itself would install.
#
# Needs root on Debian 12; installs mmdebstrap if missing. About a minute.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi
out=$1
# Default: 2024-01-01T00:00:00Z. Any fixed value gives reproducible output.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export LC_ALL=C.UTF-8 TZ=UTC

if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (mmdebstrap --mode=root)" >&2
    exit 1
fi
if ! command -v mmdebstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi

# The machine's own bookworm entries, as one-line sources.
mapfile -t mirrors < <(python3 - <<'PY'
import glob, re
suites = {"bookworm", "bookworm-updates", "bookworm-security"}
out = []
def add(uri, suite, comps):
    if suite in suites and "main" in comps:
        line = f"deb {uri.rstrip('/')} {suite} main"
        if line not in out:
            out.append(line)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        text = open(path).read()
    except OSError:
        continue
    for line in text.splitlines():
        line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(line) >= 4 and line[0] == "deb":
            add(line[1], line[2], line[3:])
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"])[0] == "no":
            continue
        for uri in fields.get("uris", []):
            for suite in fields.get("suites", []):
                add(uri, suite, fields.get("components", []))
# Main archive first, then updates, then security.
out.sort(key=lambda l: ["bookworm", "bookworm-updates", "bookworm-security"].index(l.split()[2]))
print("\n".join(out))
PY
)
if [ ${#mirrors[@]} -eq 0 ] || [ -z "${mirrors[0]}" ]; then
    echo "error: no bookworm entry in /etc/apt/sources.list*" >&2
    exit 1
fi

outdir=$(dirname "$out")
mkdir -p "$outdir"
tmp=$(mktemp "$outdir/.toolchain.XXXXXX.tar")
trap 'rm -f "$tmp"' EXIT

# Host-specific or run-specific files, removed inside the chroot before it
# is packed (mmdebstrap's own cleanup already handles dpkg/apt logs,
# alternatives.log, ldconfig aux-cache and machine-id).
strip='set -e; r="$1"
rm -f "$r/etc/resolv.conf" "$r/etc/hostname"
: > "$r/etc/machine-id"
rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r/var/cache/ldconfig/aux-cache"
find "$r/var/log" -type f -delete
rm -f "$r"/var/lib/dpkg/*-old "$r"/var/cache/debconf/*-old
find "$r" -xdev \( -name "*.pyc" -o -name __pycache__ \) -prune -exec rm -rf {} +'

mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
    --include=gcc,make,libc6-dev \
    --customize-hook="$strip" \
    bookworm "$tmp" "${mirrors[@]}"

chmod 0644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
echo "$out: $(stat -c %s "$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1)"
