"""Warnings a build gives: one line each, in one form: the file it is about first, then the
problem, then the flag that fixes it (`PATH: problem; fix`). The same words go into
`--report json`, each with a stable `code` for machines (CODES lists them all)."""

from __future__ import annotations

from dataclasses import dataclass

from slimmer.errors import LIMIT, printable

__all__ = ["CODES", "LIMIT", "Notice"]

# code -> what it means (docs/messages.md lists the same)
CODES = {
    "library-unloadable": "an ELF file added from the root cannot be loaded (a library missing)",
    "elf-unreadable": "an ELF file added from the root cannot be read",
    "dlopen-missing": "a library a runtime rule asks for is not in the root",
    "script-command-missing": "a script or the command line runs a program not in the image's PATH",
    "script-command-computed": "a script or the command line runs a computed command ($CMD)",
    "script-unparsed": "lines of a shell script the parser could not read",
    "app-path-missing": "an Entrypoint/Cmd argument looks like a path but names nothing",
    "interpreter-unknown": "a script's interpreter has no recipe and no package data",
    "dlopen-computed": "an object dlopens what no literal or kept directory of it names",
    "evidence-too-large": "a directory compiled into a program is larger than one piece of "
                          "evidence may bring",
    "script-data-left-out": "a script's own package ships data files that no evidence kept",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One warning: about `path`, what is wrong, and the flag that fixes it."""

    code: str
    path: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        """The whole line (the CLI's one print point cuts it: errors.fit)."""
        text = f"{printable(self.path)}: {printable(self.problem)}"
        return f"{text}; {printable(self.fix)}" if self.fix else text

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "problem": self.problem, "fix": self.fix,
                "message": str(self)}
