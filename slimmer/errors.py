"""One exception root for every failure a user can cause; the CLI catches it in one place."""

from __future__ import annotations


class SlimmerError(Exception):
    """A failure with a one-line, user-facing message and an optional hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


def printable(text: str, limit: int | None = None) -> str:
    """`text` fit for one line of a terminal: what a terminal would act on (control characters,
    line separators, bidi controls, undecodable bytes) escaped as repr escapes it, so that a
    name from an image or a registry cannot print a fake line; cut to `limit` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


class FileProblem(SlimmerError):
    """A path that is missing, a directory, a loop, or otherwise not a readable file."""


class SymlinkLoop(FileProblem):
    """Too many symbolic links while resolving a path (the kernel's ELOOP)."""


class NotElf(SlimmerError):
    """A file that is not an ELF object at all."""


class CorruptElf(SlimmerError):
    """An ELF file whose headers are truncated or inconsistent."""


class UnsupportedElf(SlimmerError):
    """A well-formed ELF file slimmer cannot handle (unknown machine, relocatable object...)."""


class CorruptCache(SlimmerError):
    """An /etc/ld.so.cache that cannot be parsed."""


class MissingLibraries(SlimmerError):
    """One or more DT_NEEDED libraries could not be found or loaded."""
