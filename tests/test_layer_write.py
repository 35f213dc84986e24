"""The layer writer's fast paths give the bytes of the plain ones: tar headers built directly
against tarfile's, content read into a reused buffer against a plain copy, one hash for an
uncompressed layer; and a source that changes or cannot be read is one clear error."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from slimmer.errors import FileProblem
from slimmer.image import layer as layer_module
from slimmer.image.layer import (
    CHUNK,
    ChangedWhilePacking,
    layer_entries,
    tar_header,
    write_layer,
    write_tar,
)
from slimmer.tree import Dir, Entry, File, FileTree, Symlink

MTIME = 1700000000
BIG_ID = 8 ** 7  # the first uid that needs a PAX record
BIG_NUMBER = 8 ** 11  # the first size or time that needs one


def _tarfile_header(name: str, entry: Entry, mtime: int, link: str | None = None) -> bytes:
    """The header as tarfile writes it: the reference the direct builder must match."""
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uname = info.gname = ""
    if isinstance(entry, Dir):
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, entry.mode, entry.uid, entry.gid
    elif isinstance(entry, Symlink):
        info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, entry.target
    else:
        info.type = tarfile.REGTYPE if link is None else tarfile.LNKTYPE
        info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
        info.size = entry.size if link is None else 0
        info.linkname = link or ""
        if link is None:
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                for k, v in sorted(entry.xattrs)}
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


NAMES = ["a", "usr/bin/ffmpeg", "x" * 99, "x" * 100, "x" * 101, "d/" * 60 + "f",
         "usr/share/caf\u00e9", "\u65e5\u672c/\u8a9e", "bad-\udcff-byte", "sp ace", "a" * 255]
PLAIN: list[tuple[Entry, str | None]] = [  # (entry, link): headers with no PAX record
    (File(0o755, 12345), None),
    (File(0o644, 0), None),
    (File(0o4755, BIG_NUMBER - 1, uid=BIG_ID - 1, gid=BIG_ID - 1), None),
    (File(0o100644, 7), None),  # the file type bits are dropped, as tarfile drops them
    (File(0o644, 9, uid=1000, gid=1000), "usr/lib/first"),
    (Dir(), None),
    (Dir(0o1777, 5, 6), None),
    (Symlink("../lib/libc.so.6"), None),
    (Symlink("t" * 100), None),
    (File(0o644, 3), "l" * 100),
]
PAX: list[tuple[Entry, str | None]] = [  # ... and with one
    (File(0o644, 5, xattrs=(("security.capability", b"\x01\x00\x00\x02\xff\xfe"),
                            ("user.note", b"caf\xc3\xa9"))), None),
    (File(0o644, 5, uid=BIG_ID), None),
    (File(0o644, 5, gid=2 ** 32 - 2), None),
    (File(0o644, BIG_NUMBER), None),
    (Dir(0o755, BIG_ID, 0), None),
    (Symlink("t" * 101), None),
    (Symlink("\u00e9t\u00e9"), None),
    (File(0o644, 3), "l" * 101),
    (File(0o644, 3), "lien-\u00e9"),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("entry", "link"), PLAIN + PAX)
def test_headers_are_tarfiles_bytes(name: str, entry: Entry, link: str | None) -> None:
    for mtime in (0, MTIME, BIG_NUMBER - 1, BIG_NUMBER):
        assert tar_header(name, entry, mtime, link) == _tarfile_header(name, entry, mtime, link)


def test_directory_names_get_their_slash_as_tarfile_gives_it() -> None:
    assert tar_header("etc", Dir(), 0) == _tarfile_header("etc/", Dir(), 0)
    with tarfile.open(fileobj=io.BytesIO(tar_header("etc", Dir(), 0) + bytes(1024))) as read:
        member = read.next()
    assert member is not None and member.name == "etc" and member.isdir()


def test_plain_headers_are_built_without_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct builder is the one used where no PAX record is needed (else the comparison
    above would compare tarfile with itself)."""
    used: list[str] = []
    real = layer_module._tarfile_header

    def counting(name: str, entry: Entry, mtime: int, link: str | None) -> bytes:
        used.append(name)
        return real(name, entry, mtime, link)

    monkeypatch.setattr(layer_module, "_tarfile_header", counting)
    for entry, link in PLAIN:
        tar_header("usr/lib/x", entry, MTIME, link)
    assert used == []
    for entry, link in PAX:
        tar_header("usr/lib/x", entry, MTIME, link)
    assert len(used) == len(PAX)


SIZES = [0, 1, 511, 512, 513, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 700]


def _tree(tmp_path: Path) -> FileTree:
    tree = FileTree()
    for n, size in enumerate(SIZES):
        path = tmp_path / f"f{n}"
        path.write_bytes(os.urandom(size))
        tree.add(f"/data/f{n}", File(0o644, size, source=str(path)), "test")
    tree.add("/data/given", File(0o600, CHUNK + 3, data=os.urandom(CHUNK + 3)), "test")
    tree.add("/data/small", File(0o600, 5, data=b"hello"), "test")
    tree.add("/bin/tool", File(0o755, 511, source=str(tmp_path / "f2"), node="n1",
                               xattrs=(("security.capability", b"\x01\x02"),)), "test")
    tree.add("/bin/" + "long" * 40, File(0o755, 511, source=str(tmp_path / "f2"), node="n1"),
             "test")
    tree.add("/bin/link", Symlink("tool"), "test")
    tree.add("/home/\u00e9l\u00e8ve", Dir(0o700, 1000, 1000), "test")
    return tree


