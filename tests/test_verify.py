"""`slimmer verify` finds what is wrong in an archive, and passes archives that are right."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from slimmer.image.verify import verify
from tests.support.archives import docker_archive, rewrite
from tests.support.cli import run as slimmer


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "jq.tar"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def layer_of(archive: Path) -> str:
    with tarfile.open(archive) as t:
        return str(json.load(t.extractfile("manifest.json"))[0]["Layers"][0])  # type: ignore[arg-type]


def test_a_good_archive_passes(good: Path) -> None:
    found = verify(str(good))
    assert found.ok and found.checked == 3 and found.layers == 1, found.problems
    done = slimmer("verify", str(good))
    assert done.returncode == 0 and done.stdout.startswith("ok: ")


def test_corrupted_blob(good: Path, tmp_path: Path) -> None:
    layer = layer_of(good)

    def flip(name: str, data: bytes) -> bytes:
        return data[:100] + bytes([data[100] ^ 1]) + data[101:] if name == layer else data

    bad = rewrite(good, tmp_path / "bad.tar", flip)
    found = verify(str(bad))
    assert any(p.startswith(f"{layer}: content hashes to sha256:") for p in found.problems)
    done = slimmer("verify", str(bad))
    assert done.returncode == 1 and "problem: " in done.stdout


def test_a_layout_directory_is_verified(good: Path, tmp_path: Path) -> None:
    """The same checks on the archive unpacked into an OCI layout directory."""
    layout = tmp_path / "layout"
    with tarfile.open(good) as t:
        t.extractall(layout)  # our own archive (this Python has no extraction filter)
    found = verify(str(layout))
    assert found.ok and found.checked == 3 and found.layers == 1, found.problems
    layer = layer_of(good)
    data = (layout / layer).read_bytes()
    (layout / layer).write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    found = verify(str(layout))
    assert any(p.startswith(f"{layer}: content hashes to sha256:") for p in found.problems)


def test_wrong_size(good: Path, tmp_path: Path) -> None:
    def grow(name: str, data: bytes) -> bytes:
        if name != "index.json":
            return data
        index = json.loads(data)
        index["manifests"][0]["size"] += 7
        return json.dumps(index).encode()

    found = verify(str(rewrite(good, tmp_path / "size.tar", grow)))
    assert any("in the descriptor" in p and "in the blob" in p for p in found.problems)


def test_wrong_diff_id(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "d.tar", [[("file", "a", b"a")]], config={
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    found = verify(str(archive))
    assert any("is not the config's diff_id sha256:000" in p for p in found.problems)


def test_manifest_json_pointing_at_nothing(good: Path, tmp_path: Path) -> None:
    def retarget(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        doc = json.loads(data)
        doc[0]["Layers"] = ["blobs/sha256/" + "f" * 64]
        return json.dumps(doc).encode()

    found = verify(str(rewrite(good, tmp_path / "m.tar", retarget)))
    assert f"manifest.json: points at blobs/sha256/{'f' * 64}, which is missing" in found.problems


def test_problems_naming_image_values_stay_one_line(good: Path, tmp_path: Path) -> None:
    """A platform in index.json holding a line break and an escape (found by the image fuzz
    target): verify's problem line shows them escaped instead of printing a fake line."""

    def evil(name: str, data: bytes) -> bytes:
        if name != "index.json":
            return data
        index = json.loads(data)
        index["manifests"][0]["platform"]["architecture"] = "amd64\nerror: fake\x1b[31m"
        return json.dumps(index).encode()

    bad = rewrite(good, tmp_path / "evil.tar", evil)
    done = slimmer("verify", str(bad))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.startswith("problem: ") and "the index says" in line for line in lines)
    assert all(line.startswith(("problem: ", "note: ")) and line.isprintable()
               for line in lines), lines
