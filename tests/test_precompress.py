"""The large files' zstd frames made early, in a child process (slimmer/image/precompress.py):
the layer is the same bytes with them and without, a file changed since is compressed again,
and the child is gone once stopped."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from slimmer.image.compress import BIG, FRAME
from slimmer.image.layer import Layer, write_layer
from slimmer.image.precompress import Precompressor, candidates, spread
from slimmer.tree import File, FileTree

MTIME = 1_700_000_000


def _content(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(3, 12)) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def _tree(tmp_path: Path) -> FileTree:
    """Small files between large ones, in tmp_path/src: one of exactly BIG bytes, one over a
    frame and a bit (two frames, its padding in the second), one of three frames."""
    source = tmp_path / "src"
    source.mkdir()
    tree = FileTree()
    sizes = {"a-small": 1000, "b-big": BIG, "c-small": 70_000, "d-big": FRAME + 3,
             "e-big": 2 * FRAME + 100_000, "f-small": 5}
    for n, (name, size) in enumerate(sizes.items()):
        path = source / name
        path.write_bytes(_content(size, n))
        tree.add(f"/data/{name}", File(0o644, size, source=str(path)), "test")
    return tree


def _blob(layer: Layer) -> bytes:
    try:
        assert layer.file is not None
        return os.pread(layer.file.fileno(), layer.blob.descriptor.size, 0)
    finally:
        layer.close()


def _finished(tmp_path: Path) -> tuple[FileTree, Precompressor]:
    """_tree, and a child that has made all its frames."""
    tree = _tree(tmp_path)
    child = Precompressor.start(candidates(tree, MTIME), str(tmp_path))
    assert child is not None
    child.stop(wait=True)
    return tree, child


def _recorded(child: Precompressor) -> tuple[Callable[[object, int], bytes | None],
                                            list[bytes | None]]:
    """child.premade, and the list of what it gave."""
    taken: list[bytes | None] = []

    def premade(key: object, number: int) -> bytes | None:
        taken.append(child.premade(key, number))
        return taken[-1]

    return premade, taken


def test_the_layer_is_the_same_with_premade_frames(tmp_path: Path) -> None:
    tree, child = _finished(tmp_path)
    premade, taken = _recorded(child)
    try:
        assert child.made == 1 + 2 + 3  # every frame of the three large files
        plain = _blob(write_layer(tree, str(tmp_path), "zstd", MTIME, workers=2))
        for workers in (1, 2):
            with_premade = _blob(write_layer(tree, str(tmp_path), "zstd", MTIME,
                                             workers=workers, premade=premade))
            assert with_premade == plain
        assert sum(frame is not None for frame in taken) == 2 * 6
    finally:
        child.close()
    layer = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(plain)
    assert len(layer) % 512 == 0 and (tmp_path / "src/e-big").read_bytes() in layer


def test_a_file_changed_after_its_frames_were_made_is_compressed_again(tmp_path: Path) -> None:
    """Same size, same mtime, other content: the ctime tells (file_identity)."""
    tree, child = _finished(tmp_path)
    try:
        changed = tmp_path / "src/d-big"
        st = changed.stat()
        changed.write_bytes(_content(st.st_size, 99))
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
        fresh = _blob(write_layer(tree, str(tmp_path), "zstd", MTIME, workers=2))
        mixed = _blob(write_layer(tree, str(tmp_path), "zstd", MTIME, workers=2,
                                  premade=child.premade))
    finally:
        child.close()
    assert mixed == fresh
    layer = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(mixed)
    assert _content(FRAME + 3, 99) in layer


def _many(tmp_path: Path, count: int) -> FileTree:
    """`count` large files (one source under many names): seconds of work for the child."""
    big = tmp_path / "big"
    big.write_bytes(_content(FRAME, 1))
    tree = FileTree()
    for n in range(count):
        tree.add(f"/big/{n:04}", File(0o644, FRAME, source=str(big)), "test")
    return tree


def test_stop_ends_the_child_at_once(tmp_path: Path) -> None:
    child = Precompressor.start(candidates(_many(tmp_path, 500), MTIME), str(tmp_path))
    assert child is not None
    pid = child._pid
    assert pid is not None
    child.stop()
    assert child.made < 500
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: not a zombie, not running
    child.close()


def test_a_child_beside_another_thread_and_none_without_large_files(tmp_path: Path) -> None:
    """The progress display's ticker may run when the child is forked: it does its work."""
    tree = _tree(tmp_path)
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        child = Precompressor.start(candidates(tree, MTIME), str(tmp_path))
        assert child is not None
        child.stop(wait=True)
        assert child.made == 6
        child.close()
    finally:
        release.set()
        other.join()
    small = FileTree()
    small.add("/f", File(0o644, 5, source=str(tmp_path / "src/f-small")), "test")
    assert candidates(small, MTIME) == []
    assert Precompressor.start([], str(tmp_path)) is None


