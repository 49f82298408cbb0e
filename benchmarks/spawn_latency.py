#!/usr/bin/env python3
"""Spawn latency of DS01Spawner, side by side with a floor and with plain DockerSpawner.

Variants, alternated within each round (a, b, c, a, b, c, ...) so that drift hits all alike:

  a  floor: ``docker run`` of ds01/base:latest on the host network running the image's own
     jupyterhub-singleuser (a stub hub answers its start-up calls) as a non-root uid, from the run
     call until ``GET /api`` first answers 200 (polled every 20 ms). ``--floor-app lab`` runs
     ``jupyter lab`` instead.
  b  plain DockerSpawner (benchmarks/plain_spawner.py: host network, nothing else) in a real
     jupyterhub, from ``POST /hub/api/users/<u>/servers/<s>`` until the hub reports it ready.
  c  DS01Spawner in a real jupyterhub running the repo's jupyterhub_config.py, measured as b.

Each measured spawn is also split into phases from Docker's own timestamps (container created,
container started, the "Jupyter Server ... is running at" log line) to show where time goes.

Usage: .venv/bin/python benchmarks/spawn_latency.py [--rounds 5] [--json out.json]
Everything it makes (hubs, proxies, containers named ds01bench-*, temp dirs) is removed at exit,
also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import requests  # noqa: E402

from benchmarks.common import Hub, fmt, raise_interrupted, stop_hub  # noqa: E402
from benchmarks.plain_spawner import free_loopback_port  # noqa: E402

IMAGE = "ds01/base:latest"
PREFIX = "ds01bench"  # every container this script makes starts with this
SERVER = "bench"  # named server used by the hub variants
BENCH_CONFIG = REPO / "benchmarks" / "hub_config.py"
RUNNING_AT = "is running at"  # Jupyter Server's log line once it listens

VARIANTS = {
    "a": "floor: docker run -> HTTP 200",
    "b": "plain DockerSpawner via hub",
    "c": "DS01Spawner via hub",
}
PHASES = [
    ("until_created", "until created"),
    ("created_to_started", "created->started"),
    ("started_to_running_at", "started->'running at'"),
    ("running_at_to_ready", "'running at'->ready"),
]
TARGET_FLOOR_RATIO = 1.5
TARGET_PLAIN_RATIO = 1.0


class BenchHub(Hub):
    """harness.hub's Hub (the test hub), started with benchmarks/hub_config.py."""

    def __init__(self, state_dir: Path, variant: str, debug: bool) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        extra = {"DS01_BENCH_VARIANT": variant, "DS01_BENCH_DEBUG": "1" if debug else ""}
        super().__init__(state_dir, PREFIX, extra_env=extra, config=BENCH_CONFIG)
        self.variant = variant

    def start(self, timeout: float = 90) -> BenchHub:
        try:
            super().start(timeout)
        except (TimeoutError, AssertionError) as e:
            raise RuntimeError(f"the {self.variant} hub did not start: {e}") from e
        return self


# ---- timestamps ---------------------------------------------------------------------------------

_DOCKER_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 time with nanoseconds as epoch seconds; None for unset or unknown."""
    m = _DOCKER_TIME.match(text or "")
    if not m or m[1].startswith("0001-"):
        return None
    zone = "+00:00" if m[3] == "Z" else m[3]
    base = datetime.fromisoformat(m[1] + zone).timestamp()
    return base + (float("0." + m[2]) if m[2] else 0.0)


def container_phases(client: docker.DockerClient, container_id: str, t0: float, t_ready: float):
    """Split [t0, t_ready] at Docker's created/started times and the 'running at' log line."""
    info = client.api.inspect_container(container_id)
    logs = client.api.logs(container_id, stdout=True, stderr=True, timestamps=True)
    logs = logs.decode("utf-8", "replace")
    created = docker_time(info.get("Created"))
    started = docker_time(info.get("State", {}).get("StartedAt"))
    running_at = None
    for line in logs.splitlines():
        if RUNNING_AT in line:
            running_at = docker_time(line.split(" ", 1)[0])
            break
    marks = [t0, created, started, running_at, t_ready]
    phases = {}
    for (key, _), begin, end in zip(PHASES, marks, marks[1:], strict=False):
        phases[key] = round(end - begin, 4) if begin is not None and end is not None else None
    return phases, logs


