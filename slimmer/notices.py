"""Warnings a build gives: one line each, in one form: the file it is about first, then the
problem, then the flag that fixes it (`PATH: problem; fix`). The same words go into
`--report json`, each with a stable `code` for machines (CODES lists them all)."""

from __future__ import annotations

from dataclasses import dataclass

from slimmer.errors import printable

# code -> what it means (docs/messages.md lists the same)
CODES = {
    "library-unloadable": "an ELF file added from the root cannot be loaded (a library missing)",
    "elf-unreadable": "an ELF file added from the root cannot be read",
    "dlopen-missing": "a library a runtime rule asks for is not in the root",
    "dlopen-computed": "an object dlopens what no literal or kept directory of it names",
    "evidence-too-large": "a directory compiled into a program is larger than one piece of "
                          "evidence may bring",
}
LIMIT = 300  # characters of one printed line, past which it is cut


@dataclass(frozen=True, slots=True)
class Notice:
    """One warning: about `path`, what is wrong, and the flag that fixes it."""

    code: str
    path: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{printable(self.path)}: {printable(self.problem)}"
        return printable(f"{text}; {self.fix}" if self.fix else text, LIMIT)

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": str(self), "fix": self.fix}
