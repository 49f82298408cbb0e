"""Images on the node that runs the server: streamed from the manager's engine when missing.

Images are built (and the base image imported) on the swarm manager's engine. Before a server's
service is created on a node, :meth:`ImageDistributor.ensure` makes the image present there:

- present = the node's engine has the image's **reference with the manager's image id**: the
  check costs one ``inspect`` per engine (0.0 s returned);
- the node has the id under another name: it is tagged there (no transfer);
- else the manager's ``docker save`` (``get_image``) is streamed, chunk by chunk, into the node's
  ``docker load`` (``load_image``, chunked HTTP): memory stays at one chunk, never the tarball;
  the ``layer.tar`` of layers the node has already (those of the deepest ancestor it has by id,
  e.g. the base image) are left out of the stream (:mod:`.layers`): a project image built FROM
  the base sends its own layers only; a load that fails that way is retried whole once;
- concurrent calls for the same (image id, node) wait for one transfer (:class:`SingleFlight`);
  different images or nodes go in parallel;
- a node whose engine does not answer, or a load that fails, raises :class:`ImageDistributionError`
  (a sentence naming the node) and logs one error line for the admin.

Why save/load and not a registry: docs/scale-out.md ("Images"), with the numbers of
``benchmarks/swarm_images.py``. This module imports docker-py and :mod:`.nodes` only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import docker

from .layers import LayerFilter, chain_ids
from .nodes import ENGINE_DOWN_ERRORS, NodeEngineError, NodeEngines
from .tasks import NodeInfo

T = TypeVar("T")
#: Bytes per chunk of the stream (what the transfer holds in memory at a time).
CHUNK = 1 << 20
#: How far up the manager's ``Parent`` chain to look for an image the node has.
MAX_ANCESTORS = 200


class ImageDistributionError(RuntimeError):
    """An image that could not be made present on a node; str() names the node and why."""


@dataclass(frozen=True)
class Transfer:
    """One completed transfer (kept per (image id, node id) in ``ImageDistributor.transfers``)."""

    image: str
    image_id: str
    node: str
    bytes: int
    seconds: float


class SingleFlight:
    """Run ``fn`` once per key at a time: callers with the same key while it runs wait for it and
    get its result (or its exception). Pure threading, no I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Flight] = {}

    def run(self, key: Hashable, fn: Callable[[], T]) -> tuple[T, bool]:
        """``(result, ran)``: ``ran`` is False for a caller that waited for another's run."""
        with self._lock:
            flight = self._running.get(key)
            leader = flight is None
            if leader:
                flight = self._running[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result, False
        try:
            flight.result = fn()
            return flight.result, True
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                del self._running[key]
            flight.done.set()

    def running(self) -> list[Hashable]:
        with self._lock:
            return list(self._running)


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Counted:
    """An iterator over a byte stream that counts what passed through."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.bytes += len(chunk)
            yield chunk


def load_errors(messages: Iterable[Any]) -> list[str]:
    """The errors in ``load_image``'s progress messages (``{"error": ...}``/``errorDetail``)."""
    errors = []
    for m in messages:
        if isinstance(m, dict) and (m.get("error") or m.get("errorDetail")):
            errors.append(str(m.get("error") or (m.get("errorDetail") or {}).get("message")))
    return errors


class ImageDistributor:
    """Makes images built on the manager present on the nodes that run servers."""

    def __init__(
        self, engines: NodeEngines, log: logging.Logger | None = None, chunk: int = CHUNK
    ) -> None:
        self.engines = engines
        self.log = log or logging.getLogger(__name__)
        self.chunk = chunk
        self._flights = SingleFlight()
        self.transfers: dict[tuple[str, str], Transfer] = {}

    def _image_id(self, image: str) -> str:
        try:
            return str(self.engines.manager().inspect_image(image)["Id"])
        except docker.errors.ImageNotFound:
            raise ImageDistributionError(
                f"image {image} is not on the swarm manager's engine (build or load it there)."
            ) from None
        except ENGINE_DOWN_ERRORS as e:
            raise ImageDistributionError(f"the swarm manager's engine does not answer: {e}") from e

    @staticmethod
    def _present(client: docker.APIClient, image: str, image_id: str) -> bool:
        """Whether ``image`` is ``image_id`` on this engine; tags the id when only it is there."""
        try:
            if client.inspect_image(image)["Id"] == image_id:
                return True
        except docker.errors.ImageNotFound:
            pass
        if image == image_id or image.startswith("sha256:"):
            return False
        try:
            client.inspect_image(image_id)
        except docker.errors.ImageNotFound:
            return False
        repo, tag = docker.utils.parse_repository_tag(image)
        client.tag(image_id, repo, tag or "latest", force=True)
        return True

    def _failed(self, image: str, node: NodeInfo, why: Exception | str) -> ImageDistributionError:
        self.log.error(
            "image %s could not be put on node %s (%s): %s", image, node.name, node.engine, why
        )
        return ImageDistributionError(f"Image {image} could not be put on node {node.name}: {why}")

    def ensure(self, image: str, node: NodeInfo) -> float:
        """Make ``image`` (as the manager has it, by id) present on ``node``; blocking.

        Seconds spent (0.0 when it was already there). :class:`ImageDistributionError` when the
        manager lacks the image, or the node's engine does not answer or fails the load.
        """
        t0 = time.monotonic()
        _, spent = self._ensure(image, node)
        return 0.0 if not spent else time.monotonic() - t0

    def ensure_id(self, image: str, node: NodeInfo) -> str:
        """``ensure``, answering the image's id on the node: what a server's service names, so
        that no worker ever pulls ``image`` by its name from a registry (a name like
        ``ds01/base:latest`` resolves to Docker Hub, where anyone may own it)."""
        image_id, _ = self._ensure(image, node)
        return image_id

    def _ensure(self, image: str, node: NodeInfo) -> tuple[str, bool]:
        """(the image's id, whether it had to be sent)."""
        image_id = self._image_id(image)
        try:
            client = self.engines.client(node)
            if self._present(client, image, image_id):
                return image_id, False
        except (NodeEngineError, *ENGINE_DOWN_ERRORS) as e:
            raise self._failed(image, node, e) from e
        key = (image_id, node.id)
        self._flights.run(key, lambda: self._transfer(client, image, image_id, node))
        return image_id, True

    def _layers_on(self, client: docker.APIClient, image: str) -> tuple[list[str], set[str]]:
        """The image's chain ids, and those the node has: from the deepest ancestor (the
        manager's ``Parent`` chain, e.g. the base image) that the node has by id."""
        manager = self.engines.manager()
        info = manager.inspect_image(image)
        candidates = chain_ids((info.get("RootFS") or {}).get("Layers") or [])
        parent, depth = info.get("Parent") or "", 0
        while parent and depth < MAX_ANCESTORS:
            try:
                layers = (client.inspect_image(parent).get("RootFS") or {}).get("Layers") or []
                return candidates, set(chain_ids(layers))
            except docker.errors.ImageNotFound:
                parent, depth = manager.inspect_image(parent).get("Parent") or "", depth + 1
        return candidates, set()

    def _send(self, client: docker.APIClient, image: str, layers: LayerFilter | None) -> int:
        """Stream the manager's ``docker save`` (less the layers ``layers`` drops) into the
        node's ``docker load``; bytes sent. Errors of the load are raised as a list."""
        stream = _Counted(self.engines.manager().get_image(image, chunk_size=self.chunk))
        body = layers.filter(stream) if layers is not None else stream
        sent = _Counted(body)
        errors = load_errors(client.load_image(iter(sent), quiet=True))
        if errors:
            raise _LoadFailed("; ".join(errors))
        return sent.bytes

    def _transfer(
        self, client: docker.APIClient, image: str, image_id: str, node: NodeInfo
    ) -> Transfer:
        t0 = time.monotonic()
        try:
            if self._present(client, image, image_id):  # a flight that just ended brought it
                return Transfer(image, image_id, node.name, 0, 0.0)
            candidates, have = self._layers_on(client, image)
            layers = LayerFilter(candidates, have) if have else None
            self.log.info(
                "sending image %s (%s) to node %s (%d of %d layers there)",
                image,
                image_id[:19],
                node.name,
                len(have),
                len(candidates),
            )
            try:
                sent = self._send(client, image, layers)
            except _LoadFailed as e:
                if layers is None or not layers.layers_skipped:
                    raise self._failed(image, node, e) from None
                # a layer the node had went meanwhile (pruned?): once more, whole
                self.log.warning("load on node %s failed (%s); sending every layer", node.name, e)
                sent = self._send(client, image, None)
            if not self._present(client, image, image_id):
                raise self._failed(
                    image,
                    node,
                    "after the load the node's image is not the manager's "
                    "(was it rebuilt meanwhile? launch again)",
                )
        except ImageDistributionError:
            raise
        except _LoadFailed as e:
            raise self._failed(image, node, e) from None
        except (NodeEngineError, *ENGINE_DOWN_ERRORS) as e:
            raise self._failed(image, node, e) from e
        done = Transfer(image, image_id, node.name, sent, time.monotonic() - t0)
        self.transfers[(image_id, node.id)] = done
        self.log.info(
            "image %s on node %s: %.1f MB sent in %.1f s",
            image,
            node.name,
            done.bytes / 1e6,
            done.seconds,
        )
        return done


class _LoadFailed(Exception):
    """``docker load`` answered errors."""
