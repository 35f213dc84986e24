"""Layer compression on every core (slimmer/image/compress.py): one valid gzip stream whose bytes
do not depend on the number of threads, nor on how the input is cut into writes, nor on the
CPUs the process may use; zstd the same."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import subprocess
import zlib
from pathlib import Path

import pytest
import zstandard

from slimmer.image.compress import (
    BLOCK,
    WINDOW,
    ParallelGzip,
    crc32_combine,
    settings,
    zstd_compressor,
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


def test_zstd_same_bytes_with_one_and_two_threads() -> None:
    data = sample(11 << 20, seed=5)  # more than two jobs
    outputs = set()
    for workers, write in ((1, 1 << 20), (2, 1 << 20), (2, 12345), (4, 1 << 16)):
        packer = zstd_compressor(workers)
        parts = [packer.compress(data[i:i + write]) for i in range(0, len(data), write)]
        outputs.add(b"".join(parts) + packer.flush())
    assert len(outputs) == 1
    out = outputs.pop()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == data


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
