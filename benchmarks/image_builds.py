#!/usr/bin/env python3
"""Project images: first build vs unchanged relaunch vs the plain base image, and another user's
launch with and without a build running.

One real jupyterhub (harness/hub.py's Hub with tests/integration/hub_config.py, so
the shipped jupyterhub_config.py) and these variants, each timed from the launch's POST until the
hub reports the server ready (the progress stream's ``ready`` event), alternated within a round:

  a  base image: a project without a Dockerfile (user ``other``)
  b  first build: a project whose Dockerfile (FROM ds01/base:latest, COPY, RUN, ENV) is new in
     this round, so it is built, then checked (``jupyterhub-singleuser --version``) once
  c  relaunch of b's project, nothing changed: no build (checked in the hub log)
  d  as a, while another user's build runs a RUN step that sleeps (no CPU)
  e  as a, while another user's build runs a RUN step that keeps one core busy

One unmeasured launch of a comes first (``--warmup``). For d and e the background build is
started first and the launch begins once its RUN step is running (seen on its progress
stream); the build is then stopped by the hub's build timeout.

Usage: .venv/bin/python benchmarks/image_builds.py [--rounds 3] [--json out.json]
Everything it makes (the hub, its proxy, containers and images named ds01ib<id>-*, a temp dir)
is removed at exit, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from benchmarks.common import Hub, fmt, raise_interrupted, stop_hub  # noqa: E402

IMAGE = "ds01/base:latest"
IMAGE_FROM = f"FROM {IMAGE}\n"
BUILD_TIMEOUT = 20  # the background builds of d and e are stopped by the hub after this
VARIANTS = {
    "a": "base image (no Dockerfile)",
    "b": "first build of a new Dockerfile",
    "c": "relaunch, Dockerfile unchanged",
    "d": "base image, a sleeping build runs",
    "e": "base image, a CPU-bound build runs",
}
BUSY = 'python3 -c "import time\\nt = time.time()\\nwhile time.time() - t < 60: pass"'


def write_project(hub: Hub, user: str, project: str, files: dict[str, str]) -> None:
    root = hub.workspaces / user / project
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def launch(hub: Hub, user: str, project: str, timeout: float, on_event=None) -> dict:
    """POST, then read the progress stream until ready; seconds and the events' arrival times."""
    t0 = time.monotonic()
    r = hub.request_server(user, project)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"launch of {user}/{project}: {r.status_code} {r.text}")
    marks: dict[str, float] = {}
    last: dict = {}
    s = hub.api("GET", f"/users/{user}/servers/{project}/progress", stream=True, timeout=timeout)
    for line in s.iter_lines(decode_unicode=True):
        if not (line and line.startswith("data:")):
            continue
        last = json.loads(line[5:])
        msg = last.get("message", "")
        now = time.monotonic() - t0
        if msg.startswith("Step 1/"):
            marks.setdefault("build_start", now)
        elif msg.startswith("Image built in"):
            marks["built"] = now
        elif "can run jupyterhub-singleuser" in msg:
            marks["check_start"] = now
        elif msg.startswith("Checking image") and "check_start" in marks:
            marks["check_done"] = now
        if on_event:
            on_event(last)
        if last.get("ready") or last.get("failed"):
            break
    s.close()
    return {"seconds": time.monotonic() - t0, "ok": bool(last.get("ready")), "marks": marks}


def build_count(hub: Hub, project: str) -> int:
    text = hub.log_path.read_text(errors="replace")
    return len(re.findall(rf"Image build started user=\S+ project={project} ", text))


def background_build(hub: Hub, user: str, project: str, run: str, timeout: float):
    """Start a build whose RUN step runs ``run``; return once the step runs, and the thread."""
    marker = f"bg-{project}-started"
    write_project(hub, user, project, {"Dockerfile": f"{IMAGE_FROM}RUN echo {marker} && {run}\n"})
    running = threading.Event()
    outcome: dict = {}

    def seen(event: dict) -> None:
        if event.get("message") == marker:
            running.set()

    def follow():
        try:
            outcome.update(launch(hub, user, project, timeout, seen))
        except Exception as e:  # noqa: BLE001 - reported by the caller
            outcome["error"] = repr(e)
        running.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    if not running.wait(timeout):
        raise RuntimeError(f"the background build {project} did not start its RUN step")
    return thread, outcome


def first_build_files(rid: str, rnd: int) -> dict[str, str]:
    return {
        "Dockerfile": (
            f"{IMAGE_FROM}COPY requirements.txt /opt/project/requirements.txt\n"
            f"RUN echo build-{rid}-{rnd} > /opt/project/marker && ls -l /opt/project\n"
            "ENV PROJECT_READY=1\n"
        ),
        "requirements.txt": "numpy\n",
        "train.py": "print('hello')\n",
    }


def summarize(runs: list[dict]) -> dict:
    out = {}
    for v in VARIANTS:
        xs = [r["seconds"] for r in runs if r["variant"] == v]
        if xs:
            out[v] = {"n": len(xs), "min": min(xs), "median": statistics.median(xs), "max": max(xs)}
    keys = {"build_start", "built", "check_done"}
    b = [r for r in runs if r["variant"] == "b" and keys <= set(r["marks"])]
    if b:
        m = [r["marks"] for r in b]
        out["b_phases"] = {
            "until the build starts": statistics.median(x["build_start"] for x in m),
            "build": statistics.median(x["built"] - x["build_start"] for x in m),
            "singleuser check": statistics.median(x["check_done"] - x["built"] for x in m),
            "container start": statistics.median(
                r["seconds"] - r["marks"]["check_done"] for r in b
            ),
        }
    return out


