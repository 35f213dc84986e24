"""Evidence of the application: what the image's command line names (slim), the virtualenvs its
interpreters live in, and the programs its scripts run (commands.py), gathered into closures.

- **Entrypoint/Cmd arguments** (slim): an argument (or the VALUE of `--opt=VALUE`) that names a
  file or directory of the image, absolute or relative to WorkingDir, is the application and is
  kept whole, as the image has it (owners, modes). System directories (`/`, `/usr`, `/etc`... see
  SYSTEM_DIRS) are never kept whole. An argument that looks like a path (it holds a `/`, or ends
  in a script suffix) but names nothing is a warning.
- **WorkingDir** (slim): kept whole unless it is a system directory.
- **Virtualenvs**: a program (or a script's interpreter) VENV/bin/python* beside VENV/pyvenv.cfg
  brings VENV whole (site-packages with the native libraries wheels ship in `*.libs/`; the ELF
  files in it get their closures like any other file), the base interpreter pyvenv.cfg's `home`
  names (with its recipe; outside /usr, where no recipe knows it, its HOME/../lib/pythonX.Y),
  and with `include-system-site-packages = true` the system's dist-packages. A script of a
  build tree whose `#!` names a python that moved under /app with it gets its `#!` line
  rewritten to the image path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from slimmer.assemble.commands import Evidence, is_shell_script, lookup, script_commands
from slimmer.assemble.placing import Placement
from slimmer.errors import SlimmerError, UnsupportedElf
from slimmer.loader.resolve import Closure, Resolver
from slimmer.loader.root import Root
from slimmer.loader.scripts import interpreters, read_shebang
from slimmer.loader.shell import SHELLS
from slimmer.notices import Notice
from slimmer.paths import normalize
from slimmer.tree import File

# Directories an image's WorkingDir or an argument may name that are the system, not the
# application: never kept whole.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
    "/usr/bin", "/usr/games", "/usr/include", "/usr/lib", "/usr/lib64", "/usr/libexec",
    "/usr/local", "/usr/local/bin", "/usr/local/lib", "/usr/local/sbin", "/usr/local/share",
    "/usr/sbin", "/usr/share", "/usr/src", "/var", "/var/cache", "/var/lib", "/var/local",
    "/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool", "/var/tmp",
})
# Files the kernel or a runtime provides, never in an image's layers.
PROVIDED = ("/dev/", "/proc/", "/sys/", "/run/secrets/")
# Files the image gets written for it (baseline.py, the ld-cache and dpkg-status rules): an
# application path never replaces them.
GENERATED = frozenset({"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache"})
SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".pl", ".rb", ".js", ".mjs", ".cjs", ".php", ".lua",
                   ".jar", ".tcl", ".R")
# Interpreters with a library tree of their own beside their ELF closure (a script run by one
# with no recipe and no package data to say where it is gets a warning; sed, awk or jq scripts
# need nothing more and get none).
RUNTIMES = ("python", "perl", "ruby", "node", "php", "lua", "tclsh", "wish", "Rscript",
            "guile", "gjs", "java", "pwsh")
ARGUMENT = "entrypoint argument"
WORKDIR = "working directory"


@dataclass(frozen=True, slots=True)
class Gathered:
    """What the evidence of this module adds to an assembly."""

    scripts: dict[str, list[str]]  # a script found -> its interpreters
    closures: tuple[Closure, ...]
    why: dict[str, str]  # program or script -> its reason
    paths: tuple[tuple[str, str], ...]  # kept whole, each with its reason (first one wins)
    notices: tuple[Notice, ...]


class _Out:
    """Gathered, while it is being gathered."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.closures: list[Closure] = []
        self.why: dict[str, str] = {}
        self.paths: list[tuple[str, str]] = []
        self.notices: list[Notice] = []


def gather(root: Root, resolver: Resolver, scripts: dict[str, list[str]],
           closures: Sequence[Closure], argv: Sequence[str], working_dir: str, slimming: bool,
           path_dirs: tuple[str, ...]) -> Gathered:
    """The programs, paths and warnings of the application evidence for the programs already
    resolved (`closures`, `scripts`), run as `argv` in `working_dir`."""
    out = _Out()
    cwd = normalize(working_dir or "/")
    app = application(root, argv, cwd) if slimming else Evidence()
    app_scripts = [p for p, _ in app.paths if _is_file(root, p) and is_shell_script(root, p)]
    shells = [p for p in scripts if is_shell_script(root, p)]
    commands = script_commands(root, [*shells, *app_scripts], argv, cwd, path_dirs)
    out.paths += [*app.paths, *commands.paths]
    out.notices += [*app.notices, *commands.notices]
    known = {c.binary for c in closures} | set(scripts)
    for program, reason in commands.programs:
        if program not in known:
            known.add(program)
            _add_program(root, resolver, program, reason, path_dirs, out)
    for venv_program in [*(c.binary for c in closures), *(c.binary for c in out.closures)]:
        venv = virtualenv(root, venv_program)
        for program, reason in venv.programs:
            if program not in known:
                known.add(program)
                _add_program(root, resolver, program, reason, path_dirs, out)
        out.paths += venv.paths
    paths = {path: reason for path, reason in reversed(out.paths)}  # the first reason of each
    return Gathered(out.scripts, tuple(out.closures), out.why,
                    tuple((p, paths[p]) for p in dict.fromkeys(p for p, _ in out.paths)),
                    tuple(out.notices))


