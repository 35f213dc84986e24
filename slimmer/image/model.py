"""Typed values of an image, parsed once at the edge: digests, descriptors, platforms,
manifests, indexes, docker manifest.json entries, image configs and slimmer.json; the blob
record the writer takes; canonical JSON. References are in reference.py.

Every document is read into these frozen values by the `parse_*` functions, which check each
field they keep and fail with one line naming the file, the field and what was wrong:

    fat.tar: manifest.json[0].Layers: expected a list of strings, got an object

Nothing past this module sees a raw dict whose shape was not checked. Unknown fields are
ignored (the specs allow them); only the fields slimmer uses are typed.

Our own small parser rather than a schema library: the documents are few and flat, the error
line above is the whole requirement, and no dependency is needed. A validator from PyPI
(pydantic, msgspec, jsonschema) would add a dependency, its own error format to translate, and
import time (typer with pydantic and rich cost ~0.45 s per start, see cli.py). This module
imports only `json`, `re`, `hashlib`, `time` and `dataclasses` (measured: about 5 ms, mostly
building the dataclasses), and `slimmer deps` does not import it at all.

Bounds: a document is read with a size cap checked before reading (manifests and indexes 4 MiB,
the distribution spec's limit; configs 32 MiB, far above real ones), and JSON nested deeper
than MAX_DEPTH is refused before it is parsed (json.loads recurses: 100,000 levels would
raise RecursionError).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slimmer.errors import SlimmerError
from slimmer.notices import Notice

if TYPE_CHECKING:
    from slimmer.outputs import Sink

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

MAX_MANIFEST = 4 << 20  # manifests, indexes, index.json, manifest.json (distribution: 4 MiB)
MAX_CONFIG = 32 << 20  # image configs, slimmer.json: real ones are a few KiB
MAX_DEPTH = 64  # JSON nesting: real documents are under 10 deep
CONTENTS = "slimmer.json"  # beside index.json: why each file is in the image (not in the image)

_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}
_MEMBER = re.compile(r"blobs/(sha256|sha512)/([0-9a-f]+)")  # hex of any length: checked after
_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class BadImage(SlimmerError):
    """An image document or blob that is malformed, oversized, or does not match its digest."""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


@dataclass(frozen=True, slots=True)
class At:
    """Where a value sits: the file (archive, then member) and the field path inside it."""

    file: str
    path: str

    def __truediv__(self, key: str | int) -> At:
        return At(self.file, f"{self.path}[{key}]" if isinstance(key, int) else
                  f"{self.path}.{key}" if self.path else key)

    def fail(self, expected: str, value: object) -> BadImage:
        return BadImage(f"{self.file}: {self.path or '(top)'}: expected {expected}, got "
                        f"{_kind(value)}")

    def problem(self, text: str) -> BadImage:
        return BadImage(f"{self.file}: {self.path or '(top)'}: {text}")


# ---- reading JSON --------------------------------------------------------------------------


def load_json(data: bytes, file: str) -> object:
    """The JSON value of `data`, refusing nesting deeper than MAX_DEPTH before parsing."""
    depth = 0
    for token in _NESTING.finditer(data):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise BadImage(f"{file}: JSON nested more than {MAX_DEPTH} levels deep")
        elif char in (b"]", b"}"):
            depth -= 1
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise BadImage(f"{file}: not valid JSON ({message})") from None


def canonical_json(obj: Any) -> bytes:
    """The one JSON form slimmer writes: sorted keys, no spaces, UTF-8 (so equal documents are
    equal bytes, and equal digests)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# The time of every file and of `created` when SOURCE_DATE_EPOCH is not set: 1980-01-02T00:00:00Z.
# ZIP (DOS) times start at 1980-01-01 local time (zipfile refuses anything earlier, `jar --date`
# anything before 1980-01-01T00:00:02Z), so a day later holds in every time zone
# (docs/reproducibility.md).
DEFAULT_EPOCH = 315619200


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# ---- typed fields --------------------------------------------------------------------------


def _obj(value: object, at: At) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise at.fail("an object", value)
    return value


def _str(value: object, at: At) -> str:
    if not isinstance(value, str):
        raise at.fail("a string", value)
    return value


def _opt_str(doc: Mapping[str, Any], key: str, at: At) -> str:
    value = doc.get(key)
    return "" if value is None else _str(value, at / key)


def _strings(value: object, at: At) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise at.fail("a list of strings", value)
    return tuple(_str(item, at / i) for i, item in enumerate(value))


def _opt_strings(doc: Mapping[str, Any], key: str, at: At) -> tuple[str, ...] | None:
    value = doc.get(key)
    return None if value is None else _strings(value, at / key)


def _str_map(doc: Mapping[str, Any], key: str, at: At) -> dict[str, str]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise (at / key).fail("an object of strings", value)
    return {k: _str(v, at / key / k) for k, v in value.items()}


