"""The ``ds01`` commands. ``ds01 --help`` lists them; docs/cli.md explains each.

Exit status: 0 done, 1 refused or failed (the hub's message is printed), 2 wrong usage,
124 timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import threading
import time
import webbrowser

from ..projects.names import project_name_problem
from . import config
from .client import HubClient, HubError
from .output import Out, gpus

ALIASES = {
    "project": "ds01 project",
    "container": "ds01 container",
    "container-list": "ds01 container list",
    "container-deploy": "ds01 container deploy",
    "container-attach": "ds01 container attach",
    "container-retire": "ds01 container retire",
    "check": "ds01 check",
    "image-list": "ds01 image list",
    "image-delete": "ds01 image delete",
}


class Failed(Exception):
    """A command that cannot go on; str() is printed after 'ds01: '."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# ---- commands ---------------------------------------------------------------------------------


def cmd_login(args, out: Out) -> int:
    url = args.url or os.environ.get("DS01_HUB_URL") or ""
    if not url:
        url = input("Hub URL (e.g. https://ds01.example.org): ").strip()
    url = config.normalise_url(url)
    if sys.stdin.isatty():
        print(f"Create a token at {url}/hub/token, then paste it here.", file=sys.stderr)
        token = getpass.getpass("Token: ").strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        raise Failed("No token given.")
    client = HubClient(url, token, args.timeout, insecure=args.insecure)
    _warn_insecure(client)
    me = client.me()
    path = config.save(url, token)
    out.line(f"Logged in to {url} as {me['name']} (token saved in {path}, readable by you only).")
    return 0


def _warn_insecure(client: HubClient) -> None:
    if client.insecure_warning:
        err = Out(stream=sys.stderr)
        err.line(err.paint(f"ds01: WARNING (--insecure): {client.insecure_warning}", "red"))


def cmd_logout(args, out: Out) -> int:
    path = config.config_path()
    if path.exists():
        path.unlink()
        out.line(f"Removed {path}.")
    return 0


def gpu_options(args) -> dict:
    if getattr(args, "no_gpu", False):
        return {"gpus": 0}
    if getattr(args, "mig", None):
        return {"gpus": 1, "gpu_type": args.mig}
    if getattr(args, "gpus", None) is not None:
        return {"gpus": args.gpus, "gpu_type": "full" if args.full else "any"}
    return {}


def cmd_project_init(args, client: HubClient, out: Out) -> int:
    made = client.service("POST", "projects", json={"name": args.name, "template": args.template})
    if out.as_json:
        out.json(made)
    else:
        files = ", ".join(made["created"]) or "nothing"
        out.line(f"Created project {made['name']} from template {made['template']}: {files}.")
        out.line(f"Launch it with: ds01 project launch {made['name']}")
    return 0


def cmd_project_list(args, client: HubClient, out: Out) -> int:
    projects = client.service("GET", "projects")["projects"]
    running = {name: s for name, s in client.servers().items()}
    if out.as_json:
        out.json(projects)
        return 0
    rows = [
        (
            p["name"],
            "Dockerfile" if p["has_dockerfile"] else "base image",
            _state(running.get(p["name"])),
        )
        for p in projects
    ]
    out.table(("PROJECT", "ENVIRONMENT", "SERVER"), rows)
    return 0


def cmd_launch(args, client: HubClient, out: Out) -> int:
    options = gpu_options(args)
    if args.image:
        options["image"] = args.image
    if getattr(args, "standard_image", False):
        options["image"] = "standard"  # form.STANDARD_IMAGE: the project's Dockerfile is ignored
    if args.template:
        options["template"] = args.template
    if args.background:
        status = client.start(args.name, options)
        state = "ready" if status == 201 else "starting"
        out.line(f"{args.name}: {state} in the background. See: ds01 container list")
        return 0
    url = None
    for event in _launch_and_follow(client, args.name, options, args.timeout):
        if event.get("failed"):
            out.line()
            raise Failed(event.get("message", "The launch failed."))
        out.progress(int(event.get("progress", 0)), event.get("message", ""))
        if event.get("ready"):
            url = event.get("url")
    if not url:
        raise Failed(f"{args.name} did not become ready.")
    full = client.absolute(url)
    out.line(out.paint(f"{args.name} is ready: {full}", "green"))
    if args.open:
        opened = bool(os.environ.get("DISPLAY") or sys.platform == "darwin") and webbrowser.open(
            full
        )
        if not opened:
            out.line("Open that address in your browser (no browser here).")
    return 0


def _launch_and_follow(client: HubClient, name: str, options: dict, timeout: float):
    """Send the launch and follow its progress from the start.

    The hub answers a launch only when it is ready or after 10 s, so the POST runs in a
    thread while the progress stream is read; a refusal from the POST ends it with the hub's
    message.
    """
    posted: dict = {}

    def post() -> None:
        try:
            posted["status"] = client.start(name, options)
        except HubError as e:
            posted["error"] = e

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        server = client.servers().get(name) or {}
        if server.get("pending") == "spawn" or server.get("ready"):
            break
        thread.join(0.1)
    if "error" in posted:
        raise posted["error"]
    try:
        yield from client.progress(name, timeout)
    except HubError:
        thread.join(timeout=30)  # a launch refused at once: its own message says why
        raise posted.get("error") or sys.exc_info()[1] from None
    thread.join(timeout=30)
    if "error" in posted:
        raise posted["error"]


