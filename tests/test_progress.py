"""Progress on a terminal (slimmer/progress.py, cli/shared.py): one line rewritten in place for
work longer than a second, on stderr when it is a terminal only; --quiet silences it and the
summary, not the warnings."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from slimmer.notices import Notice
from slimmer.progress import Display, line
from tests.support.cli import command
from tests.support.cli import run as slimmer
from tests.support.roots import tiny_root


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_shown_in_the_first_second() -> None:
    out, clock = io.StringIO(), Clock()
    with Display(out, clock, interval=0.0) as show:
        show("resolving", 0, 0)
        clock.now += 0.5
        show("compressing", 10, 100)
    assert out.getvalue() == ""


def test_line_after_a_second_with_rate_then_cleared() -> None:
    out, clock = io.StringIO(), Clock()
    with Display(out, clock, interval=0.0) as show:
        show("resolving", 0, 0)
        clock.now += 1.5
        show("resolving", 0, 0)
        assert out.getvalue().endswith("\r\x1b[Kresolving... 2s")
        show("compressing", 0, 200_000_000)
        clock.now += 2.0
        show("compressing", 100_000_000, 200_000_000)
        assert out.getvalue().endswith(
            "\r\x1b[Kcompressing 100.0/200.0 MB (50%), 50.0 MB/s")
    assert out.getvalue().endswith("\r\x1b[K")  # the line cleared for what follows


def test_redrawn_while_a_stage_gives_no_news() -> None:
    """Resolving reports once: the display's own thread redraws the line (elapsed time)."""
    out = io.StringIO()
    with Display(out, time.monotonic, delay=0.0, interval=0.01) as show:
        show("resolving", 0, 0)
        deadline = time.monotonic() + 5
        while out.getvalue().count("resolving") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert out.getvalue().count("resolving") >= 3


def test_line_format() -> None:
    assert line("reading", 0, 0, 3.4) == "reading... 3s"
    assert line("compressing", 5_000_000, 10_000_000, 0.0) == \
        "compressing 5.0/10.0 MB (50%), 0.0 MB/s"


# ---- the command line: a terminal, a pipe, --quiet ---------------------------------------

PROGRAM = "/usr/bin/ffmpeg" if os.path.exists("/usr/bin/ffmpeg") else "/usr/bin/python3"


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run slimmer with stderr on a pseudo-terminal, stdout on a pipe: (status, stdout,
    what the terminal got)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=follower, cwd=cwd)
    os.close(follower)
    seen = bytearray()
    while True:
        ready, _, _ = select.select([leader], [], [], 600)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    return proc.returncode, out.decode(), seen.decode("utf-8", "replace")


def test_progress_on_a_terminal(tmp_path: Path) -> None:
    """A pack longer than a second (a large program, nothing cached) shows its stages."""
    code, out, terminal = _on_a_terminal(
        ["pack", PROGRAM, "-o", str(tmp_path / "a.tar"), "--no-cache"], tmp_path)
    assert code == 0, terminal
    assert "compressing " in terminal and " MB/s" in terminal
    # cleared after its last redraw, before anything else is printed (ffmpeg's warnings: the
    # terminal shows each of their newlines as \r\n)
    after = terminal[terminal.rindex(" MB/s"):]
    assert "\r\x1b[K" in after
    assert "compressing" not in after.split("\r\x1b[K", 1)[1]
    assert out.startswith(f"wrote {tmp_path / 'a.tar'}")


def test_nothing_extra_on_a_pipe(tmp_path: Path) -> None:
    done = subprocess.run(command("pack", PROGRAM, "-o", str(tmp_path / "a.tar"),
                                  "--no-cache"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "compressing" not in done.stderr
    assert done.stdout.startswith("wrote ")


def test_quiet_on_a_terminal(tmp_path: Path) -> None:
    code, out, terminal = _on_a_terminal(
        ["pack", PROGRAM, "-o", str(tmp_path / "a.tar"), "--no-cache", "--quiet"], tmp_path)
    assert code == 0, terminal
    # no progress line (a warning's newline shows as \r\n on a terminal: not a redraw)
    assert "compressing" not in terminal and "\x1b[K" not in terminal
    assert out == ""


def test_quiet_keeps_warnings_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build's warnings (one added to a real pack's result here) are printed with --quiet;
    the summary is not; an error still is."""
    import slimmer.assemble.pack as pack_module

    real = pack_module.pack

    def with_a_warning(*args: Any, **kwargs: Any) -> pack_module.PackResult:
        result = real(*args, **kwargs)
        notice = Notice("dlopen-missing", "libgcc_s.so.1", "not found in the root (test)",
                        "--add it, or --without the rule")
        return replace(result, warnings=(notice,))

    monkeypatch.setattr(pack_module, "pack", with_a_warning)
    root = tiny_root(tmp_path)
    done = slimmer("pack", "/bin/hello", "--root", str(root), "-o", str(tmp_path / "a.tar"),
                   "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ("warning: libgcc_s.so.1: not found in the root (test); --add it, "
                           "or --without the rule\n")
    loud = slimmer("pack", "/bin/hello", "--root", str(root), "-o", str(tmp_path / "b.tar"))
    assert loud.stdout.startswith("wrote ") and loud.stderr == done.stderr
    failed = slimmer("pack", "/bin/nothing", "--root", str(root), "-o",
                     str(tmp_path / "c.tar"), "--quiet")
    assert failed.returncode == 1 and failed.stderr.startswith("error: /bin/nothing")