def shown(text: str) -> str:
    """`text` for a one-line message: quoted (escapes visible) unless plainly printable."""
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def _member_name(value: object, at: At) -> str:
    """A member of the archive a document names: printable (it is shown in messages), not
    empty."""
    name = _str(value, at)
    if not name or not name.isprintable():
        raise at.problem(f"{shown(name[:200])} is not a member name")
    return name


def _env(doc: Mapping[str, Any], key: str, at: At) -> tuple[str, ...]:
    """Env: KEY=VALUE strings (the image spec's form; pack's --env takes the same)."""
    found = _opt_strings(doc, key, at) or ()
    for i, item in enumerate(found):
        name, sep, _ = item.partition("=")
        if not sep or not name:
            raise (at / key / i).problem(f"{shown(item[:80])} is not KEY=VALUE")
    return found


def _list(value: object, at: At) -> list[Any]:
    if not isinstance(value, list):
        raise at.fail("a list", value)
    return value


# ---- the values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest, and the one rule for the member that holds its blob in an OCI layout
    (`member`, and back: `from_member`)."""

    algorithm: str  # sha256 or sha512
    hex: str

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The sha256 digest of `data` (what slimmer writes)."""
        return cls("sha256", hashlib.sha256(data).hexdigest())

    @classmethod
    def from_member(cls, name: str, *, strict: bool = True) -> Digest | None:
        """The digest a member name blobs/ALG/HEX gives; None for any other name. A hex of the
        wrong length is refused, or with `strict=False` kept as it is (verify reports such a
        blob as one whose content does not hash to its name)."""
        found = _MEMBER.fullmatch(name)
        if found is None:
            return None
        if not strict:
            return cls(found[1], found[2])
        return cls.parse(f"{found[1]}:{found[2]}", At(name, "name"))

    @classmethod
    def parse(cls, value: object, at: At) -> Digest:
        text = _str(value, at)
        algorithm, _, hexpart = text.partition(":")
        pattern = _HEX.get(algorithm)
        if pattern is None or not pattern.fullmatch(hexpart):
            raise at.problem(f"{text[:80]!r} is not a sha256 or sha512 digest")
        return cls(algorithm, hexpart)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def member(self) -> str:
        """Where the blob is in an OCI layout."""
        return f"blobs/{self.algorithm}/{self.hex}"


