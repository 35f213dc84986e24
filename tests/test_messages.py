"""Messages a person can act on (issue 18): the file first, the problem, the fix last; one
summary for many missing libraries; no line past 300 characters without --verbose; the same
words with a stable `code` in --report json; README's Troubleshooting run as written."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shlex
import shutil
import tarfile
import time
from pathlib import Path

import pytest

import slimmer
from slimmer.errors import LIMIT, SlimmerError, fit
from slimmer.notices import CODES, Notice
from tests.support.cli import run as slimmer_run
from tests.support.compile import Compile, lib_source, main_source
from tests.support.host import JAVA_HOME, need_java

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM = "ld.so.cache, /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib"


def assert_bounded(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= LIMIT, (len(line), line)


# ---- fixtures made here ---------------------------------------------------------------------


def java_like(cc: Compile, top: Path, plugins: int) -> Path:
    """What a JDK is to the loader: `lib/libplugN.so`, each needing libcore.so through
    RUNPATH $ORIGIN, while libcore.so lies in lib/server (the java launcher dlopens it there).
    Returns the directory to --add."""
    core = cc(top / "lib/server/libcore.so", lib_source("core"), "-shared", "-fPIC",
              "-Wl,-soname,libcore.so")
    for n in range(plugins):
        cc(top / f"lib/libplug{n:02}.so", lib_source(f"plug{n}", ("core",)), "-shared",
           "-fPIC", str(core), "-Wl,-rpath,$ORIGIN")
    return top


def other_root(cc: Compile, root: Path) -> Path:
    """A root of its own (the host's loader and libc, merged /usr) whose /usr/bin/qprog needs
    libq.so.1, which only this root holds."""
    gnu = root / "usr/lib/x86_64-linux-gnu"
    gnu.mkdir(parents=True)
    for name in ("libc.so.6",):
        shutil.copy(Path("/lib/x86_64-linux-gnu", name).resolve(), gnu / name)
    shutil.copy(Path("/lib64/ld-linux-x86-64.so.2").resolve(), gnu / "ld-linux-x86-64.so.2")
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    lib = cc(gnu / "libq.so.1", lib_source("q"), "-shared", "-fPIC", "-Wl,-soname,libq.so.1")
    cc(root / "usr/bin/qprog", main_source(("q",)), str(lib))
    return root


def needs_gone(cc: Compile, program: Path) -> Path:
    """A program needing libgone.so.3, which is nowhere any more."""
    gone = cc(program.parent / "gone/libgone.so.3", lib_source("g"), "-shared", "-fPIC",
              "-Wl,-soname,libgone.so.3")
    cc(program, main_source(("g",)), str(gone))
    shutil.rmtree(gone.parent)
    return program


# ---- missing libraries ----------------------------------------------------------------------


def test_many_missing_libraries_are_summed_up_with_the_library_path_that_finds_them(
        cc: Compile, tmp_path: Path) -> None:
    app = java_like(cc, tmp_path / "app", 12)
    launcher = cc("launcher", main_source())
    args = ("pack", str(launcher), "--add", f"{app}:/opt/app", "-o", str(tmp_path / "x.tar"))
    done = slimmer_run(*args)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "error: 12 libraries missing, 1 distinct: libcore.so",
        "  libcore.so: not found, needed by libplug00.so, libplug01.so, libplug02.so and 9 more "
        f"in /opt/app/lib (searched /opt/app/lib, {SYSTEM})",
        "hint: libcore.so: found at /opt/app/lib/server/libcore.so, not on any search path: "
        "add --library-path /opt/app/lib/server",
    ]
    assert not (tmp_path / "x.tar").exists()
    # the same words for machines
    report = slimmer_run(*args, "--report", "json")
    assert json.loads(report.stdout) == {"error": {
        "code": "library-missing",
        "message": "12 libraries missing, 1 distinct: libcore.so",
        "details": [done.stderr.splitlines()[1][2:]],
        "hints": [done.stderr.splitlines()[2][6:]]}}
    # --verbose: every missing library, with every path tried
    verbose = slimmer_run(*args, "--verbose").stderr.splitlines()
    assert verbose[0] == "error: 12 libraries missing, 1 distinct: libcore.so"
    assert verbose[1:13] == [
        f"  libcore.so needed by /opt/app/lib/libplug{n:02}.so: not found (searched: "
        f"/opt/app/lib/libcore.so; /etc/ld.so.cache (libcore.so not listed); "
        "/lib/x86_64-linux-gnu/libcore.so; /usr/lib/x86_64-linux-gnu/libcore.so; "
        "/lib/libcore.so; /usr/lib/libcore.so)" for n in range(12)]
    # and the hint is the fix
    fixed = slimmer_run(*args, "--library-path", "/opt/app/lib/server")
    assert fixed.returncode == 0, fixed.stderr


def test_the_java_like_case_with_long_paths_stays_under_300_characters(
        cc: Compile, tmp_path: Path) -> None:
    app = java_like(cc, tmp_path / "app", 40)
    launcher = cc("launcher", main_source())
    deep = "/opt/" + "/".join(["a-rather-long-vendor-directory-name"] * 5)
    args = ("pack", str(launcher), "--add", f"{app}:{deep}", "-o", str(tmp_path / "x.tar"))
    done = slimmer_run(*args)
    lines = done.stderr.splitlines()
    assert lines[0] == "error: 40 libraries missing, 1 distinct: libcore.so"
    assert_bounded(done.stderr)
    assert re.fullmatch(r"  libcore\.so: not found, needed by libplug00\.so, libplug01\.so, "
                        r"libplug02\.so and 37 more in /opt/.*\.\.\. \(\d+ more characters; "
                        r"--verbose shows all\)", lines[1]), lines[1]
    assert len(lines) == 3 and lines[2].startswith("hint: libcore.so: found at ")
    whole = slimmer_run(*args, "--verbose").stderr.splitlines()
    assert len(whole) == 42 and max(map(len, whole)) > LIMIT
    assert whole[-1] == (f"hint: libcore.so: found at {deep}/lib/server/libcore.so, not on any "
                         f"search path: add --library-path {deep}/lib/server")


def test_the_issue_s_java_command(tmp_path: Path) -> None:
    """The command of issue 18, with the host's JDK: was one line of 18,000 characters."""
    need_java()
    start = time.perf_counter()
    done = slimmer_run("pack", "/usr/bin/java", "--add", f"{JAVA_HOME}:{JAVA_HOME}", "-o",
                       str(tmp_path / "java.tar"))
    took = time.perf_counter() - start
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 3, done.stderr
    assert re.fullmatch(r"error: \d+ libraries missing, 1 distinct: libjvm\.so", lines[0])
    assert lines[1].startswith("  libjvm.so: not found, needed by libattach.so, ")
    assert lines[2].startswith(f"hint: libjvm.so: found at {JAVA_HOME}/lib/server/libjvm.so")
    assert lines[2].endswith(f"add --library-path {JAVA_HOME}/lib/server")
    assert_bounded(done.stderr)
    print(f"java case: {len(done.stderr)} characters of stderr in {took:.2f} s")


def test_a_program_of_another_root_is_told_to_use_root(cc: Compile, tmp_path: Path) -> None:
    root = other_root(cc, tmp_path / "rootfs")
    done = slimmer_run("pack", str(root / "usr/bin/qprog"), "-o", str(tmp_path / "q.tar"))
    assert done.stderr.splitlines() == [
        f"error: libq.so.1 needed by {root}/usr/bin/qprog: not found (searched {SYSTEM})",
        f"hint: {root}: a root of its own, holding /usr/bin/qprog and libq.so.1: pack "
        f"/usr/bin/qprog with --root {root}"]
    fixed = slimmer_run("pack", "--root", str(root), "/usr/bin/qprog", "-o",
                        str(tmp_path / "q.tar"))
    assert fixed.returncode == 0, fixed.stderr


def test_a_library_found_nowhere_is_told_to_add_it(cc: Compile, tmp_path: Path) -> None:
    tool = needs_gone(cc, tmp_path / "build/tool")
    done = slimmer_run("pack", str(tool), "-o", str(tmp_path / "t.tar"))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: libgone.so.3 needed by {tool}: not found (searched {SYSTEM})",
        "hint: libgone.so.3: in no library directory of this machine either: add the file with "
        "--add SRC:DEST, or its directory with --library-path DIR"]


