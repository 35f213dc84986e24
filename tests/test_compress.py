"""Layer compression on every core (slimmer/image/compress.py): one valid gzip stream whose bytes
do not depend on the number of threads, nor on how the input is cut into writes, nor on the
CPUs the process may use; zstd the same."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import random
import subprocess
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import zstandard

from slimmer.image.compress import (
    BLOCK,
    FRAME,
    WINDOW,
    ParallelGzip,
    ParallelZstd,
    crc32_combine,
    settings,
    zstd_frames,
)
from tests.support.cli import command, run_process
from tests.support.host import need_tool


def sample(size: int, seed: int = 1) -> bytes:
    """Compressible but not trivial: words from a small vocabulary, with random runs."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 9)) for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(50) if rng.random() < 0.05 else rng.choice(words)
    return bytes(out[:size])


def gzip_of(data: bytes, workers: int, write: int = 1 << 20, block: int = BLOCK) -> bytes:
    """`data` through ParallelGzip, written `write` bytes at a time."""
    packer = ParallelGzip(workers, block)
    parts = [packer.compress(data[i:i + write]) for i in range(0, len(data), write)]
    return b"".join(parts) + packer.flush()


SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + 1, 5 * BLOCK + 12345]


@pytest.mark.parametrize("size", SIZES)
def test_gzip_stream_is_valid_and_the_same_for_any_number_of_threads(size: int) -> None:
    data = sample(size)
    outputs = {gzip_of(data, workers, write) for workers in (1, 2, 3, 8)
               for write in (1, 4096, 1 << 20)} if size < 3 * BLOCK else \
              {gzip_of(data, workers, write) for workers in (1, 2, 4) for write in (777, 1 << 20)}
    assert len(outputs) == 1
    out = outputs.pop()
    assert out[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # fixed header
    assert gzip.decompress(out) == data
    assert zlib.decompress(out, 16 + zlib.MAX_WBITS) == data
    assert int.from_bytes(out[-8:-4], "little") == zlib.crc32(data)
    assert int.from_bytes(out[-4:], "little") == size


def test_gzip_stream_read_by_gzip_and_zcat(tmp_path: Path) -> None:
    need_tool("gzip")
    data = sample(3 * BLOCK + 5)
    path = tmp_path / "layer.gz"
    path.write_bytes(gzip_of(data, 2))
    assert subprocess.run(["gzip", "-t", str(path)], capture_output=True).returncode == 0
    done = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True)
    assert done.stdout == data


@pytest.mark.parametrize("block", [WINDOW, 64 << 10, BLOCK, 1 << 20])
def test_gzip_block_sizes(block: int) -> None:
    data = sample(3 * block + 100, seed=block)
    first = gzip_of(data, 1, 5000, block)
    assert gzip_of(data, 3, 1 << 16, block) == first
    assert gzip.decompress(first) == data


def test_block_size_below_the_window_refused() -> None:
    with pytest.raises(ValueError):
        ParallelGzip(1, WINDOW - 1)


def test_blocks_see_their_predecessor() -> None:
    """The dictionary makes a block that repeats its predecessor nearly free, so the parallel
    stream is about as small as one zlib stream."""
    block = sample(BLOCK, seed=7)
    data = block * 8
    ours = len(gzip_of(data, 2))
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    single = len(deflate.compress(data) + deflate.flush()) + 18
    assert ours <= single * 1.03


def test_crc32_combine_against_zlib() -> None:
    rng = random.Random(3)
    for _ in range(200):
        a = rng.randbytes(rng.randint(0, 5000))
        b = rng.randbytes(rng.choice([0, 1, 7, 4096, rng.randint(0, 300_000)]))
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def zstd_of(data: bytes, workers: int, write: int, cuts: Mapping[int, object],
            premade: Callable[[object, int], bytes | None] | None = None) -> bytes:
    """`data` through ParallelZstd in writes of `write` bytes, cut at the offsets of `cuts`
    (naming the key given there)."""
    packer = ParallelZstd(workers, premade)
    out, at = [], 0
    edges = sorted({*cuts, *range(0, len(data), write), len(data)})
    for start, end in itertools.pairwise(edges):
        if start in cuts:
            out.append(packer.cut(cuts[start]))
        out.append(packer.compress(data[start:end]))
        at = end
    assert at == len(data)
    return b"".join(out) + packer.flush()


def frames_of(stream: bytes) -> list[bytes]:
    """The input of each frame of a zstd stream."""
    found, reader = [], zstandard.ZstdDecompressor()
    while stream:
        size = zstandard.frame_header_size(stream[:18])
        assert size > 0
        obj = reader.decompressobj()
        found.append(obj.decompress(stream))
        stream = obj.unused_data
    return found


ZSTD_CUTS = {0: None, 100_000: "key", 100_000 + FRAME + 7: None, 9 << 20: "other"}


