"""How long it takes to put an image on a swarm node (issue 17 item 4), on a real two-node swarm.

    .venv/bin/python benchmarks/swarm_images.py                # 2 rounds, about 2 minutes
    .venv/bin/python benchmarks/swarm_images.py --rounds 3 --json /tmp/swarm-images.json

Builds ``harness.swarm.TwoNodeSwarm`` (tmpfs data-roots), loads ``ds01/base:latest`` onto the
manager n1 only, then measures, per round, ``ImageDistributor.ensure`` (the manager's
``docker save`` streamed into node n2's ``docker load``, what the Swarm mode does before a launch):

- **base**: the 481 MB base image onto n2 (removed from n2 first, so each round sends it);
- **project**: a small project image built on the manager ``FROM`` the base, onto n2 that has
  the base already; bytes sent show whether the base's layers travel again;
- **present**: ``ensure`` again (the image is on n2): the cost of the check alone;
- **manager's save alone**: reading the project image's ``docker save`` on the manager and
  discarding it (the floor of any save-based transfer; "MB sent" is what it read);
- side by side, the CLI pipe ``docker -H n1 save IMG | docker -H n2 load`` (the harness's way)
  for the base and the project image.

All traffic is local (unix sockets of the two engines). Everything is removed at exit.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fmt, raise_interrupted, stats  # noqa: E402
from ds01spawner.swarm.images import ImageDistributor  # noqa: E402
from ds01spawner.swarm.nodes import NodeEngines  # noqa: E402
from harness.swarm import TwoNodeSwarm  # noqa: E402

BASE = "ds01/base:latest"
PROJECT = "ds01bench/swarm-proj"


def build_project(api, round_no: int) -> str:
    """A small project image on the manager, FROM the base (a new one per round)."""
    dockerfile = (
        f"FROM {BASE}\nRUN mkdir -p /opt/proj && head -c 2000000 /dev/urandom > /opt/proj/data"
        f" && echo {round_no} > /opt/proj/round\n"
    )
    tag = f"{PROJECT}:{round_no}"
    for _ in api.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, decode=True):
        pass
    return tag


def cli_pipe(src: str, dst: str, image: str) -> tuple[float, int]:
    """``docker -H src save image | docker -H dst load``: seconds and bytes."""
    t = time.monotonic()
    save = subprocess.Popen(["docker", "-H", src, "save", image], stdout=subprocess.PIPE)
    load = subprocess.Popen(["docker", "-H", dst, "load", "-q"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    sent = 0
    while chunk := save.stdout.read(1 << 20):
        sent += len(chunk)
        load.stdin.write(chunk)
    load.stdin.close()
    if save.wait() or load.wait():
        raise RuntimeError(f"docker save | load of {image} failed")
    return time.monotonic() - t, sent


def drop(api, image: str) -> None:
    try:
        api.remove_image(image, force=True)
    except Exception:  # noqa: BLE001 - not there
        pass


def measure(s: TwoNodeSwarm, rounds: int) -> dict[str, list[tuple[float, int]]]:
    n1, n2 = s.node("n1"), s.node("n2")
    engines = NodeEngines(n1.engine)
    dist = ImageDistributor(engines)
    node2 = engines.node("n2")
    rows: dict[str, list[tuple[float, int]]] = {}

    def add(name: str, seconds: float, sent: int) -> None:
        rows.setdefault(name, []).append((seconds, sent))
        print(f"  {name:<34} {seconds:7.2f} s {sent / 1e6:9.1f} MB", flush=True)

    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", flush=True)
        for variant in ("ensure", "cli"):
            drop(n2.client, BASE)
            project = build_project(s.manager, r * 2 + (variant == "cli"))
            base_id = s.manager.inspect_image(BASE)["Id"]
            if variant == "ensure":
                secs = dist.ensure(BASE, node2)
                add("base: ensure", secs, dist.transfers[(base_id, node2.id)].bytes)
                project_id = s.manager.inspect_image(project)["Id"]
                secs = dist.ensure(project, node2)
                add("project, base present: ensure", secs,
                    dist.transfers[(project_id, node2.id)].bytes)
                t = time.monotonic()
                assert dist.ensure(project, node2) == 0.0
                add("present: ensure", time.monotonic() - t, 0)
                t = time.monotonic()
                read = sum(len(c) for c in s.manager.get_image(project, chunk_size=1 << 20))
                add("project: manager's save alone", time.monotonic() - t, read)
            else:
                add("base: docker save | load", *cli_pipe(n1.engine, n2.engine, BASE))
                add("project, base present: save | load", *cli_pipe(n1.engine, n2.engine, project))
            drop(n2.client, project)
            drop(s.manager, project)
    return rows


def table(rows: dict[str, list[tuple[float, int]]]) -> str:
    out = [f"{'':<36} {'n':>3} {'min s':>7} {'median s':>8} {'max s':>7} {'MB sent':>9}"]
    for name, xs in rows.items():
        st = stats([x[0] for x in xs])
        mb = max(x[1] for x in xs) / 1e6
        out.append(f"{name:<36} {st['n']:>3} {fmt(st['min'], 7, 3)} {fmt(st['median'], 8, 3)} "
                   f"{fmt(st['max'], 7, 3)} {mb:9.1f}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="write the samples here")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, raise_interrupted)
    logging.basicConfig(level=logging.WARNING)
    with TwoNodeSwarm(tmpfs=True) as s:
        t = time.monotonic()
        s.load_image(BASE, nodes=("n1",))
        print(f"swarm up in {s.timings['setup_s']:.1f} s; base onto the manager "
              f"{time.monotonic() - t:.1f} s", flush=True)
        rows = measure(s, args.rounds)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
