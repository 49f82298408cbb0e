#!/usr/bin/env bash
# Offline recipe for the DS01 base image, for machines that reach no container registry.
#
# It makes the same runtime as images/base/Dockerfile (minus CUDA): Debian bookworm, Python 3,
# a virtual environment in /opt/ds01/venv with jupyterhub (pinned to the hub's version) and JupyterLab,
# /home writable by any uid (HOME is made at start), /workspace as the working directory.
#
# The image is tagged ds01/base:<hash of this recipe> and ds01/base:latest, and built only when the
# hash tag is missing. The root filesystem is cached as a tarball under $DS01_CACHE (default
# ~/.cache/ds01), so a machine whose Docker engine lost its images re-imports it in seconds.
#
# Usage: JUPYTERHUB_VERSION=6.1.1 bash images/offline/build.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
: "${JUPYTERHUB_VERSION:?set JUPYTERHUB_VERSION to the jupyterhub version of the hub}"
repo=${DS01_BASE_REPO:-ds01/base}
cache=${DS01_CACHE:-$HOME/.cache/ds01}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[ds01 base image] %s\n' "$*" >&2; }

# ---- DS01 session panel (images/labextension): its sources are part of the recipe's hash ----
labext="$here/../labextension"
labext_hash=$( (cd "$labext" && find . -type f ! -path './node_modules/*' ! -path './build/*' \
    ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
# ---- end DS01 session panel ----

hash=$( (cat "$here/build.sh" "$here/requirements.txt" "$here/../base/lab-overrides.json"; echo "jupyterhub==$JUPYTERHUB_VERSION"
    echo "labextension=$labext_hash") | sha256sum | cut -c1-12)
tag="$repo:$hash"

if docker image inspect "$tag" >/dev/null 2>&1; then
    docker tag "$tag" "$repo:latest"
    log "$tag is present"
    exit 0
fi

mkdir -p "$cache"
tarball="$cache/base-$hash.tar.gz"
import_changes=(
    -c "ENV PATH=/opt/ds01/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    -c "ENV LANG=C.UTF-8"
    -c "WORKDIR /workspace"
    -c "CMD [\"jupyterhub-singleuser\"]"
    -c "LABEL ds01.base.recipe=$hash ds01.base.jupyterhub=$JUPYTERHUB_VERSION"
)

# ---- DS01 session panel ----
# The prebuilt JupyterLab extension "DS01 session" (images/labextension): built with the npm
# registry's @jupyter/builder against the JupyterLab just installed in the root filesystem, cached
# as $cache/labext-<sources hash>/ (node_modules as $cache/labext-node-<lockfile hash>/), and
# installed into the venv with its server extension. No node, npm or registry: the image is
# built without the panel (a warning; JupyterLab works as before).
install_session_panel() {
    local rootfs=$1 built="$cache/labext-$labext_hash" site
    site=$(echo "$rootfs"/opt/ds01/venv/lib/python3*/site-packages)
    if [ ! -s "$built/ds01-session/package.json" ]; then
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
            log "WARNING: no node/npm on this host: the image has no DS01 session panel"
            return 0
        fi
        local nm="$cache/labext-node-$(sha256sum "$labext/package-lock.json" | cut -c1-12)"
        local src
        src=$(mktemp -d /var/tmp/ds01-labext.XXXXXX)
        if [ ! -d "$nm/node_modules" ]; then
            log "installing the JupyterLab extension builder from the npm registry into $nm"
            mkdir -p "$nm.part" && cp "$labext/package.json" "$labext/package-lock.json" "$nm.part/"
            (cd "$nm.part" && npm ci --ignore-scripts --no-audit --no-fund >npm.log 2>&1) || {
                tail -n 20 "$nm.part/npm.log" >&2
                log "WARNING: npm ci failed: the image has no DS01 session panel"
                rm -rf "$src"
                return 0
            }
            rm -rf "$nm" && mv "$nm.part" "$nm"
        fi
        cp -r "$labext/package.json" "$labext/src" "$labext/style" "$src/"
        ln -s "$nm/node_modules" "$src/node_modules"
        log "building the DS01 session JupyterLab extension"
        (cd "$src" && node node_modules/@jupyter/builder/lib/build-labextension.js \
            --core-package-file "$site/jupyterlab/staging/package.json" .) >"$src/build.log" 2>&1 || {
            tail -n 30 "$src/build.log" >&2
            rm -rf "$src"
            log "ERROR: the DS01 session extension does not build"
            return 1
        }
        rm -rf "$built" && mkdir -p "$built" && cp -r "$src/build/ds01-session" "$built/"
        rm -rf "$src"
    fi
    mkdir -p "$rootfs/opt/ds01/venv/share/jupyter/labextensions" "$rootfs/opt/ds01/venv/etc/jupyter/jupyter_server_config.d"
    cp -r "$built/ds01-session" "$rootfs/opt/ds01/venv/share/jupyter/labextensions/"
    cp -r "$labext/ds01_session" "$site/"
    cp "$labext/jupyter-config/jupyter_server_config.d/ds01_session.json" \
        "$rootfs/opt/ds01/venv/etc/jupyter/jupyter_server_config.d/"
    log "installed the DS01 session panel (extension $labext_hash)"
}
# ---- end DS01 session panel ----

if [ ! -s "$tarball" ]; then
    work=$(mktemp -d /var/tmp/ds01-base.XXXXXX)
    trap 'umount "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
    rootfs="$work/rootfs"
    log "debootstrap $suite into $rootfs (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini \
        "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        exit 1
    }
    log "installing jupyterhub==$JUPYTERHUB_VERSION and JupyterLab into /opt/ds01/venv"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    cp "$here/requirements.txt" "$rootfs/tmp/requirements.txt"
    # The host's CA bundle lets pip through a TLS-inspecting proxy; it is removed again below.
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$rootfs/tmp/host-ca.crt"
    mount -t proc proc "$rootfs/proc"
    chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/tmp/host-ca.crt \
        /bin/sh -ec "python3 -m venv /opt/ds01/venv
            /opt/ds01/venv/bin/pip install -q --no-cache-dir --disable-pip-version-check \
                jupyterhub==$JUPYTERHUB_VERSION -r /tmp/requirements.txt
            # rfc3987-syntax (an optional jsonschema extra) builds a grammar at import time and
            # adds about 2.3 s to every server start; jsonschema works without it.
            /opt/ds01/venv/bin/pip uninstall -q -y rfc3987-syntax lark"
    umount "$rootfs/proc"
    # ---- DS01 session panel: build (cached) and install the JupyterLab extension ----
    install_session_panel "$rootfs"
    # ---- end DS01 session panel ----
    # DS01: a managed JupyterLab never asks about Jupyter news (images/base/lab-overrides.json)
    mkdir -p "$rootfs/opt/ds01/venv/share/jupyter/lab/settings/overrides.d"
    cp "$here/../base/lab-overrides.json" "$rootfs/opt/ds01/venv/share/jupyter/lab/settings/overrides.d/ds01.json"
    # Leave no host configuration, caches or package lists in the image.
    rm -f "$rootfs/etc/resolv.conf" "$rootfs/tmp/requirements.txt" "$rootfs/tmp/host-ca.crt"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/root/.cache
    mkdir -p "$rootfs/workspace"
    chmod 1777 "$rootfs/home" "$rootfs/workspace"
    log "packing the root filesystem into $tarball"
    tar --numeric-owner -C "$rootfs" -czf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi

log "importing $tarball as $tag"
docker import "${import_changes[@]}" "$tarball" "$tag" >/dev/null
docker tag "$tag" "$repo:latest"
log "built $tag"
