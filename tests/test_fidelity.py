"""Owners, modes, hard links and file capabilities survive (issue 11): `slim` keeps what the fat
image had, the layer writer stores hard links and SCHILY.xattr records, `pack --add` keeps or
sets modes and owners, resolves its destination through the image's symlinks and satisfies
DT_NEEDED. The e2e test proves it in Docker on a real Debian root."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from slimmer.image.layer import write_tar
from slimmer.loader.views import OverlayRoot, TreeRoot
from slimmer.tree import Dir, File, FileTree
from tests.support.archives import Archive, tiny_static_elf
from tests.support.cli import error_line
from tests.support.cli import run as slimmer
from tests.support.compile import Compile, lib_source, main_source
from tests.support.engines import Docker
from tests.support.roots import FAT_PACKAGES, mmdebstrap_root, tiny_root

# A v2 file capability, cap_net_raw=ep, as setcap writes it, and one that is not UTF-8 (tarfile
# marks such a header hdrcharset=BINARY): both must come back byte for byte.
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
NOT_UTF8 = b"\xff\x00\xfe=\n"


def _xattr(member: tarfile.TarInfo, name: str) -> bytes:
    return member.pax_headers[f"SCHILY.xattr.{name}"].encode("utf-8", "surrogateescape")


def _layer(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, owner: int = 0,
          data: bytes = b"", link: str = "", xattrs: dict[str, bytes] | None = None
          ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, owner, owner
    info.size, info.linkname = len(data), link
    info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                        for k, v in (xattrs or {}).items()}
    return info, data


def docker_archive(path: Path, layers: list[Path], entrypoint: list[str]) -> Path:
    """A docker-archive tar (as `docker save` writes) of uncompressed layer files."""
    diff_ids = []
    for layer in layers:
        digest = hashlib.sha256()
        with open(layer, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        diff_ids.append(f"sha256:{digest.hexdigest()}")
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": entrypoint},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    names = [f"{d[7:]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["fat/fidelity:1"],
                            "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, layer in zip(names, layers, strict=True):
            tar.add(layer, name)
    return path


def _slim(source: Path, out: Path, *args: str) -> None:
    done = slimmer("slim", str(source), "-o", str(out), *args)
    assert done.returncode == 0, done.stderr


# ---- the layer writer ----------------------------------------------------------------------


def _linked_tree(tmp_path: Path) -> FileTree:
    source = tmp_path / "content"
    source.write_bytes(b"shared\n")
    tree = FileTree()
    linked = File(0o640, 7, source=str(source), uid=1000, gid=1001, node="n1")
    tree.add("/srv/b", linked, "test")
    tree.add("/srv/a", linked, "test")
    tree.add("/usr/bin/pinger", File(0o755, 2, data=b"hi",
                                     xattrs=(("security.capability", CAP_NET_RAW),
                                             ("user.odd", NOT_UTF8))), "test")
    tree.add("/srv/own", Dir(0o700, 999, 998), "test")
    return tree


def _tar_bytes(tree: FileTree) -> bytes:
    from slimmer.image.layer import layer_entries

    out = io.BytesIO()
    write_tar(layer_entries(tree), out, 1700000000)
    return out.getvalue()


def test_layer_stores_hard_links_xattrs_and_owners(tmp_path: Path) -> None:
    raw = _tar_bytes(_linked_tree(tmp_path))
    assert raw == _tar_bytes(_linked_tree(tmp_path))  # reproducible
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar}
    first, second = members["srv/a"], members["srv/b"]  # tree order: a before b
    assert first.isreg() and first.size == 7
    assert second.type == tarfile.LNKTYPE and second.linkname == "srv/a" and second.size == 0
    assert (first.mode, first.uid, first.gid) == (0o640, 1000, 1001)
    assert (second.mode, second.uid, second.gid) == (0o640, 1000, 1001)
    assert raw.count(b"shared\n") == 1  # the content once
    pinger = members["usr/bin/pinger"]
    assert _xattr(pinger, "security.capability") == CAP_NET_RAW
    assert _xattr(pinger, "user.odd") == NOT_UTF8
    # the PAX records themselves hold the raw bytes (as Go's archive/tar reads them)
    assert b" SCHILY.xattr.security.capability=" + CAP_NET_RAW + b"\n" in raw
    assert b" SCHILY.xattr.user.odd=" + NOT_UTF8 + b"\n" in raw
    own = members["srv/own"]
    assert own.isdir() and (own.mode, own.uid, own.gid) == (0o700, 999, 998)


def test_progress_and_size_count_linked_content_once(tmp_path: Path) -> None:
    tree = _linked_tree(tmp_path)
    assert tree.content_size() == 7 + 2
    seen: list[tuple[int, int]] = []
    from slimmer.image.layer import layer_entries

    write_tar(layer_entries(tree), io.BytesIO(), 0, lambda done, total: seen.append(
        (done, total)))
    assert seen[-1] == (9, 9)  # the linked content once


def test_image_roots_keep_owner_mode_node_and_xattrs() -> None:
    tree = FileTree()
    entry = File(0o4750, 3, data=b"abc", uid=1000, gid=50, xattrs=(("user.x", b"1"),),
                 node="7")
    tree.add("/opt/tool", entry, "test")
    tree.add("/var/lib/pg", Dir(0o2700, 105, 106), "test")
    for root in (TreeRoot(tree), OverlayRoot(tree, TreeRoot(FileTree()))):
        got = root.file_entry("/opt/tool", keep_setuid=False)
        assert (got.mode, got.uid, got.gid, got.xattrs, got.node) == (
            0o750, 1000, 50, (("user.x", b"1"),), "7")
        assert root.file_entry("/opt/tool", keep_setuid=True).mode == 0o4750
        # a directory's setgid (group inheritance, no privilege) is kept either way
        assert root.dir_entry("/var/lib/pg", False) == Dir(0o2700, 105, 106)
        assert root.dir_entry("/var/lib/pg", True) == Dir(0o2700, 105, 106)


# ---- slim: a fat image's owners, modes, links and capabilities ---------------------------------


def fat_image(tmp_path: Path) -> Path:
    """A fat image whose entry program is a static ELF, with a service's key, data directory,
    a hard-linked pair, a file capability and a setuid program."""
    hello = tiny_static_elf(b"fat\n")
    layer = tmp_path / "layer.tar"
    layer.write_bytes(_layer([
        _info("usr/", tarfile.DIRTYPE, 0o755), _info("usr/bin/", tarfile.DIRTYPE, 0o755),
        _info("usr/bin/hello", mode=0o755, data=hello),
        _info("usr/bin/pinger", mode=0o755, data=hello,
              xattrs={"security.capability": CAP_NET_RAW, "user.odd": NOT_UTF8}),
        _info("usr/bin/su", mode=0o4755, data=hello),
        _info("etc/", tarfile.DIRTYPE, 0o755),
        _info("etc/svc/", tarfile.DIRTYPE, 0o750, 1000),
        _info("etc/svc/key.pem", mode=0o640, owner=1000, data=b"secret\n"),
        _info("var/", tarfile.DIRTYPE, 0o755), _info("var/lib/", tarfile.DIRTYPE, 0o755),
        _info("var/lib/svc/", tarfile.DIRTYPE, 0o700, 999),
        _info("var/lib/svc/data/", tarfile.DIRTYPE, 0o700, 999),
        _info("var/lib/svc/data/PG_VERSION", mode=0o600, owner=999, data=b"15\n"),
        _info("usr/share/", tarfile.DIRTYPE, 0o755),
        _info("usr/share/pair/", tarfile.DIRTYPE, 0o755),
        _info("usr/share/pair/one", mode=0o644, data=b"linked\n"),
        _info("usr/share/pair/two", tarfile.LNKTYPE, 0o644, link="usr/share/pair/one"),
    ]))
    return docker_archive(tmp_path / "fat.tar", [layer], ["/usr/bin/hello"])


KEEP = ("--keep", "/etc/svc/key.pem", "--keep", "/var/lib/svc/data/PG_VERSION", "--keep",
        "/usr/share/pair/*", "--keep", "/usr/bin/pinger", "--keep", "/usr/bin/su")


def test_slim_keeps_owners_modes_links_and_capabilities(tmp_path: Path) -> None:
    fat = fat_image(tmp_path)
    out = tmp_path / "slim.tar"
    _slim(fat, out, *KEEP)
    members = Archive(out).members()

    def owned(name: str) -> tuple[str, int, int]:
        m = members[name]
        return oct(m.mode), m.uid, m.gid

    assert owned("etc/svc/key.pem") == ("0o640", 1000, 1000)
    assert owned("etc/svc") == ("0o750", 1000, 1000)  # the image's directory, not root's 0755
    assert owned("var/lib/svc") == ("0o700", 999, 999)
    assert owned("var/lib/svc/data") == ("0o700", 999, 999)
    assert owned("var/lib/svc/data/PG_VERSION") == ("0o600", 999, 999)
    assert owned("usr/bin/su") == ("0o755", 0, 0)  # setuid only with --keep-setuid
    one, two = members["usr/share/pair/one"], members["usr/share/pair/two"]
    assert one.isreg() and two.type == tarfile.LNKTYPE and two.linkname == "usr/share/pair/one"
    pinger = members["usr/bin/pinger"]
    assert _xattr(pinger, "security.capability") == CAP_NET_RAW
    assert _xattr(pinger, "user.odd") == NOT_UTF8

    again = tmp_path / "again.tar"
    _slim(fat, again, *KEEP)
    assert out.read_bytes() == again.read_bytes()
    kept = tmp_path / "setuid.tar"
    _slim(fat, kept, *KEEP, "--keep-setuid")
    assert Archive(kept).members()["usr/bin/su"].mode == 0o4755


def test_slim_keeps_a_directory_kept_whole(tmp_path: Path) -> None:
    out = tmp_path / "slim.tar"
    _slim(fat_image(tmp_path), out, "--keep", "/var/lib/svc")
    members = Archive(out).members()
    for name in ("var/lib/svc", "var/lib/svc/data"):
        assert (members[name].mode, members[name].uid) == (0o700, 999)


# ---- pack --add ----------------------------------------------------------------------------


def _extra(tmp_path: Path) -> Path:
    extra = tmp_path / "extra"
    (extra / "private").mkdir(parents=True)
    (extra / "private/key").write_text("k\n")
    (extra / "private/key").chmod(0o600)
    (extra / "private").chmod(0o700)
    (extra / "run.sh").write_text("#!/bin/sh\n")
    (extra / "run.sh").chmod(0o750)
    return extra


def test_add_keeps_the_mode_bits_of_what_it_adds(tmp_path: Path) -> None:
    extra = _extra(tmp_path)
    out = tmp_path / "a.tar"
    done = slimmer("pack", "--root", str(tiny_root(tmp_path)), "/bin/hello", "-o", str(out),
                   "--add", f"{extra}:/opt/extra")
    assert done.returncode == 0, done.stderr
    members = Archive(out).members()
    got = {n: (oct(members[n].mode), members[n].uid) for n in
           ("opt/extra/private", "opt/extra/private/key", "opt/extra/run.sh")}
    assert got == {"opt/extra/private": ("0o700", 0), "opt/extra/private/key": ("0o600", 0),
                   "opt/extra/run.sh": ("0o750", 0)}


def test_add_sets_owner_and_mode(tmp_path: Path) -> None:
    extra = _extra(tmp_path)
    out = tmp_path / "a.tar"
    done = slimmer("pack", "--root", str(tiny_root(tmp_path)), "/bin/hello", "-o", str(out),
                   "--add", f"{extra}:/opt/extra:1000:1001:0640",
                   "--add", f"{extra}/run.sh:/usr/local/bin/run:0:50",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    members = Archive(out).members()

    def owned(name: str) -> tuple[str, int, int]:
        return oct(members[name].mode), members[name].uid, members[name].gid

    assert owned("opt/extra") == ("0o750", 1000, 1001)  # MODE, searchable where readable
    assert owned("opt/extra/private") == ("0o750", 1000, 1001)
    assert owned("opt/extra/private/key") == ("0o640", 1000, 1001)
    assert owned("opt/extra/run.sh") == ("0o640", 1000, 1001)
    assert owned("usr/local/bin/run") == ("0o750", 0, 50)  # its own mode, the owner given


def test_add_colons_in_the_source_and_relative_sources(tmp_path: Path) -> None:
    odd = tmp_path / "a:b"
    odd.write_text("x\n")
    out = tmp_path / "c.tar"
    done = slimmer("pack", "--root", str(tiny_root(tmp_path)), "/bin/hello", "-o", str(out),
                   "--add", "a:b:/etc/ab:7:8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    member = Archive(out).members()["etc/ab"]
    assert (member.uid, member.gid) == (7, 8)


@pytest.mark.parametrize(("spec", "words"), [
    ("{x}:/etc/x:1000", ("expected SRC:DEST[:UID:GID[:MODE]]",)),
    ("{x}:/etc/x:a:1", ("UID 'a' is not a number",)),
    ("{x}:/etc/x:1:99999999999", ("99999999999", "is not a number")),
    ("{x}:/etc/x:1:1:0989", ("MODE '0989' is not an octal mode",)),
    ("{x}:/etc/x:1:1:12345", ("is not an octal mode",)),
    ("{x}:/etc/x:0:0:4755", ("sets setuid/setgid", "--keep-setuid")),
    ("{x}:etc/x", ("the destination must be an absolute path",)),
])
def test_add_errors_are_one_line(tmp_path: Path, spec: str, words: tuple[str, ...]) -> None:
    x = tmp_path / "x"
    x.write_text("x\n")
    error_line(slimmer("pack", "--root", str(tiny_root(tmp_path)), "/bin/hello", "-o",
                       str(tmp_path / "e.tar"), "--add", spec.format(x=x)), *words)
    assert not (tmp_path / "e.tar").exists()


def test_add_setuid_mode_with_keep_setuid(tmp_path: Path) -> None:
    x = tmp_path / "x"
    x.write_text("x\n")
    out = tmp_path / "s.tar"
    done = slimmer("pack", "--root", str(tiny_root(tmp_path)), "/bin/hello", "-o", str(out),
                   "--keep-setuid", "--add", f"{x}:/usr/bin/x:0:0:4755")
    assert done.returncode == 0, done.stderr
    assert Archive(out).members()["usr/bin/x"].mode == 0o4755


def test_add_destination_through_the_images_symlinks(tmp_path: Path) -> None:
    """/lib is a link to usr/lib (merged /usr): --add ...:/lib/terminfo lands in
    /usr/lib/terminfo, as `cp -r` would put it, and /lib stays the link."""
    terminfo = tmp_path / "terminfo"
    (terminfo / "x").mkdir(parents=True)
    (terminfo / "x/xterm").write_text("xterm\n")
    out = tmp_path / "t.tar"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(out), "--add", f"{terminfo}:/lib/terminfo")
    assert done.returncode == 0, done.stderr
    members = Archive(out).members()
    assert members["lib"].issym() and members["lib"].linkname == "usr/lib"
    assert members["usr/lib/terminfo/x/xterm"].isreg()

    # a root whose /lib is a link that the program does not bring in: the link comes along
    root = tiny_root(tmp_path)
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    out = tmp_path / "u.tar"
    done = slimmer("pack", "--root", str(root), "/bin/hello", "-o", str(out), "--add",
                   f"{terminfo}:/lib/terminfo")
    assert done.returncode == 0, done.stderr
    members = Archive(out).members()
    assert members["lib"].linkname == "usr/lib" and "usr/lib/terminfo/x/xterm" in members


def test_add_follows_a_symlink_given_as_the_source(tmp_path: Path) -> None:
    """As cp does: `--add LINK:DEST` copies what the link leads to (Debian's
    /usr/share/misc/magic.mgc is a relative link that would dangle in the image); links inside
    an added directory stay links; a dangling source is one error line."""
    data = tmp_path / "data"
    (data / "lib/file").mkdir(parents=True)
    (data / "lib/file/magic.mgc").write_bytes(b"magic")
    (data / "share").mkdir()
    (data / "share/magic.mgc").symlink_to("../lib/file/magic.mgc")
    (data / "linkdir").symlink_to("lib")
    out = tmp_path / "t.tar"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(out),
                   "--add", f"{data / 'share/magic.mgc'}:/usr/share/misc/magic.mgc",
                   "--add", f"{data / 'linkdir'}:/opt/lib",
                   "--add", f"{data / 'share'}:/opt/share")
    assert done.returncode == 0, done.stderr
    members = Archive(out).members()
    assert members["usr/share/misc/magic.mgc"].isreg()
    layer = Archive(out).layer.extractfile("usr/share/misc/magic.mgc")
    assert layer is not None and layer.read() == b"magic"
    assert members["opt/lib"].isdir() and members["opt/lib/file/magic.mgc"].isreg()
    assert members["opt/share/magic.mgc"].issym()  # inside a directory: kept as a link

    (data / "gone").symlink_to("nowhere")
    done = slimmer("pack", "/usr/bin/jq", "-o", str(tmp_path / "u.tar"),
                   "--add", f"{data / 'gone'}:/x")
    error_line(done, str(data / "gone"), "dangling")


def test_a_symlink_loop_on_the_way_is_one_line(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    (root / "loop").symlink_to("loop")
    x = tmp_path / "x"
    x.write_text("x\n")
    error_line(slimmer("pack", "--root", str(root), "/bin/hello", "-o",
                       str(tmp_path / "l.tar"), "--add", f"{x}:/loop/x"),
               "too many levels of symbolic links")


def test_an_added_library_satisfies_dt_needed(tmp_path: Path, cc: Compile) -> None:
    lib = cc("lib/libfoo.so.1", lib_source("foo"), "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1")
    prog = cc("bin/prog", main_source(("foo",)), str(lib))
    out = tmp_path / "p.tar"
    done = slimmer("pack", str(prog), "-o", str(out), "--add",
                   "lib/libfoo.so.1:/usr/lib/x86_64-linux-gnu/libfoo.so.1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    a = Archive(out)
    assert a.members()["usr/lib/x86_64-linux-gnu/libfoo.so.1"].isreg()
    reasons = {f["path"]: f["reason"] for f in json.loads(a.read("slimmer.json"))["files"]}
    assert reasons["/usr/lib/x86_64-linux-gnu/libfoo.so.1"].startswith("--add")


# ---- end to end: a real Debian root, Docker ------------------------------------------------

SERVICE_UID = 33  # www-data in Debian's base-passwd


@pytest.mark.e2e
def test_owners_modes_links_and_capabilities_in_docker(docker: Docker, tmp_path: Path) -> None:
    """The cached bookworm root (the one test_slim uses) plus a layer made by GNU tar from a
    real directory (chown, chmod, ln, setcap): slimmed with `stat` as the entry program, the
    layer holds what the fat image had, and Docker's container shows it."""
    if os.geteuid() != 0:
        pytest.skip("needs root: chown and setcap make the fat layer")
    base = mmdebstrap_root("bookworm", FAT_PACKAGES)
    src = tmp_path / "src"
    for d in ("etc/svc", "var/lib/svc/data", "usr/share/pair", "usr/local/bin"):
        (src / d).mkdir(parents=True)
    (src / "etc/svc/key.pem").write_text("secret\n")
    os.chown(src / "etc/svc/key.pem", 1000, 1000)
    (src / "etc/svc/key.pem").chmod(0o640)
    os.chown(src / "var/lib/svc", SERVICE_UID, SERVICE_UID)
    os.chown(src / "var/lib/svc/data", SERVICE_UID, SERVICE_UID)
    (src / "var/lib/svc/data").chmod(0o700)
    (src / "var/lib/svc").chmod(0o700)
    (src / "usr/share/pair/one").write_text("linked\n")
    os.link(src / "usr/share/pair/one", src / "usr/share/pair/two")
    (src / "usr/local/bin/pinger").write_bytes(tiny_static_elf(b"ping\n"))
    (src / "usr/local/bin/pinger").chmod(0o755)
    os.setxattr(src / "usr/local/bin/pinger", "security.capability", CAP_NET_RAW)
    extra = tmp_path / "extra.tar"
    subprocess.run(["tar", "--format=pax", "--xattrs", "--xattrs-include=security.*",
                    "--numeric-owner", "-C", str(src), "-cf", str(extra), "etc/svc",
                    "var/lib/svc", "usr/share/pair", "usr/local/bin/pinger"], check=True)
    fat = docker_archive(tmp_path / "fat.tar", [base, extra], ["/usr/bin/stat"])

    out = tmp_path / "slim.tar"
    tag = f"slim-fidelity:{uuid.uuid4().hex[:8]}"
    _slim(fat, out, "--tag", tag, "--keep", "/etc/svc/key.pem", "--keep", "/var/lib/svc",
          "--keep", "/usr/share/pair/*", "--keep", "/usr/local/bin/pinger")
    members = Archive(out).members()
    assert (members["etc/svc/key.pem"].mode, members["etc/svc/key.pem"].uid) == (0o640, 1000)
    for name in ("var/lib/svc", "var/lib/svc/data"):
        assert (members[name].mode, members[name].uid, members[name].gid) == (
            0o700, SERVICE_UID, SERVICE_UID)
    two = members["usr/share/pair/two"]
    assert two.type == tarfile.LNKTYPE and two.linkname == "usr/share/pair/one"
    assert _xattr(members["usr/local/bin/pinger"], "security.capability") == CAP_NET_RAW

    with docker.loaded(out) as loaded:
        shown = docker.container(loaded, "-c", "%a %u %g %h %n", "/etc/svc/key.pem",
                                 "/var/lib/svc", "/var/lib/svc/data", "/usr/share/pair/one",
                                 "/usr/share/pair/two").decode().splitlines()
        assert shown == ["640 1000 1000 1 /etc/svc/key.pem",
                         f"700 {SERVICE_UID} {SERVICE_UID} 3 /var/lib/svc",
                         f"700 {SERVICE_UID} {SERVICE_UID} 2 /var/lib/svc/data",
                         "644 0 0 2 /usr/share/pair/one", "644 0 0 2 /usr/share/pair/two"]
        # the capability as the engine stored it: a container's export reads it back
        container = docker.run("create", loaded).stdout.decode().strip()
        try:
            exported = docker.run("export", container).stdout
        finally:
            docker.run("rm", container, check=False)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        pinger = tar.getmember("usr/local/bin/pinger")
    assert _xattr(pinger, "security.capability") == CAP_NET_RAW
