"""Shell scripts and command lines: which programs they run, read with a real parser.

The parser is tree-sitter's bash grammar (sh, dash and bash scripts alike). It was chosen over
bashlex, which gave up on 120 of the 150 shell scripts of a Debian 12 /usr/bin (it has no `case`);
tree-sitter parses every one and marks the parts it could not read (ERROR nodes) instead of
failing, so the rest of a script still counts.

Every simple command anywhere in a script counts: in pipelines, lists, subshells, `$(...)` and
backquotes, `if`/`while`/`for`/`case` bodies, function bodies, and the strings of `sh -c` (parsed
again, a few levels deep). The command word is the program run, except for the wrappers that run
their arguments (`exec`, `command`, `env X=1 prog`, `xargs prog`, `nice`, `nohup`, `timeout`,
`gosu USER prog`...), which are followed to the program they run. Shell builtins and the script's
own functions are no programs. A command word `$NAME` names the literal values the script
assigns NAME (each an alternative: the script chooses), `${NAME:-word}` its default; `eval`'s
arguments are read again, unquoted once. A command word no analysis can read (`$CMD args` with
CMD from the environment) is computed; `"$@"` (running the script's arguments) is told apart
from it. Literal absolute paths among the arguments and redirections are collected too (what
the script reads or writes by name).
Nothing here looks at a file system: `assemble/commands.py` finds the names in a root.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tree-sitter is imported when a script is first parsed
    from tree_sitter import Node, Parser

MAX_NESTING = 4  # sh -c 'sh -c "..."' levels followed

# Builtins of dash and bash (and the POSIX special builtins): never looked up in PATH.
BUILTINS = frozenset({
    ".", ":", "[", "alias", "bg", "bind", "break", "builtin", "caller", "cd", "command",
    "compgen", "complete", "compopt", "continue", "declare", "dirs", "disown", "echo", "enable",
    "eval", "exec", "exit", "export", "false", "fc", "fg", "getopts", "hash", "help", "history",
    "jobs", "kill", "let", "local", "logout", "mapfile", "popd", "printf", "pushd", "pwd", "read",
    "readarray", "readonly", "return", "set", "shift", "shopt", "source", "suspend", "test",
    "print", "whence",  # ksh's (a script's `if ksh; then print ...` branch)
    "time", "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias", "unset",
    "wait"
})
# Reserved words: a command name only where the parser recovered from an error.
KEYWORDS = frozenset({
    "!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if",
    "in", "then", "until", "while"
})
SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "posh", "busybox"})

# Wrappers that run the command in their arguments: name -> (options that take a value, how many
# leading operands to skip after the options).
WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "exec": (frozenset({"-a"}), 0),
    "command": (frozenset(), 0),
    "env": (frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}), 0),
    "xargs": (frozenset({"-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file",
                         "--delimiter", "--max-args", "--max-procs", "--max-chars"}), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "nohup": (frozenset(), 0),
    "setsid": (frozenset(), 0),
    "stdbuf": (frozenset({"-i", "-o", "-e"}), 0),
    "timeout": (frozenset({"-k", "-s", "--kill-after", "--signal"}), 1),
    "time": (frozenset(), 0),
    "ionice": (frozenset({"-c", "-n", "-p"}), 0),
    "chrt": (frozenset(), 1),
    "taskset": (frozenset(), 1),
    "flock": (frozenset({"-w", "-E", "--timeout", "--conflict-exit-code"}), 1),
    "gosu": (frozenset(), 1),
    "su-exec": (frozenset(), 1),
    "tini": (frozenset({"-p", "-e"}), 0),
    "dumb-init": (frozenset({"-r", "--rewrite"}), 0),
    "setpriv": (frozenset({"--reuid", "--regid", "--groups", "--inh-caps", "--bounding-set"}),
                0),
}


@dataclass(frozen=True, slots=True)
class Command:
    """A program a script runs: its literal name (a bare name, or a path)."""

    name: str
    line: int  # 1-based, in the script (a `sh -c` or `eval` string's: the line it starts on)
    # one of the literal values of a variable run as `$NAME`: the script chooses among them
    # (`uncompress=gzip` or `bzip2`), so one that is missing is no fault
    alternative: bool = False


@dataclass(frozen=True, slots=True)
class Computed:
    """A command word no analysis can read (`$CMD`, `$(which x)`)."""

    text: str
    line: int


@dataclass(frozen=True, slots=True)
class Commands:
    """What a script (or a `sh -c` string) runs."""

    commands: tuple[Command, ...]  # each name once, first occurrence
    computed: tuple[Computed, ...]
    sourced: tuple[str, ...]  # literal files of `. FILE`, `source FILE` and `sh FILE`
    paths: tuple[str, ...]  # literal absolute paths (and file:// URLs) among arguments, redirects
    runs_arguments: bool  # `"$@"`, `exec "$@"`, `$1 ...`: runs what it is given
    unparsed: tuple[int, ...]  # lines the parser could not read (their commands are unknown)


@functools.cache
def _parser() -> Parser:
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))


def parse_commands(text: bytes) -> Commands:
    """The programs a shell script or a `sh -c` string runs."""
    found = _Found()
    _walk_text(text, found, _Scope(frozenset(), {}, 0, 0))
    return Commands(_first(found.commands), tuple(found.computed),
                    tuple(dict.fromkeys(found.sourced)), tuple(dict.fromkeys(found.paths)),
                    found.runs_arguments,
                    tuple(sorted(set(found.unparsed))))


def _first(commands: list[Command]) -> tuple[Command, ...]:
    seen: dict[str, Command] = {}
    for command in commands:
        seen.setdefault(command.name, command)
    return tuple(seen.values())


class _Found:
    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.computed: list[Computed] = []
        self.sourced: list[str] = []
        self.paths: list[str] = []
        self.runs_arguments = False
        self.unparsed: list[int] = []


@dataclass(frozen=True, slots=True)
class _Scope:
    """What a text is read with: the functions and variable values of the script around it
    (an `eval` or `sh -c` string sees its script's), its first line's number less one in the
    script, and how deep in `sh -c` and `eval` strings it is."""

    functions: frozenset[str]
    variables: dict[str, list[str | None]]  # NAME -> the values assigned (None: not literal)
    offset: int
    depth: int

    def inner(self, node: Node) -> _Scope:
        return _Scope(self.functions, self.variables, self.line(node) - 1, self.depth + 1)

    def line(self, node: Node) -> int:
        return self.offset + node.start_point[0] + 1


def _walk_text(text: bytes, found: _Found, outer: _Scope) -> None:
    tree = _parser().parse(text)
    nodes = _nodes(tree.root_node)
    variables = {name: list(values) for name, values in outer.variables.items()}
    for node in nodes:
        if node.type == "variable_assignment":
            value = node.child_by_field_name("value")
            assigned = None if value is None else literal(value) or _default(value)
            variables.setdefault(_text(node.child_by_field_name("name")), []).append(assigned)
        elif node.type == "for_statement":
            variables.setdefault(_text(node.child_by_field_name("variable")), []).append(None)
    functions = outer.functions | {_text(n.child_by_field_name("name")) for n in nodes
                                   if n.type == "function_definition"}
    scope = _Scope(frozenset(functions), variables, outer.offset, outer.depth)
    for node in nodes:
        if node.type == "ERROR" or node.is_missing:
            found.unparsed.append(scope.line(node))
        elif node.type == "command":
            _command(node, found, scope)
        elif node.type == "file_redirect":
            destination = node.child_by_field_name("destination")
            _path(literal(destination) if destination is not None else None, found)


def _nodes(node: Node) -> list[Node]:
    """Every node below `node`, in document order (iterative: scripts can nest deeply)."""
    out: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed(current.children))
    return out


def _text(node: Node | None) -> str:
    return "" if node is None or node.text is None else node.text.decode("utf-8",
                                                                          "surrogateescape")


def literal(node: Node) -> str | None:
    """The value of a word as the shell sees it when it holds no expansion, else None."""
    kind = node.type
    if kind == "command_name":
        return literal(node.children[0]) if node.child_count == 1 else None
    if kind in ("word", "number"):
        text = _text(node)
        if any(c in text for c in "*?[\0") or text.startswith("~"):
            return None  # a glob or a tilde: the file system decides
        return _unescape(text)
    if kind == "raw_string":
        return _text(node)[1:-1]
    if kind == "string":
        parts = [c for c in node.children if c.type != '"']
        if all(c.type == "string_content" for c in parts):
            return "".join(_text(c) for c in parts)
        return None
    if kind == "concatenation":
        values = [literal(c) for c in node.children]
        return None if any(v is None for v in values) else "".join(v or "" for v in values)
    return None


def _program_word(value: str | None) -> str | None:
    """The program a variable's value runs as an unquoted command word (`grep -E`: grep),
    None when that is not a plain word (holds expansions or quotes, or is empty)."""
    fields = (value or "").split()
    if fields and fields[0].startswith("${"):  # a value eval'd later: grep='${GREP-grep}'
        command = next((n for n in _nodes(_parser().parse(fields[0].encode()).root_node)
                        if n.type == "command"), None)
        name = command.child_by_field_name("name") if command is not None else None
        fields = [_default(name) or ""] if name is not None else []
    if not fields or any(c in fields[0] for c in "$`'\"\\=(){}<>|;&*?["):
        return None
    return fields[0]


def _variable(node: Node) -> str | None:
    """NAME of a command word that is `$NAME`, `${NAME}` or `"$NAME"`, else None."""
    while node.type in ("command_name", "string") and len(
            [c for c in node.children if c.type != '"']) == 1:
        node = next(c for c in node.children if c.type != '"')
    if node.type == "simple_expansion" or (node.type == "expansion" and node.child_count == 3):
        names = [c for c in node.children if c.type == "variable_name"]
        return _text(names[0]) if names else None
    return None


def _default(node: Node) -> str | None:
    """The literal default of `${NAME:-word}` (or `-`, `+`, `=`) as a command word: the one
    program that can be known before it runs (`${PAGER:-less}`)."""
    while node.type in ("command_name", "string") and len(
            [c for c in node.children if c.type != '"']) == 1:
        node = next(c for c in node.children if c.type != '"')
    if node.type != "expansion":
        return None
    kinds = [c.type for c in node.children]
    if (len(kinds) == 5 and kinds[1] == "variable_name"
            and kinds[2] in (":-", "-", ":+", "+", ":=", "=")):
        return literal(node.children[3])
    return None


def _unquoted(node: Node) -> str:
    """A word's text with one level of quotes removed, expansions left as written (what
    `eval` gives the shell to parse again)."""
    if node.type == "raw_string":
        return _text(node)[1:-1]
    if node.type == "string":
        return "".join(_text(c) for c in node.children if c.type != '"')
    if node.type == "concatenation":
        return "".join(_unquoted(c) for c in node.children)
    return _text(node)


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _runs_arguments(node: Node) -> bool:
    """`"$@"`, `$@`, `"$*"`, `$1`, `"${1}"`: the script's own arguments as the command."""
    text = _text(node).strip('"')
    return text in ("$@", "$*", "${@}", "${*}") or (
        text.startswith(("$", "${")) and text.strip("${}").isdigit())


