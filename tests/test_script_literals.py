"""The path literals of interpreted scripts as evidence (loader/script_literals.py, the compiled-
path rules of evidence.py) and the warning where it ends (assemble/script_data.py): the reader on
texts of several languages, then a tiny root with a fake dpkg database and a perl-like script
whose cows are its own package's data, as Debian's cowsay's are."""

from __future__ import annotations

import json
import os
from pathlib import Path

from slimmer.assemble.assembly import assemble
from slimmer.assemble.evidence import CAP
from slimmer.assemble.options import BuildOptions
from slimmer.assemble.spec import ImageSpec
from slimmer.image.model import RunConfig
from slimmer.loader.script_literals import MAX_TEXT, path_literals
from slimmer.notices import CODES
from tests.support.archives import tiny_static_elf
from tests.support.cli import run as slimmer
from tests.support.dpkgroot import assemble_in, write_database
from tests.support.host import COWSAY, need_file

# ---- the reader ----------------------------------------------------------------------------------

PERL = rb"""#!/usr/bin/perl
# default: '/usr/share/commented/cows'
$cowpath = $ENV{'COWPATH'} || '/usr/share/cowtool/cows';
$n = $#ARGV; $x =~ s/'//g; my $full = "/usr/share/cowtool/cows/$f.cow";
print "it's fine\n" if -f "/etc/cowtool.conf"; # "/etc/after-comment"
@border = qw[ / \\ \\ / | | ]; $re = m,/,; $t = '/usr/share/pam/common-' . $type;
open(my $fh, '<', "/var/lib/cowtool/state") or die "/var is full"; $c = `cat /etc/qx`;
"""
PYTHON = rb'''#!/usr/bin/python3
"""Docstring naming "/usr/share/doc-string/x" in quotes."""
import os
DATA = os.environ.get("DATA", "/usr/share/pyapp/data")  # "/etc/comment"
path = f"/usr/lib/pyapp/{name}.py"; search = r'/opt/a/lib:/opt/b/lib'
rel = "share/relative"; url = "http://example.com/x"; glob = "/etc/pyapp.d/*.conf"
'''
SHELL = rb"""#!/bin/sh
n=$#; m=${#x}; echo '\' '/etc/shell/single' "/etc/shell/\"double\"" # '/etc/shell/comment'
echo "$HOME/x" "${PREFIX}/y" "/usr/share/shapp/${name}" `cat '/etc/shell/backtick'`
"""


def test_perl_literals() -> None:
    """'...' and "...", the directory before a variable ("/usr/share/cowtool/cows/$f.cow",
    found once) or a name completed by concatenation; not a comment's, a message's (a blank)
    or a command's (backquotes); an apostrophe in a regular expression (s/'//g) or a string
    (it's) spoils nothing after it."""
    assert path_literals(PERL) == (
        "/usr/share/cowtool/cows", "/etc/cowtool.conf", "/usr/share/pam",
        "/var/lib/cowtool/state")


def test_python_literals() -> None:
    """A docstring's quotes pair up with its triple quotes: what they hold is no literal."""
    assert path_literals(PYTHON) == (
        "/usr/share/pyapp/data", "/usr/lib/pyapp",  # f"...{name}": its directory
        "/opt/a/lib", "/opt/b/lib",  # a list of paths, each
        "/etc/pyapp.d",  # a glob: its directory
    )


def test_shell_literals() -> None:
    """A shell's single quotes escape nothing; $# and ${#x} start no comment; a command
    substitution's literals are the script's too."""
    assert path_literals(SHELL, shell=True) == (
        "/etc/shell/single", "/etc/shell", "/usr/share/shapp", "/etc/shell/backtick")
    # read as perl, '\' ' is one literal and '/etc/shell/single' is lost
    assert "/etc/shell/single" not in path_literals(SHELL)


def test_the_text_is_bounded() -> None:
    head = b"#!/usr/bin/perl\nmy $a = '/usr/share/first';\n"
    late = b"my $b = '/usr/share/late';\n"
    filler = b"#" * (MAX_TEXT - len(head) - 10) + b"\n"
    assert path_literals(head + filler + late) == ("/usr/share/first",)
    assert path_literals(head + late) == ("/usr/share/first", "/usr/share/late")
    assert path_literals(head + b"\x00" + late) == ("/usr/share/first",)  # a payload after NUL
    assert path_literals(b"x = '/" + b"a" * 2000 + b"'\n") == ()  # no path is that long
    assert path_literals(b"x = '/usr/\xff\xfe'; y = '/usr/share/ok'\n") == ("/usr/share/ok",)


