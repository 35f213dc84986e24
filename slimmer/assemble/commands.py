"""Evidence from shell scripts and command lines: the programs they run, found in the image's PATH
inside the root (loader/shell.py reads the scripts).

The scripts read are the shell scripts among the programs (and slim's application), the files they
source or hand to `sh`, and the image's own command line (a `sh -c STRING` Entrypoint/Cmd, or a
wrapper such as `env X=1 prog`). A program found that is itself a shell script is read too, a few
levels deep and a bounded number of scripts in all. The regular files their arguments and
redirections name by absolute path (or file:// URL) are kept too, `named by SCRIPT`: a script's
own data (`jq -f /etc/app/filter.jq`, `curl file:///etc/debian_version`); a directory is too
broad a hint (`cd /usr`, `find /`) and is not. Warnings: a command not found, a computed
command and lines the parser could not read, each once, for the scripts and the command line the
image starts with only; the scripts they run in turn (Debian's helper scripts name many optional
programs) bring what they find without a word.
"""

from __future__ import annotations

import os
import shlex
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from slimmer.errors import SlimmerError
from slimmer.loader.programs import find_in_path
from slimmer.loader.root import Resolved, Root
from slimmer.loader.scripts import read_shebang
from slimmer.loader.shell import Commands, parse_commands, shell_of
from slimmer.notices import Notice
from slimmer.paths import normalize