# ---- the three variants -------------------------------------------------------------------------


class StubHub:
    """The two hub API calls jupyterhub-singleuser makes while it starts, answered at once.

    jupyterhub-singleuser will not serve until ``GET <JUPYTERHUB_API_URL>`` answers (it retries with
    backoff), and it posts its activity; this thread answers both so the ``singleuser`` floor runs
    the image's own command without a hub.
    """

    def __init__(self, version: str) -> None:
        body = json.dumps({"version": version}).encode()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                data = body if self.path.rstrip("/").endswith("/hub/api") else b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-JupyterHub-Version", version)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api_url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def floor_command(app: str, port: int, stub: StubHub | None) -> tuple[list[str], dict, str]:
    """(command, environment, URL that answers 200 once the server serves) of the floor."""
    env = {"HOME": "/tmp"}
    if app == "lab":
        cmd = [
            "jupyter",
            "lab",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--no-browser",
            "--IdentityProvider.token=",
        ]
        return cmd, env, f"http://127.0.0.1:{port}/api"
    assert stub is not None
    prefix = "/user/floor/"
    env.update(
        {
            "JUPYTERHUB_API_TOKEN": secrets.token_hex(16),
            "JUPYTERHUB_API_URL": stub.api_url,
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
            "JUPYTERHUB_USER": "floor",
            "JUPYTERHUB_SERVER_NAME": "",
            "JUPYTERHUB_ACTIVITY_URL": f"{stub.api_url}/users/floor/activity",
            "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-floor",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        }
    )
    return ["jupyterhub-singleuser"], env, f"http://127.0.0.1:{port}{prefix}api"


def run_floor(
    client: docker.DockerClient, name: str, timeout: float, app: str, stub: StubHub | None
) -> dict:
    port = free_loopback_port()
    cmd, env, url = floor_command(app, port, stub)
    session = requests.Session()
    container = None
    t0, m0 = time.time(), time.monotonic()
    try:
        container = client.containers.run(
            IMAGE,
            cmd,
            name=name,
            detach=True,
            network_mode="host",
            user="1000:100",
            environment=env,
        )
        polls = 0
        while True:
            try:
                if session.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            polls += 1
            if polls % 25 == 0:
                container.reload()
                if container.status not in ("created", "running"):
                    tail = container.logs(tail=20).decode("utf-8", "replace")
                    raise RuntimeError(f"floor container exited ({container.status}):\n{tail}")
            if time.monotonic() - m0 > timeout:
                raise TimeoutError(f"floor server did not answer on {url} within {timeout}s")
            time.sleep(0.02)
        seconds = time.monotonic() - m0
        phases, logs = container_phases(client, container.id, t0, t0 + seconds)
    finally:
        session.close()
        try:
            if container is not None:
                container.remove(force=True)
            else:
                client.api.remove_container(name, force=True)
        except docker.errors.NotFound:
            pass
    return {"seconds": seconds, "phases": phases, "stop_seconds": None, "logs": logs}


def run_hub(hub: BenchHub, client: docker.DockerClient, user: str, timeout: float) -> dict:
    path = f"/users/{user}/servers/{SERVER}"
    t0, m0 = time.time(), time.monotonic()
    try:
        r = hub.api("POST", path, json={}, timeout=timeout)
        if r.status_code == 202:
            last = hub.follow_progress(user, SERVER, timeout)
            if not last.get("ready"):
                raise RuntimeError(f"spawn failed: {last}")
        elif r.status_code != 201:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")
        seconds = time.monotonic() - m0
        found = client.containers.list(filters={"name": f"^/{PREFIX}-{user}"})
        if len(found) != 1:
            raise RuntimeError(f"expected one running container of {user}, found {len(found)}")
        phases, logs = container_phases(client, found[0].id, t0, t0 + seconds)
    except BaseException as e:
        try:
            hub.api("DELETE", path, timeout=30)
        except Exception:
            pass
        if isinstance(e, Exception):
            raise RuntimeError(
                f"{hub.variant} spawn: {e}\n--- hub log ---\n{hub.log_tail()}"
            ) from e
        raise
    m1 = time.monotonic()
    hub.stop_server(user, SERVER, timeout=60)
    return {
        "seconds": seconds,
        "phases": phases,
        "stop_seconds": time.monotonic() - m1,
        "logs": logs,
    }