# ---- the evidence on a root ----------------------------------------------------------------------

COWTOOL = """#!/usr/bin/perl
# not this one: '/usr/share/commented'
$cowpath = $ENV{'COWPATH'} || '/usr/share/cowtool/cows';
$extra = "/usr/share/libcow/extra.dat";  # a dependency's
$other = "/usr/share/other/data";  # another package's
$gone = '/usr/share/cowtool/missing';
$mods = "/usr/share/perl5/Cow/$name.pm";  # perl's module directory: not whole
$big = '/usr/share/cowtool/big';
"""
# package -> (Depends, files it lists)
PACKAGES = {
    "cowtool": ("libcow, perl", (
        "/usr/games/cowtool", "/usr/share/cowtool", "/usr/share/cowtool/cows",
        "/usr/share/cowtool/cows/default.cow", "/usr/share/cowtool/cows/moose.cow",
        "/usr/share/cowtool/big", "/usr/share/cowtool/big/sparse.bin",
        "/usr/share/doc/cowtool/copyright", "/usr/share/man/man6/cowtool.6.gz",
        "/usr/share/commented", "/usr/share/commented/c.txt")),
    "libcow": ("", ("/usr/share/libcow/extra.dat",)),
    "perl": ("", ("/usr/bin/perl", "/usr/share/perl5", "/usr/share/perl5/Cow",
                  "/usr/share/perl5/Cow/Say.pm")),
    "other": ("", ("/usr/share/other", "/usr/share/other/data")),
    "quiet": ("perl", ("/usr/bin/quiet", "/usr/share/quiet/words.txt", "/usr/bin/quiet-helper")),
}
DIRECTORIES = {"/usr/share/cowtool", "/usr/share/cowtool/cows", "/usr/share/cowtool/big",
               "/usr/share/perl5", "/usr/share/perl5/Cow", "/usr/share/other",
               "/usr/share/commented"}
SCRIPT_REASON = "path /usr/share/cowtool/cows named in script /usr/games/cowtool"


def _root(tmp_path: Path, dpkg: bool = True) -> Path:
    root = tmp_path / "root"
    for path in (p for _, files in PACKAGES.values() for p in files):
        target = root / path[1:]
        if path in DIRECTORIES:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"data\n")
    (root / "usr/bin/perl").write_bytes(tiny_static_elf(b"perl\n"))
    (root / "usr/bin/perl").chmod(0o755)
    (root / "usr/games/cowtool").write_text(COWTOOL)
    (root / "usr/bin/quiet").write_text("#!/usr/bin/perl\nopen(F, '/usr/share/quiet/words.txt');\n")
    (root / "usr/bin/quiet-helper").write_text("#!/bin/sh\n")
    for program in ("usr/games/cowtool", "usr/bin/quiet", "usr/bin/quiet-helper"):
        (root / program).chmod(0o755)
    with open(root / "usr/share/cowtool/big/sparse.bin", "wb") as fh:
        fh.truncate(CAP + (1 << 20))  # larger than one piece of evidence may bring: no blocks
    if dpkg:
        write_database(root, PACKAGES)
    return root


_assemble = assemble_in


def test_a_scripts_literals_bring_its_packages_data(tmp_path: Path) -> None:
    done = _assemble(_root(tmp_path), "/usr/games/cowtool")
    reasons = done.tree.reasons
    assert reasons["/usr/share/cowtool/cows"] == SCRIPT_REASON
    assert reasons["/usr/share/cowtool/cows/default.cow"] == SCRIPT_REASON  # the directory whole
    assert "/usr/share/cowtool/cows/moose.cow" in done.tree
    assert reasons["/usr/share/libcow/extra.dat"] == (
        "path /usr/share/libcow/extra.dat named in script /usr/games/cowtool")  # a dependency's
    assert "/usr/share/other/data" not in done.tree  # another package's
    assert "/usr/share/commented/c.txt" not in done.tree  # a comment is no evidence
    assert "/usr/share/perl5/Cow/Say.pm" not in done.tree  # perl's module directory
    assert "/usr/share/cowtool/big/sparse.bin" not in done.tree
    warned = {w.code: str(w) for w in done.warnings}
    assert len(warned) == len(done.warnings) == 2, done.warnings
    assert warned["evidence-too-large"] == (
        "/usr/share/cowtool/big: named in script /usr/games/cowtool but holds 65 MB (more than "
        "64 MB): left out; --keep /usr/share/cowtool/big (slim) or --add it (pack) to keep it")
    # what was left out of its own package: the big file, and the one its comment names
    assert warned["script-data-left-out"].startswith(
        "/usr/games/cowtool: 2 data files of its package cowtool left out (such as "
        "/usr/share/commented/c.txt)")


