import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jupyterhub.slugs import is_valid_safe_slug

from ds01spawner.projects.names import (
    InvalidProjectName,
    container_name,
    escape_username,
    oauth_client_id,
    path_safe_username,
    project_name_problem,
    validate_project_name,
)

HOSTILE = [
    "",
    ".",
    "..",
    "../x",
    "/etc",
    "a/b",
    "x" * 31,
    "MyThesis",
    "a--b",
    "my thesis",
    " my-thesis",
    "my-thesis\n",
    "a\x00b",
    "thеsis",  # Cyrillic 'е'
    "ｍｙ-thesis",  # full-width letters
    "-lead",
    "trail-",
    "1st",
    "a_b",
    "a.b",
    "~alice",
    "$(rm -rf /)",
    "name;ls",
    "%2e%2e",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_with_a_sentence(name):
    problem = project_name_problem(name)
    assert problem is not None
    assert "lowercase letters a-z" in problem and "my-thesis" in problem
    with pytest.raises(InvalidProjectName):
        validate_project_name(name)


@pytest.mark.parametrize("name", ["my-thesis", "a", "p2", "x" * 30, "deep-learning-2026"])
def test_valid_names(name):
    assert validate_project_name(name) == name


def test_non_text_is_refused():
    assert "must be text" in project_name_problem(["a"])
    assert "must be text" in project_name_problem(None)


@given(st.text(max_size=40))
def test_agrees_with_jupyterhub_server_name_rule(name):
    assert (project_name_problem(name) is None) == is_valid_safe_slug(name)


def test_documented_collision_pair():
    assert container_name("a-b", "c") != container_name("a", "b-c")
    assert container_name("a-b", "c") == "ds01-a-b.c"


slugs = st.from_regex(r"\A[a-z][a-z0-9]{0,5}(-[a-z0-9]{1,4}){0,2}\Z").filter(is_valid_safe_slug)
server = st.one_of(st.just(""), slugs)


@given(st.text(min_size=1, max_size=20), server, st.text(min_size=1, max_size=20), server)
def test_container_names_are_injective(u1, s1, u2, s2):
    if (u1, s1) != (u2, s2):
        assert container_name(u1, s1) != container_name(u2, s2)


@given(st.text(min_size=1, max_size=30), server)
def test_container_names_are_valid_docker_names(user, srv):
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", container_name(user, srv))


def test_escape_username_is_lowercase_and_dotless():
    assert escape_username("Alice.Smith") == escape_username("Alice.Smith").lower()
    assert "." not in escape_username("a.b")


@pytest.mark.parametrize("user", ["..", ".", "a/b", "../root", "a\x00", "x y", "/abs"])
def test_path_safe_username_never_walks(user):
    safe = path_safe_username(user)
    assert "/" not in safe and safe not in (".", "..") and "\x00" not in safe and " " not in safe


@pytest.mark.parametrize("user", ["alice", "j.doe", "bob_2", "x@example.org"])
def test_path_safe_username_keeps_account_names(user):
    assert path_safe_username(user) == user


@given(st.text(min_size=1, max_size=20), server, st.text(min_size=1, max_size=20), server)
def test_oauth_client_ids_are_injective_and_cookie_safe(u1, s1, u2, s2):
    cid = oauth_client_id(u1, s1)
    assert re.fullmatch(r"[a-z0-9_.-]+", cid)
    if (u1, s1) != (u2, s2):
        assert cid != oauth_client_id(u2, s2)


def test_jupyterhub_client_id_collision_is_avoided():
    assert oauth_client_id("a-b", "c") != oauth_client_id("a", "b-c")
    assert oauth_client_id("a-b", "") != oauth_client_id("a", "b")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_path_safe_usernames_are_injective(u1, u2):
    if u1 != u2:
        assert path_safe_username(u1) != path_safe_username(u2)


def test_escaped_and_plain_names_cannot_meet():
    assert path_safe_username("a b") != path_safe_username("a_20b")
    assert path_safe_username("..") != path_safe_username("_2e_2e")


@pytest.mark.parametrize(
    "a, b",
    [("j.doe", "j\x02edoe"), ("josé", "jos\x0c3\n9"), ("a\x01", "a\x001"), ("\x0f", "\x00f")],
)
def test_control_characters_never_make_two_users_share_a_name_or_path(a, b):
    """Found in review: one hex digit for bytes below 0x10 made ``j\\x02edoe`` share
    ``j.doe``'s container (its launch removed the other's running server) and paths."""
    assert container_name(a, "", "ds01") != container_name(b, "", "ds01")
    assert container_name(a, "p", "ds01") != container_name(b, "p", "ds01")
    assert path_safe_username(a) != path_safe_username(b)
    assert oauth_client_id(a, "p") != oauth_client_id(b, "p")