def generated(path: str) -> bool:
    """Whether the image gets `path` written for it rather than taken from the root."""
    return path in GENERATED or path.startswith("/var/lib/dpkg/")


def loaded_alone(paths: Iterable[str]) -> list[str]:
    """The files among `paths` whose libraries are looked for on their own: not the libraries
    wheels ship in `*.libs/` (auditwheel's numpy.libs, pillow.libs). Those carry no RPATH and
    are found only through the extension module that loads them (its DT_RPATH
    `$ORIGIN/../pillow.libs` serves their own DT_NEEDED too), whose closure brings them."""
    return [p for p in paths if not os.path.basename(os.path.dirname(p)).endswith(".libs")]


def _add_program(root: Root, resolver: Resolver, program: str, reason: str,
                 path_dirs: tuple[str, ...], out: _Out) -> None:
    """A program the evidence found: its closure (a script's: its interpreters'). One that
    cannot be loaded is a warning: evidence is not proof that it runs."""
    try:
        if read_shebang(root, program) is not None:
            chain = interpreters(root, program, path_dirs)
            out.scripts[program] = chain
            out.why[program] = f"script, {reason}"
            starts = chain
        else:
            starts = [program]
        for start in starts:
            if root.read_bytes(start, 4) != b"\x7fELF":
                return
            closure = resolver.closure(start)
            if closure.missing:
                miss = closure.missing[0]
                out.notices.append(Notice(
                    "library-unloadable", start,
                    f"cannot be loaded ({reason}): {miss.soname} {miss.reason}",
                    "--add the library, or --library-path DIR where the root holds it"))
                return
            out.closures.append(closure)
            out.why.setdefault(start, reason)
    except UnsupportedElf:
        return
    except SlimmerError as exc:
        out.notices.append(Notice("script-command-missing", program,
                                  f"cannot be brought ({reason}): {exc.message}", ""))


def application(root: Root, argv: Sequence[str], cwd: str) -> Evidence:
    """The files and directories the command line names (argv[0] is the program), and the
    working directory: kept whole; a path-like argument that names nothing: a warning."""
    paths: dict[str, str] = {}
    notices: list[Notice] = []
    found_cwd = lookup(root, cwd)
    if cwd not in SYSTEM_DIRS and found_cwd is not None and found_cwd.is_dir:
        paths[cwd] = WORKDIR
    for arg in _path_arguments(argv):
        path = normalize(arg if arg.startswith("/") else f"{cwd}/{arg}")
        if path.startswith(PROVIDED) or path in SYSTEM_DIRS:
            continue
        if lookup(root, path) is not None:
            if not any(_under(path, kept) for kept in paths):
                paths[path] = ARGUMENT
        elif "/" in arg or arg.endswith(SCRIPT_SUFFIXES):
            notices.append(Notice(
                "app-path-missing", arg,
                f"named by the image's Entrypoint/Cmd (working directory {cwd}) but not in "
                "the image", "--keep the path it should be (or fix the Entrypoint/Cmd)"))
    return Evidence((), tuple(paths.items()), tuple(notices))


def _path_arguments(argv: Sequence[str]) -> list[str]:
    """The arguments that may name files: not the program, not a `sh -c` string, not options
    (the VALUE of `--opt=VALUE` counts), not URLs or text with blanks."""
    out: list[str] = []
    shell = bool(argv) and os.path.basename(argv[0]) in SHELLS
    skip_next = False
    for arg in argv[1:]:
        if skip_next:
            skip_next = False
            continue
        if shell and re.fullmatch(r"-[a-zA-Z]*c[a-zA-Z]*", arg):
            skip_next = True
            continue
        if arg.startswith("-"):
            _, eq, value = arg.partition("=")
            if not eq or not value:
                continue
            arg = value
        if not arg or "://" in arg or any(c.isspace() for c in arg) or any(
                c in arg for c in "$`;|&<>*?"):
            continue
        out.append(arg)
    return out


def _is_file(root: Root, path: str) -> bool:
    found = lookup(root, path)
    return found is not None and found.is_file


