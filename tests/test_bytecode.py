"""Cached bytecode stays valid in the image (slimmer/assemble/bytecode.py): each valid
timestamp pyc records the layer's mtime, everything else is left as it was; CPython itself
then loads the module from the cache."""

from __future__ import annotations

import os
import py_compile
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import slimmer
from slimmer.assemble.bytecode import fix_bytecode, refreshed, source_of
from slimmer.image.model import DEFAULT_EPOCH
from slimmer.tree import File, FileTree, Symlink, host_file
from tests.support.archives import (
    Archive,
    Member,
    docker_archive,
    layer_tar,
    sha,
    tiny_static_elf,
    unpack_layer,
)
from tests.support.cli import run as slimmer_cli
from tests.support.roots import tiny_root

EPOCH = 1234567890
SOURCE_MTIME = 1600000000
TAG = sys.implementation.cache_tag
MODE = py_compile.PycInvalidationMode


def module(directory: Path, name: str = "mod", text: str = "VALUE = 42\n",
           mode: MODE = MODE.TIMESTAMP, mtime: int = SOURCE_MTIME) -> tuple[Path, Path]:
    """A source and its pyc in __pycache__, compiled in `mode` with the source at `mtime`."""
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.py"
    source.write_text(text)
    os.utime(source, (mtime, mtime))
    cache = directory / "__pycache__" / f"{name}.{TAG}.pyc"
    py_compile.compile(str(source), str(cache), dfile=source.name, doraise=True,
                       invalidation_mode=mode)  # dfile: no host path in the code object
    return source, cache


def tree_of(directory: Path, image: str = "/app") -> FileTree:
    tree = FileTree()
    for path in sorted(directory.rglob("*")):
        where = f"{image}/{path.relative_to(directory)}"
        if path.is_symlink():
            tree.add(where, Symlink(os.readlink(path)), "test")
        elif path.is_file():
            tree.add(where, host_file(str(path)), "test")
    return tree


def content(entry: object) -> bytes:
    assert isinstance(entry, File)
    if entry.data is not None:
        return entry.data
    assert entry.source is not None
    return Path(entry.source).read_bytes()


def header(entry: object) -> tuple[int, int, int, int]:
    return struct.unpack("<4I", content(entry)[:16])


def test_names_of_sources() -> None:
    assert source_of("/a/__pycache__/json.cpython-311.pyc") == "/a/json.py"
    assert source_of("/a/__pycache__/json.cpython-311.opt-1.pyc") == "/a/json.py"
    assert source_of("/a/json.pyc") == "/a/json.py"  # legacy, beside its source
    assert source_of("/a/__pycache__/json.pypy39.pyc") is None
    assert source_of("/a/__pycache__/json.cpython-311.x.pyc") is None
    assert source_of("/a/__pycache__/json.py") is None
    assert source_of("/a/json.py") is None


def test_valid_timestamp_pyc_gets_the_epoch(tmp_path: Path) -> None:
    source, cache = module(tmp_path / "app")
    before = cache.read_bytes()
    tree = tree_of(tmp_path / "app")
    report = fix_bytecode(tree, EPOCH)
    assert report.fixed == 1 and report.stale == report.orphans == report.unreadable == 0
    entry = tree.get(f"/app/__pycache__/mod.{TAG}.pyc")
    after = content(entry)
    assert isinstance(entry, File) and entry.size == len(after) == len(before)
    assert header(entry) == (struct.unpack("<I", before[:4])[0], 0, EPOCH,
                             source.stat().st_size)
    assert after[:8] == before[:8] and after[12:] == before[12:]  # only the mtime changed
    assert cache.read_bytes() == before  # the host file is not touched


def test_hash_based_pycs_are_left_alone(tmp_path: Path) -> None:
    module(tmp_path / "app", "checked", mode=MODE.CHECKED_HASH)
    module(tmp_path / "app", "unchecked", mode=MODE.UNCHECKED_HASH)
    tree = tree_of(tmp_path / "app")
    report = fix_bytecode(tree, EPOCH)
    assert (report.hash_based, report.fixed) == (2, 0)
    for name, flags in (("checked", 0b11), ("unchecked", 0b01)):
        entry = tree.get(f"/app/__pycache__/{name}.{TAG}.pyc")
        assert isinstance(entry, File) and entry.source is not None  # still the host file
        assert header(entry)[1] == flags


