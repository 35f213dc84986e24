"""What the tests assume about the machine they run on, stated and checked in one place.

The tests that compare slimmer with the real loader (`ld.so --list`) run on Debian 12 x86_64
with glibc 2.36, whatever the CPU. The CPU decides $PLATFORM (`haswell` on an Intel CPU with
AVX2, `x86_64` otherwise), the legacy hwcap names (`x86_64`, and `avx512_1` on some Intel
CPUs) and the glibc-hwcaps subdirectories (x86-64-v2...v4): all read here, once, from the
host loader's `--help`, and handed to the resolver as the options of the machine's CPU.

The tools the tests run (gcc, skopeo, mmdebstrap...) are asked for with `need_tool`: a skip
where one is missing, a failure in CI, whose runner installs them all.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from slimmer import Options

IN_CI = os.environ.get("CI") == "true"  # a missing tool fails rather than skips

LOADER = "/lib64/ld-linux-x86-64.so.2"
DISTRO = ("debian", "12")
GLIBC = "2.36"
MACHINE = "x86_64"


def need_tool(name: str) -> str:
    """The path of a tool the tests need; a failure in CI (where .ci/run installs it), a skip
    elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def need_file(path: str, package: str) -> str:
    """A file of a Debian package the tests read or pack that is not a tool in PATH (cowsay's
    /usr/games/cowsay): a failure in CI, a skip elsewhere."""
    if not os.path.isfile(path):
        message = f"{path} is not installed ({package}; make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


COWSAY = "/usr/games/cowsay"  # Debian's cowsay: a perl script whose cows are its package's data
# Debian's pygmentize (python3-pygments): a python script whose modules are its package's, in
# /usr/lib/python3/dist-packages
PYGMENTIZE = "/usr/bin/pygmentize"
# Debian's yq: a python script whose modules are its package's, and python3-yaml's (with an
# extension module, _yaml.so) and python3-xmltodict's, packages it depends on
YQ = "/usr/bin/yq"


JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"  # Debian 12's openjdk-17-jre-headless


def need_java() -> str:
    """Debian 12's JDK 17 (openjdk-17-jre-headless): the program of issue 18's example."""
    java = need_tool("java")
    if not os.path.isfile(f"{JAVA_HOME}/lib/server/libjvm.so"):
        message = f"{JAVA_HOME} is not installed (openjdk-17-jre-headless)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return java


@dataclass(frozen=True, slots=True)
class Host:
    distro: tuple[str, str]  # ID and VERSION_ID of /etc/os-release
    glibc: str
    machine: str
    platform: str  # $PLATFORM, as the loader expands it
    hwcaps: tuple[str, ...]  # glibc-hwcaps subdirectories searched, best first
    legacy_hwcaps: tuple[str, ...]  # legacy hwcap names searched, in bit order

    def options(self, library_path: tuple[str, ...] = ()) -> Options:
        """The resolver options that describe this machine's CPU."""
        return Options(library_path=library_path, hwcaps=self.hwcaps, platform=self.platform,
                       legacy_hwcaps=self.legacy_hwcaps)


def parse_help(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """$PLATFORM, the glibc-hwcaps subdirectories and the legacy hwcap names that glibc 2.36's
    `ld.so --help` says it searches. It prints the legacy names highest bit first."""
    modern, _, legacy = text.partition("Legacy HWCAP subdirectories")
    hwcaps = tuple(re.findall(r"^\s+(\S+) \(supported, searched\)$", modern, re.M))
    found = re.search(r"^\s+(\S+) \(AT_PLATFORM; supported, searched\)$", legacy, re.M)
    assert found is not None, "ld.so --help names no AT_PLATFORM"
    names = re.findall(r"^\s+(\S+) \(supported, searched\)$", legacy, re.M)
    return found.group(1), hwcaps, tuple(reversed([n for n in names if n != "tls"]))


def _os_release() -> tuple[str, str]:
    fields: dict[str, str] = {}
    with open("/etc/os-release") as fh:
        for line in fh:
            key, sep, value = line.strip().partition("=")
            if sep:
                fields[key] = value.strip('"')
    return fields.get("ID", ""), fields.get("VERSION_ID", "")


@functools.cache
def host() -> Host:
    """This machine, checked against the assumptions above (a failure says which one)."""
    distro = _os_release()
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    machine = platform.machine()
    problems = [f"{what} is {got!r}, the tests expect {want!r}" for what, got, want in (
        ("the distribution", distro, DISTRO), ("glibc", glibc, f"glibc {GLIBC}"),
        ("the machine", machine, MACHINE)) if got != want]
    assert not problems, "; ".join(problems)
    done = subprocess.run([LOADER, "--help"], capture_output=True, text=True, check=True)
    plat, hwcaps, legacy = parse_help(done.stdout)
    return Host(distro, glibc, machine, plat, hwcaps, legacy)
