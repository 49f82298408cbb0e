"""The build context: .dockerignore semantics, the content hash, the tar stream, refusals."""

import io
import os
import tarfile

import pytest

from ds01spawner.images.context import (
    ContextChanged,
    ContextError,
    ContextTooLarge,
    IgnoreRules,
    Reader,
    compile_pattern,
    parse_dockerignore,
    read_top_file,
    scan,
)
from ds01spawner.images.tarball import FileHashCache, content_digest, write_tar

BIG = 1 << 30


def rules(dockerignore: str = "", defaults=("data", "models", "outputs", ".git")) -> IgnoreRules:
    return IgnoreRules.for_project(dockerignore, defaults)


def excluded(patterns: str, path: str, defaults=()) -> bool:
    return rules(patterns, defaults).excluded(path)


def make(root, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())


def paths(root, r=None, **kw) -> list[str]:
    return [e.path for e in scan(root, r or rules(), BIG, **kw).entries]


def digest(root, r=None, extra=None, cache=None) -> str:
    r = r or rules()
    return content_digest(root, scan(root, r, BIG), extra or {}, cache)


# ---- .dockerignore semantics (Docker's documented examples) ----------------------------------


@pytest.mark.parametrize(
    "pattern,path,want",
    [
        ("*/temp*", "somedir/temporary.txt", True),
        ("*/temp*", "somedir/temp", True),
        ("*/temp*", "temp", False),
        ("*/temp*", "a/b/temp", False),
        ("*/*/temp*", "a/b/temp.txt", True),
        ("*/*/temp*", "a/temp.txt", False),
        ("temp?", "tempa", True),
        ("temp?", "temp", False),
        ("temp?", "temp/", False),
        ("**/*.go", "main.go", True),
        ("**/*.go", "a/b/c/main.go", True),
        ("**/*.go", "main.gox", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("data/**", "data/x", True),
        ("data/**", "data", False),
        ("data", "data/deep/file.bin", True),  # a folder pattern covers what is inside
        ("data", "src/data", False),  # anchored at the top
        ("/data", "data/x", True),
        ("./data/", "data/x", True),
        ("a//b", "a/b", True),
        ("*.py[co]", "x.pyc", True),
        ("*.py[co]", "x.pyd", False),
        ("[^a]*", "b.txt", True),
        ("[^a]*", "a.txt", False),
        (r"\*.txt", "*.txt", True),
        (r"\*.txt", "a.txt", False),
        ("a.b", "axb", False),  # regex characters are literal
        ("(x)+", "(x)+", True),
        ("*", "anything/below", True),
        ("**", "x/y/z", True),
    ],
)
def test_pattern_semantics(pattern, path, want):
    assert excluded(pattern, path) is want


def test_exceptions_last_match_wins():
    assert not excluded("*.md\n!README.md", "README.md")
    assert excluded("*.md\n!README.md", "CHANGES.md")
    text = "*.md\n!README*.md\nREADME-secret.md"
    assert excluded(text, "README-secret.md")
    assert not excluded(text, "README-public.md")
    assert excluded("!README.md\n*.md", "README.md")


def test_comments_blank_lines_and_whitespace():
    parsed = parse_dockerignore("# comment\n\n  build/  \n !keep \n#x\n")
    assert parsed == [(3, "build"), (4, "!keep")]
    assert excluded(" #not-a-comment", "#not-a-comment")


def test_bad_pattern_names_the_line():
    with pytest.raises(ContextError, match="Line 2 of your .dockerignore"):
        rules("ok\n[z-a]\n")
    with pytest.raises(ContextError, match="alone"):
        compile_pattern("!", "Line 1 of your .dockerignore")


def test_defaults_exclude_big_folders_and_dockerignore_can_bring_files_back(tmp_path):
    make(
        tmp_path,
        {
            "Dockerfile": "FROM ds01/base\n",
            "train.py": "x",
            "data/big.bin": "x" * 10,
            "data/labels.csv": "a,b",
            "models/m.pt": "m",
            "outputs/o": "o",
            ".git/HEAD": "ref",
            "src/data/kept.txt": "k",
        },
    )
    assert paths(tmp_path) == ["Dockerfile", "src", "src/data", "src/data/kept.txt", "train.py"]
    got = paths(tmp_path, rules("!data/labels.csv"))
    assert "data/labels.csv" in got and "data/big.bin" not in got


def test_wildcard_exception_does_not_reach_into_an_excluded_folder_as_in_docker(tmp_path):
    make(tmp_path, {"Dockerfile": "x", "data/keep.txt": "k"})
    assert "data/keep.txt" not in paths(tmp_path, rules("!**/keep.txt"))


def test_dockerfile_and_dockerignore_are_always_sent(tmp_path):
    make(tmp_path, {"Dockerfile": "x", ".dockerignore": "*\n", "a.txt": "a"})
    assert paths(tmp_path, rules("*\n")) == [".dockerignore", "Dockerfile"]


def test_ds01_folder_is_never_sent(tmp_path):
    make(tmp_path, {"Dockerfile": "x", ".ds01/build.log": "log", "sub/.ds01/x": "kept"})
    got = paths(tmp_path, rules("!.ds01/build.log"))
    assert ".ds01/build.log" not in got and "sub/.ds01/x" in got


# ---- the content hash ---------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path):
    make(
        tmp_path,
        {
            "Dockerfile": "FROM ds01/base\nCOPY . /opt/app\n",
            "requirements.txt": "numpy\n",
            "src/main.py": "print(1)\n",
            "data/train.csv": "1,2\n",
            "empty": None,
        },
    )
    return tmp_path


def test_unchanged_project_same_hash_without_reading_again(project):
    cache = FileHashCache()
    first = digest(project, cache=cache)
    reads = cache.reads
    assert reads == 3
    assert digest(project, cache=cache) == first
    assert cache.reads == reads  # nothing read the second time


def test_mtime_alone_does_not_change_the_hash(project):
    before = digest(project)
    os.utime(project / "src/main.py", (1, 1))
    assert digest(project) == before


def test_excluded_and_log_changes_keep_the_hash(project):
    before = digest(project)
    (project / "data/train.csv").write_text("changed")
    (project / "data/new.bin").write_bytes(b"\0" * 100)
    make(project, {".ds01/build.log": "a new log", "outputs/run1/x": "y"})
    assert digest(project) == before


@pytest.mark.parametrize(
    "change",
    [
        lambda p: (p / "src/main.py").write_text("print(2)\n"),
        lambda p: (p / "Dockerfile").write_text("FROM ds01/base\nRUN true\n"),
        lambda p: (p / "src/new.py").write_text(""),
        lambda p: (p / "src/main.py").chmod(0o755),
        lambda p: (p / "src/main.py").rename(p / "src/other.py"),
        lambda p: (p / "newdir").mkdir(),
        lambda p: (p / "link").symlink_to("src/main.py"),
        lambda p: (p / ".dockerignore").write_text("src/\n"),
        lambda p: (p / "requirements.txt").unlink(),
    ],
)
def test_included_changes_change_the_hash(project, change):
    before = digest(project)
    change(project)
    assert digest(project) != before


def test_extra_inputs_change_the_hash(project):
    assert digest(project, extra={"arg DS01_UID": "1000"}) != digest(
        project, extra={"arg DS01_UID": "1001"}
    )
    assert digest(project, extra={"base ds01/base": "sha256:a"}) != digest(
        project, extra={"base ds01/base": "sha256:b"}
    )


def test_same_content_elsewhere_has_the_same_hash(project, tmp_path_factory):
    other = tmp_path_factory.mktemp("copy")
    for e in scan(project, rules(), BIG).entries:
        src, dst = project / e.path, other / e.path
        if e.kind == "dir":
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
            dst.chmod(src.stat().st_mode & 0o7777)
    assert digest(other) == digest(project)


# ---- the tar stream -----------------------------------------------------------------------------


def test_tar_has_what_the_hash_covers(project):
    (project / "link").symlink_to("/etc/passwd")
    r = rules()
    snap = scan(project, r, BIG)
    buf = io.BytesIO()
    written = write_tar(project, snap, buf, {"arg X": "1"})
    assert written == content_digest(project, snap, {"arg X": "1"})
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == [e.path for e in snap.entries]
        assert "data/train.csv" not in members
        assert members["link"].issym() and members["link"].linkname == "/etc/passwd"
        assert members["empty"].isdir()
        assert all(m.uid == 0 and m.gid == 0 for m in members.values())
        assert tar.extractfile("src/main.py").read() == b"print(1)\n"


def test_file_changed_after_the_scan_is_noticed(project):
    snap = scan(project, rules(), BIG)
    (project / "src/main.py").write_text("print('edited meanwhile')\n")
    with pytest.raises(ContextChanged, match="src/main.py"):
        write_tar(project, snap, io.BytesIO(), {})


# ---- links and permissions: nothing outside the project is ever read --------------------------


def test_links_are_sent_as_links_never_followed(tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("SECRET")
    root = tmp_path_factory.mktemp("proj")
    make(root, {"Dockerfile": "x"})
    (root / "secret").symlink_to(outside / "secret.txt")
    (root / "lib").symlink_to(outside)
    snap = scan(root, rules(), BIG)
    kinds = {e.path: e.kind for e in snap.entries}
    assert kinds == {"Dockerfile": "file", "lib": "link", "secret": "link"}
    buf = io.BytesIO()
    write_tar(root, snap, buf, {})
    assert b"SECRET" not in buf.getvalue()


def test_file_swapped_for_a_link_after_the_scan_is_refused(tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("SECRET")
    root = tmp_path_factory.mktemp("proj")
    make(root, {"Dockerfile": "x", "src/a.txt": "a"})
    snap = scan(root, rules(), BIG)
    (root / "src/a.txt").unlink()
    (root / "src/a.txt").symlink_to(outside / "secret.txt")
    buf = io.BytesIO()
    with pytest.raises(ContextChanged):
        write_tar(root, snap, buf, {})
    assert b"SECRET" not in buf.getvalue()
    (root / "src/a.txt").unlink()
    (root / "src").rmdir()
    (root / "src").symlink_to(outside)  # a folder swapped for a link
    with pytest.raises(ContextChanged):
        content_digest(root, snap, {})


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of another owner")
def test_files_the_user_cannot_read_are_refused(tmp_path):
    make(tmp_path, {"Dockerfile": "x", "theirs.txt": "t", "locked/x": "x", "mine.txt": "m"})
    os.chown(tmp_path / "theirs.txt", 4242, 4242)
    os.chmod(tmp_path / "theirs.txt", 0o600)
    os.chown(tmp_path / "locked", 4242, 4242)
    os.chmod(tmp_path / "locked", 0o700)
    for p in ("Dockerfile", "mine.txt"):
        os.chown(tmp_path / p, 1000, 100)
    with pytest.raises(ContextError) as e:
        scan(tmp_path, rules(), BIG, Reader(1000, frozenset({100})))
    assert "theirs.txt" in str(e.value) and "locked/" in str(e.value)
    assert "mine.txt" not in str(e.value)
    # group-readable through a group of the user
    os.chmod(tmp_path / "theirs.txt", 0o640)
    os.chown(tmp_path / "theirs.txt", 4242, 100)
    (tmp_path / "locked/x").unlink()
    (tmp_path / "locked").rmdir()
    assert "theirs.txt" in paths(tmp_path, reader=Reader(1000, frozenset({100})))


def test_fifos_are_skipped_not_read(tmp_path):
    make(tmp_path, {"Dockerfile": "x"})
    os.mkfifo(tmp_path / "pipe")
    assert paths(tmp_path) == ["Dockerfile"]


# ---- limits -------------------------------------------------------------------------------------


def test_oversized_context_is_refused_with_size_and_fix(tmp_path):
    make(tmp_path, {"Dockerfile": "x", "dataset/a.bin": b"\0" * (3 << 20), "src/x.py": "x"})
    make(tmp_path, {"data/huge.bin": b"\0" * (8 << 20)})  # excluded: does not count
    with pytest.raises(ContextTooLarge) as e:
        scan(tmp_path, rules(), 1 << 20)
    msg = str(e.value)
    assert "3.0 MiB" in msg and "1.0 MiB" in msg and "dataset/ (3.0 MiB)" in msg
    assert ".dockerignore" in msg and "data/" in msg
    assert scan(tmp_path, rules("dataset/"), 1 << 20).total_bytes < 100


def test_too_many_files_is_refused(tmp_path):
    make(tmp_path, {f"f{i}": "" for i in range(20)})
    with pytest.raises(ContextError, match="more than 10 files"):
        scan(tmp_path, rules(), BIG, max_entries=10)


def test_read_top_file(tmp_path):
    assert read_top_file(tmp_path, "Dockerfile", 100) is None
    (tmp_path / "Dockerfile").write_text("FROM ds01/base\n")
    assert read_top_file(tmp_path, "Dockerfile", 100) == b"FROM ds01/base\n"
    with pytest.raises(ContextError, match="at most"):
        read_top_file(tmp_path, "Dockerfile", 5)
    (tmp_path / "Dockerfile").unlink()
    (tmp_path / "Dockerfile").symlink_to("/etc/passwd")
    with pytest.raises(ContextError, match="not a link"):
        read_top_file(tmp_path, "Dockerfile", 1 << 20)
    (tmp_path / "Dockerfile").unlink()
    (tmp_path / "Dockerfile").mkdir()
    with pytest.raises(ContextError, match="not a plain file"):
        read_top_file(tmp_path, "Dockerfile", 1 << 20)
