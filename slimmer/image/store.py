"""One reader over an image archive (tar) or an image directory: OCI layouts and docker
archives, nested indexes included.

- Members are looked up safely: index.json, manifest.json and blobs are read only as regular
  files. A symlink or hard link there is refused (in a tar it could name anything; in a
  directory no symlink may sit anywhere on the path: it could lead outside the layout).
- Documents are read with a size cap checked before reading (model.MAX_MANIFEST, MAX_CONFIG)
  and parsed into the typed values of model.py.
- Blobs are streamed through a reader that hashes what passes and, at the end of the stream
  (or when drained on close), raises if the content does not match its digest and size.
  Layers are checked twice: the compressed bytes against the manifest's digest and size, the
  uncompressed bytes against the config's rootfs.diff_ids.
- The walk through nested indexes is bounded: an index that lists itself, indexes nested
  more than MAX_NESTING deep, or more than MAX_MANIFESTS manifests in all, are refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any, TypeVar

import zstandard

from slimmer.errors import FileProblem
from slimmer.image.model import (
    CONTENTS,
    INDEX_TYPES,
    MAX_CONFIG,
    MAX_MANIFEST,
    At,
    BadImage,
    Contents,
    Descriptor,
    Digest,
    DockerEntry,
    ImageConfig,
    Index,
    Manifest,
    load_json,
    parse_config,
    parse_contents,
    parse_docker_manifest,
    parse_document,
    parse_index,
    parse_manifest,
    shown,
)
from slimmer.image.reference import matches

MAX_NESTING = 8  # index -> index -> ... -> manifest: real ones are 1 or 2 deep
MAX_MANIFESTS = 10_000  # descriptors visited in one walk: bounds an index's fan-out too
CHUNK = 1 << 20
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LayerRef:
    """A layer of a chosen image: its member, and what its content must hash to."""

    name: str  # member name (tar) or relative path (directory)
    compressed: Descriptor | None  # OCI: the manifest's digest and size of the blob
    diff_id: Digest | None  # the config's digest of the uncompressed layer (always given by
    # choose(); None only for a caller that reads a layer it has no config for)


@dataclass(frozen=True, slots=True)
class ImageSource:
    """One image of an input: its config and its layers, base first."""

    config: dict[str, Any]  # the config document, its fields checked by model.parse_config
    layers: tuple[str, ...]  # member names (tar) or paths (layout directory)
    reference: str  # the name it carried, if any
    spec: ImageConfig | None = None
    blobs: tuple[LayerRef, ...] = ()


def decompressed(raw: IO[bytes]) -> IO[bytes]:
    """A layer stream, uncompressed whatever it was (gzip, zstd or none), by its magic."""
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[type-var]
    head = buffered.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        # A zstd layer may be several frames (slimmer writes them so: compress.py).
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    return buffered


# Errors a damaged layer raises while it is decompressed or read as a tar stream.
LAYER_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


class CheckedReader(io.RawIOBase):
    """Reads through, hashing what passes; at the end of the stream the content must match
    `digest` (and `size`, when given), else BadImage naming `what`."""

    def __init__(self, inner: IO[bytes], digest: Digest, size: int | None, what: str,
                 against: str) -> None:
        super().__init__()
        self.inner = inner
        self.digest = digest
        self.size = size
        self.what = what
        self.against = against  # "its digest", "the config's diff_id ..."
        self.hash = hashlib.new(digest.algorithm)
        self.count = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        if not data:
            self._verify()
            return 0
        self.hash.update(data)
        self.count += len(data)
        if self.size is not None and self.count > self.size:
            raise BadImage(f"{self.what}: more than the {self.size} bytes its descriptor says")
        buffer[:len(data)] = data
        return len(data)

    def finish(self) -> None:
        """Drain what was not read and check the whole content."""
        while self.readinto(bytearray(CHUNK)):
            pass

    def _verify(self) -> None:
        if self.done:
            return
        self.done = True
        if self.size is not None and self.count != self.size:
            raise BadImage(f"{self.what}: {self.count} bytes, its descriptor says {self.size}")
        actual = self.hash.hexdigest()
        if actual != self.digest.hex:
            raise BadImage(f"{self.what}: content hashes to {self.digest.algorithm}:{actual}, "
                           f"not {self.against}")


class Store:
    """A tar archive or a directory, read by member name (use as a context manager)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}

    def __enter__(self) -> Store:
        if os.path.isdir(self.path):
            return self
        if not os.path.lexists(self.path):
            raise FileProblem(f"{self.path}: no such file or directory")
        try:
            self.tar = tarfile.open(self.path)
            for member in self.tar:  # later members replace earlier ones, as on extraction
                self.members[member.name.removeprefix("./")] = member
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile):
            # tarfile's message lists every compression it tried, one per line
            self.__exit__()
            raise FileProblem(f"{self.path}: not an image archive (neither a tar file nor a "
                              "layout directory)") from None
        except OSError as exc:
            self.__exit__()
            raise FileProblem(f"{self.path}: cannot read ({exc.strerror})") from None
        return self

    def __exit__(self, *_: object) -> None:
        if self.tar is not None:
            self.tar.close()

    # -- members --

    def names(self) -> set[str]:
        if self.tar is not None:
            return set(self.members)
        out = set()
        for top, _, files in os.walk(self.path):
            out |= {os.path.relpath(os.path.join(top, f), self.path) for f in files}
        return out

    def exists(self, name: str) -> bool:
        """Whether there is anything at `name` (a link too: reading it is then refused)."""
        if self.tar is not None:
            return name in self.members
        return os.path.lexists(os.path.join(self.path, name))

    def size(self, name: str) -> int | None:
        """The size of regular file `name`; None when nothing is there; refused when it is a
        link or not a regular file."""
        if self.tar is not None:
            member = self._member(name)
            return member.size if member is not None else None
        host = self._host(name)
        return os.stat(host).st_size if host is not None else None

    def _member(self, name: str) -> tarfile.TarInfo | None:
        assert self.tar is not None
        member = self.members.get(name)
        if member is None:
            return None
        if member.issym() or member.islnk():
            kind = "symbolic" if member.issym() else "hard"
            raise BadImage(f"{self.path}: {name} is a {kind} link to {member.linkname[:200]!r} "
                           "(refused: image files are read only as regular files)")
        if not member.isfile():
            raise BadImage(f"{self.path}: {name} is not a regular file")
        return member

    def _host(self, name: str) -> str | None:
        """The host path of regular file `name` of the directory: no symlink anywhere on the
        path (it could lead outside)."""
        path = self.path
        parts = name.split("/")
        for i, part in enumerate(parts):
            if part in ("", ".", ".."):
                raise BadImage(f"{self.path}: {name!r} is not a member name")
            path = os.path.join(path, part)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                return None
            shown = "/".join(parts[:i + 1])
            if stat.S_ISLNK(mode):
                raise BadImage(f"{self.path}: {name} is not a file of the layout: {shown} is a "
                               "symbolic link, refused (it could lead outside), so it is "
                               "missing here")
            last = i == len(parts) - 1
            if not (stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)):
                raise BadImage(f"{self.path}: {name} is not a file of the layout ({shown} is "
                               "not a regular file)" if last else
                               f"{self.path}: {name} is not a file of the layout ({shown} is not "
                               "a directory)")
        return path

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A stream of regular file `name`."""
        if self.tar is None:
            host = self._host(name)
            if host is None:
                raise FileProblem(f"{self.path}: {name} is not a file of the layout (it is "
                                  "missing)")
            with open(host, "rb") as fh:
                yield fh
            return
        member = self._member(name)
        found = self.tar.extractfile(member) if member is not None else None
        if found is None:
            raise FileProblem(f"{self.path}: {name} is missing from the archive")
        with found:
            yield found

    def read_bytes(self, name: str, limit: int) -> bytes:
        """A small file read whole: its size checked before reading."""
        size = self.size(name)
        if size is not None and size > limit:
            raise BadImage(f"{self.path}: {name} is {size:,} bytes, more than the {limit:,} a "
                           "manifest or config may be here")
        with self.open(name) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:  # a file that grew while read
            raise BadImage(f"{self.path}: {name} is more than {limit:,} bytes")
        return data

    def read_json(self, name: str, limit: int = MAX_MANIFEST) -> object:
        return load_json(self.read_bytes(name, limit), f"{self.path}: {name}")

    # -- blobs --

    def blob_bytes(self, desc: Descriptor, limit: int, what: str = "blob") -> bytes:
        """A small blob read whole, checked against its descriptor's digest and size."""
        name = desc.digest.member
        if desc.size > limit:
            raise BadImage(f"{self.path}: {what} {desc.digest}: its descriptor says "
                           f"{desc.size:,} bytes, more than the {limit:,} allowed")
        data = self.read_bytes(name, limit)
        if len(data) != desc.size:
            raise BadImage(f"{self.path}: {name}: {len(data)} bytes, its descriptor says "
                           f"{desc.size}")
        actual = hashlib.new(desc.digest.algorithm, data).hexdigest()
        if actual != desc.digest.hex:
            raise BadImage(f"{self.path}: {name}: content hashes to "
                           f"{desc.digest.algorithm}:{actual}, not its digest")
        return data

    @contextmanager
    def blob(self, desc: Descriptor) -> Iterator[CheckedReader]:
        """A blob as a stream checked against its digest and size when read to its end; leave
        the `with` block normally and what was not read is drained and checked too."""
        name = desc.digest.member
        with self.open(name) as raw:
            checked = CheckedReader(raw, desc.digest, desc.size, f"{self.path}: {name}",
                                    "its digest")
            yield checked
            checked.finish()

    @contextmanager
    def layer(self, ref: LayerRef) -> Iterator[IO[bytes]]:
        """A layer, uncompressed, checked against its compressed digest and size and its
        diff_id; a damaged layer (truncated gzip, zstd or tar) is refused by name."""
        what = f"{self.path}: layer {ref.name}"
        with self.open(ref.name) as raw:
            compressed: IO[bytes] = raw
            outer = None
            digest = (ref.compressed.digest if ref.compressed is not None else
                      Digest.from_member(ref.name))
            if digest is not None:
                size = ref.compressed.size if ref.compressed is not None else None
                outer = CheckedReader(raw, digest, size, what, "its digest")
                compressed = io.BufferedReader(outer, CHUNK)
            try:
                plain = decompressed(compressed)
                inner = None
                if ref.diff_id is not None:
                    inner = CheckedReader(plain, ref.diff_id, None, what,
                                          f"the config's diff_id {ref.diff_id}")
                    plain = io.BufferedReader(inner, CHUNK)
                yield plain
                if inner is not None:
                    inner.finish()
                if outer is not None:
                    outer.finish()
            except LAYER_ERRORS as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise BadImage(f"{what}: cannot be read ({first or type(exc).__name__})") \
                    from None

    @contextmanager
    def plain(self, name: str) -> Iterator[IO[bytes]]:
        """Member `name` uncompressed and unchecked: for `verify`, which reports a mismatch
        where the other readers refuse it (their errors: LAYER_ERRORS)."""
        with self.open(name) as raw:
            yield decompressed(raw)

    def mtimes(self) -> set[int]:
        """The mtimes of a tar's members (a directory has none to compare)."""
        return {int(m.mtime) for m in self.members.values()}

    # -- documents --

    def index(self) -> Index:
        return parse_index(self.read_json("index.json"), At(self.path, "index.json"))

    def docker_entries(self) -> tuple[DockerEntry, ...]:
        return parse_docker_manifest(self.read_json("manifest.json"),
                                     At(self.path, "manifest.json"))

    def contents(self) -> Contents | None:
        """slimmer.json, the reasons slimmer wrote beside index.json; None in others'."""
        if not self.exists(CONTENTS):
            return None
        return parse_contents(self.read_json(CONTENTS, MAX_CONFIG), At(self.path, CONTENTS))

    def document_bytes(self, desc: Descriptor) -> tuple[bytes, Manifest | Index]:
        """A manifest or index: its exact bytes (checked against the descriptor) and what they
        say."""
        data = self.blob_bytes(desc, MAX_MANIFEST, "manifest")
        return data, self._document(data, desc.digest.member, desc.media_type)

    def document(self, desc: Descriptor) -> Manifest | Index:
        return self.document_bytes(desc)[1]

    def read_document(self, name: str, hint: str = "") -> Manifest | Index:
        """Member `name` as a manifest or index, its content not checked against a digest
        (`verify` hashes every blob on its own)."""
        return self._document(self.read_bytes(name, MAX_MANIFEST), name, hint)

    def _document(self, data: bytes, name: str, hint: str) -> Manifest | Index:
        return parse_document(load_json(data, f"{self.path}: {name}"), At(self.path, name),
                              hint)

    def manifest(self, desc: Descriptor) -> Manifest:
        data = self.blob_bytes(desc, MAX_MANIFEST, "manifest")
        name = desc.digest.member
        return parse_manifest(load_json(data, f"{self.path}: {name}"), At(self.path, name),
                              desc.media_type or "")

    def config(self, desc: Descriptor) -> tuple[bytes, ImageConfig]:
        data = self.blob_bytes(desc, MAX_CONFIG, "config")
        return data, self._config(data, desc.digest.member)

    def config_member(self, name: str, *, checked: bool = True) -> ImageConfig:
        """A docker archive's config, by member name (checked when the name is a digest,
        unless `checked` is False: `verify` hashes every blob on its own)."""
        data = self.read_bytes(name, MAX_CONFIG)
        digest = Digest.from_member(name) if checked else None
        if digest is not None:
            actual = hashlib.new(digest.algorithm, data).hexdigest()
            if actual != digest.hex:
                raise BadImage(f"{self.path}: {name}: content hashes to "
                               f"{digest.algorithm}:{actual}, not its name")
        return self._config(data, name)

    def _config(self, data: bytes, name: str) -> ImageConfig:
        return parse_config(load_json(data, f"{self.path}: {name}"), At(self.path, name))

    def images(self, index: Index) -> list[Descriptor]:
        """The image manifests an index lists, nested indexes opened (bounded); an inner
        manifest without annotations takes its index's."""
        out: list[Descriptor] = []
        visited = [0]

        def walk(found: tuple[Descriptor, ...], depth: int, stack: tuple[str, ...],
                 notes: Any) -> None:
            for desc in found:
                visited[0] += 1
                if visited[0] > MAX_MANIFESTS:
                    raise BadImage(f"{self.path}: its indexes list more than {MAX_MANIFESTS:,} "
                                   "manifests")
                if desc.media_type not in INDEX_TYPES:
                    out.append(desc if desc.annotations or not notes else
                               replace(desc, annotations=notes))
                    continue
                if str(desc.digest) in stack:
                    raise BadImage(f"{self.path}: index {desc.digest} lists itself")
                if depth >= MAX_NESTING:
                    raise BadImage(f"{self.path}: indexes nested more than {MAX_NESTING} deep "
                                   f"(at {desc.digest})")
                inner = self.document(desc)
                if not isinstance(inner, Index):
                    raise BadImage(f"{self.path}: {desc.digest.member}: an image manifest, "
                                   f"its descriptor says {desc.media_type}")
                walk(inner.manifests, depth + 1, (*stack, str(desc.digest)),
                     desc.annotations or notes)

        walk(index.manifests, 0, (), {})
        return out

    # -- choosing an image --

    def choose(self, wanted: str | None) -> ImageSource:
        if self.exists("manifest.json"):
            return self._docker(wanted)
        if self.exists("index.json"):
            return self._oci(wanted)
        raise FileProblem(f"{self.path}: neither manifest.json nor index.json: not an image "
                          "archive or layout")

    def _docker(self, wanted: str | None) -> ImageSource:
        entries = self.docker_entries()
        tags = [e.tags for e in entries]
        if wanted is not None:
            entries = tuple(e for e in entries if matches(wanted, list(e.repo_tags)))
        entry = _one(entries, wanted, tags, self.path)
        spec = self.config_member(entry.config)
        diff_ids = layer_diff_ids(spec, len(entry.layers), f"{self.path}: {entry.config}")
        blobs = tuple(LayerRef(name, None, d) for name, d in zip(entry.layers, diff_ids,
                                                                 strict=True))
        return ImageSource(dict(spec.raw), entry.layers, (entry.repo_tags or ("",))[0], spec,
                           blobs)

    def _oci(self, wanted: str | None) -> ImageSource:
        manifests = self.images(self.index())
        tags = [shown(m.ref_name) if m.ref_name else "(untagged)" for m in manifests]
        if wanted is not None:
            manifests = [m for m in manifests if matches(wanted, [m.ref_name])]
        desc = _one(manifests, wanted, tags, self.path)
        manifest = self.manifest(desc)
        _, spec = self.config(manifest.config)
        diff_ids = layer_diff_ids(spec, len(manifest.layers),
                             f"{self.path}: {manifest.config.digest.member}")
        blobs = tuple(LayerRef(d.digest.member, d, diff) for d, diff in zip(
            manifest.layers, diff_ids, strict=True))
        return ImageSource(dict(spec.raw), tuple(b.name for b in blobs), desc.ref_name, spec,
                           blobs)


