"""The one writer of image archives: config, manifest and index as canonical JSON, and the one
archive that is both an OCI image layout and a `docker save` archive (docs/oci-output.md has
what each engine needs). Everything goes through `Archive`: `pack` and `slim` write their layers
straight into it and complete it with `finish_image`, `index` writes through `write_layout`;
blobs come as model.Blob records, their member names from model.Digest. Reading is
slimmer/image/store.py's."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slimmer.errors import SlimmerError
from slimmer.image.layer import Layer, region_copier, tar_header
from slimmer.image.model import (  # the one home of media types, digests, blob records, configs
    CONTENTS,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Descriptor,
    Digest,
    Platform,
    RunConfig,
    canonical_json,
    rfc3339,
)
from slimmer.image.reference import Reference
from slimmer.outputs import Output, writing
from slimmer.tree import Dir, File


def config_json(platform: Platform, cfg: RunConfig, diff_ids: list[str], created: int,
                created_by: str, comments: Sequence[str] = ()) -> bytes:
    """The image config document: the platform, `cfg` (model.RunConfig, the type the config is
    read back into: unset fields are left out, an empty Cmd is kept), one history entry, or
    one per layer with `comments` (what each layer holds)."""
    run: dict[str, Any] = {}
    if cfg.env:
        run["Env"] = list(cfg.env)
    if cfg.entrypoint:
        run["Entrypoint"] = list(cfg.entrypoint)
    if cfg.cmd is not None:
        run["Cmd"] = list(cfg.cmd)
    if cfg.working_dir:
        run["WorkingDir"] = cfg.working_dir
    if cfg.user:
        run["User"] = cfg.user
    if cfg.labels:
        run["Labels"] = dict(cfg.labels)
    if cfg.exposed_ports:
        run["ExposedPorts"] = {p: {} for p in cfg.exposed_ports}
    if cfg.stop_signal:
        run["StopSignal"] = cfg.stop_signal
    doc: dict[str, Any] = {
        **platform.as_dict(),
        "created": rfc3339(created),
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": rfc3339(created), "created_by": created_by}] if not comments
        else [{"created": rfc3339(created), "created_by": created_by, "comment": comment}
              for comment in comments],
    }
    return canonical_json(doc)


@dataclass(frozen=True, slots=True)
class WrittenLayer:
    digest: str
    diff_id: str
    size: int
    name: str  # what it holds (layering.py's group names), "" for a one-layer image


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What was written: the archive and the digests a user may want to pin."""

    path: str
    reference: Reference
    manifest_digest: str
    config_digest: str  # the image ID
    layers: tuple[WrittenLayer, ...]  # base first
    archive_size: int

    @property
    def layer_digest(self) -> str:
        """The top layer's (a one-layer image's only layer)."""
        return self.layers[-1].digest

    @property
    def diff_id(self) -> str:
        return self.layers[-1].diff_id

    @property
    def layer_size(self) -> int:
        return self.layers[-1].size


def platform_of(config: dict[str, Any]) -> dict[str, str]:
    """The platform descriptor an image config implies: architecture, os, and variant and
    os.version when it has them."""
    platform = {"architecture": str(config.get("architecture", "")),
                "os": str(config.get("os", ""))}
    for key in ("variant", "os.version"):
        if config.get(key):
            platform[key] = str(config[key])
    return platform


def index_json(manifests: list[dict[str, Any]]) -> bytes:
    """An OCI image index listing `manifests` (descriptors), as canonical JSON."""
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def ref_annotations(ref: Reference) -> dict[str, str]:
    """The names index.json gives an image: the full one containerd and Docker 25+ read, and
    the tag alone, as the OCI layout's ref.name (podman, skopeo, umoci)."""
    return {"io.containerd.image.name": ref.full, "org.opencontainers.image.ref.name": ref.tag}


def finish_image(archive: Archive, layers: Sequence[Layer], platform: Platform,
                 cfg: RunConfig, ref: Reference, created: int, created_by: str,
                 annotations: Mapping[str, str] | None = None, contents: bytes | None = None,
                 names: Sequence[str] = ()) -> ImageResult:
    """Complete the archive of `layers` (base first; those written into `archive` already are
    not copied again): config, manifest, index.json, manifest.json. `names`: what each layer
    holds, one history entry each (none: the one entry of a one-layer image). `contents` (the
    reasons, for `slimmer why` and `inspect`) goes in as slimmer.json: an extra file of the
    layout, which every loader passes over, so that it changes no digest of the image.
    archive_size: the archive's, complete (the caller commits it)."""
    config = Blob.of(OCI_CONFIG, config_json(platform, cfg, [str(la.diff_id) for la in layers],
                                             created, created_by, names))
    descriptors = [layer.blob.descriptor for layer in layers]
    manifest_doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor.as_dict(),
        "layers": [desc.as_dict() for desc in descriptors],
    }
    if annotations:
        manifest_doc["annotations"] = dict(annotations)
    manifest = Blob.of(OCI_MANIFEST, canonical_json(manifest_doc))
    index = index_json([{**manifest.descriptor.as_dict(), "platform": platform.as_dict(),
                         "annotations": ref_annotations(ref)}])
    docker_manifest = canonical_json([docker_entry(config.descriptor.digest,
                                                   [d.digest for d in descriptors],
                                                   [ref.short])])
    for blob in (*(layer.blob for layer in layers), config, manifest):
        archive.add(blob)
    archive.finish(index, docker_manifest, contents)
    written = tuple(WrittenLayer(str(d.digest), str(la.diff_id), d.size, name)
                    for d, la, name in zip(descriptors, layers,
                                           names or [""] * len(layers), strict=True))
    return ImageResult(archive.path, ref, str(manifest.descriptor.digest),
                       str(config.descriptor.digest), written, archive.size)


