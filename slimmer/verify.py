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
import json
import re
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard

from slimmer.errors import FileProblem
from slimmer.image_in import decompressed
from slimmer.multiarch import platform_key
from slimmer.oci import INDEX_TYPES, platform_of

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
    found = Findings()
    try:
        outer = tarfile.open(archive)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise FileProblem(f"{archive}: no such file") from None
    except (tarfile.TarError, IsADirectoryError) as exc:
        raise FileProblem(f"{archive}: not a tar archive ({exc})") from None
    with outer:
        members = {m.name.removeprefix("./"): m for m in outer.getmembers() if m.isfile()}
        _check_blob_digests(outer, members, found)
        index = _json(outer, members, "index.json", found, required=False)
        docker = _json(outer, members, "manifest.json", found, required=False)
        if index is None and docker is None:
            found.problems.append("neither index.json nor manifest.json: not an image archive")
            return found
        if index is not None:
            _check_layout(outer, members, found)
            images: list[tuple[str | None, list[str | None]]] = []
            for desc in index.get("manifests", []):
                _check_manifest(outer, members, desc, found, docker, images)
            if docker is not None and any(_is_index(d) for d in index.get("manifests", [])):
                _docker_entries_match(docker, images, found)
        elif docker is not None:
            for entry in docker:
                _check_docker_entry(outer, members, entry, found)
    return found


def _check_blob_digests(outer: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                        found: Findings) -> None:
    """Hash every blob; note each whose content does not match its name."""
    mtimes = set()
    for name, member in sorted(members.items()):
        mtimes.add(member.mtime)
        match = re.fullmatch(r"blobs/(sha256|sha512)/([0-9a-f]+)", name)
        if match is None:
            continue
        algorithm, expected = match.groups()
        digest = hashlib.new(algorithm)
        blob = outer.extractfile(member)
        assert blob is not None
        while chunk := blob.read(CHUNK):
            digest.update(chunk)
        found.checked += 1
        if digest.hexdigest() != expected:
            found.problems.append(f"{name}: content hashes to {algorithm}:{digest.hexdigest()}")
    if len(mtimes) > 1:
        found.notes.append(f"archive entries carry {len(mtimes)} different mtimes")


def _json(outer: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str,
          found: Findings, required: bool = True) -> Any:
    member = members.get(name)
    if member is None:
        if required:
            found.problems.append(f"{name}: missing")
        return None
    fh = outer.extractfile(member)
    assert fh is not None
    try:
        return json.load(fh)
    except json.JSONDecodeError as exc:
        found.problems.append(f"{name}: not valid JSON ({exc.msg})")
        return None


def _blob_name(desc: dict[str, Any]) -> str:
    algorithm, _, value = str(desc.get("digest", "")).partition(":")
    return f"blobs/{algorithm}/{value}"


def _check_descriptor(members: dict[str, tarfile.TarInfo], desc: dict[str, Any], what: str,
                      found: Findings) -> str | None:
    name = _blob_name(desc)
    member = members.get(name)
    if member is None:
        found.problems.append(f"{what} {desc.get('digest')}: blob missing")
        return None
    if member.size != desc.get("size"):
        found.problems.append(f"{what} {desc.get('digest')}: size {desc.get('size')} in the "
                              f"descriptor, {member.size} in the blob")
    return name


def _check_layout(outer: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                  found: Findings) -> None:
    layout = _json(outer, members, "oci-layout", found)
    if layout is not None and layout.get("imageLayoutVersion") != "1.0.0":
        found.problems.append(f"oci-layout: imageLayoutVersion {layout.get('imageLayoutVersion')!r}"
                              " (loaders expect \"1.0.0\")")


def _is_index(desc: dict[str, Any]) -> bool:
    return desc.get("mediaType") in INDEX_TYPES


