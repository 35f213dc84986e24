"""`slimmer diff A B`: what differs between two images, most useful first: files added and
removed, contents, symlink targets, modes and owners, mtimes, then the config. The tool to reach
for when a rebuild is not identical."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slimmer.errors import printable
from slimmer.image.merged import Image, open_image
from slimmer.tree import Dir, Entry, File, Symlink, file_digests

CONFIG_FIELDS = ("architecture", "os", "variant", "created")


@dataclass(frozen=True, slots=True)
class Difference:
    rank: int  # lower is more useful
    line: str  # names quoted (errors.printable): one line whatever the image holds

    def __post_init__(self) -> None:
        object.__setattr__(self, "line", printable(self.line))


def diff(a: str, b: str) -> list[Difference]:
    with open_image(a) as left, open_image(b) as right:
        found = _files(left, right) + _config(left.source.config, right.source.config)
    return sorted(found, key=lambda d: (d.rank, d.line))


def _kind(entry: Entry) -> str:
    return "directory" if isinstance(entry, Dir) else (
        "symlink" if isinstance(entry, Symlink) else "file")


def _files(left: Image, right: Image) -> list[Difference]:
    out = []
    lpaths, rpaths = set(left.tree.paths()), set(right.tree.paths())
    out += [Difference(0, f"added: {p} ({_kind(_get(right, p))})") for p in rpaths - lpaths]
    out += [Difference(0, f"removed: {p} ({_kind(_get(left, p))})") for p in lpaths - rpaths]
    for path in sorted(lpaths & rpaths):
        old, new = _get(left, path), _get(right, path)
        if _kind(old) != _kind(new):
            out.append(Difference(1, f"changed type: {path}: {_kind(old)} -> {_kind(new)}"))
            continue
        if isinstance(old, File) and isinstance(new, File) and (
                old.size != new.size or file_digests(old)[0] != file_digests(new)[0]):
            out.append(Difference(1, f"changed content: {path} ({old.size} -> {new.size} bytes)"))
        if isinstance(old, Symlink) and isinstance(new, Symlink) and old.target != new.target:
            out.append(Difference(2, f"changed link: {path}: {old.target} -> {new.target}"))
        if isinstance(old, (File, Dir)) and isinstance(new, (File, Dir)):
            if old.mode != new.mode:
                out.append(Difference(3, f"changed mode: {path}: {old.mode:04o} -> "
                                         f"{new.mode:04o}"))
            if (old.uid, old.gid) != (new.uid, new.gid):
                out.append(Difference(3, f"changed owner: {path}: {old.uid}:{old.gid} -> "
                                         f"{new.uid}:{new.gid}"))
        lt, rt = left.mtimes.get(path), right.mtimes.get(path)
        if lt != rt:
            out.append(Difference(4, f"changed mtime: {path}: {lt} -> {rt}"))
    return out


def _get(image: Image, path: str) -> Entry:
    entry = image.tree.get(path)
    assert entry is not None
    return entry


def _config(left: dict[str, Any], right: dict[str, Any]) -> list[Difference]:
    out = []
    for key in CONFIG_FIELDS:
        if left.get(key) != right.get(key):
            out.append(Difference(5, f"changed config {key}: {_show(left.get(key))} -> "
                                     f"{_show(right.get(key))}"))
    lrun, rrun = left.get("config") or {}, right.get("config") or {}
    for key in sorted(set(lrun) | set(rrun)):
        if lrun.get(key) != rrun.get(key):
            out.append(Difference(5, f"changed config {key}: {_show(lrun.get(key))} -> "
                                     f"{_show(rrun.get(key))}"))
    lhist, rhist = left.get("history"), right.get("history")
    if lhist != rhist:
        out.append(Difference(6, f"changed history: {_show(lhist)} -> {_show(rhist)}"))
    return out


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if value is not None else "(none)"
