"""The spawn form's rules as plain data: option validation, form fields, GPU choices."""

from __future__ import annotations

import pytest

from ds01spawner.gpus.model import Device
from ds01spawner.limits.model import Limits
from ds01spawner.web.form import (
    NEW_PROJECT,
    OptionsError,
    gpu_offer,
    limits_lines,
    options_from_form,
    parse_gpu_choice,
    validate_user_options,
)

TEMPLATES = ("empty", "python-ml")
IMAGES = ("ds01/base:latest", "ds01/torch:2")


def check(raw, server=""):
    return validate_user_options(
        raw,
        server_name=server,
        default_project="default",
        templates=TEMPLATES,
        offered_images=IMAGES,
    )


def test_the_standard_image_is_always_a_choice():
    assert check({"image": "standard"}, "x").image == "standard"
    with pytest.raises(OptionsError) as e:
        check({"image": "ds01/other:1"}, "x")
    assert "'standard': the server's standard image" in str(e.value)
    assert options_from_form({"project": ["x"], "image": ["standard"]})["image"] == "standard"


def test_empty_options_use_the_server_name_or_the_default_project():
    assert check({}, "thesis").project == "thesis"
    assert check(None).project == "default"
    assert check({"project": "gan"}).project == "gan"


def test_valid_options_pass_through():
    got = check(
        {"template": "python-ml", "image": "ds01/torch:2", "gpus": 2, "gpu_type": "full"}, "x"
    )
    assert (got.project, got.template, got.image) == ("x", "python-ml", "ds01/torch:2")
    assert got.gpu_options == {"gpus": 2, "gpu_type": "full"}


@pytest.mark.parametrize(
    "raw, server, needle",
    [
        ({"project": "../bob/thesis"}, "", "project name"),
        ({"project": "bob/thesis"}, "", ""),
        ({"project": "other"}, "thesis", "This server is for project 'thesis'"),
        ({"project": "../../etc"}, "thesis", "This server is for project"),
        ({"project": "<script>alert(1)</script>"}, "", ""),
        ({"template": "<script>alert(1)</script>"}, "x", "Unknown project template"),
        ({"template": "../../etc"}, "x", "Unknown project template"),
        ({"image": "evil/miner:latest"}, "x", "not offered"),
        ({"image": "<img src=x onerror=alert(1)>"}, "x", "not offered"),
        ({"gpus": 99}, "x", "between 0 and 64"),
        ({"gpus": -1}, "x", "between 0 and 64"),
        ({"gpus": True}, "x", "whole number"),
        ({"gpus": 1.5}, "x", "whole number"),
        ({"gpus": [1]}, "x", "whole number"),
        ({"gpu_type": {"a": 1}}, "x", "must be text"),
        ({"evil": 1}, "x", "Unknown server option"),
        ({"project": "a" * 500}, "", "500 characters long"),
        ({"project": "ab\ncd"}, "", "not a valid project name"),
        ({"project": " lead"}, "", "not a valid project name"),
        ({"project": 7}, "", "must be text"),
        ({"image": " ds01/base:latest"}, "x", "not offered"),
        (["gpus", 1], "x", "JSON object"),
        ("gpus=1", "x", "JSON object"),
    ],
)
def test_invalid_options_are_refused_without_echoing_them(raw, server, needle):
    with pytest.raises(OptionsError) as e:
        check(raw, server)
    message = str(e.value)
    assert needle in message
    for hostile in ("<script", "<img", "onerror", "evil/miner"):
        assert hostile not in message


def test_form_fields_become_options():
    form = {
        "project": [NEW_PROJECT],
        "new_project": [" my-thesis "],
        "template": ["python-ml"],
        "gpu": ["full:2"],
        "image": [""],
    }
    assert options_from_form(form) == {
        "project": "my-thesis",
        "template": "python-ml",
        "gpus": 2,
        "gpu_type": "full",
    }
    existing = {"project": ["gan"], "template": ["empty"], "gpu": ["mig:3g.20gb"]}
    # the template radios of the "new project" part are ignored for an existing project
    assert options_from_form(existing) == {"project": "gan", "gpus": 1, "gpu_type": "3g.20gb"}
    assert options_from_form({"gpu": ["0"], "image": ["ds01/torch:2"]}) == {
        "gpus": 0,
        "image": "ds01/torch:2",
    }


