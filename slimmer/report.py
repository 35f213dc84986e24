"""Turning closures into text: the lddtree-like tree, the flat list, and JSON."""

from __future__ import annotations

from collections.abc import Iterable

from slimmer.resolve import Closure, Library, Missing


def closure_json(closure: Closure,
                 memo: dict[int, dict[str, object]] | None = None) -> dict[str, object]:
    """The `slimmer deps --json` object of one program (schema in README.md). Programs with the
    same needs share Library objects; `memo` (by id, for one call over many closures) lets them
    share the converted dicts too."""
    seen = {} if memo is None else memo

    def library(lib: Library) -> dict[str, object]:
        done = seen.get(id(lib))
        if done is None:
            done = {"soname": lib.soname, "path": lib.path, "needed_by": lib.needed_by,
                    "found_via": lib.found_via, "hwcaps": list(lib.hwcaps)}
            seen[id(lib)] = done
        return done

    return {
        "binary": closure.binary,
        "kind": closure.kind.value,
        "arch": closure.elf.arch_name,
        "interpreter": closure.elf.interpreter,
        "libraries": [library(lib) for lib in closure.libraries],
        "missing": [
            {"soname": m.soname, "needed_by": m.needed_by, "searched": list(m.searched),
             "reason": m.reason}
            for m in closure.missing
        ],
    }


def closures_json(closures: list[Closure]) -> list[dict[str, object]]:
    memo: dict[int, dict[str, object]] = {}
    return [closure_json(c, memo) for c in closures]


def file_list(closures: Iterable[Closure]) -> list[str]:
    """Every file the loader opens for these programs, each once, in load order."""
    seen: dict[str, None] = {}
    for closure in closures:
        for path in closure.files():
            seen.setdefault(path, None)
    return list(seen)


def tree(closure: Closure) -> list[str]:
    """lddtree-style lines: each library under the object that loaded it."""
    head = f"{closure.binary} ({closure.kind.value}, {closure.elf.arch_name}"
    if closure.interpreter is not None:
        head += f", interpreter => {closure.interpreter.path}"
    elif closure.elf.interpreter is not None:
        head += f", interpreter => {closure.elf.interpreter} NOT FOUND"
    lines = [head + ")"]
    children: dict[str, list[Library | Missing]] = {}
    for lib in closure.libraries:
        children.setdefault(lib.needed_by, []).append(lib)
    for miss in closure.missing:
        if miss.soname != closure.elf.interpreter:
            children.setdefault(miss.needed_by, []).append(miss)

    def walk(parent: str, depth: int) -> None:
        for item in children.get(parent, []):
            pad = "    " * depth
            if isinstance(item, Missing):
                lines.append(f"{pad}{item.soname} => {item.reason.upper()}")
                continue
            line = f"{pad}{item.soname} => {item.path} [{item.found_via}]"
            if item.hwcaps:
                line += f" (hwcaps variants: {', '.join(item.hwcaps)})"
            lines.append(line)
            walk(item.path, depth + 1)

    walk(closure.binary, 1)
    return lines


def missing_message(closures: Iterable[Closure]) -> str | None:
    """One line per missing library, with who needs it and every place searched."""
    lines = []
    for closure in closures:
        for m in closure.missing:
            where = "; ".join(m.searched) if m.searched else "nowhere to search"
            lines.append(f"{m.soname} needed by {m.needed_by}: {m.reason} (searched: {where})")
    return "\n".join(lines) if lines else None
