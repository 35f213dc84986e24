"""Every file slimmer writes goes through here: the image archive, the index archive, --sbom and
--lock; and the layer's scratch file.

What is at the output path decides how it is written:
- nothing, or a regular file: the bytes go to an unnamed file (O_TMPFILE) in the same directory,
  linked in under a random name and renamed over the path only when complete. A failed run (an
  error, ENOSPC, SIGTERM, SIGKILL) leaves the old file as it was and no temporary file (at most,
  after a SIGKILL in the microseconds between link and rename, one `.slimmer-*` file). Where
  O_TMPFILE is not supported, a temporary file made by mkstemp (O_CREAT|O_EXCL|O_NOFOLLOW,
  random name) takes its place. The new file's mode is 0644 whatever the umask.
- a character device or a FIFO: written to in place as a stream (never replaced nor unlinked),
  as `cp` does: `-o /dev/null`, `-o /dev/stdout`, a named pipe with a reader. It is opened at
  once (a FIFO waits for its reader), and gets the bytes when they are complete: they are
  gathered in an unnamed file in the temporary directory first, so that an output is always a
  file its writer may seek in (the archive writer fills in a member's header after its content).
- a symbolic link: followed to the file it points to, which is then written as above in its own
  directory (as `cp` does). A dangling link is refused (as GNU cp does), and so is a link in a
  sticky world-writable directory (/tmp) owned by neither the user nor the directory's owner,
  the kernel's own protected_symlinks rule, which a rename would otherwise bypass.
- a directory, a block device, a socket: refused with one line.

`refuse_overlap` refuses an output that is one of the inputs or another output, before anything
is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from slimmer.errors import FileProblem

OUTPUT_MODE = 0o644  # every new output, whatever the umask: reproducible
TEMP_PREFIX = ".slimmer-"
MAX_LINKS = 40  # the kernel's limit of symbolic links in one lookup
CHUNK = 1 << 20
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000


class OutputProblem(FileProblem):
    """An output path that cannot, or must not, be written."""


class Sink(Protocol):
    """Where bytes are written: an Output, or any binary file."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where an output's bytes go."""

    given: str  # as the user named it: for messages
    path: str  # symbolic links followed
    stream: bool  # a character device or FIFO: written in place


def target(given: str) -> Target:
    """What writing to `given` means (see the module's docstring), or a one-line refusal."""
    path, found = _follow(given)
    if found is None or stat.S_ISREG(found.st_mode):
        return Target(given, path, False)
    if stat.S_ISCHR(found.st_mode) or stat.S_ISFIFO(found.st_mode):
        return Target(given, path, True)
    if stat.S_ISDIR(found.st_mode):
        raise OutputProblem(f"{given}: is a directory")
    raise OutputProblem(f"{given}: is a {_kind(found.st_mode)}: an output is a regular file, "
                        "a character device or a FIFO")


def _follow(given: str) -> tuple[str, os.stat_result | None]:
    """The path the bytes go to, and what is there now (None: nothing)."""
    path = os.path.abspath(given)
    for hops in range(MAX_LINKS):
        directory, name = os.path.split(path)
        directory = os.path.realpath(directory)
        if not os.path.isdir(directory):
            raise OutputProblem(f"{given}: output directory {directory} does not exist")
        path = os.path.join(directory, name)
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            if hops:
                raise OutputProblem(f"{given}: a symbolic link to {path}, which does not exist "
                                    "(slimmer writes through a link only to an existing file)"
                                    ) from None
            return path, None
        if not stat.S_ISLNK(found.st_mode):
            return path, found
        _refuse_planted(given, directory, found)
        with contextlib.suppress(OSError):
            # /dev/stdout -> /proc/self/fd/1 -> "pipe:[123]": a link only the kernel follows.
            end = os.stat(path)
            if stat.S_ISFIFO(end.st_mode) or stat.S_ISCHR(end.st_mode):
                return path, end
        path = os.path.join(directory, os.readlink(path))
    raise OutputProblem(f"{given}: too many levels of symbolic links")


def _refuse_planted(given: str, directory: str, link: os.stat_result) -> None:
    """fs.protected_symlinks: in a sticky world-writable directory, follow only a link owned by
    the user or by the directory's owner."""
    where = os.stat(directory)
    shared = where.st_mode & stat.S_ISVTX and where.st_mode & stat.S_IWOTH
    if shared and link.st_uid not in (os.geteuid(), where.st_uid):
        raise OutputProblem(f"{given}: a symbolic link owned by uid {link.st_uid} in the shared "
                            f"directory {directory}: not followed; name the file itself")


def _kind(mode: int) -> str:
    if stat.S_ISBLK(mode):
        return "block device"
    return "socket" if stat.S_ISSOCK(mode) else "special file"


# ---- writing ------------------------------------------------------------------------------