def test_zstd_same_bytes_with_any_threads_and_writes() -> None:
    data = sample(11 << 20, seed=5)  # frames cut by FRAME and by the cuts
    outputs = {zstd_of(data, workers, write, ZSTD_CUTS)
               for workers, write in ((1, 1 << 20), (2, 1 << 20), (2, 12345), (4, 1 << 16))}
    assert len(outputs) == 1
    out = outputs.pop()
    assert zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(
        out) == data
    # A frame ends at each cut and after FRAME bytes: each is the input's own frame.
    pieces = frames_of(out)
    assert [len(p) for p in pieces] == [100_000, FRAME, 7, FRAME, (9 << 20) - 100_000
                                        - 2 * FRAME - 7, (11 << 20) - (9 << 20)]
    assert b"".join(pieces) == data
    assert out == b"".join(zstd_frames().compress(p) for p in pieces)


def test_zstd_takes_premade_frames_where_its_key_was_cut() -> None:
    """A premade frame replaces the one the workers would make (here a level-19 frame, which
    tells them apart) only for the key and number asked; others are compressed."""
    data = sample(6 << 20, seed=9)
    start = 100_000
    asked: list[tuple[object, int]] = []

    def premade(key: object, number: int) -> bytes | None:
        asked.append((key, number))
        if key == "key" and number == 1:
            piece = data[start + FRAME:start + FRAME + 7]
            return zstandard.ZstdCompressor(level=19).compress(piece)
        return None

    cuts = {0: None, start: "key", start + FRAME + 7: None}
    plain = zstd_of(data, 2, 1 << 20, cuts)
    mixed = zstd_of(data, 2, 1 << 20, cuts, premade)
    assert asked == [("key", 0), ("key", 1)]
    assert mixed != plain
    assert frames_of(mixed) == frames_of(plain)
    assert zstd_of(data, 1, 77777, cuts, lambda key, number: None) == plain


def test_zstd_of_nothing_is_one_empty_frame() -> None:
    packer = ParallelZstd(2)
    assert frames_of(packer.flush()) == [b""]


def test_settings_name_what_decides_the_bytes() -> None:
    assert settings("gzip")["block"] == BLOCK
    assert settings("gzip")["zlib"] == zlib.ZLIB_RUNTIME_VERSION
    assert settings("zstd")["zstd"] == zstandard.ZSTD_VERSION
    assert settings("gzip") != settings("gzip", block=2 * BLOCK)


# ---- the image's bytes do not depend on the CPUs --------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_pack_same_bytes_on_one_core_and_on_two(tmp_path: Path, compress: str) -> None:
    """`taskset -c 0` against every CPU of the machine (two here), without the cache: the
    layer is compressed each time. /usr/bin/ffmpeg's closure (many blocks and jobs)."""
    taskset = need_tool("taskset")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    program = "/usr/bin/ffmpeg" if os.path.exists("/usr/bin/ffmpeg") else "/usr/bin/python3"
    digests = []
    for cpus in ("0", ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))):
        out = tmp_path / f"cpus-{cpus}.tar"
        done = subprocess.run([taskset, "-c", cpus, *command("pack", program, "-o", str(out),
                                                               "--compress", compress,
                                                               "--no-cache")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        digests.append(_digest(out))
    assert digests[0] == digests[1]


def test_pack_workers_in_process_give_the_same_image(tmp_path: Path) -> None:
    from slimmer.assemble.options import from_keywords
    from slimmer.assemble.pack import pack

    results = []
    for workers in (1, 2, 5):
        out = tmp_path / f"w{workers}.tar"
        pack(*from_keywords(programs=("/usr/bin/jq",), output=str(out), workers=workers))
        results.append(_digest(out))
    assert len(set(results)) == 1
    assert run_process("verify", str(tmp_path / "w1.tar")).returncode == 0


def test_pack_zstd_same_image_with_frames_made_early(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With two workers, a child compresses the large files' frames during the assembly
    (image/precompress.py); here it is let finish them all, so that the layer is all premade
    frames but the small files': the image is the one a single worker makes (no child)."""
    from slimmer.assemble.options import from_keywords
    from slimmer.assemble.pack import pack
    from slimmer.image import precompress

    made: list[int] = []
    stop = precompress.Precompressor.stop

    def stop_when_done(self: precompress.Precompressor, wait: bool = False) -> None:
        stop(self, wait=True)
        made.append(self.made)

    monkeypatch.setattr(precompress.Precompressor, "stop", stop_when_done)
    program = "/usr/bin/python3"  # libpython and libcrypto: frames of their own
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.tar"
        pack(*from_keywords(programs=(program,), output=str(out), workers=workers,
                            compression="zstd"))
        digests.append(_digest(out))
    assert made and made[0] >= 2  # only the two-worker pack started a child
    assert digests[0] == digests[1]
    assert run_process("verify", str(tmp_path / "w2.tar")).returncode == 0
