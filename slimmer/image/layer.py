"""Tree -> one normalised layer tar, streamed through the compressor into its place: the archive
being written (write.Archive), or a file without a name (ScratchTarget).

Every header field is set here (the tree's owners and modes, empty names, mtime = the build
epoch); entries come in FileTree order, a file's extended attributes as PAX SCHILY.xattr records,
and files that are one file (the same node) as one regular entry then hard links to it; gzip and
zstd settings are pinned so that the same tree gives the same bytes (docs/reproducibility.md),
whatever the number of threads compressing (compress.py). A sink that cares (zstd) is told
where each file of at least compress.BIG bytes begins and ends: those files' frames can then be
made early (precompress.py).
Nothing holds the layer in memory: the stream goes through one reused 1 MiB buffer (content read
straight into it), and both digests are computed on the way; the usual headers are built here,
tarfile builds those that need PAX records (the same bytes: docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from slimmer.errors import FileProblem, SlimmerError
from slimmer.image.compress import BIG, ParallelGzip, ParallelZstd, Premade
from slimmer.image.model import Blob, Descriptor, Digest
from slimmer.outputs import Sink, copy_region, scratch_file
from slimmer.tree import Dir, Entry, File, FileTree, Symlink

CHUNK = 1 << 20

MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}

Progress = Callable[[int, int], None]  # (content bytes written so far, total content bytes)


class ChangedWhilePacking(SlimmerError):
    """A source file's size changed between planning and writing."""


@dataclass(frozen=True, slots=True)
class Layer:
    """A layer written, and where: in a file without a name (ScratchTarget: nothing is left
    behind, whatever ends the process), whose blob copies the file into the archive, or in the
    archive itself (write.Archive), whose blob reads it back from there. `close` when done."""

    blob: Blob
    diff_id: Digest  # sha256 of the uncompressed tar (equal to the blob's when uncompressed)
    file: IO[bytes] | None = None  # the scratch file, if it is in one

    @classmethod
    def of_file(cls, descriptor: Descriptor, diff_id: Digest, file: IO[bytes]) -> Layer:
        """The layer whose blob is all of `file` (described by `descriptor`)."""
        return cls(Blob(descriptor, copy=region_copier(file.fileno(), 0, descriptor.size)),
                   diff_id, file)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def region_copier(fd: int, offset: int, size: int) -> Callable[[Sink], None]:
    """What copies `size` bytes of the file `fd` from `offset` into a sink (a blob's `copy`)."""
    return lambda out: copy_region(fd, out, offset, size)


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


class LayerTarget(Protocol):
    """Where write_layer puts a layer's blob: `begin` gives what to write it to, `end` makes the
    Layer of what was written (its descriptor and diff_id), `abandon` drops it."""

    def begin(self) -> Writable: ...
    def end(self, descriptor: Descriptor, diff_id: Digest) -> Layer: ...
    def abandon(self) -> None: ...


