"""What one refresh of the JupyterLab "DS01 session" panel costs, side by side with ``/api/limits``.

    .venv/bin/python benchmarks/session_panel.py [--requests 30]

A real hub (the tests' harness, simulated GPUs, a limits file) and one server with a GPU; then,
in turn (a, b, c, a, b, c, ...), ``--requests`` times each:

- **a** ``GET /services/ds01-limits/api/limits``: the existing JSON API (limits and use);
- **b** ``GET /services/ds01-limits/api/session/<server>``: the panel's data (adds the GPU
  inventory, the culler's record and the queue), asked with the server's own token;
- **c** ``GET /user/<u>/<server>/ds01/session``: what the browser asks, through the proxy and the
  server extension in the container, which asks b.

Prints min / median / max milliseconds. Traffic goes to 127.0.0.1 only; everything is removed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Hub, ds01_containers  # noqa: E402

LIMITS = """defaults:
  {keys}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30)
    n = ap.parse_args().requests
    state = Path(tempfile.mkdtemp(prefix="ds01bench-session-"))
    keys = "max_gpu_equivalents: null\n  max_gpus_per_server: null\n  allow_full_gpu: true\n"
    keys += "  max_servers: 3\n  cpus: null\n  memory: null\n  shm_size: null\n  pids_limit: null\n"
    keys += '  max_runtime: "8h"\n  idle_timeout: "1h"'
    (state / "limits.yaml").write_text(LIMITS.format(keys=keys))
    client = docker.from_env()
    hub = Hub(state, "ds01benchs", {"DS01_TEST_LIMITS": str(state / "limits.yaml")}).start()
    try:
        hub.start_server("bench", "panel", {"gpus": 1})
        (c,) = ds01_containers(client, hub.prefix, user="bench")
        env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
        auth = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
        service = f"http://127.0.0.1:{hub.port + 2}/services/ds01-limits/api"
        urls = {
            "a /api/limits": f"{service}/limits",
            "b /api/session": f"{service}/session/panel",
            "c via the server": f"{hub.url}/user/bench/panel/ds01/session",
        }
        s = requests.Session()
        times: dict[str, list[float]] = {k: [] for k in urls}
        for _ in range(n + 1):  # the first round warms up
            for k, url in urls.items():
                t0 = time.perf_counter()
                r = s.get(url, headers=auth, timeout=30)
                times[k].append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (k, r.status_code, r.text[:200])
        print(f"{'variant':<20} {'min ms':>8} {'median ms':>10} {'max ms':>8}   ({n} requests)")
        for k, ts in times.items():
            ts = ts[1:]
            print(f"{k:<20} {min(ts):8.1f} {statistics.median(ts):10.1f} {max(ts):8.1f}")
    finally:
        hub.shutdown()
        for c in ds01_containers(client, hub.prefix):
            c.remove(force=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
