"""Benchmark: `slimmer pack /usr/bin/ffmpeg` against `tar -cf - FILES | gzip -6` of the same files.

Both sides run as separate processes, interleaved (the order rotating each round), several
rounds; medians and ratios come from the same run. The tar side gets the image's regular files
(from `slimmer inspect --json`), so it compresses the same bytes, less a few generated ones
(passwd, group, ld.so.cache). Peak memory is the child's maximum resident set (wait4's
ru_maxrss).

Contenders: a cold pack (`--no-cache`) with each compression; a warm repack (the layer cache
filled by one untimed run before the rounds), whose archive must be byte for byte the cold
one's; `tar | gzip -6`, `tar | zstd -3 -T2` (zstd on both cores, as slimmer's) and `tar | cat`.
After the rounds, the gzip layer is compressed again the way slimmer did before it used both
cores (one zlib stream, level 6), for the size comparison.

    python -m bench.bench_pack [--quick] [--program PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from bench.report import publish

# slimmer / the tar pipeline, at most (issue 15)
TARGETS = {"gzip": ("tar -cf - FILES | gzip -6", 0.6),
           "zstd": ("tar -cf - FILES | zstd -3 -T2", 1.5),
           "warm": ("tar -cf - FILES | gzip -6", 0.15)}
SIZE_LIMIT = 1.03  # the gzip layer against one zlib stream of it (slimmer before issue 15)
MEMORY_LIMIT_MB = 150
COLD = "slimmer pack --no-cache"  # gzip
WARM = "slimmer pack (warm cache)"


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    peak_mb: float
    size: int
    cpu: float  # user + system seconds, its reaped children included (a whole pipeline)


def run_measured(command: list[str], output: str) -> Sample:
    """Run `command` (through sh when it is a pipeline), return time, peak RSS and output size."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {stderr}")
    return Sample(elapsed, usage.ru_maxrss / 1024, os.path.getsize(output),
                  usage.ru_utime + usage.ru_stime)


def slimmer_script() -> str:
    script = os.path.join(os.path.dirname(sys.executable), "slimmer")
    return script if os.path.exists(script) else "slimmer"


def files_of(program: str) -> list[str]:
    """The regular files of the image slimmer makes of `program` (loader closure, runtime
    rules, recipe), as `slimmer inspect` lists them: the tar side gets the same bytes."""
    listed = json.loads(subprocess.run([slimmer_script(), "inspect", "--json", program],
                                       capture_output=True, text=True, check=True).stdout)
    return sorted(f["path"] for f in listed["files"]
                  if f["type"] == "file" and os.path.isfile(f["path"]))


def contenders(program: str, files_list: str, work: str) -> dict[str, tuple[list[str], str]]:
    pack = [slimmer_script(), "pack", program, "--quiet"]
    out = {}
    for kind in ("gzip", "zstd", "none"):
        target = f"{work}/slimmer-{kind}.tar"
        name = COLD if kind == "gzip" else f"slimmer pack --compress {kind} --no-cache"
        out[name] = ([*pack, "-o", target, "--compress", kind, "--no-cache"], target)
    out[WARM] = ([*pack, "-o", f"{work}/slimmer-warm.tar", "--cache-dir", f"{work}/cache"],
                 f"{work}/slimmer-warm.tar")
    for filt in ("gzip -6", "zstd -3 -T2 -q -c", "cat"):
        target = f"{work}/tar-{filt.split()[0]}.out"
        pipeline = f"tar -cf - -T {files_list} 2>/dev/null | {filt} > {target}"
        out[f"tar -cf - FILES | {filt.removesuffix(' -q -c')}"] = (["sh", "-c", pipeline],
                                                                   target)
    return out


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Sizes:
    layer: int  # the gzip layer slimmer wrote
    single_stream: int  # the same layer as one zlib stream (before issue 15)


