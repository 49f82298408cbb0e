"""The user's limits: ``model`` (the limits file's model and parser), ``resolve`` (``explain``:
a user's limits and where each came from), ``file`` (``LimitsStore``: the file with hot reload),
``store`` (one store per file and process, a user's Unix groups), ``usage`` (what a user uses,
from the servers' labels, and a request shaped by the limits).

May import: ``gpus`` (the request model), the shared leaves. Never the spawner side: the
spawner and every service import this package.
"""