def _command(node: Node, found: _Found, scope: _Scope) -> None:
    line = scope.line(node)
    name = node.child_by_field_name("name")
    if name is None:
        return  # assignments only
    words: list[Node] = [name, *node.children_by_field_name("argument")]
    for argument in words[1:]:
        _path(literal(argument), found)
    while words:
        head, values = words[0], [literal(w) for w in words]
        word = values[0] if values[0] is not None else _default(head)
        if word is None:
            if "\0" in _text(head):
                return  # binary data after a script's end: no command
            if _runs_arguments(head.children[0] if head.type == "command_name" else head):
                found.runs_arguments = True
                return
            values_of = [_program_word(v) for v in scope.variables.get(_variable(head) or "",
                                                                      [None])]
            found.commands += [Command(v, line, True) for v in values_of
                               if v and v not in BUILTINS and v not in KEYWORDS]
            if None in values_of:
                found.computed.append(Computed(_text(head), line))
            return
        base = word.rsplit("/", 1)[-1]
        if word in (".", "source"):
            if len(values) > 1 and values[1]:
                found.sourced.append(values[1])
            return
        if word in scope.functions:
            return
        if word == "eval":  # its arguments, unquoted once, are a command line
            if scope.depth < MAX_NESTING:
                text = " ".join(_unquoted(w) for w in words[1:])
                _walk_text(text.encode("utf-8", "surrogateescape"), found, scope.inner(node))
            return
        if word in KEYWORDS:
            return
        if word not in BUILTINS:
            found.commands.append(Command(word, line))
        if base in SHELLS:
            _shell(words, values, found, scope)
            return
        rest = _wrapped(base if word not in BUILTINS or word in WRAPPERS else "", values)
        if rest is None:
            return
        words = words[rest:]


