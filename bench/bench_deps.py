"""Benchmark of the ELF reader and the resolver (docs/benchmarks.md explains the figures).

Run from the project root:

    python -m bench.bench_deps [--quick] [--out FILE]

Three measurements, every contender measured in the same run, interleaved, medians of
time.perf_counter() samples:

1. reading the loader facts of one ELF file: slimmer.loader.elf.read_elf vs pyelftools vs LIEF;
2. `slimmer deps --json` over every dynamic program in /usr/bin and /usr/sbin in one process
   vs the real loader (`ld.so --list`) run once per program;
3. `slimmer deps /usr/bin/ffmpeg` vs pax-utils' `lddtree /usr/bin/ffmpeg`, both full CLIs.

2 and 3 also time Resolver.closure inside this process (no interpreter start-up), and 3 the
start-up floor of the CLI (`slimmer deps /usr/bin/true`), to show where the time goes.

Progress goes to stderr; the markdown report goes to stdout or to --out.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, NamedTuple

import lief
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from slimmer import Resolver, SysRoot
from slimmer.errors import SlimmerError
from slimmer.loader.elf import fast_scan, read_elf, read_elf_python

LOADER = "/lib64/ld-linux-x86-64.so.2"
PROGRAM_DIRS = ("/usr/bin", "/usr/sbin")
TREE_TARGET = "/usr/bin/ffmpeg"
STARTUP_TARGET = "/usr/bin/true"  # one library: what the CLI costs before real work
LIB_DIR = "/usr/lib/x86_64-linux-gnu"
ELF_FILES = (
    "/lib/x86_64-linux-gnu/libc.so.6",
    f"{LIB_DIR}/libstdc++.so.6",
    f"{LIB_DIR}/libLLVM-15.so.1",
    "/usr/bin/ffmpeg",
)
# The interpreter pax-utils' Debian package is built for (it has python3-pyelftools).
SYSTEM_PYTHON = "/usr/bin/python3"
READERS = ("ours", "ours, Python only", "pyelftools", "lief default", "lief flags off")
OURS = ("ours", "ours, Python only")
LIEF_FLAGS = (
    "parse_relocations",
    "parse_dyn_symbols",
    "parse_symtab_symbols",
    "parse_symbol_versions",
    "parse_notes",
    "parse_overlay",
)


@dataclass(frozen=True)
class Settings:
    """Repetition counts: the full run, or --quick."""

    read_budget: float  # seconds of sampling per ELF file (all readers together)
    read_reps: tuple[int, int]  # (min, max) rounds per ELF file
    batch_reps: int  # runs of each side of benchmark 2
    tree_reps: int  # runs of each side of benchmark 3


FULL = Settings(read_budget=10.0, read_reps=(5, 200), batch_reps=3, tree_reps=7)
QUICK = Settings(read_budget=2.0, read_reps=(3, 30), batch_reps=1, tree_reps=3)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000.0


# --- 1. ELF readers ----------------------------------------------------------------------------


class Facts(NamedTuple):
    """What every reader must extract: the loader-relevant facts of one file."""

    interpreter: str | None
    needed: tuple[str, ...]
    soname: str | None
    rpath: str | None
    runpath: str | None


def read_ours(path: str) -> Facts:
    info = read_elf(path)
    return Facts(info.interpreter, info.needed, info.soname, info.raw_rpath, info.runpath)


def read_ours_python(path: str) -> Facts:
    info = read_elf_python(path, path)
    return Facts(info.interpreter, info.needed, info.soname, info.raw_rpath, info.runpath)


def _pyelftools_dynamic(segment: Any) -> tuple[list[str], dict[str, str]]:
    needed: list[str] = []
    strings: dict[str, str] = {}
    for tag in segment.iter_tags():
        kind = tag.entry.d_tag
        if kind == "DT_NEEDED":
            needed.append(str(tag.needed))
        elif kind in ("DT_SONAME", "DT_RPATH", "DT_RUNPATH"):
            strings.setdefault(kind, str(getattr(tag, kind[3:].lower())))
    return needed, strings


def read_pyelftools(path: str) -> Facts:
    interpreter: str | None = None
    needed: list[str] = []
    strings: dict[str, str] = {}
    with open(path, "rb") as stream:
        for segment in ELFFile(stream).iter_segments():
            if isinstance(segment, InterpSegment):
                interpreter = str(segment.get_interp_name())
            elif segment["p_type"] == "PT_DYNAMIC":
                needed, strings = _pyelftools_dynamic(segment)
    return Facts(interpreter, tuple(needed), strings.get("DT_SONAME"),
                 strings.get("DT_RPATH"), strings.get("DT_RUNPATH"))


def _lief_facts(binary: Any) -> Facts:
    needed: list[str] = []
    strings: dict[str, str] = {}
    for entry in binary.dynamic_entries:
        if isinstance(entry, lief.ELF.DynamicEntryLibrary):
            needed.append(str(entry.name))
        elif isinstance(entry, lief.ELF.DynamicSharedObject):
            strings.setdefault("soname", str(entry.name))
        elif isinstance(entry, lief.ELF.DynamicEntryRpath):
            strings.setdefault("rpath", str(entry.rpath))
        elif isinstance(entry, lief.ELF.DynamicEntryRunPath):
            strings.setdefault("runpath", str(entry.runpath))
    interpreter = str(binary.interpreter) if binary.has_interpreter else None
    return Facts(interpreter, tuple(needed), strings.get("soname"), strings.get("rpath"),
                 strings.get("runpath"))


def lief_config() -> Any:
    """A ParserConfig with every optional part switched off (those this LIEF version has)."""
    config = lief.ELF.ParserConfig()
    for flag in LIEF_FLAGS:
        if hasattr(config, flag):
            setattr(config, flag, False)
    return config


def make_readers() -> dict[str, Callable[[str], Facts]]:
    config = lief_config()
    return {
        "ours": read_ours,
        "ours, Python only": read_ours_python,
        "pyelftools": read_pyelftools,
        "lief default": lambda path: _lief_facts(lief.ELF.parse(path)),
        "lief flags off": lambda path: _lief_facts(lief.ELF.parse(path, config)),
    }


def check_agreement(path: str, readers: dict[str, Callable[[str], Facts]]) -> float:
    """Call every reader once (a warm-up), assert they agree; return the seconds it took."""
    start = time.perf_counter()
    facts = {name: read(path) for name, read in readers.items()}
    elapsed = time.perf_counter() - start
    reference = facts["ours"]
    for name, got in facts.items():
        assert got.needed == reference.needed, f"{path}: {name} DT_NEEDED {got.needed}"
        assert got == reference, f"{path}: {name} read {got}, ours read {reference}"
    return elapsed


def sample_readers(path: str, readers: dict[str, Callable[[str], Facts]],
                   rounds: int) -> dict[str, list[float]]:
    """Time every reader `rounds` times, interleaved, rotating who goes first."""
    names = list(readers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            read = readers[name]
            start = time.perf_counter()
            read(path)
            samples[name].append(time.perf_counter() - start)
    return samples


@dataclass(frozen=True)
class ReadResult:
    path: str
    size: int
    rounds: int
    needed: int
    medians_ms: dict[str, float]

    @property
    def speedup(self) -> float:
        best_other = min(v for k, v in self.medians_ms.items() if k not in OURS)
        return best_other / self.medians_ms["ours"]


def bench_file(path: str, settings: Settings) -> ReadResult:
    readers = make_readers()
    one_round = check_agreement(path, readers)
    low, high = settings.read_reps
    rounds = max(low, min(high, int(settings.read_budget / one_round)))
    log(f"  {path}: {rounds} rounds")
    samples = sample_readers(path, readers, rounds)
    return ReadResult(path, os.path.getsize(path), rounds, len(read_ours(path).needed),
                      {name: median_ms(s) for name, s in samples.items()})


def bench_readers(settings: Settings) -> list[ReadResult]:
    log("1. ELF readers")
    paths = [os.path.realpath(p) for p in ELF_FILES if os.path.exists(p)]
    return [bench_file(path, settings) for path in paths]


# --- Whole commands ------------------------------------------------------------------------------


def interleave(runners: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run each contender `reps` times, alternating who goes first; each returns its seconds."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for i in range(reps):
        for name in order if i % 2 == 0 else order[::-1]:
            samples[name].append(runners[name]())
        log(f"  round {i + 1}: " + ", ".join(f"{n} {s[-1]:.3f} s" for n, s in samples.items()))
    return samples


# --- 2. Every program: slimmer deps --json vs ld.so --list ---------------------------------------


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}


def _dynamic_program(path: str) -> bool:
    try:
        return read_elf(path).interpreter == LOADER
    except SlimmerError:
        return False


def find_programs() -> list[str]:
    """Dynamic x86-64 glibc programs in PROGRAM_DIRS, one path per distinct file."""
    seen: set[str] = set()
    programs: list[str] = []
    for directory in PROGRAM_DIRS:
        for entry in sorted(os.listdir(directory)):
            path = os.path.join(directory, entry)
            real = os.path.realpath(path)
            if real in seen or not os.path.isfile(path) or not _dynamic_program(path):
                continue
            seen.add(real)
            programs.append(path)
    return programs


def slimmer_command(*args: str) -> list[str]:
    """The `slimmer` console script users run, installed beside this Python."""
    script = os.path.join(os.path.dirname(sys.executable), "slimmer")
    if os.path.exists(script):
        return [script, "deps", *args]
    return [sys.executable, "-m", "slimmer", "deps", *args]


# The same command with slimmer.loader.elf's C fast path switched off: what pure Python costs.
PYTHON_ONLY = ("import slimmer.loader.elf; slimmer.loader.elf.fast_scan = None; "
               "from slimmer.cli import run; run()")


def run_slimmer_batch(programs: list[str], python_only: bool = False) -> tuple[float, int, int]:
    """One `slimmer deps --json` over all programs: (seconds, programs listed, with missing)."""
    command = ([sys.executable, "-c", PYTHON_ONLY, "deps", "--json", *programs] if python_only
               else slimmer_command("--json", *programs))
    start = time.perf_counter()
    proc = subprocess.run(command, env=clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    assert proc.returncode in (0, 1), f"slimmer deps exited {proc.returncode}"
    listed = json.loads(proc.stdout)
    return elapsed, len(listed), sum(1 for c in listed if c["missing"])


def run_loader_batch(programs: list[str]) -> tuple[float, int]:
    """`ld.so --list` per program, sequentially: (seconds, programs listed with exit 0)."""
    env = clean_env()
    ok = 0
    start = time.perf_counter()
    for program in programs:
        proc = subprocess.run([LOADER, "--list", program], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, check=False)
        ok += proc.returncode == 0
    return time.perf_counter() - start, ok


def resolve_in_process(programs: list[str]) -> float:
    """The resolver alone, no interpreter start-up: a fresh Resolver (empty caches) per call."""
    start = time.perf_counter()
    resolver = Resolver(SysRoot("/"))
    for program in programs:
        resolver.closure(program)
    return time.perf_counter() - start


@dataclass(frozen=True)
class BatchResult:
    programs: int
    slimmer_listed: int
    slimmer_with_missing: int
    loader_listed: int
    reps: int
    medians_s: dict[str, float]  # "cli", "cli, Python only", "in-process", "ld.so"

    @property
    def ratio(self) -> float:
        return self.medians_s["ld.so"] / self.medians_s["cli"]


def bench_batch(settings: Settings) -> BatchResult:
    log("2. slimmer deps --json vs ld.so --list over every program")
    programs = find_programs()
    log(f"  {len(programs)} programs; warm-up")
    _, listed, with_missing = run_slimmer_batch(programs)
    _, loader_ok = run_loader_batch(programs)
    samples = interleave({"cli": lambda: run_slimmer_batch(programs)[0],
                          "cli, Python only": lambda: run_slimmer_batch(programs, True)[0],
                          "in-process": functools.partial(resolve_in_process, programs),
                          "ld.so": lambda: run_loader_batch(programs)[0]}, settings.batch_reps)
    return BatchResult(len(programs), listed, with_missing, loader_ok, settings.batch_reps,
                       {name: statistics.median(s) for name, s in samples.items()})


# --- 3. One tree: slimmer deps vs lddtree --------------------------------------------------------


def lddtree_command() -> list[str]:
    """lddtree as installed; if its `python3` lacks pyelftools (a pyenv python3 ahead of
    /usr/bin in PATH), the Debian interpreter the package was built for."""
    script = shutil.which("lddtree")
    if script is None:
        raise SystemExit("lddtree (pax-utils) is not installed")
    probe = subprocess.run([script, "/bin/true"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [script]
    return [SYSTEM_PYTHON, script]


def resolved_paths(tree: str) -> set[str]:
    """The resolved paths (`name => path`) of an lddtree-style tree, interpreter included."""
    found: set[str] = set()
    for line in tree.splitlines():
        if "=>" in line:
            found.add(line.split("=>", 1)[1].split()[0].rstrip(")"))
    return found


def run_tree(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(command, env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, check=False, text=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"{command} exited {proc.returncode}"
    return elapsed, proc.stdout


def time_tree(command: list[str]) -> float:
    return run_tree(command)[0]


@dataclass(frozen=True)
class TreeResult:
    lddtree: str
    reps: int
    slimmer_libs: int
    lddtree_libs: int
    same_files: bool
    medians_ms: dict[str, float]  # "cli", "lddtree", "in-process", "start-up"

    @property
    def ratio(self) -> float:
        return self.medians_ms["lddtree"] / self.medians_ms["cli"]


def bench_tree(settings: Settings) -> TreeResult:
    log(f"3. slimmer deps vs lddtree on {TREE_TARGET}")
    lddtree = lddtree_command()
    commands = {"cli": slimmer_command(TREE_TARGET), "lddtree": [*lddtree, TREE_TARGET]}
    outputs = {name: run_tree(cmd)[1] for name, cmd in commands.items()}  # warm-up
    runners: dict[str, Callable[[], float]] = {
        name: functools.partial(time_tree, cmd) for name, cmd in commands.items()}
    runners["in-process"] = functools.partial(resolve_in_process, [TREE_TARGET])
    runners["start-up"] = functools.partial(time_tree, slimmer_command(STARTUP_TARGET))
    samples = interleave(runners, settings.tree_reps)
    ours, theirs = resolved_paths(outputs["cli"]), resolved_paths(outputs["lddtree"])
    return TreeResult(" ".join(lddtree), settings.tree_reps, len(ours), len(theirs),
                      ours == theirs, {name: median_ms(s) for name, s in samples.items()})


# --- Report --------------------------------------------------------------------------------------


def environment(quick: bool) -> list[str]:
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- platform: {platform.platform()}",
        f"- CPUs: {os.cpu_count()}",
        f"- Python: {platform.python_version()} ({sys.executable})",
        f"- pyelftools {version('pyelftools')}, LIEF {version('lief')}",
        f"- slimmer's C fast path for ELF headers (slimmer._elfscan): "
        f"{'built' if fast_scan is not None else 'NOT built: ours = Python only'}",
        f"- mode: {'--quick' if quick else 'full'}",
    ]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def readers_table(results: list[ReadResult]) -> list[str]:
    head = "| file | size | DT_NEEDED | rounds | " + " | ".join(f"{r} (ms)" for r in READERS)
    lines = [head + " | ours vs best other |", "|" + "---|" * (len(READERS) + 5)]
    for r in results:
        cells = " | ".join(f"{r.medians_ms[name]:.3f}" for name in READERS)
        lines.append(f"| `{r.path}` | {_size(r.size)} | {r.needed} | {r.rounds} | {cells} | "
                     f"{r.speedup:.2f}x |")
    return lines


def batch_lines(b: BatchResult) -> list[str]:
    cli, inproc, loader = (b.medians_s[k] for k in ("cli", "in-process", "ld.so"))

    def row(what: str, seconds: float, listed: str) -> str:
        return f"| {what} | {seconds:.2f} | {seconds / b.programs * 1000:.2f} | {listed} |"

    return [
        f"{b.programs} dynamic programs (PT_INTERP {LOADER}) in {' and '.join(PROGRAM_DIRS)}; "
        f"median of {b.reps} run(s) each, interleaved.",
        "",
        "| contender | median (s) | per program (ms) | programs listed |",
        "|---|---|---|---|",
        row("`slimmer deps --json` (one process)", cli,
            f"{b.slimmer_listed} ({b.slimmer_with_missing} with a missing library)"),
        row("the same with the ELF reader in Python only", b.medians_s["cli, Python only"],
            "-"),
        row("`Resolver.closure` in-process (no start-up)", inproc, "-"),
        row(f"`{LOADER} --list` (one per program)", loader, f"{b.loader_listed} (exit 0)"),
        "",
        f"`slimmer deps --json` vs the loader: **{b.ratio:.1f}x** (target: at least 5x: "
        f"{'met' if b.ratio >= 5 else 'NOT met'}); with the ELF reader in Python only: "
        f"{loader / b.medians_s['cli, Python only']:.1f}x; the resolver alone: "
        f"{loader / inproc:.1f}x.",
    ]


def tree_lines(t: TreeResult) -> list[str]:
    ms = t.medians_ms
    return [
        f"Median of {t.reps} runs each, interleaved; the CLI rows include interpreter start-up.",
        "",
        "| contender | median (ms) | libraries (incl. interpreter) |",
        "|---|---|---|",
        f"| `slimmer deps {TREE_TARGET}` | {ms['cli']:.0f} | {t.slimmer_libs} |",
        f"| `{t.lddtree} {TREE_TARGET}` | {ms['lddtree']:.0f} | {t.lddtree_libs} |",
        f"| `Resolver.closure` in-process (no start-up) | {ms['in-process']:.0f} | - |",
        f"| `slimmer deps {STARTUP_TARGET}` (start-up floor) | {ms['start-up']:.0f} "
        "| - |",
        "",
        f"Same set of resolved files: {'yes' if t.same_files else 'NO'}. `slimmer deps` vs "
        f"lddtree: **{t.ratio:.1f}x** (target: at least 3x: {'met' if t.ratio >= 3 else 'NOT met'}"
        f"); the resolver alone: {ms['lddtree'] / ms['in-process']:.1f}x.",
    ]


def report(quick: bool, reads: list[ReadResult], batch: BatchResult, tree: TreeResult) -> str:
    lines = ["## Results", "", *environment(quick), "",
             "### 1. Reading one ELF file (median per call)", "", *readers_table(reads), "",
             "### 2. Every program: `slimmer deps --json` vs the loader", "", *batch_lines(batch),
             "", f"### 3. One tree: `slimmer deps` vs `lddtree` ({TREE_TARGET})", "",
             *tree_lines(tree), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_deps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--out", metavar="FILE", help="write the markdown report to FILE")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    text = report(args.quick, bench_readers(settings), bench_batch(settings),
                  bench_tree(settings))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
        log(f"report written to {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
