"""The modules of a packaged script: what its own dpkg package ships in its interpreter's module
directories, and what the packages it depends on ship there, transitively. Debian's
`/usr/bin/pygmentize` is python3-pygments' script, whose `pygments` package lives in
/usr/lib/python3/dist-packages; `/usr/bin/yq` imports python3-yaml's and python3-xmltodict's
modules. Nothing is parsed: the package database says which files go with the script.

The interpreter is the last program of the script's `#!` chain (env runs it), named by its
path or the file it resolves to (/usr/bin/python3 -> python3.11): python, perl, ruby, php, tcl
or node (LANGUAGES), each with its module directories. The walk starts at the packages that own
the script, keeps their files under those directories (not documentation: evidence.filtered),
then goes on to what they depend on, transitively, and stops at

- the interpreter's own packages (python3, libpython3.11-stdlib, perl-base, libruby3.1,
  libtcl8.6, nodejs...: the recipes and compiled paths decide on the interpreter and its
  standard library), the packages owning the interpreter's files, and what is never a module
  (evidence.NOT_DATA: debconf, dpkg...);
- a dependency that ships nothing in those directories (jq for yq, a C library): not a module
  of that interpreter, so what it depends on is not either.

Each file kept has the reason `module of PACKAGE, ...` that `slimmer why` shows; the ELF files
among them (python3-yaml's `_yaml.so`) get their libraries from the caller (Assembly._add_path).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slimmer.assemble.evidence import NOT_DATA, filtered, is_leaf
from slimmer.errors import SlimmerError
from slimmer.loader.dpkg import PackageDb
from slimmer.loader.root import Root

FEATURE = "script-packages"


@dataclass(frozen=True, slots=True)
class Language:
    """An interpreter: the names its programs have, where its modules live (`{triplet}` and
    `{version}` filled in), and the names of its own packages."""

    name: str
    programs: re.Pattern[str]
    directories: tuple[str, ...]
    own: re.Pattern[str]


LANGUAGES = (
    Language("python", re.compile(r"^python(?P<version>[0-9]+(\.[0-9]+)?)$"),
             ("/usr/lib/python3/dist-packages", "/usr/lib/python{version}/dist-packages",
              "/usr/lib/python{version}/site-packages",
              "/usr/local/lib/python{version}/dist-packages",
              "/usr/local/lib/python{version}/site-packages"),
             re.compile(r"^(lib)?python[0-9.]*(-minimal|-stdlib|-venv|-distutils|-lib2to3)?$")),
    Language("perl", re.compile(r"^perl(?P<version>[0-9.]*)$"),
             ("/usr/share/perl5", "/usr/lib/{triplet}/perl5"),
             re.compile(r"^(perl|perl-base|perl-modules-[0-9.]+|libperl[0-9.]+)$")),
    Language("ruby", re.compile(r"^ruby(?P<version>[0-9.]*)$"),
             ("/usr/lib/ruby/vendor_ruby", "/usr/share/rubygems-integration",
              "/usr/lib/{triplet}/ruby/vendor_ruby"),
             re.compile(r"^(ruby|ruby[0-9.]+|libruby[0-9.]*)$")),
    Language("php", re.compile(r"^php(?P<version>[0-9.]*)$"),
             ("/usr/share/php",),
             re.compile(r"^(php|php-common|php[0-9.]+(-[a-z0-9]+)?|libphp[0-9.]*-embed)$")),
    Language("tcl", re.compile(r"^(tclsh|wish)(?P<version>[0-9.]*)$"),
             ("/usr/share/tcltk", "/usr/lib/tcltk"),
             re.compile(r"^(tcl|tk|tcl[0-9.]+|tk[0-9.]+|libtcl[0-9.]+|libtk[0-9.]+)$")),
    Language("node", re.compile(r"^node(js)?(?P<version>)$"),
             ("/usr/share/nodejs", "/usr/lib/nodejs", "/usr/lib/{triplet}/nodejs"),
             re.compile(r"^(nodejs|libnode[0-9]+)$")),
)


@dataclass(frozen=True, slots=True)
class Interpreter:
    language: Language
    directories: tuple[str, ...]  # the module directories, filled in
    packages: frozenset[str]  # the packages owning the interpreter's files

    def is_module(self, path: str) -> bool:
        return any(path.startswith(d + "/") for d in self.directories)

    def is_own(self, package: str) -> bool:
        return package in self.packages or bool(self.language.own.match(package))


def modules(root: Root, db: PackageDb, scripts: dict[str, list[str]], triplet: str,
            show: Callable[[str], str] = str) -> list[tuple[str, str]]:
    """(in-root path, reason) for every module file the scripts' packages and their module
    dependencies ship; `scripts` maps a script to its `#!` chain (loader/scripts.py)."""
    if not db:
        return []
    out: dict[str, str] = {}
    for script, chain in scripts.items():
        interpreter = _interpreter(root, db, chain, triplet)
        real = _real(root, script)
        if interpreter is None or real is None:
            continue
        owners = db.owners_of(real) or db.owners_of(db.real(real))
        walked = _walk(root, db, interpreter, owners, show(script))
        for path, reason in walked:
            out.setdefault(path, reason)
        own = [real] + [path for path, reason in walked if "the package of script" in reason]
        for path, reason in _named_programs(root, db, interpreter, owners, own, show(script)):
            out.setdefault(path, reason)
    return list(out.items())


PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
TEXT_LIMIT = 256 << 10  # of each file read for names: a module is a few KB
TEXT_TOTAL = 8 << 20  # of all of a package's files read for names


def _named_programs(root: Root, db: PackageDb, interpreter: Interpreter, owners: Iterable[str],
                    texts: list[str], script: str) -> list[tuple[str, str]]:
    """The programs of the packages the script's packages depend on (directly) that the
    script or its own modules name as a quoted string: yq depends on jq and runs
    `subprocess.Popen(["jq", ...])`. Run by name, they are not found otherwise."""
    programs: dict[str, tuple[str, str]] = {}  # name -> (path, package)
    for owner in owners:
        for dep in db.depends(owner):
            if interpreter.is_own(dep) or dep in NOT_DATA:
                continue
            for path in db.files(dep):
                directory, _, name = path.rpartition("/")
                if directory in PATH_DIRS and name and is_leaf(root, path):
                    programs.setdefault(name, (path, dep))
    if not programs:
        return []
    corpus, total = [], 0
    for path in dict.fromkeys(texts):
        if total >= TEXT_TOTAL:
            break
        try:
            data = root.read_bytes(path, TEXT_LIMIT)
        except SlimmerError:
            continue
        if data is not None and b"\0" not in data[:4096]:  # text, not a compiled module
            corpus.append(data)
            total += len(data)
    text = b"\n".join(corpus)
    out = []
    for name, (path, package) in sorted(programs.items()):
        quoted = re.escape(name.encode())
        if re.search(rb"[\"']" + quoted + rb"[\"']", text):
            out.append((path, f"program {name} of {package}, named by script {script} or "
                              "its modules"))
    return out


def _walk(root: Root, db: PackageDb, interpreter: Interpreter, owners: Iterable[str],
          script: str) -> list[tuple[str, str]]:
    """The script's own packages first, then each dependency once, through the first package
    that names it; a dependency that is no module of the interpreter ends its branch."""
    queue = [(p, "") for p in owners if not interpreter.is_own(p)]
    seen = set(owners)
    out: list[tuple[str, str]] = []
    while queue:
        package, parent = queue.pop(0)
        files = [p for p in db.files(package)
                 if interpreter.is_module(p) and not filtered(p) and is_leaf(root, p)]
        if parent and not files:
            continue  # not a module of this interpreter: neither is what it depends on
        reason = (f"module of {package}, the package of script {script}" if not parent else
                  f"module of {package}, which script {script} needs ({parent} depends on it)")
        out += [(path, reason) for path in files]
        for dep in db.depends(package):
            if dep not in seen:
                seen.add(dep)
                if not interpreter.is_own(dep) and dep not in NOT_DATA:
                    queue.append((dep, package))
    return out


def _interpreter(root: Root, db: PackageDb, chain: list[str], triplet: str
                 ) -> Interpreter | None:
    """The language of the program that runs the script (the last of its chain), by the name
    of the file it resolves to (python3.11, which says the version) or its own."""
    if not chain:
        return None
    path = chain[-1]
    real = _real(root, path) or path
    for name in dict.fromkeys((os.path.basename(real), os.path.basename(path))):
        for language in LANGUAGES:
            match = language.programs.match(name)
            if match is None:
                continue
            version = match.group("version") or ""
            directories = tuple(dict.fromkeys(
                d.format(triplet=triplet, version=version) for d in language.directories
                if version or "{version}" not in d))
            owners = {p for f in dict.fromkeys((path, real))
                      for p in db.owners_of(f) or db.owners_of(db.real(f))}
            return Interpreter(language, directories, frozenset(owners))
    return None


def _real(root: Root, path: str) -> str | None:
    try:
        found = root.lookup(path)
    except SlimmerError:
        return None
    return found.real if found is not None else None