@dataclass(frozen=True, slots=True)
class Platform:
    architecture: str
    os: str
    variant: str = ""
    os_version: str = ""

    @classmethod
    def parse(cls, value: object, at: At) -> Platform:
        doc = _obj(value, at)
        return cls(_opt_str(doc, "architecture", at), _opt_str(doc, "os", at),
                   _opt_str(doc, "variant", at), _opt_str(doc, "os.version", at))

    def as_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: object, at: At) -> Descriptor:
        doc = _obj(value, at)
        size = doc.get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            raise (at / "size").fail("an integer", size)
        if size < 0:
            raise (at / "size").problem(f"expected a size >= 0, got {size}")
        platform = doc.get("platform")
        return cls(_opt_str(doc, "mediaType", at), Digest.parse(doc.get("digest"), at / "digest"),
                   size, None if platform is None else Platform.parse(platform, at / "platform"),
                   _str_map(doc, "annotations", at))

    @property
    def ref_name(self) -> str:
        """The image name its annotations give ("" when none)."""
        return (self.annotations.get("io.containerd.image.name")
                or self.annotations.get("org.opencontainers.image.ref.name") or "")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest),
                               "size": self.size}
        if self.platform is not None:
            out["platform"] = self.platform.as_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob with its descriptor: what the writer (write.write_layout) takes.

    The one record of a blob's content. Its bytes are in memory (`data`: configs, manifests,
    indexes, a few KiB), or written when the archive is written by `copy(out)`, which must
    write exactly descriptor.size bytes (a layer from the file it was compressed into, a blob
    of another archive streamed through its store). A blob only described, never written here
    (one to push, one an input's manifest names), is a bare Descriptor."""

    descriptor: Descriptor
    data: bytes | None = None
    copy: Callable[[Sink], None] | None = None

    @classmethod
    def of(cls, media_type: str, data: bytes) -> Blob:
        return cls(Descriptor(media_type, Digest.of(data), len(data)), data=data)


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def parse_document(value: object, at: At, hint: str = "") -> Manifest | Index:
    """An image manifest or an index, told apart by mediaType (its own, else the descriptor's
    `hint`), else by what it holds."""
    doc = _obj(value, at)
    media_type = _opt_str(doc, "mediaType", at) or hint
    if not media_type:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "config" in doc else ""
    if media_type in INDEX_TYPES:
        return parse_index(doc, at, media_type)
    if media_type in MANIFEST_TYPES:
        return parse_manifest(doc, at, media_type)
    raise (at / "mediaType").problem(f"{media_type[:80]!r} is neither an image manifest nor "
                                     "an index")


def parse_manifest(value: object, at: At, media_type: str = OCI_MANIFEST) -> Manifest:
    doc = _obj(value, at)
    layers = _list(doc.get("layers", []), at / "layers")
    return Manifest(media_type, Descriptor.parse(doc.get("config"), at / "config"),
                    tuple(Descriptor.parse(d, at / "layers" / i) for i, d in enumerate(layers)))


def parse_index(value: object, at: At, media_type: str = OCI_INDEX) -> Index:
    doc = _obj(value, at)
    found = _list(doc.get("manifests", []), at / "manifests")
    return Index(media_type, tuple(Descriptor.parse(d, at / "manifests" / i)
                                   for i, d in enumerate(found)))


@dataclass(frozen=True, slots=True)
class DockerEntry:
    """One image of a docker archive's manifest.json."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]

    @property
    def tags(self) -> str:
        return ", ".join(shown(t) for t in self.repo_tags) or "(untagged)"


def parse_docker_manifest(value: object, at: At) -> tuple[DockerEntry, ...]:
    if not isinstance(value, list):
        raise at.fail("a list of images", value)
    out = []
    for i, item in enumerate(value):
        here = at / i
        doc = _obj(item, here)
        layers = _strings(doc.get("Layers"), here / "Layers")
        out.append(DockerEntry(_member_name(doc.get("Config"), here / "Config"),
                               _opt_strings(doc, "RepoTags", here) or (),
                               tuple(_member_name(name, here / "Layers" / j)
                                     for j, name in enumerate(layers))))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """The run-time part of an image config (its `config` object): what runs, where, as whom.

    The one type of it, wherever it comes from or goes: read from an image here, given by the
    command line or a recipe's [image] table, merged (slimmer/assemble/spec.py: the command
    line over a slimmed image's config over recipes over defaults) and written by
    image/write.py `config_json`. An empty field (None for entrypoint and cmd) is unset: a
    lower layer of the merge fills it."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    stop_signal: str = ""


@dataclass(frozen=True, slots=True)
class ImageConfig:
    architecture: str
    os: str
    variant: str
    os_version: str
    config: RunConfig
    diff_ids: tuple[Digest, ...] | None  # None: no rootfs.diff_ids (store refuses it)
    raw: Mapping[str, Any]  # the checked document, for code that compares or copies it

    @property
    def platform(self) -> Platform:
        return Platform(self.architecture, self.os, self.variant, self.os_version)


def parse_config(value: object, at: At) -> ImageConfig:
    doc = _obj(value, at)
    run = doc.get("config")
    run_at = at / "config"
    if run is None:
        run_config = RunConfig()
    else:
        rc = _obj(run, run_at)
        ports = rc.get("ExposedPorts")
        if ports is not None and not isinstance(ports, dict):
            raise (run_at / "ExposedPorts").fail("an object", ports)
        run_config = RunConfig(
            _env(rc, "Env", run_at), _opt_strings(rc, "Entrypoint", run_at),
            _opt_strings(rc, "Cmd", run_at), _opt_str(rc, "WorkingDir", run_at),
            _opt_str(rc, "User", run_at), _str_map(rc, "Labels", run_at),
            tuple(ports or ()), _opt_str(rc, "StopSignal", run_at))
    diff_ids = None
    rootfs = doc.get("rootfs")
    found = None if rootfs is None else _obj(rootfs, at / "rootfs").get("diff_ids")
    if found is not None:
        items = _list(found, at / "rootfs" / "diff_ids")
        diff_ids = tuple(Digest.parse(d, at / "rootfs" / "diff_ids" / i)
                         for i, d in enumerate(items))
    return ImageConfig(_opt_str(doc, "architecture", at), _opt_str(doc, "os", at),
                       _opt_str(doc, "variant", at), _opt_str(doc, "os.version", at),
                       run_config, diff_ids, doc)


@dataclass(frozen=True, slots=True)
class Contents:
    """slimmer.json: why each path is in the image, and the path that brought it in; which
    command made it (pack or slim: `why` says what would bring a path) and the warnings the
    build gave."""

    reasons: Mapping[str, str]
    parents: Mapping[str, str]
    made_by: str = ""  # "pack", "slim"; "" in archives written before it was recorded
    warnings: tuple[Notice, ...] = ()


def parse_contents(value: object, at: At) -> Contents:
    doc = _obj(value, at)
    reasons: dict[str, str] = {}
    parents: dict[str, str] = {}
    for i, item in enumerate(_list(doc.get("files", []), at / "files")):
        here = at / "files" / i
        entry = _obj(item, here)
        path = _str(entry.get("path"), here / "path")
        reasons[path] = _str(entry.get("reason"), here / "reason")
        if "parent" in entry:
            parents[path] = _str(entry["parent"], here / "parent")
    made_by = _opt_str(doc, "made_by", at)
    warnings = []
    for i, item in enumerate(_list(doc.get("warnings", []), at / "warnings")):
        here = at / "warnings" / i
        entry = _obj(item, here)
        warnings.append(Notice(*(_str(entry.get(key, ""), here / key)
                                 for key in ("code", "path", "problem", "fix"))))
    return Contents(reasons, parents, made_by, tuple(warnings))
