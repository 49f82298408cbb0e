"""Running a project's image build and telling about it: the build job (``ImageWorks.builder``),
its progress lines on the spawn page, the audit record, the user's ``BUILD_LOG`` in the project,
the sentence of a failed build, and the pruning of a project's older images afterwards.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timezone
from html import escape

from ..errors import DOCKER_ERRORS, ENGINE_DOWN_MESSAGE, user_error
from ..identity import Identity
from ..images import housekeeping
from ..images.builder import (
    STEP_RE,
    BuildError,
    BuildJob,
    BuildSpec,
    BuildTimeout,
    EngineError,
)
from ..images.context import ContextChanged
from ..images.tags import split_ref
from ..images.tarball import write_tar
from ..projects.files import ProjectFileError, write_project_file

DIGEST_LABEL = "ds01.image.digest"
BUILD_LOG = ".ds01/build.log"
MAX_DOCKERFILE = 1 << 20
MAX_PROGRESS_LINES = 1000  # output lines shown on the spawn page per build (all are in the log)
TAIL_IN_MESSAGE = 12
# progress of the image step: 12 reading, 15..50 building (by step), 52 checking
BUILD_FROM, BUILD_TO = 15, 50


class BuildSteps:
    """Build an image and report it (mixed into the spawner through ``ImageSteps``)."""

    async def _build(self, plan: dict, project_dir: str, ident: Identity, who: str) -> str:
        ref, digest = plan["ref"], plan["digest"]
        builder = self._builder()
        engine_params = await self._build_engine_params(who)
        # no await from here until the build is started or joined: one build per content
        job = builder.job_for(digest)
        joined = job is not None
        if job is None:
            spec = BuildSpec(
                key=digest,
                tag=ref,
                write_context=functools.partial(
                    write_tar,
                    project_dir,
                    plan["snap"],
                    extra=plan["extra"],
                    cache=self.image_works.hashes,
                ),
                buildargs=plan["buildargs"],
                labels={DIGEST_LABEL: digest},
                timeout=self.image_build_timeout,
                who=who,
                container_limits=self._build_limits(),
                engine_params=engine_params,
                owner=self.user.name,
            )
            job = builder.start(spec)
            self.progress_log.emit(
                BUILD_FROM, "Building your image: the Dockerfile or the files it uses changed"
            )
        else:
            self.log.info("Image build joined %s tag=%s (built as %s)", who, ref, job.spec.tag)
            self.progress_log.emit(
                BUILD_FROM, "Another launch is building the same image; following its progress"
            )
        started = datetime.now(timezone.utc)
        try:
            result = await builder.wait(job, self._build_listener())
        except (BuildError, ContextChanged, EngineError) as e:
            await self._write_build_log(project_dir, ident, job, ref, digest, started, e)
            self._audit_build(
                ref, joined, False, getattr(e, "seconds", None) or job.elapsed(), str(e)
            )
            raise self._build_failure(e, who) from e
        await self._write_build_log(project_dir, ident, job, ref, digest, started, None)
        self._audit_build(ref, joined, True, result.seconds)
        if job.spec.tag != ref:
            repo, tag = split_ref(ref)
            await self.docker("tag", result.image_id, repo, tag)
        self.progress_log.emit(BUILD_TO, f"Image built in {result.seconds:.0f} s")
        self._prune_later(ref)
        return result.image_id

    def _audit_build(
        self, ref: str, joined: bool, ok: bool, seconds: float, error: str = ""
    ) -> None:
        """A ``build`` event of the audit log (and the hub's build counters, which count a
        build shared by several launches once: ``joined`` ones are not counted)."""
        audit = getattr(self, "audit", None)
        if audit is not None:
            audit(
                "build",
                user=self.user.name,
                project=self.project,
                server=self.name or "",
                image=ref,
                ok=ok,
                seconds=round(float(seconds), 3),
                error=error[:2000] or None,
                joined=joined,
            )

    @staticmethod
    def shown_step(line: str) -> str | None:
        """A build's ``Step n/m : ...`` line as the user wrote the Dockerfile: the engine counts
        the ``LABEL ds01.image.digest=...`` step DS01 adds at the end (``labels=``); that step is
        not shown (None) and the total leaves it out."""
        m = STEP_RE.fullmatch(line)
        if not m:
            return line
        if m[3].startswith(f"LABEL {DIGEST_LABEL}="):
            return None
        return f"Step {m[1]}/{max(int(m[2]) - 1, int(m[1]))} : {m[3]}"

    def _build_listener(self):
        """Each build line to the spawn page: steps move the bar, output lines are messages."""
        state = {"percent": BUILD_FROM, "shown": 0}

        def listener(line: str) -> None:
            m = STEP_RE.fullmatch(line)
            if m:
                n, total = int(m[1]), max(int(m[2]), 1)
                state["percent"] = BUILD_FROM + (BUILD_TO - BUILD_FROM) * (n - 1) // total
                shown = BuildSteps.shown_step(line)
                if shown is not None:
                    self.progress_log.emit(state["percent"], shown)
                return
            if line.startswith((" ---> ", "Removing intermediate container")):
                return
            state["shown"] += 1
            if state["shown"] <= MAX_PROGRESS_LINES:
                self.progress_log.emit(state["percent"], line)
            elif state["shown"] == MAX_PROGRESS_LINES + 1:
                self.progress_log.emit(
                    state["percent"], f"(more output in {BUILD_LOG} in your project folder)"
                )

        return listener

    def _build_failure(self, e: Exception, who: str):
        if isinstance(e, ContextChanged):
            return user_error(409, str(e))
        if isinstance(e, EngineError):
            self.log.error("Docker engine error while building %s: %s", who, e)
            return user_error(503, ENGINE_DOWN_MESSAGE)
        assert isinstance(e, BuildError)
        if isinstance(e, BuildTimeout):
            step = self.shown_step(e.step) if e.step else None
            at = f", at {step}" if step else ", before its first step"
            head = (
                f"Building your image took too long: it was stopped after {e.seconds:.0f} s "
                f"(the limit is {self.image_build_timeout} s){at}."
            )
            status = 504
        else:
            step = self.shown_step(e.step) if e.step else None
            what = f"{step} failed" if step else f"Docker refused it ({e.reason})"
            head = f"Your image could not be built: {what}."
            status = 422
        tail = "\n".join(line[:300] for line in e.tail[-TAIL_IN_MESSAGE:])
        foot = (
            f"The full log is in {BUILD_LOG} in your project folder "
            f"(/workspace/{BUILD_LOG}). Your files are safe. To fix the Dockerfile in "
            f"JupyterLab, launch this project with the standard image {self.image} (on the "
            f"form: Environment, 'Standard image'; in a terminal: ds01 project launch "
            f"{self.project} --standard-image), then launch it as usual again."
        )
        err = user_error(status, f"{head} Last lines of its output:\n{tail}\n{foot}")
        err.jupyterhub_html_message = (
            f"{escape(head)} Last lines of its output:<pre>{escape(tail)}</pre>{escape(foot)}"
        )
        return err

    async def _write_build_log(
        self,
        project_dir: str,
        ident: Identity,
        job: BuildJob,
        ref: str,
        digest: str,
        started: datetime,
        error: Exception | None,
    ) -> None:
        step = self.shown_step(error.step) if getattr(error, "step", None) else None
        if error is None:
            outcome = f"built in {job.elapsed():.1f} s"
        elif isinstance(error, BuildTimeout):
            outcome = f"STOPPED: {error} at {step or 'the start'}"
        elif isinstance(error, BuildError):
            outcome = f"FAILED at {step or 'the start'}: {error.reason}"
        else:
            outcome = f"FAILED: {error}"
        text = "\n".join(
            [
                f"# DS01 image build of project {self.project or ref} for {self.user.name}",
                f"# started {started.isoformat(timespec='seconds')}, image {ref}",
                f"# content hash {digest}",
                *(s for s in map(self.shown_step, job.lines()) if s is not None),
                f"# {outcome}",
                "",
            ]
        )
        try:
            await self._in_io(
                write_project_file, project_dir, BUILD_LOG, text, ident.uid, ident.gid
            )
        except (ProjectFileError, OSError) as e:
            self.log.warning("Could not write %s of user=%s: %s", BUILD_LOG, self.user.name, e)

    def _prune_later(self, ref: str) -> None:
        """Delete this project's older images in the background (never on the spawn's path)."""
        project = ref.split("/", 1)[1].rsplit(":", 1)[0]

        async def prune() -> None:
            try:
                deleted = await self._in_io(
                    housekeeping.prune_project,
                    self.client,
                    self.prefix,
                    self.user.name,
                    project,
                    self.images_kept_per_project,
                    ref,
                )
            except DOCKER_ERRORS as e:
                self.log.warning("Could not prune old images of %s: %s", ref, e)
                return
            for old in deleted:
                self.log.info("Deleted old image %s of user=%s", old, self.user.name)

        task = asyncio.ensure_future(prune())
        self.image_works.keep(task)
