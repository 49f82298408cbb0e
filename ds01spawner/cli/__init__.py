"""``ds01``: the reference workflow from a terminal, over the JupyterHub REST API.

Only a hub URL and a hub API token are needed (``ds01 login``); no Docker access. Modules:
``config`` (where the URL and token come from), ``client`` (HTTP calls and their errors),
``output`` (tables, JSON, colour), ``attach`` (a terminal in a running server), ``main`` (the
commands).
"""
