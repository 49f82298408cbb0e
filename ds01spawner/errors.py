"""What users are told when a launch fails, and the errors that mean "Docker is not there"."""

from __future__ import annotations

import docker
import requests
from tornado import web

DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)

GPU_INVENTORY_DOWN_MESSAGE = (
    "GPUs cannot be assigned on this server right now, so your server could not start. "
    "Your files are safe. Launch without a GPU ('gpus': 0), or tell an admin."
)

NODE_UNAVAILABLE_MESSAGE = (
    "Your server could not be placed on one of the lab's GPU nodes just now, so it did not start. "
    "Your files are safe. Please try again in a few minutes; an admin has been told."
)

ENGINE_DOWN_MESSAGE = (
    "The container engine on this server is not answering, so your server could not start. "
    "Your files are safe. Please try again in a few minutes; if it keeps happening, tell an admin."
)


def user_error(status: int, message: str) -> web.HTTPError:
    """An HTTP error whose message JupyterHub shows to the user as it is."""
    err = web.HTTPError(status, log_message=message.replace("%", "%%"))
    err.jupyterhub_message = message
    return err
