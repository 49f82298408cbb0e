"""The launch plan (launch.py): built from explicit inputs, frozen, image choice, phases."""

import dataclasses

import pytest

from ds01spawner.gpus.allocator import GpuRequest
from ds01spawner.identity import Identity
from ds01spawner.limits.model import Limits
from ds01spawner.spawner.launch import (
    IMAGE_BASE,
    IMAGE_DOCKERFILE,
    IMAGE_OFFERED,
    IMAGE_PROJECT,
    IMAGE_STANDARD,
    LaunchPhases,
    image_choice,
    launch_plan,
)
from ds01spawner.web.form import STANDARD_IMAGE, LaunchOptions


def plan_for(options: LaunchOptions):
    return launch_plan(
        user="ana",
        server="p1",
        options=options,
        identity=Identity(1001, 1001, (27,)),
        home="/home/ana",
        gpu_broker=None,
        gpu_request=GpuRequest(1, "mig"),
        gpu_devices=[],
        limits=Limits.unlimited(),
        workspace_dir="/srv/ws/ana/p1",
        workspace_identity=[64, 1234],
        base_image="ds01/base:latest",
    )


def test_the_plan_holds_what_was_decided_and_cannot_change():
    plan = plan_for(LaunchOptions("p1", gpu_options={"gpus": 1}))
    assert (plan.user, plan.server, plan.project) == ("ana", "p1", "p1")
    assert plan.gpu_request == GpuRequest(1, "mig")
    assert plan.workspace_identity == (64, 1234)
    assert plan.gpu_devices == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.project = "other"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (None, ("", IMAGE_PROJECT)),
        (STANDARD_IMAGE, ("ds01/base:latest", IMAGE_STANDARD)),
        ("ds01/r:4", ("ds01/r:4", IMAGE_OFFERED)),
    ],
)
def test_the_image_as_far_as_the_options_decide_it(image, expected):
    assert image_choice(LaunchOptions("p1", image=image), "ds01/base:latest") == expected
    plan = plan_for(LaunchOptions("p1", image=image))
    assert (plan.image, plan.image_source) == expected


def test_an_obtained_image_gives_a_new_plan():
    plan = plan_for(LaunchOptions("p1"))
    built = plan.with_image("ds01-ana/p1:abc", IMAGE_DOCKERFILE)
    assert (built.image, built.image_source) == ("ds01-ana/p1:abc", IMAGE_DOCKERFILE)
    assert (plan.image, plan.image_source) == ("", IMAGE_PROJECT)
    assert plan.with_image("ds01/base", IMAGE_BASE).image_source == IMAGE_BASE


def test_phases_are_recorded_per_launch():
    phases = LaunchPhases()
    phases.started()  # never allocated: no start phase
    assert phases.timings == {}
    phases.allocated(0.0)  # began at monotonic time 0
    assert phases.timings["allocate"] > 0
    phases.started()
    assert set(phases.timings) == {"allocate", "start"}
    assert LaunchPhases().timings == {}  # a fresh record for each launch
