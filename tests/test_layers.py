"""`--layers auto|N`: the split rule (image/layering.py) on real programs of this host, the
archives it gives (a base layer that jq and curl share byte for byte, reproducible, read back
by verify, why, inspect, diff and slim), and the layered images run in Docker, podman and
containerd."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import subprocess
import tarfile
import uuid
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slimmer.assemble.assembly import assemble
from slimmer.assemble.options import BuildOptions
from slimmer.assemble.spec import ImageSpec
from slimmer.image.layering import BASE, GROUPS, assign, group_of, split
from slimmer.image.verify import verify
from slimmer.tree import Dir, File, FileTree, Symlink, TreeConflict
from tests.support.cli import run as slimmer
from tests.support.compile import Compile
from tests.support.engines import PODMAN_RUN, Docker, Podman, ctr_namespace
from tests.support.host import need_tool

# the host's curl: the libraries of FAMILIES it links, each a layer of its own
CURL_LAYERS = ["base", "libgcc_s", "zlib", "openssl", "zstd", "libffi", "libraries", "data",
               "app"]
PROGRAMS = ["/usr/bin/jq", "/usr/bin/curl", "/usr/bin/sha256sum", "/usr/bin/openssl",
            "/usr/bin/python3", "/usr/bin/sqlite3"]


def tree_of(program: str) -> FileTree:
    if not os.path.exists(program):
        need_tool(os.path.basename(program))
    return assemble(ImageSpec(), BuildOptions(programs=(program,))).tree


def layers_of(archive: Path) -> list[tuple[str, str, list[tarfile.TarInfo]]]:
    """(digest, history comment, tar members) of each layer, base first."""
    with tarfile.open(archive) as tar:
        def blob(digest: str) -> bytes:
            member = tar.extractfile("blobs/sha256/" + digest.split(":")[1])
            assert member is not None
            return member.read()

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        out = []
        for layer, history in zip(manifest["layers"], config["history"], strict=True):
            data = gzip.decompress(blob(layer["digest"]))
            with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                out.append((layer["digest"], history.get("comment", ""), inner.getmembers()))
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
        return out


def pack(tmp_path: Path, program: str, *args: str, name: str = "") -> Path:
    out = tmp_path / f"{name or os.path.basename(program)}.tar"
    done = slimmer("pack", program, "-o", str(out), *args)
    assert done.returncode == 0, done.stderr
    return out


# ---- the rule ------------------------------------------------------------------------------


def test_rule_by_path() -> None:
    lib = "/usr/lib/x86_64-linux-gnu"
    f = File(0o644, 1, data=b"x")
    assert group_of(f"{lib}/libc.so.6", f) == BASE
    assert group_of(f"{lib}/ld-linux-x86-64.so.2", f) == BASE
    assert group_of("/usr/lib64/ld-linux-x86-64.so.2", Symlink("x")) == BASE
    assert group_of("/lib/ld-musl-x86_64.so.1", f) == BASE
    assert group_of("/lib64", Symlink("usr/lib64")) == BASE
    assert group_of("/lib", Symlink("usr/lib")) == BASE
    assert GROUPS[group_of("/sbin", Symlink("usr/sbin"))] == "app"  # not in every image
    assert group_of("/tmp", Dir(0o1777)) == BASE
    assert GROUPS[group_of(f"{lib}/libssl.so.3", f)] == "openssl"
    assert GROUPS[group_of(f"{lib}/libcrypto.so.3", f)] == "openssl"
    assert GROUPS[group_of(f"{lib}/libz.so.1", Symlink("libz.so.1.2.13"))] == "zlib"
    assert GROUPS[group_of(f"{lib}/glibc-hwcaps/x86-64-v3/libz.so.1.2.13", f)] == "zlib"
    assert GROUPS[group_of(f"{lib}/libonig.so.5", f)] == "libraries"
    assert GROUPS[group_of(f"{lib}/libzz.so.1", f)] == "libraries"
    assert GROUPS[group_of("/usr/local/lib/libfoo.so", f)] == "libraries"
    assert GROUPS[group_of(f"{lib}/gconv/libJIS.so", f)] == "data"
    assert GROUPS[group_of(f"{lib}/gconv/gconv-modules", f)] == "data"
    assert GROUPS[group_of("/usr/lib/python3.11/os.py", f)] == "data"
    assert GROUPS[group_of("/usr/share/zoneinfo/UTC", f)] == "data"
    assert GROUPS[group_of("/etc/ssl/certs/ca-certificates.crt", f)] == "data"
    assert GROUPS[group_of("/usr/bin/jq", f)] == "app"
    assert GROUPS[group_of("/app/lib/libown.so", f)] == "app"  # a build tree's own library
    assert GROUPS[group_of("/etc/passwd", f)] == "app"
    assert GROUPS[group_of("/etc/ld.so.cache", f)] == "app"
    assert GROUPS[group_of("/usr/bin/python3", Symlink("python3.11"))] == "app"


@pytest.mark.parametrize("program", PROGRAMS, ids=os.path.basename)
def test_every_entry_in_exactly_one_layer(program: str) -> None:
    """Files and symlinks: in one layer each; directories: in each layer that holds something
    under them, with the tree's own header; nothing else."""
    tree = tree_of(program)
    for count in (None, 2, 3):
        parts = split(tree, count)
        assert 1 < len(parts) <= (count or len(GROUPS))
        seen: Counter[str] = Counter()
        for part in parts:
            assert len(part.tree) > 0
            for path, entry in part.tree.items():
                assert entry == tree.get(path), path  # the same header in every layer
                if not isinstance(entry, Dir):
                    seen[path] += 1
                else:
                    assert part.tree.children(path) or path not in {
                        p.rpartition("/")[0] for p in tree.paths()}, path
        wanted = {p for p, e in tree.items() if not isinstance(e, Dir)}
        assert set(seen) == wanted and set(seen.values()) == {1}
        dirs = {p for part in parts for p, e in part.tree.items() if isinstance(e, Dir)}
        assert dirs == {p for p, e in tree.items() if isinstance(e, Dir)}