def layer_diff_ids(spec: ImageConfig, layers: int, where: str) -> tuple[Digest, ...]:
    """The digest each layer's uncompressed content must have, from the config.

    A config without rootfs.diff_ids is refused, not read with a note: the OCI image spec
    makes them REQUIRED, `docker load` refuses such a config ("no RootFS key"), and in a
    classic `docker save` archive (`<id>/layer.tar`, no blob digests) they are the only thing
    that ties a layer's content to the image: without them a changed layer would be slimmed
    unnoticed (and `verify` already counts their absence as a problem)."""
    if spec.diff_ids is None:
        raise BadImage(f"{where}: rootfs.diff_ids: missing (they are required: without them "
                       "the layers cannot be checked)")
    if len(spec.diff_ids) != layers:
        raise BadImage(f"{where}: rootfs.diff_ids: {len(spec.diff_ids)} for {layers} layers")
    return spec.diff_ids


def _one(entries: tuple[_T, ...] | list[_T], wanted: str | None, tags: list[str],
         path: str) -> _T:
    if len(entries) == 1:
        return entries[0]
    if not entries:
        what = f"no image {wanted}" if wanted else "no image"
        raise BadImage(f"{path}: {what} (it holds: {'; '.join(tags) or 'nothing'})")
    raise BadImage(f"{path}: holds {len(entries)} images ({'; '.join(tags)}): choose one "
                   "with --image")
