#!/usr/bin/env bash
# Stages the root filesystem of the lapse-operator image (Containerfile) from a built binary:
#
#   scripts/image-rootfs.sh BINARY DIR
#
# DIR is emptied, then holds exactly what the binary needs at run time and nothing else (no
# shell, no package manager):
#   /lapse-operator                       the binary (the image's ENTRYPOINT), without its debug
#       sections: the release profile keeps line tables for every crate (130 MB at 0.1.0), the
#       image keeps the symbols only (25 MB), so backtraces still name functions. STRIP_DEBUG=0
#       keeps the binary as built.
#   the shared libraries `ldd BINARY` lists, at the paths it lists, and the dynamic loader
#   the glibc NSS modules files and dns, and /etc/nsswitch.conf: getaddrinfo goes through NSS,
#       so without them a dynamically linked glibc binary cannot resolve host names (Azure's)
#   /etc/ssl/certs/ca-certificates.crt    the CA bundle (rustls-platform-verifier reads the
#       system roots; without it every TLS connection to Azure fails)
#   /etc/passwd, /etc/group               user and group nonroot, 65532 (the image's USER)
#   /tmp                                  an empty mount point (the chart mounts an emptyDir)
# Everything is owned by root and writable by root only, so the image runs unchanged with a
# read-only root filesystem as UID 65532.
#
# The binary must be for this machine's architecture (ldd runs its loader): the release
# workflow stages each architecture on a runner of that architecture.
# CA_BUNDLE overrides where the CA bundle is taken from (default: Debian's, package
# ca-certificates).
set -euo pipefail

die() { printf 'image-rootfs: %s\n' "$*" >&2; exit 1; }

[ "$#" -eq 2 ] || die "usage: scripts/image-rootfs.sh BINARY DIR"
binary=$1
out=$2
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

[ -f "$binary" ] && [ -x "$binary" ] || die "$binary: not an executable file (build it first: cargo build --profile dist -p lapse-operator)"
command -v ldd >/dev/null || die "ldd not found (it comes with glibc: Debian package libc-bin)"
[ -f "$ca_bundle" ] || die "$ca_bundle: no CA bundle (Debian: apt-get install ca-certificates)"

rm -rf "$out"
mkdir -p "$out"

# Copies the file behind PATH (symlinks resolved) into the root filesystem at PATH itself, so it
# is found where the binary, the loader or libc look for it.
copy() {
    local path=$1 real
    real=$(readlink -f "$path") || die "$path: cannot resolve"
    [ -f "$real" ] || die "$path: not a file"
    install -D -m "$(stat -c '%a' "$real")" "$real" "$out$path"
}

if [ "${STRIP_DEBUG:-1}" != 0 ]; then
    command -v strip >/dev/null || die "strip not found (Debian package binutils); STRIP_DEBUG=0 ships the binary unstripped"
    strip --strip-debug -o "$out/lapse-operator" "$binary"
    chmod 0755 "$out/lapse-operator"
else
    install -m 0755 "$binary" "$out/lapse-operator"
fi

# `ldd` lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` for a library,
# `/lib64/ld-linux-x86-64.so.2 (0x…)` for the loader, `linux-vdso.so.1 (0x…)` for the kernel's
# vDSO (not a file), `libx.so => not found` for a library this machine lacks.
if ! ldd_out=$(ldd "$binary" 2>&1); then
    case $ldd_out in
        *"not a dynamic executable"*) ldd_out="" ;; # static: no libraries, no loader
        *) die "ldd $binary failed: $ldd_out" ;;
    esac
fi
libc=""
loader=""
while read -r first arrow target _; do
    if [ "$arrow" = "=>" ]; then
        if [ "$target" = "not" ]; then
            die "ldd: $first not found on this machine"
        fi
        case $target in
            /*) copy "$target" ;;
            *) continue ;; # `linux-vdso.so.1 =>  (0x…)` on some systems
        esac
        if [ "$first" = "libc.so.6" ]; then
            libc=$target
        fi
    else
        case $first in
            /*) copy "$first"; loader=$first ;;
            *) ;; # linux-vdso.so.1, or "statically linked"
        esac
    fi
done <<<"$ldd_out"

if [ -n "$libc" ]; then
    [ -n "$loader" ] || die "ldd listed libc but no dynamic loader: $ldd_out"
    # NSS modules are loaded at run time (dlopen), so ldd does not list them. Since glibc 2.34
    # files and dns are built into libc and these are stubs, but older glibc needs them and
    # they are tiny.
    libdir=$(dirname "$libc")
    for module in files dns; do
        if [ -e "$libdir/libnss_$module.so.2" ]; then
            copy "$libdir/libnss_$module.so.2"
        fi
    done
    install -d -m 0755 "$out/etc"
    cat >"$out/etc/nsswitch.conf" <<'EOF'
# lapse-operator image: users and groups from /etc/passwd and /etc/group; host names from the
# /etc/hosts and /etc/resolv.conf that the container runtime provides.
passwd: files
group: files
hosts: files dns
EOF
fi

install -D -m 0644 "$(readlink -f "$ca_bundle")" "$out/etc/ssl/certs/ca-certificates.crt"

install -d -m 0755 "$out/etc"
printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$out/etc/passwd"
printf 'nonroot:x:65532:\n' >"$out/etc/group"
chmod 0644 "$out/etc/passwd" "$out/etc/group"

install -d -m 1777 "$out/tmp"

# Directories 0755 and nothing writable by group or others; owned by root where we can.
find "$out" -type d ! -path "$out/tmp" -exec chmod 0755 {} +
find "$out" -type f -exec chmod go-w {} +
if [ "$(id -u)" -eq 0 ]; then
    chown -R 0:0 "$out"
fi
