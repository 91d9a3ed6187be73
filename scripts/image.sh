#!/usr/bin/env bash
# The lapse-operator container image (Containerfile; docs/install.md#container-image).
#
#   scripts/image.sh build [BINARY]  stage the root filesystem from BINARY (default: the dist
#                                    build, CARGO_TARGET_DIR/dist/lapse-operator) with
#                                    scripts/image-rootfs.sh and build IMAGE from it
#   scripts/image.sh builder         print the builder these commands use, or say why there is
#                                    none (exit 1)
#   scripts/image.sh export DIR      unpack IMAGE's root filesystem into DIR (created; must be
#                                    empty), as a container runtime would
#   scripts/image.sh config          print IMAGE's runtime config (User, Entrypoint, Cmd, Env,
#                                    Labels) as JSON
#   scripts/image.sh remove          remove IMAGE
#
# `make image` runs `build` on the dist build (Cargo.toml's `[profile.dist]`). The builder is the first usable one of
# docker (its daemon answers), podman and buildah, or IMAGE_BUILDER. buildah runs with
# BUILDAH_STORAGE_DRIVER (default vfs, which works inside containers) and chroot isolation, so
# it needs neither a daemon nor overlayfs. No base image is pulled (FROM scratch), so no
# registry is needed.
#
# Environment: IMAGE (default lapse-operator:dev), IMAGE_BUILDER, IMAGE_CONTEXT (where the
# context is staged; default CARGO_TARGET_DIR/image-context), and the labels' VERSION (default:
# the workspace version in Cargo.toml), REVISION (default: git HEAD, `-dirty` with uncommitted
# changes), CREATED (default: now, or SOURCE_DATE_EPOCH when set).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=${IMAGE:-lapse-operator:dev}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lapse-target}

die() { printf 'image: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

buildah_cmd() { buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}" "$@"; }

# Whether builder $1 can build here; on failure prints why on stdout.
usable() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "$1: not installed"
        return 1
    fi
    case $1 in
        docker)
            docker info >/dev/null 2>&1 && return 0
            echo "docker: installed, but its daemon does not answer (docker info fails)" ;;
        podman)
            podman info >/dev/null 2>&1 && return 0
            echo "podman: installed, but podman info fails" ;;
        buildah)
            buildah_cmd info >/dev/null 2>&1 && return 0
            echo "buildah: installed, but buildah info fails (rootless needs subuids; as root it should just work)" ;;
        *)
            echo "$1: not a builder this script knows (docker, podman, buildah)" ;;
    esac
    return 1
}

# Prints the builder to use, or why there is none (exit 1).
detect() {
    local why
    if [ -n "${IMAGE_BUILDER:-}" ]; then
        why=$(usable "$IMAGE_BUILDER") || { echo "IMAGE_BUILDER=$IMAGE_BUILDER is not usable: $why"; return 1; }
        echo "$IMAGE_BUILDER"
        return 0
    fi
    local reasons=()
    for b in docker podman buildah; do
        if why=$(usable "$b"); then
            echo "$b"
            return 0
        fi
        reasons+=("$why")
    done
    local joined=""
    for why in "${reasons[@]}"; do
        joined+="${joined:+; }$why"
    done
    echo "no usable image builder ($joined); install one, e.g. on Debian: apt-get install buildah"
    return 1
}

builder() {
    local b
    b=$(detect) || die "$b"
    echo "$b"
}

arch() {
    case $(uname -m) in
        x86_64 | amd64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        *) die "unsupported architecture $(uname -m)" ;;
    esac
}

workspace_field() { # $1: a key of [workspace.package] in Cargo.toml
    sed -n '/^\[workspace.package\]/,/^\[/s/^'"$1"' *= *"\(.*\)"/\1/p' Cargo.toml | head -n1
}