COMPONENTS = ["usr", "lib", "lib64", "x86_64-linux-gnu", "glibc-hwcaps", "share", "etc", "ssl",
              "app", "bin", "libc.so.6", "libssl.so.3", "libz.so.1", "libfoo.so.2", "data.txt",
              "ld-linux-x86-64.so.2", "tmp", "gconv", "python3.11"]


@st.composite
def trees(draw: st.DrawFn) -> FileTree:
    """Trees of files, symlinks, directories and hard links on paths made of names that the
    rule looks at."""
    tree = FileTree()
    for _ in range(draw(st.integers(1, 30))):
        path = "/" + "/".join(draw(st.lists(st.sampled_from(COMPONENTS), min_size=1,
                                            max_size=5)))
        kind = draw(st.sampled_from(["file", "link", "dir", "hard"]))
        entry: Dir | File | Symlink = (
            File(0o644, 1, data=b"x") if kind == "file" else
            Symlink("target") if kind == "link" else
            Dir(draw(st.sampled_from([0o755, 0o700, 0o1777]))) if kind == "dir" else
            File(0o755, 2, data=b"hl", node=draw(st.sampled_from(["n1", "n2"]))))
        with contextlib.suppress(TreeConflict):  # taken by another kind, or under a file
            tree.add(path, entry, "fuzz")
    return tree