def test_many_distinct_missing_names_are_listed_up_to_a_bound(
        cc: Compile, tmp_path: Path) -> None:
    names = [f"libgone{n:02}.so.1" for n in range(10)]
    libs = [cc(f"gone/{name}", lib_source(f"g{n}"), "-shared", "-fPIC", f"-Wl,-soname,{name}")
            for n, name in enumerate(names)]
    prog = cc("prog", main_source(tuple(f"g{n}" for n in range(10))), *map(str, libs))
    shutil.rmtree(tmp_path / "gone")
    args = ("pack", str(prog), "-o", str(tmp_path / "x.tar"))
    lines = slimmer_run(*args).stderr.splitlines()
    assert lines[0] == ("error: 10 libraries missing, 10 distinct: "
                        f"{', '.join(names[:8])} and 2 more")
    assert lines[1:9] == [f"  {name}: not found, needed by {prog} (searched {SYSTEM})"
                          for name in names[:8]]
    assert lines[9] == "  ... and 2 more names (--verbose shows every missing library)"
    nowhere = ("in no library directory of this machine either: add the file with --add "
               "SRC:DEST, or its directory with --library-path DIR")
    assert lines[10:] == [*(f"hint: {name}: {nowhere}" for name in names[:5]),
                          "hint: ... and 5 more (--verbose shows all)"]
    verbose = slimmer_run(*args, "--verbose").stderr.splitlines()
    assert len(verbose) == 1 + 10 + 10 and verbose[-1] == f"hint: {names[-1]}: {nowhere}"