cmd_build() {
    local binary=${1:-$CARGO_TARGET_DIR/dist/lapse-operator}
    local b a context version revision created source
    b=$(builder)
    a=$(arch)
    context=${IMAGE_CONTEXT:-$CARGO_TARGET_DIR/image-context}
    log "staging the root filesystem from $binary into $context/rootfs/$a"
    rm -rf "$context"
    scripts/image-rootfs.sh "$binary" "$context/rootfs/$a"

    version=${VERSION:-$(workspace_field version)}
    source=${SOURCE:-$(workspace_field repository)}
    if [ -n "${REVISION:-}" ]; then
        revision=$REVISION
    elif revision=$(git rev-parse HEAD 2>/dev/null); then
        git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
    else
        revision=unknown
    fi
    if [ -n "${CREATED:-}" ]; then
        created=$CREATED
    elif [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
        created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
    else
        created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    fi

    local args=(-f Containerfile -t "$IMAGE" --platform "linux/$a"
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
        --build-arg "CREATED=$created" --build-arg "SOURCE=$source")
    local previous
    previous=$(image_id "$b")
    log "building $IMAGE with $b (version $version, revision $revision)"
    case $b in
        docker) docker build "${args[@]}" "$context" ;;
        podman) podman build --format oci "${args[@]}" "$context" ;;
        buildah) buildah_cmd build --isolation chroot --format oci "${args[@]}" "$context" ;;
    esac
    # The image this tag named before is left untagged; remove it unless something else uses it
    # (vfs storage keeps a full copy of each).
    if [ -n "$previous" ] && [ "$previous" != "$(image_id "$b")" ]; then
        case $b in
            buildah) buildah_cmd rmi "$previous" >/dev/null 2>&1 || true ;;
            *) "$b" rmi "$previous" >/dev/null 2>&1 || true ;;
        esac
    fi
    log "built $IMAGE ($(image_size "$b"))"
}

# The container `export` makes, removed on exit (global: the EXIT trap runs after the function).
export_builder=""
export_ctr=""
export_cleanup() {
    [ -n "$export_ctr" ] || return 0
    case $export_builder in
        docker | podman) "$export_builder" rm "$export_ctr" >/dev/null 2>&1 || true ;;
        buildah)
            buildah_cmd umount "$export_ctr" >/dev/null 2>&1 || true
            buildah_cmd rm "$export_ctr" >/dev/null 2>&1 || true
            ;;
    esac
}

# The ID of IMAGE, empty when there is none.
image_id() {
    case $1 in
        buildah) { buildah_cmd images --quiet --no-trunc "$IMAGE" 2>/dev/null || true; } | head -n1 ;;
        *) { "$1" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true; } | head -n1 ;;
    esac
}

image_size() {
    case $1 in
        buildah) { buildah_cmd images --format '{{.Size}}' "$IMAGE" 2>/dev/null || true; } | head -n1 ;;
        *) { "$1" image inspect --format '{{.Size}} bytes' "$IMAGE" 2>/dev/null || true; } | head -n1 ;;
    esac
}

cmd_export() {
    [ "$#" -eq 1 ] || die "usage: scripts/image.sh export DIR"
    local dir=$1 b mnt
    b=$(builder)
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
    export_builder=$b
    trap export_cleanup EXIT
    case $b in
        docker | podman)
            export_ctr=$("$b" create "$IMAGE")
            "$b" export "$export_ctr" | tar -C "$dir" -xpf -
            ;;
        buildah)
            export_ctr=$(buildah_cmd from --pull-never --quiet "$IMAGE")
            mnt=$(buildah_cmd mount "$export_ctr")
            tar -C "$mnt" -cf - . | tar -C "$dir" -xpf -
            ;;
    esac
}

cmd_config() {
    local b
    b=$(builder)
    case $b in
        docker | podman) "$b" image inspect --format '{{json .Config}}' "$IMAGE" ;;
        buildah)
            # buildah's --format has no json function; its full inspect holds the OCI config.
            local inspect
            inspect=$(buildah_cmd inspect --type image "$IMAGE") || die "no image $IMAGE"
            python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"]))' <<<"$inspect"
            ;;
    esac
}

cmd_remove() {
    local b
    b=$(builder)
    case $b in
        docker | podman) "$b" rmi "$IMAGE" >/dev/null ;;
        buildah) buildah_cmd rmi "$IMAGE" >/dev/null ;;
    esac
}

case ${1:-} in
    build) shift; cmd_build "$@" ;;
    builder) shift; builder ;;
    export) shift; cmd_export "$@" ;;
    config) shift; cmd_config ;;
    remove) shift; cmd_remove ;;
    *) die "usage: scripts/image.sh build [BINARY] | builder | export DIR | config | remove" ;;
esac
