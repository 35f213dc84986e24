"""A Hypothesis fuzz target for the image reader (issue 17): image archives and layout
directories built from valid ones, then mutated, read by the store (choose, the index walk,
every layer read through) and by the in-process commands that read images (verify, inspect,
slim to a temporary output).

The only allowed outcomes: success, or a SlimmerError whose message is one line and names the
archive or one of its members. Never another exception, never a file left in the temporary
directory, never an output at -o after a failure. Sizes are bounded (a few KiB per archive);
each example has a deadline. The profile is chosen once in tests/conftest.py ("ci",
derandomized, when CI=true).

Mutations, each drawn by Hypothesis:
- the form (classic `docker save`, Docker 25's `docker save`, an OCI archive) and the storage
  (tar or directory), the layers' compression (gzip, zstd, none);
- layers of random members: files, directories, symlinks, hard links, FIFOs under names made
  of `..`, `.`, absolute prefixes, whiteouts and `.wh..wh..opq` at any level;
- edits made before the digests are computed (so the reader sees them past the digest checks):
  a whole document (manifest.json, index.json, a manifest, a config) replaced by random JSON,
  any known field set to a random JSON value, a random digest or size, or deleted;
- edits after: a member replaced by a symlink, a hard link or a directory, a blob truncated
  or one of its bytes flipped, a member removed, a document replaced by random bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from slimmer.errors import SlimmerError
from slimmer.image.explain import read_image
from slimmer.image.model import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from slimmer.image.store import Store
from slimmer.image.verify import verify
from tests.support.archives import Members, desc, sha, tiny_static_elf, write_members
from tests.support.cli import run

LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "none": "application/vnd.oci.image.layer.v1.tar"}
HELLO = tiny_static_elf(b"hi\n")

Edit = Callable[[Any], Any]


# ---- building a valid image ---------------------------------------------------------------


def blob_name(data: bytes) -> str:
    return f"blobs/sha256/{sha(data)[7:]}"


LayerMember = tuple[str, str, bytes | str]  # kind, name, content or link target


def layer_tar(members: list[LayerMember]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(payload)
            tar.addfile(info)
    return out.getvalue()


BASE_LAYER = layer_tar([("dir", "etc", b""), ("file", "hello", HELLO),
                        ("file", "etc/motd", b"welcome\n")])


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


@dataclass(frozen=True)
class Edits:
    """Edits made to the documents before their digests are taken."""

    docker: Edit | None = None  # manifest.json
    index: Edit | None = None  # index.json
    manifest: Edit | None = None  # the OCI image manifest
    config: Edit | None = None
    contents: Edit | None = None  # slimmer.json (OCI archives)


def apply(edit: Edit | None, doc: Any) -> bytes:
    value = doc if edit is None else edit(doc)
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def damage(data: bytes, how: tuple[str, float] | None) -> bytes:
    """`data` truncated or with one byte changed at a fraction of its length."""
    if how is None or not data:
        return data
    at = min(int(how[1] * len(data)), len(data) - 1)
    return data[:at] if how[0] == "truncate" else data[:at] + bytes([data[at] ^ 0x41]) + \
        data[at + 1:]


def build(form: str, layers: list[bytes], how: str, edits: Edits, nest: int = 0,
          broken: tuple[str, float] | None = None) -> Members:
    """A valid image of `layers` (plain tars) in `form` (docker, docker25, oci), the documents
    edited by `edits` before they are hashed, the last stored layer damaged by `broken` before
    it is hashed, the manifest under `nest` nested indexes."""
    stored = [compress(layer, "none" if form == "docker25" else how) for layer in layers]
    stored[-1] = damage(stored[-1], broken)
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": ["/hello"], "Env": ["PATH=/usr/bin"],
                         "Labels": {"a": "b"}, "ExposedPorts": {"80/tcp": {}}},
              "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]}}
    config_data = apply(edits.config, config)
    members: Members = {}
    if form == "docker":
        names = [f"{i:064x}/layer.tar" for i in range(len(layers))]
        config_name = f"{sha(config_data)[7:]}.json"
    else:
        names = [blob_name(data) for data in stored]
        config_name = blob_name(config_data)
    members.update(zip(names, stored, strict=True))
    members[config_name] = config_data
    if form != "docker":
        kind = LAYER_TYPES["none" if form == "docker25" else how]
        manifest = apply(edits.manifest, {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": desc(OCI_CONFIG, config_data),
            "layers": [desc(kind, data) for data in stored]})
        members[blob_name(manifest)] = manifest
        entry = {**desc(OCI_MANIFEST, manifest),
                 "platform": {"architecture": "amd64", "os": "linux"},
                 "annotations": {"org.opencontainers.image.ref.name": "x:1"}}
        for _ in range(nest):
            inner = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                "manifests": [entry]}).encode()
            members[blob_name(inner)] = inner
            entry = desc(OCI_INDEX, inner)
        members["index.json"] = apply(edits.index, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                    "manifests": [entry]})
        members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    if form == "oci":
        members["slimmer.json"] = apply(edits.contents, {"files": [
            {"path": "/hello", "reason": "entrypoint"},
            {"path": "/etc/motd", "reason": "rule", "parent": "/hello"}]})
    if form != "oci":
        members["manifest.json"] = apply(edits.docker, [
            {"Config": config_name, "RepoTags": ["x:1"], "Layers": names}])
    return members


def write_dir(path: Path, members: Members) -> None:
    """A layout directory; links are made inside it only (a hard link to a member, a
    symlink's target is a name, never created)."""
    path.mkdir()
    for name, payload in members.items():
        target = path / name
        with contextlib.suppress(OSError):  # a name under a file, or a file over a directory
            target.parent.mkdir(parents=True, exist_ok=True)
            if not isinstance(payload, tuple):
                target.write_bytes(payload)
            elif payload[0] == "sym":
                target.symlink_to(payload[1])
            elif payload[0] == "dir":
                target.mkdir()
            else:
                source = path / payload[1]
                if source.is_file() and not source.is_symlink():
                    os.link(source, target)


# ---- strategies ----------------------------------------------------------------------------

KEYS = ("Config", "RepoTags", "Layers", "manifests", "mediaType", "digest", "size", "platform",
        "annotations", "config", "layers", "rootfs", "diff_ids", "Env", "Entrypoint", "Cmd",
        "architecture", "os")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4),
    max_leaves=12)

hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
digests = st.one_of(
    hexes.map(lambda h: f"sha256:{h}"),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
    st.sampled_from(["sha256:../../etc/passwd", "sha256:abc", "md5:abc", "sha256:", "",
                     "sha256:" + "A" * 64, "sha256:" + "0" * 64 + "/x"]),
    st.text(max_size=20))
sizes = st.integers(min_value=-2, max_value=2**64) | st.sampled_from([0, 1, 10**9])

# The fields slimmer reads, per document (paths of keys and indexes).
FIELDS: dict[str, list[tuple[str | int, ...]]] = {
    "docker": [(), (0,), (0, "Config"), (0, "RepoTags"), (0, "RepoTags", 0), (0, "Layers"),
               (0, "Layers", 0)],
    "index": [(), ("manifests",), ("manifests", 0), ("manifests", 0, "digest"),
              ("manifests", 0, "size"), ("manifests", 0, "mediaType"),
              ("manifests", 0, "platform"), ("manifests", 0, "platform", "architecture"),
              ("manifests", 0, "annotations"),
              ("manifests", 0, "annotations", "org.opencontainers.image.ref.name"),
              ("mediaType",)],
    "manifest": [(), ("mediaType",), ("config",), ("config", "digest"), ("config", "size"),
                 ("config", "mediaType"), ("layers",), ("layers", 0), ("layers", 0, "digest"),
                 ("layers", 0, "size"), ("layers", 0, "mediaType"), ("schemaVersion",)],
    "contents": [(), ("files",), ("files", 0), ("files", 0, "path"), ("files", 0, "reason"),
                 ("files", 1, "parent")],
    "config": [(), ("config",), ("config", "Env"), ("config", "Env", 0), ("config", "Entrypoint"),
               ("config", "Cmd"), ("config", "WorkingDir"), ("config", "User"),
               ("config", "Labels"), ("config", "Labels", "a"), ("config", "ExposedPorts"),
               ("config", "StopSignal"), ("rootfs",), ("rootfs", "diff_ids"),
               ("rootfs", "diff_ids", 0), ("architecture",), ("os",), ("variant",),
               ("os.version",)],
}


