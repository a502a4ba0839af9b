#!/bin/sh
# Builds the cloudai image from a binary, without a registry (FROM scratch, legacy builder).
#
#   deploy/build-image.sh BINARY TAG        e.g. target/release/cloudai cloudai:0.1.0
#
# The binary goes in without its debug info; the debug info is kept as BINARY.debug (set
# CLOUDAI_DEBUG_OUT=PATH to put it elsewhere, or =none to drop it). Needs docker, objcopy
# (binutils), ldd, and Debian's busybox-static (/bin/busybox). util-linux's setpriv is added
# when the machine has it.
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: $0 BINARY TAG" >&2
  exit 2
fi
binary=$1
tag=$2
here=$(cd "$(dirname "$0")" && pwd)
busybox=${CLOUDAI_BUSYBOX:-/bin/busybox}

[ -x "$binary" ] || { echo "error: $binary is not an executable file" >&2; exit 1; }
[ -x "$busybox" ] || { echo "error: no busybox-static at $busybox (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
  echo "error: $busybox is linked dynamically; the image needs busybox-static" >&2
  exit 1
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/cloudai-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT INT TERM
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/usr/bin" "$root/bin" "$root/etc" "$root/var/lib/cloudai/worker" "$root/tmp"
chmod 1777 "$root/tmp"
chmod 0755 "$root/var" "$root/var/lib" "$root/var/lib/cloudai"
# A worker's data folder (<CLOUDAI_DATA_DIR>/worker): process tasks, as nobody, pass through it
# to their own 0700 folders, so it is 0711. Made here because a worker that creates it itself
# (with its identity/, 0700) makes it 0700 and then refuses to start. A volume mounted at
# /var/lib/cloudai starts as a copy of this.
chmod 0711 "$root/var/lib/cloudai/worker"

# The binary without debug info. The split-off debug info stays outside the image, linked by
# name (gdb and perf find it with `debug-file-directory` pointed at it).
debug_out=${CLOUDAI_DEBUG_OUT:-$binary.debug}
if [ "$debug_out" != none ]; then
  objcopy --only-keep-debug "$binary" "$debug_out"
  objcopy --strip-debug --add-gnu-debuglink="$debug_out" "$binary" "$root/usr/local/bin/cloudai"
else
  objcopy --strip-debug "$binary" "$root/usr/local/bin/cloudai"
fi
chmod 0755 "$root/usr/local/bin/cloudai"

# Shared libraries, at the paths the dynamic linker looks for them.
copy_libs() {
  ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_libs "$binary"

# A shell and the usual tools for process tasks: every busybox applet but setpriv (util-linux's
# is the one the worker knows how to call).
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  case "$applet" in busybox|setpriv) continue ;; esac
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
if [ -x /usr/bin/setpriv ]; then
  cp /usr/bin/setpriv "$root/usr/bin/setpriv"
  copy_libs /usr/bin/setpriv
fi

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"

cp "$here/Dockerfile" "$ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "$tag"