def layer_sizes(archive: str) -> Sizes:
    """The gzip layer of `archive`, and its size when compressed as one zlib stream at level 6
    with a 20-byte gzip frame, as slimmer's writer did before (layer.py's old _Gzip)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        layer_name = json.loads(member.read())[0]["Layers"][0]
        blob = tar.extractfile(layer_name)
        assert blob is not None
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        layer = single = 0
        while chunk := blob.read(1 << 20):
            layer += len(chunk)
            single += len(deflate.compress(inflate.decompress(chunk)))
        single += len(deflate.flush()) + 18  # 10-byte header, CRC32 and size
    return Sizes(layer, single)


def measure(program: str, rounds: int) -> tuple[dict[str, list[Sample]], int, int, Sizes]:
    files = files_of(program)
    total = sum(os.path.getsize(f) for f in files)
    work = tempfile.mkdtemp(prefix="slimmer-bench-")
    try:
        files_list = f"{work}/files"
        with open(files_list, "w") as fh:
            fh.write("\n".join(files) + "\n")
        runs = contenders(program, files_list, work)
        print("filling the layer cache (untimed)", file=sys.stderr)
        run_measured(*runs[WARM])
        names = list(runs)
        samples: dict[str, list[Sample]] = {name: [] for name in names}
        for round_no in range(rounds):
            k = round_no % len(names)
            for name in names[k:] + names[:k]:
                print(f"round {round_no + 1}/{rounds}: {name}", file=sys.stderr)
                samples[name].append(run_measured(*runs[name]))
            if sha256_of(runs[WARM][1]) != sha256_of(runs[COLD][1]):
                raise SystemExit("the warm repack's archive differs from the cold pack's")
        print("compressing the layer as one stream, for the size comparison", file=sys.stderr)
        return samples, len(files), total, layer_sizes(runs[COLD][1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(program: str, samples: dict[str, list[Sample]], files: int, total: int,
           rounds: int, sizes: Sizes, load: tuple[float, float]) -> str:
    def med(name: str) -> float:
        return statistics.median(s.seconds for s in samples[name])

    lines = [
        f"## `slimmer pack {program}` vs tar piped to a compressor",
        "",
        f"- measured: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"zlib {zlib.ZLIB_RUNTIME_VERSION}",
        f"- {files} files, {total / 1e6:.1f} MB; {rounds} round(s), contenders interleaved",
        "",
        f"- load average (1 min) before the rounds {load[0]:.1f}, after {load[1]:.1f}: other "
        "work on the machine takes cores from the threads, and the ratios move towards the "
        "ratios of CPU time",
        "",
        "| contender | median (s) | median CPU (s) | peak memory (MB) | output (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, runs in samples.items():
        peak = max(s.peak_mb for s in runs)
        cpu = statistics.median(s.cpu for s in runs)
        lines.append(f"| `{name}` | {med(name):.2f} | {cpu:.2f} | {peak:.0f} | "
                     f"{runs[0].size / 1e6:.1f} |")
    lines.append("")
    mine = {"gzip": COLD, "zstd": "slimmer pack --compress zstd --no-cache", "warm": WARM}
    for what, (theirs, limit) in TARGETS.items():
        ratio = med(mine[what]) / med(theirs)
        met = "met" if ratio <= limit else "NOT met"
        lines.append(f"- {what}: `{mine[what]}` / `{theirs}` = **{ratio:.2f}x** (target: at "
                     f"most {limit}x: {met})")
    ratio = med("slimmer pack --compress none --no-cache") / med("tar -cf - FILES | cat")
    lines.append(f"- none: slimmer / `tar | cat` = {ratio:.2f}x (information)")
    lines.append("- the warm repack's archive is byte for byte the cold pack's (checked each "
                 "round)")
    growth = sizes.layer / sizes.single_stream
    met = "met" if growth <= SIZE_LIMIT else "NOT met"
    lines.append(f"- gzip layer: {sizes.layer / 1e6:.2f} MB in blocks on every core, "
                 f"{sizes.single_stream / 1e6:.2f} MB as one stream: **{growth:.4f}x** "
                 f"(target: at most {SIZE_LIMIT}x: {met})")
    peak = max(s.peak_mb for name, runs in samples.items() if name.startswith("slimmer")
               for s in runs)
    met = "met" if peak < MEMORY_LIMIT_MB else "NOT met"
    lines.append(f"- slimmer's peak memory: **{peak:.0f} MB** (target: under "
                 f"{MEMORY_LIMIT_MB} MB: {met})")
    return "\n".join(lines) + "\n"


def favour() -> str:
    """A session of its own (with autogroup scheduling, the kernel shares the CPU between
    sessions first, whatever the nice values inside them), weighted as nice -15; inherited by
    every contender. Returns what was done, for the report."""
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()
        with open("/proc/self/autogroup", "w") as fh:
            fh.write("-15")
        os.nice(-15 - os.nice(0))
    except OSError as exc:
        print(f"--favoured: not possible here ({exc.strerror}); measured as it is",
              file=sys.stderr)
        return ""
    return ("run with --favoured: the benchmark's own scheduling group at nice -15, so that "
            "other work on the machine takes little from either side")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    parser.add_argument("--program", default="/usr/bin/ffmpeg")
    parser.add_argument("--out", help="write the markdown report here as well")
    parser.add_argument("--favoured", action="store_true",
                        help="on a machine shared with other work: run the contenders in a "
                             "scheduling group of their own at nice -15 (needs root), so that "
                             "they get the cores as on an idle machine, both sides alike")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 3
    favoured = favour() if args.favoured else ""
    before = os.getloadavg()[0]
    samples, files, total, sizes = measure(args.program, rounds)
    text = report(args.program, samples, files, total, rounds, sizes,
                  (before, os.getloadavg()[0]))
    if favoured:
        text += f"- {favoured}\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
