"""CPython in packed and slimmed images, run in the private Docker daemon: its bytecode caches
are valid (modules load from them, nothing is compiled or written at start), `zipfile` takes
the image's own files (their time is one ZIP accepts), and a part of CPython's regression
suite gives in the images what it gives in the fat image they came from.

The regression suite is Debian's libpython3.11-testsuite, in a bookworm root made with it
(roots.mmdebstrap_root, cached); the same interpreter, the root as it is (the fat image), that
root slimmed, and /usr/bin/python3 packed from it, each with the suite's modules added."""

from __future__ import annotations

import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer.image.model import DEFAULT_EPOCH
from tests.support.cli import run as slimmer
from tests.support.engines import Docker
from tests.support.roots import mmdebstrap_root

pytestmark = pytest.mark.e2e

PACKAGES = "python3,libpython3.11-testsuite"
TESTS = "/usr/lib/python3.11/test"
NONROOT = ("--user", "65532:65532", "-e", "HOME=/tmp", "-w", "/tmp")
IMPORTS = "import email.message, http.client, json, decimal"
# The modules the python3 recipe promises work (ssl, sqlite3, ctypes/libffi, lzma, bz2,
# decimal/libmpdec, zoneinfo/tzdata, hashlib), json and email, and zipfile.
REGRESSION = ("test_zipfile", "test_json", "test_email", "test_ssl", "test_sqlite3",
              "test_ctypes", "test_lzma", "test_bz2", "test_decimal", "test_zoneinfo",
              "test_hashlib")
# regrtest's results as JUnit XML on stdout (its own report goes to stderr).
RUNNER = ("import subprocess, sys\n"
          "subprocess.run([sys.executable, '-m', 'test', '--junit-xml', '/tmp/junit.xml',"
          " *sys.argv[1:]], stdout=sys.stderr)\n"
          "sys.stdout.write(open('/tmp/junit.xml').read())\n")


@pytest.fixture(scope="session")
def python_root() -> Path:
    """bookworm with python3 and CPython's regression suite, as a directory (cached)."""
    return mmdebstrap_root("bookworm", PACKAGES, fmt="directory")


