"""Project images with a real engine and a real hub: a project's Dockerfile (FROM the local base
image, no network in RUN) becomes its server's image, built only when its content changes.

Builds are counted from the hub's log ("Image build started ... project=<p> "), never timed.
Every Dockerfile carries this run's token, so no other test run can share (or race) a build, and
every image a test makes is tagged under its hub's prefix and removed at the end.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from ds01spawner.images import housekeeping

from .hub import ds01_containers, wait_for

TOKEN = secrets.token_hex(4)
BASE = "FROM ds01/base:latest\n"


def remove_images(client: docker.DockerClient, prefix: str) -> None:
    for image in client.api.images(filters={"reference": f"{prefix}-*/*"}):
        for ref in image.get("RepoTags") or []:
            if ref.startswith(f"{prefix}-"):
                try:
                    client.api.remove_image(ref)
                except docker.errors.APIError:
                    pass


def hub_with(hub_factory, docker_client, env: dict):
    hub = hub_factory({"DS01_TEST_SLOW_SPAWN_TIMEOUT": "0", **env})
    return hub


@pytest.fixture(scope="module")
def images_hub(hub_factory, docker_client):
    env = {"DS01_TEST_CONTEXT_LIMIT": "1M", "DS01_TEST_KEEP_IMAGES": "2"}
    hub = hub_with(hub_factory, docker_client, env)
    yield hub
    hub.shutdown()
    for c in ds01_containers(docker_client, hub.prefix):
        c.remove(force=True)
    remove_images(docker_client, hub.prefix)


def write_project(hub, user: str, project: str, files: dict) -> None:
    root = hub.workspaces / user / project
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def progress_events(hub, user: str, server: str, timeout: float = 240) -> list[dict]:
    """Every event of the progress stream until the spawn is ready or failed.

    A spawn refused at once can be between "no longer pending" and "failed" for a moment, when
    JupyterHub answers 400 "not starting"; ask again until it has the outcome.
    """

    def stream():
        r = hub.api("GET", f"/users/{user}/servers/{server}/progress", stream=True, timeout=timeout)
        if r.status_code == 400 and "is not starting" in r.text:
            return None
        return (r,)  # a Response of an error is falsy

    (r,) = wait_for(stream, 30, f"the progress stream of {user}/{server}")
    assert r.status_code == 200, r.text
    events = []
    for line in r.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            events.append(json.loads(line[5:]))
            if events[-1].get("ready") or events[-1].get("failed"):
                break
    r.close()
    return events


def launch(hub, user: str, server: str, options: dict | None = None) -> tuple[list[dict], float]:
    """POST the launch and read its whole progress stream: (events, seconds until the end)."""
    t0 = time.monotonic()
    r = hub.request_server(user, server, options)
    if r.status_code not in (201, 202):
        return [{"failed": True, "message": r.json().get("message", r.text)}], 0.0
    events = progress_events(hub, user, server)
    return events, time.monotonic() - t0


def ready(events: list[dict], hub) -> None:
    assert events and events[-1].get("ready"), f"{events[-3:]}\n{hub.log_tail(60)}"


def failure(events: list[dict]) -> str:
    assert events and events[-1].get("failed"), events[-3:]
    return events[-1]["message"]


def log_lines(hub, marker: str, project: str) -> int:
    text = hub.log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if marker in line and f" project={project} " in line)


def builds(hub, project: str) -> int:
    return log_lines(hub, "Image build started", project)


def server_container(docker_client, hub, user: str):
    (c,) = [
        c for c in ds01_containers(docker_client, hub.prefix, user=user) if c.status == "running"
    ]
    return c


def messages(events: list[dict]) -> list[str]:
    return [e.get("message", "") for e in events]


# ---- cache: unchanged -> no build, changed -> build ------------------------------------------


def test_unchanged_project_is_not_rebuilt_and_a_change_is(images_hub, docker_client):
    hub = images_hub
    dockerfile = BASE + f"COPY requirements.txt /opt/req.txt\nRUN echo {TOKEN}-envy > /opt/marker\n"
    write_project(
        hub,
        "alice",
        "envy",
        {"Dockerfile": dockerfile, "requirements.txt": "numpy\n", "data/big.bin": b"\0" * 4096},
    )
    events, _ = launch(hub, "alice", "envy")
    ready(events, hub)
    assert builds(hub, "envy") == 1
    c = server_container(docker_client, hub, "alice")
    first_ref = c.attrs["Config"]["Image"]
    assert first_ref.startswith(f"{hub.prefix}-alice/envy:")
    assert f"JUPYTER_IMAGE_SPEC={first_ref}" in c.attrs["Config"]["Env"]
    assert c.exec_run(["cat", "/opt/marker"]).output.decode().strip() == f"{TOKEN}-envy"
    log = hub.workspaces / "alice" / "envy" / ".ds01" / "build.log"
    assert "Successfully built" in log.read_text() and "# built in" in log.read_text()
    assert (log.stat().st_uid, log.stat().st_gid) == (1000, 100)
    hub.stop_server("alice", "envy")

    # relaunch, then change only excluded data and DS01's own folder: never a build
    events, _ = launch(hub, "alice", "envy")
    ready(events, hub)
    assert any("up to date: no build needed" in m for m in messages(events))
    hub.stop_server("alice", "envy")
    write_project(hub, "alice", "envy", {"data/big.bin": b"\1" * 8192, ".ds01/notes": "x"})
    events, _ = launch(hub, "alice", "envy")
    ready(events, hub)
    assert builds(hub, "envy") == 1
    hub.stop_server("alice", "envy")

    # a changed Dockerfile, then a changed file it copies: a build each, layer cache used
    write_project(hub, "alice", "envy", {"Dockerfile": dockerfile + "ENV STAGE=2\n"})
    events, _ = launch(hub, "alice", "envy")
    ready(events, hub)
    assert builds(hub, "envy") == 2
    assert "Using cache" in log.read_text()  # the unchanged steps came from the layer cache
    second_ref = server_container(docker_client, hub, "alice").attrs["Config"]["Image"]
    assert second_ref != first_ref
    hub.stop_server("alice", "envy")
    write_project(hub, "alice", "envy", {"requirements.txt": "numpy\npandas\n"})
    events, _ = launch(hub, "alice", "envy")
    ready(events, hub)
    assert builds(hub, "envy") == 3
    hub.stop_server("alice", "envy")
    # the oldest of the three goes (images_kept_per_project = 2 here), the newer ones stay
    client = docker_client.api

    def refs():
        return {i.ref for i in housekeeping.list_images(client, hub.prefix, "alice", "envy")}

    wait_for(lambda: first_ref not in refs(), 30, "the oldest image to be pruned")
    assert second_ref in refs() and len(refs()) == 2

    # without its Dockerfile the same server runs the configured image again
    (hub.workspaces / "alice" / "envy" / "Dockerfile").rename(
        hub.workspaces / "alice" / "envy" / "Dockerfile.off"
    )
    ready(launch(hub, "alice", "envy")[0], hub)
    assert server_container(docker_client, hub, "alice").attrs["Config"]["Image"] == (
        "ds01/base:latest"
    )
    assert builds(hub, "envy") == 3
    hub.stop_server("alice", "envy")


def test_progress_arrives_in_order_and_reaches_100_only_when_ready(images_hub):
    hub = images_hub
    write_project(
        hub,
        "bob",
        "steps",
        {
            "Dockerfile": BASE + f"RUN echo '<i>{TOKEN}</i>'\nRUN echo two-{TOKEN}\nENV DONE=1\n",
        },
    )
    events, _ = launch(hub, "bob", "steps")
    ready(events, hub)
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress), progress
    assert [e for e in events if e["progress"] >= 100] == [events[-1]]
    steps = [m for m in messages(events) if m.startswith("Step ")]
    # the 4 steps the user wrote; DS01's LABEL step (the engine's 5th) is not counted or shown
    assert [s.split(" ")[1] for s in steps] == ["1/4", "2/4", "3/4", "4/4"]
    assert not any("ds01.image.digest" in m for m in messages(events))
    step_progress = [e["progress"] for e in events if e["message"].startswith("Step ")]
    assert step_progress == sorted(set(step_progress)), step_progress  # each step moves the bar
    (out,) = [e for e in events if e["message"] == f"<i>{TOKEN}</i>"]
    assert out["html_message"] == f"&lt;i&gt;{TOKEN}&lt;/i&gt;"
    i_build = messages(events).index(steps[0])
    i_check = next(i for i, m in enumerate(messages(events)) if "jupyterhub-singleuser" in m)
    assert i_build < i_check < len(events) - 1
    hub.stop_server("bob", "steps")


# ---- sharing -----------------------------------------------------------------------------------


def test_eight_concurrent_launches_of_one_new_image_build_it_once(images_hub, docker_client):
    hub = images_hub
    users = [f"crowd{i}" for i in range(8)]
    files = {"Dockerfile": BASE + f"RUN sleep 3 && echo {TOKEN}-shared\n", "app.py": "print(1)\n"}
    for user in users:
        write_project(hub, user, "shared", files)
        hub.ensure_user(user)
    barrier = threading.Barrier(len(users))

    def go(user):
        barrier.wait()
        return launch(hub, user, "shared")

    with ThreadPoolExecutor(len(users)) as pool:
        results = list(pool.map(go, users))
    for events, _ in results:
        ready(events, hub)
    assert builds(hub, "shared") == 1
    shared = log_lines(hub, "Image build joined", "shared") + log_lines(
        hub, "Image reused", "shared"
    )
    assert shared == 7
    containers = [server_container(docker_client, hub, u) for u in users]
    assert len({c.image.id for c in containers}) == 1
    assert {c.attrs["Config"]["Image"].split("/")[0] for c in containers} == {
        f"{hub.prefix}-{u}" for u in users
    }
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(lambda u: hub.stop_server(u, "shared"), users))


# ---- failures and refusals ---------------------------------------------------------------------


def test_failing_run_step_shows_step_and_output_and_keeps_the_previous_image(
    images_hub, docker_client
):
    hub = images_hub
    write_project(hub, "carol", "broken", {"Dockerfile": BASE + f"RUN echo good-{TOKEN}\n"})
    ready(launch(hub, "carol", "broken")[0], hub)
    good_ref = server_container(docker_client, hub, "carol").attrs["Config"]["Image"]
    hub.stop_server("carol", "broken")

    bad = BASE + f"RUN echo '<b>{TOKEN}-out</b>' && echo second-line && exit 7\n"
    write_project(hub, "carol", "broken", {"Dockerfile": bad})
    events, _ = launch(hub, "carol", "broken")
    message = failure(events)
    assert "Step 2/2 : RUN echo" in message and "failed" in message
    assert f"<b>{TOKEN}-out</b>" in message and "second-line" in message
    assert "non-zero code: 7" in message and ".ds01/build.log" in message
    html = events[-1]["html_message"]
    assert f"&lt;b&gt;{TOKEN}-out&lt;/b&gt;" in html and "<b>" not in html
    shown = [e for e in events if e["message"] == f"<b>{TOKEN}-out</b>"]
    assert shown and shown[0]["html_message"].startswith("&lt;b&gt;")  # streamed, escaped
    log = (hub.workspaces / "carol" / "broken" / ".ds01" / "build.log").read_text()
    assert f"{TOKEN}-out" in log and "# FAILED at Step 2/2" in log
    assert builds(hub, "broken") == 2
    assert docker_client.images.get(good_ref)  # the previous image is kept
    assert [c for c in ds01_containers(docker_client, hub.prefix, user="carol")] == []
    wait_for(lambda: hub.server_model("carol", "broken") is None, 30, "the failed server cleared")
    # the way out (issue 15 item 5): the same project with the standard image, to fix the file
    assert "ds01 project launch broken --standard-image" in message
    events, _ = launch(hub, "carol", "broken", {"image": "standard"})
    ready(events, hub)
    assert any("Using the standard image" in e["message"] for e in events)
    container = server_container(docker_client, hub, "carol")
    assert container.attrs["Config"]["Image"] == "ds01/base:latest"
    assert builds(hub, "broken") == 2  # nothing was built
    hub.stop_server("carol", "broken")


def test_disallowed_from_and_oversized_context_are_refused_before_any_build(images_hub):
    hub = images_hub
    write_project(hub, "dave", "pyimg", {"Dockerfile": f"# {TOKEN}\nFROM python:3.11-slim\n"})
    message = failure(launch(hub, "dave", "pyimg")[0])
    assert "Line 2" in message and "`FROM python:3.11-slim`" in message
    assert "ds01/*" in message
    write_project(
        hub,
        "dave",
        "huge",
        {"Dockerfile": BASE + f"RUN echo {TOKEN}\n", "dataset/x.bin": b"\0" * (2 << 20)},
    )
    message = failure(launch(hub, "dave", "huge")[0])
    assert "2.0 MiB" in message and "1.0 MiB" in message and "dataset/" in message
    assert ".dockerignore" in message
    assert builds(hub, "pyimg") == 0 and builds(hub, "huge") == 0
    # the fix the message names works
    write_project(hub, "dave", "huge", {".dockerignore": "dataset/\n"})
    ready(launch(hub, "dave", "huge")[0], hub)
    assert builds(hub, "huge") == 1
    hub.stop_server("dave", "huge")


def test_image_without_a_compatible_singleuser_is_refused_with_the_fix(images_hub):
    hub = images_hub
    dockerfile = BASE + f"RUN rm /opt/ds01/venv/bin/jupyterhub-singleuser # {TOKEN}\n"
    write_project(hub, "erin", "nosingle", {"Dockerfile": dockerfile})
    message = failure(launch(hub, "erin", "nosingle")[0])
    assert "cannot run jupyterhub-singleuser" in message
    assert "jupyterhub==" in message and "ds01/base:latest" in message


# ---- a slow build never delays another user; the build timeout -------------------------------


@pytest.fixture(scope="module")
def slow_hub(hub_factory, docker_client):
    hub = hub_with(hub_factory, docker_client, {"DS01_TEST_BUILD_TIMEOUT": "25"})
    yield hub
    hub.shutdown()
    for c in ds01_containers(docker_client, hub.prefix):
        c.remove(force=True)
    remove_images(docker_client, hub.prefix)


def test_slow_build_never_delays_another_users_launch_and_is_stopped_at_its_timeout(
    slow_hub, docker_client, record_property
):
    hub = slow_hub
    write_project(hub, "fast", "ready", {"Dockerfile": BASE + f"RUN echo {TOKEN}-ready\n"})
    ready(launch(hub, "fast", "ready")[0], hub)  # built once
    hub.stop_server("fast", "ready")
    events, alone = launch(hub, "fast", "ready")  # no build anywhere: the baseline
    ready(events, hub)
    hub.stop_server("fast", "ready")

    marker = f"{TOKEN}-sleeping"
    write_project(hub, "slow", "big", {"Dockerfile": BASE + f"RUN echo {marker} && sleep 600\n"})
    slow_events: list[dict] = []
    running = threading.Event()

    def follow():
        assert hub.request_server("slow", "big").status_code == 202
        r = hub.api("GET", "/users/slow/servers/big/progress", stream=True, timeout=120)
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                slow_events.append(json.loads(line[5:]))
                if slow_events[-1]["message"] == marker:
                    running.set()
                if slow_events[-1].get("ready") or slow_events[-1].get("failed"):
                    break
        r.close()

    follower = threading.Thread(target=follow)
    follower.start()
    assert running.wait(60), "the slow build's RUN step did not start"
    events, during = launch(hub, "fast", "ready")
    ready(events, hub)
    still_building = hub.server_model("slow", "big")
    assert still_building and still_building["pending"] == "spawn"
    record_property("launch_alone_s", round(alone, 2))
    record_property("launch_during_build_s", round(during, 2))
    print(f"\nanother user's launch: {alone:.2f} s alone, {during:.2f} s during a build")
    assert during < alone + 10, (alone, during)
    hub.stop_server("fast", "ready")

    follower.join(120)
    message = failure(slow_events)
    assert re.search(r"stopped after 2[5-7] s \(the limit is 25 s\)", message), message
    assert "Step 2/2 : RUN echo" in message
    assert marker in message
    log = (hub.workspaces / "slow" / "big" / ".ds01" / "build.log").read_text()
    assert "# STOPPED" in log and marker in log

    def sleeping_containers():
        return [
            c
            for c in docker_client.containers.list()
            if marker in " ".join(c.attrs["Config"].get("Cmd") or [])
        ]

    wait_for(lambda: sleeping_containers() == [], 20, "the build's container to be killed")


# ---- housekeeping against the engine -----------------------------------------------------------


def test_housekeeping_lists_prunes_and_never_deletes_an_image_in_use(docker_client):
    prefix = f"ds01t{secrets.token_hex(3)}"
    api = docker_client.api
    refs = []
    try:
        for i in range(4):
            repo = f"{prefix}-gina/proj"
            dockerfile = f"{BASE}LABEL n={i} run={TOKEN}\n".encode()
            # built in order: Created never decreases, and equal times sort by tag (v3 > v0)
            list(api.build(fileobj=io.BytesIO(dockerfile), tag=f"{repo}:v{i}", forcerm=True))
            refs.append(f"{repo}:v{i}")
        other = io.BytesIO(f"{BASE}LABEL o={TOKEN}\n".encode())
        list(api.build(fileobj=other, tag=f"{prefix}-gina/other:v0", forcerm=True))
        used = api.create_container(refs[1], command=["true"])
        try:
            listed = housekeeping.list_images(api, prefix, "gina", "proj")
            assert [i.ref for i in listed] == refs[::-1]
            assert [i.in_use for i in listed] == [False, False, True, False]
            deleted = housekeeping.prune_project(api, prefix, "gina", "proj", 2, refs[0])
            assert deleted == [refs[2]]  # kept: current v0, newest v3, v1 in use
            deleted, kept = housekeeping.delete_user_images(api, prefix, "gina")
            assert sorted(deleted) == sorted([refs[0], refs[3], f"{prefix}-gina/other:v0"])
            assert kept == [refs[1]]
        finally:
            api.remove_container(used, force=True)
    finally:
        remove_images(docker_client, prefix)


# ---- hostile builds: bounded output, limits ----------------------------------------------------


def test_a_hostile_build_is_bounded_cut_stripped_and_limited(images_hub):
    """200 KB without a newline after an ANSI escape: one line cut at 4 KiB in build.log, no
    escape left; the RUN step sees the CPU quota, the memory limit and the per-user pids cgroup."""
    hub = images_hub
    flood = "import sys; sys.stdout.write(chr(27) + '[31m' + 'z' * 200000); sys.stdout.flush()"
    run = (
        f'RUN echo {TOKEN} && python3 -c "{flood}" && echo && grep pids /proc/self/cgroup '
        "&& echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) "
        "&& echo memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) && exit 3\n"
    )
    write_project(hub, "erin", "hostile", {"Dockerfile": BASE + run})
    message = failure(launch(hub, "erin", "hostile")[0])
    assert "Step 2/2" in message and "failed" in message  # as written (no LABEL step)
    log = (hub.workspaces / "erin" / "hostile" / ".ds01" / "build.log").read_text()
    assert "non-zero code: 3" in log
    (cut,) = [line for line in log.splitlines() if line.startswith("zzz")]
    assert cut.endswith(f"[... {200005 - 4096} characters cut]") and len(cut) < 4200
    assert "\x1b" not in log
    assert "quota=200000" in log and f"memory={4 << 30}" in log
    (pids,) = [line for line in log.splitlines() if ":pids:" in line]
    assert f"/{hub.prefix}-build-" in pids
    parent = pids.split(":pids:")[1].rsplit("/", 1)[0]
    try:
        with open(f"/sys/fs/cgroup/pids{parent}/pids.max") as f:
            assert f.read().strip() == "1024"
    finally:
        try:
            import os

            os.rmdir(f"/sys/fs/cgroup/pids{parent}")
        except OSError:
            pass
