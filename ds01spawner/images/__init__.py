"""Project images: a project's ``Dockerfile`` becomes the image its server runs.

One module per concern:

- ``dockerfile``: parse ``FROM`` lines (and ``ARG`` before them), check them against the allowed
  base images (pure);
- ``context``: the build context as Docker would send it (default excludes, size limit), a
  snapshot of what is sent; never follows a link; ``dockerignore``: the ``.dockerignore``
  rules (pure); ``tarball``: the context's content hash and its tar stream;
- ``tags``: valid, collision-free Docker repository names for a user's project;
- ``builder``: builds off the event loop in a bounded pool, one build per content hash however
  many launches wait for it, output streamed back line by line, a timeout that stops the build;
- ``compat``: can the image run ``jupyterhub-singleuser`` of the hub's major version (cached);
- ``housekeeping``: list, delete and prune a user's project images, never one a container uses.

``ds01spawner.spawner.image_steps.ImageSteps`` ties them into a spawn.
"""
