"""A hostile student against a real hub and engine (docs/security.md): each test performs an
attack the way a student would (a project Dockerfile, a REST call, a link swapped in a loop) and
asserts it fails, with a control that shows the test would notice a success.

One hub for the module; the culler runs every second; GPUs are simulated (4 x A100).
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from urllib.parse import quote

import docker
import pytest

from ds01spawner.gpus.simulated import simulated_gpu_uuid

from .hub import ds01_containers, wait_for
from .test_images import (
    failure,
    launch,
    progress_events,
    ready,
    remove_images,
    write_project,
)

BASE = "FROM ds01/base:latest\n"


@pytest.fixture(scope="module")
def hub(hub_factory, docker_client):
    hub = hub_factory(
        {
            "DS01_TEST_SLOW_SPAWN_TIMEOUT": "0",
            "DS01_TEST_CULLER": json.dumps({"cull_every": 1}),
        }
    )
    yield hub
    hub.shutdown()
    for c in docker_client.containers.list(all=True, filters={"name": f"^/{hub.prefix}"}):
        c.remove(force=True)
    remove_images(docker_client, hub.prefix)


def running(docker_client, hub, user: str):
    (c,) = [
        c for c in ds01_containers(docker_client, hub.prefix, user=user) if c.status == "running"
    ]
    return c


def sh(container, command: str) -> str:
    code, out = container.exec_run(["/bin/sh", "-c", command], user="0")
    return out.decode(errors="replace")


# ---- finding 1: no hub-wide token ever reaches a user's server ------------------------------

RECORDER = """
# A student's Jupyter server config: records every credential a request brings.
def _record(handler):
    r = handler.request
    auth, cookie = r.headers.get("Authorization", ""), r.headers.get("Cookie", "")
    with open("/tmp/seen.log", "a") as f:
        f.write(f"{r.uri}\\t{auth}\\t{cookie}\\n")