def docker_entry(config: Digest, layers: Sequence[Digest], tags: list[str]) -> dict[str, Any]:
    """One entry of a `docker save` manifest.json, naming the blobs of the OCI layout."""
    return {"Config": config.member, "RepoTags": tags, "Layers": [d.member for d in layers]}


def write_layout(output: str, blobs: Sequence[Blob], index: bytes, docker_manifest: bytes,
                 mtime: int, contents: bytes | None = None) -> int:
    """Write an OCI layout tar (blobs sorted by digest, each once; index.json, manifest.json,
    oci-layout, and slimmer.json when `contents` is given) to `output`, in place only when
    complete (outputs.writing). Returns the archive's size."""
    unique = {str(blob.descriptor.digest): blob for blob in blobs}
    algorithms = sorted({blob.descriptor.digest.algorithm for blob in blobs})
    with writing(output) as out:
        archive = Archive(out, mtime, algorithms)
        for digest in sorted(unique):
            archive.add(unique[digest])
        archive.finish(index, docker_manifest, contents)
    return out.size


class Archive:
    """The one writer of image archives (`pack`, `slim` and `index` write through it), into
    `out`: the blobs/ directories, the blobs in the order they come (each once), then the
    documents. A layer can be written straight into it (it is a layer.LayerTarget): its header
    goes in once its digest and size are known, where a placeholder held its place."""

    def __init__(self, out: Output, mtime: int, algorithms: Sequence[str] = ("sha256",)) -> None:
        self._out = out
        self._mtime = mtime
        self._written: dict[str, int] = {}  # member -> where its content is
        self._start: int | None = None  # where the layer being written begins (its header)
        out.write(tar_header("blobs/", Dir(), mtime))
        for algorithm in algorithms:
            out.write(tar_header(f"blobs/{algorithm}/", Dir(), mtime))

    @property
    def path(self) -> str:
        return self._out.target.given

    @property
    def size(self) -> int:
        return self._out.tell()

    def add(self, blob: Blob) -> None:
        """Write `blob` as the member its digest names, unless it is there already."""
        name, size = blob.descriptor.digest.member, blob.descriptor.size
        if name in self._written:
            return
        if blob.data is not None:
            self._written[name] = self._put(name, blob.data)
            return
        assert blob.copy is not None
        out = self._out
        out.write(self._blob_header(name, size))
        start = self._written[name] = out.tell()
        blob.copy(out)
        if out.tell() - start != size:
            raise SlimmerError(f"{name}: {out.tell() - start} bytes written, {size} "
                               "expected (did the file change?)")
        out.write(bytes(-size % 512))

    def begin(self) -> Output:
        """A layer's blob is written from here (a placeholder for its header first)."""
        self._start = self._out.tell()
        self._out.write(bytes(512))
        return self._out

    def end(self, descriptor: Descriptor, diff_id: Digest) -> Layer:
        """The layer written since `begin`: its header filled in, or, when the archive holds
        that blob already, the copy dropped."""
        start, self._start = self._start, None
        assert start is not None
        out, name, size = self._out, descriptor.digest.member, descriptor.size
        out.flush()
        if name in self._written:
            out.truncate(start)
        else:
            header = self._blob_header(name, size)
            if len(header) != 512 or out.tell() != start + 512 + size:
                raise SlimmerError(f"{name}: the layer written in place is not {size} bytes "
                                   "under a plain header")
            os.pwrite(out.fileno(), header, start)
            out.write(bytes(-size % 512))
            self._written[name] = start + 512
        blob = Blob(descriptor, copy=region_copier(out.fileno(), self._written[name], size))
        return Layer(blob, diff_id)

    def abandon(self) -> None:
        """Drop the layer being written (its placeholder and whatever followed)."""
        if self._start is not None:
            self._out.truncate(self._start)
            self._start = None

    def _blob_header(self, name: str, size: int) -> bytes:
        """The header of a member whose `size` bytes are copied in (not held in memory)."""
        return tar_header(name, File(0o644, size, source=name), self._mtime)

    def _put(self, name: str, data: bytes) -> int:
        """A member of `data`; returns where its content is."""
        self._out.write(tar_header(name, File(0o644, len(data), data=data), self._mtime))
        start = self._out.tell()
        self._out.write(data + bytes(-len(data) % 512))
        return start

    def finish(self, index: bytes, docker_manifest: bytes, contents: bytes | None) -> None:
        """The documents and the end of the archive."""
        self._put("index.json", index)
        self._put("manifest.json", docker_manifest)
        self._put("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        if contents is not None:
            self._put(CONTENTS, contents)
        self._out.write(bytes(1024))
