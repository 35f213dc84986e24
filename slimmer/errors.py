"""One exception root for every failure a user can cause; the CLI catches it in one place.

Each kind of failure has a stable `code` for machines (`--report json`, docs/messages.md):
a subclass names its own, or gets one from its class name (FileProblem -> file-problem);
an instance may be given a finer one (program-not-found is a FileProblem).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LIMIT = 300  # characters of one printed line without --verbose (the "warning: "... included)
SHOWN_HINTS = 5  # hint lines of one error without --verbose


class SlimmerError(Exception):
    """A failure with a one-line, user-facing message and optional hints.

    `details` are lines printed under the message (each `  `-indented), `full_details` the
    lines --verbose prints instead (the whole list the details sum up); `hint` and `hints` are
    the fixes, printed last as `hint: ` lines."""

    code = "error"

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None,
                 details: Sequence[str] = (), full_details: Sequence[str] = (),
                 hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code
        self.details = tuple(details)
        self.full_details = tuple(full_details)
        self.hints = ((hint,) if hint else ()) + tuple(hints)

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()

    def __str__(self) -> str:
        return self.message

    def lines(self, verbose: bool = False) -> list[str]:
        """What the CLI prints, in order: `error: ` message, details, `hint: ` lines (the
        first SHOWN_HINTS unless `verbose`)."""
        details = self.full_details if verbose and self.full_details else self.details
        hints = [f"hint: {h}" for h in self.hints]
        if len(hints) > SHOWN_HINTS and not verbose:
            hints[SHOWN_HINTS:] = [f"hint: ... and {len(hints) - SHOWN_HINTS} more "
                                   "(--verbose shows all)"]
        return [f"error: {self.message}", *(f"  {d}" for d in details), *hints]

    def as_json(self, verbose: bool = False) -> dict[str, object]:
        """The failure for `--report json`: the same words as the printed lines."""
        details = self.full_details if verbose and self.full_details else self.details
        return {"code": self.code, "message": self.message, "details": list(details),
                "hints": list(self.hints)}


def printable(text: str, limit: int | None = None) -> str:
    """`text` fit for one line of a terminal: what a terminal would act on (control characters,
    line separators, bidi controls, undecodable bytes) escaped as repr escapes it, so that a
    name from an image or a registry cannot print a fake line; cut to `limit` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


_DIGEST = re.compile(r"(?<![0-9a-f])([0-9a-f]{12})[0-9a-f]{52}(?![0-9a-f])")


def fit(line: str, verbose: bool = False, limit: int = LIMIT) -> str:
    """One printed line of slimmer's: printable, and at most `limit` characters unless
    `verbose`: a longer one has its sha256 digests shortened to 12 hex digits (as docker
    shows them), then is cut, saying how much was left out and how to see it."""
    line = printable(line)
    if verbose or len(line) <= limit:
        return line
    line = _DIGEST.sub(r"\1...", line)
    if len(line) <= limit:
        return line
    # the tail's length depends on the count it names: one try with the longest count
    keep = limit - len(_cut_tail(len(line)))
    return line[:keep] + _cut_tail(len(line) - keep)


def _cut_tail(more: int) -> str:
    return f"... ({more} more characters; --verbose shows all)"


def counted(items: Sequence[str], shown: int, noun: str = "more") -> str:
    """`a, b, c and 5 more`: the first `shown` items, then how many were left out."""
    head = ", ".join(items[:shown])
    rest = len(items) - shown
    if rest <= 0:
        return head
    return f"{head} and {rest} {noun}"


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

    code = "library-missing"
