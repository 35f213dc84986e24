"""`slimmer index`: single-platform image archives combined into one multi-platform archive.

Each input is an OCI image archive (slimmer's, `skopeo copy ... oci-archive:`, Docker 25+ `docker
save`) holding one image. Its platform comes from its config (architecture, os, variant,
os.version). The output is one OCI layout tar: every blob of every input, each once, copied with
its digest checked on the way; an image index blob listing the per-platform manifests with their
`platform`; index.json naming that index (io.containerd.image.name, ref.name); oci-layout; and a
manifest.json for Docker's classic image store, which cannot hold an index (docs/multiarch.md):
one entry per platform tagged NAME:TAG-ARCH[-VARIANT], the first input also NAME:TAG.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from slimmer.errors import FileProblem, SlimmerError
from slimmer.image.model import (
    DEFAULT_EPOCH,
    OCI_INDEX,
    Blob,
    Descriptor,
    Manifest,
    canonical_json,
)
from slimmer.image.reference import Reference
from slimmer.image.store import Store, layer_diff_ids
from slimmer.image.write import (
    docker_entry,
    index_json,
    platform_of,
    ref_annotations,
    write_layout,
)
from slimmer.outputs import Sink, refuse_overlap

CHUNK = 1 << 20


class NotAnImage(SlimmerError):
    """An input that is not a single-platform OCI image archive."""


class DuplicatePlatform(SlimmerError):
    """Two inputs for the same platform."""


class BadBlob(SlimmerError):
    """A blob whose content does not match its digest or size."""


@dataclass(frozen=True, slots=True)
class PlatformImage:
    """One input: its platform, manifest descriptor, config and layers."""

    source: str
    platform: dict[str, str]
    descriptor: Descriptor  # of the manifest: its mediaType, digest and size
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: tuple[Descriptor, ...]

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest's descriptor as an index lists it."""
        return self.descriptor.as_dict()

    @property
    def name(self) -> str:
        """linux/arm64/v8"""
        p = self.platform
        return "/".join(x for x in (p["os"], p["architecture"], p.get("variant", "")) if x)


@dataclass(frozen=True, slots=True)
class IndexResult:
    path: str
    reference: Reference
    index_digest: str  # of the image index blob: what a registry would tag
    images: tuple[PlatformImage, ...]
    archive_size: int


def platform_key(platform: dict[str, str]) -> tuple[str, str, str, str]:
    """What makes two platforms the same for an engine: arm64 means arm64/v8 (containerd's
    normalisation)."""
    variant = platform.get("variant", "")
    if platform["architecture"] == "arm64" and not variant:
        variant = "v8"
    return (platform["os"], platform["architecture"], variant, platform.get("os.version", ""))


def tag_suffix(platform: dict[str, str]) -> str:
    """arm64 (for arm64/v8), arm-v7, amd64, riscv64: the per-platform tag's ending."""
    variant = platform.get("variant", "")
    if platform["architecture"] == "arm64" and variant == "v8":
        variant = ""
    return "-".join(x for x in (platform["architecture"], variant) if x)


# ---- reading the inputs ------------------------------------------------------------------------


def read_platform_image(files: Store) -> PlatformImage:
    """The one image of an OCI archive, with its manifest and config checked against their
    digests."""
    path = files.path
    if not files.exists("index.json"):
        if files.exists("manifest.json"):
            raise NotAnImage(f"{path}: a docker-archive without index.json (docker save before "
                             "Docker 25); index reads OCI archives",
                             hint=f"skopeo copy docker-archive:{path} oci-archive:OUT.tar")
        raise NotAnImage(f"{path}: no index.json: not an OCI image archive")
    found: dict[str, Descriptor] = {}
    for desc in files.images(files.index()):
        said = desc.platform
        if said is not None and (said.architecture, said.os) == ("unknown", "unknown"):
            continue  # buildx attestation manifests
        found.setdefault(str(desc.digest), desc)
    if len(found) != 1:
        what = "no image" if not found else f"{len(found)} images"
        raise NotAnImage(f"{path}: holds {what}; index takes archives of one image each")
    desc = _sha256(next(iter(found.values())), path, "manifest")
    manifest_bytes, document = files.document_bytes(desc)
    if not isinstance(document, Manifest):
        raise NotAnImage(f"{path}: {desc.digest} is a {document.media_type}, not an image "
                         "manifest")
    config_bytes, config = files.config(_sha256(document.config, path))
    platform = platform_of(dict(config.raw))
    if not platform["architecture"] or not platform["os"]:
        raise NotAnImage(f"{path}: its config names no architecture or os")
    layer_diff_ids(config, len(document.layers), f"{path}: {document.config.digest.member}")
    for layer in document.layers:
        _sha256(layer, path)
    for layer in document.layers:
        if files.size(layer.digest.member) is None:
            raise FileProblem(f"{path}: layer {layer.digest} is missing from the archive")
    manifest = Descriptor(document.media_type, desc.digest, len(manifest_bytes))
    return PlatformImage(path, platform, manifest, manifest_bytes, document.config,
                         config_bytes, document.layers)