# ---- report -------------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> dict:
    out = {}
    for v in VARIANTS:
        xs = [r["seconds"] for r in runs if r["variant"] == v and not r["warmup"]]
        if not xs:
            continue
        ph = {}
        for key, _ in PHASES:
            vals = [
                r["phases"][key]
                for r in runs
                if r["variant"] == v and not r["warmup"] and r["phases"].get(key) is not None
            ]
            ph[key] = statistics.median(vals) if vals else None
        stops = [
            r["stop_seconds"]
            for r in runs
            if r["variant"] == v and not r["warmup"] and r["stop_seconds"] is not None
        ]
        out[v] = {
            "n": len(xs),
            "min": min(xs),
            "median": statistics.median(xs),
            "max": max(xs),
            "phase_medians": ph,
            "stop_median": statistics.median(stops) if stops else None,
        }
    if "a" in out and "c" in out:
        out["c/a"] = out["c"]["median"] / out["a"]["median"]
    if "b" in out and "c" in out:
        out["c/b"] = out["c"]["median"] / out["b"]["median"]
    return out


def variant_labels(floor_app: str) -> dict[str, str]:
    app = "jupyter lab" if floor_app == "lab" else "singleuser"
    return {**VARIANTS, "a": f"floor ({app}): run -> HTTP 200"}


def print_report(summary: dict, floor_app: str) -> None:
    print()
    print(f"{'variant':<39} {'n':>3} {'min':>7} {'median':>7} {'max':>7}   (seconds)")
    for v, label in variant_labels(floor_app).items():
        if v in summary:
            s = summary[v]
            print(
                f"{v}  {label:<36} {s['n']:>3} {fmt(s['min'])} {fmt(s['median'])} {fmt(s['max'])}"
            )
    parts = []
    if "c/a" in summary:
        ok = "met" if summary["c/a"] <= TARGET_FLOOR_RATIO else "NOT met"
        parts.append(f"c/a = {summary['c/a']:.2f} (target <= {TARGET_FLOOR_RATIO}: {ok})")
    if "c/b" in summary:
        ok = "met" if summary["c/b"] <= TARGET_PLAIN_RATIO else "NOT met"
        parts.append(f"c/b = {summary['c/b']:.2f} (target <= {TARGET_PLAIN_RATIO}: {ok})")
    if parts:
        print("ratio of medians: " + ";  ".join(parts))
    print()
    print("phase medians (s):   " + " ".join(f"{label:>22}" for _, label in PHASES) + "   stop")
    for v in VARIANTS:
        if v in summary:
            s = summary[v]
            cells = " ".join(fmt(s["phase_medians"][key], 22) for key, _ in PHASES)
            print(f"{v:<20} {cells} {fmt(s['stop_median'])}")
    print(
        "(phases from Docker's timestamps: t0 = run/POST call; 'running at' = Jupyter Server's "
        "log line once it listens;\n ready = first HTTP 200 for a, hub reports ready for b and c;"
        " stop = DELETE until the hub has no server)"
    )


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    p.add_argument("--timeout", type=float, default=120, help="seconds per spawn (default 120)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=10,
        help="stop starting new rounds after this long and report what was measured (default 10)",
    )
    p.add_argument(
        "--floor-app",
        choices=["lab", "singleuser"],
        default="singleuser",
        help="what the floor container runs: the image's own jupyterhub-singleuser with a stub "
        "hub answering its start-up calls (default: the same program the spawners run), or "
        "'jupyter lab' (lighter: no hub client)",
    )
    p.add_argument("--variants", default="abc", help="subset to run, e.g. 'ac' (default abc)")
    p.add_argument("--hub-debug", action="store_true", help="hubs log at DEBUG level")
    p.add_argument(
        "--keep-logs", metavar="DIR", help="copy hub logs and container logs of each run to DIR"
    )
    args = p.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        p.error("--rounds must be >= 1 and --warmup >= 0")
    if not args.variants or set(args.variants) - set(VARIANTS):
        p.error("--variants takes letters from 'abc'")
    return args


