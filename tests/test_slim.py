"""`slimmer slim` on real fat images: a Debian root made by mmdebstrap (cached between runs),
imported into the test's private Docker daemon with an entrypoint, saved, slimmed, and run."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.explain import read_image
from tests.conftest import need_tool
from tests.engines import Docker
from tests.roots import mmdebstrap_root

pytestmark = pytest.mark.e2e

PACKAGES = "python3,nginx-light,curl,ca-certificates"


@pytest.fixture(scope="session")
def fat_root() -> Path:
    """A bookworm root tarball with python3, nginx and curl (about 40 s the first time)."""
    return mmdebstrap_root("bookworm", PACKAGES)


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
    done = subprocess.run([sys.executable, "-m", "slimmer", "slim", str(source), "-o", str(out),
                           "--report", "json", *args], capture_output=True, text=True)
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
