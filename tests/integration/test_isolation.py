"""Several servers at once: one user's projects side by side, users that never collide."""

from concurrent.futures import ThreadPoolExecutor

from .hub import ds01_containers


def start_all(hub, pairs):
    with ThreadPoolExecutor(len(pairs)) as pool:
        list(pool.map(lambda p: hub.start_server(*p), pairs))


def mounts(container) -> list[str]:
    return [m["Source"] for m in container.attrs["Mounts"]]


def test_two_projects_of_one_user_and_the_same_project_of_two_users(hub, docker_client):
    pairs = [("alice", "proj-one"), ("alice", "proj-two"), ("bob", "proj-one")]
    start_all(hub, pairs)
    containers = {
        (c.labels["ds01.user"], c.labels["ds01.project"]): c
        for c in ds01_containers(docker_client, hub.prefix)
    }
    assert set(containers) == set(pairs)
    assert all(c.status == "running" for c in containers.values())
    sources = {k: mounts(c) for k, c in containers.items()}
    assert len({tuple(v) for v in sources.values()}) == 3
    for (user, project), src in sources.items():
        assert src == [str((hub.workspaces / user / project).resolve())]

    # each server writes a marker; each sees only its own
    for user, project in pairs:
        token = hub.user_token(user)
        r = hub.server_api(
            "PUT",
            user,
            project,
            "/contents/whoami.txt",
            token,
            json={"type": "file", "format": "text", "content": f"{user}/{project}"},
        )
        assert r.status_code == 201, r.text
    for user, project in pairs:
        r = hub.server_api("GET", user, project, "/contents/whoami.txt", hub.user_token(user))
        assert r.json()["content"] == f"{user}/{project}"
    # each has a name in its container (issue 15 item 9): whoami, id, the prompt's \u
    for (user, _), c in containers.items():
        code, out = c.exec_run(["sh", "-c", "whoami; id -gn; echo ~; ls -ln /etc/passwd"])
        assert code == 0, out
        name, group, home, listing = out.decode().splitlines()
        assert name == user and group and not group.isdigit()  # the group has a name too
        assert home == f"/home/{user}"
        assert listing.startswith("-rw-r--r-- 1 0 0 ")  # root's, read-only for the user
        code, out = c.exec_run(["sh", "-c", "echo x >> /etc/passwd"])
        assert code != 0
    for user, project in pairs:
        hub.stop_server(user, project)


def test_lookalike_user_and_project_pairs_do_not_collide(hub, docker_client):
    pairs = [("a-b", "c"), ("a", "b-c")]
    start_all(hub, pairs)
    names = sorted(c.name for c in ds01_containers(docker_client, hub.prefix))
    assert names == sorted([f"{hub.prefix}-a-b.c", f"{hub.prefix}-a.b-c"])
    assert (hub.workspaces / "a-b" / "c").is_dir() and (hub.workspaces / "a" / "b-c").is_dir()
    for pair in pairs:
        hub.stop_server(*pair)


def test_a_token_reaches_only_its_owners_server(hub):
    hub.start_server("alice", "private")
    hub.start_server("bob", "private")
    alice, bob = hub.user_token("alice"), hub.user_token("bob")
    assert hub.server_api("GET", "alice", "private", "/contents", alice).status_code == 200
    assert hub.server_api("GET", "bob", "private", "/contents", bob).status_code == 200
    assert hub.server_api("GET", "bob", "private", "/contents", alice).status_code == 403
    assert hub.server_api("GET", "alice", "private", "/contents", bob).status_code == 403
    anonymous = hub.session.get(
        f"{hub.url}/user/alice/private/api/contents", allow_redirects=False, timeout=30
    )
    assert anonymous.status_code in (302, 403)
    hub.stop_server("alice", "private")
    hub.stop_server("bob", "private")