c.ServerApp.tornado_settings = {"log_function": _record}
"""


def seen(container) -> list[list[str]]:
    return [line.split("\t") for line in sh(container, "cat /tmp/seen.log").splitlines() if line]


def test_culler_sends_no_hub_wide_token_to_a_server(hub, docker_client):
    write_project(
        hub,
        "mallory",
        "spy",
        {
            "Dockerfile": BASE + "COPY rec.py /etc/jupyter/jupyter_server_config.py\n",
            "rec.py": RECORDER,
        },
    )
    events, _ = launch(hub, "mallory", "spy")
    ready(events, hub)
    spy = running(docker_client, hub, "mallory")
    hub.start_server("bob", "thesis")
    # control: the recorder sees the credentials of requests that reach the server
    mallory = hub.user_token("mallory")
    assert hub.server_api("GET", "mallory", "spy", "/status", mallory).status_code == 200
    wait_for(lambda: any(mallory in a for _, a, _ in seen(spy)), 20, "the control request seen")
    # the culler asks for the kernels within a cycle or two
    wait_for(lambda: any("/api/kernels" in u for u, _, _ in seen(spy)), 30, "the culler's call")
    own = dict(e.split("=", 1) for e in spy.attrs["Config"]["Env"])["JUPYTERHUB_API_TOKEN"]
    allowed = {f"token {mallory}", f"token {own}", ""}
    for uri, auth, cookie in seen(spy):
        assert auth in allowed, f"a foreign credential reached the server on {uri}"
        assert "token=" not in uri and "jupyterhub-hub-login" not in cookie
    culler = [auth for uri, auth, _ in seen(spy) if "/api/kernels" in uri]
    assert culler and set(culler) == {f"token {own}"}
    # what that token opens: nothing but this one server
    token = own
    assert hub.api("GET", "/users", token=token).status_code == 403
    assert hub.server_api("GET", "bob", "thesis", "/contents", token).status_code in (302, 403)
    assert hub.api("DELETE", "/users/bob/servers/thesis", token=token).status_code == 403
    scopes = hub.api("GET", "/user", token=token).json()["scopes"]
    assert not [
        s
        for s in scopes
        if s.split("!")[0] in ("access:servers", "delete:servers")
        and "!server=mallory/spy" not in s
        and "!user=mallory" not in s
    ], scopes
    hub.stop_server("mallory", "spy")
    hub.stop_server("bob", "thesis")


# ---- finding 2: a link swapped in a loop while the hub prepares and mounts the workspace ------


def test_a_link_swapped_in_a_loop_during_launches_never_mounts_or_creates_elsewhere(
    hub, docker_client, tmp_path
):
    secret = tmp_path / "secret"  # root's: the student must not get it mounted or chowned
    secret.mkdir(mode=0o700)
    (secret / "marker").write_text("SECRET")
    root = hub.workspaces / "racer"
    proj = root / "proj"
    proj.mkdir(parents=True)
    (proj / "marker").write_text("mine")
    os.chown(root, 1000, 100)
    os.chown(proj, 1000, 100)
    # control: the engine follows a link in a bind source, and the marker shows it
    (root / "link").symlink_to(secret)
    c = docker_client.containers.run(
        "ds01/base:latest",
        ["sleep", "30"],
        detach=True,
        network_mode="none",
        volumes={str(root / "link"): {"bind": "/workspace", "mode": "ro"}},
        name=f"{hub.prefix}_control",
        auto_remove=False,
    )
    try:
        assert sh(c, "cat /workspace/marker") == "SECRET"
    finally:
        c.remove(force=True)
    # a project folder that is a link at launch is refused outright
    os.rename(proj, root / "real")
    os.rename(root / "link", proj)
    assert "is a link" in failure(launch(hub, "racer", "proj")[0])
    os.rename(proj, root / "link")
    os.rename(root / "real", proj)

    stop, swaps = threading.Event(), [0]

    def swapper():  # the real folder most of the time, the link for moments at random points
        while not stop.is_set():
            stop.wait(0.01)
            for a, b in (
                (proj, root / "real"),
                (root / "link", proj),
                (proj, root / "link"),
                (root / "real", proj),
            ):
                try:
                    os.rename(a, b)
                except OSError:
                    pass
            swaps[0] += 1

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    outcomes = []
    try:
        for _ in range(3):
            events, _ = launch(hub, "racer", "proj")
            if events[-1].get("ready"):
                marker = sh(running(docker_client, hub, "racer"), "cat /workspace/marker")
                outcomes.append(marker)
                hub.stop_server("racer", "proj")
            else:
                outcomes.append(events[-1]["message"][:60])
    finally:
        stop.set()
        t.join(10)
    if not proj.is_dir() or proj.is_symlink():
        os.rename(root / "real", proj)
    assert swaps[0] > 5, "the swapper ran during the launches"
    assert "SECRET" not in outcomes, outcomes
    assert sorted(p.name for p in secret.iterdir()) == ["marker"]  # nothing created there
    assert secret.stat().st_uid == os.getuid()  # never given to the student
    assert hub.log_tail(400).count("Traceback") == 0


# ---- finding 3: a Dockerfile hiding a second FROM ---------------------------------------------


def test_a_dockerfile_hiding_a_second_from_is_refused(hub, docker_client):
    victim = f"{hub.prefix}-bob/thesis:latest"  # another user's image
    docker_client.images.build(
        fileobj=io.BytesIO(b"FROM ds01/base:latest\nLABEL victim=bob\n"), tag=victim, rm=True
    )
    hidden = f"FROM ds01/base:latest\nRUN echo hi \\\u00a0\nFROM {victim}\n"
    # control: the engine itself reads the hidden FROM (the image it builds is bob's)
    image, logs = docker_client.images.build(fileobj=io.BytesIO(hidden.encode()), rm=True)
    assert image.labels.get("victim") == "bob"
    for step in {m for e in logs for m in re.findall(r"---> ([0-9a-f]{12})", e.get("stream", ""))}:
        try:  # the first stage's untagged image, made by this test (never a tagged one)
            if not docker_client.images.get(step).tags:
                docker_client.images.remove(step)
        except docker.errors.APIError:
            pass
    write_project(hub, "eve", "steal", {"Dockerfile": hidden})
    msg = failure(launch(hub, "eve", "steal")[0])
    assert "invisible character" in msg and "U+00A0" in msg
    for text in (
        f"FROM ds01/base:latest\nRUN echo hi \\\\\nFROM {victim}\n",  # escaped escape at the end
        f"  # escape=`\nFROM ds01/base:latest\nRUN echo `\nFROM {victim}\n",  # indented directive
        f"FROM ds01/base:latest\nCOPY --from={victim} / /stolen\n",
    ):
        write_project(hub, "eve", "steal", {"Dockerfile": text})
        assert failure(launch(hub, "eve", "steal")[0])
    assert not [i for i in docker_client.images.list(f"{hub.prefix}-eve/*")]


def test_onbuild_and_quoted_options_cannot_copy_another_users_image(hub, docker_client):
    """Found in review: ONBUILD runs its COPY --from in a later stage unchecked, and the engine
    splits `--chown='\\'\\'' --from=IMG` into two options where a shell-like reading sees one."""
    victim = f"{hub.prefix}-bob/notes:latest"
    docker_client.images.build(
        fileobj=io.BytesIO(b"FROM ds01/base:latest\nRUN echo bob-secret >/secret\n"),
        tag=victim,
        rm=True,
    )
    onbuild = f"FROM ds01/base:latest AS a\nONBUILD COPY --from={victim} /secret /s\nFROM a\n"
    # control: the engine itself copies bob's file through the trigger
    image, _ = docker_client.images.build(fileobj=io.BytesIO(onbuild.encode()), rm=True)
    try:
        out = docker_client.containers.run(image.id, ["cat", "/s"], remove=True, entrypoint=[])
        assert out.strip() == b"bob-secret"
    finally:
        docker_client.images.remove(image.id, force=True)
    quoted = f"FROM ds01/base:latest\nCOPY --chown='\\'\\'' --from={victim} /secret /s\\'\n"
    for text, said in ((onbuild, "uses ONBUILD"), (quoted, "quotes or escape characters")):
        write_project(hub, "eve", "copy", {"Dockerfile": text})
        assert said in failure(launch(hub, "eve", "copy")[0])
    # an allowed base image that carries a trigger is refused before anything is built
    trap = f"ds01/{hub.prefix}-trap:latest"
    docker_client.images.build(
        fileobj=io.BytesIO(
            f"FROM ds01/base:latest\nONBUILD COPY --from={victim} /secret /s\n".encode()
        ),
        tag=trap,
        rm=True,
    )
    try:
        write_project(hub, "eve", "copy", {"Dockerfile": f"FROM {trap}\n"})
        assert "ONBUILD instructions" in failure(launch(hub, "eve", "copy")[0])
    finally:
        docker_client.images.remove(trap, force=True)
    assert not docker_client.images.list(f"{hub.prefix}-eve/*")


# ---- finding 5: an image with forged ds01.* labels -----------------------------------------------


def test_an_image_with_forged_labels_holds_no_gpu_and_costs_no_one_quota(hub, docker_client):
    every_gpu = ",".join(simulated_gpu_uuid(i) for i in range(4))
    forged = (
        f"LABEL ds01.managed=true ds01.user=victim ds01.server=thesis ds01.project=thesis "
        f"ds01.gpus={every_gpu} ds01.gpu_equivalents=99 forged.marker=yes\n"
        # the image check runs `jupyterhub-singleuser --version`: linger there
        'ENTRYPOINT ["/bin/sh", "-c", "case \\"$*\\" in *--version*) sleep 8;; esac; '
        'exec \\"$@\\"", "--"]\n'
    )
    write_project(hub, "mallory", "forge", {"Dockerfile": BASE + forged})
    assert hub.request_server("mallory", "forge", {"gpus": 0}).status_code in (201, 202)

    def check_container():
        found = docker_client.containers.list(filters={"name": f"^/{hub.prefix}_imagecheck_"})
        return found[0] if found else None

    check = wait_for(check_container, 60, "the image check container")
    labels = check.labels
    assert labels["forged.marker"] == "yes"  # control: Docker did copy the image's labels
    assert labels["ds01.managed"] == "false" and labels["ds01.user"] == labels["ds01.gpus"] == ""
    # while it runs, the victim launches with a GPU and is not refused for quota or GPUs
    r = hub.request_server("victim", "thesis", {"gpus": 1})
    assert check_container() is not None  # the forged holdings were there at the allocation
    assert r.status_code in (201, 202), r.text
    if r.status_code == 202:
        ready(progress_events(hub, "victim", "thesis"), hub)
    limits = hub.session.get(
        f"{hub.url}/services/ds01-limits/api/limits",
        headers={"Authorization": f"token {hub.user_token('victim')}"},
        timeout=30,
    ).json()
    assert limits["usage"]["servers"] == 1 and limits["usage"]["gpu_equivalents"] == 1.0
    ready(progress_events(hub, "mallory", "forge"), hub)
    own = running(docker_client, hub, "mallory").labels  # the hub's labels beat the image's
    assert (own["ds01.user"], own["ds01.gpus"], own["ds01.managed"]) == ("mallory", "", "true")
    hub.stop_server("victim", "thesis")
    hub.stop_server("mallory", "forge")


# ---- finding 6: a user named admin?x ----------------------------------------------------------


@pytest.mark.parametrize("name", ["admin?x", "admin#b"])
def test_a_user_named_like_admin_with_a_query_gets_nothing_of_admins(hub, name):
    path = f"/users/{quote(name, safe='')}"
    r = hub.api("POST", path)
    assert r.status_code in (201, 409), r.text
    token = hub.api("POST", f"{path}/tokens", json={"note": "t"}).json()["token"]
    url = f"{hub.url}/services/ds01-limits/api/limits"
    r = hub.session.get(url, params={"user": "bob"}, headers={"Authorization": f"token {token}"})
    assert r.status_code == 403, r.text
    own = hub.session.get(url, headers={"Authorization": f"token {token}"}, timeout=30)
    assert own.status_code == 200 and own.json()["user"] == name
    # control: the real admin does get someone else's limits
    admin = hub.user_token("admin")
    r = hub.session.get(url, params={"user": "bob"}, headers={"Authorization": f"token {admin}"})
    assert r.status_code == 200


def test_an_admins_server_token_has_no_admin_powers_in_the_limits_service(hub, docker_client):
    """Found in review: the session panel's scope gave every server token the whole ds01-limits
    service, whose admin checks looked at the user, not the token. Code in an admin's server (a
    student's notebook the admin runs) could read anyone's limits and delete their images."""
    hub.start_server("admin", "lab")
    env = dict(e.split("=", 1) for e in running(docker_client, hub, "admin").attrs["Config"]["Env"])
    server_token = env["JUPYTERHUB_API_TOKEN"]
    base = f"{hub.url}/services/ds01-limits/api"
    for token, allowed in ((server_token, False), (hub.user_token("admin"), True)):  # + control
        auth = {"Authorization": f"token {token}"}
        r = hub.session.get(f"{base}/limits", params={"user": "bob"}, headers=auth, timeout=30)
        assert (r.status_code == 200) is allowed, r.text
        r = hub.session.get(f"{base}/images", params={"user": "bob"}, headers=auth, timeout=30)
        assert (r.status_code == 200) is allowed, r.text
        # the server token still reads its own user's limits and session (the panel's data)
        own = hub.session.get(f"{base}/limits", headers=auth, timeout=30)
        assert own.status_code == 200 and own.json()["user"] == "admin"
    r = hub.session.get(
        f"{base}/session/lab", headers={"Authorization": f"token {server_token}"}, timeout=30
    )
    assert r.status_code == 200, r.text
    hub.stop_server("admin", "lab")


# ---- finding 7: forged hub log lines ------------------------------------------------------------

FORGED_LINE = "[E 2026-11-29 12:00:00.000 JupyterHub app:1] FORGED-LINE admin logged in"


def test_container_output_cannot_forge_a_hub_log_line(hub):
    entry = (
        'ENTRYPOINT ["/bin/sh", "-c", "printf \'x\\\\n%s\\\\n\' \\"$0\\"; exit 3", '
        f'"{FORGED_LINE}"]\n'
    )
    write_project(hub, "eve", "liar", {"Dockerfile": BASE + entry})
    assert failure(launch(hub, "eve", "liar")[0])
    lines = hub.log_path.read_text(errors="replace").splitlines()
    assert any(line.endswith("| " + FORGED_LINE) for line in lines)  # control: it got there
    assert not any(line.startswith(FORGED_LINE[:20]) for line in lines)
