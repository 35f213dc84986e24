"""A Docker daemon of our own in a fresh directory (data root, exec root, socket, and the
containerd it manages), stopped by the pid we started and its mounts and directory removed at
the end. Shared by the e2e tests' `docker` fixture and bench/bench_startup.py; no pytest here."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DockerdFailed(Exception):
    """dockerd did not answer in time; the message is the tail of its log."""


@contextmanager
def private_dockerd(dockerd: str, client: str,
                    prefix: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(directory, the client's environment) of a running private dockerd."""
    directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # socket paths are short
    env = {**os.environ, "DOCKER_HOST": f"unix://{directory}/docker.sock"}
    env.pop("DOCKER_CONTEXT", None)
    log = open(f"{directory}/dockerd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [dockerd, "--data-root", f"{directory}/root", "--exec-root", f"{directory}/exec",
         "-H", env["DOCKER_HOST"], "--pidfile", f"{directory}/docker.pid",
         "--iptables=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not _wait_for(60, [client, "version"], env, proc):
            log.flush()
            tail = Path(f"{directory}/dockerd.log").read_text(errors="replace")[-2000:]
            raise DockerdFailed(f"dockerd did not start:\n{tail}")
        yield directory, env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        unmount_below(directory)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for(seconds: float, probe: list[str], env: dict[str, str],
              proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if subprocess.run(probe, capture_output=True, env=env).returncode == 0:
            return True
        time.sleep(0.3)
    return False


def unmount_below(directory: str) -> None:
    """Lazily unmount whatever an engine left mounted under `directory`, deepest first."""
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1] for line in fh]
    for mount in sorted((m for m in mounts if m.startswith(directory + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)