class ScratchTarget:
    """A layer in a file without a name in `directory` (None: the temporary directory)."""

    def __init__(self, directory: str | None) -> None:
        self._directory = directory
        self._file: IO[bytes] | None = None

    def begin(self) -> Writable:
        self._file = scratch_file(self._directory)
        return self._file

    def end(self, descriptor: Descriptor, diff_id: Digest) -> Layer:
        assert self._file is not None
        self._file.flush()
        return Layer.of_file(descriptor, diff_id, self._file)

    def abandon(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # a full disk fails the flush again
                self._file.close()


class _Compressor(Protocol):
    def compress(self, data: bytes | memoryview) -> bytes: ...
    def cut(self, key: object = None) -> bytes: ...
    def flush(self) -> bytes: ...
    def close(self) -> None: ...


def _compressor(kind: str, workers: int, premade: Premade | None) -> _Compressor | None:
    """gzip and zstd on `workers` threads, the same bytes for any number (compress.py); None
    for an uncompressed layer. `premade`: zstd frames already made (precompress.py)."""
    if kind == "gzip":
        return ParallelGzip(workers)
    if kind == "zstd":
        return ParallelZstd(workers, premade)
    if kind == "none":
        return None
    raise SlimmerError(f"unknown compression {kind!r} (gzip, zstd or none)")


class BlobWriter:
    """A file-like sink: bytes in are hashed (uncompressed), compressed, hashed again and written
    to `out`. Uncompressed, the blob is the tar: hashed once."""

    def __init__(self, out: Writable, compression: str, workers: int = 1,
                 premade: Premade | None = None) -> None:
        self.compression = compression
        self._compressor = _compressor(compression, workers, premade)
        self._raw = hashlib.sha256()
        self._out = hashlib.sha256() if self._compressor is not None else self._raw
        self._size = 0
        self._file = out

    def write(self, data: bytes | memoryview) -> None:
        self._raw.update(data)
        if self._compressor is None:
            self._file.write(data)
            self._size += len(data)
        else:
            self._emit(self._compressor.compress(data))

    def cut(self, key: object = None) -> None:
        """The writer's frame boundary (compress.py): zstd ends a frame here."""
        if self._compressor is not None:
            self._emit(self._compressor.cut(key))

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.update(data)
            self._file.write(data)
            self._size += len(data)

    def finish(self) -> tuple[Descriptor, Digest]:
        """The blob's descriptor, and the diff_id."""
        if self._compressor is not None:
            self._emit(self._compressor.flush())
        desc = Descriptor(MEDIA_TYPES[self.compression], Digest("sha256", self._out.hexdigest()),
                          self._size)
        return desc, Digest("sha256", self._raw.hexdigest())

    def discard(self) -> None:
        if self._compressor is not None:
            self._compressor.close()


def tar_header(name: str, entry: Entry, mtime: int, link: str | None = None) -> bytes:
    """One tar header with every field set here (PAX only where a name or an extended attribute
    needs it). `link`: write a File as a hard link to that (earlier) name."""
    target, size, uid, gid = "", 0, 0, 0
    if isinstance(entry, Dir):
        kind, mode, uid, gid = tarfile.DIRTYPE, entry.mode, entry.uid, entry.gid
        if not name.endswith("/"):
            name += "/"  # as tarfile does for a directory
    elif isinstance(entry, Symlink):
        kind, mode, target = tarfile.SYMTYPE, 0o777, entry.target
    elif entry.xattrs and link is None:
        return _tarfile_header(name, entry, mtime, link)
    else:
        kind, mode, uid, gid = tarfile.REGTYPE, entry.mode, entry.uid, entry.gid
        if link is None:
            size = entry.size
        else:
            kind, target = tarfile.LNKTYPE, link
    if (len(name) > _NAME or not name.isascii() or len(target) > _NAME or not target.isascii()
            or not (0 <= uid < _ID_END and 0 <= gid < _ID_END and 0 <= size < _NUM_END
                    and 0 <= mtime < _NUM_END) or type(mtime) is not int):
        return _tarfile_header(name, entry, mtime, link)
    return _ustar(name.encode("ascii"), mode, uid, gid, size, mtime, kind, target.encode("ascii"))


# What tarfile's PAX_FORMAT writes as a plain ustar header (no extended header before it):
# ASCII names and link targets of at most 100 characters, ids below 8**7, sizes and times
# below 8**11 (octal fields with a NUL).
_NAME = 100
_ID_END = 8 ** 7
_NUM_END = 8 ** 11
# After the checksum: type, link target, magic "ustar\0" "00", empty user and group names,
# empty device numbers, empty prefix; then zeros up to 512.
_MAGIC = tarfile.POSIX_MAGIC
_TAIL = bytes(32 + 32 + 8 + 8 + 155 + 12)
_MAGIC_SUM = sum(_MAGIC) + 8 * 32  # the magic, and the checksum field counted as spaces


def _ustar(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes,
           target: bytes) -> bytes:
    """The ustar header tarfile.TarInfo.tobuf(PAX_FORMAT) gives for these fields when they
    need no PAX record, built directly (tarfile's path costs ten times as much)."""
    head = name + bytes(100 - len(name)) + b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (
        mode & 0o7777, uid, gid, size, mtime)
    link = kind + target + bytes(100 - len(target))
    checksum = sum(head) + sum(link) + _MAGIC_SUM
    return b"".join((head, b"%06o\0 " % checksum, link, _MAGIC, _TAIL))


def _tarfile_header(name: str, entry: Entry, mtime: int, link: str | None) -> bytes:
    """tarfile's header for what _ustar does not cover (PAX records, numbers out of range)."""
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if isinstance(entry, Dir):
        info.type = tarfile.DIRTYPE
        info.mode = entry.mode
        info.uid, info.gid = entry.uid, entry.gid
    elif isinstance(entry, Symlink):
        info.type = tarfile.SYMTYPE
        info.mode = 0o777
        info.linkname = entry.target
    else:
        info.type = tarfile.REGTYPE if link is None else tarfile.LNKTYPE
        info.mode = entry.mode
        info.size = entry.size if link is None else 0
        info.linkname = link or ""
        info.uid, info.gid = entry.uid, entry.gid
        if link is None:
            info.pax_headers = _xattr_records(entry.xattrs)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _xattr_records(xattrs: tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    """SCHILY.xattr.NAME records, sorted. Values are bytes (a capability is binary): decoded
    with surrogateescape, which tarfile encodes back to the same bytes (marking the header
    hdrcharset=BINARY when they are not UTF-8), as Go's archive/tar reads them."""
    return {f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
            for key, value in sorted(xattrs)}


class TarSink(Protocol):
    """Where write_tar puts the stream. `write` gets views of a buffer that is filled again
    once it returns: it must use (or copy) the bytes before returning. A sink with a `cut(key)`
    method is told where a file of at least compress.BIG bytes begins (key: frame_key) and ends
    (None)."""

    def write(self, data: bytes | memoryview, /) -> object: ...


FrameKey = tuple[bytes, str, tuple[int, ...]]  # (tar header, source, file_identity)


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """What tells that a file is as it was when it was read (its content rewritten, or another
    file put in its place, changes one of them): device, inode, size, mtime and ctime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def tar_name(path: str, entry: Entry) -> str:
    """A tree path's name in the layer: no leading slash, a directory with a trailing one."""
    return path.lstrip("/") + ("/" if isinstance(entry, Dir) else "")


class _Staging:
    """The tar stream gathered in one buffer, reused: file content is read straight into it
    (no new bytes object per read) and the sink gets CHUNK-sized writes, not one per header."""

    def __init__(self, sink: TarSink, size: int = CHUNK) -> None:
        self._sink = sink
        self._cut: Callable[[FrameKey | None], object] | None = getattr(sink, "cut", None)
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._size = size
        self._used = 0

    def put(self, data: bytes) -> None:
        n = len(data)
        if self._used + n > self._size:
            self.flush()
            if n >= self._size:
                self._sink.write(data)
                return
        self._buffer[self._used:self._used + n] = data
        self._used += n

    def read(self, fd: int, most: int, source: str) -> int:
        """Read up to `most` bytes of `fd` (the file `source`) into the buffer: how many (0 at
        the end)."""
        if self._used == self._size:
            self.flush()
        end = min(self._size, self._used + most)
        try:
            got = os.readv(fd, (self._view[self._used:end],))
        except OSError as exc:
            raise FileProblem(f"{source}: cannot read ({exc.strerror})") from None
        self._used += got
        return got

    def flush(self) -> None:
        if self._used:
            self._sink.write(self._view[:self._used])
            self._used = 0

    def cut(self, key: FrameKey | None) -> None:
        """Tell the sink (if it cares) that a large file begins here (`key`) or ends (None)."""
        if self._cut is not None:
            self.flush()
            self._cut(key)


def write_tar(entries: list[tuple[str, Entry]], sink: TarSink, mtime: int,
              progress: Progress | None = None) -> None:
    """Write entries (name without leading slash, entry) as a tar stream to `sink`. A File
    whose node an earlier File had is written as a hard link to the earlier one's name."""
    firsts: dict[str, str] = {}  # node -> the name it was stored under
    for name, entry in entries:
        if isinstance(entry, File) and entry.node is not None:
            firsts.setdefault(entry.node, name)
    total = sum(e.size for n, e in entries if isinstance(e, File) and
                (e.node is None or firsts[e.node] == n))
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    out = _Staging(sink)
    for name, entry in entries:
        first = firsts.get(entry.node) if isinstance(entry, File) and entry.node else None
        link = first if first is not None and first != name else None
        header = tar_header(name, entry, mtime, link)
        if not isinstance(entry, File) or link is not None:
            out.put(header)
        elif entry.data is not None:
            out.put(header)
            out.put(entry.data)
            advance(len(entry.data))  # counted in the total too
            _pad(out, len(entry.data))
        else:
            _copy_file(entry, header, out, advance)
    out.put(bytes(1024))
    out.flush()


def _copy_file(entry: File, header: bytes, out: _Staging, advance: Callable[[int], None]
               ) -> None:
    """A file's header and content; a large one between two cuts (TarSink)."""
    assert entry.source is not None
    try:
        fd = os.open(entry.source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(f"{entry.source}: cannot read ({exc.strerror})") from None
    try:
        big = entry.size >= BIG
        if big:
            out.cut((header, entry.source, file_identity(os.fstat(fd))))
        out.put(header)
        written = 0
        while written < entry.size:
            got = out.read(fd, entry.size - written, entry.source)
            if not got:
                break
            written += got
            advance(got)
        if written != entry.size or out.read(fd, 1, entry.source):
            raise ChangedWhilePacking(f"{entry.source}: file changed while packing")
        _pad(out, written)
        if big:
            out.cut(None)
    finally:
        os.close(fd)


def _pad(out: _Staging, written: int) -> None:
    if written % 512:
        out.put(bytes(512 - written % 512))


def layer_entries(tree: FileTree) -> list[tuple[str, Entry]]:
    """Tar names for a tree: no leading slash, directories with a trailing one."""
    return [(tar_name(path, e), e) for path, e in tree.items()]


def write_layer(tree: FileTree, into: LayerTarget | str | None, compression: str, mtime: int,
                progress: Progress | None = None, workers: int = 1,
                premade: Premade | None = None) -> Layer:
    """Write the tree as one layer blob `into` a target (a directory: a file without a name
    there, ScratchTarget), compressed on `workers` threads (the bytes do not depend on their
    number, nor on which zstd frames were `premade`)."""
    target = ScratchTarget(into) if into is None or isinstance(into, str) else into
    writer = BlobWriter(target.begin(), compression, workers, premade)
    try:
        write_tar(layer_entries(tree), writer, mtime, progress)
        return target.end(*writer.finish())
    except BaseException:
        writer.discard()
        target.abandon()
        raise
