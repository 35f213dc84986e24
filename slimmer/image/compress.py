"""Layer compression on every core, with bytes that never depend on the number of cores.

gzip, the way pigz does it: the input is cut into fixed-size blocks (BLOCK bytes, counted from
the start of the stream, whatever the sizes of the writes), each block is deflated on its own at
level 6 with the previous block's last 32 KiB as its dictionary and ends with a sync flush (an
empty stored block that brings the stream to a byte boundary), and the stream ends with an empty
final block. The pieces joined are ONE standard raw deflate stream, written with a fixed gzip
header (no name, mtime 0, OS 255) and the CRC32 of the whole input, combined from the blocks'
CRCs (crc32_combine, in Python: the GF(2) method of zlib's crc32.c). Each block's bytes depend
only on the block and its predecessor's tail, so a block is the same whichever thread deflates
it and whenever: zlib releases the GIL, and threads give real parallelism. At most 2 blocks per
worker are in flight, so memory does not grow with the layer.

zstd, the same way: the stream is a sequence of independent zstd frames (RFC 8878 allows any
number, and every engine's reader reads on across them), each compressed on its own at level 3 on
one thread, with its content size and checksum. A frame ends after FRAME bytes of input, or
earlier where the writer cuts the stream (`cut`): the layer writer cuts before and after every
file of at least BIG bytes, so that the frames of such a file depend only on its tar header and
its content, whatever comes before it. Those frames can then be compressed before the layer is
written (precompress.py compresses them while the files are still being chosen) and dropped into
the stream (`premade`). Frames are compressed on `workers` threads (zstd releases the GIL) and
written in order: the bytes never depend on the number of threads or on what was premade.

The settings that decide the bytes are in `settings()`: the layer cache keys its entries by them.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard

GZIP_LEVEL = 6
ZSTD_LEVEL = 3
BLOCK = 128 << 10  # gzip input block: pigz's default
WINDOW = 32 << 10  # deflate's window: the dictionary a block gets from its predecessor
FRAME = 4 << 20  # zstd: the most input a frame holds
BIG = 1 << 20  # zstd: a file this large begins frames of its own (the layer writer's cuts)
FORMAT = 2  # bumped whenever the bytes for the same input and settings change

_GZIP_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff"
_POLY = 0xEDB88320  # CRC-32, reflected


def settings(kind: str, block: int = BLOCK) -> dict[str, object]:
    """Everything the compressed bytes of a given input depend on."""
    if kind == "gzip":
        return {"format": FORMAT, "compression": "gzip", "level": GZIP_LEVEL, "block": block,
                "zlib": zlib.ZLIB_RUNTIME_VERSION}
    if kind == "zstd":
        return {"format": FORMAT, "compression": "zstd", "level": ZSTD_LEVEL,
                "frame": FRAME, "big": BIG, "zstd": zstandard.ZSTD_VERSION}
    return {"format": FORMAT, "compression": kind}


# ---- CRC-32 combination ---------------------------------------------------------------------


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (bit-reflected, as zlib's multmodp)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    table, p = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return tuple(table)


_X2N = _x2n_table()  # x^(2^n) modulo the polynomial: a constant


def _x2nmodp(n: int, k: int) -> int:
    """x^(n * 2^k) modulo the polynomial."""
    p = 1 << 31  # x^0
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A + B from crc32(A), crc32(B) and len(B)."""
    return _multmodp(_x2nmodp(len2, 3), crc1) ^ crc2


# ---- gzip on every core ---------------------------------------------------------------------


def _deflate_block(block: bytes | memoryview, dictionary: bytes) -> tuple[bytes, int]:
    """One block: raw deflate at level 6 primed with `dictionary`, ending on a byte boundary
    (sync flush), and its CRC-32. Runs in a worker thread."""
    deflate = (zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8,
                                zlib.Z_DEFAULT_STRATEGY, dictionary) if dictionary else
               zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8,
                                zlib.Z_DEFAULT_STRATEGY))
    return deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH), zlib.crc32(block)


# The end of the deflate stream: an empty final block with fixed codes (what zlib's
# flush(Z_FINISH) writes after a sync flush).
_FINAL_BLOCK = b"\x03\x00"


