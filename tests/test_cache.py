"""The layer cache (slimmer/image/cache.py): a repack takes the compressed layer from it and gives
the same bytes; damaged entries are found and rewritten; concurrent runs are safe; the size is
bounded; --no-cache and --cache-dir do what they say."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import slimmer.image.cache as cache_module
from slimmer.assemble.options import from_keywords
from slimmer.assemble.pack import pack
from slimmer.image.cache import LayerCache, make_layer
from slimmer.image.layer import write_layer
from slimmer.tree import File, FileTree
from tests.support.cli import command, error_line
from tests.support.cli import run as slimmer
from tests.support.roots import tiny_root

PROGRAM = "/usr/bin/jq"


def _pack(out: Path, cache: Path | None, **options: object) -> str:
    """Pack jq into `out` in-process; the archive's sha256."""
    pack(*from_keywords(programs=(PROGRAM,), output=str(out),
                        cache_dir=str(cache) if cache else None, **options))
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _blobs(cache: Path) -> list[Path]:
    found = cache / "layers-v1" / "blobs"
    return sorted(found.iterdir()) if found.exists() else []


def _keys(cache: Path) -> list[Path]:
    found = cache / "layers-v1" / "keys"
    return sorted(found.iterdir()) if found.exists() else []


def _consistent(cache: Path) -> None:
    """Every blob is named by its sha256, every key names a blob that exists."""
    for blob in _blobs(cache):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for key in _keys(cache):
        entry = json.loads(key.read_text())
        blob = cache / "layers-v1" / "blobs" / entry["digest"].removeprefix("sha256:")
        assert blob.stat().st_size == entry["size"]