def test_stale_and_orphaned_pycs_are_left_alone(tmp_path: Path) -> None:
    stale, _ = module(tmp_path / "app", "stale")
    os.utime(stale, (SOURCE_MTIME + 5, SOURCE_MTIME + 5))  # edited after compiling
    grown, _ = module(tmp_path / "app", "grown")
    grown.write_text("VALUE = 43  # longer\n")  # same mtime, another size
    os.utime(grown, (SOURCE_MTIME, SOURCE_MTIME))
    orphan, _ = module(tmp_path / "app", "orphan")
    orphan.unlink()
    tree = tree_of(tmp_path / "app")
    report = fix_bytecode(tree, EPOCH)
    assert (report.stale, report.orphans, report.fixed) == (2, 1, 0)
    for name in ("stale", "grown", "orphan"):
        entry = tree.get(f"/app/__pycache__/{name}.{TAG}.pyc")
        assert isinstance(entry, File) and entry.source is not None
        assert header(entry)[2] == SOURCE_MTIME


def test_generated_source_is_not_trusted(tmp_path: Path) -> None:
    _, cache = module(tmp_path / "app")
    tree = FileTree()
    tree.add("/app/mod.py", File(0o644, 11, data=b"VALUE = 42\n"), "test")
    tree.add(f"/app/__pycache__/mod.{TAG}.pyc", host_file(str(cache)), "test")
    report = fix_bytecode(tree, EPOCH)  # no original mtime known for generated content
    assert (report.stale, report.fixed) == (1, 0)


@pytest.mark.parametrize("data", [b"", b"\x00", b"abc\r\n", b"\xa7\r\r\n" + b"\0" * 12,
                                  (3495).to_bytes(2, "little") + b"\r\n" + b"\x02\0\0\0"
                                  + b"\0" * 8,
                                  (3495).to_bytes(2, "little") + b"\r\n\0\0\0\0"],
                         ids=["empty", "one-byte", "no-magic", "bad-magic-tail", "bad-flags",
                              "short"])
def test_corrupt_pyc_does_not_crash(tmp_path: Path, data: bytes) -> None:
    module(tmp_path / "app")
    cache = tmp_path / "app" / "__pycache__" / f"mod.{TAG}.pyc"
    cache.write_bytes(data)
    tree = tree_of(tmp_path / "app")
    report = fix_bytecode(tree, EPOCH)
    assert report.fixed == 0 and report.stale + report.unreadable == 1
    assert content(tree.get(f"/app/__pycache__/mod.{TAG}.pyc")) == data


def test_older_layouts_and_legacy_pycs(tmp_path: Path) -> None:
    """A Python 3.3-3.6 header (magic, mtime, size) and a Python 2 one (magic, mtime), as
    legacy pycs beside their sources."""
    app = tmp_path / "app"
    app.mkdir()
    for name in ("py36", "py27"):
        (app / f"{name}.py").write_text("x = 1\n")
        os.utime(app / f"{name}.py", (SOURCE_MTIME, SOURCE_MTIME))
    py36 = (3379).to_bytes(2, "little") + b"\r\n" + struct.pack("<II", SOURCE_MTIME, 6) + b"c"
    py27 = (62211).to_bytes(2, "little") + b"\r\n" + struct.pack("<I", SOURCE_MTIME) + b"c"
    (app / "py36.pyc").write_bytes(py36)
    (app / "py27.pyc").write_bytes(py27)
    tree = tree_of(app)
    assert fix_bytecode(tree, EPOCH).fixed == 2
    assert content(tree.get("/app/py36.pyc")) == py36[:4] + struct.pack("<II", EPOCH, 6) + b"c"
    assert content(tree.get("/app/py27.pyc")) == py27[:4] + struct.pack("<I", EPOCH) + b"c"
    assert refreshed(py36, SOURCE_MTIME, 7, EPOCH) is None  # the size is checked too


def test_source_behind_a_symlink(tmp_path: Path) -> None:
    app = tmp_path / "app"
    module(app / "real", "mod")
    (app / "mod.py").symlink_to("real/mod.py")
    (app / "__pycache__").mkdir()
    (app / "real/__pycache__" / f"mod.{TAG}.pyc").rename(app / "__pycache__" / f"mod.{TAG}.pyc")
    tree = tree_of(app)
    assert fix_bytecode(tree, EPOCH).fixed == 1
    assert header(tree.get(f"/app/__pycache__/mod.{TAG}.pyc"))[2] == EPOCH


def test_source_in_a_symlink_loop_is_no_source(tmp_path: Path) -> None:
    app = tmp_path / "app"
    module(app, "mod")
    (app / "mod.py").unlink()
    (app / "mod.py").symlink_to("loop.py")
    (app / "loop.py").symlink_to("mod.py")
    report = fix_bytecode(tree_of(app), EPOCH)
    assert (report.orphans, report.fixed) == (1, 0)