class ParallelGzip:
    """compress(data) -> the bytes ready so far, flush() -> the rest; one gzip stream whose
    bytes depend only on the input and `block` (not on `workers`, nor on how the input was cut
    into writes). `close` (or flush) stops the workers."""

    def __init__(self, workers: int = 1, block: int = BLOCK) -> None:
        if block < WINDOW:
            raise ValueError(f"block size {block} below the deflate window ({WINDOW})")
        self._block = block
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="slimmer-gzip")
        self._limit = 2 * max(1, workers)
        self._pending: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        self._buffer = bytearray()
        self._tail = b""  # the last WINDOW bytes of the previous block
        self._crc = 0
        self._size = 0
        self._header = _GZIP_HEADER

    def compress(self, data: bytes | memoryview) -> bytes:
        if type(data) is not bytes:  # the workers read it later: it must not change
            data = bytes(data)
        size, start = self._block, 0
        if self._buffer:  # complete the block begun by earlier writes
            start = min(len(data), size - len(self._buffer))
            self._buffer += data[:start]
            if len(self._buffer) < size:
                return self._collect(wait=False)
            self._submit(bytes(self._buffer))
            self._buffer.clear()
        view = memoryview(data)  # whole blocks of `data` go to the workers without a copy
        while len(data) - start >= size:
            self._submit(view[start:start + size])
            start += size
        self._buffer += view[start:]
        return self._collect(wait=False)

    def _submit(self, block: bytes | memoryview) -> None:
        self._pending.append((self._pool.submit(_deflate_block, block, self._tail), len(block)))
        self._tail = bytes(block[-WINDOW:])

    def _collect(self, wait: bool) -> bytes:
        out = [self._header]
        self._header = b""
        pending = self._pending
        while pending and (wait or len(pending) > self._limit or pending[0][0].done()):
            future, length = pending.popleft()
            data, crc = future.result()
            self._crc = crc32_combine(self._crc, crc, length)
            self._size += length
            out.append(data)
        return b"".join(out)

    def cut(self, key: object = None) -> bytes:
        """gzip's blocks do not follow the writer's cuts: nothing changes."""
        return b""

    def flush(self) -> bytes:
        try:
            if self._buffer:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            body = self._collect(wait=True)
        finally:
            self.close()
        return body + _FINAL_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)

    def close(self) -> None:
        """Stop the workers (waiting for the blocks in flight, whose results are dropped)."""
        for future, _ in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


# ---- zstd on every core ---------------------------------------------------------------------


def zstd_frames() -> zstandard.ZstdCompressor:
    """What compresses one frame (`.compress(data)`): level 3, one thread, the content size and
    a checksum in the frame. One per thread: a compressor is not shared."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                    write_content_size=True)


Premade = Callable[[object, int], "bytes | None"]  # (key, frame number) -> the frame, if made


class ParallelZstd:
    """compress(data) -> the bytes ready so far, cut(key) -> the same after ending the current
    frame, flush() -> the rest: independent frames (see the module's docstring) whose bytes
    depend only on the input and where it was cut. `premade(key, n)` may give frame n after the
    cut that named `key`: its input is then counted, not compressed. `close` (or flush) stops
    the workers."""

    def __init__(self, workers: int = 1, premade: Premade | None = None) -> None:
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="slimmer-zstd")
        self._local = threading.local()
        # Frames in flight: room for the writer to pass premade frames while the workers work
        # (at most 16 MiB of input per worker).
        self._limit = 4 * max(1, workers)
        self._pending: deque[tuple[Future[bytes], bool]] = deque()  # (frame, worked on)
        self._working = 0  # frames of `pending` given to the workers (premade ones are not)
        self._buffer = bytearray()
        self._used = 0  # input in the current frame (buffered, or premade and only counted)
        self._premade = premade
        self._key: object = None  # what the last cut named
        self._number = 0  # of the current frame since that cut
        self._ready: bytes | None = None  # the current frame, premade
        self._frames = 0  # frames ended so far

    def compress(self, data: bytes | memoryview) -> bytes:
        view, start = memoryview(data), 0
        while start < len(view):
            if self._used == 0:
                self._begin()
            take = min(len(view) - start, FRAME - self._used)
            if self._ready is None:
                self._buffer += view[start:start + take]
            self._used += take
            start += take
            if self._used == FRAME:
                self._end()
                self._number += 1
        return self._collect(wait=False)

    def cut(self, key: object = None) -> bytes:
        """End the current frame (if it holds anything); the frames from here on are `key`'s."""
        if self._used:
            self._end()
        self._key, self._number = key, 0
        return self._collect(wait=False)

    def _begin(self) -> None:
        self._ready = (self._premade(self._key, self._number)
                       if self._key is not None and self._premade is not None else None)

    def _end(self) -> None:
        if self._ready is not None:
            done: Future[bytes] = Future()
            done.set_result(self._ready)
            self._pending.append((done, False))
            self._ready = None
        else:
            # The buffer itself goes to the worker (no copy); the next frame gets a new one.
            self._pending.append((self._pool.submit(self._frame, self._buffer), True))
            self._working += 1
            self._buffer = bytearray()
        self._used = 0
        self._frames += 1

    def _frame(self, data: bytearray) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstd_frames()
        return compressor.compress(data)

    def _collect(self, wait: bool) -> bytes:
        out = []
        pending = self._pending
        while pending and (wait or self._working > self._limit or pending[0][0].done()):
            future, worked = pending.popleft()
            out.append(future.result())
            self._working -= worked
        return b"".join(out)

    def flush(self) -> bytes:
        try:
            if self._used or not self._frames:  # an empty input is one empty frame
                self._end()
            return self._collect(wait=True)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers (waiting for the frames in flight, whose results are dropped)."""
        for future, _ in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
