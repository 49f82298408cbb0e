"""The GPU inventory: NVML against a test double, the simulated one, the factory and the probe."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ds01spawner.gpus import (
    Device,
    DeviceUsage,
    Inventory,
    InventoryError,
    NoneInventory,
    make_inventory,
)
from ds01spawner.gpus.__main__ import main as probe_main
from ds01spawner.gpus.model import mig_memory_gb, parse_mig_profile
from ds01spawner.gpus.nvml import NvmlInventory
from ds01spawner.gpus.simulated import SimulatedInventory, write_state

from . import fake_pynvml as fake
from .fake_pynvml import A30_PROFILES, FakeGpu, FakeNvml, gpu, mig

REPO = Path(__file__).resolve().parents[2]
LOG = "ds01spawner.gpus"
A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
MIG_A100 = {**A100, "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"]}


def real_nvml_works() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


no_driver = pytest.mark.skipif(
    real_nvml_works(), reason="this host has a working NVIDIA driver; these tests expect none"
)


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def mig_machine(**kw) -> FakeNvml:
    """GPU 0 whole, GPU 1 split into 3g.20gb, 2g.10gb and 1g.5gb+me in slots 0, 2 and 5."""
    return FakeNvml(
        [
            gpu(0, utilization_pct=42, used_mib=1234, pids=[300, 100, 300]),
            gpu(
                1,
                mig_current=True,
                migs=[
                    mig(1, 0, "3g.20gb", used_mib=512, pids=[777]),
                    mig(1, 2, "2g.10gb"),
                    mig(1, 5, "1g.5gb+me"),
                ],
            ),
        ],
        **kw,
    )


# ---- the test double follows pynvml -------------------------------------------------------------


def test_the_double_has_pynvmls_names_signatures_and_errors():
    import pynvml

    double = FakeNvml()
    functions = [n for n in dir(FakeNvml) if n.startswith("nvml")]
    assert len(functions) > 20
    for name in functions:
        real = getattr(pynvml, name)
        assert inspect.signature(getattr(double, name)) == inspect.signature(real), name
    errors = {n for n in dir(fake) if n.startswith("NVMLError")}
    assert errors == {n for n in dir(pynvml) if n.startswith("NVMLError")}
    for name in errors:
        real_cls = getattr(pynvml, name)
        fake_cls = getattr(double, name)
        assert issubclass(fake_cls, double.NVMLError)
        if name != "NVMLError":
            code = real_cls(0).value  # the subclass ignores its argument, as in pynvml
            assert fake_cls(0).value == code
            assert type(double.NVMLError(code)) is fake_cls
            if code in pynvml.NVMLError._errcode_to_string:
                assert str(fake_cls(0)) == str(real_cls(0))
    for name in [n for n in dir(pynvml) if n.startswith("NVML_ERROR_")]:
        assert getattr(double, name) == getattr(pynvml, name), name
    # except-clauses work the way they do with pynvml
    with pytest.raises(double.NVMLError_NotFound):
        raise double.NVMLError(double.NVML_ERROR_NOT_FOUND)
    with pytest.raises(double.NVMLError):
        raise double.NVMLError_GpuIsLost(double.NVML_ERROR_GPU_IS_LOST)


# ---- NVML: devices ------------------------------------------------------------------------------


def test_mig_off_every_gpu_is_a_device():
    nvml = FakeNvml([gpu(0), gpu(1), gpu(2, name="NVIDIA H100 80GB HBM3", memory_mib=81559)])
    inv = NvmlInventory(nvml=nvml)
    devices = inv.devices()
    assert [d.index for d in devices] == ["0", "1", "2"]
    assert [d.uuid for d in devices] == [g.uuid for g in nvml.gpus]
    assert all(d.kind == "gpu" and d.share == 1.0 and not d.simulated for d in devices)
    assert all(d.parent_uuid is None and d.mig_profile is None for d in devices)
    assert devices[2] == Device(
        uuid=nvml.gpus[2].uuid,
        index="2",
        name="NVIDIA H100 80GB HBM3",
        memory_mib=81559,
        kind="gpu",
    )
    assert inv.kind == "nvml" and isinstance(inv, Inventory)
    assert inv.describe() == "3 GPUs via NVML, driver 550.54.15"


def test_mig_on_lists_the_instances_instead_of_the_gpu():
    nvml = mig_machine()
    devices = NvmlInventory(nvml=nvml).devices()
    parent = nvml.gpus[1].uuid
    assert [d.index for d in devices] == ["0", "1:0", "1:2", "1:5"]
    assert parent not in [d.uuid for d in devices]
    whole, big, mid, small = devices
    assert whole.kind == "gpu" and whole.share == 1.0
    assert big == Device(
        uuid=nvml.gpus[1].migs[0].uuid,
        index="1:0",
        name="NVIDIA A100-SXM4-40GB MIG 3g.20gb",
        memory_mib=19968,
        kind="mig",
        parent_uuid=parent,
        mig_profile="3g.20gb",
        share=3 / 7,
    )
    assert (mid.mig_profile, mid.share, mid.memory_mib) == ("2g.10gb", 2 / 7, 9856)
    assert (small.mig_profile, small.share, small.parent_uuid) == ("1g.5gb+me", 1 / 7, parent)
    assert NvmlInventory(nvml=nvml).describe() == (
        "2 GPUs via NVML, driver 550.54.15 (1 split into 3 MIG slices)"
    )


def test_mig_profile_from_the_attributes_when_the_name_has_none():
    # older drivers name a MIG device like its GPU; the profile comes from the slice counts
    nvml = mig_machine(mig_names_have_profile=False)
    nvml.gpus[1].migs.append(mig(1, 6, "1c.3g.20gb", gpu_instance_id=2, compute_instance_id=1))
    devices = NvmlInventory(nvml=nvml).devices()
    profiles = {d.index: (d.mig_profile, d.share, d.name) for d in devices if d.kind == "mig"}
    assert profiles == {
        "1:0": ("3g.20gb", 3 / 7, "NVIDIA A100-SXM4-40GB MIG 3g.20gb"),
        "1:2": ("2g.10gb", 2 / 7, "NVIDIA A100-SXM4-40GB MIG 2g.10gb"),
        "1:5": ("1g.5gb", 1 / 7, "NVIDIA A100-SXM4-40GB MIG 1g.5gb"),  # '+me' is only in names
        "1:6": ("1c.3g.20gb", 1 / 7, "NVIDIA A100-SXM4-40GB MIG 1c.3g.20gb"),
    }


def test_a_compute_instance_counts_its_own_slices():
    nvml = FakeNvml([gpu(0, mig_current=True, migs=[mig(0, 0, "1c.3g.20gb")])])
    (d,) = NvmlInventory(nvml=nvml).devices()
    assert (d.mig_profile, d.share, d.memory_mib) == ("1c.3g.20gb", 1 / 7, 19968)


def test_share_is_over_the_parents_own_slice_count():
    a30 = FakeGpu(
        name="NVIDIA A30",
        uuid="GPU-a3000000-0000-0000-0000-000000000000",
        memory_mib=24576,
        mig_current=True,
        gi_profiles=dict(A30_PROFILES),
        migs=[mig(0, 0, "2g.12gb"), mig(0, 1, "1g.6gb")],
    )
    devices = NvmlInventory(nvml=FakeNvml([a30])).devices()
    assert [(d.mig_profile, d.share) for d in devices] == [("2g.12gb", 0.5), ("1g.6gb", 0.25)]


def test_share_falls_back_to_seven_slices_when_nvml_lists_no_profiles(caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    nvml = mig_machine()

    def no_profiles(device, profile, version=2):
        raise fake.NVMLError(fake.NVML_ERROR_NOT_SUPPORTED)

    nvml.nvmlDeviceGetGpuInstanceProfileInfo = no_profiles
    inv = NvmlInventory(nvml=nvml)
    assert [d.share for d in inv.devices()] == [1.0, 3 / 7, 2 / 7, 1 / 7]
    inv.devices()
    (line,) = [r.getMessage() for r in caplog.records if "compute slices" in r.getMessage()]
    assert "counting 7 compute slices" in line  # once: the count is kept per GPU


def test_pending_mig_mode_does_not_count():
    nvml = FakeNvml([gpu(0, mig_current=False, mig_pending=True), gpu(1, mig_capable=False)])
    devices = NvmlInventory(nvml=nvml).devices()
    assert [(d.index, d.kind) for d in devices] == [("0", "gpu"), ("1", "gpu")]


def test_mig_enabled_gpu_without_instances_is_skipped_and_logged_once(caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    nvml = FakeNvml([gpu(0), gpu(1, mig_current=True), gpu(2)])
    inv = NvmlInventory(nvml=nvml)
    assert [d.index for d in inv.devices()] == ["0", "2"]
    assert [d.index for d in inv.devices()] == ["0", "2"]
    assert sorted(inv.usage()) == sorted([nvml.gpus[0].uuid, nvml.gpus[2].uuid])
    (warning,) = warnings(caplog)
    assert "GPU 1 has MIG mode enabled but no MIG instances" in warning
    assert "nvidia-smi -i 1 -mig 0" in warning
    assert inv.describe().endswith("(left out: GPU 1)")
    nvml.gpus[1].migs.append(mig(1, 0, "7g.40gb"))  # an admin creates an instance
    assert [d.index for d in inv.devices()] == ["0", "1:0", "2"]
    assert inv.devices()[1].share == 1.0


@pytest.mark.parametrize(
    "code, words",
    [
        (
            fake.NVML_ERROR_DRIVER_NOT_LOADED,
            "NVML could not load the NVIDIA driver (Driver Not Loaded): is the nvidia kernel "
            "module loaded? nvidia-smi should work first.",
        ),
        (fake.NVML_ERROR_LIBRARY_NOT_FOUND, "(NVML Shared Library Not Found): libnvidia-ml.so.1"),
        (fake.NVML_ERROR_NO_PERMISSION, "cannot open /dev/nvidia*"),
        (fake.NVML_ERROR_LIB_RM_VERSION_MISMATCH, "reboot or reload the nvidia module"),
        (fake.NVML_ERROR_UNKNOWN, "NVML failed to initialise (Unknown Error)"),
    ],
)
def test_nvml_that_cannot_initialise_is_an_inventory_error(code, words):
    with pytest.raises(InventoryError) as e:
        NvmlInventory(nvml=FakeNvml([gpu(0)], init_error=code))
    assert words in str(e.value)
    assert "\n" not in str(e.value) and str(e.value).endswith("should work first.")


def test_a_lost_gpu_is_left_out_and_the_others_work(caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    nvml = mig_machine()
    nvml.gpus.append(gpu(2, lost=True))
    nvml.gpus.append(gpu(3))
    inv = NvmlInventory(nvml=nvml)
    assert [d.index for d in inv.devices()] == ["0", "1:0", "1:2", "1:5", "3"]
    usage = inv.usage()
    assert nvml.gpus[2].uuid not in usage and nvml.gpus[3].uuid in usage
    (warning,) = warnings(caplog)
    assert warning == "GPU inventory: GPU 2 is left out: NVML fails on it (GPU is lost)."
    # it comes back (e.g. after a reset), and the log says so
    nvml.gpus[2].lost = False
    assert "2" in [d.index for d in inv.devices()]
    inv.usage()
    assert any("GPU 2 is usable again" in r.getMessage() for r in caplog.records)


def test_a_gpu_lost_between_devices_and_usage_is_left_out_of_usage():
    nvml = mig_machine()
    inv = NvmlInventory(nvml=nvml)
    assert len(inv.devices()) == 4
    nvml.gpus[1].lost = True  # takes its MIG devices with it
    usage = inv.usage()
    assert list(usage) == [nvml.gpus[0].uuid]
    assert [d.index for d in inv.devices()] == ["0"]


@pytest.mark.parametrize(
    "where, call",
    [
        ("gpu", "nvmlDeviceGetUUID"),
        ("gpu", "nvmlDeviceGetMemoryInfo"),
        ("gpu", "nvmlDeviceGetMigMode"),
        ("mig", "nvmlDeviceGetName"),
        ("mig", "nvmlDeviceGetUUID"),
    ],
)
def test_a_device_whose_calls_fail_is_left_out(where, call, caplog):
    nvml = mig_machine()
    target = nvml.gpus[0] if where == "gpu" else nvml.gpus[1].migs[1]
    target.errors[call] = fake.NVML_ERROR_UNKNOWN
    devices = NvmlInventory(nvml=nvml).devices()
    left_out = "0" if where == "gpu" else "1:2"
    assert left_out not in [d.index for d in devices]
    assert len(devices) == 3
    assert any("(Unknown Error)" in w for w in warnings(caplog))


def test_a_failing_mig_slot_is_left_out_but_empty_slots_are_quiet(caplog):
    nvml = mig_machine()
    real = nvml.nvmlDeviceGetMigDeviceHandleByIndex

    def handle_by_index(device, index):
        if index == 3:
            raise fake.NVMLError(fake.NVML_ERROR_UNKNOWN)
        return real(device, index)

    nvml.nvmlDeviceGetMigDeviceHandleByIndex = handle_by_index
    assert [d.index for d in NvmlInventory(nvml=nvml).devices()] == ["0", "1:0", "1:2", "1:5"]
    assert warnings(caplog) == [
        "GPU inventory: MIG device 1:3 is left out: NVML fails on it (Unknown Error)."
    ]


def test_nvml_that_cannot_count_offers_nothing(caplog):
    inv = NvmlInventory(nvml=FakeNvml([gpu(0)], count_error=fake.NVML_ERROR_UNKNOWN))
    assert inv.devices() == [] and inv.usage() == {}
    assert "NVML cannot count the GPUs (Unknown Error)" in warnings(caplog)[0]


def test_an_unexpected_exception_does_not_escape(caplog):
    nvml = mig_machine()
    nvml.nvmlDeviceGetName = lambda handle: 1 / 0
    assert NvmlInventory(nvml=nvml).devices() == []
    assert all("ZeroDivisionError" in w for w in warnings(caplog))


# ---- NVML: usage --------------------------------------------------------------------------------


def test_usage_with_mig_utilization_not_supported():
    nvml = mig_machine()
    usage = NvmlInventory(nvml=nvml).usage()
    g0, g1 = nvml.gpus
    assert list(usage) == [g0.uuid] + [m.uuid for m in g1.migs]
    assert usage[g0.uuid] == DeviceUsage(g0.uuid, 42.0, 1234, (100, 300))
    assert usage[g1.migs[0].uuid] == DeviceUsage(g1.migs[0].uuid, None, 512, (777,))
    assert usage[g1.migs[1].uuid] == DeviceUsage(g1.migs[1].uuid, None, 0, ())


def test_usage_where_nvml_does_not_tell():
    nvml = mig_machine()
    nvml.gpus[0].errors.update(
        nvmlDeviceGetComputeRunningProcesses=fake.NVML_ERROR_NO_PERMISSION,
        nvmlDeviceGetMemoryInfo=fake.NVML_ERROR_NOT_SUPPORTED,
    )
    usage = NvmlInventory(nvml=nvml).usage()
    assert usage[nvml.gpus[0].uuid] == DeviceUsage(nvml.gpus[0].uuid, 42.0, None, ())


@pytest.mark.parametrize("return_bytes", [False, True])
def test_bytes_and_str_names_give_the_same_devices(return_bytes):
    devices = NvmlInventory(nvml=mig_machine(return_bytes=return_bytes)).devices()
    assert devices == NvmlInventory(nvml=mig_machine()).devices()
    assert all(isinstance(d.uuid, str) and isinstance(d.name, str) for d in devices)
    assert devices[1].name == "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    usage = NvmlInventory(nvml=mig_machine(return_bytes=return_bytes)).usage()
    assert all(isinstance(k, str) for k in usage)


def test_close_shuts_nvml_down_once():
    nvml = FakeNvml([gpu(0)])
    inv = NvmlInventory(nvml=nvml)
    inv.close()
    inv.close()
    assert nvml.calls.count("nvmlShutdown") == 1 and nvml.initialised == 0


# ---- MIG profile helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total_mib, mig_mib, gb",
    [
        (40960, 4864, 5),
        (40960, 9856, 10),
        (40960, 19968, 20),
        (40960, 40192, 40),
        (81920, 9728, 10),
        (81920, 40192, 40),
        (81559, 40448, 40),  # H100 80GB HBM3
        (24576, 5836, 6),  # A30
    ],
)
def test_mig_memory_gb_rounds_like_nvidia(total_mib, mig_mib, gb):
    assert mig_memory_gb(total_mib * 1024 * 1024, mig_mib) == gb


def test_parse_mig_profile():
    assert str(parse_mig_profile("3g.20gb")) == "3g.20gb"
    p = parse_mig_profile("1c.3g.20gb")
    assert (p.compute_slices, p.gi_slices, p.memory_gb, str(p)) == (1, 3, 20, "1c.3g.20gb")
    assert parse_mig_profile("1g.5gb+me").suffix == "+me"
    assert parse_mig_profile("3g") is None and parse_mig_profile("big") is None


# ---- simulated ----------------------------------------------------------------------------------


def test_simulated_spec_gives_gpus_and_mig_slices():
    inv = SimulatedInventory([A100, MIG_A100, A100])
    devices = inv.devices()
    assert [d.index for d in devices] == ["0", "1:0", "1:1", "1:2", "2"]
    assert all(d.simulated for d in devices)
    assert devices[0] == Device(
        uuid="GPU-5e000000-0000-0000-0000-000000000000",
        index="0",
        name="NVIDIA A100-SXM4-40GB",
        memory_mib=40960,
        kind="gpu",
        simulated=True,
    )
    assert devices[1] == Device(
        uuid="MIG-5e000000-0000-0000-0001-000000000000",
        index="1:0",
        name="NVIDIA A100-SXM4-40GB MIG 3g.20gb",
        memory_mib=20480,
        kind="mig",
        parent_uuid="GPU-5e000000-0000-0000-0000-000000000001",
        mig_profile="3g.20gb",
        share=3 / 7,
        simulated=True,
    )
    assert [d.share for d in devices] == [1.0, 3 / 7, 2 / 7, 2 / 7, 1.0]
    assert inv.kind == "simulated"
    assert inv.describe() == "3 simulated GPUs (1 split into 3 MIG slices)"


def test_simulated_uuids_are_deterministic_and_unique():
    spec = [A100, MIG_A100, {**A100, "mig_profiles": ["7g.40gb"]}, A100]
    first = [d.uuid for d in SimulatedInventory(spec).devices()]
    assert first == [d.uuid for d in SimulatedInventory(list(spec)).devices()]
    assert len(set(first)) == len(first)
    shaped = re.compile(r"(GPU|MIG)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert all(shaped.fullmatch(u) and "-5e000000-" in u for u in first)


def test_simulated_uuids_can_be_given():
    spec = [
        {**A100, "uuid": "GPU-aaaa"},
        {**A100, "uuid": "GPU-bbbb", "mig_profiles": [{"profile": "4g.20gb", "uuid": "MIG-cccc"}]},
    ]
    devices = SimulatedInventory(spec).devices()
    assert [(d.uuid, d.parent_uuid) for d in devices] == [
        ("GPU-aaaa", None),
        ("MIG-cccc", "GPU-bbbb"),
    ]
    assert devices[1].share == 4 / 7


@pytest.mark.parametrize(
    "spec, words",
    [
        ([{"memory_mib": 40960}], '#0 {"memory_mib": 40960}: "name" is missing'),
        ([A100, {"name": "X", "memory_mib": "40GB"}], '#1 {"name": "X", "memory_mib": "40GB"}'),
        ([{**A100, "memory_mib": True}], '"memory_mib" must be a whole number'),
        ([{**A100, "memory_mib": 40960.0}], '"memory_mib" must be a whole number'),
        ([{**A100, "mig_profiles": ["5g.20gb"]}], "unknown MIG profile '5g.20gb'"),
        ([{**A100, "mig_profiles": ["3g.20"]}], "unknown MIG profile '3g.20'"),
        ([{**A100, "mig_profiles": ["1c.3g.20gb"]}], "unknown MIG profile '1c.3g.20gb'"),
        ([{**A100, "mig_profiles": [3]}], "unknown MIG profile 3"),
        ([{**A100, "mig_profiles": ["4g.20gb", "4g.20gb"]}], "take 8 slices, but a GPU has 7"),
        ([{**A100, "mig_profiles": "3g.20gb"}], '"mig_profiles" must be a list'),
        ([{**A100, "mig_profile": ["3g.20gb"]}], "unknown key 'mig_profile'"),
        ([{**A100, "mig_enabled": False, "mig_profiles": ["3g.20gb"]}], "needs MIG mode"),
        ([{**A100, "uuid": "abc"}], "starting with 'GPU-'"),
        ([{**A100, "uuid": "GPU-1"}, {**A100, "uuid": "GPU-1"}], "GPU-1 is used twice"),
        (["A100"], "#0 'A100': a GPU is an object"),
        ({"name": "A100"}, "must be a list of GPUs"),
    ],
)
def test_invalid_simulated_specs_name_the_item(spec, words):
    with pytest.raises(InventoryError) as e:
        SimulatedInventory(spec)
    assert words in str(e.value)


def test_simulated_mig_enabled_without_instances_is_skipped_like_nvml(caplog):
    inv = SimulatedInventory([A100, {**A100, "mig_enabled": True}, {**A100, "mig_profiles": []}])
    assert [d.index for d in inv.devices()] == ["0"]
    inv.devices()
    inv.usage()
    assert len(warnings(caplog)) == 2
    assert "simulated GPU 1 has MIG mode enabled but no MIG instances" in warnings(caplog)[0]
    assert inv.describe() == "3 simulated GPUs (left out: GPU 1, GPU 2)"


def test_simulated_usage_is_idle_without_a_state_file(tmp_path):
    for state_file in (None, str(tmp_path / "missing.json")):
        usage = SimulatedInventory([A100, MIG_A100], state_file=state_file).usage()
        assert len(usage) == 4
        gpu0 = usage["GPU-5e000000-0000-0000-0000-000000000000"]
        assert gpu0 == DeviceUsage(gpu0.uuid, 0.0, 0, ())
        slice0 = usage["MIG-5e000000-0000-0000-0001-000000000000"]
        assert slice0.utilization_pct is None  # like NVML on a MIG device


def test_simulated_state_file_is_read_live(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    state = str(tmp_path / "gpus.json")
    inv = SimulatedInventory([A100, MIG_A100, A100], state_file=state)
    gpu0, slice0, gpu2 = (
        "GPU-5e000000-0000-0000-0000-000000000000",
        "MIG-5e000000-0000-0000-0001-000000000000",
        "GPU-5e000000-0000-0000-0000-000000000002",
    )
    write_state(state, {"0": {"utilization_pct": 87, "memory_used_mib": 1000, "pids": [1234]}})
    write_state(state, {slice0: {"utilization_pct": 12.5, "pids": [9, 8]}})
    usage = inv.usage()
    assert usage[gpu0] == DeviceUsage(gpu0, 87.0, 1000, (1234,))
    assert usage[slice0] == DeviceUsage(slice0, 12.5, 0, (8, 9))

    write_state(state, {gpu2: {"lost": True}})
    assert gpu2 not in [d.uuid for d in inv.devices()] and gpu2 not in inv.usage()
    assert any("simulated GPU 2" in w and "lost" in w for w in warnings(caplog))
    assert inv.describe() == "3 simulated GPUs (1 split into 3 MIG slices; left out: GPU 2)"

    write_state(state, {"1": {"lost": True}})  # the MIG-split GPU: its slices go with it
    assert [d.index for d in inv.devices()] == ["0"]
    assert list(inv.usage()) == [gpu0]

    write_state(state, {"1": None, gpu2: {"lost": None}})
    assert len(inv.devices()) == 5
    assert any("GPU 2 is usable again" in r.getMessage() for r in caplog.records)


def test_simulated_state_file_that_is_not_json_is_ignored_with_a_warning(tmp_path, caplog):
    state = tmp_path / "gpus.json"
    state.write_text("{not json", encoding="utf-8")
    inv = SimulatedInventory([A100], state_file=str(state))
    assert len(inv.devices()) == 1 and len(inv.usage()) == 1
    (warning,) = warnings(caplog)
    assert "state file is ignored" in warning


def test_write_state_merges_atomically(tmp_path):
    path = str(tmp_path / "gpus.json")
    write_state(path, {"0": {"utilization_pct": 50, "pids": [1]}})
    merged = write_state(path, {"0": {"lost": True}, "GPU-x": {"memory_used_mib": 7}})
    assert merged == {
        "0": {"utilization_pct": 50, "pids": [1], "lost": True},
        "GPU-x": {"memory_used_mib": 7},
    }
    assert json.loads(Path(path).read_text()) == merged
    assert write_state(path, {"0": {"pids": None}, "GPU-x": None}) == {
        "0": {"utilization_pct": 50, "lost": True}
    }
    assert os.listdir(tmp_path) == ["gpus.json"]  # no temporary file left behind


# ---- the factory --------------------------------------------------------------------------------


@no_driver
def test_auto_is_none_without_a_driver_and_says_why(caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    inv = make_inventory("auto", [], None, logging.getLogger(LOG))
    assert isinstance(inv, NoneInventory) and inv.kind == "none"
    assert inv.devices() == [] and inv.usage() == {}
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOG]
    assert line.startswith("GPU inventory: none (auto: NVML is not usable")
    assert "NVML Shared Library Not Found" in line or "Driver Not Loaded" in line


@no_driver
def test_nvml_kind_without_a_driver_is_an_error():
    with pytest.raises(InventoryError) as e:
        make_inventory("nvml", [], None, None)
    assert "nvidia-smi should work first" in str(e.value)


def test_auto_picks_nvml_when_it_initialises(caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    inv = make_inventory("auto", [], None, logging.getLogger(LOG), nvml=mig_machine())
    assert isinstance(inv, NvmlInventory)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "GPU inventory: nvml (auto: NVML initialised): 2 GPUs via NVML, driver 550.54.15 "
        "(1 split into 3 MIG slices)."
    )


def test_factory_kinds(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    inv = make_inventory("simulated", [A100, MIG_A100], str(tmp_path / "s.json"), None)
    assert isinstance(inv, SimulatedInventory) and len(inv.devices()) == 4
    assert "simulated, as configured: 2 simulated GPUs" in caplog.records[-1].getMessage()
    assert isinstance(make_inventory("none", [], None, None), NoneInventory)
    assert isinstance(make_inventory("NVML", [], None, None, nvml=FakeNvml([gpu(0)])), Inventory)
    with pytest.raises(InventoryError, match="simulated_gpus is empty"):
        make_inventory("simulated", [], None, None)
    with pytest.raises(InventoryError, match="Unknown GPU inventory 'cuda'"):
        make_inventory("cuda", [], None, None)
    with pytest.raises(InventoryError, match="Driver Not Loaded"):
        make_inventory(
            "nvml", [], None, None, nvml=FakeNvml(init_error=fake.NVML_ERROR_DRIVER_NOT_LOADED)
        )
    caplog.clear()
    make_inventory("none", [A100], None, None)
    assert "simulated_gpus is set but ignored" in warnings(caplog)[0]


def test_importing_the_package_does_not_import_pynvml():
    code = "import sys, ds01spawner.gpus; print('pynvml' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# ---- the probe ----------------------------------------------------------------------------------


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps([A100, MIG_A100, {**A100, "mig_enabled": True}]), "utf-8")
    return path


def test_probe_shows_a_simulated_inventory(spec_file, tmp_path, capsys):
    state = str(tmp_path / "state.json")
    write_state(state, {"0": {"utilization_pct": 87, "memory_used_mib": 1000, "pids": [4321]}})
    assert probe_main(["--simulated", str(spec_file), "--state", state]) == 0
    out, err = capsys.readouterr()
    assert "GPU-5e000000-0000-0000-0000-000000000000" in out
    assert re.search(
        r"1:0\s+MIG-5e000000-0000-0000-0001-000000000000\s+mig\s+3g\.20gb\s+0\.429", out
    )
    assert re.search(r"87%\s+1000 MiB\s+4321", out)
    assert "3 simulated GPUs (1 split into 3 MIG slices; left out: GPU 2)" in out
    assert "MIG mode enabled but no MIG instances" in err


def test_probe_json_with_a_simulated_inventory(spec_file, capsys):
    assert probe_main(["--simulated", str(spec_file), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inventory"] == "simulated"
    assert [r["index"] for r in result["devices"]] == ["0", "1:0", "1:1", "1:2"]
    assert result["devices"][1]["profile"] == "3g.20gb" and result["devices"][1]["share"] == 0.4286


def test_probe_with_a_bad_simulated_file_says_so_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "X"}]', "utf-8")
    assert probe_main(["--simulated", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "memory_mib" in err


def test_probe_shows_what_nvml_reports(capsys):
    nvml = mig_machine()
    nvml.gpus.append(gpu(2, lost=True))
    assert probe_main([], nvml=nvml) == 0
    out, err = capsys.readouterr()
    assert "driver 550.54.15, NVML 12.550.54.15" in out
    assert "GPU 1: NVIDIA A100-SXM4-40GB  GPU-00000001" in out and "MIG current on" in out
    assert "GPU 2: error: GPU is lost" in out
    assert "compute slices of the GPU: 7" in out
    assert re.search(r"MIG device 1:0: NVIDIA A100-SXM4-40GB MIG 3g\.20gb .* g=3 c=3", out)
    assert re.search(r"1:5\s+MIG-\S+\s+mig\s+1g\.5gb\+me\s+0\.143", out)
    assert "3 GPUs via NVML, driver 550.54.15 (1 split into 3 MIG slices; left out: GPU 2)" in out
    assert "GPU 2 is left out" in err and "Traceback" not in out + err
    assert nvml.initialised == 0  # shut down


def test_probe_json_with_nvml(capsys):
    assert probe_main(["--json"], nvml=mig_machine(return_bytes=True)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nvml"]["driver_version"] == "550.54.15"
    mig0 = result["nvml"]["gpus"][1]["mig_devices"][0]
    assert mig0["attributes"]["gpuInstanceSliceCount"] == 3 and mig0["index"] == "1:0"
    assert [r["index"] for r in result["devices"]] == ["0", "1:0", "1:2", "1:5"]


def test_probe_without_a_driver_prints_one_line(capsys):
    nvml = FakeNvml(init_error=fake.NVML_ERROR_DRIVER_NOT_LOADED)
    assert probe_main([], nvml=nvml) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == (
        "ds01 GPU probe: no usable NVIDIA driver: NVML could not load the NVIDIA driver "
        "(Driver Not Loaded): is the nvidia kernel module loaded? nvidia-smi should work first."
    )


@no_driver
def test_probe_command_on_this_host(spec_file):
    run = [sys.executable, "-m", "ds01spawner.gpus"]
    bare = subprocess.run(run, cwd=REPO, capture_output=True, text=True)
    assert bare.returncode == 1 and bare.stdout == ""
    assert len(bare.stderr.strip().splitlines()) == 1 and "Traceback" not in bare.stderr
    assert bare.stderr.startswith("ds01 GPU probe: no usable NVIDIA driver: NVML could not")
    sim = subprocess.run(run + ["--simulated", str(spec_file)], cwd=REPO, capture_output=True)
    assert sim.returncode == 0 and b"3 simulated GPUs" in sim.stdout
