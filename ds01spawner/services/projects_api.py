"""``project init`` and ``project list`` as JSON: handlers of the ds01-limits service.

    GET  /services/ds01-limits/api/projects                  the caller's projects
    POST /services/ds01-limits/api/projects  {"name": "thesis", "template": "python-ml"}

A project is created exactly as a first launch creates it (same name rules, same confinement,
owned by the user, the same templates), without starting a server. The spawner's settings come
from ``configure_services`` (``DS01_SPAWNER_SETTINGS``), so the service and the spawner agree.
"""

from __future__ import annotations

import asyncio
import json
import os

from tornado import web

from ..identity import IdentityError, resolve_identity
from ..projects.catalog import BUILTIN_TEMPLATES, apply_template, list_projects
from ..projects.names import project_name_problem
from ..projects.workspace import WorkspaceError, prepare_workspace

SETTINGS_ENV = "DS01_SPAWNER_SETTINGS"
#: DS01Spawner settings the service needs, with the spawner's defaults
SETTING_DEFAULTS = {
    "workspace_root": "/srv/ds01/workspaces/{username}",
    "user_uid": 1000,
    "user_gid": 100,
    "use_system_accounts": True,
    "workspace_mode": 0o750,
    "image": "ds01/base:latest",
    "project_templates": {},
}


def spawner_settings(environ: dict | None = None) -> dict:
    """The spawner settings passed by configure_services, over the spawner's defaults."""
    raw = (environ if environ is not None else os.environ).get(SETTINGS_ENV, "")
    settings = dict(SETTING_DEFAULTS)
    if raw:
        settings.update({k: v for k, v in json.loads(raw).items() if k in SETTING_DEFAULTS})
    return settings


def create_project(settings: dict, username: str, name: str, template: str) -> dict:
    """Create a project folder from a template, as the first launch would. Raises
    web.HTTPError (400 bad name or template, 409 exists, 403 no identity, 500 filesystem)."""
    problem = project_name_problem(name)
    if problem:
        raise web.HTTPError(400, problem)
    templates = settings["project_templates"] or BUILTIN_TEMPLATES
    if template not in templates:
        raise web.HTTPError(
            400, f"Unknown project template; choose one of: {', '.join(sorted(templates))}."
        )
    try:
        ident = resolve_identity(
            username, settings["user_uid"], settings["user_gid"], settings["use_system_accounts"]
        )
        ws = prepare_workspace(
            settings["workspace_root"],
            username,
            name,
            ident.uid,
            ident.gid,
            settings["workspace_mode"],
        )
    except IdentityError as e:
        raise web.HTTPError(403, str(e)) from e
    except WorkspaceError as e:
        raise web.HTTPError(400, str(e)) from e
    if not ws.created:
        raise web.HTTPError(409, f"You already have a project named '{name}'.")
    try:
        written = apply_template(
            ws.project_dir,
            templates[template],
            ident.uid,
            ident.gid,
            {"project": name, "base_image": settings["image"]},
            settings["workspace_mode"],
        )
    except WorkspaceError as e:
        raise web.HTTPError(500, f"{e} The folder was created.") from e
    return {"name": name, "template": template, "created": written}


class ProjectsAPI(web.RequestHandler):
    """Mixed into the service's authenticated handler (see limits_service.make_app)."""

    def initialize(self, settings: dict, **kw) -> None:
        super().initialize(**kw)
        self.spawner_settings = settings

    @web.authenticated
    async def get(self) -> None:
        caller = self.current_user["name"]
        try:
            projects = await asyncio.to_thread(
                list_projects, self.spawner_settings["workspace_root"], caller
            )
        except WorkspaceError as e:
            raise web.HTTPError(400, str(e)) from e
        body = {
            "projects": [{"name": p.name, "has_dockerfile": p.has_dockerfile} for p in projects],
            "templates": sorted(self.spawner_settings["project_templates"] or BUILTIN_TEMPLATES),
        }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    @web.authenticated
    async def post(self) -> None:
        if not self.request.headers.get("Authorization"):
            # a browser's cookie alone could be sent by another site's form: tokens only
            raise web.HTTPError(403, "Create projects with a hub API token (ds01 project init).")
        caller = self.current_user["name"]
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise web.HTTPError(400, 'The body must be JSON such as {"name": "thesis"}.') from e
        if not isinstance(body, dict) or set(body) - {"name", "template"}:
            raise web.HTTPError(400, "The body may have only 'name' and 'template'.")
        name, template = body.get("name", ""), body.get("template", "empty")
        if not isinstance(name, str) or not isinstance(template, str):
            raise web.HTTPError(400, "'name' and 'template' must be text.")
        made = await asyncio.to_thread(
            create_project, self.spawner_settings, caller, name, template
        )
        self.set_status(201)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(made))
