"""Scripts, command lines and applications as evidence, without an engine: what a shell script
runs (loader/shell.py), what the assembly brings for it and why (assemble/commands.py, apps.py),
and the warnings where the evidence ends."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from slimmer.assemble.apps import parse_pyvenv
from slimmer.assemble.assembly import Assembled, assemble
from slimmer.assemble.options import BuildOptions
from slimmer.assemble.spec import ImageSpec
from slimmer.image.model import RunConfig
from slimmer.loader.root import SysRoot
from slimmer.loader.shell import parse_commands
from slimmer.notices import CODES
from slimmer.tree import File
from tests.support.archives import (
    Member,
    docker_archive,
    layer_tar,
    tiny_static_elf,
    unpack_layer,
)
from tests.support.cli import run as slimmer
from tests.support.compile import Compile, lib_source, main_source
from tests.support.roots import small_root

# ---- the parser -------------------------------------------------------------------------------

RUNS = [
    # (script, the programs it runs, in order of first appearance)
    (b"jq . | head -n1 | sort -u", ["jq", "head", "sort"]),
    (b"( cd /; ls ) && { uniq; } || tr a b", ["ls", "uniq", "tr"]),
    (b"x=$(date +%s); echo `hostname` \"$(id -u)\"", ["date", "hostname", "id"]),
    (b"if grep -q x f; then sed 1d; elif awk 1; then :; else cut -f1; fi", [
        "grep", "sed", "awk", "cut"]),
    (b"while read l; do wc -l; done < f; for i in 1 2; do seq 3; done", ["wc", "seq"]),
    (b'case "$1" in start) nginx ;; stop|*) pkill nginx ;; esac', ["nginx", "pkill"]),
    (b"f() { gzip -d; }\nf; g() { f; }; g", ["gzip"]),  # functions are no programs
    (b"set -e; export A=1; cd /; echo hi; printf x; test -x y; [ -f z ]; true; read v; "
     b"local q; trap '' INT; wait; kill 1; pwd; type ls; shift; exit 0", []),  # builtins
    (b"A=1 B=2 env C=3 -u D curl -s x", ["env", "curl"]),
    (b"exec -a name tini -- gosu app:app python3 app.py", ["tini", "gosu", "python3"]),
    (b"find . -print0 | xargs -0 -n 2 -I {} md5sum {}", ["find", "xargs", "md5sum"]),
    (b"nice -n 5 nohup timeout -s KILL 10 stdbuf -oL tail -f log", [
        "nice", "nohup", "timeout", "stdbuf", "tail"]),
    (b"time sleep 1; command -v jq >/dev/null; command curl x", ["sleep", "curl"]),
    (b"sh -c 'jq .; bash -c \"du -s; dash -ec tac\"'", ["sh", "jq", "bash", "du", "dash", "tac"]),
    (b"/usr/bin/env python3 -c 1; ./local.sh; \"/opt/x/bin/run\" --a", [
        "/usr/bin/env", "python3", "./local.sh", "/opt/x/bin/run"]),
    (b"eval \"gzip -c\"; xz <f | 'zstd' -q", ["gzip", "xz", "zstd"]),
    (b"cat <<EOF\n$(basename x)\nEOF\nmv a b", ["cat", "basename", "mv"]),
]


@pytest.mark.parametrize(("text", "programs"), RUNS, ids=[r[0][:30].decode() for r in RUNS])
def test_the_programs_a_script_runs(text: bytes, programs: list[str]) -> None:
    found = parse_commands(text)
    assert [c.name for c in found.commands] == programs
    assert not found.unparsed and not found.computed


def test_computed_commands_arguments_and_sourced_files() -> None:
    found = parse_commands(b'#!/bin/sh\n. /etc/default/app\nsource lib.sh\n$CMD -x\n'
                           b'"${RUNNER}" y\n$(which zz) arg\nsh ./setup.sh\nexec "$@"\n')
    assert [(c.text, c.line) for c in found.computed] == [
        ("$CMD", 4), ('"${RUNNER}"', 5), ("$(which zz)", 6)]
    assert found.sourced == ("/etc/default/app", "lib.sh", "./setup.sh")
    assert found.runs_arguments
    assert [c.name for c in found.commands] == ["which", "sh"]
    assert not parse_commands(b"echo $@").runs_arguments


def test_variables_with_literal_values_name_their_programs() -> None:
    found = parse_commands(b"#!/bin/sh\ncase $1 in\n*.gz) unz='gzip -cd' ;;\n"
                           b"*.bz2) unz=bzip2 ;;\nesac\n$unz \"$1\" | ${PAGER:-less}\n"
                           b"for t in a b; do $t; done\nCMD=$(which x); \"$CMD\"\n"
                           b"g='${GREP-'\\''grep'\\''}'; eval \"$g x\"\n")  # zgrep's way
    assert [(c.name, c.alternative) for c in found.commands] == [
        ("gzip", True), ("bzip2", True), ("less", False), ("which", False), ("grep", True)]
    assert [c.text for c in found.computed] == ["$t", '"$CMD"']


def test_eval_strings_are_read_with_their_lines() -> None:
    found = parse_commands(b"#!/bin/sh\nx=1\n\neval \"tar -x$v\" '| gzip'\n"
                           b"sh -c '\n  md5sum\n  $cmd'\n")
    assert [(c.name, c.line) for c in found.commands] == [
        ("tar", 4), ("gzip", 4), ("sh", 5), ("md5sum", 6)]
    assert [(c.text, c.line) for c in found.computed] == [("$cmd", 7)]


def test_the_files_a_script_names() -> None:
    found = parse_commands(b"jq -f /etc/app/filter.jq < /srv/in.json > /tmp/out\n"
                           b"curl -s file:///etc/debian_version $HOME/x rel/path /\n"
                           b"sh -c 'cat /etc/motd'\n")
    assert found.paths == ("/etc/app/filter.jq", "/srv/in.json", "/tmp/out",
                           "/etc/debian_version", "/etc/motd")


def test_what_the_parser_cannot_read_is_named_not_raised() -> None:
    found = parse_commands(b"jq .\nif then fi ((\ncurl x\n")
    assert found.unparsed and "jq" in [c.name for c in found.commands]
    for junk in (b"\x00\xff\xfe" * 50, b"", b"((((((((((", b"'unterminated", b"`" * 1000):
        parse_commands(junk)  # never an exception


def test_nesting_is_bounded() -> None:
    inner = "jq"
    for _ in range(10):
        inner = f"sh -c {_quote(inner)}"
    names = [c.name for c in parse_commands(inner.encode()).commands]
    assert names == ["sh"]  # the sh -c strings are read 4 levels deep: jq is 10 down


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_every_warning_code_is_listed() -> None:
    for code in ("script-command-missing", "script-command-computed", "script-unparsed",
                 "app-path-missing"):
        assert code in CODES


# ---- what the assembly brings -----------------------------------------------------------------


def _program(root: Path, path: str, message: bytes = b"x\n") -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(tiny_static_elf(message))
    target.chmod(0o755)


def _file(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _assemble(root: Path, programs: tuple[str, ...], config: RunConfig | None = None,
              base: RunConfig | None = None) -> Assembled:
    build = BuildOptions(programs=programs, root=str(root), builtin_recipes=False)
    image_root = SysRoot(root) if base is not None else None  # slim reads an image's root
    return assemble(ImageSpec(config or RunConfig()), build, image_root, base)


def _script_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for program in ("/bin/sh", "/usr/bin/jq", "/usr/bin/curl", "/usr/bin/tool", "/usr/bin/head",
                    "/usr/bin/env", "/usr/bin/grep", "/usr/bin/unused"):
        _program(root, program)
    _file(root, "/usr/local/bin/helper", "#!/bin/sh\ntool --x | head -n 1\nnot-there-deep\n",
          0o755)
    _file(root, "/etc/app.conf", "A=1\n")
    _file(root, "/etc/app/filter.jq", ".a\n")
    _file(root, "/srv/run.sh", "#!/bin/sh\n. /etc/app.conf\nset -e\n"
          "jq -f /etc/app/filter.jq </dev/stdin | curl -s file:///usr/share -T /none\n"
          "grep -q root /etc/passwd /etc/group\nsh -c 'helper'\n$RUNNER go\nmissing-one\n",
          0o755)
    return root


def test_a_script_brings_what_it_runs_with_reasons_and_warnings(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    done = _assemble(root, ("/srv/run.sh",))
    reasons = done.tree.reasons
    assert reasons["/usr/bin/jq"] == "run by /srv/run.sh (line 4)"
    assert reasons["/usr/bin/curl"] == "run by /srv/run.sh (line 4)"
    assert reasons["/usr/local/bin/helper"] == "script, run by /srv/run.sh (line 6)"
    assert reasons["/usr/bin/tool"] == "run by /usr/local/bin/helper (line 2)"  # recursively
    assert reasons["/etc/app.conf"] == "read by /srv/run.sh (. or sh)"
    assert reasons["/etc/app/filter.jq"] == "named by /srv/run.sh"
    assert "/usr/share" not in done.tree  # a directory named is no evidence
    assert "/usr/bin/unused" not in done.tree
    warned = {(w.code, w.path): str(w) for w in done.warnings}
    assert len(warned) == len(done.warnings) == 2
    assert set(warned) == {("script-command-computed", "/srv/run.sh"),
                           ("script-command-missing", "/srv/run.sh")}  # not the helper's
    assert warned[("script-command-missing", "/srv/run.sh")].startswith(
        "/srv/run.sh: runs missing-one (line 8), which is not in the image's PATH (")
    assert "$RUNNER (line 7)" in warned[("script-command-computed", "/srv/run.sh")]


def test_pack_prints_the_warnings(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    done = slimmer("pack", "--root", str(root), "/srv/run.sh", "-o", str(tmp_path / "o.tar"))
    assert done.returncode == 0, done.stderr
    assert ("warning: /srv/run.sh: runs missing-one (line 8), which is not in the image's PATH"
            in done.stderr)
    why = slimmer("why", str(tmp_path / "o.tar"), "/usr/bin/tool")
    assert "run by /usr/local/bin/helper (line 2)" in why.stdout, why


def test_a_sh_c_command_line_is_read(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    done = _assemble(root, ("/bin/sh",), RunConfig(
        entrypoint=("/bin/sh", "-c", "jq . /etc/app.conf && exec env A=1 helper")))
    assert done.tree.reasons["/usr/bin/jq"] == "run by the image's Entrypoint/Cmd (line 1)"
    assert "/usr/bin/tool" in done.tree  # helper's
    assert not done.warnings


def test_slim_keeps_the_application_its_command_line_names(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    _program(root, "/usr/bin/python3")
    _file(root, "/srv/app/server.py", "import mod\n")
    _file(root, "/srv/app/mod.py", "")
    _file(root, "/srv/app/static/index.html", "hi", 0o640)
    _file(root, "/data/conf.ini", "")
    _file(root, "/etc/other.conf", "")
    base = RunConfig(working_dir="/srv/app", cmd=(
        "python3", "server.py", "--config=/data/conf.ini", "missing/data.csv", "gone.py",
        "/etc/other.conf", "plain-word", "/dev/stdout", "http://x/y"))
    done = _assemble(root, ("/usr/bin/python3",), base=base)
    reasons = done.tree.reasons
    assert reasons["/srv/app"] == "working directory"
    assert reasons["/srv/app/static/index.html"] == "working directory"
    assert reasons["/data/conf.ini"] == "entrypoint argument"
    assert reasons["/etc/other.conf"] == "entrypoint argument"
    entry = done.tree.get("/srv/app/static/index.html")
    assert isinstance(entry, File) and entry.mode == 0o640
    missing = sorted(w.path for w in done.warnings if w.code == "app-path-missing")
    assert missing == ["gone.py", "missing/data.csv"]


@pytest.mark.parametrize("workdir", ["", "/", "/usr", "/root", "/tmp", "/etc", "/var/lib"])
def test_a_system_working_directory_is_not_kept(tmp_path: Path, workdir: str) -> None:
    root = _script_root(tmp_path)
    for directory in ("/usr/share/doc", "/root", "/tmp", "/var/lib/x"):
        _file(root, f"{directory}/f", "")
    done = _assemble(root, ("/usr/bin/jq",), base=RunConfig(working_dir=workdir, cmd=("jq",)))
    assert not [p for p, r in done.tree.reasons.items() if r == "working directory"]


def test_slim_reads_a_shell_script_argument(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    _file(root, "/app/start.sh", "#!/bin/sh\njq .\n")
    done = _assemble(root, ("/bin/sh",), base=RunConfig(working_dir="/app",
                                                        cmd=("sh", "start.sh")))
    assert done.tree.reasons["/usr/bin/jq"] == "run by /app/start.sh (line 2)"


# ---- virtualenvs ------------------------------------------------------------------------------


def test_pyvenv_cfg_is_read_as_site_py_does() -> None:
    assert parse_pyvenv(b"home = /usr/bin\nInclude-System-Site-Packages = false\n"
                        b"version = 3.11.2\nnonsense\n") == {
        "home": "/usr/bin", "include-system-site-packages": "false", "version": "3.11.2"}


def test_a_virtualenv_comes_whole_with_its_native_libraries(tmp_path: Path,
                                                            cc: Compile) -> None:
    root = small_root(tmp_path, cc)  # host libc and loader
    cc(root / "usr/bin/python3.11", main_source())
    os.symlink("python3.11", root / "usr/bin/python3")
    venv = root / "opt/venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3", venv / "bin/python3")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\n"
                                     "version = 3.11.2\n")
    site = venv / "lib/python3.11/site-packages"
    cc(site / "pkg.libs/libdep-1a2b.so", lib_source("dep"), "-shared", "-fPIC",
       "-Wl,-soname,libdep-1a2b.so")
    cc(site / "pkg/_ext.so", lib_source("ext", ("dep",)), "-shared", "-fPIC",
       str(site / "pkg.libs/libdep-1a2b.so"), "-Wl,-rpath,$ORIGIN/../pkg.libs")
    (site / "pkg/__init__.py").write_text("from . import _ext\n")
    _file(root, "/usr/lib/python3/dist-packages/sys_pkg.py", "")
    _file(root, "/opt/app/app.py", "#!/opt/venv/bin/python3\nimport pkg\n", 0o755)
    done = _assemble(root, ("/opt/app/app.py",))
    reasons = done.tree.reasons
    why = "virtualenv of /opt/venv/bin/python3 (/opt/venv/pyvenv.cfg)"
    assert reasons["/opt/venv/pyvenv.cfg"] == why
    assert reasons["/opt/venv/lib/python3.11/site-packages/pkg/__init__.py"] == why
    assert reasons["/opt/venv/lib/python3.11/site-packages/pkg/_ext.so"] == why
    assert reasons["/opt/venv/lib/python3.11/site-packages/pkg.libs/libdep-1a2b.so"] == why
    assert reasons["/usr/bin/python3.11"] in ("interpreter", "program",
                                              "base interpreter of /opt/venv (pyvenv.cfg home)")
    assert reasons["/usr/lib/python3/dist-packages/sys_pkg.py"] == (
        "system site-packages of /opt/venv (include-system-site-packages)")
    assert "/usr/lib/x86_64-linux-gnu/libz.so.1" not in done.tree  # nothing needs it
    assert not done.warnings


def test_pack_of_a_venv_python_brings_the_venv(tmp_path: Path, cc: Compile) -> None:
    root = small_root(tmp_path, cc)
    cc(root / "usr/bin/python3.11", main_source())
    venv = root / "srv/venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3.11", venv / "bin/python3")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    _file(root, "/srv/venv/lib/python3.11/site-packages/m.py", "")
    done = _assemble(root, ("/srv/venv/bin/python3",))
    assert "/srv/venv/lib/python3.11/site-packages/m.py" in done.tree
    assert "/usr/lib/python3/dist-packages" not in done.tree  # not asked for


def test_a_base_interpreter_outside_usr_brings_its_standard_library(tmp_path: Path,
                                                                     cc: Compile) -> None:
    root = small_root(tmp_path, cc)
    cc(root / "opt/py/bin/python3.12", main_source())  # a pyenv-like build: no recipe for it
    _file(root, "/opt/py/lib/python3.12/os.py", "")
    _file(root, "/opt/py/include/python3.12/Python.h", "")
    venv = root / "srv/venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink("/opt/py/bin/python3.12", venv / "bin/python3")
    (venv / "pyvenv.cfg").write_text("home = /opt/py/bin\nversion = 3.12.1\n")
    done = _assemble(root, ("/srv/venv/bin/python3",))
    assert done.tree.reasons["/opt/py/lib/python3.12/os.py"] == (
        "standard library of the base interpreter of /srv/venv (pyvenv.cfg home)")
    assert "/opt/py/include/python3.12/Python.h" not in done.tree
    assert not done.warnings  # no interpreter-unknown: pyvenv.cfg is its evidence


def test_a_venv_script_of_a_build_tree_moves_with_its_venv(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(project / "venv")],
                   check=True)
    (project / "mod").mkdir()
    (project / "mod/__init__.py").write_text("X = 42\n")
    app = project / "app.py"
    app.write_text(f"#!{project}/venv/bin/python3 -I\nimport sys\nprint(sys.prefix)\n")
    app.chmod(0o755)
    out = tmp_path / "venv.tar"
    done = slimmer("pack", str(app), "-o", str(out))
    assert done.returncode == 0, done.stderr
    layer = unpack_layer(out, tmp_path / "unpacked")
    assert (layer / "app/app.py").read_bytes().startswith(b"#!/app/venv/bin/python3 -I\n")
    assert (layer / "app/venv/pyvenv.cfg").is_file()
    if os.geteuid() == 0:  # the image's own files, alone
        ran = subprocess.run(["chroot", str(layer), "/app/app.py"], capture_output=True,
                             text=True)
        assert (ran.returncode, ran.stdout) == (0, "/app/venv\n"), ran.stderr


def test_an_entry_script_that_runs_its_arguments(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    _file(root, "/entry.sh", '#!/bin/sh\nset -e\nexec "$@"\n', 0o755)
    done = _assemble(root, ("/entry.sh",), base=RunConfig(entrypoint=("/entry.sh",),
                                                          cmd=("jq", "-n", "1")))
    assert done.tree.reasons["/usr/bin/jq"] == (
        "run by the arguments /entry.sh runs (\"$@\") (line 1)")
    assert not done.warnings


def test_an_interpreter_no_recipe_knows_is_named(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    _program(root, "/usr/bin/ruby3.1")
    os.symlink("ruby3.1", root / "usr/bin/ruby")
    _file(root, "/srv/a.rb", "#!/usr/bin/ruby\nputs 1\n", 0o755)
    _file(root, "/srv/b.rb", "#!/usr/bin/env ruby\nputs 2\n", 0o755)
    _file(root, "/srv/f.jq", "#!/usr/bin/jq -f\n.a\n", 0o755)
    done = _assemble(root, ("/srv/a.rb", "/srv/b.rb", "/srv/f.jq"))
    assert [(w.code, w.path) for w in done.warnings] == [("interpreter-unknown", "/srv/a.rb")]
    assert str(done.warnings[0]).startswith("/srv/a.rb: runs with /usr/bin/ruby, which no "
                                            "recipe knows")
    _file(root, "/var/lib/dpkg/status", "")  # package data is the evidence then
    assert not _assemble(root, ("/srv/a.rb",)).warnings


def test_hostile_roots_give_warnings_not_errors(tmp_path: Path) -> None:
    root = _script_root(tmp_path)
    os.symlink("loop", root / "usr/bin/loop")  # a command that is a symlink loop
    os.symlink("b", root / "srv/a")
    os.symlink("a", root / "srv/b")
    junk = b"\x00\xff" * (3 << 20)  # a self-extracting "script": 6 MiB of data after exit
    (root / "srv/big.sh").write_bytes(b"#!/bin/sh\njq .\nexit 0\n" + junk)
    (root / "srv/big.sh").chmod(0o755)
    done = _assemble(root, ("/srv/big.sh",), base=RunConfig(
        working_dir="/srv", entrypoint=("/srv/big.sh",), cmd=("/srv/a", "b", "loop")))
    assert done.tree.reasons["/usr/bin/jq"] == "run by /srv/big.sh (line 2)"
    assert {w.code for w in done.warnings} <= {"script-unparsed", "app-path-missing"}


def test_slim_report_json_carries_the_warnings(tmp_path: Path) -> None:
    """A hand-made image whose entry script runs what the image lacks: each warning is an
    object of `--report json`, and printed with the summary."""
    script = b"#!/bin/sh\njq .\n$RUNNER x\n"
    layer: list[Member] = [("dir", "bin", b""), ("file", "bin/sh", tiny_static_elf(b"sh\n")),
                           ("file", "entry.sh", script)]
    fat = docker_archive(tmp_path / "fat.tar", [layer], config={
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/entry.sh"], "Cmd": ["data/in.csv"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(layer_tar(layer)).hexdigest()]}})
    done = slimmer("slim", str(fat), "-o", str(tmp_path / "slim.tar"), "--report", "json")
    assert done.returncode == 0, done.stderr
    warnings = json.loads(done.stdout)["warnings"]
    assert [(w["code"], w["path"]) for w in warnings] == [
        ("app-path-missing", "data/in.csv"),
        ("script-command-computed", "/entry.sh"),
        ("script-command-missing", "/entry.sh")]
    text = slimmer("slim", str(fat), "-o", str(tmp_path / "slim2.tar"))  # the summary
    assert text.returncode == 0, text.stderr
    for warning in warnings:
        assert f"warning: {warning['message']}\n" in text.stderr
        assert warning["message"].endswith(f"; {warning['fix']}")
