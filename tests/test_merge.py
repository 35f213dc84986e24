"""Merging layers (image/merge.py): linear time, the root's opaque marker, a bounded spill
(sparse files, bombs, free space, nothing left behind), hard links and extended attributes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slimmer.image.merge import SpillFull
from slimmer.image.merged import open_image
from slimmer.tree import Dir, File
from tests.support.cli import run as slimmer
from tests.support.compile import Compile
from tests.support.host import need_tool

GiB = 1 << 30


def info(name: str, kind: str = "file", size: int = 0, link: str = "", mode: int = 0o644,
         pax: dict[str, str] | None = None) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                   "hard": tarfile.LNKTYPE}[kind]
    member.size, member.linkname, member.mode = size, link, mode
    member.pax_headers = dict(pax or {})
    return member


def layer(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    raw = out.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0) if compress == "gzip" else raw


def files(names: list[str], data: bytes = b"") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [(info(n, size=len(data)), data) for n in names]


def diff_id(blob: bytes) -> str:
    """The digest of a layer's tar, uncompressed (a truncated gzip: of what it holds)."""
    digest = hashlib.sha256()
    if blob[:2] == b"\x1f\x8b":
        unpacker = zlib.decompressobj(31)
        for at in range(0, len(blob), 1 << 20):
            digest.update(unpacker.decompress(blob[at:at + (1 << 20)]))
    else:
        digest.update(blob)
    return f"sha256:{digest.hexdigest()}"


def archive(path: Path, *layers: bytes, config: dict[str, Any] | None = None) -> str:
    """A `docker save` archive of these layer blobs (the config names their diff_ids)."""
    config = config or {"architecture": "amd64", "os": "linux", "config": {}}
    config["rootfs"] = {"type": "layers", "diff_ids": [diff_id(b) for b in layers]}
    with tarfile.open(path, "w") as tar:
        def put(name: str, data: bytes) -> None:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        names = [f"{i}/layer.tar" for i in range(len(layers))]
        for name, blob in zip(names, layers, strict=True):
            put(name, blob)
        put("config.json", json.dumps(config).encode())
        put("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["m:1"],
                                          "Layers": names}]).encode())
    return str(path)