MAX_DEPTH = 3  # scripts run by scripts run by the entry script
MAX_SCRIPTS = 64  # scripts read in all
MAX_COMPUTED = 5  # computed commands named one by one, per script (each with its lines)
MAX_SCRIPT_BYTES = 1 << 18  # read of one script: Debian 12's largest is 42 KB (a self-
# extracting installer is mostly data after its `exit`)
COMMAND_LINE = "the image's Entrypoint/Cmd"
PROVIDED = ("/dev/", "/proc/", "/sys/")  # what the kernel gives a container
FIX = "--add it (pack) or --keep it (slim) if it is needed"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a piece of evidence says the image needs, each with its reason, and where it
    ended (the warnings)."""

    programs: tuple[tuple[str, str], ...] = ()  # (in-root program, reason): closures to bring
    paths: tuple[tuple[str, str], ...] = ()  # (in-root path, reason): kept whole
    notices: tuple[Notice, ...] = ()


def is_shell_script(root: Root, path: str) -> bool:
    try:
        bang = read_shebang(root, path)
    except SlimmerError:
        return False
    return bang is not None and shell_of(bang.interpreter, bang.env_program)


def script_commands(root: Root, scripts: Iterable[str], argv: Sequence[str], cwd: str,
                    path_dirs: tuple[str, ...]) -> Evidence:
    """The programs `scripts` (in-root shell scripts) and the command line `argv` run, found
    inside the root; the files they source, kept."""
    queue: deque[tuple[str, bytes, int]] = deque()
    if argv:
        queue.append((COMMAND_LINE, shlex.join(argv).encode("utf-8", "surrogateescape"), 0))
    read = set()
    for script in dict.fromkeys(scripts):
        read.add(script)
        queue.append((script, _read(root, script), 0))
    programs: dict[str, str] = {}
    paths: dict[str, str] = {}
    notices: list[Notice] = []
    while queue:
        origin, text, depth = queue.popleft()
        found = parse_commands(text)
        loud = depth == 0
        if loud:
            notices += _ended(origin, found)
        if loud and found.runs_arguments and origin != COMMAND_LINE and len(argv) > 1:
            # the entry script's `exec "$@"`: the rest of the command line is one (an image's
            # ENTRYPOINT ["docker-entrypoint.sh"] CMD ["postgres"])
            queue.append((f"the arguments {origin} runs (\"$@\")",
                          shlex.join(argv[1:]).encode("utf-8", "surrogateescape"), 0))
            argv = argv[:1]  # once
        run_by = f"run by {origin}"
        for command in found.commands:
            path = _find(root, command.name, cwd, path_dirs)
            if path is None:
                if loud and not command.alternative:
                    notices.append(Notice(
                        "script-command-missing", origin,
                        f"runs {command.name} (line {command.line}), which is not in the "
                        f"image's PATH ({':'.join(path_dirs)})", FIX))
                continue
            programs.setdefault(path, f"{run_by} (line {command.line})")
            if (path not in read and depth < MAX_DEPTH and len(read) < MAX_SCRIPTS
                    and is_shell_script(root, path)):
                read.add(path)
                queue.append((path, _read(root, path), depth + 1))
        for name in found.sourced:
            path = normalize(name if name.startswith("/") else f"{cwd}/{name}")
            found_file = lookup(root, path)
            if found_file is None or not found_file.is_file:
                continue  # `[ -r F ] && . F`: optional, or given at run time
            paths.setdefault(path, f"read by {origin} (. or sh)")
            if path not in read and depth < MAX_DEPTH and len(read) < MAX_SCRIPTS:
                read.add(path)
                queue.append((path, _read(root, path), depth + 1))
        for name in found.paths:  # files it names (directories are too broad a hint)
            path = normalize(name)
            found_file = lookup(root, path)
            if (found_file is not None and found_file.is_file and not path.startswith(PROVIDED)
                    and path not in programs):
                paths.setdefault(path, f"named by {origin}")
    return Evidence(tuple(programs.items()), tuple(paths.items()), tuple(notices))


def _read(root: Root, path: str) -> bytes:
    try:
        return root.read_bytes(path, MAX_SCRIPT_BYTES) or b""
    except SlimmerError:
        return b""  # a symlink loop: nothing to read


def lookup(root: Root, path: str) -> Resolved | None:
    """The path in the root, None for nothing there or a symlink loop (evidence, not input)."""
    try:
        return root.lookup(path)
    except SlimmerError:
        return None


def _ended(origin: str, found: Commands) -> list[Notice]:
    """Where the evidence of one script ends: computed commands and lines not parsed."""
    by_text: dict[str, list[int]] = {}
    for computed in found.computed:
        by_text.setdefault(computed.text, []).append(computed.line)
    shown = list(by_text.items())[:MAX_COMPUTED]
    more = len(by_text) - len(shown)
    notices = [Notice("script-command-computed", origin,
                      f"runs a computed command {text} ({_lines(lines)}): what it runs is not "
                      "known before it runs" + (f" (and {more} more)" if i == len(shown) - 1
                                                and more else ""),
                      "--add (pack) or --keep (slim) the programs it may run")
               for i, (text, lines) in enumerate(shown)]
    if found.unparsed:
        notices.append(Notice("script-unparsed", origin,
                              f"{_lines(list(found.unparsed))} could not be parsed: the "
                              "commands there are not looked for",
                              "--add (pack) or --keep (slim) what they run"))
    return notices


def _lines(numbers: list[int]) -> str:
    """`line 5`, `lines 5, 9, 12` (the first five of them, then `...`)."""
    unique = sorted(set(numbers))
    shown = ", ".join(str(n) for n in unique[:5]) + (", ..." if len(unique) > 5 else "")
    return f"line {shown}" if len(unique) == 1 else f"lines {shown}"


def _find(root: Root, name: str, cwd: str, path_dirs: tuple[str, ...]) -> str | None:
    """A command's program inside the root: a path (relative to `cwd`), or a name in PATH."""
    if "/" in name:
        path = normalize(name if name.startswith("/") else f"{cwd}/{name}")
        found = lookup(root, path)
        return path if found is not None and found.is_file else None
    try:
        return find_in_path(root, name, path_dirs, executable=True)
    except SlimmerError:
        return None


def shell_scripts(root: Root, paths: Iterable[str]) -> list[str]:
    return [p for p in paths if is_shell_script(root, p)]


def under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def parent(path: str) -> str:
    return os.path.dirname(path) or "/"