@pytest.fixture(scope="session")
def images(docker: Docker, python_root: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Tags of: the fat image (the root, python3 its entrypoint); it slimmed with the suite
    added; python3 packed from the root with the suite added; python3 packed from this
    machine. Removed again at the end."""
    work = tmp_path_factory.mktemp("python")
    fat_tar = work / "root.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(python_root), "-cf", str(fat_tar), "."],
                   check=True)
    suffix = uuid.uuid4().hex[:8]
    tags = {name: f"slimmer-py/{name}:{suffix}" for name in ("fat", "slimmed", "packed-root",
                                                             "packed")}
    docker.run("import", "--change", 'ENTRYPOINT ["/usr/bin/python3"]', str(fat_tar),
               tags["fat"])
    fat_tar.unlink()
    loaded = [tags["fat"]]
    try:
        saved = work / "fat.tar"
        docker.run("save", tags["fat"], "-o", str(saved))
        suite = f"{python_root}{TESTS}:{TESTS}"
        builds = {
            "slimmed": ("slim", str(saved), "--add", suite),
            "packed-root": ("pack", "--root", str(python_root), "/usr/bin/python3", "--add",
                            suite),
            "packed": ("pack", "/usr/bin/python3"),
        }
        for name, args in builds.items():
            out = work / f"{name}.tar"
            done = slimmer(*args, "-o", str(out), "--tag", tags[name])
            assert done.returncode == 0, done.stderr
            assert docker.load(out) == tags[name]
            loaded.append(tags[name])
            out.unlink()
        saved.unlink()
        yield tags
    finally:
        for tag in loaded:
            docker.run("rmi", tag, check=False)


def python(docker: Docker, image: str, *args: str,
           options: tuple[str, ...] = NONROOT) -> subprocess.CompletedProcess[bytes]:
    done = docker.run("run", "--rm", "--network", "none", *options, image, *args, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done


@pytest.mark.parametrize("name", ["packed", "slimmed"])
def test_modules_load_from_their_cache(docker: Docker, images: dict[str, str],
                                       name: str) -> None:
    """As the distroless `nonroot` user, who cannot rewrite __pycache__: every module with a
    cache is loaded from it, none is compiled again."""
    log = python(docker, images[name], "-v", "-c", IMPORTS).stderr.decode()
    assert "bytecode is stale" not in log
    for module in ("json/__init__", "email/message", "decimal", "http/client"):
        cached = f"/usr/lib/python3.11/{module.rpartition('/')[0]}/__pycache__".replace(
            "//", "/")
        stem = module.rpartition("/")[2]
        assert f"# code object from '{cached}/{stem}.cpython-311.pyc'" in log, module
    matches = [line for line in log.splitlines() if " matches /usr/lib/python3.11/" in line]
    assert len(matches) >= 40, log[-2000:]


@pytest.mark.parametrize("name", ["packed", "slimmed"])
def test_nothing_is_compiled_at_start_as_root(docker: Docker, images: dict[str, str],
                                              name: str) -> None:
    """As root, who could write them: the caches of every module imported still have the
    image's time (CPython rewrites a stale one as it imports its source)."""
    script = (f"{IMPORTS}; import os, sys; print(sorted({{int(os.stat(m.__cached__).st_mtime) "
              "for m in list(sys.modules.values()) if getattr(m, '__cached__', None) "
              "and os.path.exists(m.__cached__)}))")
    out = python(docker, images[name], "-c", script, options=("--user", "0")).stdout
    assert out.decode() == f"[{DEFAULT_EPOCH}]\n"


@pytest.mark.parametrize("name", ["packed", "slimmed"])
def test_zipfile_takes_the_images_files(docker: Docker, images: dict[str, str],
                                        name: str) -> None:
    script = ("import glob, zipfile\n"
              "with zipfile.ZipFile('/tmp/json.zip', 'w') as z:\n"
              "    for p in sorted(glob.glob('/usr/lib/python3.11/json/*.py')): z.write(p)\n"
              "z = zipfile.ZipFile('/tmp/json.zip')\n"
              "print(len(z.namelist()), z.testzip(), sorted({i.date_time for i in z.infolist()}))")
    out = python(docker, images[name], "-c", script).stdout.decode()
    assert out == "5 None [(1980, 1, 2, 0, 0, 0)]\n"


# The one reason a test may be skipped in a slim image and pass in the fat one: it runs a shell
# script, and slim images have no shell unless asked for (test_zipfile's executable zips).
NO_SHELL = "Test relies on #!/bin/bash working."


def outcomes(junit: bytes) -> dict[str, tuple[str, str]]:
    """test id -> (passed, failed, error or skipped; the skip's reason), from regrtest's JUnit
    XML."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.fromstring(junit).iter("testcase"):
        status, reason = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                status = {"failure": "failed"}.get(kind, kind)
                reason = (element.text or "") if kind == "skipped" else ""
        found[str(case.get("name"))] = (status, reason)
    return found


@pytest.fixture(scope="session")
def fat_outcomes(docker: Docker, images: dict[str, str]) -> dict[str, tuple[str, str]]:
    return outcomes(python(docker, images["fat"], "-c", RUNNER, *REGRESSION).stdout)


@pytest.mark.parametrize("name", ["packed-root", "slimmed"])
def test_regression_suite_as_in_the_fat_image(docker: Docker, images: dict[str, str],
                                              fat_outcomes: dict[str, tuple[str, str]],
                                              name: str) -> None:
    """The same tests, the same results: every test that passes in the fat image passes in
    the slim one (but those that need a shell, skipped for that reason), and what the fat
    image fails or skips (no network, no compiler...) is the same."""
    found = outcomes(python(docker, images[name], "-c", RUNNER, *REGRESSION).stdout)
    counts = Counter(status for status, _ in fat_outcomes.values())
    assert counts["passed"] > 2000, counts
    failing = sorted(test for test, (status, _) in fat_outcomes.items() if status != "passed"
                     and status != "skipped")
    print(f"fat: {dict(counts)}, failing {failing}; "
          f"{name}: {dict(Counter(s for s, _ in found.values()))}")
    differ = {test: (fat_outcomes.get(test), found.get(test))
              for test in fat_outcomes.keys() | found.keys()
              if fat_outcomes.get(test) != found.get(test)}
    no_shell = {test for test, (fat, slim) in differ.items()
                if fat == ("passed", "") and slim == ("skipped", NO_SHELL)}
    assert len(no_shell) <= 3, sorted(no_shell)
    assert not differ.keys() - no_shell, sorted(differ.items())[:40]
