"""An OCI image layout to push: a tar archive (what slimmer writes) or a layout directory,
read by digest, and the tree of manifests its index.json starts from.

Blobs are found only as `blobs/<algorithm>/<hex>` with a well-formed digest, as regular files
(a symlink or anything else in a directory layout is refused): nothing outside the layout is
ever read. Manifests and indexes are kept as their exact bytes, the bytes that are pushed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from slimmer.errors import FileProblem, SlimmerError
from slimmer.image_in import layout_file, matches, ref_name
from slimmer.oci import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST

MAX_MANIFEST = 4 << 20  # registries refuse bigger manifests (distribution: 4 MiB)
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")


class BadLayout(SlimmerError):
    """An archive or layout that is not a pushable OCI image layout."""


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest or an index, its exact bytes, and what it points to."""

    digest: str
    media_type: str
    data: bytes
    blobs: tuple[Blob, ...]  # config and layers (image manifest)
    children: tuple[Manifest, ...]  # manifests (index)

    def all_blobs(self) -> Iterator[Blob]:
        yield from self.blobs
        for child in self.children:
            yield from child.all_blobs()


class Layout:
    """Use as a context manager: `with Layout(path) as layout: ...`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}

    def __enter__(self) -> Layout:
        if os.path.isdir(self.path):
            return self
        try:
            self._tar = tarfile.open(self.path)
        except FileNotFoundError:
            raise FileProblem(f"{self.path}: no such file or directory") from None
        except tarfile.TarError:
            raise BadLayout(f"{self.path}: not an image archive (neither a tar file nor a "
                            "layout directory)") from None
        except OSError as exc:
            raise BadLayout(f"{self.path}: cannot read ({exc.strerror})") from None
        for member in self._tar.getmembers():
            self._members.setdefault(member.name.removeprefix("./"), member)
        return self

    def __exit__(self, *_: object) -> None:
        if self._tar is not None:
            self._tar.close()

    def size(self, name: str) -> int | None:
        """The size of regular file `name` of the layout, None when it is not there."""
        if self._tar is not None:
            member = self._members.get(name)
            return member.size if member is not None and member.isfile() else None
        full = layout_file(self.path, name)
        return os.path.getsize(full) if full is not None else None

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A seekable stream of regular file `name`."""
        if self._tar is not None:
            member = self._members.get(name)
            stream = self._tar.extractfile(member) if member and member.isfile() else None
        else:
            full = layout_file(self.path, name)
            stream = open(full, "rb") if full is not None else None  # noqa: SIM115 - with below
        if stream is None:
            raise BadLayout(f"{self.path}: {name} is missing (or not a regular file)")
        with stream:
            yield stream

    def read(self, name: str) -> bytes:
        """A manifest, an index or index.json: small files, read whole."""
        size = self.size(name)
        if size is not None and size > MAX_MANIFEST:
            raise BadLayout(f"{self.path}: {name} is {size} bytes, more than a manifest may be")
        with self.open(name) as fh:
            return fh.read()

    def blob_name(self, digest: str) -> str:
        if not _DIGEST.fullmatch(digest):
            raise BadLayout(f"{self.path}: {digest!r} is not a sha256 or sha512 digest")
        algorithm, _, value = digest.partition(":")
        return f"blobs/{algorithm}/{value}"

    # -- the manifest tree --

    def index(self) -> tuple[bytes, dict[str, Any]]:
        """index.json: its bytes and what they say."""
        if self.size("index.json") is None:
            what = ("a docker-archive (manifest.json only): push takes OCI layouts such as "
                    "slimmer writes" if self.size("manifest.json") is not None else
                    "not an OCI image layout")
            raise BadLayout(f"{self.path}: no index.json: {what}")
        data = self.read("index.json")
        return data, self._json("index.json", data)

    def manifest(self, descriptor: dict[str, Any]) -> Manifest:
        """The manifest or index `descriptor` points to, with everything below it; its bytes
        checked against the descriptor's size and digest."""
        digest = str(descriptor.get("digest", ""))
        blob = self.blob_name(digest)
        data = self.read(blob)
        if "size" in descriptor and descriptor["size"] != len(data):
            raise BadLayout(f"{self.path}: manifest {digest}: {len(data)} bytes, the "
                            f"descriptor says {descriptor['size']}")
        algorithm, _, value = digest.partition(":")
        if hashlib.new(algorithm, data).hexdigest() != value:
            raise BadLayout(f"{self.path}: manifest {digest}: its content has another digest")
        doc = self._json(blob, data)
        media_type = str(doc.get("mediaType") or descriptor.get("mediaType") or "")
        if not media_type:  # old documents: what they hold tells
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "config" in doc \
                else ""
        if media_type in INDEX_TYPES:
            children = tuple(self.manifest(d) for d in doc.get("manifests") or [])
            return Manifest(digest, media_type, data, (), children)
        if media_type not in MANIFEST_TYPES:
            raise BadLayout(f"{self.path}: {digest} has media type {media_type!r}: neither an "
                            "image manifest nor an index")
        blobs = tuple(self._blob(d) for d in [doc.get("config") or {}, *doc.get("layers", [])])
        return Manifest(digest, media_type, data, blobs, ())

    def _blob(self, descriptor: dict[str, Any]) -> Blob:
        digest = str(descriptor.get("digest", ""))
        size = self.size(self.blob_name(digest))
        if size is None:
            raise BadLayout(f"{self.path}: blob {digest} is missing from the layout")
        if descriptor.get("size") != size:
            raise BadLayout(f"{self.path}: blob {digest} is {size} bytes, its descriptor says "
                            f"{descriptor.get('size')}")
        return Blob(digest, size)

    def _json(self, name: str, data: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadLayout(f"{self.path}: {name} is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise BadLayout(f"{self.path}: {name} is not a JSON object")
        return doc


def select(layout: Layout, image: str | None) -> Manifest:
    """What to push from the layout's index.json:

    - one entry: that manifest or index (an index with everything below it);
    - `image` given: the one entry whose name annotation matches it;
    - several entries, all image manifests for distinct platforms: index.json itself, pushed
      byte for byte as the image index (its entries pushed first);
    - otherwise: an error asking for --image.
    """
    data, index = layout.index()
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    if not entries:
        raise BadLayout(f"{layout.path}: index.json lists no manifests")
    names = [ref_name(e) or "(unnamed)" for e in entries]
    if image is not None:
        chosen = [e for e in entries if matches(image, [ref_name(e)])]
        if len(chosen) != 1:
            raise BadLayout(f"{layout.path}: {len(chosen)} images match {image} (it holds: "
                            f"{'; '.join(names)})")
        return layout.manifest(chosen[0])
    if len(entries) == 1:
        return layout.manifest(entries[0])
    children = tuple(layout.manifest(e) for e in entries)
    platforms = [json.dumps(e.get("platform"), sort_keys=True) for e in entries]
    if (all(c.media_type in MANIFEST_TYPES for c in children) and None not in
            [e.get("platform") for e in entries] and len(set(platforms)) == len(platforms)):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return Manifest(digest, str(index.get("mediaType") or OCI_INDEX), data, (), children)
    raise BadLayout(f"{layout.path}: holds {len(entries)} images ({'; '.join(names)}): "
                    "choose one with --image")
