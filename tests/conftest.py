"""Shared test helpers: compiling small C fixtures, and the real loader as an oracle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"
HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"


def need_tool(name: str) -> str:
    """The path of a tool the tests need; a failure in CI (where .ci/run installs it), a skip
    elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


Compile = Callable[..., Path]


@pytest.fixture
def cc(tmp_path: Path) -> Compile:
    """Compile C source into `out` (relative to tmp_path unless absolute). Extra args go to
    the compiler, e.g. "-shared", "-Wl,-rpath,/x", "-L...", "-lfoo"."""

    def build(out: str | Path, source: str, *args: str, compiler: str = "gcc") -> Path:
        need_tool(compiler)
        target = Path(out) if Path(out).is_absolute() else tmp_path / out
        target.parent.mkdir(parents=True, exist_ok=True)
        src = target.with_name(target.name + ".c")
        src.write_text(source)
        cmd = [compiler, "-o", str(target), str(src), *args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr}"
        src.unlink()
        return target

    return build


def lib_source(name: str, calls: tuple[str, ...] = ()) -> str:
    """A library defining `int NAME(void)` that calls the given functions."""
    decls = "".join(f"int {c}(void);\n" for c in calls)
    body = " + ".join([*(f"{c}()" for c in calls), "1"])
    return f"{decls}int {name}(void) {{ return {body}; }}\n"


def main_source(calls: tuple[str, ...] = ()) -> str:
    decls = "".join(f"int {c}(void);\n" for c in calls)
    body = " + ".join([*(f"{c}()" for c in calls), "0"])
    return f"#include <stdio.h>\n{decls}int main(void) {{ printf(\"%d\\n\", {body}); return 0; }}\n"


_LIST_LINE = re.compile(r"^\s*(\S+)(?: => (.*?))? \(0x[0-9a-f]+\)$")
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found$")


_FATAL = re.compile(r"error while loading shared libraries: (\S+): cannot open shared object")


def loader_list(program: str | Path, env: dict[str, str] | None = None,
                loader: str = HOST_LOADER) -> list[str]:
    """What the real loader opens for `program`, in its order (test oracle only): paths, and
    `MISSING:name` for names it could not find. The vDSO is left out. glibc's `--list` stops
    at the first library it cannot find, so then the answer is just that `MISSING:name`."""
    return parse_loader_list(subprocess.run([loader, "--list", str(program)],
                                            capture_output=True, text=True, env=env or {}))


def parse_loader_list(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The output of `ld.so --list` (however it was run) as `loader_list` returns it."""
    fatal = _FATAL.search(done.stderr)
    if fatal:
        return [f"MISSING:{fatal.group(1)}"]
    assert done.returncode == 0, done.stderr
    out: list[str] = []
    for line in done.stdout.splitlines():
        miss = _NOT_FOUND.match(line)
        if miss:
            out.append(f"MISSING:{miss.group(1)}")
            continue
        m = _LIST_LINE.match(line)
        if m is None:
            continue
        path = m.group(2) or m.group(1)
        if "/" in path:
            out.append(path)
    return out


def tiny_static_elf(message: bytes) -> bytes:
    """A complete static x86-64 program, made byte by byte (no compiler, so the same bytes on
    every machine): write(1, message) then exit(0)."""
    import struct

    base, code_at = 0x400000, 64 + 56
    code = (b"\xb8\x01\x00\x00\x00"                      # mov eax, 1 (write)
            b"\xbf\x01\x00\x00\x00"                      # mov edi, 1
            b"\x48\x8d\x35" + struct.pack("<i", 16) +    # lea rsi, [rip + 16] -> message
            b"\xba" + struct.pack("<I", len(message)) +  # mov edx, len
            b"\x0f\x05"                                  # syscall
            b"\xb8\x3c\x00\x00\x00"                      # mov eax, 60 (exit)
            b"\x31\xff"                                  # xor edi, edi
            b"\x0f\x05")                                 # syscall
    size = code_at + len(code) + len(message)
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base + code_at, 64, 0, 0, 64, 56,
                                 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + phdr + code + message


# The engine fixtures (a private Docker daemon, podman storage) and the qemu binfmt one live in
# their own modules.
pytest_plugins = ["tests.engines", "tests.roots"]

# Hypothesis (the fuzz targets): "ci" is derandomized, the same examples on every run.
from hypothesis import settings as _hypothesis  # noqa: E402

_hypothesis.register_profile("ci", derandomize=True, database=None, print_blob=True)
_hypothesis.register_profile("dev", print_blob=True)
_hypothesis.load_profile("ci" if os.environ.get("CI") == "true" else "dev")
