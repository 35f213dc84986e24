"""Foreign architectures, end to end: Debian roots of arm64, armhf (bookworm) and riscv64
(trixie) made by `mmdebstrap --variant=extract` (cached), resolved and packed with `--root`,
checked against glibc's facts for each ABI, and run through qemu-user-static: in a chroot of the
unpacked image, in the private Docker, and after `slimmer index` in containerd and podman by
platform."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slimmer import Resolver, SysRoot
from slimmer.errors import SlimmerError
from slimmer.image.explain import read_image
from slimmer.loader.elf import read_elf
from slimmer.loader.ldcache import parse_ldcache
from slimmer.loader.views import TreeRoot
from tests.support.archives import Archive, unpack_layer
from tests.support.cli import run
from tests.support.engines import PODMAN_RUN, Docker, Podman
from tests.support.host import need_tool
from tests.support.loader import parse_loader_list
from tests.support.roots import Binfmt, chroot_run, mmdebstrap_root

pytestmark = pytest.mark.e2e

# Debian architecture -> (suite, packages). riscv64 is a release architecture from trixie on;
# base-files brings trixie's /lib -> usr/lib links, which --variant=extract does not make.
ROOTS = {"arm64": ("bookworm", "jq,python3"), "armhf": ("bookworm", "jq"),
         "riscv64": ("trixie", "jq,base-files")}

# glibc's facts for each ABI, written out here rather than taken from slimmer.loader.arch: the OCI
# platform, the loader (PT_INTERP), and the ld.so.cache entry flags ldconfig writes
# (FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64, FLAG_ARM_LIBHF, FLAG_RISCV_FLOAT_ABI_DOUBLE).
FACTS: dict[str, tuple[dict[str, str], str, int]] = {
    "arm64": ({"architecture": "arm64", "os": "linux", "variant": "v8"},
              "/lib/ld-linux-aarch64.so.1", 0x0A03),
    "armhf": ({"architecture": "arm", "os": "linux", "variant": "v7"},
              "/lib/ld-linux-armhf.so.3", 0x0903),
    "riscv64": ({"architecture": "riscv64", "os": "linux"},
                "/lib/ld-linux-riscv64-lp64d.so.1", 0x1003),
}
JQ_INPUT = b'{"a":[1,2,3]}'
JQ_FILTER = ".a | map(. * 7) | add"
PY_CHECK = ("import json, ssl, sqlite3, hashlib, platform; print(json.dumps([platform.machine(),"
            " ssl.OPENSSL_VERSION[:7], sqlite3.connect(':memory:').execute('select 6*7')"
            ".fetchone()[0], hashlib.sha256(b'slimmer').hexdigest()]))")
PY_EXPECTED = json.dumps(["aarch64", "OpenSSL", 42, hashlib.sha256(b"slimmer").hexdigest()])


def root_of(arch: str) -> Path:
    suite, packages = ROOTS[arch]
    return mmdebstrap_root(suite, packages, variant="extract", arch=arch, fmt="directory")


@pytest.fixture(scope="session", params=sorted(ROOTS))
def foreign(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def slimmer(*args: str) -> subprocess.CompletedProcess[str]:
    """`slimmer ARGS`, which must succeed."""
    done = run(*args)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="session")
def jq_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """jq packed from each foreign root, and from the host (amd64)."""
    work = tmp_path_factory.mktemp("foreign")
    out = {}
    for arch in [*sorted(ROOTS), "amd64"]:
        out[arch] = work / f"jq-{arch}.tar"
        root = ["--root", str(root_of(arch))] if arch != "amd64" else []
        slimmer("pack", *root, "/usr/bin/jq", "-o", str(out[arch]), "--tag",
                f"slimmer-jq-{arch}:{uuid.uuid4().hex[:8]}")
    return out


@pytest.fixture(scope="session")
def python_arm64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("py") / "py-arm64.tar"
    slimmer("pack", "--root", str(root_of("arm64")), "/usr/bin/python3", "-o", str(out),
            "--tag", f"slimmer-py-arm64:{uuid.uuid4().hex[:8]}")
    return out


# ---- the resolver on foreign roots ------------------------------------------------------------


def test_deps_match_the_foreign_loader(foreign: str, binfmt: Binfmt) -> None:
    """Every program of the root, resolved by slimmer and listed by the root's own ld.so under
    qemu in a chroot: the same files in the same order. The roots have no ld.so.cache (ldconfig
    runs in a maintainer script, which --variant=extract skips) and no /etc/ld.so.conf, so
    glibc searches its compiled-in directories, and so must slimmer."""
    root = root_of(foreign)
    loader = FACTS[foreign][1]
    assert not (root / "etc/ld.so.cache").exists() and not (root / "etc/ld.so.conf").exists()
    resolver = Resolver(SysRoot(str(root)))
    programs = []
    for directory in ("usr/bin", "usr/sbin"):
        if not (root / directory).is_dir():
            continue
        for entry in sorted((root / directory).iterdir()):
            if entry.is_symlink() or not entry.is_file():
                continue
            try:
                if read_elf(str(entry)).interpreter == loader:
                    programs.append(f"/{directory}/{entry.name}")
            except SlimmerError:
                continue
    assert "/usr/bin/jq" in programs
    differ = []
    for program in programs:
        closure = resolver.closure(program)
        assert {lib.found_via for lib in closure.libraries} == {"default"}, program
        done = chroot_run(root, [loader, "--list", program])
        listed = parse_loader_list(subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()))
        ours = [lib.path for lib in closure.libraries]
        if ours != [p for p in listed if p != loader]:
            differ.append(f"{program}: ours {ours}, the loader's {listed}")
    assert differ == []


# ---- packing -----------------------------------------------------------------------------------


def test_jq_image_has_the_abi_of_its_root(foreign: str, jq_images: dict[str, Path]) -> None:
    platform, loader, flags = FACTS[foreign]
    image = Archive(jq_images[foreign])
    index, config = image.index, image.config
    assert index["manifests"][0]["platform"] == platform
    assert {k: config.get(k) for k in platform} == platform
    assert config["config"]["Entrypoint"] == ["/usr/bin/jq"]
    tree = read_image(str(jq_images[foreign])).tree
    assert TreeRoot(tree).lookup(loader) is not None  # through /lib -> usr/lib on trixie
    assert read_elf(str(root_of(foreign) / "usr/bin/jq")).interpreter == loader
    cache = image.layer.extractfile("etc/ld.so.cache").read()  # type: ignore[union-attr]
    entries = parse_ldcache(cache).entries
    assert {e.soname for e in entries} >= {"libc.so.6", "libjq.so.1", "libonig.so.5"}
    assert {e.flags for e in entries} == {flags}


def test_jq_runs_in_a_chroot_of_the_image(foreign: str, jq_images: dict[str, Path],
                                          binfmt: Binfmt, tmp_path: Path) -> None:
    """The image alone (no host files) runs under qemu; its loader finds every library through
    the image's ld.so.cache, which it would pass over if the flags were not its ABI's."""
    image = unpack_layer(jq_images[foreign], tmp_path / "image")
    done = chroot_run(image, ["/usr/bin/jq", "-c", JQ_FILTER], input=JQ_INPUT)
    assert (done.returncode, done.stdout) == (0, b"42\n"), done.stderr
    debug = chroot_run(image, ["/usr/bin/jq", "-n", "1"], env={"LD_DEBUG": "libs"})
    log = debug.stderr.decode()
    assert debug.returncode == 0 and "search cache=/etc/ld.so.cache" in log, log
    assert "search path=" not in log, log


def test_mixing_architectures_is_refused(jq_images: dict[str, Path], tmp_path: Path) -> None:
    done = run("pack", "--root", str(root_of("arm64")), "/usr/bin/jq", "--add",
               "/usr/bin/jq:/usr/bin/jq-amd64", "-o", str(tmp_path / "x.tar"))
    assert done.returncode == 1
    assert done.stderr == ("error: /usr/bin/jq-amd64 is x86_64, the image's programs are "
                           "aarch64: one image holds one architecture\n")
    for name in ("amd64", "arm64"):
        assert Archive(jq_images[name]).config["architecture"] == name


def test_python3_from_the_arm64_root(python_arm64: Path, binfmt: Binfmt,
                                     tmp_path: Path) -> None:
    assert Archive(python_arm64).index["manifests"][0]["platform"] == FACTS["arm64"][0]
    tree = read_image(str(python_arm64)).tree
    assert "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-aarch64-linux-gnu.so" in tree
    assert "/usr/lib/python3.11/json/__init__.py" in tree  # the recipe applied
    assert not any(p.startswith("/usr/lib/python3.11/test/") for p in tree.paths())
    image = unpack_layer(python_arm64, tmp_path / "image")
    done = chroot_run(image, ["/usr/bin/python3", "-c", PY_CHECK],
                      env={"PATH": "/usr/bin", "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == PY_EXPECTED


def test_docker_runs_the_foreign_images(docker: Docker, binfmt: Binfmt,
                                        jq_images: dict[str, Path], python_arm64: Path) -> None:
    for arch in sorted(ROOTS):
        with docker.loaded(jq_images[arch]) as tag:
            assert docker.container(tag, "-c", JQ_FILTER, input=JQ_INPUT) == b"42\n", arch
            inspect = docker.run("image", "inspect", tag, "--format",
                                 "{{.Architecture}}/{{.Variant}}").stdout.decode().strip()
            platform = FACTS[arch][0]
            assert inspect == f"{platform['architecture']}/{platform.get('variant', '')}"
    with docker.loaded(python_arm64) as tag:
        assert docker.container(tag, "-c", PY_CHECK).decode().strip() == PY_EXPECTED


# ---- slim on a foreign image -------------------------------------------------------------------


@pytest.fixture(scope="session")
def arm64_fat_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout of the whole arm64 root, config arm64, entrypoint python3 (umoci)."""
    umoci = need_tool("umoci")
    work = tmp_path_factory.mktemp("fat-arm64")
    layer = work / "layer.tar"
    subprocess.run(["tar", "-C", str(root_of("arm64")), "--exclude=./dev/*", "-cf", str(layer),
                    "."], check=True)
    layout = work / "layout"
    for args in (["init", "--layout", str(layout)], ["new", "--image", f"{layout}:fat"],
                 ["raw", "add-layer", "--image", f"{layout}:fat", str(layer)],
                 ["config", "--image", f"{layout}:fat", "--architecture", "arm64",
                  "--config.entrypoint", "/usr/bin/python3", "--config.env",
                  "PATH=/usr/bin:/bin"]):
        subprocess.run([umoci, *args], check=True, capture_output=True)
    layer.unlink()
    return layout


