"""The modules of a packaged script (assemble/script_packages.py): a tiny root with a fake dpkg
database, python and perl scripts whose packages ship modules in their interpreter's module
directories and depend on packages that do, as Debian's yq (python3-yaml, python3-xmltodict)
and pygmentize (python3-pygments) do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from slimmer.assemble.assembly import Assembled
from slimmer.assemble.runtime import DEFAULT_ON
from tests.support.archives import tiny_static_elf
from tests.support.cli import run as slimmer
from tests.support.dpkgroot import assemble_in, write_database
from tests.support.engines import Docker
from tests.support.host import PYGMENTIZE, YQ, need_file, need_tool

DIST = "/usr/lib/python3/dist-packages"
PERL5 = "/usr/share/perl5"
# package -> (Depends, files it lists)
PACKAGES = {
    "tool": ("python3, python3-dep, clib", (
        "/usr/bin/tool", DIST, f"{DIST}/tool", f"{DIST}/tool/__init__.py",
        f"{DIST}/tool/__pycache__/__init__.cpython-311.pyc",
        f"{DIST}/tool-1.0.egg-info", f"{DIST}/tool-1.0.egg-info/entry_points.txt",
        "/usr/share/doc/tool/copyright")),
    "python3-dep": ("python3-deeper, python3", (
        f"{DIST}/dep/__init__.py", f"{DIST}/dep/_fast.so", f"{DIST}/Dep-2.0.dist-info/METADATA",
        "/usr/share/python3-dep/extra.txt")),
    "python3-deeper": ("", (f"{DIST}/deeper.py",)),
    # the interpreter's own: nothing it ships or depends on comes from this step
    "python3": ("python3.11, python3-hidden", ("/usr/bin/python3", f"{DIST}/interp_own.py")),
    "python3.11": ("", ("/usr/bin/python3.11", "/usr/lib/python3.11/os.py")),
    "python3-hidden": ("", (f"{DIST}/hidden.py",)),
    # no module of python: what it depends on is not reached
    "clib": ("python3-behind", ("/usr/lib/x86_64-linux-gnu/libclib.so.1",)),
    "python3-behind": ("", (f"{DIST}/behind.py",)),
    "ptool": ("perl, libfoo-perl", ("/usr/bin/ptool", f"{PERL5}/PTool.pm")),
    "libfoo-perl": ("libbar-perl", (f"{PERL5}/Foo.pm", "/usr/share/libfoo-perl/table.txt")),
    "libbar-perl": ("", (f"{PERL5}/Bar.pm", "/usr/share/man/man3/Bar.3pm.gz")),
    "perl": ("", ("/usr/bin/perl", f"{PERL5}/CoreExtra.pm")),
}
OWN = "module of tool, the package of script /usr/bin/tool"


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    listed = [p for _, files in PACKAGES.values() for p in files]
    for path in listed:
        target = root / path[1:]
        if any(p.startswith(path + "/") for p in listed):  # a directory
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"data\n")
    (root / "usr/bin/python3").unlink()
    (root / "usr/bin/python3").symlink_to("python3.11")
    for interpreter in ("usr/bin/python3.11", "usr/bin/perl"):
        (root / interpreter).write_bytes(tiny_static_elf(b"interpreter\n"))
        (root / interpreter).chmod(0o755)
    (root / f"{DIST[1:]}/dep/_fast.so").write_bytes(tiny_static_elf(b"module\n"))
    (root / "usr/bin/env").write_bytes(tiny_static_elf(b"env\n"))
    (root / "usr/bin/env").chmod(0o755)
    scripts = {"usr/bin/tool": "#!/usr/bin/python3\nimport tool\n",
               "usr/bin/ptool": "#!/usr/bin/env perl\nuse PTool;\n",
               "usr/local/bin/loose": "#!/usr/bin/python3\nimport tool\n"}  # no package's
    for script, text in scripts.items():
        (root / script).parent.mkdir(parents=True, exist_ok=True)
        (root / script).write_text(text)
        (root / script).chmod(0o755)
    write_database(root, PACKAGES)
    return root


_assemble = assemble_in


def _modules(done: Assembled) -> dict[str, str]:
    return {path: reason for path, reason in done.tree.reasons.items()
            if reason.startswith("module of ")}


def test_a_script_brings_its_packages_modules_and_its_dependencies(tmp_path: Path) -> None:
    assert "script-packages" in DEFAULT_ON
    done = _assemble(_root(tmp_path), "/usr/bin/tool")
    dep = "module of python3-dep, which script /usr/bin/tool needs (tool depends on it)"
    deeper = ("module of python3-deeper, which script /usr/bin/tool needs (python3-dep "
              "depends on it)")
    assert _modules(done) == {
        f"{DIST}/tool/__init__.py": OWN,
        f"{DIST}/tool-1.0.egg-info/entry_points.txt": OWN,  # its entry points
        f"{DIST}/dep/__init__.py": dep,
        f"{DIST}/dep/_fast.so": dep,
        f"{DIST}/Dep-2.0.dist-info/METADATA": dep,
        f"{DIST}/deeper.py": deeper,  # transitively
    }
    tree = done.tree
    # not the interpreter's packages nor what only they depend on; not a module package behind
    # a package that is no module; not a dependency's other files; not bytecode or docs
    for path in (f"{DIST}/interp_own.py", f"{DIST}/hidden.py", f"{DIST}/behind.py",
                 "/usr/share/python3-dep/extra.txt", "/usr/lib/x86_64-linux-gnu/libclib.so.1",
                 f"{DIST}/tool/__pycache__/__init__.cpython-311.pyc",
                 "/usr/share/doc/tool/copyright", "/usr/lib/python3.11/os.py"):
        assert path not in tree, path
    # its own package's modules were all it left out before: nothing to warn about now
    assert not [w for w in done.warnings if w.code == "script-data-left-out"], done.warnings


def test_perl_through_env(tmp_path: Path) -> None:
    """`#!/usr/bin/env perl`: the interpreter is the program env runs."""
    done = _assemble(_root(tmp_path), "/usr/bin/ptool")
    assert _modules(done) == {
        f"{PERL5}/PTool.pm": "module of ptool, the package of script /usr/bin/ptool",
        f"{PERL5}/Foo.pm": "module of libfoo-perl, which script /usr/bin/ptool needs (ptool "
                           "depends on it)",
        f"{PERL5}/Bar.pm": "module of libbar-perl, which script /usr/bin/ptool needs "
                           "(libfoo-perl depends on it)",
    }
    assert f"{PERL5}/CoreExtra.pm" not in done.tree  # perl's own
    assert "/usr/share/libfoo-perl/table.txt" not in done.tree  # not a module


def test_a_script_no_package_owns_brings_nothing(tmp_path: Path) -> None:
    done = _assemble(_root(tmp_path), "/usr/local/bin/loose")
    assert "/usr/local/bin/loose" in done.tree
    assert not _modules(done)
    assert not [p for p in done.tree.reasons if p.startswith(DIST + "/")]


def test_without_script_packages(tmp_path: Path) -> None:
    """Switched off, nothing comes and the warning names what the script's package left out."""
    done = _assemble(_root(tmp_path), "/usr/bin/tool",
                     without=frozenset({"script-packages"}))
    assert not _modules(done)
    assert f"{DIST}/tool/__init__.py" not in done.tree
    warned = [str(w) for w in done.warnings if w.code == "script-data-left-out"]
    assert len(warned) == 1 and warned[0].startswith(
        "/usr/bin/tool: 2 data files of its package tool left out"), warned