@dataclass(frozen=True)
class FieldEdit:
    """Set (or delete) the field at `path`; a path the document does not have is left alone.
    The empty path replaces the whole document. (A dataclass: Hypothesis prints it.)"""

    path: tuple[str | int, ...]
    action: str  # set, delete
    value: object

    def __call__(self, doc: Any) -> Any:
        if not self.path:
            return self.value
        here = doc
        for key in self.path[:-1]:
            try:
                here = here[key]
            except (KeyError, IndexError, TypeError):
                return doc
        last = self.path[-1]
        if isinstance(here, dict) and isinstance(last, str):
            if self.action == "set":
                here[last] = self.value
            else:
                here.pop(last, None)
        elif isinstance(here, list) and isinstance(last, int) and last < len(here):
            if self.action == "set":
                here[last] = self.value
            else:
                del here[last]
        return doc


@st.composite
def document_edits(draw: st.DrawFn) -> Edits:
    found: dict[str, Edit] = {}
    for _ in range(draw(st.integers(0, 2))):
        which = draw(st.sampled_from(sorted(FIELDS)))
        path = draw(st.sampled_from(FIELDS[which]))
        action = draw(st.sampled_from(["set", "set", "delete"]))
        last = path[-1] if path else ""
        value = draw(digests if last == "digest" else sizes if last == "size" else
                     json_values | digests if last in ("Config", "diff_ids", 0) else json_values)
        found[which] = FieldEdit(path, action if path else "set", value)
    return Edits(**found)


segments = st.sampled_from(["a", "b", "etc", "hello", "..", ".", "", ".wh..wh..opq", ".wh.a",
                            ".wh.hello", ".wh.etc", "motd", "x" * 120])


@st.composite
def member_names(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["", "", "./", "/", "//"]))
    return prefix + "/".join(draw(st.lists(segments, min_size=1, max_size=4)))


@st.composite
def layer_members(draw: st.DrawFn) -> list[LayerMember]:
    out: list[LayerMember] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["file", "file", "dir", "sym", "hard", "fifo"]))
        name = draw(member_names())
        payload: bytes | str = b""
        if kind == "file":
            payload = draw(st.binary(max_size=64))
        elif kind in ("sym", "hard"):
            payload = draw(member_names() | st.sampled_from(["/etc/passwd", "../../x", ""]))
        out.append((kind, name, payload))
    return out


@dataclass(frozen=True)
class After:
    """A change after hashing: `kind` at the member numbered `which` (modulo the count)."""

    kind: str  # sym, hard, dir, delete, truncate, flip, bytes
    which: int
    where: float  # a fraction of the member's length
    target: str
    data: bytes


afters = st.builds(After, st.sampled_from(["sym", "hard", "dir", "delete", "truncate", "flip",
                                           "bytes"]),
                   st.integers(0, 50), st.floats(0, 1), st.sampled_from([
                       "/etc/passwd", "index.json", "manifest.json", "../x", "oci-layout"]),
                   st.binary(max_size=40))


def mutate(members: Members, change: After) -> None:
    names = sorted(members)
    name = names[change.which % len(names)]
    payload = members[name]
    if change.kind in ("sym", "hard", "dir"):
        members[name] = (change.kind, change.target)
    elif change.kind == "delete":
        del members[name]
    elif change.kind == "bytes":
        members[name] = change.data
    elif isinstance(payload, bytes) and payload:
        at = min(int(change.where * len(payload)), len(payload) - 1)
        members[name] = (payload[:at] if change.kind == "truncate" else
                         payload[:at] + bytes([payload[at] ^ 0x41]) + payload[at + 1:])


@dataclass(frozen=True)
class Case:
    form: str
    directory: bool
    compression: str
    layers: tuple[tuple[LayerMember, ...], ...]
    edits: Edits
    afters: tuple[After, ...]
    nest: int = 0
    broken: tuple[str, float] | None = None

    def members(self) -> Members:
        layers = [BASE_LAYER, *(layer_tar(list(m)) for m in self.layers)]
        members = build(self.form, layers, self.compression, self.edits, self.nest,
                        self.broken)
        for change in self.afters:
            if members:
                mutate(members, change)
        return members


cases = st.builds(
    Case, st.sampled_from(["docker", "docker25", "oci"]), st.booleans(),
    st.sampled_from(["gzip", "zstd", "none"]),
    st.lists(layer_members().map(tuple), max_size=2).map(tuple),
    document_edits(), st.lists(afters, max_size=2).map(tuple), st.integers(0, 2),
    st.none() | st.tuples(st.sampled_from(["truncate", "flip"]), st.floats(0, 1)))


