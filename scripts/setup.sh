#!/usr/bin/env bash
# Install (idempotently) everything the demo and the tests need on a fresh Debian machine:
#   - a running Docker engine (Debian's docker.io when no engine answers),
#   - configurable-http-proxy (npm),
#   - a Python virtual environment in .venv with ds01spawner and its test tools,
#   - the offline DS01 base image (images/offline/build.sh; skipped when its content tag exists),
#   - with --browser (scripts/test.sh): Debian's chromium, for the Playwright browser tests.
# Each step checks before it acts, so a second run takes a few seconds.
# Needs root (it installs packages and starts dockerd).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

log() { printf '[ds01 setup] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_docker() {
    if docker info >/dev/null 2>&1; then
        log "Docker engine is running"
        return
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        log "installing Debian's docker.io"
        apt_install docker.io
    fi
    # A pid file left by an engine that was killed stops a new one from starting.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    if [ -f /run/docker/containerd/containerd.pid ] && ! kill -0 "$(cat /run/docker/containerd/containerd.pid)" 2>/dev/null; then
        rm -f /run/docker/containerd/containerd.pid
    fi
    log "starting dockerd (log: /var/log/ds01-dockerd.log)"
    setsid nohup dockerd >/var/log/ds01-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        if docker info >/dev/null 2>&1; then
            log "Docker engine is up"
            return
        fi
        sleep 0.5
    done
    log "dockerd did not answer within 60 s; last lines of its log:"
    tail -n 20 /var/log/ds01-dockerd.log >&2 || true
    exit 1
}

ensure_proxy() {
    if command -v configurable-http-proxy >/dev/null 2>&1; then
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        log "installing Node.js and npm"
        apt_install nodejs npm
    fi
    log "installing configurable-http-proxy from npm"
    npm install -g --silent configurable-http-proxy >/dev/null
}

ensure_tools() {
    local missing=()
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    command -v git >/dev/null 2>&1 || missing+=(git)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

ensure_venv() {
    local stamp=.venv/.ds01-installed want
    want=$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    log "creating .venv and installing ds01spawner with its test tools"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PIP_EXTRA_INDEX_URL= .venv/bin/python -m pip install -q --upgrade pip
    PIP_EXTRA_INDEX_URL= .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" >"$stamp"
}

ensure_base_image() {
    local version
    version=$(.venv/bin/python -c 'import jupyterhub; print(jupyterhub.__version__)')
    JUPYTERHUB_VERSION="$version" bash images/offline/build.sh
}

ensure_browser() {
    if command -v chromium >/dev/null 2>&1; then
        return
    fi
    log "installing chromium (browser tests)"
    apt_install chromium
}

ensure_tools
[ "${1:-}" = "--browser" ] && ensure_browser
ensure_docker
ensure_proxy
ensure_venv
ensure_base_image
log "ready"
