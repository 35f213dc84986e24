"""`slimmer slim` on real fat images: a Debian root made by mmdebstrap (cached between runs),
imported into the test's private Docker daemon with an entrypoint, saved, slimmed, and run.
One root holds every package the tests need (one mmdebstrap run, one cache entry)."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.image.explain import read_image
from tests.support.archives import Archive
from tests.support.cli import run as slimmer
from tests.support.engines import Docker
from tests.support.fat import derived_image
from tests.support.host import need_tool
from tests.support.roots import FAT_PACKAGES, mmdebstrap_root

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def fat_root() -> Path:
    """A bookworm root tarball with python3, nginx, curl and PostgreSQL 15 (about 45 s and
    520 MB the first time; PostgreSQL alone brings 300 MB of it: LLVM, ICU, perl, locales)."""
    return mmdebstrap_root("bookworm", FAT_PACKAGES)


@pytest.fixture(scope="session")
def fat_images(docker: Docker, fat_root: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """docker-archive tars of the fat root with three entrypoints."""
    work = tmp_path_factory.mktemp("fat")
    entrypoints = {"python": '["/usr/bin/python3"]',
                   "nginx": '["/usr/sbin/nginx", "-g", "daemon off;"]',
                   "curl": '["curl"]'}
    archives = {}
    tags = []
    for name, entrypoint in entrypoints.items():
        tag = f"slimmer-fat/{name}:{uuid.uuid4().hex[:8]}"
        docker.run("import", "--change", f"ENTRYPOINT {entrypoint}", str(fat_root), tag)
        archives[name] = work / f"{name}.tar"
        docker.run("save", tag, "-o", str(archives[name]))
        tags.append(tag)
    yield archives
    for tag in tags:
        docker.run("rmi", tag, check=False)


def slim(source: Path, out: Path, *args: str) -> dict[str, object]:
    done = slimmer("slim", str(source), "-o", str(out), "--report", "json", *args)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def run_slim(docker: Docker, archive: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    with docker.loaded(archive) as tag:
        return docker.run("run", "--rm", "--network", "none", tag, *args, check=False)


def ratio(report: dict[str, object]) -> float:
    before, after = report["before"], report["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    return float(after["bytes"]) / float(before["bytes"])


def test_python_image(docker: Docker, fat_images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "py.tar"
    report = slim(fat_images["python"], out, "--tag", f"slim-py:{uuid.uuid4().hex[:8]}")
    assert report["program"] == "/usr/bin/python3"
    assert ratio(report) <= 0.25, report
    done = run_slim(docker, out, "-c", "import ssl, sqlite3, json, zoneinfo, ctypes.util; "
                    "print(json.dumps([ssl.OPENSSL_VERSION[:7], ctypes.util.find_library('c')]))")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'["OpenSSL", "libc.so.6"]\n'


def test_nginx_image(docker: Docker, fat_images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "nginx.tar"
    report = slim(fat_images["nginx"], out, "--tag", f"slim-nginx:{uuid.uuid4().hex[:8]}")
    assert ratio(report) <= 0.10, report
    done = run_slim(docker, out, "-t")
    assert done.returncode == 0 and b"test is successful" in done.stderr, done.stderr


def test_curl_image_and_its_config(docker: Docker, fat_images: dict[str, Path],
                                   tmp_path: Path) -> None:
    out = tmp_path / "curl.tar"
    report = slim(fat_images["curl"], out, "--tag", f"slim-curl:{uuid.uuid4().hex[:8]}")
    assert report["program"] == "/usr/bin/curl"  # found in PATH, as docker run would
    done = run_slim(docker, out, "-s", "file:///etc/group")
    assert done.returncode == 0 and done.stdout.startswith(b"root:x:0:"), done.stderr
    config = json.loads(subprocess.run(["tar", "xOf", str(out), "manifest.json"],
                                       capture_output=True, check=True).stdout)
    assert config[0]["RepoTags"][0].startswith("slim-curl:")


def test_reproducible(fat_images: dict[str, Path], tmp_path: Path) -> None:
    one, two = tmp_path / "1.tar", tmp_path / "2.tar"
    slim(fat_images["nginx"], one)
    slim(fat_images["nginx"], two)
    assert one.read_bytes() == two.read_bytes()


def test_derived_image_deletions_stay_deleted(docker: Docker, fat_images: dict[str, Path],
                                              tmp_path: Path) -> None:
    base = docker.load(fat_images["python"])
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN rm -rf /usr/lib/python3.11/email "
                                        "/usr/lib/python3.11/json/decoder.py\n")
    tag = f"slimmer-derived/py:{uuid.uuid4().hex[:8]}"
    docker.run("build", "--network", "none", "-t", tag, str(context))
    derived = tmp_path / "derived.tar"
    docker.run("save", tag, "-o", str(derived))
    docker.run("rmi", tag, check=False)
    out = tmp_path / "slim.tar"
    slim(derived, out)
    tree = read_image(str(out)).tree
    assert "/usr/lib/python3.11/json/__init__.py" in tree
    assert "/usr/lib/python3.11/json/decoder.py" not in tree
    assert not any(p.startswith("/usr/lib/python3.11/email") for p in tree.paths())


def test_oci_and_zstd_inputs(fat_images: dict[str, Path], tmp_path: Path) -> None:
    skopeo = need_tool("skopeo")
    oci = tmp_path / "nginx-oci.tar"
    subprocess.run([skopeo, "copy", f"docker-archive:{fat_images['nginx']}",
                    f"oci-archive:{oci}:fat"], check=True, capture_output=True)
    zstd = tmp_path / "nginx-zstd"
    subprocess.run([skopeo, "copy", "--dest-compress-format", "zstd",
                    f"docker-archive:{fat_images['nginx']}", f"oci:{zstd}:fat"],
                   check=True, capture_output=True)
    manifest_blobs = list((zstd / "blobs/sha256").iterdir())
    assert any(b.read_bytes()[:4] == b"\x28\xb5\x2f\xfd" for b in manifest_blobs)
    reference = tmp_path / "ref.tar"
    slim(fat_images["nginx"], reference, "--tag", "n:1")
    for source in (oci, zstd):
        out = tmp_path / f"{source.name}.out.tar"
        slim(source, out, "--tag", "n:1")
        # the same image, whatever form the input took
        assert read_image(str(out)).tree.content_size() == read_image(
            str(reference)).tree.content_size()


# ---- PostgreSQL: a data directory owned by postgres, 0700, and a server that starts ----------

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_DATA = "/var/lib/postgresql/data"
PG_SOCKETS = "/var/run/postgresql"  # compiled in; Debian makes it at boot (tmpfiles.d)
PG_DOCKERFILE = f"""FROM {{base}}
RUN install -d -o postgres -g postgres -m 2775 {PG_SOCKETS}
USER postgres
RUN {PG_BIN}/initdb --no-sync --auth=trust --username=postgres -D {PG_DATA}
ENTRYPOINT ["{PG_BIN}/postgres", "-D", "{PG_DATA}"]
"""
# Only the client is --kept, to ask the running server one question (its closure follows it).
# Everything else is found (issue 13): the data directory is the Entrypoint's argument (kept
# whole, owners and modes as in the image), the socket directory a run-time directory compiled
# into postgres (kept empty), $libdir (/usr/lib/postgresql/15/lib), /usr/share/postgresql/15 and
# the time zones paths compiled into postgres (postgresql-15 depends on tzdata).
PG_KEEP = (f"{PG_BIN}/psql",)


def _account(root: Path, name: str) -> tuple[int, int]:
    """uid and gid of `name` in the root tarball's /etc/passwd."""
    with tarfile.open(root) as tar:
        passwd = tar.extractfile("./etc/passwd")
        assert passwd is not None
        lines = passwd.read().decode().splitlines()
    fields = next(line.split(":") for line in lines if line.startswith(f"{name}:"))
    return int(fields[2]), int(fields[3])


