"""Config, manifest and index as canonical JSON, and the one archive that is both an OCI image
layout and a `docker save` archive (docs/oci-output.md has what each engine needs)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slimmer.errors import SlimmerError
from slimmer.image.layer import Blob, tar_header
from slimmer.image.model import (  # the one home of media types and of the config's types
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
    RunConfig,
)
from slimmer.outputs import Output, Sink, writing
from slimmer.tree import Dir, File


class BadReference(SlimmerError):
    """An image name or tag that engines would refuse."""


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True, slots=True)
class Reference:
    """An image reference split the way Docker normalises it."""

    name: str  # as the user wrote it, without the tag: "app", "me/app", "reg:5000/me/app"
    tag: str

    @property
    def full(self) -> str:
        """docker.io/library/app:tag, as containerd and Docker 25+ name images."""
        first = self.name.split("/", 1)[0]
        if "/" in self.name and ("." in first or ":" in first or first == "localhost"):
            return f"{self.name}:{self.tag}"
        if "/" not in self.name:
            return f"docker.io/library/{self.name}:{self.tag}"
        return f"docker.io/{self.name}:{self.tag}"

    @property
    def short(self) -> str:
        return f"{self.name}:{self.tag}"


def parse_reference(text: str) -> Reference:
    """NAME[:TAG] with Docker's rules: lower-case name components, tag of [\\w][\\w.-]{0,127}."""
    name, tag = text, "latest"
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = text.rsplit(":", 1)
    component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    host = r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"
    if "@" in text or not re.fullmatch(host + component + r"(?:/" + component + r")*", name):
        raise BadReference(f"{text}: not a valid image name (lower-case letters, digits, "
                           "'.', '_', '-', '/' separated)")
    if not re.fullmatch(r"[\w][\w.-]{0,127}", tag):
        raise BadReference(f"{text}: not a valid tag {tag!r}")
    return Reference(name, tag)


def config_json(platform: Platform, cfg: RunConfig, diff_ids: list[str], created: int,
                created_by: str) -> bytes:
    """The image config document: the platform, `cfg` (model.RunConfig, the type the config is
    read back into: unset fields are left out, an empty Cmd is kept), one history entry."""
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
        "history": [{"created": rfc3339(created), "created_by": created_by}],
    }
    return canonical_json(doc)


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What was written: the archive and the digests a user may want to pin."""

    path: str
    reference: Reference
    manifest_digest: str
    config_digest: str  # the image ID
    layer_digest: str
    diff_id: str
    layer_size: int
    archive_size: int


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    """The OCI descriptor of a blob held in memory."""
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data)}


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


@dataclass(frozen=True, slots=True)
class LayoutBlob:
    """One blob of an archive: bytes in memory, or `copy` writing exactly `size` bytes."""

    hex: str  # sha256 hex digest: the member blobs/sha256/<hex>
    size: int
    data: bytes | None = None
    copy: Callable[[Sink], None] | None = None

    @classmethod
    def of(cls, data: bytes) -> LayoutBlob:
        return cls(hashlib.sha256(data).hexdigest(), len(data), data=data)


CONTENTS = "slimmer.json"  # beside index.json: why each file is in the image (not in the image)


def write_image(output: str, layer: Blob, platform: Platform, cfg: RunConfig, ref: Reference,
                created: int, created_by: str, annotations: Mapping[str, str] | None = None,
                contents: bytes | None = None) -> ImageResult:
    """Write the combined OCI + docker archive to `output` (as outputs.writing writes).
    `contents` (the reasons, for `slimmer why` and `inspect`) goes in as slimmer.json: an extra
    file of the layout, which every loader passes over, so that it changes no digest of the
    image."""
    config = config_json(platform, cfg, [layer.diff_id], created, created_by)
    config_desc = descriptor(OCI_CONFIG, config)
    manifest_doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    }
    if annotations:
        manifest_doc["annotations"] = dict(annotations)
    manifest = canonical_json(manifest_doc)
    manifest_desc = descriptor(OCI_MANIFEST, manifest)
    index = index_json([{**manifest_desc, "platform": platform.as_dict(),
                         "annotations": ref_annotations(ref)}])
    docker_manifest = canonical_json([docker_entry(config_desc["digest"], [layer.digest],
                                                   [ref.short])])
    layer_blob = LayoutBlob(layer.digest[7:], layer.size, copy=layer.copy_to)
    size = write_layout(output, [LayoutBlob.of(config), LayoutBlob.of(manifest), layer_blob],
                        index, docker_manifest, created, contents)
    return ImageResult(output, ref, manifest_desc["digest"], config_desc["digest"], layer.digest,
                       layer.diff_id, layer.size, size)


def docker_entry(config_digest: str, layer_digests: list[str],
                 tags: list[str]) -> dict[str, Any]:
    """One entry of a `docker save` manifest.json, naming the blobs of the OCI layout."""
    return {"Config": f"blobs/sha256/{config_digest.removeprefix('sha256:')}",
            "RepoTags": tags,
            "Layers": [f"blobs/sha256/{d.removeprefix('sha256:')}" for d in layer_digests]}


def write_layout(output: str, blobs: list[LayoutBlob], index: bytes, docker_manifest: bytes,
                 mtime: int, contents: bytes | None = None) -> int:
    """Write an OCI layout tar (blobs sorted by digest, each once; index.json, manifest.json,
    oci-layout, and slimmer.json when `contents` is given) to `output`, in place only when
    complete (outputs.writing). Returns the archive's size."""
    unique = {blob.hex: blob for blob in blobs}
    with writing(output) as out:
        _archive(out, [unique[h] for h in sorted(unique)], index, docker_manifest, mtime,
                 contents)
    return out.size


def _archive(out: Output, blobs: list[LayoutBlob], index: bytes, docker_manifest: bytes,
             mtime: int, contents: bytes | None) -> None:
    def put(name: str, data: bytes) -> None:
        out.write(tar_header(name, File(0o644, len(data), data=data), mtime))
        out.write(data + b"\0" * (-len(data) % 512))

    out.write(tar_header("blobs/", Dir(), mtime))
    out.write(tar_header("blobs/sha256/", Dir(), mtime))
    for blob in blobs:
        name = f"blobs/sha256/{blob.hex}"
        if blob.data is not None:
            put(name, blob.data)
            continue
        assert blob.copy is not None
        out.write(tar_header(name, File(0o644, blob.size, source=name), mtime))
        start = out.tell()
        blob.copy(out)
        if out.tell() - start != blob.size:
            raise SlimmerError(f"{name}: {out.tell() - start} bytes written, {blob.size} "
                               "expected (did the file change?)")
        out.write(b"\0" * (-blob.size % 512))
    put("index.json", index)
    put("manifest.json", docker_manifest)
    put("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
    if contents is not None:
        put(CONTENTS, contents)
    out.write(b"\0" * 1024)