def _is_dir(root: Root, path: str) -> bool:
    found = lookup(root, path)
    return found is not None and found.is_dir


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def virtualenv(root: Root, program: str) -> Evidence:
    """A Python virtualenv `program` lives in (VENV/bin/python*, VENV/pyvenv.cfg): kept whole,
    with the base interpreter its pyvenv.cfg names."""
    name = os.path.basename(program)
    if not name.startswith("python"):
        return Evidence()
    venv = os.path.dirname(os.path.dirname(program)) or "/"
    cfg_path = f"{venv.rstrip('/')}/pyvenv.cfg"
    try:
        data = root.read_bytes(cfg_path, 1 << 16)
    except SlimmerError:
        data = None  # a symlink loop: no virtualenv here
    if data is None:
        return Evidence()
    cfg = parse_pyvenv(data)
    why = f"virtualenv of {program} ({cfg_path})"
    paths: list[tuple[str, str]] = [(venv, why)]
    programs: list[tuple[str, str]] = []
    home = cfg.get("home", "")
    version = cfg.get("version", cfg.get("version_info", ""))
    short = ".".join(version.split(".")[:2])
    for base in (f"python{short}" if short else "", "python3", name):
        candidate = normalize(f"{home}/{base}") if home.startswith("/") and base else ""
        found = lookup(root, candidate) if candidate else None
        if found is not None and found.is_file:
            programs.append((candidate, f"base interpreter of {venv} (pyvenv.cfg home)"))
            break
    base_prefix = os.path.dirname(normalize(home)) if home.startswith("/") else "/usr"
    stdlib = f"{base_prefix.rstrip('/')}/lib/python{short}"
    if short and base_prefix != "/usr" and _is_dir(root, stdlib):
        # a base interpreter outside /usr (pyenv, /opt/python) has no recipe: its standard
        # library is where CPython's getpath looks, below pyvenv.cfg's home
        paths.append((stdlib, f"standard library of the base interpreter of {venv} "
                              "(pyvenv.cfg home)"))
    if cfg.get("include-system-site-packages", "").lower() == "true":
        for directory in ("/usr/lib/python3/dist-packages",
                          f"/usr/local/lib/python{short}/dist-packages",
                          f"/usr/lib/python{short}/site-packages"):
            if short and _is_dir(root, directory):
                paths.append((directory, f"system site-packages of {venv} "
                                         "(include-system-site-packages)"))
    return Evidence(tuple(programs), tuple(paths))


def parse_pyvenv(data: bytes) -> dict[str, str]:
    """pyvenv.cfg's `key = value` lines, as CPython's site.py reads them (keys lowercased)."""
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip().lower()] = value.strip()
    return out


def entry_argv(entrypoint: Iterable[str] | None, cmd: Iterable[str] | None,
               program: str) -> list[str]:
    """The command line an image starts with: Entrypoint then Cmd (no Entrypoint: the program
    is the default one)."""
    head = list(entrypoint) if entrypoint is not None else [program]
    return [*head, *(cmd or ())]


def moved_shebang(root: Root, real: str, place: Placement, keep_setuid: bool) -> File | None:
    """A script of a build tree whose `#!` names a file that moved under /app with it (the
    python of a virtualenv beside the script): the image's copy, its first line naming the
    interpreter's image path. None when nothing moved."""
    bang = read_shebang(root, real)
    if bang is None or place.base is None:
        return None
    moved = place.image_path(bang.interpreter)
    if moved == normalize(bang.interpreter):
        return None
    data = root.read_bytes(real) or b""
    end = data.find(b"\n")
    first = data[:end] if end >= 0 else data
    new = first.replace(bang.interpreter.encode("utf-8", "surrogateescape"),
                        moved.encode("utf-8", "surrogateescape"), 1) + data[len(first):]
    return replace(root.file_entry(real, keep_setuid), size=len(new), source=None, data=new,
                   node=None)


def unknown_interpreters(root: Root, scripts: dict[str, list[str]],
                         served: Iterable[str]) -> list[Notice]:
    """Scripts whose interpreter is a language runtime that no recipe was applied for
    (`served`: the real paths recipes were matched for), in a root without a package database
    (where it has one, package evidence finds the runtime's data): one warning each
    interpreter. A virtualenv's python is no such case (its evidence is pyvenv.cfg)."""
    if lookup(root, "/var/lib/dpkg/status") is not None:
        return []
    served = set(served)
    notices: dict[str, Notice] = {}
    for script, chain in scripts.items():
        interpreter = chain[-1] if chain else ""
        found = lookup(root, interpreter) if interpreter else None
        if found is None or interpreter in notices:
            continue
        if (not os.path.basename(found.real).startswith(RUNTIMES) or found.real in served
                or virtualenv(root, interpreter).paths):
            continue
        notices[interpreter] = Notice(
            "interpreter-unknown", script,
            f"runs with {interpreter}, which no recipe knows and no package database "
            "describes: only its ELF closure is packed, not its library tree",
            "--add its library directory (pack, or --recipe FILE) or --keep it (slim)")
    return list(notices.values())
