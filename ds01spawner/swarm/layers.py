"""Leave out of a ``docker save`` stream the layers the receiving node already has.

``docker save`` of a project image always carries every layer, the base image's 481 MB too
(measured: benchmarks/swarm_images.py), and ``docker load`` reads the whole archive before it
finds out that it has most layers already. But ``docker load`` (dockerd 20.10, and since) opens a
layer's ``layer.tar`` only for a layer whose *chain* it does not have, so an archive without the
``layer.tar`` of the layers the node has loads the same image. This module filters the stream:

- :func:`chain_ids`: the chain ids of an image's layers (``RootFS.Layers``, OCI's rule);
- :func:`v1_chain`: which chain a ``<v1 id>/json`` entry of the archive stands for: the v1 id is
  the sha256 of that json (less ``id``; ``parent`` as a digest; without ``os`` for a lower layer)
  with ``layer_id`` = the chain (moby ``image/v1.CreateID``); each
  candidate is checked against the id, so a format this code does not know matches nothing and
  the layer is simply sent (never a wrong skip);
- :class:`LayerFilter`: a tar stream (chunks in, chunks out, one tar block at a time plus the
  small ``json`` entries in memory) without the ``layer.tar`` of the chains given.

``json`` comes before ``layer.tar`` in each layer's folder (the archive is written in lexical
order), which is what lets one pass decide. Pure: no I/O; :mod:`.images` feeds it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence

BLOCK = 512


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """``RootFS.Layers`` (diff ids) -> the chain id of each prefix (OCI image spec)."""
    chains: list[str] = []
    for diff in diff_ids:
        if not chains:
            chains.append(diff)
        else:
            digest = hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest()
            chains.append(f"sha256:{digest}")
    return chains


def _raw_members(text: str) -> dict[str, str] | None:
    """A JSON object's top-level members as raw text (Go's compact output), or None."""
    decoder = json.JSONDecoder()
    members: dict[str, str] = {}
    try:
        i = text.index("{") + 1
        while True:
            while text[i] in " \t\r\n,":
                i += 1
            if text[i] == "}":
                return members
            key, i = json.decoder.scanstring(text, i + 1)
            i = text.index(":", i) + 1
            while text[i] in " \t\r\n":
                i += 1
            _value, end = decoder.raw_decode(text, i)
            members[key] = text[i:end]
            i = end
    except (ValueError, IndexError):
        return None


def v1_chain(v1_id: str, v1_json: bytes, candidates: Iterable[str]) -> str | None:
    """The chain (of ``candidates``) whose layer ``<v1_id>/json`` describes, or None."""
    members = _raw_members(v1_json.decode("utf-8", "replace"))
    if members is None:
        return None
    members.pop("id", None)
    if "parent" in members:
        try:
            members["parent"] = json.dumps("sha256:" + json.loads(members["parent"]))
        except (ValueError, TypeError):
            return None
    # dockerd 20.10 sets "os" on a lower layer's json after it computed the id: try both
    variants = [members] + (
        [{k: v for k, v in members.items() if k != "os"}] if "os" in members else []
    )
    for chain in candidates:
        for variant in variants:
            config = dict(variant, layer_id=json.dumps(chain))
            body = "{" + ",".join(f"{json.dumps(k)}:{config[k]}" for k in sorted(config)) + "}"
            if hashlib.sha256(body.encode()).hexdigest() == v1_id:
                return chain
    return None


def _size(header: bytes) -> int:
    field = header[124:136]
    if field[0] & 0x80:  # base-256
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _name(header: bytes, meta: list[bytes]) -> str:
    for record in meta:  # a PAX path or a GNU long name, when the entry has one
        if record.startswith(b"path="):
            return record[5:].decode("utf-8", "replace")
        if record.startswith(b"longname="):
            return record[9:].decode("utf-8", "replace")
    name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
    return f"{prefix}/{name}" if prefix and header[257:262] == b"ustar" else name


def _pax_records(data: bytes) -> list[bytes]:
    out = []
    for line in data.split(b"\n"):
        _, _, record = line.partition(b" ")
        if record:
            out.append(record)
    return out


class LayerFilter:
    """Filter a ``docker save`` stream: drop ``<v1 id>/layer.tar`` of the chains in ``have``.

    ``candidates``: the image's chain ids (:func:`chain_ids`); ``have``: those the node has.
    ``skipped`` counts the bytes left out, ``layers_skipped`` the layers.
    """

    def __init__(self, candidates: Sequence[str], have: Iterable[str]) -> None:
        self.candidates = list(candidates)
        self.have = set(have)
        self._skip_dirs: set[str] = set()
        self.skipped = 0
        self.layers_skipped = 0

    def filter(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        reader = _Reader(chunks)
        meta: list[bytes] = []  # PAX / GNU long-name entries before the next entry
        meta_bytes = b""
        while True:
            header = reader.take(BLOCK)
            if len(header) < BLOCK or header == b"\0" * BLOCK:
                yield header
                yield from reader.rest()
                return
            size = _size(header)
            padded = -(-size // BLOCK) * BLOCK
            kind = header[156:157]
            if kind in (b"x", b"L"):
                data = reader.take(padded)
                meta += (
                    _pax_records(data[:size])
                    if kind == b"x"
                    else [b"longname=" + data[:size].rstrip(b"\0")]
                )
                meta_bytes += header + data
                continue
            name = _name(header, meta)
            folder, _, leaf = name.rstrip("/").rpartition("/")
            if leaf == "layer.tar" and folder in self._skip_dirs:
                self.skipped += len(meta_bytes) + BLOCK + padded
                self.layers_skipped += 1
                reader.skip(padded)
            elif leaf == "json" and folder and size <= 1 << 20:
                data = reader.take(padded)
                chain = v1_chain(folder, data[:size], self.candidates)
                if chain is not None and chain in self.have:
                    self._skip_dirs.add(folder)
                yield meta_bytes + header + data
            else:
                yield meta_bytes + header
                yield from reader.stream(padded)
            meta, meta_bytes = [], b""


class _Reader:
    """Exact-size reads over an iterator of chunks (holds at most one chunk plus a request)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def _fill(self) -> bool:
        chunk = next(self._it, None)
        if chunk is None:
            return False
        self._buf += chunk
        return True

    def take(self, n: int) -> bytes:
        while len(self._buf) < n and self._fill():
            pass
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def stream(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self._buf and not self._fill():
                return
            out, self._buf = self._buf[:n], self._buf[n:]
            n -= len(out)
            yield out

    def skip(self, n: int) -> None:
        for _ in self.stream(n):
            pass

    def rest(self) -> Iterator[bytes]:
        if self._buf:
            yield self._buf
            self._buf = b""
        yield from self._it
