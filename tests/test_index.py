"""`slimmer index` on host-made images of two platforms (amd64 jq, a static i386 program): the
layout it writes, reproducibility, and the inputs it refuses. The engines (podman, containerd,
Docker) and foreign architectures are in test_foreign.py."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from slimmer.image.index import BadBlob, DuplicatePlatform, NotAnImage, write_index
from slimmer.image.reference import parse_reference
from slimmer.image.verify import verify
from tests.support.archives import rewrite
from tests.support.cli import error_line
from tests.support.cli import run as slimmer
from tests.support.compile import main_source


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()  # type: ignore[union-attr]
                if m.isfile()}


def blob(files: dict[str, bytes], digest: str) -> Any:
    return json.loads(files[f"blobs/sha256/{digest.removeprefix('sha256:')}"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("index")
    source = work / "p32.c"
    source.write_text(main_source())
    p32 = work / "p32"
    subprocess.run(["gcc", "-m32", "-static", "-o", str(p32), str(source)], check=True)
    out = {"amd64": work / "jq.tar", "386": work / "p32.tar", "amd64-again": work / "jq2.tar"}
    for args in (["/usr/bin/jq", "-o", str(out["amd64"]), "--tag", "jq:1"],
                 [str(p32), "-o", str(out["386"]), "--tag", "p32:1"],
                 ["/usr/bin/jq", "-o", str(out["amd64-again"]), "--tag", "other:2",
                  "--env", "A=1"]):
        done = slimmer("pack", *args)
        assert done.returncode == 0, done.stderr
    return out


def test_the_index_lists_each_platform(images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "multi.tar"
    done = slimmer("index", str(images["amd64"]), str(images["386"]), "-o", str(out),
                   "--tag", "multi/app:2.0")
    assert done.returncode == 0, done.stderr
    files = members(out)
    single = [members(images["amd64"]), members(images["386"])]
    top = json.loads(files["index.json"])
    [entry] = top["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert entry["annotations"] == {"io.containerd.image.name": "docker.io/multi/app:2.0",
                                    "org.opencontainers.image.ref.name": "2.0"}
    assert f"index {entry['digest']}" in done.stdout
    inner = blob(files, entry["digest"])
    platforms = [m["platform"] for m in inner["manifests"]]
    assert platforms == [{"architecture": "amd64", "os": "linux"},
                         {"architecture": "386", "os": "linux"}]
    for desc, one in zip(inner["manifests"], single, strict=True):
        # the per-platform manifest is the single-platform archive's, byte for byte
        assert desc == {k: v for k, v in json.loads(one["index.json"])["manifests"][0].items()
                        if k != "annotations"}
        assert files[f"blobs/sha256/{desc['digest'][7:]}"] == one[
            f"blobs/sha256/{desc['digest'][7:]}"]
    blobs = [n for n in files if n.startswith("blobs/")]
    assert blobs == sorted(blobs) and len(blobs) == 7  # 2 x (manifest, config, layer) + index
    for name in blobs:
        assert hashlib.sha256(files[name]).hexdigest() == name.rsplit("/", 1)[1]
    docker = json.loads(files["manifest.json"])
    assert [e["RepoTags"] for e in docker] == [["multi/app:2.0", "multi/app:2.0-amd64"],
                                               ["multi/app:2.0-386"]]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    found = verify(str(out))
    assert found.ok and found.layers == 2, found.problems


def test_reproducible(images: dict[str, Path], tmp_path: Path) -> None:
    one, two = tmp_path / "1.tar", tmp_path / "2.tar"
    ref = parse_reference("m:1")
    inputs = [str(images["386"]), str(images["amd64"])]
    first = write_index(inputs, str(one), ref, epoch=1700000000)
    write_index(inputs, str(two), ref, epoch=1700000000)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as t:
        assert {m.mtime for m in t.getmembers()} == {1700000000}
    assert [i.name for i in first.images] == ["linux/386", "linux/amd64"]  # input order
    done = slimmer("index", *inputs, "-o", str(tmp_path / "3.tar"), "--tag", "m:1",
                   "--check-reproducible")
    assert done.returncode == 0 and "reproducible:" in done.stdout, done.stderr


def test_two_images_of_one_platform_are_refused(images: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.tar"
    out.write_bytes(b"old")
    error_line(slimmer("index", str(images["amd64"]), str(images["amd64-again"]), "-o",
                       str(out), "--tag", "m:1"), "both linux/amd64", "jq2.tar")
    assert out.read_bytes() == b"old"
    with pytest.raises(DuplicatePlatform):
        write_index([str(images["amd64"]), str(images["amd64-again"])], str(out),
                    parse_reference("m:1"))


def test_inputs_that_are_not_images(images: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    error_line(slimmer("index", str(text), "-o", str(tmp_path / "m.tar"), "--tag", "m:1"),
               "notes.txt", "not an image archive")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as t:
        t.add(text, "notes.txt")
    error_line(slimmer("index", str(plain), "-o", str(tmp_path / "m.tar"), "--tag", "m:1"),
               "plain.tar", "no index.json")
    docker_only = rewrite(images["amd64"], tmp_path / "docker.tar",
                          lambda name, data: None if name == "index.json" else data)
    done = slimmer("index", str(docker_only), "-o", str(tmp_path / "m.tar"), "--tag", "m:1")
    error_line(done, "docker.tar", "docker-archive without index.json", hint=True)
    assert "hint: skopeo copy docker-archive:" in done.stderr
    error_line(slimmer("index", str(tmp_path / "nope.tar"), "-o", str(tmp_path / "m.tar"),
                       "--tag", "m:1"), "nope.tar", "no such file")
    multi = tmp_path / "multi.tar"
    write_index([str(images["amd64"]), str(images["386"])], str(multi), parse_reference("m:1"))
    with pytest.raises(NotAnImage, match="holds 2 images"):
        write_index([str(multi)], str(tmp_path / "m2.tar"), parse_reference("m:1"))
    assert not (tmp_path / "m.tar").exists() and not (tmp_path / "m2.tar").exists()


def test_a_corrupted_layer_is_refused_and_the_output_kept(images: dict[str, Path],
                                                          tmp_path: Path) -> None:
    with tarfile.open(images["386"]) as t:
        layer = json.load(t.extractfile("manifest.json"))[0]["Layers"][0]  # type: ignore[arg-type]

    def flip(name: str, data: bytes) -> bytes:
        return data[:100] + bytes([data[100] ^ 1]) + data[101:] if name == layer else data

    bad = rewrite(images["386"], tmp_path / "bad.tar", flip)
    out = tmp_path / "m.tar"
    out.write_bytes(b"old")
    with pytest.raises(BadBlob, match=f"bad.tar: blob sha256:{layer.rsplit('/', 1)[1]} hashes"):
        write_index([str(images["amd64"]), str(bad)], str(out), parse_reference("m:1"))
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar", "m.tar"]  # no temp left


def test_verify_checks_an_index_archive(images: dict[str, Path], tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    write_index([str(images["amd64"]), str(images["386"])], str(good), parse_reference("m:1"))
    files = members(good)
    old = json.loads(files["index.json"])["manifests"][0]["digest"][7:]
    inner = blob(files, old)
    inner["manifests"][1]["platform"] = {"architecture": "arm64", "os": "linux"}
    new_inner = json.dumps(inner).encode()
    new = hashlib.sha256(new_inner).hexdigest()
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as t, tarfile.open(bad, "w") as out:
        for m in t.getmembers():
            data = t.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name == f"blobs/sha256/{old}":
                m.name, data = f"blobs/sha256/{new}", new_inner
            elif m.name == "index.json":
                doc = json.loads(data)
                doc["manifests"][0].update(digest=f"sha256:{new}", size=len(new_inner))
                data = json.dumps(doc).encode()
            elif m.name == "manifest.json":
                doc = json.loads(data)
                doc[1]["Layers"] = doc[0]["Layers"]
                data = json.dumps(doc).encode()
            m.size = len(data)
            out.addfile(m, io.BytesIO(data) if m.isfile() else None)
    config = json.loads(files["manifest.json"])[1]["Config"]
    assert verify(str(bad)).problems == [
        f"manifest {inner['manifests'][1]['digest']}: the index says linux/arm64/v8, its "
        "config linux/386",
        f"manifest.json: the entry for {config} is none of the index's images"]
