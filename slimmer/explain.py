"""`slimmer why` and `slimmer inspect`: what is in an image archive, and why.

An archive slimmer wrote carries slimmer.json beside index.json (the reason for each path and
the path that brought it in); the file list and sizes come from the layer itself, so `inspect`
also works on archives other tools made (their reasons are unknown).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from typing import IO, Any

import zstandard

from slimmer.errors import FileProblem, SlimmerError
from slimmer.oci import CONTENTS
from slimmer.rootfs import Dir, Entry, File, FileTree, Symlink, TreeRoot
from slimmer.sysroot import normalize


@dataclass(frozen=True, slots=True)
class ImageView:
    """The files of a one-image archive and what slimmer said about them."""

    tree: FileTree  # entries as in the layers (file contents not kept, sizes are)
    known: bool  # slimmer.json was there


def _member(outer: tarfile.TarFile, name: str, archive: str) -> bytes:
    try:
        found = outer.extractfile(name)
    except KeyError:
        raise FileProblem(f"{archive}: no {name} in the archive") from None
    if found is None:
        raise FileProblem(f"{archive}: {name} is not a file")
    return found.read()


def read_image(archive: str) -> ImageView:
    """Read an OCI layout or docker archive tar: its layers' entries, in order, and
    slimmer.json if present."""
    try:
        outer = tarfile.open(archive)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise FileProblem(f"{archive}: no such file") from None
    except (tarfile.TarError, IsADirectoryError) as exc:
        raise FileProblem(f"{archive}: not an image archive ({exc})") from None
    with outer:
        names = set(outer.getnames())
        if "manifest.json" in names:
            layers = json.loads(_member(outer, "manifest.json", archive))[0]["Layers"]
        elif "index.json" in names:
            index = json.loads(_member(outer, "index.json", archive))
            digest = index["manifests"][0]["digest"].split(":")[1]
            manifest = json.loads(_member(outer, f"blobs/sha256/{digest}", archive))
            layers = [f"blobs/sha256/{d['digest'].split(':')[1]}" for d in manifest["layers"]]
        else:
            raise FileProblem(f"{archive}: neither manifest.json nor index.json: not an image")
        tree = FileTree()
        for layer in layers:
            fh = outer.extractfile(layer)
            if fh is None:
                raise FileProblem(f"{archive}: layer {layer} missing")
            _read_layer(tree, fh)
        known = CONTENTS in names
        if known:
            contents = json.loads(_member(outer, CONTENTS, archive))
            for item in contents["files"]:
                tree.reasons[item["path"]] = item["reason"]
                if "parent" in item:
                    tree.parents[item["path"]] = item["parent"]
    return ImageView(tree, known)


def _read_layer(tree: FileTree, fh: IO[bytes]) -> None:
    buffered = fh if isinstance(fh, io.BufferedReader) else io.BufferedReader(fh)  # type: ignore[type-var]
    head = buffered.peek(4)[:4]  # look at the magic without consuming it
    stream: Any = buffered
    if head[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=buffered)
    elif head == b"\x28\xb5\x2f\xfd":
        stream = zstandard.ZstdDecompressor().stream_reader(buffered)
    with tarfile.open(fileobj=stream, mode="r|") as layer:
        for m in layer:
            path = normalize("/" + m.name)
            if path == "/" or "/.wh." in path:
                continue  # whiteouts belong to multi-layer images: not read here
            entry: Entry
            if m.isdir():
                entry = Dir(m.mode, m.uid, m.gid)
            elif m.issym():
                entry = Symlink(m.linkname)
            elif m.isfile():
                entry = File(m.mode, m.size, data=b"")
            else:
                continue
            tree.remove(path)  # a later layer replaces an earlier one
            tree.add(path, entry, "")


# ---- why -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    path: str  # as asked or as the parent was named
    real: str  # in the image, symlinks resolved
    links: tuple[str, ...]  # "link -> target" met on the way
    reason: str


def why(tree: FileTree, path: str) -> list[Step]:
    """The chain that put `path` in the image: its reason, then its parent's, up to a program,
    a rule or a recipe."""
    view = TreeRoot(tree)
    steps: list[Step] = []
    seen: set[str] = set()
    current: str | None = normalize(path)
    while current is not None and current not in seen:
        seen.add(current)
        found = view.lookup(current)
        if found is None:
            if not steps:
                raise SlimmerError(f"{path}: not in the image")
            break
        reason = tree.reasons.get(found.real, "") or "(no reason recorded)"
        links = tuple(f"{link.path} -> {link.target}" for link in found.links)
        steps.append(Step(current, found.real, links, reason))
        current = tree.parents.get(found.real)
    return steps


def format_why(steps: list[Step]) -> list[str]:
    lines = []
    for depth, step in enumerate(steps):
        pad = "  " * depth
        name = step.path if step.path == step.real else f"{step.path} => {step.real}"
        lines.append(f"{pad}{name}: {step.reason}")
    return lines


# ---- inspect -------------------------------------------------------------------------------


def inventory(tree: FileTree) -> dict[str, Any]:
    """Every entry, largest first, with reasons and totals (the `inspect --json` document)."""
    files = []
    totals = {"files": 0, "directories": 0, "symlinks": 0, "bytes": 0}
    for path, entry in tree.items():
        if isinstance(entry, File):
            kind, size = "file", entry.size
            totals["files"] += 1
            totals["bytes"] += size
        elif isinstance(entry, Symlink):
            kind, size = "symlink", 0
            totals["symlinks"] += 1
        else:
            kind, size = "directory", 0
            totals["directories"] += 1
        item: dict[str, Any] = {"path": path, "type": kind, "size": size,
                                "reason": tree.reasons.get(path, "")}
        if isinstance(entry, Symlink):
            item["target"] = entry.target
        files.append(item)
    files.sort(key=lambda f: (-f["size"], f["path"]))
    return {"files": files, "totals": totals}


def format_inventory(doc: dict[str, Any], limit: int | None = None) -> list[str]:
    rows = [f for f in doc["files"] if f["type"] == "file"]
    shown = rows if limit is None else rows[:limit]
    width = max((len(f"{f['size']:,}") for f in shown), default=1)
    lines = [f"{f['size']:>{width},}  {f['path']}  ({f['reason'] or 'reason unknown'})"
             for f in shown]
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more files")
    t = doc["totals"]
    lines.append(f"total: {t['bytes']:,} bytes in {t['files']} files, {t['symlinks']} symlinks, "
                 f"{t['directories']} directories")
    return lines