def _no_compressing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the layer was compressed again")

    monkeypatch.setattr(cache_module, "write_layer", refuse)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_hit_gives_the_same_bytes_without_compressing(tmp_path: Path, compression: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cold = _pack(tmp_path / "cold.tar", None, compression=compression)
    first = _pack(tmp_path / "one.tar", cache, compression=compression)
    assert first == cold
    assert len(_blobs(cache)) == 1 and len(_keys(cache)) == 1
    _no_compressing(monkeypatch)
    assert _pack(tmp_path / "two.tar", cache, compression=compression) == cold
    _consistent(cache)


def test_entries_differ_by_compression_and_content(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _pack(tmp_path / "g.tar", cache, compression="gzip")
    _pack(tmp_path / "z.tar", cache, compression="zstd")
    _pack(tmp_path / "e.tar", cache, compression="gzip", epoch=1700000000)  # other mtimes
    _pack(tmp_path / "n.tar", cache, compression="none")  # not cached: nothing to save
    assert len(_blobs(cache)) == 3 and len(_keys(cache)) == 3
    _consistent(cache)


def test_corrupted_blob_is_ignored_and_rewritten(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = _pack(tmp_path / "one.tar", cache)
    (blob,) = _blobs(cache)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert _pack(tmp_path / "two.tar", cache) == cold
    _consistent(cache)
    assert _blobs(cache) == [blob]


@pytest.mark.parametrize("damage", ["truncated blob", "garbage key", "key without blob",
                                    "key naming another size"])
def test_damaged_entries_are_misses(tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    cold = _pack(tmp_path / "one.tar", cache)
    (blob,), (key,) = _blobs(cache), _keys(cache)
    if damage == "truncated blob":
        os.truncate(blob, blob.stat().st_size // 2)
    elif damage == "garbage key":
        key.write_bytes(b"\x00{not json")
    elif damage == "key without blob":  # a run killed between the blob and its key, evicted
        blob.unlink()
    else:
        entry = json.loads(key.read_text())
        key.write_text(json.dumps({**entry, "size": entry["size"] + 1}))
    assert _pack(tmp_path / "two.tar", cache) == cold
    _consistent(cache)
    assert len(_blobs(cache)) == 1 and len(_keys(cache)) == 1


def test_concurrent_runs_are_safe(tmp_path: Path) -> None:
    """Two processes filling the same entry at the same time, then a third reading it."""
    cache = tmp_path / "cache"
    outs = [tmp_path / f"{n}.tar" for n in range(3)]
    procs = [subprocess.Popen(command("pack", "/usr/bin/python3", "-o", str(out), "--cache-dir",
                                      str(cache), "--quiet"), stderr=subprocess.PIPE)
             for out in outs[:2]]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    done = slimmer("pack", "/usr/bin/python3", "-o", str(outs[2]), "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()
    _consistent(cache)
    assert len(_blobs(cache)) == 1
    assert not [p for p in (cache / "layers-v1").rglob("*") if p.name.startswith(".slimmer-")]


def _tree(content: bytes) -> FileTree:
    tree = FileTree()
    tree.add("/data", File(0o644, len(content), data=content), "test")
    return tree


def test_eviction_keeps_the_size_bounded_least_recently_used_first(tmp_path: Path) -> None:
    cache = LayerCache(str(tmp_path / "cache"), max_bytes=2500)
    digests = []
    for n in range(4):  # about 1 kB each, compressed: random bytes
        layer = make_layer(_tree(os.urandom(1000) + bytes([n])), str(tmp_path), "gzip", 0,
                           cache=cache)
        digests.append(layer.blob.descriptor.digest.hex)
        layer.close()
        # used n seconds after the epoch: the earlier, the less recently
        os.utime(tmp_path / "cache" / "layers-v1" / "blobs" / digests[-1], ns=(n, n))
    blobs = {p.name for p in _blobs(tmp_path / "cache")}
    assert sum(p.stat().st_size for p in _blobs(tmp_path / "cache")) <= 2500
    assert blobs == set(digests[2:])
    assert len(_keys(tmp_path / "cache")) == 2  # the keys of evicted blobs go too
    _consistent(tmp_path / "cache")


def test_a_hit_is_recently_used(tmp_path: Path) -> None:
    cache = LayerCache(str(tmp_path / "cache"), max_bytes=2500)
    trees = [_tree(os.urandom(1000) + bytes([n])) for n in range(3)]
    digests = []
    for n, tree in enumerate(trees[:2]):
        layer = make_layer(tree, str(tmp_path), "gzip", 0, cache=cache)
        digests.append(layer.blob.descriptor.digest.hex)
        layer.close()
        os.utime(tmp_path / "cache" / "layers-v1" / "blobs" / digests[-1], ns=(n, n))
    make_layer(trees[0], str(tmp_path), "gzip", 0, cache=cache).close()  # hit: touched
    make_layer(trees[2], str(tmp_path), "gzip", 0, cache=cache).close()  # evicts one
    names = {p.name for p in _blobs(tmp_path / "cache")}
    assert digests[0] in names and digests[1] not in names


# ---- the command line --------------------------------------------------------------------


def test_default_cache_under_xdg_cache_home(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    done = slimmer("pack", PROGRAM, "-o", str(tmp_path / "a.tar"))
    assert done.returncode == 0, done.stderr
    assert len(_blobs(tmp_path / "xdg" / "slimmer")) == 1


def test_default_cache_under_home_without_xdg(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    done = slimmer("pack", PROGRAM, "-o", str(tmp_path / "a.tar"))
    assert done.returncode == 0, done.stderr
    assert len(_blobs(tmp_path / "home" / ".cache" / "slimmer")) == 1


def test_no_cache_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    done = slimmer("pack", PROGRAM, "-o", str(tmp_path / "a.tar"), "--no-cache")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "xdg").exists()


def test_cache_dir_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    done = slimmer("pack", PROGRAM, "-o", str(tmp_path / "a.tar"), "--cache-dir", "mine",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(_blobs(tmp_path / "mine")) == 1
    assert not (tmp_path / "xdg").exists()


def test_cache_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = slimmer("pack", PROGRAM, "-o", str(tmp_path / "a.tar"), "--cache-dir",
                   str(tmp_path / "file"))
    assert done.returncode == 1
    assert error_line(done) == f"error: {tmp_path / 'file'}: --cache-dir is not a directory"
    assert not (tmp_path / "a.tar").exists()


def test_unwritable_cache_still_writes_the_image(tmp_path: Path) -> None:
    """A cache that cannot be written is passed over (a file where its directory would be)."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "layers-v1").write_text("in the way")
    done = slimmer("pack", PROGRAM, "-o", str(tmp_path / "a.tar"), "--cache-dir",
                   str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.tar").stat().st_size > 0


def test_check_reproducible_compresses_again(tmp_path: Path) -> None:
    """The second build of --check-reproducible runs without the cache: a cached layer that
    no longer matches what compression gives would be found."""
    cache = tmp_path / "cache"
    root = tiny_root(tmp_path)
    args = ("pack", "/bin/hello", "--root", str(root), "--cache-dir", str(cache))
    done = slimmer(*args, "-o", str(tmp_path / "a.tar"), "--check-reproducible")
    assert done.returncode == 0, done.stderr  # the cached layer is the one compressing gives
    (blob,) = _blobs(cache)
    (key,) = _keys(cache)
    # An entry that passes every check of a lookup but is not what compressing gives: a
    # layer compressed differently (zlib level 1), stored under the real key.
    layer = gzip.decompress(blob.read_bytes())
    other = gzip.compress(layer, compresslevel=1, mtime=0)
    digest = hashlib.sha256(other).hexdigest()
    (blob.parent / digest).write_bytes(other)
    entry = json.loads(key.read_text())
    key.write_text(json.dumps({**entry, "digest": f"sha256:{digest}", "size": len(other)}))
    done = slimmer(*args, "-o", str(tmp_path / "b.tar"), "--check-reproducible")
    assert done.returncode == 1
    assert "not reproducible" in done.stderr


@pytest.mark.parametrize("which", ["key", "blob"])
def test_entry_others_may_write_is_not_used(tmp_path: Path, which: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A key or blob that group or others may write is not trusted: compressed again."""
    cache = tmp_path / "cache"
    cold = _pack(tmp_path / "one.tar", cache)
    (path,) = _keys(cache) if which == "key" else _blobs(cache)
    path.chmod(0o666)
    compressed = []
    real = write_layer

    def counting(*args: Any, **kwargs: Any) -> Any:
        compressed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "write_layer", counting)
    assert _pack(tmp_path / "two.tar", cache) == cold
    assert compressed == [1]
    _consistent(cache)
    assert all(p.stat().st_mode & 0o022 == 0 for p in [*_keys(cache), *_blobs(cache)])


def test_killed_run_leaves_no_half_entry(tmp_path: Path) -> None:
    """SIGKILL while compressing, then while storing: whatever the cache holds is whole (every
    blob hashes to its name, every key names a blob of its size), and the next run works."""
    cache = tmp_path / "cache"
    program = "/usr/bin/ffmpeg" if os.path.exists("/usr/bin/ffmpeg") else "/usr/bin/python3"
    for delay in (1.0, 3.0, 6.0):
        proc = subprocess.Popen(command("pack", program, "-o", str(tmp_path / "k.tar"),
                                        "--cache-dir", str(cache), "--quiet"),
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        _consistent(cache)
        assert not [p for p in cache.rglob("*") if p.name.startswith(".slimmer-")]
    done = slimmer("pack", program, "-o", str(tmp_path / "done.tar"), "--cache-dir",
                   str(cache))
    assert done.returncode == 0, done.stderr
    _consistent(cache)
    assert len(_blobs(cache)) == 1