def _sha256(desc: Descriptor, path: str, what: str = "blob") -> Descriptor:
    """The output's blobs are all sha256 (its manifest.json and directories name them so)."""
    if desc.digest.algorithm != "sha256":
        raise NotAnImage(f"{path}: {what} {desc.digest} is not a sha256 digest")
    return desc


def _check(path: str, desc: Descriptor, hex_digest: str, size: int) -> None:
    if hex_digest != desc.digest.hex:
        raise BadBlob(f"{path}: blob {desc.digest} hashes to sha256:{hex_digest}")
    if size != desc.size:
        raise BadBlob(f"{path}: blob {desc.digest} holds {size} bytes, its descriptor says "
                      f"{desc.size}")


def collect(files: Sequence[Store]) -> list[PlatformImage]:
    """The images of the inputs, one per platform (refusing two of the same platform)."""
    images: list[PlatformImage] = []
    for source in files:
        image = read_platform_image(source)
        for other in images:
            if platform_key(other.platform) == platform_key(image.platform):
                raise DuplicatePlatform(f"{other.source} and {image.source} are both "
                                        f"{image.name}: an index holds one image per platform")
        images.append(image)
    if not images:
        raise SlimmerError("index needs at least one image archive")
    return images


# ---- writing -----------------------------------------------------------------------------------


def index_document(images: Sequence[PlatformImage]) -> bytes:
    """The image index blob: one descriptor with `platform` per image, in input order."""
    return index_json([{**image.manifest, "platform": image.platform} for image in images])


def docker_manifest(images: Sequence[PlatformImage], ref: Reference) -> bytes:
    """manifest.json: Docker's classic store loads each image under NAME:TAG-PLATFORM; the
    first input also gets NAME:TAG (a tag there names one image, not an index)."""
    entries = []
    for i, image in enumerate(images):
        tags = [f"{ref.name}:{ref.tag}-{tag_suffix(image.platform)}"]
        if i == 0:
            tags.insert(0, ref.short)
        entries.append(docker_entry(image.config.digest, [b.digest for b in image.layers], tags))
    return canonical_json(entries)


def write_index(inputs: Sequence[str], output: str, ref: Reference,
                epoch: int = DEFAULT_EPOCH) -> IndexResult:
    """Combine the single-platform archives `inputs` into one multi-platform archive at
    `output` (written through a temporary file; tar times = `epoch`)."""
    refuse_overlap([("-o", output)], [("input", name) for name in inputs])
    with ExitStack() as stack:
        files = [stack.enter_context(Store(path)) for path in inputs]
        images = collect(files)
        _check_tags(images, ref)
        index = Blob.of(OCI_INDEX, index_document(images))
        top = index_json([{**index.descriptor.as_dict(), "annotations": ref_annotations(ref)}])
        try:
            size = write_layout(output, _layout_blobs(files, images, index), top,
                                docker_manifest(images, ref), epoch)
        except OSError as exc:
            raise FileProblem(f"{output}: cannot write the index ({exc.strerror})") from exc
    return IndexResult(output, ref, str(index.descriptor.digest), tuple(images), size)


def _check_tags(images: Sequence[PlatformImage], ref: Reference) -> None:
    for image in images:
        if len(f"{ref.tag}-{tag_suffix(image.platform)}") > 128:
            raise SlimmerError(f"--tag {ref.short}: too long for the per-platform tag of "
                               f"{image.name} (128 characters at most)")


def _layout_blobs(files: Sequence[Store], images: Sequence[PlatformImage],
                  index: Blob) -> list[Blob]:
    """The index, and each image's manifest, config and layers (copied when written)."""
    blobs = [index]
    for source, image in zip(files, images, strict=True):
        blobs += [Blob(image.descriptor, image.manifest_bytes),
                  Blob(image.config, image.config_bytes)]
        blobs += [_copying(source, layer) for layer in image.layers]
    return blobs


def _copying(files: Store, desc: Descriptor) -> Blob:
    """A blob copied from an input when the archive is written, its digest checked on the
    way (a mismatch aborts the write: the output is left as it was)."""

    def copy(out: Sink) -> None:
        digest = hashlib.new(desc.digest.algorithm)
        size = 0
        with files.open(desc.digest.member) as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        _check(files.path, desc, digest.hexdigest(), size)

    return Blob(desc, copy=copy)