def test_without_a_package_database_existing_paths_are_kept(tmp_path: Path) -> None:
    done = _assemble(_root(tmp_path, dpkg=False), "/usr/games/cowtool")
    assert done.tree.reasons["/usr/share/cowtool/cows"] == SCRIPT_REASON
    assert done.tree.reasons["/usr/share/other/data"] == (
        "path /usr/share/other/data named in script /usr/games/cowtool")
    assert "/usr/share/commented/c.txt" not in done.tree
    assert not [w for w in done.warnings if w.code == "script-data-left-out"]  # no packages


def test_data_nothing_kept_is_named_once_per_script(tmp_path: Path) -> None:
    assert "script-data-left-out" in CODES
    done = _assemble(_root(tmp_path), "/usr/games/cowtool", "/usr/bin/quiet",
                     without=frozenset({"compiled-paths"}))
    assert "/usr/share/cowtool/cows" not in done.tree
    assert "/usr/share/quiet/words.txt" not in done.tree
    warned = [w for w in done.warnings if w.code == "script-data-left-out"]
    # cowtool's cows, the big file and the commented one (not its docs, man page or itself):
    # the directory named is the one holding most of them; quiet's words (not its helper)
    assert [str(w) for w in warned] == [
        "/usr/games/cowtool: 4 data files of its package cowtool left out (such as "
        "/usr/share/cowtool/cows/default.cow), which it may read at run time; --add "
        "/usr/share/cowtool/cows:/usr/share/cowtool/cows (pack), --keep /usr/share/cowtool/cows "
        "(slim), or --probe-args ARGS",
        "/usr/bin/quiet: 1 data file of its package quiet left out (such as "
        "/usr/share/quiet/words.txt), which it may read at run time; --add "
        "/usr/share/quiet/words.txt:/usr/share/quiet/words.txt (pack), --keep "
        "/usr/share/quiet/words.txt (slim), or --probe-args ARGS"]
    # with the literals read, quiet's words come and nothing is said of it
    done = _assemble(_root(tmp_path / "again"), "/usr/bin/quiet")
    assert done.tree.reasons["/usr/share/quiet/words.txt"] == (
        "path /usr/share/quiet/words.txt named in script /usr/bin/quiet")
    assert not done.warnings


def test_added_data_is_not_named(tmp_path: Path) -> None:
    root = _root(tmp_path)
    build = BuildOptions(programs=("/usr/bin/quiet",), root=str(root), builtin_recipes=False,
                         without_features=frozenset({"compiled-paths"}),
                         add=((str(root / "usr/share/quiet"), "/usr/share/quiet"),))
    done = assemble(ImageSpec(RunConfig()), build)
    assert "/usr/share/quiet/words.txt" in done.tree
    assert not [w for w in done.warnings if w.code == "script-data-left-out"]


def test_debian_cowsay_is_warned_without_its_literal(tmp_path: Path) -> None:
    """The host's cowsay: its cows come by the literal; without the compiled-path evidence
    the warning names them."""
    cowsay = need_file(COWSAY, "cowsay")
    cows = sorted(os.listdir("/usr/share/cowsay/cows"))
    out = tmp_path / "cow.tar"
    done = slimmer("pack", cowsay, "-o", str(out), "--report", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["warnings"] == []
    why = slimmer("why", str(out), "/usr/share/cowsay/cows/default.cow")
    assert "path /usr/share/cowsay/cows named in script /usr/games/cowsay" in why.stdout, why
    done = slimmer("pack", cowsay, "-o", str(out), "--report", "json", "--without",
                   "compiled-paths")
    assert done.returncode == 0, done.stderr
    warned = [w for w in json.loads(done.stdout)["warnings"]
              if w["code"] == "script-data-left-out"]
    assert [(w["path"], w["fix"]) for w in warned] == [(
        "/usr/games/cowsay", "--add /usr/share/cowsay/cows:/usr/share/cowsay/cows (pack), "
        "--keep /usr/share/cowsay/cows (slim), or --probe-args ARGS")]
    assert warned[0]["problem"].startswith(
        f"{len(cows)} data files of its package cowsay left out (such as "
        f"/usr/share/cowsay/cows/{cows[0]})")
