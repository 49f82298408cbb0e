"""The spawn form: what it offers (pure), how form fields become ``user_options``, and the one
validation both the form and the REST API go through.

Nothing here does I/O: the spawner gathers the facts (projects, devices, containers, limits)
and passes them in, so every rule is tested as plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..gpus.allocator import MAX_GPUS_PER_REQUEST
from ..gpus.model import Device
from ..projects.names import project_name_problem

#: every key ``user_options`` may have; anything else is refused
OPTION_KEYS = ("project", "template", "gpus", "gpu_type", "image")
#: the form's value for "create a new project"
NEW_PROJECT = "+new"
#: ``image`` value for "the hub's standard image, not the project's Dockerfile": always
#: allowed, so a project whose Dockerfile does not build can still be opened to fix it
STANDARD_IMAGE = "standard"
_MAX_TEXT = 200


class OptionsError(ValueError):
    """Options no launch may have; str() is the sentence shown to the user (HTTP 400).

    Messages never repeat what was sent: it may be hostile markup.
    """


@dataclass(frozen=True)
class LaunchOptions:
    """Validated ``user_options``."""

    project: str
    template: str | None = None  # a new project's template
    image: str | None = None  # an offered image; None: the project's Dockerfile or the default
    gpu_options: dict = field(default_factory=dict)  # "gpus"/"gpu_type", for the GPU broker


def _text(value: object, key: str) -> str:
    """A text option as sent (never trimmed: " x" is not the name "x")."""
    if not isinstance(value, str):
        raise OptionsError(f"'{key}' must be text.")
    if len(value) > _MAX_TEXT or any(ord(ch) < 32 for ch in value):
        raise OptionsError(f"'{key}' is too long or has control characters.")
    return value


def validate_user_options(
    raw: object,
    *,
    server_name: str,
    default_project: str,
    templates: Iterable[str],
    offered_images: Iterable[str],
) -> LaunchOptions:
    """Check ``user_options`` (from the form or the REST API); OptionsError when invalid.

    - only the keys of OPTION_KEYS;
    - a named server's project is its name (``project``, if given, must be the same);
    - ``template`` names one of ``templates``; ``image`` one of ``offered_images``;
    - ``gpus``/``gpu_type`` are type-checked here and checked against the devices by the GPU
      broker.
    Whether the project exists (a template needs a new one) is checked by the caller, which
    knows the filesystem.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise OptionsError('Server options must be a JSON object such as {"gpus": 1}.')
    unknown = [k for k in raw if k not in OPTION_KEYS]
    if unknown:
        raise OptionsError(
            f"Unknown server option{'s' if len(unknown) > 1 else ''}. "
            f"The options are: {', '.join(OPTION_KEYS)}."
        )
    if "project" in raw:
        project = raw["project"]  # project_name_problem below says what a valid name is
        if server_name and project != server_name:
            raise OptionsError(
                f"This server is for project '{server_name}'; leave 'project' out or give the "
                f"same name. To launch another project, start the server of that name."
            )
    else:
        project = server_name or default_project
    problem = project_name_problem(project)
    if problem:
        raise OptionsError(problem)

    template = None
    if raw.get("template") not in (None, ""):
        template = _text(raw["template"], "template")
        names = sorted(templates)
        if template not in names:
            raise OptionsError(f"Unknown project template; choose one of: {', '.join(names)}.")

    image = None
    if raw.get("image") not in (None, ""):
        image = _text(raw["image"], "image")
        offered = list(offered_images)
        if image not in offered and image != STANDARD_IMAGE:
            raise OptionsError(
                "That image is not offered on this server; choose one of: "
                f"{', '.join([*offered, STANDARD_IMAGE])} ('{STANDARD_IMAGE}': the server's "
                "standard image, without your project's Dockerfile)."
            )

    gpu_options = {}
    if "gpus" in raw:
        gpus = raw["gpus"]
        if isinstance(gpus, str):
            gpus = _text(gpus, "gpus")
        elif isinstance(gpus, bool) or not isinstance(gpus, int):
            raise OptionsError("'gpus' must be a whole number such as 0, 1 or 2.")
        if isinstance(gpus, int) and not 0 <= gpus <= MAX_GPUS_PER_REQUEST:
            raise OptionsError(f"'gpus' must be between 0 and {MAX_GPUS_PER_REQUEST}.")
        gpu_options["gpus"] = gpus
    if "gpu_type" in raw:
        gpu_options["gpu_type"] = _text(raw["gpu_type"], "gpu_type")
    return LaunchOptions(project, template, image, gpu_options)


# ---- form fields -> user_options ------------------------------------------------------------


def options_from_form(formdata: Mapping[str, list[str]]) -> dict:
    """The form's fields (lists of strings) as ``user_options``.

    ``project`` is an existing project's name, or NEW_PROJECT with ``new_project`` and
    ``template``; ``gpu`` is a choice value of ``gpu_choices``; ``image`` an offered image or
    empty. The result is validated like a REST request (validate_user_options).
    """

    def one(key: str) -> str:
        values = formdata.get(key) or [""]
        return values[0] if isinstance(values, (list, tuple)) else str(values)

    options: dict = {}
    project = one("project").strip()
    if project == NEW_PROJECT:
        options["project"] = one("new_project").strip()
        options["template"] = one("template").strip() or "empty"
    elif project:
        options["project"] = project
    gpu = one("gpu").strip()
    if gpu:
        options.update(parse_gpu_choice(gpu))
    if one("image").strip():
        options["image"] = one("image").strip()
    return options


