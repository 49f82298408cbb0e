"""Image steps of a spawn: a project's ``Dockerfile`` becomes the image its server runs.

A mixin of DS01Spawner (it uses the spawner's ``docker()``, ``client``, ``prefix``, ``image``,
``progress_log`` and ``log``). ``project_image`` is called once the workspace is ready, and
DockerSpawner's ``start`` then runs with the image it chose (``start`` below):

1. no ``Dockerfile`` in the project: the server runs ``image`` as before;
2. read and check the Dockerfile (allowed base images, before anything is built), scan the build
   context (``.dockerignore``, default excludes, size limit) and hash everything the build reads;
3. the image ``<prefix>-<user>/<project>:<hash>`` exists: no build. The same content was built
   for someone else: tag it, no build. Else build it (or join the build of the same content
   that runs), streaming each step and output line to the spawn page, and write the log to
   ``.ds01/build.log`` in the project;
4. check once per image id that it can run ``jupyterhub-singleuser`` of the hub's major version.

See docs/images.md.
"""

from __future__ import annotations

import time

import docker
from docker.utils import kwargs_from_env
from jupyterhub import __version__ as hub_version
from jupyterhub.traitlets import ByteSpecification
from traitlets import Bool, Int, List, Unicode, default

from ..errors import DOCKER_ERRORS, ENGINE_DOWN_MESSAGE, user_error
from ..identity import Identity
from ..images import compat
from ..images.builder import (
    BuildAPIClient,
    ImageBuilder,
)
from ..images.context import (
    DEFAULT_EXCLUDES,
    ContextChanged,
    ContextError,
    ContextTooLarge,
    IgnoreRules,
    Reader,
    read_top_file,
    scan,
)
from ..images.dockerfile import DockerfileError, check_allowed, parse_dockerfile, shown
from ..images.dockerfile_rules import extends_layers
from ..images.tags import TagError, image_ref, split_ref
from ..images.tarball import content_digest
from ..logsafe import escape_line, untrusted
from .build_limits import BuildLimitSteps
from .build_steps import DIGEST_LABEL, MAX_DOCKERFILE, BuildSteps
from .image_works import ImageWorks
from .launch import LaunchPhases


def read_dockerfile(dockerfile: bytes, buildargs: dict, allowed: list[str]):
    """The parsed Dockerfile, its base images checked against ``allowed``; DockerfileError (a
    sentence for the user) when it is not UTF-8, cannot be read as the engine reads it, or
    starts from an image that is not allowed."""
    try:
        text = dockerfile.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DockerfileError(
            f"Your Dockerfile is not UTF-8 text (byte {e.start}); save it as UTF-8."
        ) from e
    parsed = parse_dockerfile(text, buildargs)
    check_allowed(parsed, allowed)
    return parsed