def test_slim_a_foreign_image(arm64_fat_layout: Path, docker: Docker, binfmt: Binfmt,
                              tmp_path: Path) -> None:
    out = tmp_path / "slim.tar"
    done = slimmer("slim", str(arm64_fat_layout), "-o", str(out), "--tag",
                   f"slimmer-slim-arm64:{uuid.uuid4().hex[:8]}", "--report", "json")
    report = json.loads(done.stdout)
    assert report["program"] == "/usr/bin/python3"
    assert report["after"]["bytes"] < report["before"]["bytes"] * 0.6, report
    image = Archive(out)
    assert image.index["manifests"][0]["platform"] == FACTS["arm64"][0]
    assert image.config["config"]["Entrypoint"] == ["/usr/bin/python3"]
    with docker.loaded(out) as tag:
        assert docker.container(tag, "-c", PY_CHECK).decode().strip() == PY_EXPECTED


# ---- a multi-platform index on the engines -----------------------------------------------------


@pytest.fixture(scope="session")
def multi(jq_images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Path, str, dict[str, dict[str, Any]]]]:
    """amd64 + arm64 jq in one index archive; the per-platform manifests and configs."""
    out = tmp_path_factory.mktemp("multi") / "multi.tar"
    name = f"slimmer-multi/jq:{uuid.uuid4().hex[:8]}"
    slimmer("index", str(jq_images["amd64"]), str(jq_images["arm64"]), "-o", str(out),
            "--tag", name)
    per = {}
    for arch in ("amd64", "arm64"):
        image = Archive(jq_images[arch])
        per[arch] = {"manifest": image.index["manifests"][0]["digest"],
                     "config": image.manifest["config"]["digest"],
                     "diff_id": image.config["rootfs"]["diff_ids"][0]}
    yield out, name, per