def _path(value: str | None, found: _Found) -> None:
    """An argument that names a file by its absolute path (or a file:// URL of one)."""
    if value is not None and value.startswith("file:///"):
        value = value[len("file://"):]
    if value is not None and value.startswith("/") and len(value) > 1 and "\0" not in value:
        found.paths.append(value)


def _wrapped(name: str, values: list[str | None]) -> int | None:
    """Where the wrapped command starts among a wrapper's words, or None (not a wrapper, or
    one that runs nothing: `command -v x`, `env` alone)."""
    if name not in WRAPPERS:
        return None
    takes_value, operands = WRAPPERS[name]
    i = 1
    while i < len(values):
        value = values[i]
        if value is None:
            break
        if name == "command" and value in ("-v", "-V"):
            return None  # a lookup, not a run
        if name == "env" and "=" in value and not value.startswith("-"):
            i += 1
            continue
        if value == "--":
            i += 1
            break
        if not value.startswith("-") or value == "-":
            break
        i += 2 if value in takes_value else 1
    i += operands
    return i if i < len(values) else None


def _shell(words: list[Node], values: list[str | None], found: _Found, scope: _Scope) -> None:
    """`sh -c STRING` (parsed again, bounded) or `sh FILE` (a script to read too)."""
    i = 0
    while i + 1 < len(values):
        i += 1
        value = values[i]
        if value is None:
            return
        if value == "-c" or (value.startswith("-") and "c" in value[1:] and
                             not value.startswith("--")):
            if i + 1 < len(values):
                string = values[i + 1]
                if string is None:
                    found.computed.append(Computed(_text(words[i + 1]),
                                                   scope.line(words[i + 1])))
                elif scope.depth < MAX_NESTING:
                    _walk_text(string.encode("utf-8", "surrogateescape"), found,
                               scope.inner(words[i + 1]))
            return
        if value in ("-o", "+o"):
            i += 1  # its option name
            continue
        if not value.startswith(("-", "+")):
            found.sourced.append(value)
            return


def shell_of(interpreter: str, env_program: str | None) -> bool:
    """Whether a `#!` line names a shell this module reads (sh, bash, dash...)."""
    name = (env_program or interpreter).rsplit("/", 1)[-1]
    return name in SHELLS - {"busybox"}
