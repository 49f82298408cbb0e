"""The user's limits: ``model`` (the limits file: parse, resolve with ``explain``,
``LimitsStore`` with hot reload), ``store`` (one store per file and process, a user's Unix
groups), ``usage`` (what a user uses, from the servers' labels, and a request shaped by the
limits).

May import: ``gpus`` (the request model), the shared leaves. Never the spawner side: the
spawner and every service import this package.
"""
