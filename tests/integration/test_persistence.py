"""The persistence round trip of shared/reference/ephemeral-container-model.md, for real.

Launch, write inside and outside /workspace, retire, launch again: a new container, the same
workspace files, nothing else.
"""

import os

import docker
import pytest

from .conftest import run_code
from .hub import ds01_containers, wait_for

PROBE = """
import os, pathlib
print("cwd", os.getcwd())
print("uid", os.getuid())
print("home", os.environ["HOME"])
print("tmp", os.path.exists("/tmp/scratch.txt"))
print("userpkg", os.path.exists(os.path.expanduser("~/.local/lib/mypkg/__init__.py")))
"""

WRITE_OUTSIDE = """
import os, pathlib
pathlib.Path("/tmp/scratch.txt").write_text("temporary")
pkg = pathlib.Path(os.path.expanduser("~/.local/lib/mypkg"))
pkg.mkdir(parents=True)
(pkg / "__init__.py").write_text("# what pip install --user leaves")
print("written")
"""


def parse(out: str) -> dict:
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def test_workspace_survives_retire_and_nothing_else_does(hub, docker_client):
    user, project = "alice", "my-thesis"
    token = hub.user_token(user)
    hub.start_server(user, project)
    (first,) = ds01_containers(docker_client, hub.prefix, user=user, project=project)

    r = hub.server_api(
        "PUT",
        user,
        project,
        "/contents/notes.txt",
        token,
        json={"type": "file", "format": "text", "content": "chapter 1"},
    )
    assert r.status_code == 201, r.text
    assert run_code(hub, user, project, token, WRITE_OUTSIDE).strip() == "written"
    seen = parse(run_code(hub, user, project, token, PROBE))
    assert seen["cwd"] == "/workspace"
    assert seen["uid"] != "0"
    assert seen["home"] == "/home/alice"
    assert (seen["tmp"], seen["userpkg"]) == ("True", "True")

    on_host = hub.workspaces / user / project / "notes.txt"
    assert on_host.read_text() == "chapter 1"
    assert on_host.stat().st_uid == int(seen["uid"])

    hub.stop_server(user, project)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(first.id)

    hub.start_server(user, project)
    (second,) = ds01_containers(docker_client, hub.prefix, user=user, project=project)
    assert second.id != first.id
    r = hub.server_api("GET", user, project, "/contents/notes.txt", token)
    assert r.status_code == 200 and r.json()["content"] == "chapter 1"
    seen = parse(run_code(hub, user, project, token, PROBE))
    assert (seen["tmp"], seen["userpkg"]) == ("False", "False")
    hub.stop_server(user, project)


def test_container_is_locked_down(hub, docker_client):
    user, project = "bob", "locked"
    hub.start_server(user, project)
    (c,) = ds01_containers(docker_client, hub.prefix, user=user, project=project)
    attrs = c.attrs
    uid, _, gid = attrs["Config"]["User"].partition(":")
    assert int(uid) != 0 and int(gid) != 0
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["NetworkMode"] == "host"
    assert host["Privileged"] is False
    labels = attrs["Config"]["Labels"]
    assert labels["ds01.managed"] == "true"
    assert (labels["ds01.user"], labels["ds01.project"], labels["ds01.server"]) == (
        user,
        project,
        project,
    )
    assert labels["ds01.created"].endswith("+00:00")
    assert attrs["Name"] == f"/{hub.prefix}-bob.locked"
    (mount,) = attrs["Mounts"]
    assert mount["Type"] == "bind" and mount["Destination"] == "/workspace" and mount["RW"]
    assert mount["Source"] == os.path.realpath(hub.workspaces / user / project)
    assert not any("docker.sock" in m["Source"] for m in attrs["Mounts"])
    assert attrs["Config"]["WorkingDir"] == "/workspace"
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert env["JUPYTERHUB_ROOT_DIR"] == "/workspace" and env["DS01_PROJECT"] == project
    hub.stop_server(user, project)
    assert ds01_containers(docker_client, hub.prefix, user=user) == []


def test_default_server_uses_the_project_option(hub, docker_client):
    hub.start_server("carol", "", {"project": "from-options"})
    (c,) = ds01_containers(docker_client, hub.prefix, user="carol")
    assert c.labels["ds01.project"] == "from-options" and c.labels["ds01.server"] == ""
    assert c.name == f"{hub.prefix}-carol._default"
    assert (hub.workspaces / "carol" / "from-options").is_dir()
    # the same project cannot run twice at once (default server and a named server)
    r = hub.request_server("carol", "from-options")
    assert r.status_code == 409, r.text
    assert "already running" in r.json()["message"]
    hub.stop_server("carol", "")


BACKGROUND_TRAINING = """
import subprocess, sys
code = '''
import pathlib, signal, time
def save(*_):
    time.sleep(1)  # a checkpoint takes a moment to write
    pathlib.Path("/workspace/checkpoint.txt").write_text("epoch 7")
    raise SystemExit(0)
signal.signal(signal.SIGTERM, save)
pathlib.Path("/workspace/training.started").touch()
time.sleep(600)
'''
subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print("launched")
"""


def test_retire_sends_sigterm_to_background_work_and_waits_for_its_checkpoint(hub):
    user, project = "dana", "training"
    token = hub.user_token(user)
    hub.start_server(user, project)
    assert run_code(hub, user, project, token, BACKGROUND_TRAINING).strip() == "launched"
    ws = hub.workspaces / user / project
    wait_for(lambda: (ws / "training.started").exists(), 30, "the training process to start")
    hub.stop_server(user, project)
    assert (ws / "checkpoint.txt").read_text() == "epoch 7"


NOTEBOOK_HANDLER = """
import pathlib, signal, time
def save(*_):
    time.sleep(7)  # longer than the 5 s Jupyter gives a kernel by default
    pathlib.Path("/workspace/notebook-checkpoint.txt").write_text("saved from the kernel")
signal.signal(signal.SIGTERM, save)
signal.signal(signal.SIGINT, signal.SIG_IGN)
print("armed")
"""


def test_a_notebook_kernel_gets_the_whole_grace_period(hub_factory):
    hub = hub_factory({"DS01_TEST_GRACE": "15"})
    user, project = "erin", "notebook"
    token = hub.user_token(user)
    hub.start_server(user, project)
    assert run_code(hub, user, project, token, NOTEBOOK_HANDLER, keep_kernel=True) == "armed\n"
    hub.stop_server(user, project)
    saved = hub.workspaces / user / project / "notebook-checkpoint.txt"
    assert saved.read_text() == "saved from the kernel"