@settings(max_examples=300, deadline=None)
@given(trees(), st.one_of(st.none(), st.integers(1, 6)))
def test_split_invariants(tree: FileTree, count: int | None) -> None:
    """Whatever the tree: every entry that is not a directory is in exactly one layer, with
    the names of one node together; every directory in the layers is the tree's, and each
    layer holds the directories above what it holds."""
    parts = split(tree, count)
    assert 1 <= len(parts) <= (count or len(GROUPS))
    where: dict[str, int] = {}
    for i, part in enumerate(parts):
        for path, entry in part.tree.items():
            assert entry == tree.get(path)
            parent = path.rpartition("/")[0]
            assert not parent or isinstance(part.tree.get(parent), Dir)
            if not isinstance(entry, Dir):
                assert path not in where
                where[path] = i
    assert set(where) == {p for p, e in tree.items() if not isinstance(e, Dir)}
    nodes: dict[str, int] = {}
    for path, layer in where.items():
        found = tree.get(path)
        if isinstance(found, File) and found.node is not None:
            assert nodes.setdefault(found.node, layer) == layer
    dirs = {p for part in parts for p, e in part.tree.items() if isinstance(e, Dir)}
    assert dirs == {p for p, e in tree.items() if isinstance(e, Dir)}


def test_hard_links_stay_together() -> None:
    tree = FileTree()
    node = File(0o755, 3, data=b"abc", node="n1")
    tree.add("/usr/lib/x86_64-linux-gnu/libx.so.1", node, "r")
    tree.add("/usr/bin/x", node, "r")
    groups = assign(tree)
    assert groups["/usr/bin/x"] == groups["/usr/lib/x86_64-linux-gnu/libx.so.1"] == GROUPS.index(
        "app")


def test_layers_n_merges_the_least_shared() -> None:
    tree = tree_of("/usr/bin/curl")
    auto = [p.name for p in split(tree, None)]
    assert auto == CURL_LAYERS
    assert [p.name for p in split(tree, 3)] == ["base", "libgcc_s", "+".join(CURL_LAYERS[2:])]
    assert [p.name for p in split(tree, 2)] == ["base", "+".join(CURL_LAYERS[1:])]
    assert [p.name for p in split(tree, 9)] == auto == [p.name for p in split(tree, 127)]
    assert [p.name for p in split(tree, 8)] == [*auto[:7], "data+app"]
    assert split(tree, 1)[0].tree is tree


# ---- archives ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("layered")
    return {name: pack(where, f"/usr/bin/{name}", "--layers", "auto")
            for name in ("jq", "curl", "python3")}


