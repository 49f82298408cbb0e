"""project_files: writes into a user's project never follow a link the user made."""

from __future__ import annotations

import os

import pytest

from ds01spawner.projects.files import ProjectFileError, read_project_file, write_project_file

UID, GID = os.getuid(), os.getgid()


def test_write_creates_folders_and_file(tmp_path):
    write_project_file(tmp_path, ".ds01/build.log", "step 1\n", UID, GID)
    write_project_file(tmp_path, ".ds01/build.log", "step 2\n", UID, GID, append=True)
    assert (tmp_path / ".ds01" / "build.log").read_text() == "step 1\nstep 2\n"
    assert (tmp_path / ".ds01").stat().st_mode & 0o777 == 0o750
    write_project_file(tmp_path, ".ds01/build.log", "new\n", UID, GID)
    assert (tmp_path / ".ds01" / "build.log").read_text() == "new\n"


def test_owner_is_the_user(tmp_path):
    if os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    write_project_file(tmp_path, "a/b/c.txt", "x", 4242, 4343)
    for p in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c.txt"):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (4242, 4343)


@pytest.mark.parametrize("link_at", [".ds01", ".ds01/build.log"])
def test_a_link_is_refused_not_followed(tmp_path, link_at):
    outside = tmp_path / "outside"
    outside.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    if link_at == ".ds01":
        os.symlink(outside, project / ".ds01")
    else:
        (project / ".ds01").mkdir()
        os.symlink(outside / "victim", project / ".ds01" / "build.log")
    with pytest.raises(ProjectFileError):
        write_project_file(project, ".ds01/build.log", "owned", UID, GID)
    assert list(outside.iterdir()) == []
    with pytest.raises(ProjectFileError):
        read_project_file(project, ".ds01/build.log")


def test_exclusive_never_overwrites(tmp_path):
    (tmp_path / "README.md").write_text("mine")
    with pytest.raises(FileExistsError):
        write_project_file(tmp_path, "README.md", "template", UID, GID, exclusive=True)
    assert (tmp_path / "README.md").read_text() == "mine"


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../x", "a/../../x"])
def test_paths_must_stay_inside(tmp_path, bad):
    with pytest.raises(ProjectFileError):
        write_project_file(tmp_path, bad, "x", UID, GID)


def test_read_tail_and_missing(tmp_path):
    write_project_file(tmp_path, "n.log", b"0123456789", UID, GID)
    assert read_project_file(tmp_path, "n.log", max_bytes=4) == b"6789"
    assert read_project_file(tmp_path, "n.log") == b"0123456789"
    with pytest.raises(FileNotFoundError):
        read_project_file(tmp_path, "missing.log")


def test_fifo_is_refused(tmp_path):
    os.mkfifo(tmp_path / "f")
    with pytest.raises(ProjectFileError):
        write_project_file(tmp_path, "f", "x", UID, GID)
    with pytest.raises(ProjectFileError):
        read_project_file(tmp_path, "f")


def test_make_dirs_refuses_links(tmp_path):
    from ds01spawner.projects.files import make_project_dirs

    make_project_dirs(tmp_path, "data/raw", UID, GID)
    assert (tmp_path / "data" / "raw").is_dir()
    os.symlink(tmp_path / "data", tmp_path / "models")
    with pytest.raises(ProjectFileError):
        make_project_dirs(tmp_path, "models/x", UID, GID)
    assert not (tmp_path / "data" / "x").exists()


# ---- found in review: a hard link is not stopped by O_NOFOLLOW ----------------------------------


@pytest.mark.skipif(os.getuid() != 0, reason="files of another user need root")
@pytest.mark.parametrize("append", [False, True])
def test_a_hard_link_to_another_users_file_is_never_written_or_given_away(tmp_path, append):
    """A student hard-links a classmate's (group-writable) file as their build log: root must
    not truncate, write or chown it (with protected_hardlinks=0 this could be /etc/shadow)."""
    victim = tmp_path / "bob.txt"
    victim.write_text("bob's notes\n")
    os.chown(victim, 2002, 2002)
    os.chmod(victim, 0o666)
    project = tmp_path / "alice"
    (project / ".ds01").mkdir(parents=True)
    os.chown(project, 1001, 1001)
    os.chown(project / ".ds01", 1001, 1001)
    os.link(victim, project / ".ds01" / "build.log")
    with pytest.raises(ProjectFileError, match="hard link or not your own"):
        write_project_file(project, ".ds01/build.log", "x", 1001, 1001, append=append)
    st = victim.stat()
    assert (st.st_uid, st.st_gid) == (2002, 2002)
    assert victim.read_text() == "bob's notes\n"
    # control: the same call on a file of the user's own writes it
    os.unlink(project / ".ds01" / "build.log")
    write_project_file(project, ".ds01/build.log", "x", 1001, 1001, append=append)
    assert (project / ".ds01" / "build.log").read_text() == "x"


@pytest.mark.skipif(os.getuid() != 0, reason="files of another user need root")
def test_a_folder_of_someone_else_on_the_way_is_refused(tmp_path):
    project = tmp_path / "alice"
    (project / ".ds01").mkdir(parents=True)
    os.chown(project / ".ds01", 2002, 2002)  # bob's folder, renamed into alice's project
    with pytest.raises(ProjectFileError, match="not your own folder"):
        write_project_file(project, ".ds01/notices.log", "x", 1001, 1001)
    assert (project / ".ds01").stat().st_uid == 2002
    assert not (project / ".ds01" / "notices.log").exists()