def _check_manifest(outer: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                    desc: dict[str, Any], found: Findings,
                    docker: Any, images: list[tuple[str | None, list[str | None]]]) -> None:
    """One descriptor of an index: an image manifest, or an index whose images (one per
    platform) are checked in turn. `images` collects each image's config and layer names."""
    name = _check_descriptor(members, desc, "manifest", found)
    if name is None:
        return
    manifest = _json(outer, members, name, found)
    if manifest is None:
        return
    if _is_index(manifest):
        for inner in manifest.get("manifests", []):
            _check_manifest(outer, members, inner, found, None, images)
        return
    config_name = _check_descriptor(members, manifest.get("config", {}), "config", found)
    config = _json(outer, members, config_name, found) if config_name else None
    layers = manifest.get("layers", [])
    layer_names = [_check_descriptor(members, layer, "layer", found) for layer in layers]
    images.append((config_name, layer_names))
    if config is not None and desc.get("platform"):
        _check_platform(desc, config, found)
    if config is not None:
        diff_ids = (config.get("rootfs") or {}).get("diff_ids", [])
        if len(diff_ids) != len(layers):
            found.problems.append(f"config: {len(diff_ids)} diff_ids for {len(layers)} layers")
        for i, (layer_name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=False)):
            if layer_name is not None:
                _check_layer(outer, members[layer_name], i, diff_id, found)
    if docker is not None:
        _agree(docker, members, config_name, layer_names, found)


def _check_platform(desc: dict[str, Any], config: dict[str, Any], found: Findings) -> None:
    """An index's platform for a manifest must be what the image's config says."""
    said = {k: str(v) for k, v in desc["platform"].items() if isinstance(v, str)}
    said.setdefault("architecture", "")
    said.setdefault("os", "")
    if platform_key(said) != platform_key(platform_of(config)):
        shown = ["/".join(x for x in key[:3] if x)
                 for key in (platform_key(said), platform_key(platform_of(config)))]
        found.problems.append(f"manifest {desc.get('digest')}: the index says {shown[0]}, "
                              f"its config {shown[1]}")


def _docker_entries_match(docker: Any, images: list[tuple[str | None, list[str | None]]],
                          found: Findings) -> None:
    """Beside a multi-platform index, each manifest.json entry must be one of its images."""
    for entry in docker if isinstance(docker, list) else []:
        if (entry.get("Config"), entry.get("Layers")) not in images:
            found.problems.append(f"manifest.json: the entry for {entry.get('Config')} is "
                                  "none of the index's images")


def _check_layer(outer: tarfile.TarFile, member: tarfile.TarInfo, index: int, diff_id: str,
                 found: Findings) -> None:
    fh = outer.extractfile(member)
    assert fh is not None
    digest = hashlib.sha256()
    names: set[str] = set()
    owners = set()
    try:
        stream = decompressed(fh)
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
    except (tarfile.TarError, OSError, zstandard.ZstdError, EOFError) as exc:
        found.problems.append(f"layer {index}: cannot be read ({exc})")
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


def _agree(docker: Any, members: dict[str, tarfile.TarInfo], config_name: str | None,
           layer_names: list[str | None], found: Findings) -> None:
    """manifest.json must name the same config and layers as the OCI manifest."""
    entries = docker if isinstance(docker, list) else []
    for entry in entries:
        for name in [entry.get("Config"), *entry.get("Layers", [])]:
            if name not in members:
                found.problems.append(f"manifest.json: points at {name}, which is missing")
    match = [e for e in entries if e.get("Config") == config_name]
    if not match:
        found.problems.append(f"manifest.json: no entry for the config {config_name}")
        return
    if match[0].get("Layers") != layer_names:
        found.problems.append("manifest.json: its Layers differ from the OCI manifest's")
    for tag in match[0].get("RepoTags") or []:
        if ":" not in tag.rsplit("/", 1)[-1]:
            found.problems.append(f"manifest.json: RepoTags entry {tag!r} is not name:tag")


def _check_docker_entry(outer: tarfile.TarFile, members: dict[str, tarfile.TarInfo],
                        entry: dict[str, Any], found: Findings) -> None:
    """A docker-save archive without index.json: its own config and layer files."""
    config = _json(outer, members, str(entry.get("Config")), found)
    layers = entry.get("Layers", [])
    for name in layers:
        if name not in members:
            found.problems.append(f"manifest.json: layer {name} missing")
    if config is None:
        return
    diff_ids = (config.get("rootfs") or {}).get("diff_ids", [])
    if len(diff_ids) != len(layers):
        found.problems.append(f"config: {len(diff_ids)} diff_ids for {len(layers)} layers")
    for i, (name, diff_id) in enumerate(zip(layers, diff_ids, strict=False)):
        if name in members:
            _check_layer(outer, members[name], i, diff_id, found)
