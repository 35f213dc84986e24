"""Benchmark: `slimmer pack /usr/bin/ffmpeg` against `tar -cf - FILES | gzip -6` of the same files.

Both sides run as separate processes, interleaved, several rounds; medians and ratios come from
the same run. The tar side gets the image's regular files (from `slimmer inspect --json`), so it
compresses the same bytes, less a few generated ones (passwd, group, ld.so.cache). Peak memory
is the child's maximum resident set (wait4's ru_maxrss). zstd (level 3, as slimmer) and no
compression are measured the same way.

    python -m bench.bench_pack [--quick] [--program PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

TARGET_RATIO = 1.3
MEMORY_LIMIT_MB = 150


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    peak_mb: float
    size: int


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
    return Sample(elapsed, usage.ru_maxrss / 1024, os.path.getsize(output))


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
    out = {}
    for kind in ("gzip", "zstd", "none"):
        target = f"{work}/slimmer-{kind}.tar"
        out[f"slimmer pack --compress {kind}"] = (
            [slimmer_script(), "pack", program, "-o", target, "--compress", kind], target)
    shell = {
        "gzip": "gzip -6", "zstd": "zstd -3 -q -c", "none": "cat",
    }
    for kind, filt in shell.items():
        target = f"{work}/tar-{kind}.out"
        pipeline = f"tar -cf - -T {files_list} 2>/dev/null | {filt} > {target}"
        out[f"tar -cf - FILES | {filt}"] = (["sh", "-c", pipeline], target)
    return out


def measure(program: str, rounds: int) -> tuple[dict[str, list[Sample]], int, int]:
    files = files_of(program)
    total = sum(os.path.getsize(f) for f in files)
    work = tempfile.mkdtemp(prefix="slimmer-bench-")
    try:
        files_list = f"{work}/files"
        with open(files_list, "w") as fh:
            fh.write("\n".join(files) + "\n")
        runs = contenders(program, files_list, work)
        samples: dict[str, list[Sample]] = {name: [] for name in runs}
        for round_no in range(rounds):
            for name, (command, target) in runs.items():
                print(f"round {round_no + 1}/{rounds}: {name}", file=sys.stderr)
                samples[name].append(run_measured(command, target))
        return samples, len(files), total
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(program: str, samples: dict[str, list[Sample]], files: int, total: int,
           rounds: int) -> str:
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
        "| contender | median (s) | peak memory (MB) | output (MB) |",
        "|---|---|---|---|",
    ]
    for name, runs in samples.items():
        peak = max(s.peak_mb for s in runs)
        lines.append(f"| `{name}` | {med(name):.2f} | {peak:.0f} | {runs[0].size / 1e6:.1f} |")
    lines.append("")
    pairs = (("gzip", "gzip -6"), ("zstd", "zstd -3 -q -c"), ("none", "cat"))
    for kind, filt in pairs:
        ratio = med(f"slimmer pack --compress {kind}") / med(f"tar -cf - FILES | {filt}")
        note = ""
        if kind == "gzip":
            met = "met" if ratio <= TARGET_RATIO else "NOT met"
            note = f" (target: at most {TARGET_RATIO}x: {met})"
        lines.append(f"- {kind}: slimmer / tar pipeline = **{ratio:.2f}x**{note}")
    peak = max(s.peak_mb for name, runs in samples.items() if name.startswith("slimmer")
               for s in runs)
    met = "met" if peak < MEMORY_LIMIT_MB else "NOT met"
    lines.append(f"- slimmer's peak memory: **{peak:.0f} MB** (target: under "
                 f"{MEMORY_LIMIT_MB} MB: {met})")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    parser.add_argument("--program", default="/usr/bin/ffmpeg")
    parser.add_argument("--out", help="write the markdown report here as well")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 3
    samples, files, total = measure(args.program, rounds)
    text = report(args.program, samples, files, total, rounds)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
