"""What a traced run touched, read from `strace -f -y -s 4096 -e trace=%file,%process,getdents64`
output: the files and directories that the workload opened, executed, listed or looked at
successfully, each with the program that did it.

Only the workload counts, not the sandbox around it: a process's events count from its first
successful execve of a program other than the sandbox tool (bwrap), and a process first seen
after the workload started (a fork of it) counts from its first event. Failed calls (ENOENT and
the like) are not evidence of anything and are dropped.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

# syscalls whose first string argument is a path looked up from a directory fd (the `*at`
# forms) or from the working directory
PATH_CALLS = frozenset({
    "open", "openat", "openat2", "creat", "stat", "lstat", "newfstatat", "fstatat64", "statx",
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "execve", "execveat",
    "stat64", "lstat64",
})
EXEC_CALLS = frozenset({"execve", "execveat"})
LIST_CALLS = frozenset({"getdents64", "getdents"})

_LINE = re.compile(r"^(\d+) +([a-z0-9_]+)\((.*)\) += (-?\d+|\?)(.*)$")
_UNFINISHED = re.compile(r"^(\d+) +(.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. ([a-z0-9_]+) resumed>(.*)$")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "f": "\f", '"': '"', "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Touch:
    """One successful access by the workload: `path` as the call named it (absolute, made so
    with the directory it was looked up from), `opened` the file it reached when strace could
    tell (a symlink's target), what kind of access, and by which program."""

    path: str
    opened: str | None
    kind: str  # "exec", "open", "stat", "list"
    program: str


def _unescape(text: str) -> str:
    """A C string body as strace prints it (\\n, \\", octal and \\x escapes) -> str; bytes
    that are not UTF-8 come back as surrogate escapes."""
    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return _SIMPLE.get(code, code)
    raw = _ESCAPE.sub(one, text)
    if raw.isascii():
        return raw
    try:  # the escapes were bytes: the name is what they spell in UTF-8
        return raw.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return raw


def _first_string(args: str) -> str | None:
    """The first "..." argument of a call, unescaped."""
    start = args.find('"')
    if start < 0:
        return None
    i = start + 1
    while i < len(args):
        if args[i] == "\\":
            i += 2
            continue
        if args[i] == '"':
            return _unescape(args[start + 1:i])
        i += 1
    return None


def _annotation(text: str) -> str | None:
    """The path in a `-y` annotation `N</path>` or `AT_FDCWD</path>` at the start of `text`."""
    m = re.match(r"^\s*(?:-?\d+|AT_FDCWD)<(.*?)>(?:,|\s|$)", text)
    return _unescape(m.group(1)) if m else None


def _returned(rest: str) -> str | None:
    """The path annotation of a returned fd: `= 3</etc/hostname>`."""
    if not rest.startswith("<"):
        return None
    end = rest.rfind(">")
    return _unescape(rest[1:end]) if end > 0 else None


def _joined(lines: Iterable[str]) -> Iterable[str]:
    """Lines with `<unfinished ...>` and `<... resumed>` halves put back together."""
    pending: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\n")
        m = _UNFINISHED.match(line)
        if m:
            pending[m.group(1)] = m.group(2)
            continue
        m = _RESUMED.match(line)
        if m and m.group(1) in pending:
            yield f"{m.group(1)} {pending.pop(m.group(1))}{m.group(3)}"
            continue
        yield line


def touches(lines: Iterable[str], sandbox_tool: str) -> list[Touch]:
    """The workload's successful accesses, in the order they happened."""
    active: dict[str, str] = {}  # pid -> the program it runs
    sandbox: set[str] = set()  # pids of the sandbox tool's own set-up
    started = False
    out: list[Touch] = []
    for line in _joined(lines):
        m = _LINE.match(line)
        if m is None:
            continue
        pid, call, args, ret, rest = m.groups()
        ok = ret != "?" and int(ret) >= 0
        if pid not in active:
            if call in EXEC_CALLS and ok:
                found = _first_string(args)
                if found is None or found == sandbox_tool:
                    sandbox.add(pid)
                    continue
                started = True  # (the event itself is recorded below)
            elif started and pid not in sandbox:
                active[pid] = "?"  # a fork of the workload: the program of the exec before
            else:
                sandbox.add(pid)
                continue
        if not ok:
            continue
        touch = _touch(call, args, rest.strip(), active.get(pid, "?"))
        if call in EXEC_CALLS and touch is not None:
            active[pid] = touch.path
            touch = Touch(touch.path, touch.opened, touch.kind, touch.path)
        elif pid not in active:
            active[pid] = "?"
        if touch is not None:
            out.append(touch)
    return _with_programs(out)


def _with_programs(found: list[Touch]) -> list[Touch]:
    """A fork's events name the last program executed before it ("?" otherwise)."""
    last = "?"
    out = []
    for t in found:
        if t.kind == "exec":
            last = t.program
        out.append(t if t.program != "?" else Touch(t.path, t.opened, t.kind, last))
    return out


def _touch(call: str, args: str, rest: str, program: str) -> Touch | None:
    if call in LIST_CALLS:
        listed = _annotation(args)
        return Touch(listed, listed, "list", program) if listed else None
    if call not in PATH_CALLS:
        return None
    name = _first_string(args)
    if not name:  # "" with AT_EMPTY_PATH: the fd itself, already seen when it was opened
        return None
    base = "/"
    if not name.startswith("/"):
        before = args[:args.find('"')]
        base = _annotation(before) or "/"
        name = posixpath.join(base, name)
    path = posixpath.normpath(name)
    path = "/" + path.lstrip("/")
    if call in EXEC_CALLS:
        return Touch(path, None, "exec", program)
    if call.startswith(("open", "creat")):
        return Touch(path, _returned(rest), "open", program)
    return Touch(path, None, "stat", program)
