"""Paths inside a root, as strings: absolute, normalised without reading anything."""

from __future__ import annotations


def normalize(path: str) -> str:
    """An absolute in-root path with `.`, `..` and repeated slashes folded (no symlinks read)."""
    parts: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        parts.append(name)
    return "/" + "/".join(parts)
