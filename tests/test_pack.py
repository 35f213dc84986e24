"""`slimmer pack` without an engine: what goes in the archive, byte for byte, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from slimmer.assemble.options import from_keywords
from slimmer.assemble.pack import pack
from slimmer.image.model import DEFAULT_EPOCH
from slimmer.tree import Symlink
from tests.support.archives import Archive, tiny_static_elf, unpack_layer
from tests.support.cli import error_line, run_process
from tests.support.cli import run as slimmer
from tests.support.compile import Compile, main_source
from tests.support.roots import small_root, tiny_root, vendor_root

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello"


def build_example(where: Path) -> Path:
    subprocess.run(["bash", str(EXAMPLE / "build.sh"), str(where)], check=True)
    return where / "bin" / "hello"


# ---- what goes in ----------------------------------------------------------------------


def test_jq_image_layout(tmp_path: Path) -> None:
    out = tmp_path / "jq.tar"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(out))
    assert done.returncode == 0, done.stderr
    a = Archive(out)
    names = [m.name for m in a.outer.getmembers()]
    assert names[:2] == ["blobs", "blobs/sha256"]  # tarfile drops the trailing slash
    assert a.path.read_bytes()[:6] == b"blobs/"
    assert names[-4:] == ["index.json", "manifest.json", "oci-layout", "slimmer.json"]
    contents = json.loads(a.read("slimmer.json"))
    reasons = {f["path"]: f for f in contents["files"]}
    assert reasons["/usr/lib/x86_64-linux-gnu/libonig.so.5.3.0"] == {
        "path": "/usr/lib/x86_64-linux-gnu/libonig.so.5.3.0",
        "reason": "libonig.so.5 needed by /lib/x86_64-linux-gnu/libjq.so.1 (cache)",
        "parent": "/lib/x86_64-linux-gnu/libjq.so.1"}
    assert json.loads(a.read("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    desc = a.index["manifests"][0]
    assert desc["annotations"] == {"io.containerd.image.name": "docker.io/library/jq:latest",
                                   "org.opencontainers.image.ref.name": "latest"}
    assert desc["platform"] == {"architecture": "amd64", "os": "linux"}
    assert a.docker == [{"Config": f"blobs/sha256/{a.manifest['config']['digest'][7:]}",
                         "RepoTags": ["jq:latest"],
                         "Layers": [f"blobs/sha256/{a.manifest['layers'][0]['digest'][7:]}"]}]
    cfg = a.config
    assert cfg["config"]["Entrypoint"] == ["/usr/bin/jq"]
    assert cfg["config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert cfg["created"] == "1980-01-02T00:00:00Z"  # the default: no SOURCE_DATE_EPOCH
    assert len(cfg["history"]) == 1
    diff_id = "sha256:" + hashlib.sha256(
        subprocess.run(["gzip", "-dc"], input=a.layer_bytes, capture_output=True).stdout
    ).hexdigest()
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}

    members = a.members()
    # the loader's paths, with the symlinks on the way (merged /usr, SONAME links)
    assert members["lib64"].issym() and members["lib64"].linkname == "usr/lib64"
    assert members["lib"].linkname == "usr/lib"
    assert members["usr/lib64/ld-linux-x86-64.so.2"].linkname == (
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    assert members["usr/lib/x86_64-linux-gnu/libjq.so.1"].issym()
    assert members["usr/lib/x86_64-linux-gnu/libc.so.6"].isfile()
    assert members["tmp"].mode == 0o1777 and members["tmp"].isdir()
    assert b"nonroot:x:65532:65532" in a.file("etc/passwd")
    assert a.file("etc/group") == b"root:x:0:\nnonroot:x:65532:\n"
    # passwd: files, then whatever this machine's nsswitch.conf adds that its root holds
    assert a.file("etc/nsswitch.conf").startswith(b"passwd: files")
    # every parent has an entry; parents come first; headers are normalised
    seen: set[str] = set()
    for m in a.layer.getmembers():
        name = m.name.rstrip("/")
        parent = os.path.dirname(name)
        assert parent == "" or parent in seen, name
        seen.add(name)
        assert (m.mtime, m.uname, m.gname) == (DEFAULT_EPOCH, "", "")
        assert m.type in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE)


def test_build_tree_goes_under_app(tmp_path: Path) -> None:
    program = build_example(tmp_path / "build")
    out = tmp_path / "hello.tar"
    done = slimmer("pack", str(program), "-o", str(out), "--tag", "hello:1")
    assert done.returncode == 0, done.stderr
    a = Archive(out)
    members = a.members()
    assert members["app/bin/hello"].isfile()
    assert members["app/lib/libgreet.so.1"].linkname == "libgreet.so.1.0"
    assert members["app/lib/libgreet.so.1.0"].isfile()
    assert not any(str(tmp_path).lstrip("/") in name for name in members)
    assert a.config["config"]["Entrypoint"] == ["/app/bin/hello"]
    assert a.index["manifests"][0]["annotations"]["io.containerd.image.name"] == (
        "docker.io/library/hello:1")


def test_options_reach_the_config(tmp_path: Path) -> None:
    out = tmp_path / "o.tar"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(out), "--tag", "registry.local:5000/a/jq:v2",
                   "--entrypoint", '["/usr/bin/jq", "-c"]', "--cmd", ". | length",
                   "--env", "A=1", "--env", "PATH=/usr/bin", "--workdir", "/tmp",
                   "--user", "nonroot", "--label", "x=y", "--annotation", "note=hi",
                   "--expose", "8080", "--expose", "53/udp", "--compress", "none")
    assert done.returncode == 0, done.stderr
    a = Archive(out)
    run = a.config["config"]
    assert run["Entrypoint"] == ["/usr/bin/jq", "-c"]
    assert run["Cmd"] == [".", "|", "length"]
    assert run["Env"] == ["PATH=/usr/bin", "A=1"]
    assert (run["WorkingDir"], run["User"]) == ("/tmp", "65532:65532")
    assert run["Labels"] == {"x": "y"}
    assert run["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert a.manifest["annotations"] == {"note": "hi"}
    assert a.manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert a.docker[0]["RepoTags"] == ["registry.local:5000/a/jq:v2"]
    assert a.index["manifests"][0]["annotations"]["io.containerd.image.name"] == (
        "registry.local:5000/a/jq:v2")


def test_add_files_and_directories_resolving_elf_among_them(tmp_path: Path,
                                                            cc: Compile) -> None:
    extra = tmp_path / "extra"
    (extra / "conf").mkdir(parents=True)
    (extra / "conf/app.toml").write_text("x = 1\n")
    (extra / "conf/link").symlink_to("app.toml")
    cc(extra / "tools/helper", main_source(), "-Wl,--no-as-needed", "-lz")
    out = tmp_path / "a.tar"
    done = slimmer("pack", "/usr/bin/jq", "-o", str(out), "--add", f"{extra}:/opt/extra",
                   "--add", f"{extra}/conf/app.toml:/etc/app.toml")
    assert done.returncode == 0, done.stderr
    members = Archive(out).members()
    assert members["opt/extra/conf/app.toml"].isfile()
    assert members["opt/extra/conf/link"].linkname == "app.toml"
    assert members["opt/extra/tools/helper"].isfile()
    assert members["etc/app.toml"].isfile()
    # the helper's own library came along
    assert "usr/lib/x86_64-linux-gnu/libz.so.1" in members


def test_setuid_bits_are_dropped_unless_asked(tmp_path: Path) -> None:
    root = tiny_root(tmp_path)
    (root / "bin/hello").chmod(0o4755)
    for flag, mode in (((), 0o755), (("--keep-setuid",), 0o4755)):
        out = tmp_path / f"s{len(flag)}.tar"
        done = slimmer("pack", "--root", str(root), "/bin/hello", "-o", str(out), *flag)
        assert done.returncode == 0, done.stderr
        assert Archive(out).members()["bin/hello"].mode == mode


def test_modes_ignore_the_umask_and_source_modes(tmp_path: Path) -> None:
    """Normalised to 0755/0644 and root's, but never looser than the source (issue 11: a
    0700 tool stays 0700, a 0640 key 0640; group/world write bits never show)."""
    root = tiny_root(tmp_path)
    for wide, expected in ((0o777, 0o755), (0o700, 0o700)):
        (root / "bin/hello").chmod(wide)
        out = tmp_path / f"m{wide:o}.tar"
        done = slimmer("pack", "--root", str(root), "/bin/hello", "-o", str(out))
        assert done.returncode == 0, done.stderr
        member = Archive(out).members()["bin/hello"]
        assert (member.mode, member.uid, member.gid) == (expected, 0, 0)
    from slimmer.tree import normal_mode

    assert [normal_mode(m) for m in (0o640, 0o666, 0o600, 0o4711)] == [0o640, 0o644, 0o600,
                                                                        0o711]
    assert normal_mode(0o4755, keep_setuid=True) == 0o4755


def test_zstd_layer(tmp_path: Path) -> None:
    out = tmp_path / "z.tar"
    assert slimmer("pack", "/usr/bin/jq", "-o", str(out), "--compress", "zstd").returncode == 0
    a = Archive(out)
    assert a.manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert a.layer_bytes[:4] == b"\x28\xb5\x2f\xfd"


# ---- reproducible ------------------------------------------------------------------------

# The tiny program is made byte by byte, so these digests hold on every machine. The gzip
# layer (and so the manifest) depends on zlib's deflate, pinned for Debian 12's zlib 1.2.13;
# the uncompressed layer (diff_id) and the image ID do not. The gzip pair was recomputed when
# the layer became blocks deflated on every core (issue 15, compress.py FORMAT 1); it is the
# same for any number of threads.
PINNED_CONFIG = "sha256:140ee89a26a1ecf35b16b94caadd7afc3ae8471035c976c083f64fffe7c55edc"
PINNED_DIFF_ID = "sha256:87a2153abe03387b7f536a30a27cebc72285f73c0f47abd72f59b05f2c37a6cb"
PINNED_ZLIB = {
    "1.2.13": ("sha256:f511e2061126a2002f4a707d2b32c253688a23bc91058bb472c5f439c9ffb1e1",
               "sha256:f8f8d16fdafad246e8c3743e2652420c1302d3957fc0f3d0f7693aca451080f8"),
}


@pytest.mark.parametrize("workers", [1, 2])
def test_pinned_digest(tmp_path: Path, workers: int) -> None:
    root = tiny_root(tmp_path, b"pinned\n")
    result = pack(*from_keywords(programs=("/bin/hello",), output=str(tmp_path / "p.tar"),
                                 root=str(root), tag="tiny:pinned", epoch=1700000000,
                                 workers=workers))
    image = result.image
    assert image.config_digest == PINNED_CONFIG
    assert image.diff_id == PINNED_DIFF_ID
    if zlib.ZLIB_RUNTIME_VERSION in PINNED_ZLIB:
        assert (image.manifest_digest, image.layer_digest) == PINNED_ZLIB[
            zlib.ZLIB_RUNTIME_VERSION]


def _pack_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "TZ", "LC_ALL")}
    env.update(extra)
    return env


def test_same_bytes_whatever_the_conditions(tmp_path: Path) -> None:
    first = build_example(tmp_path / "one" / "tree")
    out1 = tmp_path / "one.tar"
    done = run_process("pack", str(first), "-o", str(out1), "--tag", "hello:r",
                       env=_pack_env(PYTHONHASHSEED="1", TZ="UTC", LC_ALL="C"))
    assert done.returncode == 0, done.stderr

    # Another directory, other mtimes and owners, another umask, zone, locale and hash seed,
    # and another working directory with a relative path.
    other = tmp_path / "elsewhere" / "deeper" / "tree"
    shutil.copytree(first.parent.parent, other, symlinks=True)
    for path in other.rglob("*"):
        os.utime(path, (1234567, 7654321), follow_symlinks=False)
        if not path.is_symlink():
            os.chown(path, 1234, 4321)
    cwd = tmp_path / "elsewhere"
    out2 = tmp_path / "two.tar"
    script = (f"import os, runpy, sys; os.umask(0o077); sys.argv = ['slimmer', 'pack', "
              f"'deeper/tree/bin/hello', '-o', {str(out2)!r}, '--tag', 'hello:r', "
              "'--no-cache']; "  # compressed again, not taken from the first run's cache
              "runpy.run_module('slimmer', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                          text=True, env=_pack_env(PYTHONHASHSEED="999", TZ="Asia/Tokyo",
                                                   LC_ALL="C.UTF-8"))
    assert done.returncode == 0, done.stderr
    assert out1.read_bytes() == out2.read_bytes()


def test_source_date_epoch_sets_every_time(tmp_path: Path) -> None:
    out = tmp_path / "e.tar"
    done = run_process("pack", "/usr/bin/jq", "-o", str(out),
                       env=_pack_env(SOURCE_DATE_EPOCH="1700000000"))
    assert done.returncode == 0, done.stderr
    a = Archive(out)
    assert a.config["created"] == "2023-11-14T22:13:20Z"
    assert a.config["history"][0]["created"] == "2023-11-14T22:13:20Z"
    assert {m.mtime for m in a.layer.getmembers()} == {1700000000}
    assert {m.mtime for m in a.outer.getmembers()} == {1700000000}


def test_default_time_is_one_zip_accepts(tmp_path: Path) -> None:
    """Without SOURCE_DATE_EPOCH every time is 1980-01-02T00:00:00Z: the files unpacked from
    the layer go into a zip archive even in the time zone furthest west (zipfile takes local
    time, and refuses anything before 1980)."""
    out = tmp_path / "d.tar"
    done = run_process("pack", "/usr/bin/jq", "-o", str(out), env=_pack_env())
    assert done.returncode == 0, done.stderr
    a = Archive(out)
    assert a.config["created"] == a.config["history"][0]["created"] == "1980-01-02T00:00:00Z"
    assert {m.mtime for m in a.layer.getmembers()} == {DEFAULT_EPOCH}
    assert {m.mtime for m in a.outer.getmembers()} == {DEFAULT_EPOCH}
    unpacked = unpack_layer(out, tmp_path / "unpacked")
    script = ("import pathlib, sys, zipfile\n"
              "with zipfile.ZipFile(sys.argv[2], 'w') as z:\n"
              "    for p in sorted(pathlib.Path(sys.argv[1]).rglob('*')):\n"
              "        if p.is_file() and not p.is_symlink(): z.write(p)\n"
              "    print(min(i.date_time for i in z.infolist()))\n")
    done = subprocess.run([sys.executable, "-c", script, str(unpacked), str(tmp_path / "z.zip")],
                          capture_output=True, text=True, env=_pack_env(TZ="Etc/GMT+12"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "(1980, 1, 1, 12, 0, 0)\n"


def test_image_id_is_the_same_for_every_compression(tmp_path: Path) -> None:
    ids = set()
    for kind in ("gzip", "zstd", "none"):
        out = tmp_path / f"{kind}.tar"
        assert slimmer("pack", "/usr/bin/jq", "-o", str(out), "--compress", kind).returncode == 0
        ids.add(Archive(out).manifest["config"]["digest"])
    assert len(ids) == 1


# ---- bad input ---------------------------------------------------------------------------


def test_bad_inputs_leave_nothing_behind(tmp_path: Path, cc: Compile) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "image.tar"
    out.write_bytes(b"precious")
    (tmp_path / "text").write_text("not a program\n")
    (tmp_path / "trunc").write_bytes(Path("/usr/bin/jq").read_bytes()[:100])
    (tmp_path / "loop").symlink_to("loop")
    gone = cc("gone/libgone.so.3", "int g(void) { return 1; }\n", "-shared", "-fPIC",
              "-Wl,-soname,libgone.so.3")
    needy = cc("needy", main_source(), "-Wl,--no-as-needed", str(gone))
    gone.unlink()
    cases = [
        ((str(tmp_path / "text"),), ("text", "not an ELF file")),
        ((str(tmp_path / "trunc"),), ("trunc", "program headers run past the end")),
        ((str(tmp_path / "absent"),), ("absent", "no such file")),
        ((str(tmp_path),), ("is a directory",)),
        ((str(tmp_path / "loop"),), ("loop", "too many levels of symbolic links")),
        ((str(needy),), ("libgone.so.3 needed by", str(needy))),
    ]
    for args, words in cases:  # a missing library comes with its fix, on a hint: line
        error_line(slimmer("pack", *args, "-o", str(out)), *words, hint=args == (str(needy),))
        assert out.read_bytes() == b"precious"
        assert sorted(p.name for p in out_dir.iterdir()) == ["image.tar"]

    error_line(slimmer("pack", "/usr/bin/jq", "-o", str(tmp_path / "nodir/x.tar")),
               "does not exist")
    for bad in ("yesterday", "1.5", "-3", "0x10"):
        error_line(run_process("pack", "/usr/bin/jq", "-o", str(out),
                               env=_pack_env(SOURCE_DATE_EPOCH=bad)), "SOURCE_DATE_EPOCH")
    assert out.read_bytes() == b"precious"
    debug = slimmer("pack", "--debug", str(tmp_path / "text"), "-o", str(out))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_unwritable_output(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only directory")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        error_line(slimmer("pack", "/usr/bin/jq", "-o", str(ro / "x.tar")),
                   "cannot write", "Read-only file system")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_mixed_architectures_are_refused(tmp_path: Path, cc: Compile) -> None:
    p32 = cc("p32", main_source(), "-m32")
    error_line(slimmer("pack", "/usr/bin/jq", str(p32), "-o", str(tmp_path / "m.tar")),
               "different architectures", "i386", "x86_64")


def test_an_added_program_of_another_architecture_is_refused(tmp_path: Path,
                                                             cc: Compile) -> None:
    p32 = cc("p32", main_source(), "-m32", "-static")
    error_line(slimmer("pack", "/usr/bin/jq", "--add", f"{p32}:/usr/bin/p32", "-o",
                       str(tmp_path / "m.tar")),
               "/usr/bin/p32 is i386", "x86_64", "one architecture")
    assert not (tmp_path / "m.tar").exists()


def test_output_is_renamed_into_place(tmp_path: Path) -> None:
    out = tmp_path / "r.tar"
    out.write_bytes(b"old")
    assert slimmer("pack", "/usr/bin/jq", "-o", str(out)).returncode == 0
    assert tarfile.is_tarfile(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.tar"]


def test_python_api(tmp_path: Path) -> None:
    import slimmer

    root = tiny_root(tmp_path, b"api\n")
    result = slimmer.pack(["/bin/hello"], str(tmp_path / "api.tar"), root=str(root),
                          tag="api:1", compression="none")
    assert result.image.reference.short == "api:1"
    assert Archive(tmp_path / "api.tar").members()["bin/hello"].size == len(
        tiny_static_elf(b"api\n"))


def test_image_has_its_own_ld_so_cache(tmp_path: Path, cc: Compile) -> None:
    root = vendor_root(tmp_path, cc)
    out = tmp_path / "v.tar"
    done = slimmer("pack", "--root", str(root), "/usr/bin/vprog", "-o", str(out))
    assert done.returncode == 0, done.stderr
    unpacked = unpack_layer(out, tmp_path / "unpacked")
    listed = subprocess.run(["ldconfig", "-p", "-C", str(unpacked / "etc/ld.so.cache")],
                            capture_output=True, text=True, check=True).stdout
    assert "libv.so.1 (libc6,x86-64) => /opt/vendor/lib/libv.so.1" in listed
    assert "libc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6" in listed
    if os.geteuid() == 0:  # the real loader, inside the unpacked image alone, uses it
        run = subprocess.run(["chroot", str(unpacked), "/usr/bin/vprog"], capture_output=True,
                             text=True)
        assert run.stdout == "41\n", run.stderr


def test_scripts_name_their_interpreters(tmp_path: Path) -> None:
    from slimmer.loader.root import SysRoot
    from slimmer.loader.scripts import read_shebang

    cases = {
        b"#!/bin/sh\n": ("/bin/sh", "", None),
        b"#! /usr/bin/env python3\n": ("/usr/bin/env", "python3", "python3"),
        b"#!/usr/bin/env -S jq -f\n": ("/usr/bin/env", "-S jq -f", "jq"),
        b"#!/usr/bin/perl -w -T \n": ("/usr/bin/perl", "-w -T", None),
    }
    for i, (line, (interp, arg, env)) in enumerate(cases.items()):
        (tmp_path / f"s{i}").write_bytes(line + b"body\n")
        bang = read_shebang(SysRoot("/"), str(tmp_path / f"s{i}"))
        assert bang is not None
        assert (bang.interpreter, bang.argument, bang.env_program) == (interp, arg, env)
    (tmp_path / "rel").write_bytes(b"#!sh\n")
    error_line(slimmer("pack", str(tmp_path / "rel"), "-o", str(tmp_path / "x.tar")),
               "not an absolute path")
    (tmp_path / "nope").write_bytes(b"#!/usr/bin/env no-such-program-here\n")
    error_line(slimmer("pack", str(tmp_path / "nope"), "-o", str(tmp_path / "x.tar")),
               "no-such-program-here", "not found in PATH")


def test_packing_from_an_image_held_in_memory(tmp_path: Path) -> None:
    """The whole pipeline reads through a Root: here a FileTree (as an image being slimmed
    will be), whose files are host files and generated bytes, with no directory behind it."""
    from slimmer.assemble.placing import Placement, add_closure
    from slimmer.loader.resolve import Resolver
    from slimmer.loader.root import SysRoot
    from slimmer.loader.views import TreeRoot
    from slimmer.tree import File, FileTree

    host = SysRoot("/")
    image = FileTree()
    for program in ("/usr/bin/jq", "/bin/dash"):
        add_closure(image, host, Resolver(host).closure(program), Placement(None), False)
    image.add("/usr/bin/sh", Symlink("dash"), "test")  # /bin is a link to usr/bin
    message = tiny_static_elf(b"from memory\n")
    image.add("/opt/tiny", File(0o755, len(message), data=message), "test")
    image.add("/etc/ld.so.cache", File(0o644, 0, data=b""), "an empty cache: ignored")
    result = pack(*from_keywords(programs=("/usr/bin/jq", "/opt/tiny"),
                                 output=str(tmp_path / "m.tar"),
                                 with_features=frozenset({"shell"})),
                  root=TreeRoot(image))
    members = Archive(tmp_path / "m.tar").members()
    assert members["usr/bin/jq"].isfile() and members["opt/tiny"].size == len(message)
    assert members["usr/bin/sh"].linkname == "dash" and members["usr/bin/dash"].isfile()
    assert "usr/lib/x86_64-linux-gnu/libonig.so.5.3.0" in members
    assert result.tree.reasons["/usr/bin/jq"] == "program"


def test_a_newer_symbol_version_than_the_root_has_is_refused(tmp_path: Path,
                                                             cc: Compile) -> None:
    """A program built against a library that defines VER_2.0, packed from a root whose copy
    of that library stops at VER_1.0: refused with the version named (the loader would stop
    with "version `VER_2.0' not found")."""
    root = small_root(tmp_path, cc)
    scripts = {"old": "VER_1.0 { global: f; local: *; };\n",
               "new": "VER_1.0 { global: f; local: *; };\nVER_2.0 { global: g; } VER_1.0;\n"}
    libs = {}
    for name, script in scripts.items():
        (tmp_path / f"{name}.map").write_text(script)
        source = "int f(void) { return 1; }\n" + ("int g(void) { return 2; }\n"
                                                  if name == "new" else "")
        libs[name] = cc(f"{name}/libver.so.1", source, "-shared", "-fPIC",
                        "-Wl,-soname,libver.so.1", f"-Wl,--version-script={tmp_path}/{name}.map")
    cc(root / "usr/bin/vprog", main_source(("g",)), str(libs["new"]))
    shutil.copy(libs["old"], root / "usr/lib/x86_64-linux-gnu/libver.so.1")
    done = slimmer("pack", "--root", str(root), "/usr/bin/vprog", "-o", str(tmp_path / "v.tar"))
    error_line(done, "/usr/bin/vprog needs VER_2.0 from libver.so.1, which does not "
                     "define it")
    if os.geteuid() == 0:  # and the real loader agrees
        run = subprocess.run(["chroot", str(root), "/usr/bin/vprog"], capture_output=True,
                             text=True)
        assert run.returncode != 0 and "VER_2.0' not found" in run.stderr
    shutil.copy(libs["new"], root / "usr/lib/x86_64-linux-gnu/libver.so.1")
    ok = slimmer("pack", "--root", str(root), "/usr/bin/vprog", "-o", str(tmp_path / "v.tar"))
    assert ok.returncode == 0, ok.stderr
