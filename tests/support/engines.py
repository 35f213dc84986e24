"""Real container engines for end-to-end tests, each private to the test session.

A Docker daemon is started here with its own data root, exec root and socket (and the
containerd it manages); podman gets its own storage directories. Everything is stopped by the
pid we started and removed at the end; no engine we did not start is touched. In CI a missing
engine is a failure, elsewhere a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.dockerd import DockerdFailed, private_dockerd, unmount_below
from tests.support.host import need_tool

PODMAN_RUN = ["--runtime", "runc", "--ulimit", "nofile=20000:20000",
              "--ulimit", "nproc=32768:32768", "--network", "none"]


@dataclass(frozen=True)
class Docker:
    directory: str
    docker: str

    @property
    def host(self) -> str:
        return f"unix://{self.directory}/docker.sock"

    @property
    def containerd_socket(self) -> str:
        return f"{self.directory}/exec/containerd/containerd.sock"

    def run(self, *args: str, input: bytes | None = None, check: bool = True,
            config: Path | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[bytes]:
        """The docker client on this daemon; `config`: its DOCKER_CONFIG (credentials);
        `env`: more variables (DOCKER_BUILDKIT=0 for the classic builder)."""
        env = {**os.environ, **(env or {}), "DOCKER_HOST": self.host}
        env.pop("DOCKER_CONTEXT", None)
        if config is not None:
            env["DOCKER_CONFIG"] = str(config)
        done = subprocess.run([self.docker, *args], input=input, capture_output=True, env=env,
                              timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr.decode()}")
        return done

    def load(self, archive: Path) -> str:
        out = self.run("load", "-i", str(archive)).stdout.decode()
        assert "Loaded image" in out, out
        return out.split("Loaded image:")[-1].strip()

    @contextmanager
    def loaded(self, archive: Path) -> Iterator[str]:
        """Load an archive; yield its tag; remove the image again."""
        tag = self.load(archive)
        try:
            yield tag
        finally:
            self.run("rmi", tag, check=False)

    def container(self, image: str, *args: str, input: bytes = b"") -> bytes:
        done = self.run("run", "--rm", "-i", "--network", "none", image, *args, input=input,
                        check=False)
        assert done.returncode == 0, (f"{image} {args} exited {done.returncode}: "
                                      f"{done.stderr.decode()}")
        return done.stdout


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    dockerd = need_tool("dockerd")
    client = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else need_tool("docker")
    try:
        with private_dockerd(dockerd, client, "slimmer-dk-") as (directory, _env):
            yield Docker(directory, client)
    except DockerdFailed as exc:
        pytest.fail(str(exc))


@dataclass(frozen=True)
class Podman:
    directory: str
    podman: str

    def cmd(self, *args: str) -> list[str]:
        return [self.podman, "--root", f"{self.directory}/root", "--runroot",
                f"{self.directory}/run", "--storage-driver", "vfs", "--cgroup-manager",
                "cgroupfs", "--events-backend", "none", *args]

    def run(self, *args: str, input: bytes | None = None) -> bytes:
        done = subprocess.run(self.cmd(*args), input=input, capture_output=True, timeout=300)
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr.decode()}"
        return done.stdout


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    binary = need_tool("podman")
    need_tool("runc")
    directory = tempfile.mkdtemp(prefix="slimmer-pd-", dir="/tmp")
    engine = Podman(directory, binary)
    try:
        yield engine
    finally:
        subprocess.run(engine.cmd("rm", "-af"), capture_output=True)
        subprocess.run(engine.cmd("rmi", "-af"), capture_output=True)
        unmount_below(directory)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def ctr_namespace(docker: Docker, prefix: str = "slimmer") -> Iterator[list[str]]:
    """A ctr command line on the containerd of the test's Docker, in a namespace of its own;
    the namespace's images and the namespace are removed at the end."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    base = [need_tool("ctr"), "--address", docker.containerd_socket, "--namespace", namespace]
    try:
        yield base
    finally:
        names = subprocess.run([*base, "images", "ls", "-q"], capture_output=True,
                               text=True).stdout.split()
        if names:
            subprocess.run([*base, "images", "rm", *names], capture_output=True)
        subprocess.run([*base, "namespaces", "rm", namespace], capture_output=True)
