"""``image list`` and ``image delete`` as JSON: handlers of the ds01-limits service.

    GET    /services/ds01-limits/api/images                  the caller's project images
    DELETE /services/ds01-limits/api/images?project=thesis   delete one project's images
    (hub admins may add ?user=NAME)

Images a container uses are never deleted (images/housekeeping.py); deleting removes DS01's tag,
and the image itself when no other project's identical image refers to it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

from tornado import web

from ..errors import DOCKER_ERRORS
from ..images.housekeeping import delete_user_images, list_images
from ..projects.names import project_name_problem


class ImagesAPI(web.RequestHandler):
    """Mixed into the service's authenticated handler (see limits_service.make_app)."""

    async def _whose(self) -> str:
        caller = self.current_user["name"]
        name = self.get_argument("user", caller)
        if name != caller and not await self.caller_is_admin():  # LimitsAPI's
            raise web.HTTPError(403, "Only hub admins may see or delete another user's images.")
        return name

    async def _engine(self, fn, *args):
        try:
            return await asyncio.to_thread(fn, self.engine.api, *args)
        except DOCKER_ERRORS as e:
            raise web.HTTPError(503, "The container engine is not answering; try again.") from e

    @web.authenticated
    async def get(self) -> None:
        user = await self._whose()
        images = await self._engine(list_images, self.prefix, user)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"user": user, "images": [asdict(i) for i in images]}))

    @web.authenticated
    async def delete(self) -> None:
        if not self.request.headers.get("Authorization"):
            raise web.HTTPError(403, "Delete images with a hub API token (ds01 image delete).")
        user = await self._whose()
        project = self.get_argument("project", "")
        problem = project_name_problem(project)
        if problem:
            raise web.HTTPError(400, problem)
        deleted, kept = await self._engine(delete_user_images, self.prefix, user, project)
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps({"user": user, "project": project, "deleted": deleted, "kept": kept})
        )