def test_jq_and_curl_share_their_base_layer(layered: dict[str, Path]) -> None:
    jq, curl = layers_of(layered["jq"]), layers_of(layered["curl"])
    assert [c for _, c, _ in jq] == ["base", "libraries", "app"]
    assert [c for _, c, _ in curl] == CURL_LAYERS
    python3 = layers_of(layered["python3"])
    assert jq[0][0] == curl[0][0] == python3[0][0]
    # the libraries of FAMILIES the programs share are the same layers, in the same place
    assert [(d, c) for d, c, _ in curl[1:4]] == [(d, c) for d, c, _ in python3[1:4]]
    assert [c for _, c, _ in curl[1:4]] == ["libgcc_s", "zlib", "openssl"]
    assert {d for d, _, _ in jq[1:]}.isdisjoint(d for d, _, _ in curl[1:])
    names = {m.name for m in jq[0][2]}
    assert {"usr/lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "lib64", "tmp", "root", "home/nonroot"} <= names
    assert not any(n.endswith(("/jq", "/curl", "passwd")) for n in names)
    # a file is never in two layers; a directory repeated has one header everywhere
    for layers in (jq, curl):
        files = Counter(m.name for _, _, members in layers for m in members if not m.isdir())
        assert set(files.values()) == {1}
        headers: dict[str, tuple[int, int, int, float]] = {}
        for _, _, members in layers:
            for m in members:
                if m.isdir():
                    key = (m.mode, m.uid, m.gid, m.mtime)
                    assert headers.setdefault(m.name, key) == key, m.name


def test_one_layer_is_the_default_and_unchanged(layered: dict[str, Path], tmp_path: Path) -> None:
    plain = pack(tmp_path, "/usr/bin/jq", name="plain")
    one = pack(tmp_path, "/usr/bin/jq", "--layers", "1", name="one")
    assert plain.read_bytes() == one.read_bytes()
    assert len(layers_of(plain)) == 1 and layers_of(plain)[0][1] == ""
    two = layers_of(pack(tmp_path, "/usr/bin/jq", "--layers", "2", name="two"))
    assert [c for _, c, _ in two] == ["base", "libraries+app"]
    assert two[0][0] == layers_of(layered["jq"])[0][0]


def test_a_new_version_changes_only_the_app_layer(tmp_path: Path, cc: Compile) -> None:
    source = ("#include <math.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
              "int main(int c, char **v) {{ printf(\"{} %f\\n\", sqrt(atof(v[c - 1]))); "
              "return 0; }}\n")
    layers = []
    for version in ("1.0", "1.1"):
        program = cc(f"v{version}/app", source.format(version), "-lm")
        layers.append(layers_of(pack(tmp_path, str(program), "--layers", "auto",
                                     name=f"app-{version}")))
    old, new = layers
    assert [c for _, c, _ in old] == [c for _, c, _ in new] == ["base", "libraries", "app"]
    assert [d for d, _, _ in old[:2]] == [d for d, _, _ in new[:2]]
    assert old[2][0] != new[2][0]


def test_layered_is_reproducible(layered: dict[str, Path], tmp_path: Path) -> None:
    again = pack(tmp_path, "/usr/bin/curl", "--layers", "auto", name="again")
    assert again.read_bytes() == layered["curl"].read_bytes()
    done = slimmer("pack", "/usr/bin/jq", "--layers", "auto", "-o", str(tmp_path / "r.tar"),
                   "--check-reproducible")
    assert done.returncode == 0, done.stderr
    assert re.search(r"archive [0-9.]+ MB in 3 layers$", done.stdout.splitlines()[0])
    assert "reproducible:" in done.stdout


def test_verify_why_inspect_diff_read_layered_images(layered: dict[str, Path],
                                                     tmp_path: Path) -> None:
    found = verify(str(layered["curl"]))
    assert found.ok and found.layers == len(CURL_LAYERS), found.problems
    why = slimmer("why", str(layered["jq"]), "/usr/lib/x86_64-linux-gnu/libonig.so.5")
    assert why.returncode == 0 and why.stdout.splitlines()[-1] == "    /usr/bin/jq: program"
    plain = pack(tmp_path, "/usr/bin/jq", name="plain")
    layered_doc = json.loads(slimmer("inspect", "--json", str(layered["jq"])).stdout)
    plain_doc = json.loads(slimmer("inspect", "--json", str(plain)).stdout)
    assert "layers" not in plain_doc
    assert [(la["digest"], la["comment"]) for la in layered_doc.pop("layers")] == [
        (d, c) for d, c, _ in layers_of(layered["jq"])]
    assert layered_doc == plain_doc  # the same files, sizes and reasons
    text = slimmer("inspect", str(layered["jq"])).stdout.splitlines()
    assert text[-3].startswith("layer 1 (base): sha256:")
    assert text[-1].startswith("layer 3 (app): sha256:")
    diff = slimmer("diff", str(plain), str(layered["jq"]))
    assert diff.returncode == 1
    assert [line.split(":")[0] for line in diff.stdout.splitlines()] == ["changed history"]


def test_sbom_and_index_of_layered_images(layered: dict[str, Path], tmp_path: Path) -> None:
    plain_sbom, layered_sbom = tmp_path / "plain.spdx.json", tmp_path / "layered.spdx.json"
    pack(tmp_path, "/usr/bin/jq", "--sbom", str(plain_sbom), name="p")
    pack(tmp_path, "/usr/bin/jq", "--sbom", str(layered_sbom), "--layers", "auto", name="l")
    assert plain_sbom.read_bytes() == layered_sbom.read_bytes()
    out = tmp_path / "multi.tar"
    done = slimmer("index", str(layered["jq"]), "-o", str(out), "--tag", "jq:multi")
    assert done.returncode == 0, done.stderr
    assert verify(str(out)).ok


def test_slim_reads_a_layered_image_and_writes_layers(layered: dict[str, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "slim.tar"
    done = slimmer("slim", str(layered["curl"]), "-o", str(out), "--layers", "auto")
    assert done.returncode == 0, done.stderr
    assert [c for _, c, _ in layers_of(out)] == CURL_LAYERS
    # the same image as slimming the one-layer archive gives, in layers
    plain = pack(tmp_path, "/usr/bin/curl", name="plain")
    plain_out = tmp_path / "slim-plain.tar"
    done = slimmer("slim", str(plain), "-o", str(plain_out))
    assert done.returncode == 0, done.stderr
    slimmed = json.loads(slimmer("inspect", "--json", str(out)).stdout)
    assert [la["comment"] for la in slimmed.pop("layers")] == CURL_LAYERS
    assert slimmed == json.loads(slimmer("inspect", "--json", str(plain_out)).stdout)


def test_bad_layers_value(tmp_path: Path) -> None:
    done = slimmer("pack", "/usr/bin/jq", "-o", str(tmp_path / "x.tar"), "--layers", "0")
    assert done.returncode == 2 and "--layers" in done.stderr and "auto" in done.stderr
    assert not (tmp_path / "x.tar").exists()


# ---- engines -------------------------------------------------------------------------------

RUNS = {"jq": ([".a | add"], b'{"a": [1, 2, 3]}', b"6\n"),  # input through stdin
        "curl": (["-s", "file:///etc/passwd"], b"", b"nonroot:x:65532")}


def tagged(tmp_path: Path, name: str) -> tuple[Path, str]:
    tag = f"slimmer-layers/{name}:{uuid.uuid4().hex[:12]}"
    out = tmp_path / f"{name}-tagged.tar"
    done = slimmer("pack", f"/usr/bin/{name}", "--layers", "auto", "-o", str(out), "--tag", tag)
    assert done.returncode == 0, done.stderr
    return out, tag


@pytest.mark.e2e
def test_layered_images_run_in_docker(docker: Docker, tmp_path: Path) -> None:
    for name, (args, stdin, expect) in RUNS.items():
        archive, tag = tagged(tmp_path, name)
        with docker.loaded(archive) as loaded:
            assert loaded == tag
            assert expect in docker.container(tag, *args, input=stdin)
            layers = json.loads(docker.run("image", "inspect", tag).stdout)[0]["RootFS"]
            assert len(layers["Layers"]) == len(layers_of(archive))


@pytest.mark.e2e
def test_layered_images_run_in_podman(podman: Podman, tmp_path: Path) -> None:
    for name, (args, stdin, expect) in RUNS.items():
        archive, tag = tagged(tmp_path, name)
        podman.run("load", "-i", str(archive))
        try:
            out = podman.run("run", "--rm", "-i", *PODMAN_RUN, tag, *args, input=stdin)
            assert expect in out
        finally:
            podman.run("rmi", tag)


@pytest.mark.e2e
def test_layered_images_run_in_containerd(docker: Docker, tmp_path: Path) -> None:
    with ctr_namespace(docker, "slimmer-layers") as base:
        for name, (args, stdin, expect) in RUNS.items():
            archive, tag = tagged(tmp_path, name)
            done = subprocess.run([*base, "images", "import", str(archive)],
                                  capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            # ctr does not pass on the end of its standard input: jq gets its input as -n
            words = ["-n", f"{stdin.decode()} | {args[0]}"] if name == "jq" else args
            run = subprocess.run([*base, "run", "--rm", f"docker.io/{tag}",
                                  f"run-{uuid.uuid4().hex[:8]}", f"/usr/bin/{name}", *words],
                                 stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
            assert run.returncode == 0, run.stderr.decode()
            assert expect in run.stdout
