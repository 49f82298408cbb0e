"""Docker names of project images: valid references, one repository per (user, project)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01spawner.images.tags import (
    COMPONENT_RE,
    TagError,
    image_ref,
    image_tag,
    repository,
    split_ref,
    user_component,
)

DIGEST = "0123456789abcdef" * 4


@pytest.mark.parametrize("name", ["alice", "j.doe", "ann_fe", "bob-2", "a1"])
def test_plain_usernames_are_kept(name):
    assert user_component(name) == name


@pytest.mark.parametrize(
    "name",
    ["Alice", "a--b", "x--616c696365", "-x", "x-", "a b", "ü", "a/b", "..", "_a", "a__b", ""],
)
def test_other_usernames_are_escaped_into_valid_components(name):
    component = user_component(name)
    assert component != name
    assert COMPONENT_RE.fullmatch(f"ds01-{component}"), component


def test_an_escaped_looking_name_does_not_collide_with_the_escape():
    # "x--616c696365" is what "alice" would never be escaped to, but check both directions
    assert user_component("x--616c696365") != user_component("alice")
    assert user_component("Alice") == "x--416c696365"


def test_repository_and_ref():
    assert repository("ds01", "alice", "thesis") == "ds01-alice/thesis"
    assert image_ref("ds01", "alice", "thesis", DIGEST) == "ds01-alice/thesis:0123456789abcdef0123"
    assert image_tag(DIGEST) == DIGEST[:20]
    with pytest.raises(ValueError):
        image_tag("not-a-digest")


def test_bad_prefix_is_an_admin_error():
    with pytest.raises(TagError, match="prefix"):
        repository("DS01", "alice", "thesis")
    with pytest.raises(TagError):
        repository("-ds01", "alice", "thesis")


def test_project_images_never_match_the_default_allowed_bases():
    from ds01spawner.images.dockerfile import is_allowed

    assert not is_allowed(image_ref("ds01", "alice", "p", DIGEST), ["ds01/*"])


def test_split_ref():
    assert split_ref("ds01-a/p:abc") == ("ds01-a/p", "abc")
    assert split_ref("localhost:5000/x") == ("localhost:5000/x", "latest")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_components_are_valid_and_injective(a, b):
    ca, cb = user_component(a), user_component(b)
    assert COMPONENT_RE.fullmatch(f"ds01-{ca}") and len(ca) <= 130
    if a != b:
        assert ca != cb
