import os

import pytest

from ds01spawner.names import InvalidProjectName
from ds01spawner.workspace import WorkspaceError, prepare_workspace, workspace_root_for

UID, GID = os.getuid(), os.getgid()


def template(tmp_path):
    return str(tmp_path / "ws" / "{username}")


def test_first_launch_creates_the_project_folder(tmp_path):
    ws = prepare_workspace(template(tmp_path), "alice", "my-thesis", UID, GID)
    assert ws.created
    assert ws.project_dir == (tmp_path / "ws" / "alice" / "my-thesis").resolve()
    assert ws.project_dir.is_dir()
    assert oct(ws.project_dir.stat().st_mode & 0o777) == oct(0o750)


def test_existing_folder_is_kept_as_it_is(tmp_path):
    d = tmp_path / "ws" / "alice" / "p"
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("keep me")
    ws = prepare_workspace(template(tmp_path), "alice", "p", UID, GID)
    assert not ws.created
    assert (ws.project_dir / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_new_folders_belong_to_the_user(tmp_path):
    ws = prepare_workspace(template(tmp_path), "alice", "p", 4321, 4322)
    st = ws.project_dir.stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)
    assert (ws.root.stat().st_uid, ws.root.stat().st_gid) == (4321, 4322)


def test_symlink_out_of_the_workspace_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "ws" / "alice"
    root.mkdir(parents=True)
    (root / "evil").symlink_to(outside)
    with pytest.raises(WorkspaceError, match="points outside your workspace") as e:
        prepare_workspace(template(tmp_path), "alice", "evil", UID, GID)
    assert str(outside) in e.value.admin_hint
    assert list(outside.iterdir()) == []


def test_symlink_to_the_root_itself_is_refused(tmp_path):
    root = tmp_path / "ws" / "alice"
    root.mkdir(parents=True)
    (root / "loop").symlink_to(root)
    with pytest.raises(WorkspaceError):
        prepare_workspace(template(tmp_path), "alice", "loop", UID, GID)


def test_dangling_symlink_is_refused_and_not_followed(tmp_path):
    root = tmp_path / "ws" / "alice"
    root.mkdir(parents=True)
    (root / "dangling").symlink_to(tmp_path / "not-yet")
    with pytest.raises((WorkspaceError, FileNotFoundError)):
        prepare_workspace(template(tmp_path), "alice", "dangling", UID, GID)
    assert not (tmp_path / "not-yet").exists()


def test_symlink_inside_the_workspace_is_allowed(tmp_path):
    root = tmp_path / "ws" / "alice"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    ws = prepare_workspace(template(tmp_path), "alice", "alias", UID, GID)
    assert ws.project_dir == (root / "real").resolve()


def test_a_file_is_not_a_project(tmp_path):
    root = tmp_path / "ws" / "alice"
    root.mkdir(parents=True)
    (root / "p").write_text("x")
    with pytest.raises(WorkspaceError, match="is a file"):
        prepare_workspace(template(tmp_path), "alice", "p", UID, GID)


@pytest.mark.parametrize("project", ["..", "../x", "/etc", "a/b", ""])
def test_invalid_project_creates_nothing(tmp_path, project):
    with pytest.raises(InvalidProjectName):
        prepare_workspace(template(tmp_path), "alice", project, UID, GID)
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("user", ["..", "../../etc", "a/b"])
def test_hostile_usernames_stay_under_the_template(tmp_path, user):
    root = workspace_root_for(template(tmp_path), user)
    assert (tmp_path / "ws") in root.resolve().parents


def test_relative_template_is_an_admin_error():
    with pytest.raises(WorkspaceError) as e:
        workspace_root_for("workspaces/{username}", "alice")
    assert "absolute" in e.value.admin_hint