# ---- Debian's scripts in Docker ----------------------------------------------------------------

CODE = b"def greet(name):\n    return f'hello {name}'  # a comment\n"


@pytest.mark.e2e
def test_pygmentize_colours_python_with_no_flag(docker: Docker, tmp_path: Path) -> None:
    """Debian's pygmentize: its `pygments` package is python3-pygments' own, in dist-packages;
    without it the image failed with `ModuleNotFoundError: No module named 'pygments'`."""
    pygmentize = need_file(PYGMENTIZE, "python3-pygments")
    args = ("-l", "python", "-f", "terminal")
    host = subprocess.run([pygmentize, *args], input=CODE, capture_output=True, check=True)
    out = tmp_path / "pygmentize.tar"
    done = slimmer("pack", pygmentize, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    with docker.loaded(out) as tag:
        ran = docker.run("run", "--rm", "-i", "--network", "none", tag, *args, input=CODE,
                         check=False)
    assert (ran.returncode, ran.stdout) == (0, host.stdout), ran.stderr
    assert b"\x1b[" in ran.stdout and b"greet" in ran.stdout  # coloured
    why = slimmer("why", str(out), "/usr/lib/python3/dist-packages/pygments/lexers/python.py")
    assert "module of python3-pygments, the package of script /usr/bin/pygmentize" in \
        why.stdout, why


@pytest.mark.e2e
def test_yq_reads_yaml_with_its_dependencies_modules(docker: Docker, tmp_path: Path) -> None:
    """Debian's yq: its own modules and python3-yaml's (the C extension with libyaml) and
    python3-xmltodict's; and jq, which it runs by name (its package depends on jq): no flag."""
    yq = need_file(YQ, "yq")
    need_tool("jq")
    data = b"a:\n  - 1\n  - two\nb: {c: null}\n"
    host = subprocess.run([yq, "-c", "."], input=data, capture_output=True, check=True)
    assert host.stdout == b'{"a":[1,"two"],"b":{"c":null}}\n'
    out = tmp_path / "yq.tar"
    done = slimmer("pack", yq, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    with docker.loaded(out) as tag:
        ran = docker.run("run", "--rm", "-i", "--network", "none", tag, "-c", ".", input=data,
                         check=False)
        # the other dependency's module, as yq's xq imports it
        xml = docker.run("run", "--rm", "--network", "none", "--entrypoint", "/usr/bin/python3",
                         tag, "-c", "import xmltodict; print(xmltodict.parse('<r><i>1</i></r>'))",
                         check=False)
    assert (ran.returncode, ran.stdout) == (0, host.stdout), ran.stderr
    assert (xml.returncode, xml.stdout) == (0, b"{'r': {'i': '1'}}\n"), xml.stderr
    why = slimmer("why", str(out), "/usr/lib/python3/dist-packages/yaml/__init__.py").stdout
    assert "module of python3-yaml, which script /usr/bin/yq needs (yq depends on it)" in why
    why = slimmer("why", str(out), "/usr/bin/jq").stdout
    assert "program jq of jq, named by script /usr/bin/yq or its modules" in why


def test_a_program_of_a_dependency_the_script_names_comes_too(tmp_path: Path) -> None:
    """yq depends on jq and runs it by name (`subprocess.Popen(["jq", ...])`): the programs
    of the packages a script's package depends on come when its text names them quoted."""
    root = _root(tmp_path)
    (root / "usr/bin/tool").write_text(
        '#!/usr/bin/python3\nimport subprocess, tool\nsubprocess.run(["helperprog", "-x"])\n')
    for name in ("helperprog", "otherprog"):
        (root / "usr/bin" / name).write_bytes(tiny_static_elf(b"helper\n"))
        (root / "usr/bin" / name).chmod(0o755)
    (root / "var/lib/dpkg/info/helper.list").write_text(
        "/.\n/usr/bin/helperprog\n/usr/bin/otherprog\n")
    status = (root / "var/lib/dpkg/status").read_text()
    status = status.replace("Depends: python3, python3-dep, clib",
                            "Depends: python3, python3-dep, clib, helper")
    status += "\nPackage: helper\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n"
    (root / "var/lib/dpkg/status").write_text(status)
    tree = _assemble(root, "/usr/bin/tool").tree
    assert tree.reasons["/usr/bin/helperprog"] == (
        "program helperprog of helper, named by script /usr/bin/tool or its modules")
    assert "/usr/bin/otherprog" not in tree  # not named
    quiet = _assemble(root, "/usr/bin/tool", without=frozenset({"script-packages"})).tree
    assert "/usr/bin/helperprog" not in quiet
