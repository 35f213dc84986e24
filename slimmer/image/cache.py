"""The layer cache: a compressed layer kept by what decides its bytes, so that packing the same
files again skips compression and gives the same bytes.

An entry's key is the sha256 of the uncompressed layer's digest (diff_id) and the compression
settings (compress.settings: algorithm, level, block or frame size, format version, the zlib or
zstd version). Layout under the cache directory (`$XDG_CACHE_HOME/slimmer`, else
`~/.cache/slimmer`, chosen by the command line):

    layers-v1/keys/KEY      {"digest": "sha256:...", "size": N, "diff_id": "sha256:..."}
    layers-v1/blobs/HEX     the compressed layer, named by its own sha256

Both are written to a temporary file and renamed into place (outputs.writing), the blob before
its key: a killed run leaves no half entry, and concurrent runs writing the same entry write
the same bytes. A hit is checked before it is used: the blob's size and sha256 must be the
key's, or the entry is removed and the layer compressed (and stored) again. Using an entry
touches its blob's mtime; when the blobs pass the size bound, the least recently used go first.
Only files the user owns, and that nobody else may write, are used: a key decides what an image
holds.

Finding the diff_id needs the tar bytes: one pass over the files that only hashes (about a
tenth of compressing them), then, on a miss, the usual pass that compresses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from slimmer.image.compress import Premade, settings
from slimmer.image.layer import (
    MEDIA_TYPES,
    Layer,
    LayerTarget,
    layer_entries,
    write_layer,
    write_tar,
)
from slimmer.image.model import Descriptor, Digest
from slimmer.outputs import OutputProblem, copy_region, writing
from slimmer.tree import FileTree

MAX_BYTES = 2 << 30  # default bound of the blobs' total size
_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")

Stage = Callable[[str, int, int], None]  # slimmer.progress.Progress


@dataclass(frozen=True, slots=True)
class LayerCache:
    directory: str
    max_bytes: int = MAX_BYTES

    @property
    def _keys(self) -> str:
        return os.path.join(self.directory, "layers-v1", "keys")

    @property
    def _blobs(self) -> str:
        return os.path.join(self.directory, "layers-v1", "blobs")

    def lookup(self, key: str, media_type: str) -> Layer | None:
        """The entry `key` as a Layer (its blob's file open), or None: absent, or damaged (then
        removed)."""
        entry = _read_key(os.path.join(self._keys, key))
        if entry is None:
            return None
        digest, size, diff_id = entry
        path = os.path.join(self._blobs, digest.hex)
        try:
            file = open(path, "rb")  # noqa: SIM115 - the Layer closes it
        except OSError:
            return None
        st = os.fstat(file.fileno())
        if not _own(st) or st.st_size != size or _sha256(file) != digest.hex:
            file.close()
            self._remove(key, path)
            return None
        with contextlib.suppress(OSError):
            os.utime(file.fileno())  # recently used
        return Layer.of_file(Descriptor(media_type, digest, size), diff_id, file)

    def store(self, key: str, layer: Layer) -> None:
        """Keep `layer` under `key`, then evict down to the bound. A cache that cannot be
        written is passed over: the image is written all the same."""
        desc = layer.blob.descriptor
        try:
            os.makedirs(self._keys, exist_ok=True)
            os.makedirs(self._blobs, exist_ok=True)
            with writing(os.path.join(self._blobs, desc.digest.hex)) as out:
                assert layer.blob.copy is not None
                layer.blob.copy(out)
            entry = {"digest": str(desc.digest), "size": desc.size,
                     "diff_id": str(layer.diff_id)}
            with writing(os.path.join(self._keys, key)) as out:
                out.write(json.dumps(entry, sort_keys=True).encode())
            self.evict()
        except (OSError, OutputProblem):
            pass

    def evict(self) -> None:
        """Remove the least recently used blobs until the rest fit in max_bytes, and the keys
        whose blob is gone."""
        blobs = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self._blobs) as found:
            for item in found:
                with contextlib.suppress(FileNotFoundError):
                    st = item.stat(follow_symlinks=False)
                    blobs.append((st.st_mtime_ns, item.name, st.st_size))
        total = sum(size for _, _, size in blobs)
        for _, name, size in sorted(blobs):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._blobs, name))
            total -= size
        with contextlib.suppress(FileNotFoundError), os.scandir(self._keys) as keys:
            for item in keys:
                entry = _read_key(item.path)
                if entry is None or not os.path.exists(os.path.join(self._blobs,
                                                                    entry[0].hex)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(item.path)

    def _remove(self, key: str, blob: str) -> None:
        for path in (os.path.join(self._keys, key), blob):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _own(st: os.stat_result) -> bool:
    """Whether a cache file is the user's own and nobody else may write it: a key names the
    layer an image gets, so one that another user could have written is not trusted."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read_key(path: str) -> tuple[Digest, int, Digest] | None:
    """(blob digest, blob size, diff_id) of a key file; None when absent, damaged or not the
    user's own (_own)."""
    try:
        with open(path, "rb") as fh:
            if not _own(os.fstat(fh.fileno())):
                return None
            entry = json.loads(fh.read(4096))
        digest, diff_id = _SHA256.fullmatch(entry["digest"]), _SHA256.fullmatch(entry["diff_id"])
        size = entry["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if digest is None or diff_id is None or not isinstance(size, int) or size < 0:
        return None
    return Digest("sha256", digest[1]), size, Digest("sha256", diff_id[1])


def _sha256(file: IO[bytes]) -> str:
    hasher = _Hasher()
    copy_region(file.fileno(), hasher)
    return hasher.digest.hexdigest()


def cache_key(diff_id: Digest, compression: str) -> str:
    text = json.dumps({"diff_id": str(diff_id), **settings(compression)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class _Hasher:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        self.digest.update(data)


def tar_digest(tree: FileTree, mtime: int, progress: Callable[[int, int], None] | None = None
               ) -> Digest:
    """The diff_id the layer of `tree` will have: the tar stream hashed, not kept."""
    hasher = _Hasher()
    write_tar(layer_entries(tree), hasher, mtime, progress)
    return Digest("sha256", hasher.digest.hexdigest())


def make_layer(tree: FileTree, into: LayerTarget | str | None, compression: str, mtime: int,
               progress: Stage | None = None, workers: int = 1,
               cache: LayerCache | None = None, premade: Premade | None = None) -> Layer:
    """The layer of `tree` (layer.write_layer, `into` its target), taken from `cache` when it
    holds it (then the caller copies it where it goes), stored in it otherwise. Uncompressed
    layers are not cached: there is nothing to save."""

    def stage(what: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(what, done, total)

    if cache is None or compression == "none":
        return write_layer(tree, into, compression, mtime, stage("compressing"), workers,
                           premade)
    media_type = MEDIA_TYPES[compression]
    found = cache.lookup(cache_key(tar_digest(tree, mtime, stage("reading")), compression),
                         media_type)
    if found is not None:
        return found
    layer = write_layer(tree, into, compression, mtime, stage("compressing"), workers,
                        premade)
    # Keyed by what was written: a file changed between the passes gives another key.
    cache.store(cache_key(layer.diff_id, compression), layer)
    return layer
