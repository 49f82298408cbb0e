"""The spawn form and user_options through a real hub: one validation for the form and the
REST API, tampered options refused with nothing created, templates, escaping."""

from __future__ import annotations

import json
import os

import pytest

from .hub import ds01_containers, wait_for

HOSTILE_DESCRIPTION = '<script>alert("template")</script> and <b>bold</b>'
TEMPLATES = {
    "empty": {"description": "An empty folder."},
    "python-ml": {
        "description": "Python / ML",
        "folders": ["data", "models", "notebooks", "outputs"],
        "files": {"Dockerfile": "FROM {base_image}\n", "README.md": "# {project}\n"},
    },
    "hostile": {"description": HOSTILE_DESCRIPTION},
}


@pytest.fixture(scope="module")
def hub(hub_factory):
    return hub_factory(
        {
            "DS01_TEST_TEMPLATES": json.dumps(TEMPLATES),
            "DS01_TEST_OFFERED_IMAGES": json.dumps({"ds01/base:latest": "DS01 base"}),
        }
    )


def entries(path) -> set[str]:
    return set(os.listdir(path)) if path.exists() else set()


TAMPERED = [
    ("", {"project": "../bob/thesis"}, "not a valid project name"),
    ("", {"project": "/etc"}, "not a valid project name"),
    ("mine", {"project": "bob"}, "This server is for project 'mine'"),
    ("mine", {"gpus": 99}, "between 0 and 64"),
    ("mine", {"gpus": 5}, "4 GPUs in all"),
    ("mine", {"gpus": 1, "gpu_type": "9g.80gb"}, "is not offered here"),
    ("mine", {"image": "alpine:latest"}, "not offered on this server"),
    ("mine", {"image": "<img src=x onerror=alert(1)>"}, "not offered on this server"),
    ("mine", {"template": "<script>alert(1)</script>"}, "Unknown project template"),
    ("mine", {"template": "../../../etc"}, "Unknown project template"),
    ("mine", {"project": "<b>x</b>"}, "This server is for project"),
    ("", {"project": "<script>alert(1)</script>"}, "not a valid project name"),
    ("mine", {"privileged": True}, "Unknown server option"),
    ("mine", {"gpus": "1; rm -rf /"}, "whole number"),
]


@pytest.mark.parametrize("server, options, message", TAMPERED)
def test_tampered_rest_options_are_refused_with_nothing_created(
    hub, docker_client, server, options, message
):
    root = hub.workspaces / "alice"
    before = entries(root)
    r = hub.request_server("alice", server, options)
    assert r.status_code == 400, r.text
    body = r.json()["message"]
    assert message in body
    assert "<script" not in body and "<img" not in body and "<b>" not in body
    assert hub.server_model("alice", server) is None
    assert ds01_containers(docker_client, hub.prefix, user="alice") == []
    assert entries(root) == before


def test_another_users_server_cannot_be_started(hub):
    token = hub.user_token("alice")
    hub.ensure_user("bob")
    r = hub.api("POST", "/users/bob/servers/thesis", token=token, json={})
    assert r.status_code in (403, 404), r.text
    assert hub.server_model("bob", "thesis") is None
    assert not (hub.workspaces / "bob" / "thesis").exists()


def test_new_project_from_a_template_then_refused_on_an_existing_one(hub, docker_client):
    model = hub.start_server("carol", "tpl", {"template": "python-ml"})
    assert model["ready"] and model["user_options"] == {"template": "python-ml"}
    folder = hub.workspaces / "carol" / "tpl"
    assert entries(folder) >= {"data", "models", "notebooks", "outputs", "Dockerfile", "README.md"}
    assert (folder / "Dockerfile").read_text() == "FROM ds01/base:latest\n"
    assert (folder / "README.md").read_text() == "# tpl\n"
    st = (folder / "README.md").stat()
    assert (st.st_uid, st.st_gid) == (1000, 100)  # the user's uid:gid, not the hub's root
    hub.stop_server("carol", "tpl")
    (folder / "README.md").write_text("my notes")
    r = hub.request_server("carol", "tpl", {"template": "python-ml"})
    assert r.status_code == 400 and "already exists" in r.json()["message"], r.text
    assert (folder / "README.md").read_text() == "my notes"
    assert ds01_containers(docker_client, hub.prefix, user="carol") == []


def test_offered_image_is_used_and_unoffered_refused(hub, docker_client):
    hub.start_server("dave", "img", {"image": "ds01/base:latest"})
    (container,) = ds01_containers(docker_client, hub.prefix, user="dave")
    assert container.attrs["Config"]["Image"] == "ds01/base:latest"
    hub.stop_server("dave", "img")


