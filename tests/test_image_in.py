"""Reading images into a merged root: formats, whiteouts, and hostile archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from slimmer.image.merge import HostileArchive
from slimmer.image.merged import open_image
from slimmer.tree import Dir, File, Symlink
from tests.support.archives import Member, docker_archive, layer_tar
from tests.support.cli import error_line
from tests.support.cli import run as slimmer
from tests.support.host import need_tool


def test_layers_merge_with_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "a.tar", [
        [("dir", "etc", b""), ("file", "etc/keep", b"k"), ("file", "etc/gone", b"g"),
         ("dir", "opt/d", b""), ("file", "opt/d/old", b"o"), ("dir", "opt/d/sub", b""),
         ("file", "opt/d/sub/deep", b"x"), ("file", "usr/bin/tool", b"v1"),
         ("sym", "bin", "usr/bin"), ("fifo", "run/pipe", b"")],
        [("file", "etc/.wh.gone", b""), ("file", "opt/d/.wh..wh..opq", b""),
         ("file", "opt/d/new", b"n"), ("file", "./usr/bin/tool", b"v2"),
         ("hard", "usr/bin/tool2", "usr/bin/tool")],
    ])
    with open_image(str(archive)) as image:
        tree = image.tree
        assert "/etc/keep" in tree and "/etc/gone" not in tree
        assert "/opt/d/new" in tree
        assert not any(p.startswith("/opt/d/old") or p.startswith("/opt/d/sub")
                       for p in tree.paths())
        tool = tree.get("/usr/bin/tool")
        assert isinstance(tool, File) and tool.source is not None
        assert Path(tool.source).read_bytes() == b"v2"
        assert tree.get("/usr/bin/tool2") == tool  # a hard link shares the content
        assert tree.get("/bin") == Symlink("usr/bin")
        assert "/run/pipe" not in tree and any("FIFO" in n for n in image.notes)
        assert image.root.read_bytes("/bin/tool") == b"v2"  # resolved inside the image
        spill = os.path.dirname(tool.source)
    assert not os.path.exists(spill)  # the spilled contents go with the `with` block


@pytest.mark.parametrize(("members", "message"), [
    ([("file", "../../etc/evil", b"x")], "climbs out with '..'"),
    ([("file", "/etc/evil", b"x")], "has an absolute name"),
    ([("sym", "evil", "/etc"), ("file", "evil/passwd", b"x")],
     "evil/passwd would be written through a symlink"),
    ([("hard", "stolen", "/etc/passwd")], "has an absolute name"),
    ([("hard", "stolen", "../../../../etc/shadow")], "climbs out"),
    ([("hard", "stolen", "nowhere")], "is a hard link to 'nowhere', which is no file"),
])
def test_hostile_archives_are_refused(tmp_path: Path, members: list[Member],
                                      message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    before = sorted(os.listdir(outside))
    archive = docker_archive(tmp_path / "h.tar", [members])
    with pytest.raises(HostileArchive, match=message), open_image(str(archive)):
        pass
    assert sorted(os.listdir(outside)) == before
    assert not os.path.exists(tmp_path / "etc")


def test_hostile_archive_gives_a_one_line_error(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "h.tar", [[("file", "../x", b"x")]])
    error_line(slimmer("inspect", str(archive)), "climbs out")


def test_not_an_archive_gives_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not a tar\n" * 100)
    done = slimmer("slim", str(junk), "-o", str(tmp_path / "out.tar"))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: {junk}: not an image archive (neither a tar file nor a layout directory)"]
    assert not (tmp_path / "out.tar").exists()


def test_choosing_among_images(tmp_path: Path) -> None:
    archive = tmp_path / "two.tar"
    with tarfile.open(archive, "w") as tar:
        def put(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for i, name in ((1, "one"), (2, "two")):
            data = layer_tar([("file", name, str(i).encode())])
            put(f"l{i}.tar", data)
            put(f"c{i}.json", json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
                "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]}}).encode())
        put("manifest.json", json.dumps([
            {"Config": "c1.json", "RepoTags": ["a:1"], "Layers": ["l1.tar"]},
            {"Config": "c2.json", "RepoTags": ["b:2"], "Layers": ["l2.tar"]}]).encode())
    with pytest.raises(Exception, match="holds 2 images \\(a:1; b:2\\): choose one"), \
            open_image(str(archive)):
        pass
    with open_image(str(archive), "b:2") as image:
        assert "/two" in image.tree and "/one" not in image.tree
    with pytest.raises(Exception, match="no image c"), open_image(str(archive), "c"):
        pass


def test_our_own_archives_in_every_form(tmp_path: Path) -> None:
    for compress in ("gzip", "zstd", "none"):
        out = tmp_path / f"jq-{compress}.tar"
        done = slimmer("pack", "/usr/bin/jq", "-o", str(out), "--compress", compress)
        assert done.returncode == 0, done.stderr
        with open_image(str(out)) as image:
            jq = image.tree.get("/usr/bin/jq")
            assert isinstance(jq, File) and jq.size == os.path.getsize("/usr/bin/jq")
            assert image.source.config["config"]["Entrypoint"] == ["/usr/bin/jq"]
            assert isinstance(image.tree.get("/tmp"), Dir)
    # an OCI layout directory, made by skopeo from the archive
    skopeo = need_tool("skopeo")
    layout = tmp_path / "layout"
    subprocess.run([skopeo, "copy", f"oci-archive:{tmp_path}/jq-gzip.tar",
                    f"oci:{layout}:jq"], check=True, capture_output=True)
    with open_image(str(layout)) as image:
        assert image.root.lookup("/lib/x86_64-linux-gnu/libjq.so.1") is not None
