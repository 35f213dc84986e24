"""Running slimmer as its user does, and checking the one line it prints when it refuses.

`run` calls `slimmer.cli.main` in this process (no interpreter start-up: most tests check a
library-level result, what is written and what is said); `run_process` starts
`python -m slimmer` for the tests where the process itself is under test (signals, exit status
of the console entry point, pipes and /dev/stdout, the environment). Both answer a
`subprocess.CompletedProcess`, so a test reads `returncode`, `stdout` and `stderr` either way.
"""

from __future__ import annotations

import contextlib
import gc
import io
import subprocess
import sys
from pathlib import Path

from slimmer.cli import main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`slimmer ARGS` in-process, its stdout, stderr and exit status captured. An exception
    that is not a SlimmerError is not caught: it fails the test with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    threshold = gc.get_threshold()  # main tunes the collector for a short-lived process
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            code = main(list(args))
        except SystemExit as stop:  # argparse: a usage error, --help, --version
            code = _exit_status(stop)
        finally:
            gc.set_threshold(*threshold)
    return subprocess.CompletedProcess(["slimmer", *args], code, out.getvalue(), err.getvalue())


def _exit_status(stop: SystemExit) -> int:
    if stop.code is None or isinstance(stop.code, int):
        return stop.code or 0
    print(stop.code, file=sys.stderr)  # what the interpreter does with a message
    return 1


def command(*args: str) -> list[str]:
    """The command line of `slimmer ARGS` in a process of its own (for Popen)."""
    return [sys.executable, "-m", "slimmer", *args]


def run_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m slimmer ARGS` in a process of its own (text output); `timeout` for a run
    that could hang (a FIFO read by mistake) and must not take the test session with it."""
    return subprocess.run(command(*args), capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def run_process_bytes(*args: str) -> subprocess.CompletedProcess[bytes]:
    """`python -m slimmer ARGS` in a process of its own, its output as bytes (an archive
    written to stdout)."""
    return subprocess.run(command(*args), capture_output=True)


def error_line(done: subprocess.CompletedProcess[str], *words: str, hint: bool = False) -> str:
    """The one line of a refusal: exit status 1, no traceback, stderr exactly one `error: `
    line (followed by `hint: ` lines only where `hint` allows them) that names each of
    `words`. Answers that line."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), done.stderr
    rest = lines[1:]
    assert (all(line.startswith("hint: ") for line in rest) if hint else not rest), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]

