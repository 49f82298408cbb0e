import os

import pytest

from ds01spawner.projects.names import InvalidProjectName
from ds01spawner.projects.workspace import WorkspaceError, prepare_workspace, workspace_root_for

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
    with pytest.raises(WorkspaceError, match="is a link to another place") as e:
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


def test_a_project_link_is_refused_even_inside_the_workspace(tmp_path):
    """The user can re-point a link of theirs at any moment: none is followed."""
    root = tmp_path / "ws" / "alice"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    with pytest.raises(WorkspaceError, match="is a link"):
        prepare_workspace(template(tmp_path), "alice", "alias", UID, GID)


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


@pytest.mark.skipif(os.geteuid() != 0, reason="making links owned by another uid needs root")
def test_a_root_link_the_user_made_is_refused_and_nothing_is_created(tmp_path):
    """~/workspace -> /usr/lib/python3: the hub (root) must not create and chown there."""
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    os.chown(home, 4321, 4321)
    target = tmp_path / "site-packages"
    target.mkdir()
    (home / "workspace").symlink_to(target)
    os.lchown(home / "workspace", 4321, 4321)
    with pytest.raises(WorkspaceError, match="link to another place") as e:
        prepare_workspace(
            str(tmp_path / "home" / "{username}" / "workspace"), "alice", "requests", UID, GID
        )
    assert "symlink" in e.value.admin_hint
    assert list(target.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_root_owned_link_in_a_user_writable_folder_is_refused(tmp_path):
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    os.chown(home, 4321, 4321)  # alice could replace the link
    target = tmp_path / "data"
    target.mkdir()
    (home / "workspace").symlink_to(target)
    with pytest.raises(WorkspaceError):
        prepare_workspace(str(home / "workspace"), "alice", "p", UID, GID)


def test_an_admins_root_link_is_followed(tmp_path):
    """/srv/ds01/workspaces/alice -> /data/alice, made by root in a root-only folder."""
    if os.geteuid() != 0:
        pytest.skip("needs root-owned links")
    admin = tmp_path / "srv"
    admin.mkdir(mode=0o755)
    os.chmod(admin, 0o755)
    data = tmp_path / "data-alice"
    data.mkdir()
    (admin / "alice").symlink_to(data)
    ws = prepare_workspace(str(admin / "{username}"), "alice", "p", UID, GID)
    assert ws.project_dir == (data / "p").resolve() and ws.created


def test_a_dangling_root_link_is_a_clear_error(tmp_path):
    admin = tmp_path / "srv"
    admin.mkdir()
    os.chmod(admin, 0o755)
    (admin / "alice").symlink_to(tmp_path / "gone")
    with pytest.raises(WorkspaceError):
        prepare_workspace(str(admin / "{username}"), "alice", "p", UID, GID)
    assert not (tmp_path / "gone").exists()
