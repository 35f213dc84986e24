"""Test roots: small ones built from the host's own libraries and compiled fixtures, Debian
roots made by mmdebstrap (cached between test runs), and foreign programs run through
qemu-user-static.

The cache (SLIMMER_TEST_CACHE, default /var/tmp/slimmer-test-cache) is filled under an exclusive
lock and each root appears by an atomic rename, so two test runs never see a half-made root. The
binfmt handlers are registered only when missing, and the ones registered here are removed again
at the end (binfmt_misc is unmounted again if it was mounted here): the machine is left as found.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.archives import tiny_static_elf
from tests.support.compile import Compile, main_source
from tests.support.host import IN_CI, need_tool

CACHE = Path(os.environ.get("SLIMMER_TEST_CACHE", "/var/tmp/slimmer-test-cache"))
MIRROR = "http://deb.debian.org/debian"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# Debian architecture -> the qemu-user-static binfmt entry that runs it
QEMU = {"arm64": "qemu-aarch64", "armhf": "qemu-arm", "riscv64": "qemu-riscv64"}
# The fat bookworm root that test_slim and test_fidelity slim (one mmdebstrap run, one cache
# entry, every package they need).
FAT_PACKAGES = "python3,nginx-light,curl,ca-certificates,postgresql,nodejs,jq"


# ---- small roots, made in the test's directory ------------------------------------------------


def tiny_root(tmp_path: Path, message: bytes = b"tiny\n") -> Path:
    """A root holding one tiny static program, /bin/hello."""
    root = tmp_path / "tinyroot"
    (root / "bin").mkdir(parents=True)
    (root / "bin/hello").write_bytes(tiny_static_elf(message))
    (root / "bin/hello").chmod(0o755)
    return root


def host_libc_root(root: Path, libraries: tuple[str, ...]) -> Path:
    """`root` with merged /usr, the host's loader and the named host libraries."""
    gnu = root / "usr/lib/x86_64-linux-gnu"
    gnu.mkdir(parents=True)
    for name in libraries:
        shutil.copy(os.path.realpath(f"/lib/x86_64-linux-gnu/{name}"), gnu / name)
    shutil.copy(os.path.realpath("/lib64/ld-linux-x86-64.so.2"), gnu / "ld-linux-x86-64.so.2")
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    return root


def small_root(tmp_path: Path, cc: Compile) -> Path:
    """A root whose /usr/bin/zprog needs libz.so.1, with the host's libc, libz and loader."""
    root = host_libc_root(tmp_path / "root", ("libc.so.6", "libz.so.1"))
    cc(root / "usr/bin/zprog", main_source(), "-Wl,--no-as-needed", "-lz")
    return root


def vendor_root(tmp_path: Path, cc: Compile) -> Path:
    """A root whose program needs a library that only its ld.so.cache finds (/opt/vendor/lib,
    named in ld.so.conf.d, cache built by the real ldconfig inside the root)."""
    root = host_libc_root(tmp_path / "vroot", ("libc.so.6",))
    lib = cc(root / "opt/vendor/lib/libv.so.1", "int v(void) { return 41; }\n", "-shared",
             "-fPIC", "-Wl,-soname,libv.so.1")
    cc(root / "usr/bin/vprog", main_source(("v",)), str(lib))
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/vendor.conf").write_text("/opt/vendor/lib\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    return root


# ---- Debian roots, cached ---------------------------------------------------------------------


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """CACHE/name, made by `build(partial)` the first time; `partial` is renamed into place
    only when `build` returned, all under a lock that other test runs wait for."""
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / name
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = CACHE / f".partial-{name}"
            if partial.is_dir():
                shutil.rmtree(partial)
            elif partial.exists():
                partial.unlink()
            build(partial)
            partial.rename(target)
    return target


def mmdebstrap_root(suite: str, packages: str, *, variant: str = "apt", arch: str = "",
                    fmt: str = "tar") -> Path:
    """A cached mmdebstrap root: a tarball (fmt "tar") or a directory. A foreign `arch` uses
    only the main archive of `suite` (no security mirror, which a partial sync can break)."""
    name = "-".join(x for x in (suite, arch, variant if variant != "apt" else "",
                                packages.replace(",", "-")) if x)
    name += ".tar" if fmt == "tar" else ""

    def build(partial: Path) -> None:
        mmdebstrap = need_tool("mmdebstrap")
        command = [mmdebstrap, "--quiet", f"--variant={variant}", f"--format={fmt}",
                   f"--include={packages}"]
        if arch:
            command += [f"--arch={arch}", suite, str(partial), f"deb {MIRROR} {suite} main"]
        else:
            command += [suite, str(partial)]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]

    return cached(name, build)


# ---- qemu-user-static through binfmt_misc ------------------------------------------------------


@dataclass(frozen=True)
class Binfmt:
    """The qemu handlers are registered: foreign programs run directly, in chroots and in
    containers (the F flag opens the interpreter at registration)."""

    arches: tuple[str, ...]


def _registration(entry: str) -> str:
    conf = Path(f"/usr/lib/binfmt.d/{entry}.conf")
    if not conf.exists():
        message = f"{conf} is missing: qemu-user-static is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    line = conf.read_text().strip()
    name, flags = line.split(":")[1], line.rsplit(":", 1)[1]
    assert name == entry, line
    return line if "F" in flags else line + "F"


@pytest.fixture(scope="session")
def binfmt() -> Iterator[Binfmt]:
    lines = {arch: _registration(entry) for arch, entry in QEMU.items()}
    mounted = False
    if not (BINFMT / "register").exists():
        done = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            message = f"cannot mount binfmt_misc: {done.stderr.strip()}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        mounted = True
    added = []
    try:
        for arch, line in lines.items():
            if not (BINFMT / QEMU[arch]).exists():
                (BINFMT / "register").write_text(line)
                added.append(QEMU[arch])
        yield Binfmt(tuple(lines))
    finally:
        for entry in added:
            (BINFMT / entry).write_text("-1")
        if mounted:
            subprocess.run(["umount", str(BINFMT)], check=True)


def chroot_run(root: Path, argv: list[str], env: dict[str, str] | None = None,
               input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run argv inside `root` (chroot in the child before exec: the environment reaches only
    the program, not a chroot binary of the host)."""
    def enter() -> None:
        os.chroot(root)
        os.chdir("/")

    return subprocess.run(argv, preexec_fn=enter, env=env or {"PATH": "/usr/bin:/bin"},
                          input=input, capture_output=True, timeout=300)