def test_the_search_elsewhere_is_bounded_and_fast_on_this_machine() -> None:
    """The walk for a file of the missing name over this machine's root (Debian with JDKs,
    python, ruby, node, postgresql...): what it finds, and its time (printed; the figures are
    in docs/messages.md)."""
    from slimmer.assemble.missing import Where, find_elsewhere
    from slimmer.loader.root import SysRoot

    start = time.perf_counter()
    found = find_elsewhere(Where(SysRoot("/")), {"libjq.so.1", "libnothing.so.9"})
    took = time.perf_counter() - start
    assert found == {"libjq.so.1": ["/usr/lib/x86_64-linux-gnu/libjq.so.1"]}
    print(f"search elsewhere on this machine: {took * 1000:.0f} ms")


# ---- programs, why --------------------------------------------------------------------------


def test_a_bare_name_found_nowhere_names_both_places(tmp_path: Path) -> None:
    for command in (("pack", "nosuchprog", "-o", "x.tar"), ("deps", "nosuchprog")):
        done = slimmer_run(*command, cwd=tmp_path)
        assert done.returncode == 1 and done.stderr == (
            f"error: nosuchprog: not in the current directory, nor in PATH ({DEFAULT_PATH})\n")
    inside = slimmer_run("deps", "--root", str(tmp_path), "nosuchprog")
    assert inside.stderr == (f"error: nosuchprog: not in PATH ({DEFAULT_PATH}) inside the root "
                             f"{tmp_path}\n")
    report = slimmer_run("pack", "nosuchprog", "-o", "x.tar", "--report", "json", cwd=tmp_path)
    assert json.loads(report.stdout)["error"]["code"] == "program-not-found"


def test_why_says_what_would_bring_a_path_for_pack_and_for_slim(tmp_path: Path) -> None:
    packed, slimmed = tmp_path / "jq.tar", tmp_path / "jq-slim.tar"
    assert slimmer_run("pack", "/usr/bin/jq", "-o", str(packed)).returncode == 0
    assert slimmer_run("slim", str(packed), "-o", str(slimmed)).returncode == 0
    assert slimmer_run("why", str(packed), "/etc/motd").stderr.splitlines() == [
        "error: /etc/motd: not in the image",
        "hint: pack (or build) with --add SRC:/etc/motd to add it"]
    assert slimmer_run("why", str(slimmed), "/etc/motd").stderr.splitlines() == [
        "error: /etc/motd: not in the image",
        "hint: slim with --keep /etc/motd to keep it"]
    # the same for the image pack would make of a program
    assert slimmer_run("why", "/usr/bin/jq", "/etc/motd").stderr.splitlines()[1] == (
        "hint: pack (or build) with --add SRC:/etc/motd to add it")


