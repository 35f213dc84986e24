"""`slimmer verify`: an offline check of an image archive, any tool's.

Problems (the archive is wrong; exit 1): a blob whose content does not hash to its name, a
descriptor whose size or digest does not match its blob, a missing blob, a layer whose
uncompressed digest is not the config's diff_id, a manifest.json that disagrees with the OCI
manifest or points at nothing, a bad oci-layout. Notes (not wrong, but not reproducible): tar
headers that carry owner names, several mtimes, or fractional times.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any

from slimmer.image.index import platform_key
from slimmer.image.model import (
    INDEX_TYPES,
    BadImage,
    Descriptor,
    Digest,
    DockerEntry,
    ImageConfig,
    Index,
)
from slimmer.image.store import LAYER_ERRORS, MAX_NESTING, Store

CHUNK = 1 << 20


@dataclass(slots=True)
class Findings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0  # blobs whose digest was computed
    layers: int = 0  # layers read through to their diff_id

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(archive: str) -> Findings:
    """Check the archive or layout directory at `archive`. A malformed document (JSON of the
    wrong shape, a link where a file should be, an index that lists itself) raises BadImage;
    what does not match is collected in the findings."""
    found = Findings()
    with Store(archive) as store:
        _check_blob_digests(store, found)
        index = store.index() if store.exists("index.json") else None
        docker = store.docker_entries() if store.exists("manifest.json") else None
        if index is None and docker is None:
            found.problems.append("neither index.json nor manifest.json: not an image archive")
            return found
        images: list[tuple[str | None, list[str | None]]] = []
        if index is not None:
            _check_layout(store, found)
            for desc in index.manifests:
                _check_manifest(store, desc, found, docker, images, ())
            if docker is not None and any(d.media_type in INDEX_TYPES for d in index.manifests):
                _docker_entries_match(docker, images, found)
        elif docker is not None:
            for entry in docker:
                _check_docker_entry(store, entry, found)
                images.append((entry.config, list(entry.layers)))
        if not images:
            found.problems.append("holds no image: its index lists no image manifest"
                                  if index is not None else "holds no image: manifest.json "
                                  "lists no image")
    return found


def _check_blob_digests(store: Store, found: Findings) -> None:
    """Hash every blob; note each whose content does not match its name."""
    mtimes = store.mtimes()
    for name in sorted(store.names()):
        named = Digest.from_member(name, strict=False)
        if named is None:
            continue
        digest = hashlib.new(named.algorithm)
        with store.open(name) as blob:
            while chunk := blob.read(CHUNK):
                digest.update(chunk)
        found.checked += 1
        if digest.hexdigest() != named.hex:
            found.problems.append(f"{name}: content hashes to {named.algorithm}:"
                                  f"{digest.hexdigest()}")
    if len(mtimes) > 1:
        found.notes.append(f"archive entries carry {len(mtimes)} different mtimes")


def _check_descriptor(store: Store, desc: Descriptor, what: str,
                      found: Findings) -> str | None:
    name = desc.digest.member
    size = store.size(name)
    if size is None:
        found.problems.append(f"{what} {desc.digest}: blob missing")
        return None
    if size != desc.size:
        found.problems.append(f"{what} {desc.digest}: size {desc.size} in the descriptor, "
                              f"{size} in the blob")
    return name


def _check_layout(store: Store, found: Findings) -> None:
    if not store.exists("oci-layout"):
        found.problems.append("oci-layout: missing")
        return
    layout = store.read_json("oci-layout")
    version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    if version != "1.0.0":
        found.problems.append(f"oci-layout: imageLayoutVersion {version!r}"
                              " (loaders expect \"1.0.0\")")


def _check_manifest(store: Store, desc: Descriptor, found: Findings,
                    docker: tuple[DockerEntry, ...] | None,
                    images: list[tuple[str | None, list[str | None]]],
                    stack: tuple[str, ...]) -> None:
    """One descriptor of an index: an image manifest, or an index whose images (one per
    platform) are checked in turn. `images` collects each image's config and layer names."""
    name = _check_descriptor(store, desc, "manifest", found)
    if name is None:
        return
    if str(desc.digest) in stack:
        raise BadImage(f"{store.path}: index {desc.digest} lists itself")
    document = store.read_document(name, desc.media_type)
    if isinstance(document, Index):
        if len(stack) >= MAX_NESTING:
            raise BadImage(f"{store.path}: indexes nested more than {MAX_NESTING} deep "
                           f"(at {desc.digest})")
        for inner in document.manifests:
            _check_manifest(store, inner, found, None, images, (*stack, str(desc.digest)))
        return
    config_name = _check_descriptor(store, document.config, "config", found)
    config = _config(store, config_name) if config_name else None
    layer_names = [_check_descriptor(store, layer, "layer", found) for layer in document.layers]
    images.append((config_name, layer_names))
    if config is not None and desc.platform is not None:
        _check_platform(desc, config, found)
    if config is not None:
        diff_ids = config.diff_ids or ()
        if len(diff_ids) != len(document.layers):
            found.problems.append(f"config: {len(diff_ids)} diff_ids for "
                                  f"{len(document.layers)} layers")
        for i, (layer_name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=False)):
            if layer_name is not None:
                _check_layer(store, layer_name, i, str(diff_id), found)
    if docker is not None:
        _agree(store, docker, config_name, layer_names, found)