def print_report(summary: dict, builds: dict) -> None:
    print()
    print(
        f"{'variant':<40} {'n':>3} {'min':>7} {'median':>7} {'max':>7}   (seconds, POST -> ready)"
    )
    for v, label in VARIANTS.items():
        if v in summary:
            s = summary[v]
            print(
                f"{v}  {label:<37} {s['n']:>3} {fmt(s['min'])} {fmt(s['median'])} {fmt(s['max'])}"
            )
    if "a" in summary and "c" in summary:
        ratio = summary["c"]["median"] / summary["a"]["median"]
        print(f"relaunch without a build / base image: c/a = {ratio:.2f}")
    for v in "de":
        if "a" in summary and v in summary:
            ratio = summary[v]["median"] / summary["a"]["median"]
            print(f"another user's launch during a build: {v}/a = {ratio:.2f}")
    if "b_phases" in summary:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in summary["b_phases"].items())
        print(f"b, medians: {parts}")
    print(
        f"builds counted in the hub log: b {builds['b']} of {builds['b_runs']} launches, "
        f"c {builds['c']} of {builds['c_runs']}"
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    p.add_argument(
        "--warmup", type=int, default=1, help="unmeasured launches of a first (default 1)"
    )
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    p.add_argument("--timeout", type=float, default=180, help="seconds per launch (default 180)")
    p.add_argument("--variants", default="abcde", help="subset, e.g. 'abc' (default abcde)")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the hub log to DIR")
    args = p.parse_args(argv)
    if args.rounds < 1 or not args.variants or set(args.variants) - set(VARIANTS):
        p.error("--rounds >= 1; --variants takes letters from 'abcde'")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupted)
    signal.signal(signal.SIGINT, raise_interrupted)
    rid = secrets.token_hex(3)
    prefix = f"ds01ib{rid}"
    client = docker.from_env(timeout=120)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    hub: Hub | None = None
    runs: list[dict] = []
    builds = {"b": 0, "b_runs": 0, "c": 0, "c_runs": 0}
    status, error = 0, None
    try:
        client.images.get(IMAGE)
        env = {
            "DS01_TEST_SLOW_SPAWN_TIMEOUT": "0",
            "DS01_TEST_BUILD_TIMEOUT": str(BUILD_TIMEOUT),
            "DS01_TEST_GRACE": "2",
        }
        print("starting the hub ...", flush=True)
        hub = Hub(tmp, prefix, env).start()
        write_project(hub, "other", "plain", {"notes.txt": "no Dockerfile here\n"})
        for i in range(args.warmup):
            res = launch(hub, "other", "plain", args.timeout)
            hub.stop_server("other", "plain")
            print(f"warm-up {i + 1}/{args.warmup}  a  {res['seconds']:6.2f} s", flush=True)
        for rnd in range(1, args.rounds + 1):
            for v in args.variants:
                bg = None
                if v == "a":
                    res = launch(hub, "other", "plain", args.timeout)
                    stop = ("other", "plain")
                elif v == "b":
                    project = f"fresh{rnd}"
                    write_project(hub, "builder", project, first_build_files(rid, rnd))
                    before = build_count(hub, project)
                    res = launch(hub, "builder", project, args.timeout)
                    builds["b"] += build_count(hub, project) - before
                    builds["b_runs"] += 1
                    stop = ("builder", project)
                elif v == "c":
                    project = f"fresh{rnd}"
                    if "b" not in args.variants:
                        write_project(hub, "builder", project, first_build_files(rid, rnd))
                        launch(hub, "builder", project, args.timeout)
                        hub.stop_server("builder", project)
                    before = build_count(hub, project)
                    res = launch(hub, "builder", project, args.timeout)
                    builds["c"] += build_count(hub, project) - before
                    builds["c_runs"] += 1
                    stop = ("builder", project)
                else:
                    run = "sleep 600" if v == "d" else BUSY
                    bg = background_build(hub, "busy", f"bg{v}{rnd}", run, args.timeout)
                    res = launch(hub, "other", "plain", args.timeout)
                    stop = ("other", "plain")
                if not res["ok"]:
                    raise RuntimeError(f"variant {v} round {rnd} failed:\n{hub.log_tail(30)}")
                hub.stop_server(*stop)
                if bg is not None:
                    bg[0].join(args.timeout)  # stopped by the build timeout
                res.update(variant=v, round=rnd, load1=os.getloadavg()[0])
                runs.append(res)
                print(f"round {rnd}/{args.rounds}  {v}  {res['seconds']:6.2f} s", flush=True)
    except KeyboardInterrupt as e:
        status, error = 130, f"interrupted ({e})"
    except Exception as e:  # noqa: BLE001 - reported, then the partial results
        status, error = 1, f"{type(e).__name__}: {e}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(client, hub, prefix, tmp, args.keep_logs)
    if error:
        print(f"\nstopped: {error}", file=sys.stderr)
    summary = summarize(runs)
    if summary:
        print_report(summary, builds)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": runs, "summary": summary, "builds": builds}, indent=2) + "\n"
        )
    return status


def cleanup(client, hub: Hub | None, prefix: str, tmp: Path, keep_logs: str | None) -> None:
    if hub is not None:
        stop_hub(hub, "image-builds", keep_logs)
    try:
        for ctr in client.containers.list(all=True, filters={"name": f"^/{prefix}-"}):
            ctr.remove(force=True)
        for image in client.api.images(filters={"reference": f"{prefix}-*/*"}):
            for ref in image.get("RepoTags") or []:
                if ref.startswith(f"{prefix}-"):
                    try:
                        client.api.remove_image(ref)
                    except docker.errors.APIError as e:
                        print(f"clean-up: image {ref}: {e}", file=sys.stderr)
    except docker.errors.DockerException as e:
        print(f"clean-up: {e}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
