"""Things attached to a pushed image the way cosign attaches them: a small OCI image of one
layer, tagged after the image's digest (`sha256-<hex>.sig` for a signature, sign.py;
`sha256-<hex>.sbom` for an SBOM, `push --attach-sbom`), in the image's repository.

The image's config is what cosign's has (go-containerregistry's empty image with layers
appended): no platform, time zero, the layers' digests as its diff_ids. An SBOM already at its
tag is replaced; signatures are added to those at theirs (sign.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slimmer.errors import SlimmerError
from slimmer.fileio import read_small_file
from slimmer.image.model import OCI_CONFIG, OCI_MANIFEST, canonical_json
from slimmer.registry.auth import push_scope
from slimmer.registry.client import Client, Destination, RegistryError, Response

SPDX_JSON = "text/spdx+json"  # cosign's media type for an SPDX JSON SBOM
SBOM_LIMIT = 256 << 20  # an SPDX document listing 100,000 files with checksums is ~60 MB
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time, as cosign's configs have it


@dataclass(frozen=True, slots=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": len(self.data)}
        if annotations:
            out["annotations"] = annotations
        return out


Attachment = tuple[Blob, Blob, bytes]  # config, layer, manifest


def tag_for(digest: str, suffix: str) -> str:
    """sha256:HEX -> sha256-HEX.SUFFIX, cosign's tag for what is attached to that digest."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}.{suffix}"


def attachment(layer: Blob, annotations: dict[str, str] | None = None) -> Attachment:
    """The one-layer image holding `layer`: (config, layer, manifest bytes)."""
    config, manifest = image_of([layer.descriptor(annotations)])
    return config, layer, manifest


def image_of(layers: Sequence[dict[str, Any]]) -> tuple[Blob, bytes]:
    """The config and the manifest of an attached image of these layers (descriptors)."""
    config = Blob(OCI_CONFIG, canonical_json({
        "architecture": "", "os": "", "created": ZERO_TIME, "config": {},
        "history": [{"created": ZERO_TIME} for _ in layers],
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}}))
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
        "layers": list(layers)})
    return config, manifest


def push_attachment(client: Client, dest: Destination, tag: str, image: Attachment) -> str:
    """Push the blobs and the manifest of `image` under `tag` in `dest`'s repository; returns
    REGISTRY/REPO:TAG."""
    config, layer, manifest = image
    scopes = (push_scope(dest.repository),)
    for blob in (config, layer):
        put_blob(client, dest, blob.data, scopes)
    answer = client.request("PUT", f"/v2/{dest.repository}/manifests/{tag}", scopes=scopes,
                            headers={"Content-Type": OCI_MANIFEST}, body=manifest)
    expect(answer, 201, dest, f"PUT manifest {dest.repository}:{tag}")
    return f"{dest.registry}/{dest.repository}:{tag}"


def put_blob(client: Client, dest: Destination, data: bytes, scopes: tuple[str, ...]) -> None:
    """A blob held in memory (a payload, a config, an SBOM): nothing when the repository has
    it, else one POST and one PUT, both tried again together on a transient failure."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    api = f"/v2/{dest.repository}/blobs"
    if client.request("HEAD", f"{api}/{digest}", scopes=scopes).status == 200:
        return

    def upload() -> Response:
        started = client.exchange("POST", f"{api}/uploads/", scopes=scopes)
        location = expect(started, 202, dest, "POST blob upload").header("Location")
        if not location:
            raise RegistryError(f"{dest.registry}: POST blob upload: 202 without a Location")
        separator = "&" if "?" in location else "?"
        return client.exchange("PUT", f"{location}{separator}digest={digest}", scopes=scopes,
                               headers={"Content-Type": "application/octet-stream"}, body=data)

    expect(client.retrying(upload), 201, dest, f"PUT blob {digest}")


def expect(answer: Response, status: int, dest: Destination, what: str) -> Response:
    if answer.status != status:
        raise RegistryError(f"{dest.registry}: {what}: {answer.problem()}")
    return answer


# ---- SBOMs ---------------------------------------------------------------------------------


def read_sbom(path: str) -> Blob:
    """An SPDX JSON document (what --sbom writes) to attach; anything else is refused."""
    data = read_small_file(path, "SBOM", SBOM_LIMIT)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or not str(doc.get("spdxVersion", "")).startswith("SPDX-"):
        raise SlimmerError(f"{path}: not an SPDX JSON document (--attach-sbom takes what "
                           "--sbom writes)")
    return Blob(SPDX_JSON, data)


def attach_sbom(client: Client, dest: Destination, digest: str, sbom: Blob) -> str:
    """Attach `sbom` to manifest `digest` as cosign's `attach sbom` does: REPO:sha256-HEX.sbom."""
    return push_attachment(client, dest, tag_for(digest, "sbom"), attachment(sbom))