def parse_gpu_choice(value: str) -> dict:
    """``"0"`` -> no GPU; ``"any:2"``/``"full:2"`` -> 2 devices of that type;
    ``"mig:3g.20gb"`` -> one MIG slice of that profile."""
    if value in ("0", "none"):
        return {"gpus": 0}
    kind, _, arg = value.partition(":")
    if kind in ("any", "full") and arg.isdigit():
        return {"gpus": int(arg), "gpu_type": kind}
    if kind == "mig" and arg:
        return {"gpus": 1, "gpu_type": arg}
    raise OptionsError("Choose a GPU option from the list.")


# ---- what the form offers -------------------------------------------------------------------


@dataclass(frozen=True)
class GpuChoice:
    value: str  # the form value (parse_gpu_choice)
    label: str
    disabled: bool = False
    note: str = ""  # why disabled, or how many are free


@dataclass(frozen=True)
class GpuOffer:
    choices: list[GpuChoice]
    summary: str  # "2 of 4 GPUs free · 3 of 3 MIG slices free"
    default: str  # the value selected when the form opens
    notice: str = ""  # shown under the choice: why "No GPU" is preselected, when it is


def human(x: float) -> str:
    """A GPU amount for people: at most 2 decimals, no trailing zeros (0.2143 -> "0.21",
    0.5 -> "0.5", 2.0 -> "2")."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def gpu_offer(
    devices: list[Device],
    taken: set[str],
    limits,
    used_equivalents: float,
    default_gpus: int,
) -> GpuOffer:
    """The GPU choices of the form: what the server has, what is free now, what the user's
    limits allow. Choices over a limit are left out (per server, whole GPUs not allowed) or
    disabled with the reason (over the user's total, none free now)."""
    full = [d for d in devices if d.kind == "gpu"]
    free_full = [d for d in full if d.uuid not in taken]
    profiles: dict[str, list[Device]] = {}
    for d in devices:
        if d.kind == "mig" and d.mig_profile:
            profiles.setdefault(d.mig_profile, []).append(d)
    free_mig = [d for ds in profiles.values() for d in ds if d.uuid not in taken]
    slices = sum(len(ds) for ds in profiles.values())
    parts = []
    if full:
        parts.append(f"{len(free_full)} of {_plural(len(full), 'GPU')} free")
    if slices:
        parts.append(f"{len(free_mig)} of {_plural(slices, 'MIG slice')} free")
    summary = " · ".join(parts) or "This server has no GPUs"

    per_server = limits.max_gpus_per_server
    total = limits.max_gpu_equivalents
    left = None if total is None else max(0.0, total - used_equivalents)

    def over_total(eq: float) -> str:
        if left is not None and eq > left + 1e-9:
            return f"over your limit: {human(left)} of {human(total)} GPUs left"
        return ""

    choices = [GpuChoice("0", "No GPU")]
    if devices and (per_server is None or per_server >= 1):
        free_any = len(free_full) + len(free_mig) if limits.allow_full_gpu else len(free_mig)
        smallest = min((d.share for d in devices), default=1.0)
        reason = over_total(smallest) or ("none free right now" if not free_any else "")
        what = "any free GPU or MIG slice" if limits.allow_full_gpu else "any free MIG slice"
        choices.append(GpuChoice("any:1", f"1 device: {what}", bool(reason), reason))
    if full and limits.allow_full_gpu:
        most = len(full) if per_server is None else min(len(full), per_server)
        for n in range(1, most + 1):
            reason = over_total(float(n)) or (
                f"only {len(free_full)} free right now" if len(free_full) < n else ""
            )
            label = f"{_plural(n, 'whole GPU')} ({full[0].name})"
            choices.append(GpuChoice(f"full:{n}", label, bool(reason), reason))
    if per_server is None or per_server >= 1:
        for profile, ds in sorted(profiles.items()):
            free = sum(1 for d in ds if d.uuid not in taken)
            reason = over_total(ds[0].share) or ("none free right now" if not free else "")
            label = f"MIG slice {profile} ({ds[0].share:.2g} of a GPU)"
            note = reason or f"{free} of {len(ds)} free"
            choices.append(GpuChoice(f"mig:{profile}", label, bool(reason), note))

    enabled = [c.value for c in choices if not c.disabled]
    default, notice = "0", ""
    if default_gpus > 0:
        wanted = [c for c in choices if c.value in (f"any:{default_gpus}", f"full:{default_gpus}")]
        for c in wanted:
            if c.value in enabled:
                default = c.value
                break
        else:
            why = wanted[0].note if wanted else "this server offers you no GPU"
            notice = f"No GPU is selected: {why}."
    elif len(enabled) == 1 and len(choices) > 1:
        notice = f"Only 'No GPU' can be chosen now: {choices[1].note}."
    return GpuOffer(choices, summary, default, notice)


def limits_lines(limits, servers_running: int) -> list[str]:
    """The user's limits in words, for the form's "your limits" box."""

    def show(value, unit: str = "") -> str:
        return "unlimited" if value is None else f"{value:g}{unit}"

    lines = [
        f"Servers at once: {servers_running} running of {show(limits.max_servers)}",
        f"GPUs in all: {show(limits.max_gpu_equivalents)}; per server: "
        f"{show(limits.max_gpus_per_server)}"
        + ("" if limits.allow_full_gpu else " (MIG slices only)"),
    ]
    if limits.max_runtime is not None:
        lines.append(f"Runtime per server: {limits.max_runtime:g} h")
    if limits.idle_timeout is not None:
        lines.append(f"Retired after idle: {limits.idle_timeout:g} h")
    return lines