def test_same_bytes_whatever_the_sources_mtimes(tmp_path: Path) -> None:
    """Two copies compiled at other times give the same image files."""
    module(tmp_path / "one", mtime=SOURCE_MTIME)
    module(tmp_path / "two", mtime=SOURCE_MTIME + 86400 * 400)
    one, two = tree_of(tmp_path / "one"), tree_of(tmp_path / "two")
    fix_bytecode(one, EPOCH)
    fix_bytecode(two, EPOCH)
    name = f"/app/__pycache__/mod.{TAG}.pyc"
    assert content(one.get(name)) == content(two.get(name))


def test_hard_linked_pycs_become_files_of_their_own(tmp_path: Path) -> None:
    module(tmp_path / "app")
    tree = tree_of(tmp_path / "app")
    name = f"/app/__pycache__/mod.{TAG}.pyc"
    entry = tree.get(name)
    assert isinstance(entry, File)
    tree.remove(name)
    tree.add(name, File(entry.mode, entry.size, source=entry.source, node="1"), "test")
    fix_bytecode(tree, EPOCH)
    fixed = tree.get(name)
    assert isinstance(fixed, File) and fixed.node is None and header(fixed)[2] == EPOCH


def test_packed_module_loads_from_its_cache(tmp_path: Path) -> None:
    """Packed with the default time, unpacked by tar(1) (mtimes as the layer says): CPython
    finds the cache valid and loads the module from it, writing nothing."""
    app = tmp_path / "src"
    module(app, "mod")
    module(app / "pkg", "__init__", text="")  # an empty source is a file too
    root = tiny_root(tmp_path)
    out = tmp_path / "img.tar"
    result = slimmer.pack(["/bin/hello"], str(out), root=str(root), add=((str(app), "/app"),))
    assert result.bytecode.fixed == 2
    unpacked = unpack_layer(out, tmp_path / "unpacked")
    assert os.stat(unpacked / "app/mod.py").st_mtime == DEFAULT_EPOCH
    cache = unpacked / "app/__pycache__" / f"mod.{TAG}.pyc"
    assert struct.unpack("<I", cache.read_bytes()[8:12])[0] == DEFAULT_EPOCH
    before = {p: p.stat().st_mtime_ns for p in unpacked.rglob("*.pyc")}
    done = subprocess.run([sys.executable, "-v", "-c", "import mod, pkg; print(mod.VALUE)"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(unpacked / "app"), "PATH": os.defpath})
    assert done.returncode == 0 and done.stdout == "42\n", done.stderr
    assert f"{cache} matches {unpacked}/app/mod.py" in done.stderr
    assert f"code object from '{cache}'" in done.stderr
    assert "bytecode is stale" not in done.stderr
    assert {p: p.stat().st_mtime_ns for p in unpacked.rglob("*.pyc")} == before


def test_slim_checks_against_the_input_images_mtimes(tmp_path: Path) -> None:
    """`slim`: a source's original mtime is its layer's (0 in this hand-made image), not the
    time it was read: the valid pyc gets the new epoch, the stale one stays stale."""
    source = b"VALUE = 42\n"
    compiled = tmp_path / "c.pyc"
    (tmp_path / "c.py").write_bytes(source)
    os.utime(tmp_path / "c.py", (0, 0))
    py_compile.compile(str(tmp_path / "c.py"), str(compiled), doraise=True,
                       invalidation_mode=MODE.TIMESTAMP)
    good = compiled.read_bytes()
    stale = good[:8] + struct.pack("<I", 5) + good[12:]
    members: list[Member] = [
        ("dir", "bin", b""), ("file", "bin/hello", tiny_static_elf(b"hi\n")),
        ("dir", "app", b""), ("file", "app/good.py", source), ("file", "app/stale.py", source),
        ("dir", "app/__pycache__", b""),
        ("file", f"app/__pycache__/good.{TAG}.pyc", good),
        ("file", f"app/__pycache__/stale.{TAG}.pyc", stale)]
    fat = docker_archive(tmp_path / "fat.tar", [members], config={
        "architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/bin/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar(members))]}})
    out = tmp_path / "slim.tar"
    done = slimmer_cli("slim", str(fat), "-o", str(out), "--keep", "/app/**")
    assert done.returncode == 0, done.stderr
    image = Archive(out)
    assert struct.unpack("<I", image.file(f"app/__pycache__/good.{TAG}.pyc")[8:12])[0] == (
        DEFAULT_EPOCH)
    assert image.file(f"app/__pycache__/stale.{TAG}.pyc") == stale
    assert image.members()["app/good.py"].mtime == DEFAULT_EPOCH