# ---- the checks ----------------------------------------------------------------------------


def allowed(exc: SlimmerError, archive: str, members: Members) -> None:
    """A SlimmerError is an allowed outcome when its message is one line naming the archive
    or one of its members."""
    message = exc.message
    assert "\n" not in message and "\r" not in message, repr(message)
    assert exc.hint is None or "\n" not in exc.hint, repr(exc.hint)
    assert archive in message or any(name in message for name in members), repr(message)


def attempt(action: Callable[[], object], archive: str, members: Members) -> bool:
    """Run `action`: True when it succeeded, False when it failed as allowed; any other
    exception propagates (and fails the example)."""
    try:
        action()
    except SlimmerError as exc:
        allowed(exc, archive, members)
        return False
    return True


def walk_index(archive: str) -> None:
    with Store(archive) as store:
        if store.exists("index.json"):
            for desc in store.images(store.index()):
                store.manifest(desc)


def read_everything(archive: str) -> None:
    """What the store reads for slim: the image chosen, every layer to its end."""
    with Store(archive) as store:
        source = store.choose(None)
        for ref in source.blobs:
            with store.layer(ref) as stream:
                while stream.read(1 << 16):
                    pass


def verify_lines(archive: str) -> None:
    """verify's findings are printed one a line: none may hold a line break."""
    found = verify(archive)
    for line in [*found.problems, *found.notes]:
        assert line.isprintable(), repr(line)


@contextlib.contextmanager
def private_tmp(base: Path) -> Iterator[Path]:
    """A fresh directory as the process's temporary directory, restored after."""
    saved = tempfile.tempdir
    work = Path(tempfile.mkdtemp(dir=base))
    (work / "tmp").mkdir()
    tempfile.tempdir = str(work / "tmp")
    try:
        yield work
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(work, ignore_errors=True)


def check(case: Case, base: Path) -> None:
    members = case.members()
    with private_tmp(base) as work:
        path = work / ("image" if case.directory else "image.tar")
        (write_dir if case.directory else write_members)(path, members)
        archive = str(path)
        attempt(lambda: walk_index(archive), archive, members)
        readable = attempt(lambda: read_everything(archive), archive, members)
        attempt(lambda: verify_lines(archive), archive, members)
        attempt(lambda: read_image(archive), archive, members)
        out = work / "out.tar"
        done = run("slim", archive, "-o", str(out))
        code, err = done.returncode, done.stderr
        lines = err.splitlines()
        event(f"read: {'ok' if readable else 'refused'}, slim: {'ok' if code == 0 else 'refused'}")
        if code != 0:
            assert code == 1, err
            assert lines and lines[0].startswith("error: "), err
            assert all(line.startswith("hint: ") for line in lines[1:]), err
            assert not out.exists(), err
        if not readable:
            # slim reads what the store reads: it fails too, naming the archive or a member
            # (an image it could read may fail for what it holds: no entrypoint, no ELF...)
            assert code == 1, err
            first = lines[0]
            assert len(first) <= 300, err  # the bound every message keeps (issue 18)
            if first.endswith("--verbose shows all)"):  # a long name was cut: see it whole
                first = run("slim", archive, "-o", str(out), "--verbose").stderr.splitlines()[0]
            assert archive in first or any(name in first for name in members), err
        left = sorted(p.name for p in work.iterdir()) + sorted(os.listdir(work / "tmp"))
        expected = sorted([path.name, "tmp", *(["out.tar"] if code == 0 else [])])
        assert left == expected, left  # nothing written beside, nothing left in tmp


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_the_unmutated_images_are_read(base: Path) -> None:
    """Each form, stored each way and compressed each way, is good before it is mutated."""
    for form in ("docker", "docker25", "oci"):
        for directory in (False, True):
            for how in ("gzip", "zstd", "none"):
                case = Case(form, directory, how, (), Edits(), ())
                with private_tmp(base) as work:
                    path = work / "image"
                    (write_dir if directory else write_members)(path, case.members())
                    read_everything(str(path))
                    assert verify(str(path)).ok
                    assert "/hello" in read_image(str(path)).tree
                    done = run("slim", str(path), "-o", str(work / "out.tar"))
                    code, err = done.returncode, done.stderr
                    assert code == 0, err


@settings(max_examples=800, deadline=4000, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases)
def test_fuzz_image_reader(case: Case, base: Path) -> None:
    check(case, base)