def test_why_shows_the_build_s_warning_about_the_path(cc: Compile, tmp_path: Path) -> None:
    """A warning of the build is recorded in the archive's slimmer.json (as --report json
    gives it) and shown by `why` for the path it is about."""
    root = other_root(cc, tmp_path / "root")  # no libgcc_s.so.1 in it
    cc(root / "usr/bin/cancel", "#include <pthread.h>\nint main(void) { "
       "return pthread_cancel(pthread_self()); }\n", "-pthread")
    out = tmp_path / "c.tar"
    done = slimmer_run("pack", "--root", str(root), "/usr/bin/cancel", "-o", str(out),
                       "--report", "json")
    assert done.returncode == 0, done.stderr
    warning = ("libgcc_s.so.1: not found in the root (glibc dlopens it for "
               "pthread_cancel/pthread_exit, used by /usr/bin/cancel); --add it, or --without "
               "the rule")
    report = json.loads(done.stdout)
    assert report["warnings"] == [{
        "code": "dlopen-missing", "path": "libgcc_s.so.1",
        "problem": "not found in the root (glibc dlopens it for pthread_cancel/pthread_exit, "
                   "used by /usr/bin/cancel)",
        "fix": "--add it, or --without the rule", "message": warning}]
    assert set(report) == {"output", "tag", "files", "bytes", "archive_bytes", "image_id",
                           "manifest", "warnings"}
    assert report["image_id"].startswith("sha256:") and report["files"] > 0
    with tarfile.open(out) as archive:
        member = archive.extractfile("slimmer.json")
        assert member is not None
        contents = json.load(member)
    assert contents["made_by"] == "pack" and contents["warnings"] == report["warnings"]
    why = slimmer_run("why", str(out), "/lib/x86_64-linux-gnu/libgcc_s.so.1")
    assert why.stderr.splitlines() == [
        "error: /lib/x86_64-linux-gnu/libgcc_s.so.1: not in the image",
        f"  the build warned: {warning}",
        "hint: pack (or build) with --add SRC:/lib/x86_64-linux-gnu/libgcc_s.so.1 to add it"]
    # printed the same way by pack itself, and reproducibly recorded
    again = slimmer_run("pack", "--root", str(root), "/usr/bin/cancel", "-o",
                        str(tmp_path / "d.tar"))
    assert again.stderr == f"warning: {warning}\n"
    assert out.read_bytes() == (tmp_path / "d.tar").read_bytes()


def test_slim_names_an_entry_program_it_cannot_find(tmp_path: Path) -> None:
    packed = tmp_path / "jq.tar"
    assert slimmer_run("pack", "/usr/bin/jq", "-o", str(packed)).returncode == 0
    out = str(tmp_path / "s.tar")
    by_name = slimmer_run("slim", str(packed), "-o", out, "--entrypoint", "nosuch")
    assert by_name.stderr.splitlines() == [
        f"error: nosuch: the entry program is not in the image's PATH ({DEFAULT_PATH})",
        "hint: say what runs with --entrypoint"]
    by_path = slimmer_run("slim", str(packed), "-o", out, "--entrypoint", "/opt/nosuch")
    assert by_path.stderr.splitlines() == [
        "error: /opt/nosuch: the entry program is not in the image",
        "hint: say what runs with --entrypoint"]