class Output:
    """An output being written. `commit` puts it in place; `discard` leaves the path as it was.
    Counts what was written (a stream cannot tell)."""

    def __init__(self, where: Target) -> None:
        self.target = where
        self.size = 0
        self._temp: str | None = None  # a named temporary file (the mkstemp fallback)
        self._stream: int | None = None  # the device or FIFO, written at commit
        if where.stream:
            self._stream = _open_stream(where)
            try:
                self._file: IO[bytes] = scratch_file(None)
            except OSError:
                self._close_stream()
                raise
        else:
            fd, self._temp = _unnamed_file(os.path.dirname(where.path))
            self._file = os.fdopen(fd, "w+b")

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self.size += len(data)

    def tell(self) -> int:
        return self.size

    def fileno(self) -> int:
        """The file being written (flush before reading or writing it by descriptor)."""
        return self._file.fileno()

    def flush(self) -> None:
        self._file.flush()

    def truncate(self, size: int) -> None:
        """Drop what was written after the first `size` bytes; writing goes on from there."""
        self._file.flush()
        os.ftruncate(self._file.fileno(), size)
        self._file.seek(size)
        self.size = size

    def commit(self) -> None:
        self._file.flush()
        if self._stream is not None:
            copy_region(self._file.fileno(), _Stream(self._stream))
        else:
            fd = self._file.fileno()
            os.fchmod(fd, OUTPUT_MODE)
            directory = os.path.dirname(self.target.path)
            if self._temp is None:
                self._temp = _link_unnamed(fd, directory) or _copy_named(fd, directory)
            os.replace(self._temp, self.target.path)
            self._temp = None
        self._file.close()
        self._close_stream()

    def _close_stream(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                os.close(self._stream)
            self._stream = None

    def discard(self) -> None:
        with contextlib.suppress(OSError):  # a full disk fails the flush again: closed anyway
            self._file.close()
        self._close_stream()
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)


@contextlib.contextmanager
def writing(given: str) -> Iterator[Output]:
    """Write the output `given` (see the module's docstring): in place when the block ends
    without an exception, untouched otherwise. An OSError becomes a one-line error."""
    where = target(given)
    try:
        out = Output(where)
    except OSError as exc:
        raise OutputProblem(f"{given}: cannot write ({exc.strerror})") from exc
    try:
        yield out
        out.commit()
    except OSError as exc:
        out.discard()
        raise OutputProblem(f"{given}: cannot write ({exc.strerror})") from exc
    except BaseException:
        out.discard()
        raise


def write_file(given: str, data: bytes) -> int:
    """Write `data` as the output `given`; returns its size."""
    with writing(given) as out:
        out.write(data)
    return out.size


def copy_region(fd: int, out: Sink, offset: int = 0, size: int | None = None) -> None:
    """`size` bytes of the file `fd` from `offset` (None: to its end) written to `out`, a
    chunk at a time (read with pread: the file's own position does not move)."""
    end = None if size is None else offset + size
    while end is None or offset < end:
        chunk = os.pread(fd, CHUNK if end is None else min(CHUNK, end - offset), offset)
        if not chunk:
            return
        out.write(chunk)
        offset += len(chunk)


class _Stream:
    """A device or FIFO as a Sink: each write written whole."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes, /) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]


def _open_stream(where: Target) -> int:
    """Open a device or FIFO for writing (a FIFO waits for its reader, as with cp), checking
    that it still is one once open."""
    fd = os.open(where.path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise OutputProblem(f"{where.given}: changed while it was opened; try again")
    return fd


def scratch_file(directory: str | None) -> IO[bytes]:
    """A read-write file without a name, in `directory` (None: the temporary directory): it
    goes away when closed or when the process dies, however it dies."""
    fd, name = _unnamed_file(directory or tempfile.gettempdir())
    if name is not None:
        os.unlink(name)  # mkstemp's file, unlinked at once: the descriptor keeps it
    return os.fdopen(fd, "w+b")


def _unnamed_file(directory: str) -> tuple[int, str | None]:
    """(descriptor, None) of an O_TMPFILE file in `directory`, or (descriptor, name) of a
    mkstemp one where O_TMPFILE is not supported."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            return os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, 0o600), None
        except OSError as exc:  # EISDIR: a kernel before 3.11; EOPNOTSUPP: the file system
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)


def _link_unnamed(fd: int, directory: str) -> str | None:
    """Give the O_TMPFILE file `fd` a random name in `directory` (linkat through /proc, else
    with AT_EMPTY_PATH); None when the system allows neither."""
    for _ in range(100):
        name = os.path.join(directory, TEMP_PREFIX + os.urandom(8).hex())
        try:
            _linkat(fd, name)
            return name
        except FileExistsError:
            continue
        except OSError:
            return None
    raise OutputProblem(f"{directory}: no free temporary name")


def _linkat(fd: int, name: str) -> None:
    try:
        os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # no /proc, or a sandbox that refuses it: AT_EMPTY_PATH (CAP_DAC_READ_SEARCH)
    import ctypes  # only here: rarely needed

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(name), _AT_EMPTY_PATH) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), name)


def _copy_named(fd: int, directory: str) -> str:
    """The last resort: copy the unnamed file into a mkstemp one; returns its name."""
    out_fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(out_fd, "wb") as out:
            copy_region(fd, out)
            os.fchmod(out.fileno(), OUTPUT_MODE)
    except BaseException:
        os.unlink(name)
        raise
    return name


# ---- outputs over inputs --------------------------------------------------------------------

Named = tuple[str, str]  # (what it is for the user: "-o", "--add source", ...; the path)


def refuse_overlap(outputs: Sequence[Named], inputs: Sequence[Named]) -> None:
    """Refuse, before anything is written, an output that is the same file (same normalised
    path, or same device and inode) as an input or as another output, naming both. Each
    output's path is checked as `target` checks it, too."""
    seen: list[tuple[Named, set[str], tuple[int, int] | None]] = []
    for what, given in outputs:
        where = target(given)
        path = os.path.abspath(given)
        names = {path, where.path}
        node = _node(where.path)
        for (other_what, other), other_names, other_node in seen:
            if names & other_names or (node is not None and node == other_node):
                raise OutputProblem(f"{path}: {what} names the same file as {other_what} "
                                    f"{other}: give each output its own path")
        seen.append(((what, path), names, node))
    for what, given in inputs:
        path = os.path.abspath(given)
        node = _node(path)
        for (out_what, out), names, out_node in seen:
            if path in names or (node is not None and node == out_node):
                raise OutputProblem(f"{out}: {out_what} would overwrite the {what} {path}: "
                                    "name another output")


def _node(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino
