"""Scripts: the interpreter a `#!` line names, as the kernel reads it, found inside the root.

Linux reads at most the first 256 bytes: `#!`, optional blanks, the interpreter path up to the next
blank, then the rest of the line (trimmed) as ONE argument. `#!/usr/bin/env NAME` runs env, which
looks NAME up in PATH; both are needed in the image. An interpreter may itself be a script (the
kernel allows a few levels).
"""

from __future__ import annotations

from dataclasses import dataclass

from slimmer.errors import FileProblem, SlimmerError
from slimmer.loader.programs import find_in_path
from slimmer.loader.root import Root

SHEBANG_MAX = 256  # BINPRM_BUF_SIZE since Linux 5.1
MAX_DEPTH = 4  # interpreters that are scripts themselves


@dataclass(frozen=True, slots=True)
class Shebang:
    script: str
    interpreter: str  # as written, absolute
    argument: str  # the rest of the line, one argument ("" when none)

    @property
    def env_program(self) -> str | None:
        """NAME of `#!/usr/bin/env NAME` (also `env -S NAME args`), else None."""
        if not self.interpreter.endswith("/env") or not self.argument:
            return None
        words = self.argument.split()
        if words[0] == "-S":
            words = words[1:]
        elif words[0].startswith("-S"):
            words = [words[0][2:], *words[1:]]
        words = [w for w in words if "=" not in w or w.startswith("/")]  # env's VAR=value
        return words[0] if words and not words[0].startswith("-") else None


def read_shebang(root: Root, path: str) -> Shebang | None:
    """The `#!` line of a file inside the root, or None when it has none."""
    head = root.read_bytes(path, SHEBANG_MAX)
    if head is None or not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip(b" \t\r")
    if not line:
        raise SlimmerError(f"{path}: empty #! line")
    interpreter, _, argument = line.replace(b"\t", b" ").partition(b" ")
    text = interpreter.decode("utf-8", "surrogateescape")
    if not text.startswith("/"):
        raise SlimmerError(f"{path}: the #! interpreter {text!r} is not an absolute path")
    return Shebang(path, text, argument.strip().decode("utf-8", "surrogateescape"))


def interpreters(root: Root, script: str, path_dirs: tuple[str, ...]) -> list[str]:
    """The programs a script needs to start, in the order they run: the interpreter (and for
    env, the program it runs, found in PATH inside the root)."""
    found: list[str] = []
    current = script
    for _ in range(MAX_DEPTH):
        bang = read_shebang(root, current)
        if bang is None:
            return found
        if root.lookup(bang.interpreter) is None:
            raise FileProblem(f"{script}: interpreter {bang.interpreter} not found in the root")
        found.append(bang.interpreter)
        name = bang.env_program
        if name is not None:
            target = name if name.startswith("/") else find_in_path(root, name, path_dirs,
                                                                     executable=True)
            if target is None:
                raise FileProblem(f"{script}: {name} (from #!{bang.interpreter} {bang.argument})"
                                  f" not found in PATH ({':'.join(path_dirs)}) in the root")
            found.append(target)
            current = target
        else:
            current = bang.interpreter
    raise SlimmerError(f"{script}: more than {MAX_DEPTH} levels of #! interpreters")

