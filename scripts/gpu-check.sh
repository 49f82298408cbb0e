#!/usr/bin/env bash
# The GPU check for real hardware (issue 18): run it, briefly, on any host with an NVIDIA GPU.
#
#   bash scripts/gpu-check.sh            # from the repository root, after scripts/setup.sh
#
# 1. the driver: nvidia-smi -L and the devices' memory and utilization;
# 2. the inventory: python -m ds01spawner.gpus (what NVML reports and what DS01 makes of it);
# 3. with Docker and the NVIDIA runtime: a real hub (the tests' harness, inventory "nvml") launches
#    one server on one real GPU, the script reads the session panel's figures for it (the
#    ds01-limits service, with the server's own token) and what the container sees (nvidia-smi -L
#    inside), then stops it;
# and at the end, a list of what it could NOT check. Exit status: 0 when every step ran, 1 when
# one failed, 2 when there is no NVIDIA driver (nothing GPU-related could be checked).
# Record its output in docs/gpus.md ("GPU check on real hardware").
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3
skipped=()
failed=0
say() { printf '\n== %s\n' "$*"; }
skip() { skipped+=("$*"); printf 'NOT CHECKED: %s\n' "$*"; }

say "host"
echo "$(hostname) $(uname -r) $(date -u +%Y-%m-%dT%H:%M:%SZ)"

say "1. NVIDIA driver"
driver=""
if [ -r /proc/driver/nvidia/version ]; then
    driver=$(head -n 1 /proc/driver/nvidia/version)
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/tmp/ds01-gpu-check.$$ 2>&1; then
    cat /tmp/ds01-gpu-check.$$
    nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu,mig.mode.current \
        --format=csv 2>&1
    [ -n "$driver" ] && echo "$driver"
    rm -f /tmp/ds01-gpu-check.$$
else
    rm -f /tmp/ds01-gpu-check.$$
    if [ -n "$driver" ]; then
        echo "A driver is loaded ($driver) but nvidia-smi does not answer."
    else
        echo "no NVIDIA driver: /proc/driver/nvidia/version is missing and nvidia-smi" \
            "$(command -v nvidia-smi >/dev/null 2>&1 && echo fails || echo is not installed)."
    fi
    skip "the driver, NVML, the inventory, a launch on a real GPU and the panel's real figures" \
        "(no NVIDIA driver on this host)"
    say "not checked"
    printf ' - %s\n' "${skipped[@]}"
    exit 2
fi

say "2. DS01's inventory through NVML (python -m ds01spawner.gpus)"
(cd "$repo" && "$py" -m ds01spawner.gpus) || { echo "the probe failed"; failed=1; }

say "3. a launch on a real GPU through a real hub"
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    skip "a launch on a real GPU and the session panel's figures (no Docker engine answers)"
elif ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
    skip "a launch on a real GPU and the session panel's figures (Docker has no 'nvidia' runtime;" \
        "install the NVIDIA Container Toolkit)"
elif ! docker image inspect ds01/base:latest >/dev/null 2>&1; then
    skip "a launch on a real GPU (no ds01/base:latest image; run scripts/setup.sh)"
else
    (cd "$repo" && DS01_GPU_CHECK=1 "$py" - <<'PY') || failed=1
import json, sys, tempfile, time
from pathlib import Path
import docker, requests
from tests.integration.hub import Hub, ds01_containers

client = docker.from_env()
state = Path(tempfile.mkdtemp(prefix="ds01-gpu-check-"))
hub = Hub(state, "ds01gpucheck", {"DS01_TEST_INVENTORY": "nvml"}).start(timeout=120)
try:
    t0 = time.monotonic()
    hub.start_server("gpucheck", "check", {"gpus": 1})
    print(f"launched with 1 GPU in {time.monotonic() - t0:.1f} s")
    (c,) = ds01_containers(client, hub.prefix, user="gpucheck")
    print("container's GPU label:", c.labels.get("ds01.gpus"))
    out = c.exec_run(["nvidia-smi", "-L"])
    print("nvidia-smi -L inside the container:", out.output.decode(errors="replace").strip())
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    url = f"http://127.0.0.1:{hub.port + 2}/services/ds01-limits/api/session/check"
    r = requests.get(url, headers={"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}, timeout=30)
    print("session panel data:", r.status_code)
    print(json.dumps({k: r.json().get(k) for k in ("project", "gpus", "free", "runtime", "idle")}, indent=2))
    ok = r.status_code == 200 and r.json()["gpus"] and not r.json()["gpus"][0].get("missing")
    hub.stop_server("gpucheck", "check")
    sys.exit(0 if ok and out.exit_code == 0 else 1)
finally:
    hub.shutdown()
    for c in ds01_containers(client, hub.prefix):
        c.remove(force=True)
PY
fi
skip "the JupyterLab panel in a browser on real hardware (the browser test runs on simulated GPUs)"

say "not checked"
printf ' - %s\n' "${skipped[@]}"
exit "$failed"