def test_candidates_are_large_files_not_linked(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    tree.add("/data/linked", File(0o644, BIG, source=str(tmp_path / "src/b-big"), node="n1"),
             "test")
    tree.add("/data/inline", File(0o644, BIG, data=bytes(BIG)), "test")
    assert sorted(c.source.rsplit("/", 1)[1] for c in candidates(tree, MTIME)) == [
        "b-big", "d-big", "e-big"]


@pytest.mark.parametrize("count", [0, 1, 2, 5, 8, 13])
def test_spread_is_an_order_of_all_that_starts_far_apart(count: int) -> None:
    order = spread(count)
    assert sorted(order) == list(range(count))
    if count >= 4:
        assert order[:2] == [0, 2 ** ((count - 1).bit_length() - 1)]


def test_frames_made_for_another_header_are_not_taken(tmp_path: Path) -> None:
    """The same files under another mtime (or mode, owner, name): other headers, other keys."""
    tree, child = _finished(tmp_path)
    premade, taken = _recorded(child)
    try:
        assert child.made == 6
        other = _blob(write_layer(tree, str(tmp_path), "zstd", MTIME + 1, workers=2,
                                  premade=premade))
    finally:
        child.close()
    assert taken and not any(taken)
    assert other == _blob(write_layer(tree, str(tmp_path), "zstd", MTIME + 1, workers=2))


def test_the_child_ends_when_its_parent_dies(tmp_path: Path) -> None:
    """A parent killed while its child compresses: the child stops after its current frame."""
    tree = _many(tmp_path, 500)  # 1,000 frames (each file's padding is one of its own)
    read, write = os.pipe()
    parent = os.fork()
    if parent == 0:  # the parent to be: start a child, report its pid, die at once
        try:
            os.close(read)
            child = Precompressor.start(candidates(tree, MTIME), str(tmp_path))
            os.write(write, b"%d\n" % (child._pid or 0 if child else 0))
        finally:
            os._exit(0)
    os.close(write)
    line = b""
    while not line.endswith(b"\n"):  # not to the end: the child holds the pipe open too
        line += os.read(read, 32)
    os.close(read)
    pid = int(line)
    os.waitpid(parent, 0)
    assert pid > 0
    for _ in range(40):  # within 2 s: it had seconds of work left
        if not _alive(pid):
            break
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """A running process (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_no_child_where_no_scratch_file_can_be(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Compressing early is only a gain: a directory that takes no file, or a fork that
    fails, leaves the layer writer all the work, and no descriptor open."""
    tree = _tree(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    assert Precompressor.start(candidates(tree, MTIME), str(tmp_path / "missing")) is None

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert Precompressor.start(candidates(tree, MTIME), str(tmp_path)) is None
    assert len(os.listdir("/proc/self/fd")) == before


def test_stop_when_the_child_was_reaped_already(tmp_path: Path) -> None:
    """With SIGCHLD ignored the kernel reaps children itself: stop still returns."""
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        child = Precompressor.start(candidates(_tree(tmp_path), MTIME), str(tmp_path))
        assert child is not None
        child.stop(wait=True)
        child.close()
    finally:
        signal.signal(signal.SIGCHLD, previous)
