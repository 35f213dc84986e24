"""Recipe globs over absolute paths, matched without backtracking (docs/recipes.md).

`*` and `?` stay within one name, `**` as a whole name spans any number of directories, and
`[...]` is a class of characters (`[!...]` or `[^...]` negated, `a-z` a range, a `]` right after
the opening bracket a member) that never matches `/`. A regex made of these backtracks
catastrophically: each `**` is a nested quantifier, and twelve of them took minutes on a path of
thirty names. Matching here goes name by name, keeping the set of pattern positions reached so
far (a small NFA), so a path costs at most (names x pattern parts x the longest name x its
tokens): polynomial and bounded, whatever the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimmer.errors import SlimmerError


class BadGlob(SlimmerError):
    """A glob that cannot mean anything (a class range such as `z-a`)."""


@dataclass(frozen=True, slots=True)
class CharClass:
    negated: bool
    ranges: tuple[tuple[str, str], ...]  # single characters are ranges of one

    def accepts(self, char: str) -> bool:
        inside = any(low <= char <= high for low, high in self.ranges)
        return inside != self.negated and char != "/"


class _Star:
    """`*`: any run of characters within one name."""


class _Any:
    """`?`: any one character within one name."""


class _Double:
    """`**` as a whole name: any number of names."""


STAR = _Star()
ANY = _Any()
DOUBLE = _Double()

Token = str | CharClass | _Star | _Any  # a str token is one literal character
Segment = tuple[Token, ...]
Unit = Segment | _Double


@dataclass(frozen=True, slots=True)
class Glob:
    pattern: str
    units: tuple[Unit, ...]  # one per name of the pattern

    def fullmatch(self, path: str) -> bool:
        """Whether the whole of absolute `path` matches."""
        if not path.startswith("/"):
            return False
        names = path[1:].split("/")
        last = len(self.units) - 1
        states = self._closure({0})
        for index, name in enumerate(names):
            final = index == len(names) - 1
            reached: set[int] = set()
            for unit_index in states:
                unit = self.units[unit_index]
                if unit_index == last:
                    # A final `**` takes all that is left (as `.*` did); a final name must
                    # be the path's final name.
                    if isinstance(unit, _Double) or (final and _matches(unit, name)):
                        return True
                elif final:
                    continue  # a name before the last one needs a name after it
                elif isinstance(unit, _Double):
                    if name:
                        reached.add(unit_index)
                elif _matches(unit, name):
                    reached.add(unit_index + 1)
            states = self._closure(reached)
            if not states:
                return False
        return False

    def _closure(self, states: set[int]) -> set[int]:
        """`**` before the last name may match no name at all: skip it too."""
        out = set(states)
        for index in range(len(self.units) - 1):
            if index in out and isinstance(self.units[index], _Double):
                out.add(index + 1)
        return out


def compile_glob(pattern: str) -> Glob:
    """`pattern` ready to match; BadGlob for a class with a reversed range."""
    units: list[Unit] = []
    for part in pattern.strip("/").split("/"):
        units.append(DOUBLE if part == "**" else _segment(part, pattern))
    return Glob(pattern, tuple(units))


def _segment(part: str, pattern: str) -> Segment:
    tokens: list[Token] = []
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            if not tokens or not isinstance(tokens[-1], _Star):  # `**` inside a name is one `*`
                tokens.append(STAR)
        elif char == "?":
            tokens.append(ANY)
        elif char == "[" and (parsed := _char_class(part, i + 1, pattern)) is not None:
            klass, i = parsed
            tokens.append(klass)
        else:
            tokens.append(char)
        i += 1
    return tuple(tokens)


def _char_class(part: str, start: int, pattern: str) -> tuple[CharClass, int] | None:
    """The class whose body starts at `start` and the index of its `]`; None when it is not
    closed (the `[` is then an ordinary character)."""
    i = start
    negated = i < len(part) and part[i] in "!^"
    if negated:
        i += 1
    body_start = i
    if i < len(part) and part[i] == "]":
        i += 1  # a `]` first is a member
    end = part.find("]", i)
    if end < 0:
        return None
    body = part[body_start:end]
    ranges: list[tuple[str, str]] = []
    j = 0
    while j < len(body):
        if j + 2 < len(body) and body[j + 1] == "-":
            low, high = body[j], body[j + 2]
            if low > high:
                raise BadGlob(f"glob {pattern!r}: the range '{low}-{high}' in "
                              f"'[{part[start:end]}]' is reversed (write '{high}-{low}')")
            ranges.append((low, high))
            j += 3
        else:
            ranges.append((body[j], body[j]))
            j += 1
    return CharClass(negated, tuple(ranges)), end


def _matches(tokens: Segment, name: str) -> bool:
    """One name against one name's tokens: the two-pointer wildcard match, which only ever
    returns to the latest `*` (earlier ones cannot do better), so at most len(name) x
    len(tokens) steps."""
    t = n = 0
    star, mark = -1, 0
    while n < len(name):
        token = tokens[t] if t < len(tokens) else None
        if isinstance(token, _Star):
            star, mark = t, n
            t += 1
        elif token is not None and _accepts(token, name[n]):
            t += 1
            n += 1
        elif star >= 0:
            t, mark = star + 1, mark + 1
            n = mark
        else:
            return False
    while t < len(tokens) and isinstance(tokens[t], _Star):
        t += 1
    return t == len(tokens)


def _accepts(token: Token, char: str) -> bool:
    if isinstance(token, str):
        return token == char
    if isinstance(token, CharClass):
        return token.accepts(char)
    return isinstance(token, _Any)