def test_build_reports_json_like_pack(tmp_path: Path) -> None:
    recipe = tmp_path / "jq.toml"
    recipe.write_text('name = "jq"\nprograms = ["/usr/bin/jq"]\n')
    done = slimmer_run("build", str(recipe), "-o", str(tmp_path / "jq.tar"), "--report", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tag"] == "jq:latest" and report["warnings"] == []
    assert report["output"] == str(tmp_path / "jq.tar") and report["bytes"] > 1_000_000
    with tarfile.open(tmp_path / "jq.tar") as archive:
        index = archive.extractfile("index.json")
        assert index is not None
        manifest = json.load(index)["manifests"][0]["digest"]
    assert report["manifest"] == manifest


# ---- the one print point, codes -------------------------------------------------------------


def test_a_long_line_is_cut_at_300_characters_unless_verbose() -> None:
    digest = "sha256:" + "ab" * 32
    short = f"x.tar: layer {digest} does not match {digest}"
    assert fit(short) == short
    long = f"/{'d' * 200}/x.tar: layer {digest} does not match {digest}: " + "z" * 100
    shown = fit(long)
    assert len(shown) <= LIMIT and "sha256:abababababab... does not match" in shown
    assert shown.endswith(" more characters; --verbose shows all)")
    assert fit(long, verbose=True) == long
    huge = "w" * 5000
    cut = fit("warning: " + huge)
    left_out = re.fullmatch(r"warning: w+\.\.\. \((\d+) more characters; --verbose shows all\)",
                            cut)
    assert len(cut) <= LIMIT and left_out is not None
    kept = len(cut.split("... (")[0]) - len("warning: ")
    assert kept + int(left_out.group(1)) == len(huge)  # the count is honest
    notice = Notice("elf-unreadable", "/p", huge, "--without x")
    assert str(notice) == f"/p: {huge}; --without x"  # whole: the print point cuts


def _all_error_classes() -> set[type[SlimmerError]]:
    for info in pkgutil.walk_packages(slimmer.__path__, "slimmer."):
        if not info.name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(info.name)
    found: set[type[SlimmerError]] = set()
    todo: list[type[SlimmerError]] = [SlimmerError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


def test_every_code_is_documented_and_every_documented_code_exists() -> None:
    doc = (ROOT / "docs/messages.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", doc, re.M))
    classes = {cls.code for cls in _all_error_classes()}
    given = set()  # codes given to single errors: SlimmerError(..., code="...")
    for path in (ROOT / "slimmer").rglob("*.py"):
        given |= set(re.findall(r'code="([a-z0-9-]+)"', path.read_text()))
    assert len({cls.code for cls in _all_error_classes()}) == len(_all_error_classes())
    assert documented == classes | given | set(CODES)


# ---- README -------------------------------------------------------------------------------


def troubleshooting_blocks() -> list[tuple[list[str], list[str]]]:
    """README's Troubleshooting: each console block's commands and the output shown."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for body in re.findall(r"```console\n(.*?)```", section, re.S):
        lines = body.splitlines()
        last = max(i for i, line in enumerate(lines) if line.startswith("$ "))
        blocks.append(([line[2:] for line in lines[:last + 1]], lines[last + 1:]))
    return blocks


def test_readme_troubleshooting_shows_what_slimmer_prints(cc: Compile, tmp_path: Path) -> None:
    """Each block is run as written (in an empty directory; /home/me is a directory of the
    test holding the programs the blocks name): the commands before the last succeed, the
    last fails with exactly the first line shown; a further line shown must be printed too
    (up to its `...` when it ends so)."""
    me = tmp_path / "home/me"
    needs_gone(cc, me / "build/tool")
    other_root(cc, me / "rootfs")
    blocks = troubleshooting_blocks()
    assert len(blocks) == 5
    # the JDK's block last: without a JDK (out of CI) the others are checked, then a skip
    blocks.sort(key=lambda block: JAVA_HOME in block[0][-1])
    for n, (commands, shown) in enumerate(blocks):
        if JAVA_HOME in commands[-1]:
            need_java()
        work = tmp_path / f"run{n}"
        work.mkdir()
        for i, command in enumerate(commands):
            words = [w.replace("/home/me", str(me)) for w in shlex.split(command)]
            assert words[0] == "slimmer"
            done = slimmer_run(*words[1:], cwd=work)
            if i < len(commands) - 1:
                assert done.returncode == 0, (command, done.stderr)
        printed = done.stderr.splitlines()
        expected = [line.replace("/home/me", str(me)) for line in shown]
        assert done.returncode == 1 and printed[0] == expected[0], (command, done.stderr)
        for line in expected[1:]:
            if line.endswith("..."):
                assert any(p.startswith(line[:-3]) for p in printed), (line, printed)
            else:
                assert line in printed, (line, printed)
        assert_bounded(done.stderr)


@pytest.mark.parametrize("command", ["pack", "build", "slim", "deps", "why", "inspect"])
def test_verbose_is_an_option_of_every_command(command: str) -> None:
    done = slimmer_run(command, "--help")
    assert done.returncode == 0 and "--verbose" in done.stdout