@pytest.fixture
def tmpdir_for_spill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The spill goes here: whatever happens, it must be empty after."""
    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    yield spill
    assert list(spill.iterdir()) == []


# ---- time ------------------------------------------------------------------------------------


def test_40000_whiteouts_merge_in_linear_time(tmp_path: Path) -> None:
    names = [f"d/f{i}" for i in range(40_000)]
    path = archive(tmp_path / "a.tar", layer([(info("d", "dir", mode=0o755), None),
                                              *files(names)]),
                   layer(files([f"d/.wh.f{i}" for i in range(40_000)] + ["d/kept"])))
    start = time.monotonic()
    with open_image(path) as image:
        took = time.monotonic() - start
        assert sorted(image.tree.paths()) == ["/", "/d", "/d/kept"]
    print(f"40,000 whiteouts: {took:.2f} s")
    assert took < 20  # quadratic before: 43 s for the whiteout layer alone


def test_opaque_directory_of_40000_entries_merges_in_linear_time(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.tar",
                   layer(files([f"d/old{i}" for i in range(20_000)])),
                   layer(files(["d/.wh..wh..opq", *(f"d/new{i}" for i in range(20_000))])))
    start = time.monotonic()
    with open_image(path) as image:
        took = time.monotonic() - start
        assert len(image.tree) == 20_001 and "/d/new19999" in image.tree
        assert not any(p.startswith("/d/old") for p in image.tree.paths())
    print(f"opaque over 20,000 + 20,000 entries: {took:.2f} s")
    assert took < 20


def nested(depth: int) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    name = "d"
    for _ in range(depth):
        members.append((info(name, "dir", mode=0o700), None))
        name += "/d"
    members.append((info(name[:-2] + "/bottom", size=6), b"bottom"))
    return members, "/" + name[:-2]


def test_10000_nested_directories(tmp_path: Path) -> None:
    members, deepest = nested(10_000)
    path = archive(tmp_path / "a.tar", layer(members, "gzip"),
                   layer(files(["d/d/.wh..wh..opq", "d/d/new"])))
    start = time.monotonic()
    with open_image(path) as image:
        assert "/d/d/d" not in image.tree and image.tree.children("/d/d") == ["new"]
        took = time.monotonic() - start
    with open_image(archive(tmp_path / "b.tar", layer(members, "gzip"))) as image:
        assert image.root.read_bytes(f"{deepest}/bottom") == b"bottom"
        order = [p for p, _ in image.tree.items()]
        assert order[-1] == f"{deepest}/bottom" and order == sorted(order, key=len)
        assert [d for d, _, _ in image.root.walk("/d")][-1] == deepest
        took += time.monotonic() - start
    print(f"10,000 nested directories, merged twice and walked: {took:.2f} s")
    assert took < 60


def test_slim_keeps_10000_nested_directories(tmp_path: Path, cc: Compile) -> None:
    """The whole pipeline (lookups, --keep's walk, the writer) on a deep tree: it used to raise
    RecursionError (a traceback)."""
    program = cc("app", "int main(void) { return 0; }\n", "-static").read_bytes()
    members, deepest = nested(10_000)
    path = archive(tmp_path / "a.tar",
                   layer([(info("app", size=len(program), mode=0o755), program), *members],
                         "gzip"),
                   config={"architecture": "amd64", "os": "linux",
                           "config": {"Entrypoint": ["/app"]}})
    out = tmp_path / "out.tar"
    start = time.monotonic()
    done = slimmer("slim", path, "-o", str(out), "--keep", "/d")
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    with open_image(str(out)) as image:
        assert image.root.read_bytes(f"{deepest}/bottom") == b"bottom"
    print(f"slim --keep of 10,000 nested directories: {took:.2f} s")


# ---- opaque markers and whiteouts --------------------------------------------------------


def test_root_opaque_marker_empties_the_root_but_keeps_it(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.tar",
                   layer([(info("etc", "dir", mode=0o755), None), *files(["etc/passwd", "x"])]),
                   layer(files(["./.wh..wh..opq", "new"], b"n")))
    with open_image(path) as image:
        assert isinstance(image.tree.get("/"), Dir)
        assert sorted(image.tree.paths()) == ["/", "/new"]
        assert [p for p, _ in image.tree.items()] == ["/new"]
        assert image.root.listdir("/") == ["new"]


def test_opaque_keeps_this_layers_entries_wherever_the_marker_is(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.tar",
                   layer(files(["o/a", "o/sub/lower", "o/sub/deeper/x", "o/inner/y", "keep"])),
                   layer([*files(["o/sub/mine", "o/.wh..wh..opq"]),
                          (info("o/inner", "dir", mode=0o700), None),
                          *files(["o/inner/.wh..wh..opq", "o/inner/z", "o/.wh.gone"])]))
    with open_image(path) as image:
        assert sorted(image.tree.paths()) == ["/", "/keep", "/o", "/o/inner", "/o/inner/z",
                                              "/o/sub", "/o/sub/mine"]
        assert image.tree.get("/o/inner") == Dir(0o700)


# ---- the spill ---------------------------------------------------------------------------


def sparse_member(name: str, size: int, blocks: list[tuple[int, bytes]]) -> tuple[
        tarfile.TarInfo, bytes]:
    """A GNU sparse member, format 1.0 (PAX), as GNU tar writes it: the map, then the data."""
    head = f"{len(blocks)}\n" + "".join(f"{o}\n{len(d)}\n" for o, d in blocks)
    stored = head.encode().ljust(-(-len(head) // 512) * 512, b"\0") + b"".join(
        d for _, d in blocks)
    member = info(f"GNUSparseFile.0/{name}", size=len(stored),
                  pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                       "GNU.sparse.name": name, "GNU.sparse.realsize": str(size)})
    return member, stored


def test_sparse_64_gib_file_is_spilled_sparsely(tmp_path: Path, tmpdir_for_spill: Path) -> None:
    size = 64 * GiB
    member = sparse_member("big", size, [(0, b"head"), (size - 4, b"tail")])
    path = archive(tmp_path / "a.tar", layer([member], "gzip"))
    assert os.path.getsize(path) <= 10_240  # a 10 KB archive
    start = time.monotonic()
    with open_image(path) as image:
        big = image.tree.get("/big")
        assert isinstance(big, File) and big.size == size and big.source is not None
        st = os.stat(big.source)
        assert st.st_size == size and st.st_blocks * 512 < 1 << 20
        with open(big.source, "rb") as fh:
            assert os.pread(fh.fileno(), 4, 0) == b"head"
            assert os.pread(fh.fileno(), 4, size - 4) == b"tail"
            assert os.pread(fh.fileno(), 4, GiB) == b"\0" * 4
    assert time.monotonic() - start < 10


def test_gnu_tar_sparse_file(tmp_path: Path, tmpdir_for_spill: Path) -> None:
    """The old GNU format (type S), made by GNU tar itself from a 64 GiB sparse file."""
    tar = need_tool("tar")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big", "wb") as fh:
        fh.write(b"head")
        fh.truncate(64 * GiB)
    layer_path = tmp_path / "layer.tar"
    subprocess.run([tar, "--sparse", "--format=gnu", "-cf", str(layer_path), "-C", str(src),
                    "big"], check=True)
    path = archive(tmp_path / "a.tar", layer_path.read_bytes())
    with open_image(path) as image:
        big = image.tree.get("/big")
        assert isinstance(big, File) and big.size == 64 * GiB and big.source is not None
        assert os.stat(big.source).st_blocks * 512 < 1 << 20
        assert image.root.read_bytes("/big", 4) == b"head"


def zero_bomb(name: str, size: int) -> bytes:
    """A gzip layer holding `size` bytes of zeros in one file: about size/1000 bytes."""
    header = tarfile.TarInfo(name)
    header.size = size
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(header.tobuf(tarfile.PAX_FORMAT))]
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        parts.append(packer.compress(zeros))
    parts.append(packer.compress(bytes(1024)))  # end of archive
    parts.append(packer.flush())
    return b"".join(parts)


def test_gzip_bomb_is_refused_before_it_is_written(tmp_path: Path,
                                                   tmpdir_for_spill: Path) -> None:
    bomb = zero_bomb("bomb", 256 << 20)
    assert len(bomb) < 300_000
    path = archive(tmp_path / "a.tar", layer(files(["small"], b"s" * 1000)), bomb)
    start = time.monotonic()
    with pytest.raises(SpillFull, match=r"^layer 1/layer.tar: bomb: its content needs 256.0 MiB "
                       r"\(268435456 bytes\) on disk, over the budget of 16.0 MiB "
                       r"\(16777216 bytes\) for the image's contents \(1000 bytes already "
                       r"taken\)$"), open_image(path, spill_limit=16 << 20):
        pass
    assert time.monotonic() - start < 5


def test_free_space_is_checked_before_spilling(tmp_path: Path, tmpdir_for_spill: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage

    def small(path: str) -> Any:
        return real(path)._replace(free=300 << 20)

    monkeypatch.setattr(shutil, "disk_usage", small)
    path = archive(tmp_path / "a.tar", layer(files(["fits"], b"x")),
                   zero_bomb("usr/big", 64 << 20))
    with pytest.raises(SpillFull) as caught, open_image(path):
        pass
    assert str(caught.value) == (
        f"layer 1/layer.tar: usr/big: its content needs 64.0 MiB (67108864 bytes) in "
        f"{tmpdir_for_spill}, which has 300.0 MiB (314572800 bytes) free (set TMPDIR to a "
        "directory on a larger disk)")


def test_a_replaced_or_deleted_file_loses_its_spill(tmp_path: Path,
                                                    tmpdir_for_spill: Path) -> None:
    path = archive(tmp_path / "a.tar",
                   layer([*files(["a", "b", "c", "dir/x"], b"old"),
                          (info("h", "hard", link="c"), None)]),
                   layer([*files([".wh.a", ".wh.c", ".wh.dir"]), *files(["b"], b"new")]))
    with open_image(path) as image:
        live = {e.source for _, e in image.tree.items() if isinstance(e, File)}
        (spill,) = tmpdir_for_spill.iterdir()
        assert {str(p) for p in spill.iterdir()} == live and len(live) == 2
        assert image.root.read_bytes("/b") == b"new"
        assert image.root.read_bytes("/h") == b"old"  # the link keeps c's content


def test_nothing_is_left_when_the_caller_fails(tmp_path: Path, tmpdir_for_spill: Path) -> None:
    path = archive(tmp_path / "a.tar", layer(files(["a"], b"x")))
    with pytest.raises(KeyboardInterrupt), open_image(path):
        raise KeyboardInterrupt  # as SIGTERM, turned into an exception by the CLI, would


def test_a_killed_runs_spill_is_removed_by_the_next_run(tmp_path: Path,
                                                        tmpdir_for_spill: Path) -> None:
    """SIGKILL runs no cleanup: the next run removes spills whose process is gone, and leaves
    a live process's spill and anything that is not a spill alone."""
    dead = _exited_pid()
    stale = tmpdir_for_spill / f"slimmer-image-{dead}-abc"
    (stale / "1").parent.mkdir()
    (stale / "1").write_bytes(b"left by a killed run")
    live = tmpdir_for_spill / f"slimmer-image-{os.getpid()}-def"
    live.mkdir()
    other = tmpdir_for_spill / "slimmer-image-notapid"
    other.mkdir()
    path = archive(tmp_path / "a.tar", layer(files(["a"], b"x")))
    with open_image(path):
        pass
    assert not stale.exists() and live.exists() and other.exists()
    live.rmdir()
    other.rmdir()


def _exited_pid() -> int:
    """The pid of a process that has exited (and been waited for)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# ---- fidelity ----------------------------------------------------------------------------


def test_hard_links_share_a_node(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.tar",
                   layer([(info("bin/tool", size=2, mode=0o4755), b"v1"),
                          (info("bin/alias", "hard", link="bin/tool"), None),
                          (info("bin/again", "hard", link="bin/alias"), None),
                          (info("empty"), b""), (info("empty2", "hard", link="empty"), None),
                          *files(["alone"], b"a")]),
                   layer([(info("sbin/third", "hard", link="bin/tool"), None)]))
    with open_image(path) as image:
        tree = image.tree
        tool = tree.get("/bin/tool")
        assert isinstance(tool, File) and tool.node is not None and tool.mode == 0o4755
        assert all(tree.get(p) == tool for p in ("/bin/alias", "/bin/again", "/sbin/third"))
        empty = tree.get("/empty")
        assert isinstance(empty, File) and empty.node not in (None, tool.node)
        assert tree.get("/empty2") == empty
        alone = tree.get("/alone")
        assert isinstance(alone, File) and alone.node is None


def test_owners_modes_and_xattrs_reach_the_tree(tmp_path: Path) -> None:
    capability = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    odd = b"\xff\xfe\n=\x00\xc3\xa9 \xed\xa0\x80"  # not UTF-8, a newline, a NUL, "é", a surrogate
    ping = info("bin/ping", size=4, mode=0o755, pax={
        "SCHILY.xattr.user.odd": odd.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.security.capability": capability.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.text": "é"})
    key = info("etc/key", size=3, mode=0o640)
    key.uid, key.gid = 1000, 1001
    data = info("var/lib/pg", "dir", mode=0o700)
    data.uid = data.gid = 999
    blob = layer([(ping, b"ELF?"), (key, b"key"), (data, None)])
    assert capability in blob and odd in blob  # stored as the raw bytes
    with open_image(archive(tmp_path / "a.tar", blob)) as image:
        found = image.tree.get("/bin/ping")
        assert isinstance(found, File) and found.xattrs == (
            ("security.capability", capability), ("user.odd", odd),
            ("user.text", "é".encode()))
        key_entry = image.tree.get("/etc/key")
        assert isinstance(key_entry, File)
        assert (key_entry.mode, key_entry.uid, key_entry.gid) == (0o640, 1000, 1001)
        assert image.tree.get("/var/lib/pg") == Dir(0o700, 999, 999)
