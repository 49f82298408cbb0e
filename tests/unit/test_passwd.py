"""The user's entries in the container's /etc/passwd and /etc/group (passwd.with_user)."""

from ds01spawner.spawner.passwd import account_name, with_user

IMAGE_PASSWD = "root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n"
IMAGE_GROUP = "root:x:0:\nusers:x:100:\n"


def test_the_user_gets_a_line_and_the_images_others_stay():
    passwd, group = with_user(
        IMAGE_PASSWD, IMAGE_GROUP, "alice", 1234, 1234, "/home/alice", "/bin/bash"
    )
    assert passwd.splitlines() == [
        "root:x:0:0:root:/root:/bin/bash",
        "jovyan:x:1000:100::/home/jovyan:/bin/bash",
        "alice:x:1234:1234:alice:/home/alice:/bin/bash",
    ]
    assert group.splitlines() == ["root:x:0:", "users:x:100:", "alice:x:1234:"]


def test_a_uid_or_name_the_image_uses_is_taken_over():
    passwd, group = with_user(IMAGE_PASSWD, IMAGE_GROUP, "bob", 1000, 100, "/home/bob", "/bin/sh")
    assert "jovyan" not in passwd and "bob:x:1000:100:bob:/home/bob:/bin/sh" in passwd
    assert group.splitlines() == ["root:x:0:", "users:x:100:"]  # gid 100 has a name already


def test_names_that_cannot_be_account_names_become_user():
    assert account_name("alice") == "alice"
    for bad in ("Alice", "a:b", "x\nroot::0:0::/:/bin/sh", "admin?x", ""):
        assert account_name(bad) == "user"


def test_home_gets_the_managed_lab_settings_owned_by_the_user():
    import io
    import json
    import tarfile

    from ds01spawner.spawner.passwd import home_archive

    tar = tarfile.open(fileobj=io.BytesIO(home_archive("/home/alice", 1234, 100)))
    members = tar.getmembers()
    assert members[0].name == "home/alice" and members[0].isdir()
    assert all((m.uid, m.gid) == (1234, 100) for m in members)
    (settings,) = [m for m in members if m.isfile()]
    assert settings.name.endswith("@jupyterlab/apputils-extension/notification.jupyterlab-settings")
    assert json.loads(tar.extractfile(settings).read()) == {
        "fetchNews": "false",
        "checkForUpdates": False,
    }


def test_home_itself_is_in_the_archive_only_when_the_image_lacks_it():
    """Found in review: extracting HOME's own entry chowns and chmods an existing folder (with
    HOME on a bind mount, the host folder the engine re-binds for the copy)."""
    import io
    import tarfile

    from ds01spawner.spawner.passwd import home_archive

    def names(make_home):
        data = home_archive("/home/alice", 1234, 100, make_home=make_home)
        return [m.name for m in tarfile.open(fileobj=io.BytesIO(data))]

    assert "home/alice" in names(True)
    assert "home/alice" not in names(False)
    assert all(n.startswith("home/alice/") for n in names(False))


def test_lab_settings_are_never_written_at_or_under_a_mount():
    from ds01spawner.spawner.passwd import under_mount

    mounts = ["/workspace", "/data/shared/"]
    for home in ("/workspace", "/workspace/home", "/data/shared", "/data/shared/u"):
        assert under_mount(home, mounts) is not None, home
    for home in ("/home/alice", "/workspace2", "/data", "/home/workspace"):
        assert under_mount(home, mounts) is None, home
    assert under_mount("/home/alice", ["/"]) == "/"
