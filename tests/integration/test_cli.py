"""The ``ds01`` command line against a real hub: each command's happy path and its refusal,
a terminal through Jupyter's terminal API, and one clear line for a bad token or a dead hub."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from .hub import REPO, ds01_containers, wait_for


@pytest.fixture(scope="module")
def hub(hub_factory):
    return hub_factory(
        {
            "DS01_TEST_GPU_QUEUE": "120",
            "DS01_TEST_GPUS": json.dumps([{"name": "A100", "memory_mib": 40960}]),
        }
    )


@pytest.fixture(scope="module")
def env(hub, tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-home")
    return {
        **os.environ,
        "XDG_CONFIG_HOME": str(home),
        "DS01_HUB_URL": hub.url,
        "DS01_TOKEN": hub.user_token("erin"),
        "COLUMNS": "200",
        "PYTHONPATH": str(REPO),  # this checkout's ds01 command
    }


def ds01(env, *args, stdin: str = "", timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ds01spawner.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_clear_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_login_saves_the_token_for_its_owner_only(hub, env):
    plain = {k: v for k, v in env.items() if k not in ("DS01_HUB_URL", "DS01_TOKEN")}
    r = ds01(plain, "login", "--url", hub.url + "/hub/", stdin=env["DS01_TOKEN"] + "\n")
    assert r.returncode == 0, r.stderr
    assert "as erin" in r.stdout
    path = os.path.join(plain["XDG_CONFIG_HOME"], "ds01", "config.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.load(open(path)) == {"url": hub.url, "token": env["DS01_TOKEN"]}
    r = ds01(plain, "container", "list")  # the saved settings work without the environment
    assert r.returncode == 0, r.stderr
    assert "No servers" in r.stdout


def test_a_wrong_token_or_a_dead_hub_is_one_line(env, tmp_path):
    line = one_clear_line(ds01({**env, "DS01_TOKEN": "not-a-token"}, "container", "list"))
    assert "refused the token" in line and "/hub/token" in line
    line = one_clear_line(ds01({**env, "DS01_HUB_URL": "http://127.0.0.1:9"}, "container", "list"))
    assert line == "ds01: Cannot reach the hub at http://127.0.0.1:9 (connection refused)."
    line = one_clear_line(
        ds01(
            {
                **{k: v for k, v in env.items() if k != "DS01_TOKEN"},
                "XDG_CONFIG_HOME": str(tmp_path),
            },
            "check",
            "limits",
        )
    )
    assert "No API token" in line


def test_project_init_and_list(hub, env):
    r = ds01(env, "project", "init", "thesis", "--template", "python-ml")
    assert r.returncode == 0, r.stderr
    assert "Created project thesis" in r.stdout
    folder = hub.workspaces / "erin" / "thesis"
    assert (folder / "Dockerfile").is_file() and (folder / "notebooks").is_dir()
    line = one_clear_line(ds01(env, "project", "init", "thesis"))
    assert "already have a project named 'thesis'" in line
    line = one_clear_line(ds01(env, "project", "init", "../bob"))
    assert "not a valid project name" in line
    r = ds01(env, "--json", "project", "list")
    assert json.loads(r.stdout) == [{"name": "thesis", "has_dockerfile": True}]


def test_launch_list_attach_retire(hub, env, docker_client):
    r = ds01(env, "project", "launch", "thesis", "--gpus", "1", "--open")
    assert r.returncode == 0, r.stderr
    assert "Assigned simulated GPU" in r.stdout
    assert f"thesis is ready: {hub.url}/user/erin/thesis/" in r.stdout
    assert "no browser here" in r.stdout

    r = ds01(env, "container", "list", "--json")
    (item,) = json.loads(r.stdout)
    assert item["project"] == "thesis" and item["state"] == "running"
    assert item["gpus"] and item["gpus"][0].startswith("GPU-")
    table = ds01({**env, "COLUMNS": "40"}, "container", "list").stdout.splitlines()
    assert table[0].split() == ["PROJECT", "STATE", "GPUS", "STARTED", "URL"]
    assert table[1].split()[:2] == ["thesis", "running"]
    assert table[1].endswith(f"{hub.url}/user/erin/thesis/")  # whole, on a narrow terminal

    r = ds01(env, "container", "attach", "thesis", "--command", "echo from-$((6*7)); pwd; whoami")
    assert r.returncode == 0, r.stderr
    assert "from-42" in r.stdout and "/workspace" in r.stdout
    assert "\x1b" not in r.stdout and "\r" not in r.stdout  # no terminal codes (item 9)
    assert "\nerin\n" in r.stdout and "I have no name" not in r.stdout
    r = ds01(env, "container", "attach", "thesis", stdin="ls /workspace\n")
    assert "Dockerfile" in r.stdout

    r = ds01(env, "container", "retire", "thesis")
    assert r.returncode == 0, r.stderr
    assert hub.server_model("erin", "thesis") is None
    assert ds01_containers(docker_client, hub.prefix, user="erin") == []
    assert (hub.workspaces / "erin" / "thesis" / "Dockerfile").is_file()
    line = one_clear_line(ds01(env, "container", "retire", "thesis"))
    assert "no server 'thesis'" in line

    # the project's Dockerfile (python-ml template) gave it an image: list and delete it
    images = json.loads(ds01(env, "image", "list", "--json").stdout)
    assert [(i["project"], i["in_use"]) for i in images] == [("thesis", False)]
    assert docker_client.images.get(images[0]["ref"])
    table = ds01(env, "image", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["PROJECT", "TAG", "SIZE", "BUILT"]
    r = ds01(env, "image", "delete", "thesis")
    assert r.returncode == 0, r.stderr
    assert f"Deleted {images[0]['ref']}" in r.stdout
    assert "No project images" in ds01(env, "image", "list").stdout
    line = one_clear_line(ds01(env, "image", "delete", "thesis"))
    assert "no images of project 'thesis'" in line
    line = one_clear_line(ds01(env, "image", "delete", "../etc"))
    assert "not a valid project name" in line
    line = one_clear_line(ds01(env, "container", "attach", "thesis", "-c", "true"))
    assert "is not running" in line


def test_launch_refusals_print_the_hubs_message(env):
    line = one_clear_line(ds01(env, "project", "launch", "Bad_Name"))
    assert "not a valid project name" in line or "Invalid server_name" in line
    line = one_clear_line(ds01(env, "project", "launch", "big", "--gpus", "5"))
    assert "1 simulated GPU in all" in line or "in all" in line
    line = one_clear_line(ds01(env, "project", "launch", "img", "--image", "alpine:latest"))
    assert "not offered" in line


def test_deploy_in_the_background_and_the_queue_position(hub, env):
    r = ds01(env, "container", "deploy", "first", "--gpus", "1")
    assert r.returncode == 0, r.stderr
    assert "in the background" in r.stdout
    wait_for(lambda: (hub.server_model("erin", "first") or {}).get("ready"), 120, "first ready")
    other = {**env, "DS01_TOKEN": hub.user_token("frank")}
    waiting = subprocess.Popen(
        [sys.executable, "-m", "ds01spawner.cli", "project", "launch", "second", "--gpus", "1"],
        env=other,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        for line in waiting.stdout:
            seen.append(line)
            if "in line" in line:
                break
        assert "Waiting for a GPU: 1st in line (1 of 1 simulated GPU busy)" in "".join(seen)
        assert ds01(env, "container", "retire", "first").returncode == 0
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
        assert "second is ready" in out
    finally:
        if waiting.poll() is None:
            waiting.kill()
    limits = ds01(other, "check", "limits")
    assert limits.returncode == 0, limits.stderr
    assert "No limits file on this server" in limits.stdout
    assert "Using now: 1 server(s), 1 GPUs (projects: second)" in limits.stdout
    assert ds01(other, "container", "retire", "second").returncode == 0


def test_aliases_run_the_reference_spellings(env):
    cli = f"{sys.executable} -m ds01spawner.cli"
    script = "\n".join(
        [
            "shopt -s expand_aliases",
            f'eval "$({cli} aliases | sed "s#ds01 #{cli} #")"',
            "container-list",
            "check limits",
        ]
    )
    r = subprocess.run(
        ["bash", "-c", script + "\n"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "No servers" in r.stdout and "Limits of erin" in r.stdout


@pytest.mark.parametrize("name", ["my/thesis", "Bad_Name"])
def test_a_bad_project_name_gets_the_rule_before_the_hub_is_asked(env, name):
    line = one_clear_line(ds01(env, "project", "launch", name))
    assert "is not a valid project name. A project name uses lowercase letters" in line
    assert "404" not in line and "server_name" not in line