def cmd_retire(args, client: HubClient, out: Out) -> int:
    if args.name not in client.servers():
        raise Failed(f"You have no server '{args.name}'. See: ds01 container list")
    client.stop(args.name, wait=args.timeout)
    out.line(f"Retired {args.name}: its container is gone, your files in /workspace stay.")
    return 0


def cmd_container_list(args, client: HubClient, out: Out) -> int:
    servers = client.servers()
    gpus: dict[str, list[str]] = {}
    try:
        usage = client.service("GET", "limits")["usage"]
        gpus = {p["server"]: p["gpus"] for p in usage["projects"]}
    except HubError:
        pass  # the list still shows without the GPU column's values
    items = [
        {
            "project": name or "(default)",
            "state": _state(s),
            "gpus": gpus.get(name, []),
            "started": s.get("started") or "",
            "last_activity": s.get("last_activity") or "",
            "url": client.absolute(s["url"]) if s.get("url") else "",
        }
        for name, s in sorted(servers.items())
    ]
    if out.as_json:
        out.json(items)
        return 0
    if not items:
        out.line("No servers. Launch one with: ds01 project launch NAME")
        return 0
    rows = [
        (i["project"], i["state"], ",".join(i["gpus"]) or "-", i["started"][:16], i["url"])
        for i in items
    ]
    out.table(("PROJECT", "STATE", "GPUS", "STARTED", "URL"), rows, cut=False)
    return 0


def cmd_attach(args, client: HubClient, out: Out) -> int:
    from .attach import attach

    server = client.servers().get(args.name)
    if not server or not server.get("ready"):
        raise Failed(
            f"'{args.name}' is not running. Launch it with: ds01 project launch {args.name}"
        )
    commands = args.command
    if commands is None and not sys.stdin.isatty():
        commands = sys.stdin.read()
    return asyncio.run(attach(client, args.name, commands, args.timeout))


def cmd_check_limits(args, client: HubClient, out: Out) -> int:
    body = client.service("GET", "limits")
    queue = client.service("GET", "queue")
    if out.as_json:
        out.json({**body, "queue": queue})
        return 0
    out.line(f"Limits of {body['user']} (groups: {', '.join(body['groups']) or 'none'})")
    if body.get("limits") is None:
        out.line("No limits file on this server: nothing is limited.")
    else:
        rows = [(k, v, body["sources"].get(k, "")) for k, v in body["shown"].items()]
        out.table(("LIMIT", "VALUE", "FROM"), rows)
    usage = body["usage"]
    projects = ", ".join(p["project"] for p in usage["projects"]) or "none"
    out.line(
        f"Using now: {usage['servers']} server(s), {gpus(usage['gpu_equivalents'])} GPUs "
        f"(projects: {projects})"
    )
    for w in queue.get("waiting", []):
        out.line(f"Waiting for a GPU: {w['project']}, position {w['position']}")
    return 0


def cmd_image_list(args, client: HubClient, out: Out) -> int:
    images = client.service("GET", "images")["images"]
    if out.as_json:
        out.json(images)
        return 0
    if not images:
        out.line("No project images. A project with a Dockerfile gets one at its first launch.")
        return 0
    rows = [
        (
            i["project"],
            i["tag"],
            f"{i['size'] / 1e6:.0f} MB",
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(i["created"])),
            "in use" if i["in_use"] else "",
        )
        for i in images
    ]
    out.table(("PROJECT", "TAG", "SIZE", "BUILT (UTC)", ""), rows)
    return 0


def cmd_image_delete(args, client: HubClient, out: Out) -> int:
    done = client.service("DELETE", f"images?project={args.name}")
    if out.as_json:
        out.json(done)
        return 0
    if not done["deleted"] and not done["kept"]:
        raise Failed(f"You have no images of project '{args.name}'. See: ds01 image list")
    for ref in done["deleted"]:
        out.line(f"Deleted {ref}")
    for ref in done["kept"]:
        out.line(f"Kept {ref}: a server uses it (retire it first)")
    return 0 if not done["kept"] else 1


def cmd_aliases(args, out: Out) -> int:
    for name, target in ALIASES.items():
        out.line(f"alias {name}='{target}'")
    return 0


def _state(server: dict | None) -> str:
    if not server:
        return "not running"
    if server.get("ready"):
        return "running"
    return {"spawn": "starting", "stop": "stopping"}.get(server.get("pending") or "", "not running")


# ---- the parser -------------------------------------------------------------------------------


