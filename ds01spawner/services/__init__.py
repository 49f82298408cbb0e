"""DS01's HTTP services and what they share with the hub: ``limits_service`` (the
``ds01-limits`` service: limits, queue, usage page) with ``session_api``, ``projects_api`` and
``images_api``; ``session`` (the session panel's data, pure); ``signals`` (how a service ends);
``settings`` (the one hand-off of the spawner's settings to the services).

May import: ``limits``, ``projects``, ``gpus``, ``images``, ``engine`` (``ServiceEngine``), the
shared leaves. Never the spawner side (``spawner``, ``web``, ``culler.registration``) nor
``jupyterhub.orm`` or ``dockerspawner`` (tests/unit/test_layout.py).
"""
