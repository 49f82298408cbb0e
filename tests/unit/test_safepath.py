"""safepath: folders opened from / without following links a user could make or swap."""

import os
import threading

import pytest

from ds01spawner.projects.safepath import UnsafePath, identity, open_dir, still_there
from ds01spawner.projects.workspace import WorkspaceError, prepare_workspace

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="links owned by another uid need root")


def test_open_dir_gives_the_real_path_and_a_descriptor_of_it(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    fd, real = open_dir(tmp_path / "a" / "b")
    try:
        assert real == str((tmp_path / "a" / "b").resolve())
        assert identity(fd) == (os.stat(real).st_dev, os.stat(real).st_ino)
    finally:
        os.close(fd)


def test_system_links_made_by_root_are_followed():
    if not os.path.islink("/var/run") or os.lstat("/var/run").st_uid != 0:
        pytest.skip("no root-owned /var/run link here")
    fd, real = open_dir("/var/run")
    os.close(fd)
    assert real == os.path.realpath("/var/run")


@needs_root
def test_a_link_in_a_folder_a_user_owns_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, 4321, 4321)
    (home / "ws").symlink_to("/etc")
    with pytest.raises(UnsafePath, match="not followed"):
        open_dir(home / "ws")


def test_a_file_on_the_way_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnsafePath):
        open_dir(tmp_path / "f" / "x")


def test_still_there_notices_a_swap(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    fd, _ = open_dir(d)
    ident = identity(fd)
    os.close(fd)
    assert still_there(d, ident)
    d.rename(tmp_path / "old")
    d.mkdir()
    assert not still_there(d, ident)
    os.rmdir(d)
    d.symlink_to(tmp_path / "old")  # back to the same folder, but through a link
    os.chmod(tmp_path, 0o777)  # a folder others can write: its links are not trusted
    try:
        assert not still_there(d, ident)
    finally:
        os.chmod(tmp_path, 0o700)


def _race(home, target, attempt, rounds=1000, until=None) -> dict:
    """Run ``attempt(i)`` ``rounds`` times while another thread keeps swapping
    ``home/workspace`` between a real folder, nothing, and a user's link to ``target``."""
    ws = home / "workspace"
    stop = threading.Event()

    def swap(n: int) -> None:
        tmp = home / f"l{n}"
        os.symlink(target, tmp)
        os.lchown(tmp, 4321, 4321)
        for step in (
            lambda: os.rename(ws, home / f"d{n}"),  # the real folder away
            lambda: os.rename(tmp, ws),  # the link in its place
            lambda: os.rename(ws, home / f"x{n}"),  # the link away
            lambda: os.rename(home / f"d{n}", ws),  # the real folder back
        ):
            try:
                step()
            except OSError:
                pass  # the hub made or holds it meanwhile: go on swapping

    def swapper():
        n = 0
        while not stop.is_set():
            n += 1
            swap(n)

    t = threading.Thread(target=swapper)
    t.start()
    outcomes = {"ok": 0, "refused": 0}
    try:
        for i in range(rounds):
            if until is not None and until():
                break
            try:
                attempt(i)
                outcomes["ok"] += 1
            except (WorkspaceError, OSError):
                outcomes["refused"] += 1
    finally:
        stop.set()
        t.join()
    return outcomes


def _alice(tmp_path):
    home = tmp_path / "home" / "alice"
    (home / "workspace").mkdir(parents=True)
    os.chown(home, 4321, 4321)
    target = tmp_path / "site-packages"
    target.mkdir()
    return home, target


@needs_root
def test_racing_a_link_swap_never_creates_anything_outside(tmp_path):
    """Finding 2: the user swaps their workspace root for a link, in a loop, while the hub
    (root) prepares projects. Whatever the interleaving, nothing appears in the target."""
    home, target = _alice(tmp_path)
    template = str(home.parent / "{username}" / "workspace")
    out = _race(home, target, lambda i: prepare_workspace(template, "alice", f"p{i}", 4321, 4321))
    assert list(target.iterdir()) == []  # never created through the link
    assert out["ok"] > 0  # the hub still works between swaps


@needs_root
def test_control_the_race_does_steer_a_path_that_is_followed(tmp_path):
    """The same race against a path-string implementation: it does create in the target, so
    the test above would notice if prepare_workspace followed the link."""
    home, target = _alice(tmp_path)
    steered = lambda: any(target.iterdir())  # noqa: E731
    _race(home, target, lambda i: os.makedirs(home / "workspace" / f"p{i}"), 50000, steered)
    assert steered()


def test_mounted_identity_never_follows_a_link_in_the_container(tmp_path):
    """Found in review: an image whose /workspace is a link to an absolute host path made the
    check stat the host folder (resolved from the hub's root), matching whatever was mounted."""
    from ds01spawner.projects.safepath import mounted_identity

    host = tmp_path / "host-folder"
    host.mkdir()
    root = tmp_path / "rootfs"  # stands for /proc/<pid>/root of a container
    root.mkdir()
    os.symlink(host, root / "workspace")
    assert mounted_identity(root, "/workspace") == (-1, -1)
    # control: a real folder there is what was mounted
    os.unlink(root / "workspace")
    (root / "workspace").mkdir()
    st = (root / "workspace").stat()
    assert mounted_identity(root, "/workspace") == (st.st_dev, st.st_ino)
    # and the host folder the link named is not
    assert mounted_identity(root, "/workspace") != (host.stat().st_dev, host.stat().st_ino)