def _gpu_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpus", type=int, metavar="N", help="N GPUs (any free device unless --full)")
    g.add_argument("--mig", metavar="PROFILE", help="one MIG slice of this profile, e.g. 3g.20gb")
    g.add_argument("--no-gpu", action="store_true", help="no GPU")
    p.add_argument("--full", action="store_true", help="whole GPUs only (with --gpus)")
    im = p.add_mutually_exclusive_group()
    im.add_argument("--image", help="an image the admins offer, instead of the project Dockerfile")
    im.add_argument(
        "--standard-image",
        action="store_true",
        help="the server's standard image, ignoring the project's Dockerfile (to fix one that "
        "does not build)",
    )
    p.add_argument("--template", help="create the project from this template on first launch")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ds01", description="DS01 from a terminal: launch, list, attach to and retire servers."
    )
    top.add_argument("--json", action="store_true", help="machine-readable output")
    top.add_argument("--timeout", type=float, default=600, help="seconds to wait (600)")
    top.add_argument(
        "--insecure",
        action="store_true",
        help="send the token over plain http:// to another machine anyway (refused otherwise)",
    )
    sub = top.add_subparsers(dest="group", required=True)

    login = sub.add_parser("login", help="save the hub URL and an API token")
    login.add_argument("--url", help="the hub's address, e.g. https://ds01.example.org")
    login.set_defaults(func=cmd_login, needs_hub=False)
    logout = sub.add_parser("logout", help="forget the saved token")
    logout.set_defaults(func=cmd_logout, needs_hub=False)

    project = sub.add_parser("project", help="projects: init, list, launch").add_subparsers(
        dest="action", required=True
    )
    p = project.add_parser("init", help="create a project folder from a template")
    p.add_argument("name")
    p.add_argument("--template", default="empty", help="empty (default), python-ml, ...")
    p.set_defaults(func=cmd_project_init)
    p = project.add_parser("list", help="your projects")
    p.set_defaults(func=cmd_project_list)
    p = project.add_parser("launch", help="start a project's server and follow its progress")
    p.add_argument("name")
    p.add_argument("--open", action="store_true", help="open JupyterLab when it is ready")
    p.add_argument("--background", action="store_true", help="do not wait for it")
    _gpu_args(p)
    p.set_defaults(func=cmd_launch)

    container = sub.add_parser("container", help="servers: list, deploy, attach, retire")
    csub = container.add_subparsers(dest="action", required=True)
    p = csub.add_parser("list", help="your servers with their GPUs")
    p.set_defaults(func=cmd_container_list)
    p = csub.add_parser("deploy", help="launch a project in the background")
    p.add_argument("name")
    p.add_argument("--background", action="store_true", default=True, help="(the default)")
    _gpu_args(p)
    p.set_defaults(func=cmd_launch, open=False)
    p = csub.add_parser("attach", help="a terminal in a running server")
    p.add_argument("name")
    p.add_argument("--command", "-c", help="run these shell commands, print the output, leave")
    p.set_defaults(func=cmd_attach)
    p = csub.add_parser("retire", help="stop a server and remove its container (files stay)")
    p.add_argument("name")
    p.set_defaults(func=cmd_retire)

    check = sub.add_parser("check", help="check limits").add_subparsers(
        dest="action", required=True
    )
    p = check.add_parser("limits", help="your limits, where they come from, what you use")
    p.set_defaults(func=cmd_check_limits)

    image = sub.add_parser("image", help="your project images: list, delete").add_subparsers(
        dest="action", required=True
    )
    p = image.add_parser("list", help="your project images, newest first")
    p.set_defaults(func=cmd_image_list)
    p = image.add_parser("delete", help="delete a project's images (not those in use)")
    p.add_argument("name", help="the project")
    p.set_defaults(func=cmd_image_delete)

    p = sub.add_parser("aliases", help="shell aliases for the spellings of the DS01 docs")
    p.set_defaults(func=cmd_aliases, needs_hub=False)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv  # accepted anywhere: ds01 container list --json
    args = parser().parse_args([a for a in argv if a != "--json"])
    args.json = args.json or as_json
    out = Out(as_json=args.json)
    err = Out(stream=sys.stderr)
    try:
        if getattr(args, "needs_hub", True) is False:
            return args.func(args, out)
        problem = project_name_problem(args.name) if hasattr(args, "name") else None
        if problem:  # said here, before the hub is asked (it would answer 404 or its own words)
            raise Failed(problem)
        settings = config.load()
        client = HubClient(
            settings.url, settings.token, timeout=min(args.timeout, 60), insecure=args.insecure
        )
        _warn_insecure(client)
        return args.func(args, client, out)
    except (config.ConfigError, HubError, Failed) as e:
        err.line(err.paint(f"ds01: {e}", "red"))
        return getattr(e, "status", 1) if isinstance(e, Failed) else 1
    except KeyboardInterrupt:
        err.line("ds01: interrupted")
        return 130
    except TimeoutError:
        err.line("ds01: timed out")
        return 124
