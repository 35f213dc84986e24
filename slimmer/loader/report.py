"""Turning closures into text: the lddtree-like tree, the flat list, and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii

from slimmer.loader.resolve import Closure, Library, Missing


def _library_json(lib: Library) -> dict[str, object]:
    return {"soname": lib.soname, "path": lib.path, "needed_by": lib.needed_by,
            "found_via": lib.found_via, "hwcaps": list(lib.hwcaps)}


def _head_json(closure: Closure) -> dict[str, object]:
    return {"binary": closure.binary, "kind": closure.kind.value, "arch": closure.elf.arch_name,
            "interpreter": closure.elf.interpreter}


def _missing_json(closure: Closure) -> list[dict[str, object]]:
    return [{"soname": m.soname, "needed_by": m.needed_by, "searched": list(m.searched),
             "reason": m.reason} for m in closure.missing]


def closure_json(closure: Closure,
                 memo: dict[int, dict[str, object]] | None = None) -> dict[str, object]:
    """The `slimmer deps --json` object of one program (schema in README.md). Programs with the
    same needs share Library objects; `memo` (by id, for one call over many closures) lets them
    share the converted dicts too."""
    seen = {} if memo is None else memo

    def library(lib: Library) -> dict[str, object]:
        done = seen.get(id(lib))
        if done is None:
            done = seen[id(lib)] = _library_json(lib)
        return done

    return {**_head_json(closure), "libraries": [library(lib) for lib in closure.libraries],
            "missing": _missing_json(closure)}


def closures_json(closures: list[Closure]) -> list[dict[str, object]]:
    memo: dict[int, dict[str, object]] = {}
    return [closure_json(c, memo) for c in closures]


def closures_json_text(closures: list[Closure]) -> str:
    """The same text as `json.dumps(closures_json(closures))`, written faster: the library
    objects (thousands for a directory of programs) are formatted directly with the json
    module's C string encoder. Each shared Library object is formatted once; the copies made
    for each program (a program's direct needs, `needed_by` its own path) reuse the text
    around `needed_by` of the first library with the same fields."""
    enc = encode_basestring_ascii
    encoded: dict[int, str] = {}
    around: dict[tuple[str, str, str, tuple[str, ...]], tuple[str, str]] = {}
    parts: list[str] = []
    for closure in closures:
        binary = enc(closure.binary)
        libraries: list[str] = []
        for lib in closure.libraries:
            text = encoded.get(id(lib))
            if text is None:
                key = (lib.soname, lib.path, lib.found_via, lib.hwcaps)
                pair = around.get(key)
                if pair is None:
                    hwcaps = ", ".join(map(enc, lib.hwcaps))
                    pair = around[key] = (
                        f'{{"soname": {enc(lib.soname)}, "path": {enc(lib.path)}, "needed_by": ',
                        f', "found_via": {enc(lib.found_via)}, "hwcaps": [{hwcaps}]}}')
                needed_by = binary if lib.needed_by == closure.binary else enc(lib.needed_by)
                text = encoded[id(lib)] = pair[0] + needed_by + pair[1]
            libraries.append(text)
        interp = closure.elf.interpreter
        missing = json.dumps(_missing_json(closure)) if closure.missing else "[]"
        parts.append(f'{{"binary": {binary}, "kind": {enc(closure.kind.value)}, '
                     f'"arch": {enc(closure.elf.arch_name)}, '
                     f'"interpreter": {"null" if interp is None else enc(interp)}, '
                     f'"libraries": [{", ".join(libraries)}], "missing": {missing}}}')
    return f"[{', '.join(parts)}]"


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


def missing_message(closures: Iterable[Closure], verbose: bool = False) -> str | None:
    """One line per missing library, with who needs it and every place searched: each
    directory once (`verbose`: every path tried, with why it was skipped)."""
    lines = []
    for closure in closures:
        for m in closure.missing:
            lines.append(missing_line(m) if verbose else
                         f"{m.soname} needed by {m.needed_by}: {m.reason} "
                         f"(searched {', '.join(searched_places(m)) or 'nowhere'})")
    return "\n".join(lines) if lines else None


def missing_line(m: Missing) -> str:
    """A missing library with every path the loader would try (what --verbose shows)."""
    where = "; ".join(m.searched) if m.searched else "nowhere to search"
    return f"{m.soname} needed by {m.needed_by}: {m.reason} (searched: {where})"


def searched_places(m: Missing) -> list[str]:
    """Where a library was looked for, each place once: the directories of the paths tried
    (/usr/lib/libfoo.so -> /usr/lib), `ld.so.cache`, and why a candidate was skipped."""
    places: dict[str, None] = {}
    for entry in m.searched:
        path, sep, note = entry.partition(" (")
        if path == "/etc/ld.so.cache":
            path, sep = "ld.so.cache", ""
        elif path != m.soname and path.endswith("/" + m.soname):
            path = path[:-len(m.soname) - 1] or "/"
        places.setdefault(f"{path} ({note}" if sep else path, None)
    return list(places)