def _config(store: Store, name: str) -> ImageConfig:
    return store.config_member(name, checked=False)  # a wrong digest is a problem listed


def _check_platform(desc: Descriptor, config: ImageConfig, found: Findings) -> None:
    """An index's platform for a manifest must be what the image's config says."""
    assert desc.platform is not None
    said = desc.platform.as_dict()
    own = config.platform.as_dict()
    if platform_key(said) != platform_key(own):
        shown = ["/".join(x for x in key[:3] if x)
                 for key in (platform_key(said), platform_key(own))]
        found.problems.append(f"manifest {desc.digest}: the index says {shown[0]}, "
                              f"its config {shown[1]}")


def _docker_entries_match(docker: tuple[DockerEntry, ...],
                          images: list[tuple[str | None, list[str | None]]],
                          found: Findings) -> None:
    """Beside a multi-platform index, each manifest.json entry must be one of its images."""
    for entry in docker:
        if (entry.config, list(entry.layers)) not in images:
            found.problems.append(f"manifest.json: the entry for {entry.config} is "
                                  "none of the index's images")


def _check_layer(store: Store, name: str, index: int, diff_id: str, found: Findings) -> None:
    digest = hashlib.sha256()
    names: set[str] = set()
    owners = set()
    try:
        with store.plain(name) as stream:
            hashing = _Hashing(stream, digest)
            with tarfile.open(fileobj=hashing, mode="r|") as layer:
                for entry in layer:
                    path = entry.name.rstrip("/")
                    if path in names:
                        found.problems.append(f"layer {index}: {path} appears twice")
                    names.add(path)
                    if entry.uname or entry.gname:
                        owners.add((entry.uname, entry.gname))
                    if "mtime" in entry.pax_headers:
                        found.notes.append(f"layer {index}: {path} has a fractional mtime")
            while hashing.read(CHUNK):
                pass
    except LAYER_ERRORS as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        found.problems.append(f"layer {index}: cannot be read ({first})")
        return
    found.layers += 1
    if "sha256:" + digest.hexdigest() != diff_id:
        found.problems.append(f"layer {index}: uncompressed digest sha256:{digest.hexdigest()} "
                              f"is not the config's diff_id {diff_id}")
    if owners:
        found.notes.append(f"layer {index}: entries carry owner names "
                           f"({', '.join(sorted(f'{u}/{g}' for u, g in owners))})")


class _Hashing(io.RawIOBase):
    """Reads through, hashing what passes."""

    def __init__(self, inner: IO[bytes], digest: Any) -> None:
        self.inner = inner
        self.digest = digest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.digest.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _agree(store: Store, docker: tuple[DockerEntry, ...], config_name: str | None,
           layer_names: list[str | None], found: Findings) -> None:
    """manifest.json must name the same config and layers as the OCI manifest."""
    for entry in docker:
        for name in [entry.config, *entry.layers]:
            if not store.exists(name):
                found.problems.append(f"manifest.json: points at {name}, which is missing")
    match = [e for e in docker if e.config == config_name]
    if not match:
        found.problems.append(f"manifest.json: no entry for the config {config_name}")
        return
    if list(match[0].layers) != layer_names:
        found.problems.append("manifest.json: its Layers differ from the OCI manifest's")
    for tag in match[0].repo_tags:
        if ":" not in tag.rsplit("/", 1)[-1]:
            found.problems.append(f"manifest.json: RepoTags entry {tag!r} is not name:tag")


def _check_docker_entry(store: Store, entry: DockerEntry, found: Findings) -> None:
    """A docker-save archive without index.json: its own config and layer files."""
    if not store.exists(entry.config):
        found.problems.append(f"{entry.config}: missing")
        return
    config = _config(store, entry.config)
    for name in entry.layers:
        if not store.exists(name):
            found.problems.append(f"manifest.json: layer {name} missing")
    diff_ids = config.diff_ids or ()
    if len(diff_ids) != len(entry.layers):
        found.problems.append(f"config: {len(diff_ids)} diff_ids for {len(entry.layers)} "
                              "layers")
    for i, (name, diff_id) in enumerate(zip(entry.layers, diff_ids, strict=False)):
        if store.exists(name):
            _check_layer(store, name, i, str(diff_id), found)