@pytest.mark.parametrize("bad", ["full:x", "mig:", "two", "any:-1", "full:"])
def test_tampered_gpu_choice(bad):
    with pytest.raises(OptionsError):
        parse_gpu_choice(bad)


def gpu(i: int) -> Device:
    return Device(f"GPU-{i}", str(i), "NVIDIA A100", 40960, "gpu")


def mig(i: int, profile: str, share: float) -> Device:
    return Device(
        f"MIG-{i}", f"3:{i}", f"A100 MIG {profile}", 10240, "mig", "GPU-3", profile, share
    )


DEVICES = [
    gpu(0),
    gpu(1),
    gpu(2),
    mig(0, "3g.20gb", 3 / 7),
    mig(1, "2g.10gb", 2 / 7),
    mig(2, "2g.10gb", 2 / 7),
]
OPEN = Limits.unlimited()


def values(offer):
    return {c.value: c for c in offer.choices}


def test_offer_counts_free_devices():
    offer = gpu_offer(DEVICES, {"GPU-0", "MIG-1"}, OPEN, 0.0, 1)
    assert offer.summary == "2 of 3 GPUs free · 2 of 3 MIG slices free"
    choices = values(offer)
    assert list(choices) == [
        "0",
        "any:1",
        "full:1",
        "full:2",
        "full:3",
        "mig:2g.10gb",
        "mig:3g.20gb",
    ]
    assert choices["full:3"].disabled and "only 2 free" in choices["full:3"].note
    assert not choices["full:2"].disabled
    assert choices["mig:2g.10gb"].note == "1 of 2 free"
    assert offer.default == "any:1"


def test_offer_respects_per_server_and_mig_only_limits():
    limits = Limits(None, 1, False, None, None, None, None, None, None, None)
    choices = values(gpu_offer(DEVICES, set(), limits, 0.0, 1))
    assert "full:1" not in choices and "full:2" not in choices
    assert choices["any:1"].label.endswith("any free MIG slice")
    assert "mig:3g.20gb" in choices


def test_offer_disables_what_is_over_the_users_total():
    limits = Limits(2.0, None, True, None, None, None, None, None, None, None)
    choices = values(gpu_offer(DEVICES, set(), limits, 1.5, 1))
    assert choices["full:1"].disabled and "0.5 of 2 GPUs left" in choices["full:1"].note
    assert not choices["mig:2g.10gb"].disabled  # 2/7 fits in what is left
    assert choices["mig:3g.20gb"].disabled is False  # 3/7 < 0.5


def test_offer_when_everything_is_busy_defaults_to_no_gpu():
    taken = {d.uuid for d in DEVICES}
    offer = gpu_offer(DEVICES, taken, OPEN, 0.0, 1)
    assert offer.default == "0"
    assert all(c.disabled for c in offer.choices if c.value != "0")
    assert offer.summary.startswith("0 of 3 GPUs free")


def test_offer_without_gpus():
    offer = gpu_offer([], set(), OPEN, 0.0, 1)
    assert [c.value for c in offer.choices] == ["0"]
    assert offer.summary == "This server has no GPUs"


def test_limits_lines():
    limits = Limits(2.0, 1, False, 3, None, None, None, None, 24.0, 2.0)
    lines = limits_lines(limits, 1)
    assert lines[0] == "Servers at once: 1 running of 3"
    assert "(MIG slices only)" in lines[1]
    assert "Runtime per server: 24 h" in lines
    assert "Retired after idle: 2 h" in lines


def test_gpu_amounts_read_as_people_write_them():
    from ds01spawner.cli.output import gpus
    from ds01spawner.web.form import human

    for f in (human, gpus):
        assert [f(x) for x in (0.2143, 0.5, 2.0, 0.2857, 0.0, 1 / 3)] == [
            "0.21",
            "0.5",
            "2",
            "0.29",
            "0",
            "0.33",
        ]
