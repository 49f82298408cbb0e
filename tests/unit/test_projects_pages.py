"""Projects (listing, templates) and the home page's rows, without a hub."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from ds01spawner.projects.catalog import (
    BUILTIN_TEMPLATES,
    ProjectInfo,
    TemplateError,
    apply_template,
    check_templates,
    list_projects,
)
from ds01spawner.projects.workspace import WorkspaceError
from ds01spawner.web.pages import ServerFacts, home_rows, left

UID, GID = os.getuid(), os.getgid()


def test_list_projects_shows_valid_folders_only(tmp_path):
    root = tmp_path / "alice"
    (root / "thesis").mkdir(parents=True)
    (root / "thesis" / "Dockerfile").write_text("FROM ds01/base:latest\n")
    (root / "gan").mkdir()
    (root / "Not A Project").mkdir()
    (root / "<img src=x onerror=alert(1)>").mkdir()
    (root / ".cache").mkdir()
    (root / "notes").write_text("a file, not a project")
    (root / "linked").symlink_to(root / "gan")  # links are never launched, even inside
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "escape").symlink_to(outside)  # a link out of the root does not
    (root / "dangling").symlink_to(tmp_path / "missing")
    got = list_projects(str(tmp_path / "{username}"), "alice")
    assert [(p.name, p.has_dockerfile) for p in got] == [
        ("gan", False),
        ("thesis", True),
    ]


def test_list_projects_before_the_first_launch(tmp_path):
    assert list_projects(str(tmp_path / "{username}"), "nobody-yet") == []


def test_list_projects_refuses_a_root_link_the_user_made(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to make a link owned by another user")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 4242, 4242)
    (home / "ws").symlink_to("/usr")
    os.lchown(home / "ws", 4242, 4242)
    with pytest.raises(WorkspaceError):
        list_projects(str(home / "ws"), "alice")


def test_python_ml_template(tmp_path):
    written = apply_template(
        tmp_path,
        BUILTIN_TEMPLATES["python-ml"],
        UID,
        GID,
        {"project": "thesis", "base_image": "ds01/base:latest"},
    )
    assert set(written) >= {"data/", "models/", "notebooks/", "outputs/", "README.md", "Dockerfile"}
    assert "FROM ds01/base:latest\n" in (tmp_path / "Dockerfile").read_text()
    assert (tmp_path / "README.md").read_text().startswith("# thesis\n")
    for folder in ("data", "models", "notebooks", "outputs"):
        assert (tmp_path / folder).is_dir()


def test_template_never_overwrites_and_never_follows_links(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "data").symlink_to(outside)
    spec = {"folders": ["data/raw"], "files": {"README.md": "template"}}
    with pytest.raises(WorkspaceError):
        apply_template(tmp_path, spec, UID, GID, {})
    assert (tmp_path / "README.md").read_text() == "mine"
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "templates",
    [
        {"Bad Name": {"description": "x"}},
        {"ok": {"files": {"../escape": "x"}}},
        {"ok": {"files": {"/etc/passwd": "x"}}},
        {"ok": {"folders": ["a/../../b"]}},
        {"ok": {"description": "x", "script": "rm -rf /"}},
        {"ok": "not a dict"},
    ],
)
def test_bad_template_definitions_are_refused(templates):
    with pytest.raises(TemplateError):
        check_templates(templates)


def test_builtin_templates_are_valid():
    check_templates(BUILTIN_TEMPLATES)


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def server(name, project, state="running", started_ago=None, gpus=()):
    started = NOW - started_ago if started_ago is not None else None
    return ServerFacts(name, project, state, f"/user/alice/{name}/", started, None, gpus)


def test_left():
    assert left(None, NOW) == ""
    assert left(NOW + timedelta(seconds=30), NOW) == "under a minute"
    assert left(NOW + timedelta(minutes=4, seconds=10), NOW) == "4 min"
    assert left(NOW + timedelta(hours=2, minutes=5), NOW) == "2 h 05 min"
    assert left(NOW - timedelta(minutes=5), NOW) == "under a minute"


def test_home_rows_join_folders_and_servers():
    projects = [ProjectInfo("gan", False, 0), ProjectInfo("thesis", True, 0)]
    servers = [
        server("thesis", "thesis", started_ago=timedelta(hours=1), gpus=("GPU 0 (A100)",)),
        server("old", "old", state="not running"),
    ]
    culler = {
        "alice/thesis": {
            "idle_deadline": (NOW + timedelta(minutes=30)).isoformat(),
            "warnings": [{"reason": "idle", "message": "Idle for 1 h 30 min; retired in 30 min."}],
        }
    }
    rows = home_rows(
        projects,
        servers,
        max_runtime_hours=24,
        now=NOW,
        launch_base="/hub/spawn/alice/",
        culler=culler,
        username="alice",
    )
    by = {r.project: r for r in rows}
    assert list(by) == ["gan", "old", "thesis"]
    assert by["gan"].state == "not running" and by["gan"].launch_url == "/hub/spawn/alice/gan"
    assert by["old"].state == "not running" and by["old"].url is None
    t = by["thesis"]
    assert t.active and t.url == "/user/alice/thesis/"
    assert t.gpus == "GPU 0 (A100)"
    assert t.runtime_left == "23 h 00 min"
    assert t.idle_left == "30 min"
    assert t.warnings == ("Idle for 1 h 30 min; retired in 30 min.",)


def test_home_rows_without_limits_or_culler():
    rows = home_rows(
        [],
        [server("", "default", started_ago=timedelta(minutes=5))],
        max_runtime_hours=None,
        now=NOW,
        launch_base="/hub/spawn/alice/",
    )
    assert [(r.project, r.runtime_left, r.idle_left, r.gpus) for r in rows] == [
        ("default", "unlimited", "", "none")
    ]


def test_started_is_shown_in_utc_minutes():
    rows = home_rows(
        [],
        [server("x", "x", started_ago=timedelta(minutes=90))],
        max_runtime_hours=None,
        now=NOW,
        launch_base="/hub/spawn/alice/",
    )
    assert rows[0].started == "2026-11-28T10:30:00+00:00"
    assert rows[0].started_shown == "2026-11-28 10:30 UTC"


def test_service_links_use_the_services_own_host_under_subdomain_host():
    from types import SimpleNamespace

    from ds01spawner.web.pages import HomeView

    limits = SimpleNamespace(
        host="http://ds01-limits--service.localhost:8000", prefix="/services/ds01-limits/"
    )
    user = SimpleNamespace(settings={"services": {"ds01-limits": limits}, "base_url": "/"})
    view = HomeView(user)
    assert view.service_href("ds01-limits") == (
        "http://ds01-limits--service.localhost:8000/services/ds01-limits/"
    )
    limits.host = ""  # no subdomain_host: a path on the hub's origin
    assert view.service_href("ds01-limits") == "/services/ds01-limits/"
    assert view.service_href("ds01-admin") == "/services/ds01-admin/"  # not registered
