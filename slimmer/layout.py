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

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MAX_MANIFEST = 4 << 20  # registries refuse bigger manifests (distribution: 4 MiB)
_DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")


class BadLayout(SlimmerError):
    """An archive or layout that is not a pushable OCI image layout."""


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest or an index, its exact bytes, and what it points to."""

    digest: str
    media_type: str
    data: bytes
    blobs: tuple[Blob, ...]  # config and layers (image manifest)
    children: tuple[Manifest, ...]  # manifests (index)
    name: str  # the reference annotation index.json gave it, if any

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
        full = os.path.join(self.path, name)
        if os.path.islink(full) or not os.path.isfile(full):
            return None
        return os.path.getsize(full)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A seekable stream of regular file `name`."""
        if self.size(name) is None:
            raise BadLayout(f"{self.path}: {name} is missing (or not a regular file)")
        if self._tar is not None:
            stream = self._tar.extractfile(self._members[name])
            assert stream is not None
            with stream:
                yield stream
            return
        with open(os.path.join(self.path, name), "rb") as fh:
            yield fh

    def read(self, name: str, limit: int = MAX_MANIFEST) -> bytes:
        size = self.size(name)
        if size is not None and size > limit:
            raise BadLayout(f"{self.path}: {name} is {size} bytes, more than a manifest may be")
        with self.open(name) as fh:
            return fh.read()

    def blob_name(self, digest: str) -> str:
        if not _DIGEST.fullmatch(digest):
            raise BadLayout(f"{self.path}: {digest!r} is not a sha256 or sha512 digest")
        algorithm, _, value = digest.partition(":")
        return f"blobs/{algorithm}/{value}"

    # -- the manifest tree --

    def index(self) -> dict[str, Any]:
        if self.size("index.json") is None:
            what = ("a docker-archive (manifest.json only): push takes OCI layouts such as "
                    "slimmer writes" if self.size("manifest.json") is not None else
                    "not an OCI image layout")
            raise BadLayout(f"{self.path}: no index.json: {what}")
        return self._json("index.json", self.read("index.json"))

    def manifest(self, descriptor: dict[str, Any], name: str = "") -> Manifest:
        """The manifest or index `descriptor` points to, with everything below it."""
        digest = str(descriptor.get("digest", ""))
        blob = self.blob_name(digest)
        data = self.read(blob)
        if "size" in descriptor and descriptor["size"] != len(data):
            raise BadLayout(f"{self.path}: manifest {digest}: {len(data)} bytes, the "
                            f"descriptor says {descriptor['size']}")
        doc = self._json(blob, data)
        media_type = str(doc.get("mediaType") or descriptor.get("mediaType") or "")
        if media_type in INDEX_TYPES or (not media_type and "manifests" in doc):
            children = tuple(self.manifest(d) for d in doc.get("manifests") or [])
            return Manifest(digest, media_type or OCI_INDEX, data, (), children, name)
        if media_type not in MANIFEST_TYPES and not (not media_type and "config" in doc):
            raise BadLayout(f"{self.path}: {digest} has media type {media_type!r}: neither an "
                            "image manifest nor an index")
        blobs = tuple(self._blob(d) for d in [doc.get("config") or {}, *doc.get("layers", [])])
        return Manifest(digest, media_type or OCI_MANIFEST, data, blobs, (), name)

    def _blob(self, descriptor: dict[str, Any]) -> Blob:
        digest = str(descriptor.get("digest", ""))
        size = self.size(self.blob_name(digest))
        if size is None:
            raise BadLayout(f"{self.path}: blob {digest} is missing from the layout")
        if descriptor.get("size") != size:
            raise BadLayout(f"{self.path}: blob {digest} is {size} bytes, its descriptor says "
                            f"{descriptor.get('size')}")
        return Blob(digest, size, str(descriptor.get("mediaType", "")))

    def _json(self, name: str, data: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadLayout(f"{self.path}: {name} is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise BadLayout(f"{self.path}: {name} is not a JSON object")
        return doc


def _ref_name(descriptor: dict[str, Any]) -> str:
    notes = descriptor.get("annotations") or {}
    return str(notes.get("io.containerd.image.name")
               or notes.get("org.opencontainers.image.ref.name") or "")


def _matches(wanted: str, name: str) -> bool:
    full = wanted if ":" in wanted.rsplit("/", 1)[-1] else f"{wanted}:latest"
    return bool(name) and (name in (wanted, full) or name.endswith(("/" + wanted, "/" + full)))


def select(layout: Layout, image: str | None) -> Manifest:
    """What to push from the layout's index.json:

    - one entry: that manifest or index (an index with everything below it);
    - `image` given: the one entry whose name annotation matches it;
    - several entries, all image manifests for distinct platforms: index.json itself, pushed
      byte for byte as the image index (its entries pushed first);
    - otherwise: an error asking for --image.
    """
    index = layout.index()
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    if not entries:
        raise BadLayout(f"{layout.path}: index.json lists no manifests")
    names = [_ref_name(e) or "(unnamed)" for e in entries]
    if image is not None:
        chosen = [e for e in entries if _matches(image, _ref_name(e))]
        if len(chosen) != 1:
            raise BadLayout(f"{layout.path}: {len(chosen)} images match {image} (it holds: "
                            f"{'; '.join(names)})")
        return layout.manifest(chosen[0], _ref_name(chosen[0]))
    if len(entries) == 1:
        return layout.manifest(entries[0], _ref_name(entries[0]))
    children = tuple(layout.manifest(e, _ref_name(e)) for e in entries)
    platforms = [json.dumps(e.get("platform"), sort_keys=True) for e in entries]
    if (all(c.media_type in MANIFEST_TYPES for c in children) and None not in
            [e.get("platform") for e in entries] and len(set(platforms)) == len(platforms)):
        data = layout.read("index.json")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return Manifest(digest, str(index.get("mediaType") or OCI_INDEX), data, (), children,
                        "")
    raise BadLayout(f"{layout.path}: holds {len(entries)} images ({'; '.join(names)}): "
                    "choose one with --image")