def _plain_tar(entries: list[tuple[str, Entry]], mtime: int) -> bytes:
    """The stream written the plain way: tarfile's headers, each file read whole."""
    out, firsts = io.BytesIO(), dict[str, str]()
    for name, entry in entries:
        if isinstance(entry, File) and entry.node is not None:
            firsts.setdefault(entry.node, name)
    for name, entry in entries:
        link = (firsts[entry.node] if isinstance(entry, File) and entry.node
                and firsts[entry.node] != name else None)
        out.write(_tarfile_header(name, entry, mtime, link))
        if isinstance(entry, File) and link is None:
            data = entry.data if entry.data is not None else Path(entry.source or "").read_bytes()
            out.write(data + bytes(-len(data) % 512))
    out.write(bytes(1024))
    return out.getvalue()


def test_stream_is_the_plain_writers(tmp_path: Path) -> None:
    entries = layer_entries(_tree(tmp_path))
    written = io.BytesIO()
    write_tar(entries, written, MTIME)
    assert written.getvalue() == _plain_tar(entries, MTIME)
    with tarfile.open(fileobj=io.BytesIO(written.getvalue())) as archive:
        for name, entry in entries:
            member = archive.getmember(name.rstrip("/"))
            if isinstance(entry, File) and member.isreg():
                got = archive.extractfile(member)
                assert got is not None
                want = entry.data if entry.data is not None else Path(
                    entry.source or "").read_bytes()
                assert got.read() == want, name


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_digests_are_of_the_stream(tmp_path: Path, compression: str) -> None:
    """Each digest is of the bytes it names, whatever the sink does with the views it gets
    (the staging buffer is filled again after each write)."""
    tree = _tree(tmp_path)
    plain = _plain_tar(layer_entries(tree), MTIME)
    layer = write_layer(tree, str(tmp_path), compression, MTIME, workers=2)
    try:
        assert layer.file is not None
        blob = os.pread(layer.file.fileno(), layer.blob.descriptor.size + 1, 0)
    finally:
        layer.close()
    assert len(blob) == layer.blob.descriptor.size
    assert layer.blob.descriptor.digest.hex == hashlib.sha256(blob).hexdigest()
    assert layer.diff_id.hex == hashlib.sha256(plain).hexdigest()
    if compression == "gzip":
        blob = gzip.decompress(blob)
    elif compression == "zstd":
        blob = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(blob)
    assert blob == plain


@pytest.mark.parametrize("change", [b"", b"more"])
def test_a_source_that_changes_size_is_one_error(tmp_path: Path, change: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000 + change)
    tree = FileTree()
    tree.add("/f", File(0o644, 1000 + (4 if not change else -4), source=str(path)), "test")
    with pytest.raises(ChangedWhilePacking, match=f"{path}: file changed while packing"):
        write_tar(layer_entries(tree), io.BytesIO(), 0)


@pytest.mark.parametrize(("what", "problem"), [("gone", "No such file or directory"),
                                               ("dir", "Is a directory")])
def test_an_unreadable_source_is_one_error(tmp_path: Path, what: str, problem: str) -> None:
    (tmp_path / "dir").mkdir()
    tree = FileTree()
    tree.add("/f", File(0o644, 3, source=str(tmp_path / what)), "test")
    with pytest.raises(FileProblem, match=f"{tmp_path / what}: cannot read \\({problem}\\)"):
        write_tar(layer_entries(tree), io.BytesIO(), 0)


# ---- a layer written straight into the archive (write.Archive) ----------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layers_written_into_the_archive_are_members_once(tmp_path: Path,
                                                          compression: str) -> None:
    """Each layer becomes the member its digest names, where its placeholder was; the same
    layer twice is one member; a blob's copy reads the member's bytes back; then the other
    blobs and the documents. The archive is the same whether a layer was written in place or
    copied from a scratch file."""
    from slimmer.image.model import OCI_CONFIG, Blob
    from slimmer.image.write import Archive
    from slimmer.outputs import writing

    tree = _tree(tmp_path)
    other = FileTree()
    other.add("/other", File(0o600, 3, data=b"abc"), "test")
    config = Blob.of(OCI_CONFIG, b"{}")

    def build(path: Path, in_place: bool) -> list[bytes]:
        copies = []
        with writing(str(path)) as out:
            archive = Archive(out, MTIME)
            for part in (tree, other, tree):
                layer = write_layer(part, archive if in_place else str(tmp_path),
                                    compression, MTIME, workers=2)
                archive.add(layer.blob)
                sink = io.BytesIO()
                assert layer.blob.copy is not None
                layer.blob.copy(sink)
                copies.append(sink.getvalue())
                layer.close()
            archive.add(config)
            archive.finish(b"index", b"manifest", None)
        return copies

    build(tmp_path / "placed.tar", True)
    copies = build(tmp_path / "copied.tar", False)
    assert (tmp_path / "placed.tar").read_bytes() == (tmp_path / "copied.tar").read_bytes()
    with tarfile.open(tmp_path / "placed.tar") as archive:
        names = archive.getnames()
        digests = [f"blobs/sha256/{hashlib.sha256(c).hexdigest()}" for c in copies]
        assert names == ["blobs", "blobs/sha256", digests[0], digests[1],
                         str(config.descriptor.digest.member), "index.json", "manifest.json",
                         "oci-layout"]
        for name, copy in zip(digests, copies, strict=True):
            member = archive.extractfile(name)
            assert member is not None and member.read() == copy