def _wait_for_log(docker: Docker, container: str, line: bytes, seconds: float) -> bytes:
    """The container's log once it shows `line`; fails with the log after `seconds`, or as
    soon as the container has stopped without it."""
    deadline = time.monotonic() + seconds
    while True:
        running = docker.run("inspect", "-f", "{{.State.Running}}", container).stdout
        done = docker.run("logs", container, check=False)
        log = done.stdout + done.stderr
        if line in log:
            return log
        if running.strip() != b"true" or time.monotonic() > deadline:
            raise AssertionError(f"{line.decode()!r} not logged in {seconds} s:\n{log.decode()}")
        time.sleep(0.3)


def test_postgres_image(docker: Docker, fat_root: Path, tmp_path: Path) -> None:
    """Issues 11 and 13: Debian's PostgreSQL 15 with a cluster initdb made as postgres, slimmed
    with no flag but the client's --keep: the data directory keeps its 0700/0600 modes and
    postgres's owner, the socket directory its setgid, and the server starts in Docker."""
    uid, gid = _account(fat_root, "postgres")
    fat = derived_image(docker, fat_root, tmp_path, PG_DOCKERFILE)
    out = tmp_path / "pg.tar"
    keep = [arg for path in PG_KEEP for arg in ("--keep", path)]
    report = slim(fat, out, "--tag", f"slim-pg:{uuid.uuid4().hex[:8]}", *keep)
    assert report["program"] == f"{PG_BIN}/postgres"

    # the data directory as initdb made it: 0700 directories, 0600 files, all postgres's
    members = Archive(out).members()
    data = {name: m for name, m in members.items()
            if name == PG_DATA[1:] or name.startswith(PG_DATA[1:] + "/")}
    assert f"{PG_DATA[1:]}/PG_VERSION" in data and f"{PG_DATA[1:]}/global/pg_control" in data
    for name, member in data.items():
        assert (member.uid, member.gid) == (uid, gid), name
        assert member.mode == (0o700 if member.isdir() else 0o600), (name, oct(member.mode))
    # the socket directory, reached through /var/run -> /run, keeps its setgid bit (2775): on
    # a directory it only passes the group on, so it is kept without --keep-setuid
    sockets = members["run/postgresql"]
    assert (sockets.uid, sockets.gid, sockets.mode) == (uid, gid, 0o2775)
    assert members["var/run"].issym() and members["var/run"].linkname == "/run"

    assert Archive(out).config["config"]["User"] == f"{uid}:{gid}"  # the image's postgres

    # the server, as the image's User: it starts, answers over its socket, stops cleanly
    with docker.loaded(out) as image:
        container = docker.run("run", "-d", "--network", "none",
                               image).stdout.decode().strip()
        try:
            _wait_for_log(docker, container, b"database system is ready to accept connections",
                          60)
            query = docker.run("exec", container, f"{PG_BIN}/psql", "-U", "postgres", "-Atc",
                               "SELECT 6 * 7, current_user, current_setting('data_directory')",
                               check=False)
            assert query.stdout == f"42|postgres|{PG_DATA}\n".encode(), query.stderr
            docker.run("stop", "-t", "30", container)
            state = json.loads(docker.run("inspect", container).stdout)[0]["State"]
            log = _wait_for_log(docker, container, b"database system is shut down", 5)
            assert state["ExitCode"] == 0, log.decode()
        finally:
            docker.run("rm", "-f", container, check=False)
