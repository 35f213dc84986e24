"""`slimmer why` and `slimmer inspect`: what is in an image archive, and why.

An archive slimmer wrote carries slimmer.json beside index.json (the reason for each path and
the path that brought it in); the file list and sizes come from the layer itself, so `inspect`
also works on archives other tools made (their reasons are unknown).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from slimmer.errors import SlimmerError, printable
from slimmer.image.merged import open_image
from slimmer.image.model import Digest
from slimmer.image.store import LayerRef
from slimmer.loader.views import TreeRoot
from slimmer.notices import Notice
from slimmer.paths import normalize
from slimmer.tree import File, FileTree, Symlink


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One layer of an image as its manifest and config describe it."""

    digest: str  # the blob's (a docker-archive's layer.tar: "diff_id sha256:...")
    size: int | None  # the blob's, when a manifest gives it
    comment: str  # its history entry's comment (slimmer --layers: the groups it holds)


@dataclass(frozen=True, slots=True)
class ImageView:
    """The files of a one-image archive and what slimmer said about them."""

    tree: FileTree  # entries as in the layers (file contents not kept, sizes are)
    known: bool  # slimmer.json was there
    made_by: str = ""  # "pack" or "slim" (slimmer.json), "" when unknown
    warnings: tuple[Notice, ...] = ()  # what the build warned about
    layers: tuple[LayerInfo, ...] = ()  # base first (none for an image not written yet)


def read_image(archive: str) -> ImageView:
    """Any tool's image archive or layout: its merged layers, and slimmer.json if present."""
    with open_image(archive, contents=True) as image:
        tree = image.tree  # the entries stay; the spilled contents are not needed here
        contents = image.contents
        layers = _layers(image.source.blobs, image.source.config.get("history"))
    if contents is None:
        return ImageView(tree, False, layers=layers)
    tree.reasons.update(contents.reasons)
    tree.parents.update(contents.parents)
    return ImageView(tree, True, contents.made_by, contents.warnings, layers)


def _layers(blobs: tuple[LayerRef, ...], history: object) -> tuple[LayerInfo, ...]:
    """Each layer with the comment of its history entry (entries marked empty_layer have
    none; when the counts disagree no comment is given)."""
    entries = [h for h in history if isinstance(h, dict) and not h.get("empty_layer")] \
        if isinstance(history, list) else []
    comments = [str(h.get("comment") or "") for h in entries]
    if len(comments) != len(blobs):
        comments = [""] * len(blobs)
    return tuple(LayerInfo(_digest(b), b.compressed.size if b.compressed else None,
                           printable(c, 200)) for b, c in zip(blobs, comments, strict=True))


def _digest(layer: LayerRef) -> str:
    """A layer's blob digest: its descriptor's, its member name's (blobs/sha256/HEX), or else
    (`docker save`'s HEX/layer.tar) its diff_id, said to be one."""
    if layer.compressed is not None:
        return str(layer.compressed.digest)
    named = Digest.from_member(layer.name, strict=False)
    return str(named) if named is not None else f"diff_id {layer.diff_id}"


# ---- why -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    path: str  # as asked or as the parent was named
    real: str  # in the image, symlinks resolved
    links: tuple[str, ...]  # "link -> target" met on the way
    reason: str


def why(image: ImageView, path: str) -> list[Step]:
    """The chain that put `path` in the image: its reason, then its parent's, up to a program,
    a rule or a recipe. A path not in the image is refused with what would bring it and the
    build's warnings about it."""
    tree = image.tree
    view = TreeRoot(tree)
    steps: list[Step] = []
    seen: set[str] = set()
    current: str | None = normalize(path)
    while current is not None and current not in seen:
        seen.add(current)
        found = view.lookup(current)
        if found is None:
            if not steps:
                raise _not_in(image, path)
            break
        reason = tree.reasons.get(found.real, "") or "(no reason recorded)"
        links = tuple(f"{link.path} -> {link.target}" for link in found.links)
        steps.append(Step(current, found.real, links, reason))
        current = tree.parents.get(found.real)
    return steps


def _not_in(image: ImageView, path: str) -> SlimmerError:
    """`PATH: not in the image`, the build's warnings about it, and the option that brings it
    for the command that made the image."""
    wanted = normalize(path)
    about = [w for w in image.warnings
             if w.path in (wanted, os.path.basename(wanted)) or wanted.startswith(w.path + "/")]
    hint = {"slim": f"slim with --keep {wanted} to keep it",
            "pack": f"pack (or build) with --add SRC:{wanted} to add it"}.get(image.made_by)
    return SlimmerError(f"{path}: not in the image", hint, code="not-in-image",
                        details=[f"the build warned: {w}" for w in about])


def format_why(steps: list[Step]) -> list[str]:
    lines = []
    for depth, step in enumerate(steps):
        pad = "  " * depth
        name = step.path if step.path == step.real else f"{step.path} => {step.real}"
        lines.append(printable(f"{pad}{name}: {step.reason}"))
    return lines


# ---- inspect -------------------------------------------------------------------------------


def inventory(tree: FileTree, layers: tuple[LayerInfo, ...] = ()) -> dict[str, Any]:
    """Every entry, largest first, with reasons and totals (the `inspect --json` document);
    an image of several layers lists them too."""
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
    doc: dict[str, Any] = {"files": files, "totals": totals}
    if len(layers) > 1:
        doc["layers"] = [{"digest": la.digest, "size": la.size, "comment": la.comment}
                         for la in layers]
    return doc


def format_inventory(doc: dict[str, Any], limit: int | None = None) -> list[str]:
    rows = [f for f in doc["files"] if f["type"] == "file"]
    shown = rows if limit is None else rows[:limit]
    width = max((len(f"{f['size']:,}") for f in shown), default=1)
    lines = [printable(f"{f['size']:>{width},}  {f['path']}  ({f['reason'] or 'reason unknown'})")
             for f in shown]
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more files")
    t = doc["totals"]
    lines.append(f"total: {t['bytes']:,} bytes in {t['files']} files, {t['symlinks']} symlinks, "
                 f"{t['directories']} directories")
    for number, layer in enumerate(doc.get("layers", ()), 1):
        size = f", {layer['size']:,} bytes" if layer["size"] is not None else ""
        what = f" ({layer['comment']})" if layer["comment"] else ""
        lines.append(printable(f"layer {number}{what}: {layer['digest']}{size}"))
    return lines
