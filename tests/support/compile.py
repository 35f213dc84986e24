"""C fixtures compiled by the real compiler: the `cc` fixture and the sources it is given."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.host import need_tool

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
