"""An OCI image layout to push: a tar archive (what slimmer writes) or a layout directory,
read by digest, and the tree of manifests its index.json starts from.

Read through slimmer/image/store.py. Blobs are found only as `blobs/<algorithm>/<hex>` with a
well-formed digest, as regular files (a symlink or anything else in a directory layout is
refused): nothing outside the layout is ever read. Manifests and indexes are kept as their
exact bytes, the bytes that are pushed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from slimmer.image.model import (
    MANIFEST_TYPES,
    MAX_MANIFEST,
    At,
    BadImage,
    Descriptor,
    Digest,
    load_json,
    parse_document,
    parse_index,
)
from slimmer.image.model import Index as ModelIndex
from slimmer.image.reference import matches
from slimmer.image.store import MAX_NESTING, Store


class BadLayout(BadImage):
    """An archive or layout that is not a pushable OCI image layout."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest or an index, its exact bytes, and what it points to."""

    digest: Digest
    media_type: str
    data: bytes
    blobs: tuple[Descriptor, ...]  # config and layers (image manifest), as found in the layout
    children: tuple[Manifest, ...]  # manifests (index)

    def all_blobs(self) -> Iterator[Descriptor]:
        yield from self.blobs
        for child in self.children:
            yield from child.all_blobs()


class Layout:
    """Use as a context manager: `with Layout(path) as layout: ...`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._store = Store(path)

    def __enter__(self) -> Layout:
        with _as_layout():
            self._store.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self._store.__exit__()

    def size(self, name: str) -> int | None:
        """The size of regular file `name` of the layout, None when it is not there."""
        with _as_layout():
            return self._store.size(name)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A seekable stream of regular file `name`."""
        if self.size(name) is None:
            raise BadLayout(f"{self.path}: {name} is missing (or not a regular file)")
        with self._store.open(name) as stream:
            yield stream

    def read(self, name: str) -> bytes:
        """A manifest, an index or index.json: small files, read whole."""
        with _as_layout():
            return self._store.read_bytes(name, MAX_MANIFEST)

    # -- the manifest tree --

    def index(self) -> tuple[bytes, ModelIndex]:
        """index.json: its bytes and what they say."""
        if self.size("index.json") is None:
            what = ("a docker-archive (manifest.json only): push takes OCI layouts such as "
                    "slimmer writes" if self.size("manifest.json") is not None else
                    "not an OCI image layout")
            raise BadLayout(f"{self.path}: no index.json: {what}")
        data = self.read("index.json")
        with _as_layout():
            return data, parse_index(load_json(data, f"{self.path}: index.json"),
                                     At(self.path, "index.json"))

    def manifest(self, descriptor: Descriptor, stack: tuple[str, ...] = ()) -> Manifest:
        """The manifest or index `descriptor` points to, with everything below it; its bytes
        checked against the descriptor's size and digest. Indexes nest at most MAX_NESTING
        deep and never list themselves."""
        digest = descriptor.digest
        if str(digest) in stack:
            raise BadLayout(f"{self.path}: index {digest} lists itself")
        blob = descriptor.digest.member
        data = self.read(blob)
        if descriptor.size != len(data):
            raise BadLayout(f"{self.path}: manifest {digest}: {len(data)} bytes, the "
                            f"descriptor says {descriptor.size}")
        if hashlib.new(descriptor.digest.algorithm, data).hexdigest() != descriptor.digest.hex:
            raise BadLayout(f"{self.path}: manifest {digest}: its content has another digest")
        with _as_layout():
            doc = load_json(data, f"{self.path}: {blob}")
            parsed = parse_document(doc, At(self.path, blob), descriptor.media_type)
        media_type = parsed.media_type
        if isinstance(parsed, ModelIndex):
            if len(stack) >= MAX_NESTING:
                raise BadLayout(f"{self.path}: indexes nested more than {MAX_NESTING} deep "
                                f"(at {digest})")
            children = tuple(self.manifest(d, (*stack, str(digest))) for d in parsed.manifests)
            return Manifest(digest, media_type, data, (), children)
        self._config(parsed.config)
        blobs = tuple(self._blob(d) for d in [parsed.config, *parsed.layers])
        return Manifest(digest, media_type, data, blobs, ())

    def _config(self, descriptor: Descriptor) -> None:
        """A config is checked like any image's: its digest, size and fields."""
        with _as_layout():
            self._store.config(descriptor)

    def _blob(self, descriptor: Descriptor) -> Descriptor:
        digest = descriptor.digest
        size = self.size(digest.member)
        if size is None:
            raise BadLayout(f"{self.path}: blob {digest} is missing from the layout")
        if descriptor.size != size:
            raise BadLayout(f"{self.path}: blob {digest} is {size} bytes, its descriptor says "
                            f"{descriptor.size}")
        return descriptor


@contextmanager
def _as_layout() -> Iterator[None]:
    """The store's refusals, as push's."""
    try:
        yield
    except BadImage as exc:
        raise BadLayout(exc.message) from None


def select(layout: Layout, image: str | None) -> Manifest:
    """What to push from the layout's index.json:

    - one entry: that manifest or index (an index with everything below it);
    - `image` given: the one entry whose name annotation matches it;
    - several entries, all image manifests for distinct platforms: index.json itself, pushed
      byte for byte as the image index (its entries pushed first);
    - otherwise: an error asking for --image.
    """
    data, index = layout.index()
    entries = index.manifests
    if not entries:
        raise BadLayout(f"{layout.path}: index.json lists no manifests")
    names = [e.ref_name or "(unnamed)" for e in entries]
    if image is not None:
        chosen = [e for e in entries if matches(image, [e.ref_name])]
        if len(chosen) != 1:
            raise BadLayout(f"{layout.path}: {len(chosen)} images match {image} (it holds: "
                            f"{'; '.join(names)})")
        return layout.manifest(chosen[0])
    if len(entries) == 1:
        return layout.manifest(entries[0])
    children = tuple(layout.manifest(e) for e in entries)
    platforms = [e.platform for e in entries]
    if (all(c.media_type in MANIFEST_TYPES for c in children) and None not in platforms
            and len(set(platforms)) == len(platforms)):
        return Manifest(Digest.of(data), index.media_type, data, (), children)
    raise BadLayout(f"{layout.path}: holds {len(entries)} images ({'; '.join(names)}): "
                    "choose one with --image")
