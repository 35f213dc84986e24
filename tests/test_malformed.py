"""Malformed, oversized, tampered and hostile image inputs, each run through every command that
reads images (slim, verify, inspect, why, diff, index, push): exit status 1, one `error:` line
naming the file, no traceback, nothing written at -o.

The CLI runs in-process (cli.main): an exception that is not a SlimmerError fails the test
with its traceback. push is run against a closed loopback port: every case it takes must fail
while the layout is read, before any connection.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from slimmer.image.merged import open_image
from slimmer.image.model import MAX_CONFIG
from slimmer.image.store import MAX_NESTING
from slimmer.image.verify import verify
from tests.support.archives import Members, Payload, desc, sha, write_members
from tests.support.cli import run as slimmer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER = "application/vnd.oci.image.layer.v1.tar"
CLOSED_PORT = "127.0.0.1:9"  # discard: nothing listens there



def plain_layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("hello", b"hi\n" * 1000), ("etc/motd", b"welcome\n")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tarfile_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


PLAIN = plain_layer()
GZ = gzip.compress(PLAIN, mtime=0)


def blob(data: bytes) -> tuple[str, bytes]:
    return f"blobs/sha256/{sha(data)[7:]}", data


def encode(doc: object) -> bytes:
    return doc if isinstance(doc, bytes) else json.dumps(doc).encode()


def good_config(diff_ids: list[str] | None = None) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/hello"], "Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(PLAIN)]}}


Edit = Callable[[Any], Any]


def docker(config: Edit | None = None, manifest: Edit | None = None,
           layer: bytes = GZ) -> Members:
    """A classic `docker save` archive: manifest.json, config.json, layer.tar."""
    cfg = encode(config(good_config()) if config else good_config())
    doc = [{"Config": "config.json", "RepoTags": ["x:1"], "Layers": ["layer.tar"]}]
    return {"layer.tar": layer, "config.json": cfg,
            "manifest.json": encode(manifest(doc) if manifest else doc)}


def oci(config: Edit | None = None, manifest: Edit | None = None,
        index: Callable[[Any, Members], Any] | None = None, layer: bytes = GZ) -> Members:
    """An OCI archive (skopeo's form): oci-layout, index.json, blobs."""
    cfg = encode(config(good_config()) if config else good_config())
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": desc(OCI_CONFIG, cfg),
           "layers": [desc(LAYER_GZ, layer)]}
    data = encode(manifest(doc) if manifest else doc)
    members: Members = dict([blob(cfg), blob(layer), blob(data)])
    top = {"schemaVersion": 2, "manifests": [{
        **desc(OCI_MANIFEST, data), "annotations": {"org.opencontainers.image.ref.name": "x:1"}}]}
    members["index.json"] = encode(index(top, members) if index else top)
    members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    return members


def write_dir(path: Path, members: Members) -> Path:
    for name, payload in members.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(payload, tuple):
            target.symlink_to(payload[1])
        else:
            target.write_bytes(payload)
    return path


# ---- the cases -----------------------------------------------------------------------------


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def set_at(path: tuple[str | int, ...], value: object) -> Edit:
    """An edit that sets one field (path of keys and indexes) of a document."""
    def edit(doc: Any) -> Any:
        here = doc
        for key in path[:-1]:
            here = here[key]
        here[path[-1]] = value
        return doc
    return edit


def replace_layer(members: Members, old: bytes, new: bytes) -> Members:
    """The layer blob's content swapped under its old name (same descriptor)."""
    name = blob(old)[0]
    members[name] = new
    return members


def with_member(members: Members, name: str, payload: Payload) -> Members:
    members[name] = payload
    return members


def layer_blob_name() -> str:
    return blob(GZ)[0]


def self_listing(top: Any, members: Members) -> Any:
    """An index blob that lists its own name (its content cannot hash to it)."""
    fake = "sha256:" + "a" * 64
    inner = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": fake, "size": 10}]}).encode()
    members[f"blobs/sha256/{'a' * 64}"] = inner
    top["manifests"] = [{"mediaType": OCI_INDEX, "digest": fake, "size": len(inner)}]
    return top


def chain(levels: int) -> Callable[[Any, Members], Any]:
    """index.json -> `levels` nested indexes -> the manifest."""
    def edit(top: Any, members: Members) -> Any:
        entry = top["manifests"][0]
        for _ in range(levels):
            data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                               "manifests": [entry]}).encode()
            members[blob(data)[0]] = data
            entry = {**desc(OCI_INDEX, data), "annotations": entry.get("annotations", {})}
        top["manifests"] = [entry]
        return top
    return edit


def truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


def tar_and_config(layer: bytes, plain: bytes) -> Members:
    """A docker archive whose layer is `layer`, its diff_id that of `plain`."""
    return docker(config=lambda c: good_config([sha(plain)]), layer=layer)


def docker_layers(layers: list[bytes], diff_ids: list[bytes], new_layout: bool = False,
                  config: Edit | None = None) -> Members:
    """A `docker save` archive of several layers, the config's diff_ids those of `diff_ids`:
    the classic layout (`<id>/layer.tar`, the config by its id) or Docker 25's (config and
    layers in blobs/sha256 under their digests, beside index.json)."""
    cfg = good_config([sha(d) for d in diff_ids])
    data = encode(config(cfg) if config else cfg)
    members: Members = {}
    if new_layout:
        names = [blob(layer)[0] for layer in layers]
        config_name = blob(data)[0]
        manifest = encode({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": desc(OCI_CONFIG, data),
                           "layers": [desc(LAYER, layer) for layer in layers]})
        members.update([blob(manifest)])
        members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
        members["index.json"] = encode({"schemaVersion": 2, "manifests": [{
            **desc(OCI_MANIFEST, manifest),
            "annotations": {"io.containerd.image.name": "docker.io/library/x:1"}}]})
    else:
        names = [f"{hashlib.sha256(bytes([i])).hexdigest()}/layer.tar" for i in range(len(layers))]
        config_name = f"{sha(data)[7:]}.json"
    members.update(zip(names, layers, strict=True))
    members[config_name] = data
    members["manifest.json"] = encode([{"Config": config_name, "RepoTags": ["x:1"],
                                        "Layers": names}])
    return members


OTHER = tarfile_of({"bin/tool": b"\x7fELF" + b"x" * 2000})


def without_rootfs(config: Any) -> Any:
    del config["rootfs"]
    return config


ALL = ("slim", "verify", "inspect", "why", "diff", "index", "push")
NO_PUSH = tuple(c for c in ALL if c != "push")  # push reads layers only while uploading
READERS = ("slim", "verify", "inspect", "why", "diff")  # those that decompress layers

