"""`slimmer deps` as a user meets it: output formats, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.cli import error_line
from tests.support.cli import run as slimmer
from tests.support.compile import Compile, lib_source, main_source


def test_tree_shows_how_each_library_was_found() -> None:
    done = slimmer("deps", "/usr/bin/jq")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("/usr/bin/jq (dynamic, x86_64, interpreter => "
                        "/lib64/ld-linux-x86-64.so.2)")
    assert "    libjq.so.1 => /lib/x86_64-linux-gnu/libjq.so.1 [cache]" in lines
    assert "        libonig.so.5 => /lib/x86_64-linux-gnu/libonig.so.5 [cache]" in lines


def test_json_schema() -> None:
    done = slimmer("deps", "--json", "/usr/bin/jq", "/usr/bin/curl")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [d["binary"] for d in data] == ["/usr/bin/jq", "/usr/bin/curl"]
    for item in data:
        assert set(item) == {"binary", "kind", "arch", "interpreter", "libraries", "missing"}
        assert (item["kind"], item["arch"]) == ("dynamic", "x86_64")
        assert item["interpreter"] == "/lib64/ld-linux-x86-64.so.2"
        assert item["missing"] == []
        for lib in item["libraries"]:
            assert set(lib) >= {"soname", "path", "needed_by", "found_via"}
            assert os.path.exists(lib["path"])
    libc = next(lib for lib in data[0]["libraries"] if lib["soname"] == "libc.so.6")
    assert libc == {"soname": "libc.so.6", "path": "/lib/x86_64-linux-gnu/libc.so.6",
                    "needed_by": "/usr/bin/jq", "found_via": "cache", "hwcaps": []}


def test_list_is_every_file_once() -> None:
    done = slimmer("deps", "--list", "/usr/bin/jq", "/usr/bin/jq")
    assert done.stdout.splitlines() == [
        "/usr/bin/jq", "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libjq.so.1",
        "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/x86_64-linux-gnu/libonig.so.5"]


def test_bare_name_is_looked_up_in_path() -> None:
    assert slimmer("deps", "--list", "jq").stdout.splitlines()[0] == "/usr/bin/jq"


def test_relative_path_and_static(cc: Compile, tmp_path: Path) -> None:
    cc("st", main_source(), "-static")
    done = slimmer("deps", "--json", "./st", cwd=tmp_path)
    assert json.loads(done.stdout)[0] == {
        "binary": f"{tmp_path}/st", "kind": "static", "arch": "x86_64", "interpreter": None,
        "libraries": [], "missing": []}


def test_missing_libraries_exit_1_naming_all_of_them(cc: Compile, tmp_path: Path) -> None:
    stubs = [cc(f"gone/{n}", lib_source(n.split(".")[0]), "-shared", "-fPIC",
                f"-Wl,-soname,{n}") for n in ("libgone1.so.1", "libgone2.so.2")]
    prog = cc("prog", main_source(), "-Wl,--no-as-needed", *map(str, stubs),
              "-Wl,-rpath,/opt/nowhere")
    for stub in stubs:
        stub.unlink()
    done = slimmer("deps", str(prog))
    assert done.returncode == 1
    errors = done.stderr.splitlines()
    assert len(errors) == 2
    for name in ("libgone1.so.1", "libgone2.so.2"):  # each place searched, once
        assert f"error: {name} needed by {prog}: not found (searched /opt/nowhere, ld.so.cache, " \
            "/lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib)" in errors
    verbose = slimmer("deps", "--verbose", str(prog)).stderr.splitlines()  # every path tried
    for name in ("libgone1.so.1", "libgone2.so.2"):
        line = next(e for e in verbose if e.startswith(f"error: {name} needed by {prog}"))
        assert f"/opt/nowhere/{name}" in line and f"/usr/lib/{name}" in line
        assert "/etc/ld.so.cache" in line
    assert "libgone1.so.1 => NOT FOUND" in done.stdout
    assert "Traceback" not in done.stderr
    js = slimmer("deps", "--json", str(prog))
    assert js.returncode == 1
    assert [m["soname"] for m in json.loads(js.stdout)[0]["missing"]] == [
        "libgone1.so.1", "libgone2.so.2"]


def test_fast_json_text_is_the_same_document(cc: Compile, tmp_path: Path) -> None:
    """--json's text (each shared library encoded once) equals json.dumps of the objects, for
    programs that share libraries, a static one, and one with missing libraries."""
    from slimmer.loader.report import closures_json, closures_json_text
    from slimmer.loader.resolve import Resolver
    from slimmer.loader.root import SysRoot

    stub = cc("gone/libgone.so.1", lib_source("gone"), "-shared", "-fPIC",
              "-Wl,-soname,libgone.so.1")
    prog = cc("prog", main_source(), "-Wl,--no-as-needed", str(stub))
    stub.unlink()
    static = cc("st", main_source(), "-static")
    resolver = Resolver(SysRoot("/"))
    closures = [resolver.closure(p) for p in ("/usr/bin/jq", "/usr/bin/curl", "/usr/bin/jq",
                                              str(static), str(prog), "/usr/bin/git")]
    assert closures[-2].missing
    text = closures_json_text(closures)
    assert text == json.dumps(closures_json(closures))
    assert json.loads(text)[4]["missing"][0]["soname"] == "libgone.so.1"


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\n")
    (tmp_path / "trunc").write_bytes(Path("/usr/bin/jq").read_bytes()[:40])
    (tmp_path / "loop").symlink_to("loop")
    cases = {
        str(tmp_path / "script"): "not an ELF file (a script)",
        str(tmp_path / "trunc"): "truncated ELF header",
        str(tmp_path / "absent"): "no such file",
        str(tmp_path): "is a directory",
        str(tmp_path / "loop"): "too many levels of symbolic links",
    }
    for path, message in cases.items():
        error_line(slimmer("deps", path), message)
        debug = slimmer("--debug", "deps", path)
        assert "Traceback" in debug.stderr and debug.returncode == 1
    bad_root = slimmer("deps", "--root", str(tmp_path / "nowhere"), "/bin/sh")
    assert bad_root.returncode == 1 and "root is not a directory" in bad_root.stderr


def test_root_option(cc: Compile, tmp_path: Path) -> None:
    root = tmp_path / "r"
    cc(root / "usr/bin/p", main_source(), "-static")
    done = slimmer("deps", "--root", str(root), "--list", "/usr/bin/p")
    assert done.stdout.splitlines() == ["/usr/bin/p"]
    assert slimmer("deps", "--root", str(root), "--list", "p").stdout.splitlines() == [
        "/usr/bin/p"]


def test_program_lookup_takes_cwd_and_path(tmp_path: Path) -> None:
    from slimmer.loader.programs import DEFAULT_PATH, program_path
    from slimmer.loader.root import SysRoot

    host = SysRoot("/")
    assert program_path(host, "jq", str(tmp_path)) == "/usr/bin/jq"
    assert program_path(host, "jq", str(tmp_path), path="/nowhere") == f"{tmp_path}/jq"
    (tmp_path / "jq").write_text("")  # a file of that name in cwd wins over PATH
    assert program_path(host, "jq", str(tmp_path), DEFAULT_PATH) == f"{tmp_path}/jq"
    assert program_path(host, "sub/p", "/srv") == "/srv/sub/p"
    image = tmp_path / "r"
    (image / "opt/bin").mkdir(parents=True)
    (image / "opt/bin/p").write_text("")
    assert program_path(SysRoot(str(image)), "p", "/elsewhere", "/usr/bin:/opt/bin/") == (
        "/opt/bin/p")
    assert program_path(SysRoot(str(image)), "q", "/elsewhere") == "/q"


def test_second_build_is_this_command_line_again() -> None:
    """--check-reproducible runs the command again with another output, written from the
    parsed options: however -o was spelt, without --check-reproducible and --push."""
    from slimmer.cli import parser
    from slimmer.cli.shared import command_line_again

    args = parser().parse_args([
        "pack", "--env", "A=-x", "--out=a.tar", "--check-reproducible", "--push",
        "r.example/x:1", "--insecure", "--tag", "t:1", "--compress", "zstd", "--", "/bin/p",
        "-q"])
    assert command_line_again(args, "/tmp/b.tar") == [
        "pack", "--tag=t:1", "--env=A=-x", "--compress=zstd", "--output=/tmp/b.tar", "--",
        "/bin/p", "-q"]
    again = parser().parse_args(command_line_again(args, "/tmp/b.tar"))
    assert (again.binaries, again.env, again.output, again.push) == (
        ["/bin/p", "-q"], ["A=-x"], "/tmp/b.tar", [])


def test_check_reproducible_leaves_this_process_alone(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The second build has umask 077 and TZ=Pacific/Kiritimati in its own process."""
    from slimmer.cli import main

    before_tz = os.environ.get("TZ")
    mask = os.umask(0o022)
    try:
        code = main(["pack", "/usr/bin/jq", "-o", str(tmp_path / "a.tar"),
                     "--check-reproducible"])
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(mask)
    assert code == 0 and "reproducible: a second build" in capsys.readouterr().out
    assert os.environ.get("TZ") == before_tz