def versions(client: docker.DockerClient) -> dict:
    import dockerspawner
    import jupyterhub

    return {
        "python": platform.python_version(),
        "jupyterhub": jupyterhub.__version__,
        "dockerspawner": dockerspawner.__version__,
        "docker_engine": client.version().get("Version"),
        "image_id": client.images.get(IMAGE).id,
        "cpus": os.cpu_count(),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    variants = [v for v in VARIANTS if v in args.variants]
    signal.signal(signal.SIGTERM, raise_interrupted)
    signal.signal(signal.SIGINT, raise_interrupted)

    rid = secrets.token_hex(3)  # in every container name of this run
    client = docker.from_env(timeout=120)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{rid}-"))
    hubs: dict[str, BenchHub] = {}
    stub: StubHub | None = None
    users = {"b": f"plain{rid}", "c": f"ds01{rid}"}
    runs: list[dict] = []
    meta: dict = {"run_id": rid, "started": datetime.now(timezone.utc).isoformat()}
    status, error = 0, None
    began = time.monotonic()
    try:
        client.images.get(IMAGE)  # fail early when the image is missing
        if not shutil.which("configurable-http-proxy"):
            raise RuntimeError("configurable-http-proxy is not on PATH")
        meta.update(versions(client), floor_app=args.floor_app)
        if "a" in variants and args.floor_app == "singleuser":
            stub = StubHub(meta["jupyterhub"])
        for v, hub_variant in (("b", "plain"), ("c", "ds01")):
            if v in variants:
                print(f"starting the {hub_variant} hub ...", flush=True)
                hubs[v] = BenchHub(tmp / hub_variant, hub_variant, args.hub_debug).start()
                hubs[v].ensure_user(users[v])

        total = args.warmup + args.rounds
        for i in range(total):
            warm = i < args.warmup
            rnd = i - args.warmup + 1
            if time.monotonic() - began > args.max_minutes * 60:
                print(f"--max-minutes {args.max_minutes} reached; stopping early", flush=True)
                break
            for v in variants:
                if v == "a":
                    name = f"{PREFIX}-floor-{rid}-{i}"
                    res = run_floor(client, name, args.timeout, args.floor_app, stub)
                else:
                    res = run_hub(hubs[v], client, users[v], args.timeout)
                logs = res.pop("logs")
                if args.keep_logs:
                    d = Path(args.keep_logs)
                    d.mkdir(parents=True, exist_ok=True)
                    tag = "warmup" if warm else f"r{rnd}"
                    (d / f"container-{v}-{tag}.log").write_text(logs)
                res.update(variant=v, round=rnd, warmup=warm, load1=os.getloadavg()[0])
                runs.append(res)
                label = "warm-up" if warm else f"round {rnd}/{args.rounds}"
                print(f"{label:>12}  {v}  {res['seconds']:6.2f} s", flush=True)
    except KeyboardInterrupt as e:
        status, error = 130, f"interrupted ({e})"
    except Exception as e:  # noqa: BLE001 - reported, then the partial results
        status, error = 1, f"{type(e).__name__}: {e}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stub is not None:
            stub.close()
        cleanup(client, hubs, rid, tmp, args.keep_logs)

    if error:
        print(f"\nstopped: {error}", file=sys.stderr)
    summary = summarize(runs)
    if summary:
        print_report(summary, args.floor_app)
    if args.json:
        meta["seconds_total"] = round(time.monotonic() - began, 1)
        meta["error"] = error
        raw = {
            "meta": meta,
            "variants": variant_labels(args.floor_app),
            "runs": runs,
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(raw, indent=2) + "\n")
        print(f"raw numbers written to {args.json}")
    return status


def cleanup(client, hubs: dict, rid: str, tmp: Path, keep_logs: str | None) -> None:
    for hub in hubs.values():
        stop_hub(hub, hub.variant, keep_logs)
    try:
        for ctr in client.containers.list(all=True, filters={"name": f"^/{PREFIX}-"}):
            if rid in ctr.name:  # only this run's containers
                ctr.remove(force=True)
    except docker.errors.DockerException as e:
        print(f"clean-up: containers: {e}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
