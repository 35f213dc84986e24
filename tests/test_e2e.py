"""Images packed here, loaded and run in real engines: a private Docker daemon (and the containerd
it starts), podman, skopeo and umoci. Every image carries a fresh nonce file, so that Docker
really reads each layer instead of reusing one it already has. The gzip layers are blocks
deflated on every core joined into one stream (image/compress.py); the other engines get a
layer of many blocks (BIG, a file added) and check its bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.archives import tiny_static_elf
from tests.support.cli import run as slimmer
from tests.support.compile import Compile, main_source
from tests.support.engines import PODMAN_RUN, Docker, Podman, ctr_namespace
from tests.support.host import need_tool
from tests.support.roots import vendor_root

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello"


def pack(tmp_path: Path, *args: str, name: str = "img",
         command: str = "pack") -> tuple[Path, str]:
    """Pack (or build) with a unique nonce file and tag; returns the archive and its tag."""
    nonce = tmp_path / f"nonce-{uuid.uuid4().hex}"
    nonce.write_text(nonce.name)
    tag = f"slimmer-e2e/{name}:{uuid.uuid4().hex[:12]}"
    out = tmp_path / f"{name}.tar"
    done = slimmer(command, *args, "-o", str(out), "--tag", tag, "--add",
                   f"{nonce}:/etc/slimmer-nonce")
    assert done.returncode == 0, done.stderr
    return out, tag


def docker_run(docker: Docker, tmp_path: Path, programs: list[str], args: list[str],
               stdin: bytes = b"", name: str = "img", extra: tuple[str, ...] = ()) -> bytes:
    archive, tag = pack(tmp_path, *programs, *extra, name=name)
    assert docker.load(archive) == f"{tag}"
    try:
        return docker.container(tag, *args, input=stdin)
    finally:
        docker.run("rmi", tag, check=False)


# ---- real programs from Debian packages ------------------------------------------------

SHA_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

PROGRAMS = [
    ("jq", ["/usr/bin/jq"], [".a | add"], b'{"a": [1, 2, 3]}', b"6\n"),
    ("sqlite3", ["/usr/bin/sqlite3"], [":memory:", "select 6*7;"], b"", b"42\n"),
    ("openssl", ["/usr/bin/openssl"], ["dgst", "-sha256"], b"abc", SHA_ABC.encode()),
    ("curl", ["/usr/bin/curl"], ["-s", "file:///etc/passwd"], b"", b"nonroot:x:65532"),
    ("bc", ["/usr/bin/bc"], ["-q"], b"2^10\n", b"1024\n"),
    ("lua", ["/usr/bin/lua5.4"], ["-e", "print(6*7)"], b"", b"42\n"),
    ("sha256sum", ["/usr/bin/sha256sum"], [], b"abc", f"{SHA_ABC}  -\n".encode()),
    ("xz", ["/usr/bin/xz"], ["-c"], b"hello " * 100, b"\xfd7zXZ\x00"),
    ("gzip", ["/usr/bin/gzip"], ["-c", "-n"], b"hello " * 100, b"\x1f\x8b\x08"),
    ("ffmpeg", ["/usr/bin/ffmpeg"],
     ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
      "sine=frequency=440:duration=0.1", "-f", "wav", "-"], b"", b"RIFF"),
]


@pytest.mark.parametrize(("name", "programs", "args", "stdin", "expect"), PROGRAMS,
                         ids=[p[0] for p in PROGRAMS])
def test_debian_program_runs_in_docker(docker: Docker, tmp_path: Path, name: str,
                                       programs: list[str], args: list[str], stdin: bytes,
                                       expect: bytes) -> None:
    for program in programs:
        if not os.path.exists(program):
            need_tool(os.path.basename(program))
    out = docker_run(docker, tmp_path, programs, args, stdin, name=name)
    assert expect in out, out[:200]


# ---- compiled fixtures -------------------------------------------------------------------


def test_build_tree_with_origin_runpath(docker: Docker, tmp_path: Path) -> None:
    subprocess.run(["bash", str(EXAMPLE / "build.sh"), str(tmp_path / "tree")], check=True)
    out = docker_run(docker, tmp_path, [str(tmp_path / "tree/bin/hello")], ["x"])
    assert out == b"hello from a slim image (sqrt(3) = 1.732)\n"


def test_cpp_program_throws_and_catches(docker: Docker, tmp_path: Path, cc: Compile) -> None:
    source = ("#include <iostream>\n#include <stdexcept>\n"
              "int main() { try { throw std::runtime_error(\"boom\"); }\n"
              "catch (const std::exception &e) { std::cout << \"caught \" << e.what() << "
              "std::endl; } return 0; }\n")
    prog = cc("cxx", source, "-x", "c++", compiler="g++")
    assert docker_run(docker, tmp_path, [str(prog)], []) == b"caught boom\n"


@pytest.mark.parametrize("flag", ["-static", "-static-pie"])
def test_static_programs(docker: Docker, tmp_path: Path, cc: Compile, flag: str) -> None:
    prog = cc("st", main_source(), flag)
    assert docker_run(docker, tmp_path, [str(prog)], []) == b"0\n"


def test_user_nonroot_and_workdir(docker: Docker, tmp_path: Path) -> None:
    out = docker_run(docker, tmp_path, ["/usr/bin/id"], [], extra=("--user", "nonroot"))
    assert out.startswith(b"uid=65532(nonroot) gid=65532(nonroot)")


def test_tiny_program_made_by_hand(docker: Docker, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/hello").write_bytes(tiny_static_elf(b"by hand\n"))
    (root / "bin/hello").chmod(0o755)
    assert docker_run(docker, tmp_path, ["--root", str(root), "/bin/hello"], []) == b"by hand\n"


# ---- the other engines -----------------------------------------------------------------

BIG = 3 << 20  # bytes: 24 gzip blocks; zstd frames of its own, between the others


def big_file(tmp_path: Path) -> tuple[Path, str]:
    """A file that crosses many compression blocks, half random (stored blocks), half text;
    its path and sha256."""
    path = tmp_path / "big"
    text = b"".join(b"line %d of a layer crossing many blocks\n" % n for n in range(40000))
    data = (os.urandom(BIG // 2) + text)[:BIG]
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_podman_loads_and_runs(podman: Podman, tmp_path: Path) -> None:
    big, digest = big_file(tmp_path)
    for compress in ("gzip", "zstd"):
        archive, tag = pack(tmp_path, "/usr/bin/jq", "/usr/bin/sha256sum", "--compress",
                            compress, "--add", f"{big}:/data/big", name="pjq")
        loaded = podman.run("load", "-i", str(archive)).decode()
        assert f"docker.io/{tag}" in loaded
        out = podman.run("run", "--rm", "-i", *PODMAN_RUN, tag, ".a", input=b'{"a": 5}')
        assert out == b"5\n"
        out = podman.run("run", "--rm", *PODMAN_RUN, "--entrypoint", "/usr/bin/sha256sum",
                         tag, "/data/big")
        assert out == f"{digest}  /data/big\n".encode()
        podman.run("rmi", tag)


def test_skopeo_reads_both_transports(tmp_path: Path) -> None:
    skopeo = need_tool("skopeo")
    big, _ = big_file(tmp_path)
    archive, _ = pack(tmp_path, "/usr/bin/jq", "--add", f"{big}:/data/big", name="sjq")
    manifest_digest = None
    for transport in ("oci-archive", "docker-archive"):
        done = subprocess.run([skopeo, "inspect", f"{transport}:{archive}"],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert info["Architecture"] == "amd64" and info["Os"] == "linux"
        if transport == "oci-archive":
            manifest_digest = info["Digest"]
    index = json.loads(subprocess.run(["tar", "xOf", str(archive), "index.json"],
                                      capture_output=True, check=True).stdout)
    assert manifest_digest == index["manifests"][0]["digest"]
    # and a copy out of the archive verifies every blob
    copied = tmp_path / "copied"
    done = subprocess.run([skopeo, "copy", f"oci-archive:{archive}", f"oci:{copied}:x"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_umoci_unpacks(tmp_path: Path) -> None:
    umoci = need_tool("umoci")
    big, digest = big_file(tmp_path)
    archive, _ = pack(tmp_path, "/usr/bin/jq", "--add", f"{big}:/data/big", name="ujq")
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "xf", str(archive), "-C", str(layout)], check=True)
    tag = json.loads((layout / "index.json").read_text())["manifests"][0]["annotations"][
        "org.opencontainers.image.ref.name"]
    done = subprocess.run([umoci, "unpack", "--image", f"{layout}:{tag}", str(tmp_path / "b")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    jq = tmp_path / "b/rootfs/usr/bin/jq"
    assert hashlib.sha256(jq.read_bytes()).digest() == hashlib.sha256(
        Path("/usr/bin/jq").read_bytes()).digest()
    assert os.readlink(tmp_path / "b/rootfs/lib64") == "usr/lib64"
    assert hashlib.sha256((tmp_path / "b/rootfs/data/big").read_bytes()).hexdigest() == digest


def test_ctr_imports(docker: Docker, tmp_path: Path) -> None:
    with ctr_namespace(docker, "slimmer") as base:
        big, _ = big_file(tmp_path)
        for compress in ("gzip", "zstd"):
            # imported and unpacked: containerd checks the uncompressed layer's digest
            archive, tag = pack(tmp_path, "/usr/bin/jq", "--compress", compress, "--add",
                                f"{big}:/data/big", name="cjq")
            done = subprocess.run([*base, "images", "import", str(archive)],
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            listed = subprocess.run([*base, "images", "ls", "-q"], capture_output=True,
                                    text=True, check=True).stdout.split()
            assert f"docker.io/{tag}" in listed


def test_library_found_only_through_the_cache(docker: Docker, tmp_path: Path,
                                              cc: Compile) -> None:
    root = vendor_root(tmp_path, cc)
    out = docker_run(docker, tmp_path, ["--root", str(root), "/usr/bin/vprog"], [])
    assert out == b"41\n"


def test_long_and_non_ascii_names(docker: Docker, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    deep = extra / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    names = ["f" * 120, "grüße-文件.txt", "with space"]
    for name in names:
        (deep / name).write_text(name)
    (deep / ("l" * 110)).symlink_to("/" + "t" * 120)
    out = docker_run(docker, tmp_path, ["/usr/bin/ls"], ["-1", f"/opt/x/{'d' * 60}/{'e' * 60}"],
                     extra=("--add", f"{extra}:/opt/x"))
    assert out.decode().splitlines() == sorted([*names, "l" * 110])


# ---- runtime needs beyond DT_NEEDED (runtime.py) ----------------------------------------------

CANCEL = """#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *run(void *a) { (void)a; for (;;) pause(); return 0; }
int main(void) {
    pthread_t t; pthread_create(&t, 0, run, 0); pthread_cancel(t); pthread_join(t, 0);
    puts("cancelled"); return 0;
}
"""

ICONV = """#include <iconv.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    iconv_t cd = iconv_open("UTF-16LE", "UTF-8");
    if (cd == (iconv_t)-1) { perror("iconv_open"); return 1; }
    char in[] = "h\\xc3\\xa9llo", out[64], *ip = in, *op = out;
    size_t il = strlen(in), ol = sizeof out;
    iconv(cd, &ip, &il, &op, &ol);
    printf("%zu bytes\\n", sizeof out - ol); return 0;
}
"""


def test_pthread_cancel_gets_libgcc_s(docker: Docker, tmp_path: Path, cc: Compile) -> None:
    prog = cc("cancel", CANCEL, "-pthread")
    assert docker_run(docker, tmp_path, [str(prog)], []) == b"cancelled\n"
    archive, tag = pack(tmp_path, str(prog), "--without", "libgcc_s", name="nogcc")
    docker.load(archive)
    done = docker.run("run", "--rm", "--network", "none", tag, check=False)
    docker.run("rmi", tag, check=False)
    assert done.returncode != 0 and b"libgcc_s.so.1 must be installed" in done.stderr


def test_iconv_gets_gconv_modules(docker: Docker, tmp_path: Path, cc: Compile) -> None:
    prog = cc("conv", ICONV)
    assert docker_run(docker, tmp_path, [str(prog)], []) == b"10 bytes\n"
    archive, tag = pack(tmp_path, str(prog), "--without", "gconv", name="nogconv")
    docker.load(archive)
    done = docker.run("run", "--rm", "--network", "none", tag, check=False)
    docker.run("rmi", tag, check=False)
    assert done.returncode == 1 and b"iconv_open" in done.stderr


def test_openssl_gets_certificates_config_and_providers(docker: Docker, tmp_path: Path) -> None:
    out = docker_run(docker, tmp_path, ["/usr/bin/openssl"],
                     ["x509", "-in", "/usr/lib/ssl/cert.pem", "-noout", "-subject"])
    assert out.startswith(b"subject=")
    out = docker_run(docker, tmp_path, ["/usr/bin/openssl"],
                     ["list", "-providers", "-provider", "legacy", "-provider", "default"])
    assert b"legacy" in out and b"active" in out


def test_with_tzdata_and_shell(docker: Docker, tmp_path: Path) -> None:
    out = docker_run(docker, tmp_path, ["/usr/bin/date"], ["+%Z"],
                     extra=("--with", "tzdata", "--env", "TZ=Asia/Tokyo"))
    assert out == b"JST\n"
    out = docker_run(docker, tmp_path, ["/usr/bin/date"], ["+%Z"], extra=("--with", "tzdata"))
    assert out == b"UTC\n"
    out = docker_run(docker, tmp_path, ["/usr/bin/jq"], ["-c", "echo $((6*7))"],
                     extra=("--with", "shell", "--entrypoint", "/bin/sh"))
    assert out == b"42\n"


# ---- scripts ---------------------------------------------------------------------------------


def test_shell_script_runs_with_its_interpreter(docker: Docker, tmp_path: Path) -> None:
    script = tmp_path / "build" / "hello.sh"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\necho "hello from $0 with $# args"\n')
    script.chmod(0o755)
    out = docker_run(docker, tmp_path, [str(script)], ["a", "b"])
    assert out == b"hello from /app/hello.sh with 2 args\n"


def test_env_script_finds_its_program_in_path(docker: Docker, tmp_path: Path) -> None:
    script = tmp_path / "filter"
    script.write_text("#!/usr/bin/env -S jq -f\n.a + .b\n")
    script.chmod(0o755)
    out = docker_run(docker, tmp_path, [str(script)], [], stdin=b'{"a": 40, "b": 2}')
    assert out == b"42\n"


# ---- built-in recipes --------------------------------------------------------------------------

PYTHON_CHECK = (
    "import ssl, sqlite3, decimal, zoneinfo, lzma, bz2, ctypes, ctypes.util, datetime; "
    "print(ssl.OPENSSL_VERSION.split()[0], sqlite3.connect(':memory:').execute('select 6*7')"
    ".fetchone()[0], decimal.Decimal('1.1') + decimal.Decimal('2.2'), "
    "datetime.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo('Asia/Tokyo')).utcoffset(), "
    "lzma.decompress(lzma.compress(b'x')), "
    "bz2.decompress(bz2.compress(b'y')), ctypes.util.find_library('c'), "
    "ctypes.CDLL(ctypes.util.find_library('c')).abs(-5))"
)


def test_python3_recipe(docker: Docker, tmp_path: Path) -> None:
    out = docker_run(docker, tmp_path, ["/usr/bin/python3"], ["-c", PYTHON_CHECK])
    assert out == b"OpenSSL 42 3.3 9:00:00 b'x' b'y' libc.so.6 5\n"


def test_nginx_recipe_tests_its_configuration(docker: Docker, tmp_path: Path) -> None:
    archive, tag = pack(tmp_path, "/usr/sbin/nginx", name="nginx")
    docker.load(archive)
    try:
        done = docker.run("run", "--rm", "--network", "none", tag, "-t", check=False)
        assert done.returncode == 0, done.stderr
        assert b"test is successful" in done.stderr
        config = json.loads(docker.run("image", "inspect", tag).stdout)[0]["Config"]
        assert config["Entrypoint"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
        assert config["ExposedPorts"] == {"80/tcp": {}}
    finally:
        docker.run("rmi", tag, check=False)


def test_git_recipe_init_commit_clone(docker: Docker, tmp_path: Path) -> None:
    script = ("cd /tmp && git init -q r && cd r && echo x > f && git add f && "
              "git -c user.name=a -c user.email=a@b commit -qm first && "
              "git clone -q /tmp/r /tmp/c && git -C /tmp/c log --format=%s")
    out = docker_run(docker, tmp_path, ["/usr/bin/git"], ["-c", script],
                     extra=("--entrypoint", "/bin/sh"))
    assert out == b"first\n"


def test_perl_recipe(docker: Docker, tmp_path: Path) -> None:
    out = docker_run(docker, tmp_path, ["/usr/bin/perl"],
                     ["-MPOSIX", "-MList::Util=sum", "-e", "print sum(1..10), floor(2.5), qq(\\n)"])
    assert out == b"552\n"


def test_redis_recipe_serves(docker: Docker, tmp_path: Path) -> None:
    archive, tag = pack(tmp_path, "redis", name="redis", command="build")
    docker.load(archive)
    container = docker.run("run", "-d", "--network", "none", tag).stdout.decode().strip()
    try:
        for _ in range(50):
            ping = docker.run("exec", container, "/usr/bin/redis-cli", "ping", check=False)
            if ping.stdout == b"PONG\n":
                break
            time.sleep(0.2)
        assert ping.stdout == b"PONG\n", ping.stderr
        docker.run("exec", container, "/usr/bin/redis-cli", "set", "k", "v")
        assert docker.run("exec", container, "/usr/bin/redis-cli", "get", "k").stdout == b"v\n"
    finally:
        docker.run("rm", "-f", container, check=False)
        docker.run("rmi", tag, check=False)


def test_with_shell_brings_the_shells_libraries(docker: Docker, tmp_path: Path,
                                                cc: Compile) -> None:
    prog = cc("st", main_source(), "-static")  # nothing of its own needs libc.so.6
    out = docker_run(docker, tmp_path, [str(prog)], ["-c", "echo $((40 + 2))"],
                     extra=("--with", "shell", "--entrypoint", "/bin/sh"))
    assert out == b"42\n"


def test_python_script_gets_the_interpreters_recipe(docker: Docker, tmp_path: Path) -> None:
    script = tmp_path / "app" / "main.py"
    script.parent.mkdir()
    script.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                      "print(json.dumps({'args': sys.argv[1:]}))\n")
    script.chmod(0o755)
    out = docker_run(docker, tmp_path, [str(script)], ["x"])
    assert out == b'{"args": ["x"]}\n'
