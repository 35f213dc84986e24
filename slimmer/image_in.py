"""Reading a container image (docker-archive tar, OCI archive tar, or OCI layout directory) into
a merged view of its root, without extracting anything onto the host.

The layers are read in order into one FileTree by image/merge.py (whiteouts, opaque
directories, hard links, extended attributes); file contents are spilled into numbered files in
a private temporary directory (never under a name from the archive, bounded by its free space),
so the view is a Root like any other: the resolver, the recipes and the writer read it as they
read a directory.

Hostile archives are refused with the member named: names with `..` or absolute names, a
hardlink to anything that is not a file of the image, a file written through a symlink. Device
files and FIFOs are left out. Nothing is ever read or written outside the image's own root and
the temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from slimmer.errors import FileProblem, SlimmerError
from slimmer.image.merge import HostileArchive as HostileArchive  # re-exported for callers
from slimmer.image.merge import Merger
from slimmer.image.merge import decompressed as decompressed  # re-exported (verify.py)
from slimmer.oci import INDEX_TYPES
from slimmer.rootfs import FileTree, TreeRoot


@dataclass(frozen=True, slots=True)
class ImageSource:
    """One image of an input: its config and its layers, base first."""

    config: dict[str, Any]
    layers: tuple[str, ...]  # member names (tar) or paths (layout directory)
    reference: str  # the name it carried, if any


@dataclass(slots=True)
class Image:
    """A merged image root and what it came with. Use within `open_image`."""

    source: ImageSource
    tree: FileTree
    root: TreeRoot
    notes: list[str] = field(default_factory=list)
    mtimes: dict[str, int] = field(default_factory=dict)  # path -> mtime, as the layers say

    def content_size(self) -> int:
        return self.tree.content_size()

    def file_count(self) -> int:
        return self.tree.file_count()


@contextmanager
def open_image(path: str, image: str | None = None, *,
               spill_limit: int | None = None) -> Iterator[Image]:
    """Read the image at `path` (choosing `image` among several) into a merged view; its
    spilled contents (at most `spill_limit` bytes of them at once, and never more than the
    temporary directory's disk has free) live as long as the `with` block, and go however it
    ends (an exception, or SIGTERM turned into one by the CLI)."""
    spill = tempfile.mkdtemp(prefix="slimmer-image-")
    try:
        with ArchiveFiles(path) as source_input:
            source = source_input.choose(image)
            merged = Merger(spill, spill_limit)
            for layer in source.layers:
                with source_input.open(layer) as raw:
                    merged.read_layer(decompressed(raw), layer)
            yield Image(source, merged.tree, TreeRoot(merged.tree), merged.notes,
                        merged.mtimes)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


# ---- the input formats ---------------------------------------------------------------------


class ArchiveFiles:
    """A tar archive or a layout directory, read by member name (use as a context manager)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None

    def __enter__(self) -> ArchiveFiles:
        if os.path.isdir(self.path):
            return self
        if not os.path.exists(self.path):
            raise FileProblem(f"{self.path}: no such file or directory")
        try:
            self.tar = tarfile.open(self.path)
        except tarfile.TarError:
            # tarfile's message lists every compression it tried, one per line
            raise FileProblem(f"{self.path}: not an image archive (neither a tar file nor a "
                              "layout directory)") from None
        return self

    def __exit__(self, *_: object) -> None:
        if self.tar is not None:
            self.tar.close()

    def names(self) -> set[str]:
        if self.tar is not None:
            return {n.removeprefix("./") for n in self.tar.getnames()}
        out = set()
        for top, _, files in os.walk(self.path):
            out |= {os.path.relpath(os.path.join(top, f), self.path) for f in files}
        return out

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self.tar is None:
            full = layout_file(self.path, name)
            if full is None:
                raise FileProblem(f"{self.path}: {name} is not a file of the layout")
            with open(full, "rb") as fh:
                yield fh
            return
        member = None
        for candidate in (name, f"./{name}"):
            try:
                member = self.tar.getmember(candidate)
                break
            except KeyError:
                continue
        found = self.tar.extractfile(member) if member is not None else None
        if found is None:
            raise FileProblem(f"{self.path}: {name} is missing from the archive")
        with found:
            yield found

    def read_json(self, name: str) -> Any:
        with self.open(name) as fh:
            try:
                return json.load(fh)
            except json.JSONDecodeError as exc:
                raise FileProblem(f"{self.path}: {name} is not valid JSON ({exc.msg})") from None

    def choose(self, wanted: str | None) -> ImageSource:
        names = self.names()
        if "manifest.json" in names:
            return self._docker(wanted)
        if "index.json" in names:
            return self._oci(wanted)
        raise FileProblem(f"{self.path}: neither manifest.json nor index.json: not an image "
                          "archive or layout")

    def _docker(self, wanted: str | None) -> ImageSource:
        entries = self.read_json("manifest.json")
        tags = [", ".join(e.get("RepoTags") or []) or "(untagged)" for e in entries]
        if wanted is not None:
            entries = [e for e in entries if matches(wanted, e.get("RepoTags") or [])]
        entry = _one(entries, wanted, tags, self.path)
        config = self.read_json(entry["Config"])
        refs = entry.get("RepoTags") or [""]
        return ImageSource(config, tuple(entry["Layers"]), refs[0])

    def _oci(self, wanted: str | None) -> ImageSource:
        index = self.read_json("index.json")
        manifests = flatten_manifests(self, index.get("manifests", []))
        tags = [ref_name(m) or "(untagged)" for m in manifests]
        if wanted is not None:
            manifests = [m for m in manifests if matches(wanted, [ref_name(m)])]
        desc = _one(manifests, wanted, tags, self.path)
        manifest = self.read_json(blob_name(desc["digest"]))
        config = self.read_json(blob_name(manifest["config"]["digest"]))
        layers = tuple(blob_name(layer["digest"]) for layer in manifest["layers"])
        return ImageSource(config, layers, ref_name(desc))


def layout_file(directory: str, name: str) -> str | None:
    """The host path of regular file `name` of a layout directory; None when it is not there,
    is not a regular file, or is reached through a symlink (which could lead outside)."""
    path = directory
    parts = name.split("/")
    for i, part in enumerate(parts):
        if part in ("", ".", ".."):
            return None
        path = os.path.join(path, part)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if not (stat.S_ISREG(mode) if i == len(parts) - 1 else stat.S_ISDIR(mode)):
            return None
    return path


def blob_name(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if not value or "/" in value or algorithm not in ("sha256", "sha512"):
        raise HostileArchive(f"descriptor digest {digest!r} is not a digest")
    return f"blobs/{algorithm}/{value}"


def flatten_manifests(source: ArchiveFiles,
                      descriptors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Manifests, with nested indexes opened; for a multi-platform index every platform."""
    out = []
    for desc in descriptors:
        if desc.get("mediaType") in INDEX_TYPES:
            inner = source.read_json(blob_name(desc["digest"]))
            for m in flatten_manifests(source, inner.get("manifests", [])):
                m = dict(m)
                m.setdefault("annotations", desc.get("annotations", {}))
                out.append(m)
        else:
            out.append(desc)
    return out


def ref_name(desc: dict[str, Any]) -> str:
    """The image name an index entry's annotations give it ("" when none)."""
    notes = desc.get("annotations") or {}
    return str(notes.get("io.containerd.image.name") or notes.get(
        "org.opencontainers.image.ref.name") or "")


def matches(wanted: str, names: list[str]) -> bool:
    """Whether NAME[:TAG] `wanted` names one of these references (docker.io/library/... too)."""
    full = wanted if ":" in wanted.rsplit("/", 1)[-1] else f"{wanted}:latest"
    return any(n in (wanted, full) or n.endswith(("/" + wanted, "/" + full)) for n in names)


def _one(entries: list[dict[str, Any]], wanted: str | None, tags: list[str],
         path: str) -> dict[str, Any]:
    if len(entries) == 1:
        return entries[0]
    if not entries:
        raise SlimmerError(f"{path}: no image {wanted} (it holds: {'; '.join(tags)})")
    raise SlimmerError(f"{path}: holds {len(entries)} images ({'; '.join(tags)}): choose one "
                       "with --image")
