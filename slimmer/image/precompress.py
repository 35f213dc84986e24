"""Compressing the large files' zstd frames while the rest of the image is still being chosen.

A zstd layer is a run of independent frames, and a file of at least compress.BIG bytes has
frames of its own (compress.py): their bytes depend only on the file's tar header and content.
Most of a program's bytes are in such files (its libraries), which are known early, long before
the evidence and runtime steps have chosen the rest. `Precompressor.start` forks a child process
that compresses those frames, one thread, on the core the assembly leaves idle, into a file
without a name; `stop` (when the layer is about to be written) kills it and keeps the frames it
finished. A thread would need the GIL between its reads and compressions, and took more from
the assembly than it saved (docs/benchmarks.md); a process takes nothing.

The layer writer uses a premade frame only under the same key (frame_key: the same header, the
same source, the same file identity when the writer opened it) and number, so the image's bytes
never depend on what the child finished: a file changed or replaced since is compressed again.
The child never outlives its parent: it checks between frames that the parent is the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from slimmer.image.compress import BIG, FRAME, zstd_frames
from slimmer.image.layer import FrameKey, file_identity, tar_header, tar_name
from slimmer.outputs import scratch_file
from slimmer.tree import File, FileTree


@dataclass(frozen=True, slots=True)
class Candidate:
    header: bytes  # the tar header the layer will give it
    source: str
    size: int


def candidates(tree: FileTree, mtime: int) -> list[Candidate]:
    """The files whose frames are worth making early: large regular files read from a source,
    not linked to another entry (a hard link's header depends on which name comes first)."""
    found = [Candidate(tar_header(tar_name(path, entry), entry, mtime), entry.source, entry.size)
             for path, entry in tree.items()
             if isinstance(entry, File) and entry.source is not None and entry.node is None
             and entry.size >= BIG]
    return [c for c in found if len(c.header) < FRAME]


class Precompressor:
    """A child process making the frames of `candidates`; `stop` gives those it finished."""

    def __init__(self, pid: int, items: list[Candidate], frames: int, records: int) -> None:
        self._pid: int | None = pid
        self._items = items
        self._frames = frames  # fds of two files without a name: the frames, and one line each
        self._records = records
        self._made: dict[tuple[object, int], tuple[int, int]] = {}  # (key, number) -> place

    @classmethod
    def start(cls, items: list[Candidate], directory: str | None) -> Precompressor | None:
        """Fork the child (None: nothing to do). Other threads may run (the progress display's
        ticker): the child has only the forking one, and takes no lock they might hold (no
        output but its two files, no logging, no import): file reads and writes, and zstd on
        its own thread."""
        if not items:
            return None
        fds: list[int] = []
        parent = os.getpid()
        try:
            fds += [_scratch_fd(directory)]
            fds += [_scratch_fd(directory)]
            pid = os.fork()
        except OSError:  # a directory that takes no file, no memory, no process left under
            for fd in fds:  # the limit: the layer writer does it all
                os.close(fd)
            return None
        frames_fd, records_fd = fds
        if pid == 0:  # the child: never returns
            status = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _make(items, frames_fd, records_fd, parent)
            except BaseException:  # whatever it is: the parent carries on without it
                status = 1
            os._exit(status)
        return cls(pid, items, frames_fd, records_fd)

    def stop(self, wait: bool = False) -> None:
        """End the child now (`wait`: once it has made every frame); the frames it finished
        become available to `premade`."""
        if self._pid is None:
            return
        if not wait:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # reaped already (SIGCHLD ignored)
            os.waitpid(self._pid, 0)
        self._pid = None
        size = os.fstat(self._records).st_size
        text = os.pread(self._records, size, 0).decode("ascii", "replace")
        for line in text.split("\n")[:-1]:  # a last line without its newline is unfinished
            index, number, offset, length, *identity = (int(x) for x in line.split())
            item = self._items[index]
            key: FrameKey = (item.header, item.source, tuple(identity))
            self._made[(key, number)] = (offset, length)

    def premade(self, key: object, number: int) -> bytes | None:
        """Frame `number` of the large file `key` (layer.FrameKey), if the child made it."""
        found = self._made.get((key, number))
        if found is None:
            return None
        offset, length = found
        data = os.pread(self._frames, length, offset)
        return data if len(data) == length else None

    @property
    def made(self) -> int:
        """How many frames the child finished."""
        return len(self._made)

    def close(self) -> None:
        self.stop()
        for fd in (self._frames, self._records):
            with contextlib.suppress(OSError):
                os.close(fd)


def _scratch_fd(directory: str | None) -> int:
    """The descriptor of a new file without a name in `directory`."""
    with scratch_file(directory) as file:
        return os.dup(file.fileno())


def _make(items: list[Candidate], frames: int, records: int, parent: int) -> None:
    """The child's work: the frames of every item, in `spread` order, each appended to `frames`
    and then recorded in `records`."""
    compressor = zstd_frames()
    offset = 0
    for index in spread(len(items)):
        item = items[index]
        try:
            fd = os.open(item.source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != item.size:
                continue
            identity = " ".join(str(n) for n in file_identity(st))
            for number, piece in enumerate(_pieces(fd, item.header, item.size)):
                if os.getppid() != parent:
                    return
                frame = compressor.compress(piece)
                _write_all(frames, frame, offset)
                os.write(records, f"{index} {number} {offset} {len(frame)} {identity}\n"
                         .encode())
                offset += len(frame)
        except _Changed:
            continue
        finally:
            os.close(fd)


def spread(count: int) -> list[int]:
    """0 .. count-1 in bit-reversed order (0, 4, 2, 6, 1, 5, 3, 7 for 8): whenever the child is
    stopped, the files it finished are spread over the layer, and the layer writer passes
    their frames while its workers compress the others, rather than at the end, alone."""
    bits = max(1, (count - 1).bit_length())
    return sorted(range(count), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2))


class _Changed(Exception):
    """The file is shorter than it was: its frames are left to the layer writer."""


def _pieces(fd: int, header: bytes, size: int) -> Iterator[bytes]:
    """The tar stream of one file (header, content, padding) cut every FRAME bytes, as the
    zstd writer cuts it after the cut before the header."""
    total = len(header) + size + (-size % 512)
    piece, read, made = bytearray(header), 0, 0
    while made < total:
        want = min(FRAME, total - made)
        while len(piece) < want:
            if read < size:
                chunk = os.read(fd, min(want - len(piece), size - read))
                if not chunk:
                    raise _Changed
                piece += chunk
                read += len(chunk)
            else:
                piece += bytes(want - len(piece))  # the padding
        yield bytes(piece)
        made += want
        piece = bytearray()


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
