"""Leaving out of a ``docker save`` stream the layers a node has (ds01spawner.swarm.layers), on
the entries of a real archive (tests/unit/swarm_save_capture.json, from dockerd 20.10.24)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ds01spawner.swarm.layers import LayerFilter, chain_ids, v1_chain

CAPTURE = json.loads((Path(__file__).parent / "swarm_save_capture.json").read_text())
DIFFS = CAPTURE["diff_ids"]
ORDER = CAPTURE["manifest_layers"]  # v1 ids, lowest layer first


def test_chain_ids_follow_the_oci_rule():
    chains = chain_ids(DIFFS)
    assert chains[0] == DIFFS[0] and len(chains) == 3 and len(set(chains)) == 3
    assert chain_ids(["sha256:a", "sha256:b"])[1] == (
        "sha256:" + __import__("hashlib").sha256(b"sha256:a sha256:b").hexdigest()
    )


def test_each_layer_json_names_its_chain_and_nothing_else_matches():
    chains = chain_ids(DIFFS)
    for i, v1 in enumerate(ORDER):
        body = CAPTURE["v1_json"][v1].encode()
        assert v1_chain(v1, body, chains) == chains[i]
        others = [c for c in chains if c != chains[i]]
        assert v1_chain(v1, body, others) is None
    assert v1_chain(ORDER[0], b"not json", chains) is None
    assert v1_chain("0" * 64, CAPTURE["v1_json"][ORDER[0]].encode(), chains) is None


def archive(pax: bool = False) -> bytes:
    """An archive shaped like ``docker save``'s (lexical order; layer.tar after json)."""
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if pax else tarfile.USTAR_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        files = {"manifest.json": b"[]", "repositories": b"{}"}
        for i, v1 in enumerate(ORDER):
            files[f"{v1}/VERSION"] = b"1.0"
            files[f"{v1}/json"] = CAPTURE["v1_json"][v1].encode()
            files[f"{v1}/layer.tar"] = bytes([65 + i]) * (5000 + 700 * i)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            if pax:
                info.pax_headers = {"comment": "x" * 10}
            t.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("pax", [False, True])
@pytest.mark.parametrize("chunk", [1, 511, 4096, 1 << 20])
def test_the_filter_drops_exactly_the_layers_the_node_has(pax, chunk):
    data = archive(pax)
    chains = chain_ids(DIFFS)
    f = LayerFilter(chains, chains[:2])  # the node has the base and the first RUN layer
    out = b"".join(f.filter(chunks(data, chunk)))
    with tarfile.open(fileobj=io.BytesIO(out)) as t:
        names = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    kept = {n for n in names if n.endswith("layer.tar")}
    assert kept == {f"{ORDER[2]}/layer.tar"} and names[f"{ORDER[2]}/layer.tar"] == b"C" * 6400
    assert {f"{v}/json" for v in ORDER} <= set(names) and "manifest.json" in names
    assert f.layers_skipped == 2 and len(out) == len(data) - f.skipped


def test_nothing_the_node_lacks_is_dropped():
    data = archive()
    chains = chain_ids(DIFFS)
    assert b"".join(LayerFilter(chains, set()).filter(chunks(data, 1000))) == data
    # a chain the node has but that is not this image's: nothing matches it
    assert b"".join(LayerFilter(chains[:1], {"sha256:other"}).filter([data])) == data