class ImageSteps(BuildSteps, BuildLimitSteps):
    """Traits and methods DS01Spawner uses to give a project its own image."""

    project_images = Bool(
        True,
        help="""Build a project's own image from the ``Dockerfile`` in its folder.

        A project without a ``Dockerfile`` runs ``image``. When off, every project runs
        ``image`` and Dockerfiles are ignored.
        Default: ``True``. Example: ``c.DS01Spawner.project_images = False``.
        """,
    ).tag(config=True)

    allowed_base_images = List(
        Unicode(),
        ["ds01/*"],
        help="""Images a project Dockerfile may start from (``FROM``).

        fnmatch-style patterns, matched against the image after ``ARG`` values are filled in
        (``ds01/base`` also matches as ``ds01/base:latest``); ``*`` matches any characters,
        '/' and ':' included. Stages of the same Dockerfile are always allowed; ``COPY --from``
        and ``RUN --mount=from=`` may name earlier stages only. A Dockerfile that reads any
        other image is refused before anything is built, naming the line, and a built image
        whose layers do not start with its final base image's is refused after the build.
        The images must exist on this server: DS01 never pulls.
        Default: ``["ds01/*"]``.
        Example: ``c.DS01Spawner.allowed_base_images = ["ds01/*", "nvidia/cuda:12.4*"]``.
        """,
    ).tag(config=True)

    image_build_timeout = Int(
        600,
        min=10,
        help="""Seconds a project image build may run before it is stopped.

        The build's running step is killed and the launch fails, saying how long it ran.
        JupyterHub's ``start_timeout`` must leave room for it: DS01's default
        ``start_timeout`` is this plus ``http_timeout`` plus 60 s, and the hub refuses to
        start with a shorter one (see docs/images.md).
        Default: ``600``. Example: ``c.DS01Spawner.image_build_timeout = 1800``.
        """,
    ).tag(config=True)

    image_build_threads = Int(
        2,
        min=1,
        help="""Project image builds that run at the same time (a pool of its own).

        More launches that need a build wait for a free slot; launches of images that exist
        never wait for builds. Launches that need the same image share one build.
        Default: ``2``. Example: ``c.DS01Spawner.image_build_threads = 4``.
        """,
    ).tag(config=True)

    image_context_limit = ByteSpecification(
        "512M",
        help="""Largest build context (the project's files a build reads) DS01 sends to Docker.

        A larger context is refused before anything is built, with its size, its largest
        folders and the fix (add them to ``.dockerignore``).
        Default: ``"512M"``. Example: ``c.DS01Spawner.image_context_limit = "2G"``.
        """,
    ).tag(config=True)

    image_context_excludes = List(
        Unicode(),
        list(DEFAULT_EXCLUDES),
        help="""``.dockerignore`` patterns applied before the project's own ``.dockerignore``.

        Big data stays in ``/workspace`` without being copied into images; a project's
        ``.dockerignore`` can bring a file back with ``!``, e.g. ``!data/labels.csv``.
        ``.ds01/`` (DS01's logs) is always left out.
        Default: ``["data", "models", "outputs", ".git"]``.
        Example: ``c.DS01Spawner.image_context_excludes = ["data", "models", "outputs",
        ".git", "checkpoints"]``.
        """,
    ).tag(config=True)

    images_kept_per_project = Int(
        3,
        min=1,
        help="""Project images kept per project: after a new one is built, older ones beyond
        this number are deleted (never one that a container uses).

        Default: ``3``. Example: ``c.DS01Spawner.images_kept_per_project = 1``.
        """,
    ).tag(config=True)

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        build = self.image_build_timeout if self.project_images else 0
        queue = getattr(self, "gpu_queue_timeout", 0)  # DS01Spawner's, when the queue is on
        return build + queue + self.http_timeout + 60

    # ---- shared state of the hub process ------------------------------------------------------

    @property
    def image_works(self) -> ImageWorks:
        """The hub's one builder, caches and image I/O pool (image_works.py)."""
        return ImageWorks.shared(self._make_builder)

    def _make_builder(self) -> ImageBuilder:
        """Builds stream for minutes with their own timeout: each job gets its own connection
        (``BuildAPIClient``), made with the engine's client's version and settings."""
        kwargs = {"version": self.client.api_version}
        if self.tls_config:
            kwargs["tls"] = docker.tls.TLSConfig(**self.tls_config)
        kwargs.update(kwargs_from_env())
        kwargs.update(self.client_kwargs)
        if getattr(self, "on_swarm", False):  # images are built on the swarm's manager
            kwargs.update(self.swarm_build_kwargs())

        def api(timeout: float) -> docker.APIClient:
            return BuildAPIClient(**{**kwargs, "timeout": timeout})

        return ImageBuilder(
            api, self.image_build_threads, self.log, per_user=self.image_builds_per_user
        )

    def _builder(self) -> ImageBuilder:
        return self.image_works.builder

    async def _in_io(self, fn, *args, **kwargs):
        """File and short Docker work of the image steps, never on the build threads."""
        return await self.image_works.io(fn, *args, **kwargs)

    # ---- the step ------------------------------------------------------------------------------

    async def project_image(
        self, project: str, project_dir: str, ident: Identity, phases: LaunchPhases
    ) -> str:
        """The project's own image (built when needed), or "" when it has none (no Dockerfile,
        or ``project_images`` off): then ``image`` runs. Every refusal is a user_error; the
        image exists and can run a server. The whole step is the launch's "build" phase."""
        if not self.project_images:
            return ""
        who = f"user={self.user.name} project={project}"
        try:
            try:
                dockerfile = await self._in_io(
                    read_top_file, project_dir, "Dockerfile", MAX_DOCKERFILE
                )
            except ContextError as e:  # the folder was replaced (by a link) since it was opened
                self.log.warning("Project folder of %s cannot be read: %s", who, e)
                raise user_error(
                    409,
                    "Your project folder was moved or replaced by a link while your server was "
                    "being prepared. Keep the folder in place and launch again.",
                ) from e
            if dockerfile is None:
                return ""
            self.progress_log.emit(12, "Reading your project's Dockerfile")
            started = time.monotonic()
            plan = await self._plan(project, project_dir, ident, dockerfile)
            ref, digest = plan["ref"], plan["digest"]
            image_id = await self._existing_image(ref, digest, who)
            if image_id is None:
                image_id = await self._build(plan, project_dir, ident, who)
            await self._check_base_layers(image_id, plan["base_id"], who)
            await self._check_runs_server(image_id, ident, who)
            phases.record("build", started)  # the spawn's build phase: the whole image step
        except DOCKER_ERRORS as e:
            self.log.error("Docker engine error in the image step %s: %s", who, e)
            raise user_error(503, ENGINE_DOWN_MESSAGE) from e
        self.log.info(
            "Image for %s: %s (%s) ready in %.1f s",
            who,
            ref,
            image_id[7:19],
            time.monotonic() - started,
        )
        return ref

    async def _plan(self, project: str, project_dir: str, ident: Identity, dockerfile: bytes):
        """Everything decided before a build: refusals, the context, its hash, the tag."""
        who = f"user={self.user.name} project={project}"
        buildargs = {
            "DS01_UID": str(ident.uid),
            "DS01_GID": str(ident.gid),
            "DS01_USER": self.user.name,
        }
        try:  # up to MAX_DOCKERFILE of text, read character by character: off the event loop
            parsed = await self._in_io(
                read_dockerfile, dockerfile, buildargs, self.allowed_base_images
            )
        except DockerfileError as e:
            self.log.warning("Dockerfile refused %s: %s", who, escape_line(str(e)))
            raise user_error(400, str(e)) from e
        used_args = {k: v for k, v in buildargs.items() if k in parsed.arg_names}
        extra = {f"arg {k}": v for k, v in used_args.items()}
        for name in parsed.external_images():
            extra[f"base {name}"] = await self._base_image_id(name, parsed, who)
        base_id = extra.get(f"base {parsed.final_base()}")  # None for FROM scratch
        try:
            ignore = await self._in_io(read_top_file, project_dir, ".dockerignore", 1 << 20)
            rules = IgnoreRules.for_project(
                ignore.decode("utf-8", "replace") if ignore else None,
                self.image_context_excludes,
            )
            reader = Reader(ident.uid, frozenset({ident.gid, *ident.supplementary_gids}))
            snap = await self._in_io(scan, project_dir, rules, self.image_context_limit, reader)
            digest = await self._in_io(
                content_digest, project_dir, snap, extra, self.image_works.hashes
            )
        except ContextTooLarge as e:
            self.log.warning("Build context refused %s: %s", who, e)
            raise user_error(413, str(e)) from e
        except ContextChanged as e:
            raise user_error(409, str(e)) from e
        except ContextError as e:
            self.log.warning("Build context refused %s: %s", who, e)
            raise user_error(400, str(e)) from e
        try:
            ref = image_ref(self.prefix, self.user.name, project, digest)
        except TagError as e:
            self.log.error("Cannot name the image of %s: %s", who, e)
            raise user_error(500, "This server is misconfigured; an admin has been told.") from e
        self.progress_log.emit(
            13,
            f"Build context: {snap.files} files, {snap.total_bytes / 1e6:.1f} MB; image {ref}",
        )
        return {
            "ref": ref,
            "digest": digest,
            "snap": snap,
            "extra": extra,
            "buildargs": used_args,
            "project": project,
            "base_id": base_id,
        }

    async def _base_image_id(self, name: str, parsed, who: str) -> str:
        ref = next(r for r in parsed.images if r.image == name)
        where = (
            f"Line {ref.lineno} of your Dockerfile (`{shown(ref.text)}`) uses the image {name!r}"
        )
        try:
            info = await self.docker("inspect_image", name)
        except docker.errors.ImageNotFound as e:
            self.log.warning("Dockerfile %s needs missing base image %s", who, name)
            raise user_error(
                400,
                f"{where}, which is allowed but not on this server (DS01 never downloads "
                f"images). Start FROM {self.image}, or ask an admin to add {name}.",
            ) from e
        except docker.errors.APIError as e:
            if e.status_code and 400 <= e.status_code < 500:  # e.g. an invalid reference
                raise user_error(
                    400, f"{where}, which Docker does not accept: {e.explanation or e}."
                ) from e
            raise
        if (info.get("Config") or {}).get("OnBuild"):
            # ONBUILD triggers run in this build unchecked (they may COPY --from any image)
            self.log.warning("Base image %s of %s has ONBUILD triggers: refused", name, who)
            raise user_error(
                400,
                f"{where}, which carries ONBUILD instructions that DS01 cannot check. Start "
                f"FROM {self.image}, or ask an admin to rebuild {name} without ONBUILD.",
            )
        return info["Id"]

    async def _check_base_layers(self, image_id: str, base_id: str | None, who: str) -> None:
        """Refuse an image whose layers do not start with the allowed base image's: whatever
        the Dockerfile said, the engine then built it from something else."""
        if base_id is None:
            return
        built = (await self.docker("inspect_image", image_id)).get("RootFS") or {}
        base = (await self.docker("inspect_image", base_id)).get("RootFS") or {}
        if extends_layers(built.get("Layers") or [], base.get("Layers") or []):
            return
        self.log.warning(
            "Image %s of %s does not extend its base %s: refused", image_id[7:19], who, base_id
        )
        raise user_error(
            422,
            "Your image was not built on top of the base image your Dockerfile's last FROM "
            "names, so DS01 will not run it. Start your final stage FROM an allowed image "
            f"(for example {self.image}) and build on it.",
        )

    async def _existing_image(self, ref: str, digest: str, who: str) -> str | None:
        """The id of the image for this content, tagged ``ref``; None when it must be built.

        An image of the same content built under another name (another project, another
        user) is tagged ``ref`` too. Only images DS01 tagged count: a label alone can be
        forged by a Dockerfile, a tag of ours cannot.
        """
        try:
            image_id = (await self.docker("inspect_image", ref))["Id"]
        except docker.errors.ImageNotFound:
            pass
        else:
            self.progress_log.emit(14, f"Your image {ref} is up to date: no build needed")
            self.log.info("Image unchanged %s tag=%s: no build", who, ref)
            return image_id
        job = self._builder().job_for(digest)
        if job is not None:
            return None  # a build of this content runs: join it
        _, tag = split_ref(ref)
        for image in await self.docker("images", filters={"label": f"{DIGEST_LABEL}={digest}"}):
            ours = [
                t
                for t in image.get("RepoTags") or []
                if t.startswith(f"{self.prefix}-") and split_ref(t)[1] == tag
            ]
            if ours and (image.get("Labels") or {}).get(DIGEST_LABEL) == digest:
                repo, _ = split_ref(ref)
                await self.docker("tag", image["Id"], repo, tag)
                self.progress_log.emit(
                    14, f"The same image was built before ({ours[0]}): reused, no build needed"
                )
                self.log.info("Image reused %s tag=%s from %s: no build", who, ref, ours[0])
                self._prune_later(ref)
                return image["Id"]
        return None

    async def _check_runs_server(self, image_id: str, ident: Identity, who: str) -> None:
        checker = self.image_works.compat
        if checker.cached(image_id) is None:
            self.progress_log.emit(52, "Checking that your image can run jupyterhub-singleuser")
        result = await checker.check(
            image_id,
            lambda: self._in_io(
                compat.run_check,
                self.client,
                image_id,
                f"{ident.uid}:{ident.gid}",
                self.prefix,
                limits=compat.CHECK_LIMITS if self.image_check_limits else None,
            ),
        )
        if not result.ok:
            self.log.warning(
                "Image %s of %s cannot run jupyterhub-singleuser %s: %s",
                image_id[7:19],
                who,
                hub_version,
                untrusted(result.version or result.output),
            )
            raise user_error(422, compat.problem_sentence(result, hub_version, self.image))
