"""Image archives made and read byte by byte by the tests (not by slimmer's own reader, which
is under test), and the smallest program to put in them."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zstandard


def sha(data: bytes) -> str:
    """The digest of `data`, as descriptors write it."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def desc(media_type: str, data: bytes, **extra: object) -> dict[str, Any]:
    """The OCI descriptor of `data`."""
    return {"mediaType": media_type, "digest": sha(data), "size": len(data), **extra}


def tiny_static_elf(message: bytes) -> bytes:
    """A complete static x86-64 program, made byte by byte (no compiler, so the same bytes on
    every machine): write(1, message) then exit(0)."""
    base, code_at = 0x400000, 64 + 56
    code = (b"\xb8\x01\x00\x00\x00"                      # mov eax, 1 (write)
            b"\xbf\x01\x00\x00\x00"                      # mov edi, 1
            b"\x48\x8d\x35" + struct.pack("<i", 16) +    # lea rsi, [rip + 16] -> message
            b"\xba" + struct.pack("<I", len(message)) +  # mov edx, len
            b"\x0f\x05"                                  # syscall
            b"\xb8\x3c\x00\x00\x00"                      # mov eax, 60 (exit)
            b"\x31\xff"                                  # xor edi, edi
            b"\x0f\x05")                                 # syscall
    size = code_at + len(code) + len(message)
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base + code_at, 64, 0, 0, 64, 56,
                                 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + phdr + code + message


# ---- reading what slimmer wrote ---------------------------------------------------------------


class Archive:
    """An image archive opened for inspection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outer = tarfile.open(fileobj=io.BytesIO(path.read_bytes()))  # noqa: SIM115 - in memory
        self.index = json.loads(self.read("index.json"))
        self.docker = json.loads(self.read("manifest.json"))
        self.manifest = json.loads(self.blob(self.index["manifests"][0]["digest"]))
        self.config = json.loads(self.blob(self.manifest["config"]["digest"]))
        layer = self.manifest["layers"][0]
        self.layer_bytes = self.blob(layer["digest"])
        raw = self.layer_bytes
        if layer["mediaType"].endswith("+zstd"):
            frames = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
            raw = frames.decompress(raw)
        self.layer = tarfile.open(fileobj=io.BytesIO(raw))  # noqa: SIM115 - in memory

    def read(self, name: str) -> bytes:
        member = self.outer.extractfile(name)
        assert member is not None
        return member.read()

    def blob(self, digest: str) -> bytes:
        data = self.read(f"blobs/sha256/{digest.split(':')[1]}")
        assert hashlib.sha256(data).hexdigest() == digest.split(":")[1]
        return data

    def members(self) -> dict[str, tarfile.TarInfo]:
        return {m.name.rstrip("/"): m for m in self.layer.getmembers()}

    def file(self, name: str) -> bytes:
        member = self.layer.extractfile(name)
        assert member is not None
        return member.read()


def unpack_layer(archive: Path, into: Path) -> Path:
    """The image's layer unpacked by tar(1) (tarfile's extraction filters need Python 3.11.4,
    Debian 12 has 3.11.2)."""
    a = Archive(archive)
    into.mkdir(parents=True)
    subprocess.run(["tar", "-xz", "-C", str(into)], input=a.layer_bytes, check=True)
    return into


def rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """Copy an archive member by member; `change` returns new content, or None to drop it."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old.getmembers():
            if not member.isfile():
                new.addfile(member)
                continue
            data = old.extractfile(member).read()  # type: ignore[union-attr]
            changed = change(member.name, data)
            if changed is None:
                continue
            member.size = len(changed)
            new.addfile(member, io.BytesIO(changed))
    return target


# ---- making images by hand --------------------------------------------------------------------


Member = tuple[str, str, bytes | str]  # (kind, name, content or link target)


def layer_tar(members: list[Member]) -> bytes:
    """A layer tar of dirs, files, symlinks, hard links and FIFOs, in the order given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                assert isinstance(payload, bytes)
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
                tar.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
    return out.getvalue()


def docker_archive(path: Path, layers: list[list[Member]], tags: tuple[str, ...] = ("x:1",),
                   config: dict[str, object] | None = None) -> Path:
    """The classic `docker save` layout: <id>/layer.tar, a config, manifest.json."""
    with tarfile.open(path, "w") as tar:
        def put(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        names, diff_ids = [], []
        for i, members in enumerate(layers):
            names.append(f"{i:064x}/layer.tar")
            data = layer_tar(members)
            put(names[-1], data)
            diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
        put("config.json", json.dumps(config or {
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode())
        put("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": list(tags),
                                          "Layers": names}]).encode())
    return path


# A member of a hand-made image archive: content, or (kind, target) with kind "sym" or "hard",
# or ("dir", "").
Payload = bytes | tuple[str, str]
Members = dict[str, Payload]

_TYPES = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE}


def write_members(path: Path, members: Members) -> Path:
    """An archive holding `members` in order, as written (no checks: for hostile ones too)."""
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(payload, tuple):
                info.type = _TYPES[payload[0]]
                info.linkname = payload[1]
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path
