"""Where the CLI finds the hub and the token: the environment, else the file ``ds01 login``
wrote (``$XDG_CONFIG_HOME/ds01/config.json``, readable by its owner only)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

URL_VARS = ("DS01_HUB_URL", "JUPYTERHUB_URL")
TOKEN_VARS = ("DS01_TOKEN",)


class ConfigError(Exception):
    """No hub or no token; str() says how to fix it in one line."""


@dataclass(frozen=True)
class Settings:
    url: str  # e.g. http://127.0.0.1:8000 (no trailing slash, no /hub)
    token: str


def config_path(environ=os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ds01" / "config.json"


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/hub"):
        url = url[: -len("/hub")]
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"The hub URL must start with http:// or https://, not {url!r}.")
    return url


def load(environ=os.environ) -> Settings:
    stored: dict = {}
    path = config_path(environ)
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} cannot be read ({e}); run 'ds01 login' again.") from e
    url = next((environ[v] for v in URL_VARS if environ.get(v)), stored.get("url", ""))
    token = next((environ[v] for v in TOKEN_VARS if environ.get(v)), stored.get("token", ""))
    if not url:
        raise ConfigError("No hub URL: run 'ds01 login' or set DS01_HUB_URL.")
    if not token:
        raise ConfigError("No API token: run 'ds01 login' or set DS01_TOKEN.")
    return Settings(normalise_url(url), token)


def save(url: str, token: str, environ=os.environ) -> Path:
    """Write the URL and token, readable by the owner only (the token is a password)."""
    path = config_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": normalise_url(url), "token": token}, f)
    os.chmod(path, 0o600)
    return path
