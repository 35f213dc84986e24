"""Reading the small files a user names (recipes, lock files, configs) without surprises: a
FIFO, a device or a directory is refused at once instead of blocking or reading forever, and a
file larger than the limit is refused before it is read into memory."""

from __future__ import annotations

import os
import stat

from slimmer.errors import FileProblem

SMALL_FILE_LIMIT = 16 << 20  # recipes, lock files, config.json: far above any real one


def read_small_file(path: str, what: str, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of regular file `path` (symlinks followed), at most `limit` of them; a
    FileProblem naming `path` and `what` it was given as otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait; regular files ignore it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(f"{path}: cannot read {what} ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise FileProblem(f"{path}: {what} is {kind}")
        if st.st_size > limit:
            raise FileProblem(f"{path}: {what} is {st.st_size} bytes, more than the "
                              f"{limit >> 20} MiB a {what} may have")
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise FileProblem(f"{path}: {what} grew past {limit >> 20} MiB while read")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise FileProblem(f"{path}: cannot read {what} ({exc.strerror})") from None
    finally:
        os.close(fd)