def _ctr(docker: Docker, namespace: str, *args: str) -> str:
    ctr = need_tool("ctr")
    done = subprocess.run([ctr, "-a", docker.containerd_socket, "-n", namespace, *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ctr {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_containerd_imports_one_platform(arch: str, docker: Docker, binfmt: Binfmt,
                                         multi: tuple[Path, str, dict[str, dict[str, Any]]]
                                         ) -> None:
    archive, name, per = multi
    namespace = f"slimmer-test-{uuid.uuid4().hex[:8]}"
    full = f"docker.io/{name}"
    try:
        _ctr(docker, namespace, "images", "import", "--platform", f"linux/{arch}", str(archive))
        # every blob of the archive is ingested; only the platform asked for is unpacked
        # (a one-layer image's snapshot is named by its diff_id)
        snapshots = _ctr(docker, namespace, "snapshots", "ls")
        other = "arm64" if arch == "amd64" else "amd64"
        assert per[arch]["diff_id"] in snapshots and per[other]["diff_id"] not in snapshots
        listed = _ctr(docker, namespace, "images", "ls")
        assert full in listed and "linux/amd64,linux/arm64/v8" in listed, listed
        out = _ctr(docker, namespace, "run", "--rm", "--platform", f"linux/{arch}", full,
                   f"t-{uuid.uuid4().hex[:8]}", "/usr/bin/jq", "-n", "[6,7] | .[0] * .[1]")
        assert out.strip() == "42"
    finally:
        subprocess.run([need_tool("ctr"), "-a", docker.containerd_socket, "-n", namespace,
                        "images", "rm", full], capture_output=True)


def test_podman_pulls_each_platform(podman: Podman, binfmt: Binfmt,
                                    multi: tuple[Path, str, dict[str, dict[str, Any]]]) -> None:
    archive, _, per = multi
    for arch in ("arm64", "amd64"):
        image_id = podman.run("pull", "-q", "--platform", f"linux/{arch}",
                              f"oci-archive:{archive}").decode().strip()
        try:
            assert f"sha256:{image_id}" == per[arch]["config"]
            out = podman.run("run", "--rm", *PODMAN_RUN, image_id, "-n", "[6,7] | .[0] * .[1]")
            assert out.strip() == b"42"
        finally:
            podman.run("rmi", "-f", image_id)


def test_skopeo_and_docker_read_the_index(docker: Docker,
                                          multi: tuple[Path, str, dict[str, dict[str, Any]]]
                                          ) -> None:
    archive, name, per = multi
    raw = subprocess.run([need_tool("skopeo"), "inspect", "--raw", f"oci-archive:{archive}"],
                         capture_output=True, check=True).stdout
    index = json.loads(raw)
    assert [(m["digest"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        (per["amd64"]["manifest"], "amd64"), (per["arm64"]["manifest"], "arm64")]
    # Docker 20.10 reads manifest.json: every platform under its own tag, NAME:TAG the first
    out = docker.run("load", "-i", str(archive)).stdout.decode()
    tags = [name, f"{name}-amd64", f"{name}-arm64"]
    try:
        assert [f"Loaded image: {t}" for t in tags] == out.strip().splitlines()
        for tag, arch in zip(tags, ("amd64", "amd64", "arm64"), strict=True):
            found = docker.run("image", "inspect", tag, "--format", "{{.Id}}").stdout.decode()
            assert found.strip() == per[arch]["config"]
    finally:
        docker.run("rmi", *tags, check=False)