Case = Callable[[], Members]
CASES: list[Any] = [
    # docker manifest.json of the wrong shape
    pytest.param(lambda: docker(manifest=lambda d: None), ALL, "manifest.json",
                 id="manifest.json-null"),
    pytest.param(lambda: docker(manifest=lambda d: 42), ALL, "manifest.json",
                 id="manifest.json-number"),
    pytest.param(lambda: docker(manifest=lambda d: ["a", "b"]), ALL, "manifest.json[0]",
                 id="manifest.json-list-of-strings"),
    pytest.param(lambda: docker(manifest=lambda d: d[0]), ALL, "manifest.json",
                 id="manifest.json-object"),
    pytest.param(lambda: docker(manifest=set_at((0, "Config"), 7)), ALL, "Config",
                 id="Config-integer"),
    pytest.param(lambda: docker(manifest=set_at((0, "Layers"), {"a": 1})), ALL, "Layers",
                 id="Layers-dict"),
    pytest.param(lambda: docker(manifest=set_at((0, "RepoTags"), "x:1")), ALL, "RepoTags",
                 id="RepoTags-string"),
    pytest.param(lambda: docker(manifest=lambda d: []), ALL, "no image",
                 id="manifest.json-empty"),
    pytest.param(lambda: docker(manifest=lambda d: b"[{"), ALL, "not valid JSON",
                 id="manifest.json-not-json"),
    pytest.param(lambda: docker(manifest=lambda d: deep(100_000)), ALL, "nested",
                 id="manifest.json-100000-deep"),
    pytest.param(lambda: with_member(docker(), "manifest.json", ("sym", "/etc/passwd")), ALL,
                 "symbolic link", id="manifest.json-symlink"),
    pytest.param(lambda: with_member(docker(), "manifest.json", ("hard", "config.json")), ALL,
                 "hard link", id="manifest.json-hardlink"),
    # names and tags with line breaks (found by tests/test_fuzz_image.py): no line of their own
    pytest.param(lambda: docker(manifest=set_at((0, "Config"), "\r")), ALL, "Config",
                 id="Config-a-line-break"),
    pytest.param(lambda: docker(manifest=set_at((0, "Layers"), ["x\nerror: fake"])), ALL,
                 "Layers[0]", id="Layers-a-line-break"),
    pytest.param(lambda: docker(manifest=lambda d: [d[0], {**d[0], "RepoTags": [
        "b:1\nerror: fake"]}]), tuple(c for c in ALL if c != "verify"),
                 "holds 2 images|docker", id="RepoTags-a-line-break"),
    # image configs of the wrong shape
    pytest.param(lambda: docker(config=lambda c: b"{not json"), ALL, "config.json",
                 id="config-not-json"),
    pytest.param(lambda: docker(config=lambda c: [c]), ALL, "config.json",
                 id="config-a-list"),
    pytest.param(lambda: docker(config=set_at(("config", "Env"), ["A=1", 2])), ALL, "Env[1]",
                 id="Env-integers"),
    pytest.param(lambda: docker(config=set_at(("config", "Env"), ["\n"])), ALL, "Env[0]",
                 id="Env-not-KEY=VALUE"),
    pytest.param(lambda: docker(config=set_at(("config", "Env"), ["=x"])), ALL, "Env[0]",
                 id="Env-no-key"),
    pytest.param(lambda: docker(config=set_at(("config", "Entrypoint"), "/hello")), ALL,
                 "Entrypoint", id="Entrypoint-string"),
    pytest.param(lambda: docker(config=set_at(("config", "Labels"), {"a": 1})), ALL,
                 "Labels", id="Labels-number"),
    pytest.param(lambda: docker(config=set_at(("config", "ExposedPorts"), ["80/tcp"])), ALL,
                 "ExposedPorts", id="ExposedPorts-list"),
    pytest.param(lambda: docker(config=set_at(("rootfs", "diff_ids"), "sha256:x")), ALL,
                 "diff_ids", id="diff_ids-string"),
    pytest.param(lambda: docker(config=set_at(("rootfs", "diff_ids"), ["md5:abc"])), ALL,
                 "not a sha256 or sha512 digest", id="diff_id-not-a-digest"),
    pytest.param(lambda: docker(config=lambda c: encode(c)[:-1] + b', "x": ' + deep(5000)
                                + b"}"), ALL, "nested", id="config-5000-deep"),
    pytest.param(lambda: docker(config=lambda c: {**c, "pad": "x" * (MAX_CONFIG + 1)}), ALL,
                 "more than", id="config-over-the-cap"),
    # layers damaged or changed
    pytest.param(lambda: docker(layer=flip(GZ, len(GZ) // 2)), ALL, "layer.tar",
                 id="docker-layer-byte-changed"),
    pytest.param(lambda: tar_and_config(flip(PLAIN, 600), PLAIN), ALL, "diff_id",
                 id="plain-layer-byte-changed"),
    pytest.param(lambda: tar_and_config(truncated(GZ), PLAIN), ALL, "layer.tar",
                 id="truncated-gzip"),
    pytest.param(lambda: tar_and_config(truncated(zstandard.ZstdCompressor().compress(PLAIN)),
                                        PLAIN), ALL, "layer.tar", id="truncated-zstd"),
    pytest.param(lambda: tar_and_config(PLAIN[:700], PLAIN[:700]), ALL, "layer.tar",
                 id="truncated-tar-consistent-digest"),
    pytest.param(lambda: docker(config=set_at(("rootfs", "diff_ids"), [])), ALL, "diff_ids",
                 id="diff_ids-too-few"),
    # docker archives: each layer's uncompressed content against the config's diff_ids
    pytest.param(lambda: docker_layers([PLAIN, flip(OTHER, 600)], [PLAIN, OTHER]), ALL,
                 "/layer.tar", id="docker-classic-second-layer-byte-changed"),
    pytest.param(lambda: docker_layers([gzip.compress(PLAIN, mtime=0),
                                        gzip.compress(flip(OTHER, 600), mtime=0)],
                                       [PLAIN, OTHER]), ALL, "diff_id",
                 id="docker-classic-gzip-layer-content-changed"),
    pytest.param(lambda: docker_layers([PLAIN, flip(OTHER, 600)], [PLAIN, OTHER], True),
                 READERS, "diff_id", id="docker25-layer-changed-and-renamed"),
    pytest.param(lambda: docker_layers([PLAIN], [PLAIN], config=without_rootfs), ALL,
                 "rootfs.diff_ids", id="docker-config-without-rootfs"),
    pytest.param(lambda: docker_layers([PLAIN], [PLAIN], True, config=set_at(
        ("rootfs",), {"type": "layers"})), NO_PUSH, "rootfs.diff_ids",
                 id="docker25-config-rootfs-without-diff_ids"),
    pytest.param(lambda: oci(config=without_rootfs), NO_PUSH, "rootfs.diff_ids",
                 id="oci-config-without-rootfs"),
    # OCI index and manifests of the wrong shape
    pytest.param(lambda: oci(index=lambda t, m: {"manifests": {"a": t["manifests"][0]}}), ALL,
                 "index.json", id="index-manifests-dict"),
    pytest.param(lambda: oci(index=lambda t, m: None), ALL, "index.json", id="index-null"),
    pytest.param(lambda: oci(index=lambda t, m: deep(100_000)), ALL, "index.json",
                 id="index-100000-deep"),
    pytest.param(lambda: oci(index=self_listing), ALL, "sha256", id="index-lists-itself"),
    pytest.param(lambda: oci(index=chain(MAX_NESTING + 1)), ALL, "nested more than",
                 id="index-chain-one-too-deep"),
    pytest.param(lambda: oci(index=lambda t, m: set_at(("manifests", 0, "digest"),
                                                       "sha256:../../etc/passwd")(t)), ALL,
                 "digest", id="digest-climbs"),
    pytest.param(lambda: oci(index=lambda t, m: set_at(("manifests", 0, "digest"),
                                                       "sha256:abc")(t)), ALL,
                 "not a sha256", id="digest-short"),
    pytest.param(lambda: oci(index=lambda t, m: set_at(("manifests", 0, "size"), -1)(t)), ALL,
                 "size", id="size-negative"),
    pytest.param(lambda: oci(index=lambda t, m: set_at(("manifests", 0, "size"), "12")(t)),
                 ALL, "size", id="size-string"),
    pytest.param(lambda: oci(index=lambda t, m: set_at(("manifests", 0, "annotations"),
                                                       {"a": 1})(t)), ALL, "annotations",
                 id="annotation-number"),
    pytest.param(lambda: oci(index=lambda t, m: set_at(("manifests", 0, "platform"),
                                                       "linux/amd64")(t)), ALL, "platform",
                 id="platform-string"),
    pytest.param(lambda: oci(manifest=set_at(("config",), "sha256:x")), ALL, "config",
                 id="manifest-config-string"),
    pytest.param(lambda: oci(manifest=set_at(("layers",), {"0": 1})), ALL, "layers",
                 id="manifest-layers-dict"),
    pytest.param(lambda: oci(manifest=lambda d: set_at(("layers", 0, "size"),
                                                       d["layers"][0]["size"] + 1)(d)),
                 ALL, "bytes", id="layer-size-wrong"),
    pytest.param(lambda: oci(config=set_at(("config", "Cmd"), [1])), ALL, "Cmd[0]",
                 id="oci-Cmd-integer"),
    pytest.param(lambda: oci(index=lambda t, m: set_at(("manifests",), [])(t)), ALL,
                 "no image|no manifests", id="index-no-image"),
    pytest.param(lambda: replace_layer(oci(), GZ, flip(GZ, len(GZ) // 2)), NO_PUSH,
                 "sha256", id="oci-layer-byte-changed"),
    pytest.param(lambda: with_member(oci(), layer_blob_name(), ("sym", "/etc/passwd")), ALL,
                 "symbolic link", id="blob-symlink"),
    pytest.param(lambda: with_member(oci(), layer_blob_name(), ("hard", "index.json")), ALL,
                 "hard link", id="blob-hardlink"),
]


def run(*words: str) -> tuple[int, list[str], str]:
    done = slimmer(*words)
    return done.returncode, done.stderr.splitlines(), done.stderr


def command(name: str, archive: str, good: str, out: str) -> list[str]:
    return {
        "slim": ["slim", archive, "-o", out],
        "verify": ["verify", archive],
        "inspect": ["inspect", archive],
        "why": ["why", archive, "/hello"],
        "diff": ["diff", archive, good],
        "index": ["index", archive, "-o", out, "--tag", "m:1"],
        "push": ["push", archive, f"{CLOSED_PORT}/x:1", "--insecure"],
    }[name]


def check_refused(archive: Path, commands: tuple[str, ...], word: str, good: Path,
                  tmp_path: Path) -> None:
    for name in commands:
        out = tmp_path / f"out-{name}.tar"
        code, lines, err = run(*command(name, str(archive), str(good), str(out)))
        errors = [line for line in lines if line.startswith("error:")]
        assert code == 1, (name, err)
        assert len(errors) == 1 and "Traceback" not in err, (name, err)
        assert str(archive) in errors[0], (name, errors[0])
        if name not in ("index", "push") or "docker" not in errors[0]:
            said = any(w in errors[0] for w in word.split("|"))
            assert said or name == "verify", (name, word, errors[0])
        assert not out.exists(), name


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_members(tmp_path_factory.mktemp("good") / "good.tar", oci())


@pytest.mark.parametrize(("case", "commands", "word"), CASES)
def test_malformed_input_is_refused_in_one_line(case: Case, commands: tuple[str, ...],
                                                word: str, good: Path,
                                                tmp_path: Path) -> None:
    archive = write_members(tmp_path / "case.tar", case())
    check_refused(archive, commands, word, good, tmp_path)


def test_the_case_count() -> None:
    assert len(CASES) >= 30


def test_the_unmodified_images_are_good(tmp_path: Path) -> None:
    """Each case differs from a good image by its one change."""
    for name, members in (("docker", docker()), ("oci", oci()),
                          ("nested", oci(index=chain(MAX_NESTING)))):
        archive = write_members(tmp_path / f"{name}.tar", members)
        found = verify(str(archive))
        assert found.ok, (name, found.problems)
        with open_image(str(archive)) as image:
            assert image.root.read_bytes("/hello") == b"hi\n" * 1000
    for layout in (False, True):
        archive = write_members(tmp_path / "d.tar", docker_layers([PLAIN, OTHER], [PLAIN, OTHER],
                                                          layout))
        assert verify(str(archive)).ok, layout
        with open_image(str(archive)) as image:
            assert (image.root.read_bytes("/bin/tool") or b"").startswith(b"\x7fELF")
    for compress in (gzip.compress, zstandard.ZstdCompressor().compress, bytes):
        archive = write_members(tmp_path / "c.tar", tar_and_config(compress(PLAIN), PLAIN))
        with open_image(str(archive)) as image:
            assert "/etc/motd" in image.tree


# ---- directories ---------------------------------------------------------------------------


def test_layout_directories_are_read_by_verify_inspect_and_why(
        tmp_path: Path) -> None:
    layout = write_dir(tmp_path / "layout", oci())
    for words in (["verify", str(layout)], ["inspect", str(layout)],
                  ["why", str(layout), "/hello"]):
        code, _, err = run(*words)
        assert code == 0, (words, err)


@pytest.mark.parametrize("where", ["index.json", "blob", "blobs-directory"])
def test_symlinks_in_a_layout_directory_are_refused(
        where: str, tmp_path: Path, good: Path) -> None:
    members = oci()
    outside = tmp_path / "outside"
    outside.mkdir()
    if where == "index.json":
        (outside / "index.json").write_bytes(encode(members["index.json"]))
        members["index.json"] = ("sym", str(outside / "index.json"))
    elif where == "blob":
        (outside / "layer").write_bytes(GZ)
        members[layer_blob_name()] = ("sym", str(outside / "layer"))
    layout = write_dir(tmp_path / "layout", members)
    if where == "blobs-directory":
        os.rename(layout / "blobs", outside / "blobs")
        (layout / "blobs").symlink_to(outside / "blobs")
    check_refused(layout, ALL, "symbolic link", good, tmp_path)


def test_a_1_gib_config_is_refused_before_it_is_read(
        tmp_path: Path, good: Path) -> None:
    """A sparse 1 GiB config: refused by its size, not read (it would cost GBs of memory)."""
    huge_hex = "b" * 64
    members = oci(manifest=set_at(("config",), {"mediaType": OCI_CONFIG,
                                                "digest": f"sha256:{huge_hex}",
                                                "size": 1 << 30}))
    layout = write_dir(tmp_path / "layout", members)
    with open(layout / "blobs" / "sha256" / huge_hex, "wb") as fh:
        fh.truncate(1 << 30)
    check_refused(layout, ALL, "allowed", good, tmp_path)


def test_a_malformed_slimmer_json_is_refused_by_inspect_and_why(
        tmp_path: Path, good: Path) -> None:
    for bad in ({"files": {"a": 1}}, {"files": [{"path": 1, "reason": "x"}]}, b"{"):
        archive = write_members(tmp_path / "case.tar", {**oci(), "slimmer.json": encode(bad)})
        check_refused(archive, ("inspect", "why"), "slimmer.json", good, tmp_path)


def test_verify_fails_on_an_archive_without_an_image(tmp_path: Path) -> None:
    for members in (oci(index=lambda t, m: {"schemaVersion": 2, "manifests": []}),
                    docker(manifest=lambda d: [])):
        found = verify(str(write_members(tmp_path / "empty.tar", members)))
        assert not found.ok and any("holds no image" in p for p in found.problems)