def test_form_escapes_template_descriptions_and_ignores_hostile_folders(hub):
    session = hub.login("alice")
    root = hub.workspaces / "alice"
    root.mkdir(parents=True, exist_ok=True)
    (root / "<img src=x onerror=alert(1)>").mkdir(exist_ok=True)
    (root / "real-project").mkdir(exist_ok=True)
    page = session.get(f"{hub.url}/hub/spawn/alice", timeout=30).text
    assert 'id="ds01-form"' in page
    assert "&lt;script&gt;alert(&#34;template&#34;)&lt;/script&gt;" in page
    assert '<script>alert("template")' not in page and "<b>bold</b>" not in page
    assert "onerror" not in page
    assert 'value="real-project"' in page
    assert "4 of 4 GPUs free" in page


def test_tampered_form_post_shows_the_reason_on_the_form(hub):
    session = hub.login("alice")
    r = session.post(
        f"{hub.url}/hub/spawn/alice/formbad",
        data={
            "_xsrf": session.cookies.get("_xsrf"),
            "project": "+new",
            "new_project": "formbad",
            "template": "<script>alert(1)</script>",
            "gpu": "0",
        },
        timeout=30,
    )
    assert r.status_code == 400
    assert "Unknown project template" in r.text
    assert "<script>alert(1)</script>" not in r.text
    assert not (hub.workspaces / "alice" / "formbad").exists()


def test_form_post_starts_the_projects_named_server(hub, docker_client):
    session = hub.login("alice")
    r = session.post(
        f"{hub.url}/hub/spawn/alice/formproj",
        data={
            "_xsrf": session.cookies.get("_xsrf"),
            "project": "+new",
            "new_project": "formproj",
            "template": "empty",
            "gpu": "full:1",
        },
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, r.text[:500]
    assert r.headers["Location"].startswith("/hub/spawn-pending/alice/formproj")
    wait_for(
        lambda: (hub.server_model("alice", "formproj") or {}).get("ready"),
        120,
        "alice/formproj to be ready",
    )
    model = hub.server_model("alice", "formproj")
    assert model["url"] == "/user/alice/formproj/"
    assert model["user_options"] == {
        "project": "formproj",
        "template": "empty",
        "gpus": 1,
        "gpu_type": "full",
    }
    (container,) = ds01_containers(docker_client, hub.prefix, user="alice", project="formproj")
    assert container.labels["ds01.gpus"].startswith("GPU-")
    home = session.get(f"{hub.url}/hub/home", timeout=30).text
    assert 'data-project="formproj" data-server="formproj"' in home
    assert "simulated GPU" in home
    hub.stop_server("alice", "formproj")


def test_form_says_how_each_project_gets_its_image(hub):
    root = hub.workspaces / "gina"
    for name, dockerfile in (
        ("plain", None),
        ("fresh", "FROM ds01/base:latest\nENV GINA=1\n"),
        ("refused", "FROM alpine:latest\n"),
    ):
        (root / name).mkdir(parents=True, exist_ok=True)
        if dockerfile:
            (root / name / "Dockerfile").write_text(dockerfile)
    hub.ensure_user("gina")
    page = hub.login("gina").get(f"{hub.url}/hub/spawn/gina", timeout=60).text

    def label(project: str) -> str:
        start = page.index(f'<label class="form-check-label" for="ds01-project-{project}">')
        return " ".join(page[start : page.index("</label>", start)].split())

    assert "image ds01/base:latest" in label("plain")
    assert "its Dockerfile (changed since the last build: built at launch)" in label("fresh")
    assert "its Dockerfile, which will be refused" in label("refused")
    assert "alpine:latest" in label("refused")


def test_a_named_servers_form_is_for_its_project(hub):
    session = hub.login("alice")
    page = session.get(f"{hub.url}/hub/spawn/alice/brandnew", timeout=30).text
    assert "This project does not exist yet" in page
    assert "Start it from a template" in page and 'id="ds01-template-python-ml"' in page
    assert 'name="new_project" value="brandnew"' in page
    assert 'name="project" value="+new"' in page  # options_from_form reads it as a new project
    (hub.workspaces / "alice" / "existing").mkdir(parents=True, exist_ok=True)
    page = session.get(f"{hub.url}/hub/spawn/alice/existing", timeout=30).text
    assert 'type="hidden" name="project" value="existing"' in page
    assert "Start it from a template" not in page
