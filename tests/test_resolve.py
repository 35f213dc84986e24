"""The resolver against small C programs built here, checked against the real loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from slimmer import Closure, Options, Resolver, SysRoot
from slimmer.loader.elf import Kind
from slimmer.loader.ldpaths import read_ld_so_conf
from tests.support.archives import Archive
from tests.support.cli import run as slimmer
from tests.support.compile import Compile, lib_source, main_source
from tests.support.host import host, need_tool
from tests.support.loader import HOST_LOADER, loader_list, parse_loader_list


def resolve(program: Path | str, root: str = "/", library_path: tuple[str, ...] = (),
            hwcaps: tuple[str, ...] = ()) -> Closure:
    options = Options(library_path=library_path, hwcaps=hwcaps)
    return Resolver(SysRoot(root), options).closure(str(program))


def as_oracle(closure: Closure, oracle: list[str]) -> list[str]:
    """Our answer in the shape loader_list gives. The real loader lists the interpreter where
    the breadth-first walk first needs it; our closure keeps it apart, so it is put where the
    oracle has it. When the oracle stopped at a missing library, ours must name it too."""
    missing = [f"MISSING:{m.soname}" for m in closure.missing]
    if len(oracle) == 1 and oracle[0].startswith("MISSING:"):
        return oracle if oracle[0] in missing else missing
    out = [lib.path for lib in closure.libraries]
    if closure.interpreter is not None:
        interp = closure.interpreter.path
        out.insert(oracle.index(interp) if interp in oracle else len(out), interp)
    return out + missing


def agree(program: Path, library_path: str = "") -> Closure:
    """Resolve and assert that the real loader opens the same files in the same order."""
    env = {"LD_LIBRARY_PATH": library_path} if library_path else {}
    lp = tuple(library_path.split(":")) if library_path else ()
    closure = Resolver(SysRoot("/"), host().options(lp)).closure(str(program))
    oracle = loader_list(program, env)
    assert as_oracle(closure, oracle) == oracle
    return closure


def via(closure: Closure) -> dict[str, tuple[str, str]]:
    return {lib.soname: (lib.path, lib.found_via) for lib in closure.libraries}


# ---- search order ------------------------------------------------------------------------


def test_rpath_beats_library_path_and_runpath_loses_to_it(cc: Compile, tmp_path: Path) -> None:
    for d in ("a", "b"):
        cc(f"{d}/libx.so", lib_source("x"), "-shared", "-fPIC")
    link = ("-L" + str(tmp_path / "a"), "-lx")
    with_rpath = cc("rp", main_source(("x",)), *link, f"-Wl,-rpath,{tmp_path}/a",
                    "-Wl,--disable-new-dtags")
    with_runpath = cc("rn", main_source(("x",)), *link, f"-Wl,-rpath,{tmp_path}/a",
                      "-Wl,--enable-new-dtags")
    b = str(tmp_path / "b")
    assert via(agree(with_rpath, b))["libx.so"] == (f"{tmp_path}/a/libx.so", "rpath")
    assert via(agree(with_runpath, b))["libx.so"] == (f"{b}/libx.so", "library-path")
    assert via(agree(with_runpath))["libx.so"] == (f"{tmp_path}/a/libx.so", "runpath")


def test_rpath_is_inherited_runpath_is_not(cc: Compile, tmp_path: Path) -> None:
    cc("deep/liby.so", lib_source("y"), "-shared", "-fPIC")
    cc("mid/libx.so", lib_source("x", ("y",)), "-shared", "-fPIC", f"-L{tmp_path}/deep", "-ly")
    link = (f"-L{tmp_path}/mid", "-lx", f"-Wl,-rpath-link,{tmp_path}/deep",
            f"-Wl,-rpath,{tmp_path}/mid:{tmp_path}/deep")
    rpath = cc("rp", main_source(("x",)), *link, "-Wl,--disable-new-dtags")
    runpath = cc("rn", main_source(("x",)), *link, "-Wl,--enable-new-dtags")

    inherited = agree(rpath)
    assert via(inherited)["liby.so"] == (f"{tmp_path}/deep/liby.so", "rpath")
    needed_by = {lib.soname: lib.needed_by for lib in inherited.libraries}
    assert needed_by["liby.so"] == f"{tmp_path}/mid/libx.so"

    not_inherited = agree(runpath)
    assert [m.soname for m in not_inherited.missing] == ["liby.so"]
    missing = not_inherited.missing[0]
    assert missing.needed_by == f"{tmp_path}/mid/libx.so"
    assert "/etc/ld.so.cache (liby.so not listed)" in missing.searched
    assert "/usr/lib/liby.so" in missing.searched  # every default directory is named
    assert not any("deep" in s for s in missing.searched)


def test_origin_through_a_symlinked_directory(cc: Compile, tmp_path: Path) -> None:
    # The program really lives in pkg/bin; app/bin is a symlink to it. $ORIGIN of the program
    # is its real directory; $ORIGIN of a library is the directory it was opened through.
    cc("pkg/lib/real/libz2.so", lib_source("z2"), "-shared", "-fPIC")
    (tmp_path / "pkg/lib/linked").symlink_to("real")
    cc("pkg/lib/libx.so", lib_source("x", ("z2",)), "-shared", "-fPIC",
       f"-L{tmp_path}/pkg/lib/real", "-lz2", "-Wl,-rpath,$ORIGIN/linked")
    cc("pkg/bin/prog", main_source(("x",)), f"-L{tmp_path}/pkg/lib", "-lx",
       f"-Wl,-rpath-link,{tmp_path}/pkg/lib/real", "-Wl,-rpath,$ORIGIN/../lib")
    (tmp_path / "app").mkdir()
    (tmp_path / "app/bin").symlink_to("../pkg/bin")
    closure = resolve(tmp_path / "app/bin/prog")
    assert via(closure)["libx.so"] == (f"{tmp_path}/pkg/bin/../lib/libx.so", "runpath")
    z2 = next(lib for lib in closure.libraries if lib.soname == "libz2.so")
    assert z2.path == f"{tmp_path}/pkg/bin/../lib/linked/libz2.so"
    assert z2.real == f"{tmp_path}/pkg/lib/real/libz2.so"
    assert [link.path for link in z2.links] == [f"{tmp_path}/pkg/lib/linked"]
    # The real loader, started through the symlink, agrees (oracle gets the real path, as the
    # kernel's /proc/self/exe would give it).
    oracle = loader_list(tmp_path / "pkg/bin/prog")
    assert as_oracle(closure, oracle) == oracle
    run = subprocess.run([str(tmp_path / "app/bin/prog")], capture_output=True, text=True)
    assert run.stdout == "2\n"


def test_lib_and_platform_tokens(cc: Compile, tmp_path: Path) -> None:
    # $PLATFORM is the CPU's: x86_64, or haswell on an Intel CPU with AVX2 (tests/support/host.py).
    triplet, platform = "x86_64-linux-gnu", host().platform
    cc(f"t/lib/{triplet}/liba.so", lib_source("a"), "-shared", "-fPIC")
    cc(f"t/{platform}/libb.so", lib_source("b"), "-shared", "-fPIC")
    prog = cc("t/bin/prog", main_source(("a", "b")), f"-L{tmp_path}/t/lib/{triplet}",
              f"-L{tmp_path}/t/{platform}", "-la", "-lb",
              "-Wl,-rpath,$ORIGIN/../$LIB:${ORIGIN}/../$PLATFORM")
    closure = agree(prog)
    assert via(closure)["liba.so"][0] == f"{tmp_path}/t/bin/../lib/{triplet}/liba.so"
    assert via(closure)["libb.so"][0] == f"{tmp_path}/t/bin/../{platform}/libb.so"
    # and for a CPU of the other kind, whatever this one is
    for other in ("x86_64", "haswell"):
        got = Resolver(SysRoot("/"), Options(platform=other)).closure(str(prog))
        libb = via(got).get("libb.so")
        assert (libb is not None) == (other == platform)
        if other != platform:
            assert [m.soname for m in got.missing] == ["libb.so"]


def test_wrong_class_library_earlier_in_the_path_is_skipped(cc: Compile, tmp_path: Path) -> None:
    cc("m32/libx.so", lib_source("x"), "-shared", "-fPIC", "-m32")
    cc("m64/libx.so", lib_source("x"), "-shared", "-fPIC")
    prog = cc("prog", main_source(("x",)), f"-L{tmp_path}/m64", "-lx",
              f"-Wl,-rpath,{tmp_path}/m32:{tmp_path}/m64")
    closure = agree(prog)
    assert via(closure)["libx.so"] == (f"{tmp_path}/m64/libx.so", "runpath")


def test_a_32_bit_program_uses_its_own_loader_and_directories(cc: Compile) -> None:
    prog = cc("prog32", main_source(), "-m32")
    closure = resolve(prog)
    assert closure.elf.arch_name == "i386"
    assert closure.interpreter is not None
    assert closure.interpreter.path == "/lib/ld-linux.so.2"
    oracle = loader_list(prog, loader="/lib/ld-linux.so.2")
    assert as_oracle(closure, oracle) == oracle


def test_first_object_loaded_for_a_soname_wins(cc: Compile, tmp_path: Path) -> None:
    # libshared.so.1 exists twice; liba finds the copy in one/, libb would find two/ through its
    # own RUNPATH, but liba's copy was loaded first and is reused for the whole process.
    for d in ("one", "two"):
        cc(f"{d}/libshared.so.1", lib_source("shared"), "-shared", "-fPIC",
           "-Wl,-soname,libshared.so.1")
    cc("a/liba.so", lib_source("a", ("shared",)), "-shared", "-fPIC",
       f"{tmp_path}/one/libshared.so.1", f"-Wl,-rpath,{tmp_path}/one")
    cc("b/libb.so", lib_source("b", ("shared",)), "-shared", "-fPIC",
       f"{tmp_path}/two/libshared.so.1", f"-Wl,-rpath,{tmp_path}/two")
    prog = cc("prog", main_source(("a", "b")), f"-L{tmp_path}/a", f"-L{tmp_path}/b", "-la", "-lb",
              f"-Wl,-rpath,{tmp_path}/a:{tmp_path}/b", f"-Wl,-rpath-link,{tmp_path}/one")
    closure = agree(prog)
    shared = [lib for lib in closure.libraries if lib.soname == "libshared.so.1"]
    assert [lib.path for lib in shared] == [f"{tmp_path}/one/libshared.so.1"]


def test_breadth_first_order_and_needed_by(cc: Compile, tmp_path: Path) -> None:
    cc("l/libd.so", lib_source("d"), "-shared", "-fPIC")
    cc("l/libc2.so", lib_source("c2", ("d",)), "-shared", "-fPIC", f"-L{tmp_path}/l", "-ld")
    cc("l/libb.so", lib_source("b"), "-shared", "-fPIC")
    cc("l/liba.so", lib_source("a", ("c2",)), "-shared", "-fPIC", f"-L{tmp_path}/l", "-lc2",
       "-Wl,--no-as-needed")
    prog = cc("prog", main_source(("a", "b")), f"-L{tmp_path}/l", "-la", "-lb",
              f"-Wl,-rpath,{tmp_path}/l", "-Wl,--disable-new-dtags")
    closure = agree(prog)
    order = [lib.soname for lib in closure.libraries]
    assert order.index("libb.so") < order.index("libc2.so") < order.index("libd.so")
    needed_by = {lib.soname: lib.needed_by for lib in closure.libraries}
    assert needed_by["libd.so"] == f"{tmp_path}/l/libc2.so"


def test_nodeflib_skips_default_directories_and_cache(cc: Compile, tmp_path: Path) -> None:
    prog = cc("prog", main_source(), "-Wl,-z,nodefaultlib")
    closure = resolve(prog)
    assert [m.soname for m in closure.missing] == ["libc.so.6"]
    assert loader_list(prog) == ["MISSING:libc.so.6"]
    assert "/etc/ld.so.cache (skipped: DF_1_NODEFLIB)" in closure.missing[0].searched
    found = resolve(prog, library_path=("/lib/x86_64-linux-gnu",))
    assert via(found)["libc.so.6"] == ("/lib/x86_64-linux-gnu/libc.so.6", "library-path")


def test_name_with_a_slash_is_opened_as_a_path(cc: Compile, tmp_path: Path) -> None:
    lib = cc("p/libslash.so", lib_source("slash"), "-shared", "-fPIC")
    prog = cc("prog", main_source(("slash",)), str(lib))  # no soname: DT_NEEDED is the path
    closure = agree(prog)
    assert via(closure)[str(lib)] == (str(lib), "path")


def test_hwcaps_variants_are_reported_and_baseline_is_default(cc: Compile, tmp_path: Path) -> None:
    cc("h/libx.so", lib_source("x"), "-shared", "-fPIC")
    cc("h/glibc-hwcaps/x86-64-v2/libx.so", lib_source("x"), "-shared", "-fPIC")
    prog = cc("prog", main_source(("x",)), f"-L{tmp_path}/h", "-lx", f"-Wl,-rpath,{tmp_path}/h")
    baseline = resolve(prog)
    lib = baseline.libraries[0]
    assert (lib.path, lib.found_via) == (f"{tmp_path}/h/libx.so", "runpath")
    assert lib.hwcaps == (f"{tmp_path}/h/glibc-hwcaps/x86-64-v2/libx.so",)
    supported = host().hwcaps
    if "x86-64-v2" not in supported:
        pytest.skip("this CPU has no x86-64-v2 support")
    tuned = Resolver(SysRoot("/"), host().options()).closure(str(prog))
    assert via(tuned)["libx.so"] == (f"{tmp_path}/h/glibc-hwcaps/x86-64-v2/libx.so", "hwcaps")
    oracle = loader_list(prog)
    assert as_oracle(tuned, oracle) == oracle


# ---- kinds -------------------------------------------------------------------------------


def test_static_and_static_pie(cc: Compile) -> None:
    static = cc("static", main_source(), "-static")
    spie = cc("spie", main_source(), "-static-pie")
    assert resolve(static).kind is Kind.STATIC
    assert resolve(spie).kind is Kind.STATIC_PIE
    for prog in (static, spie):
        closure = resolve(prog)
        assert closure.interpreter is None and closure.libraries == () and closure.missing == ()
        assert closure.files() == (str(prog),)


def test_shared_library_as_the_program(cc: Compile, tmp_path: Path) -> None:
    lib = cc("libq.so", "#include <stdio.h>\nvoid q(void) { puts(\"q\"); }\n", "-shared",
             "-fPIC")
    closure = resolve(lib)
    assert closure.kind is Kind.SHARED_LIBRARY
    assert via(closure)["libc.so.6"][1] == "cache"


# ---- musl --------------------------------------------------------------------------------


def test_musl_program(cc: Compile, tmp_path: Path) -> None:
    need_tool("musl-gcc")
    cc("mlib/libm1.so", lib_source("m1"), "-shared", "-fPIC", compiler="musl-gcc")
    prog = cc("mprog", main_source(("m1",)), f"-L{tmp_path}/mlib", "-lm1",
              "-Wl,-rpath,$ORIGIN/mlib", compiler="musl-gcc")
    closure = resolve(prog)
    assert closure.elf.is_musl
    assert closure.interpreter is not None
    assert closure.interpreter.path == "/lib/ld-musl-x86_64.so.1"
    # libc.so is the loader itself, never searched for.
    assert via(closure) == {"libm1.so": (f"{tmp_path}/mlib/libm1.so", "runpath")}
    oracle = loader_list(prog, loader="/lib/ld-musl-x86_64.so.1")
    assert f"{tmp_path}/mlib/libm1.so" in oracle
    run = subprocess.run([str(prog)], capture_output=True, text=True)
    assert run.stdout == "1\n"


def test_musl_path_file_and_inherited_runpath(tmp_path: Path, cc: Compile) -> None:
    need_tool("musl-gcc")
    root = tmp_path / "root"
    cc(root / "opt/deep/libd.so", lib_source("d"), "-shared", "-fPIC", compiler="musl-gcc")
    cc(root / "opt/mid/libm2.so", lib_source("m2", ("d",)), "-shared", "-fPIC",
       f"-L{root}/opt/deep", "-ld", compiler="musl-gcc")
    cc(root / "usr/bin/prog", main_source(("m2",)), f"-L{root}/opt/mid", "-lm2",
       f"-Wl,-rpath-link,{root}/opt/deep", "-Wl,-rpath,/opt/mid:/opt/deep",
       "-Wl,--enable-new-dtags", compiler="musl-gcc")
    cc(root / "srv/libz9.so", lib_source("z9"), "-shared", "-fPIC", compiler="musl-gcc")
    (root / "lib").mkdir()
    shutil.copy("/lib/ld-musl-x86_64.so.1", root / "lib/ld-musl-x86_64.so.1")
    closure = resolve("/usr/bin/prog", root=str(root))
    # musl inherits DT_RUNPATH down the needed-by chain, unlike glibc.
    assert via(closure)["libd.so"] == ("/opt/deep/libd.so", "runpath")

    (root / "etc").mkdir()
    (root / "etc/ld-musl-x86_64.path").write_text("/srv\n")
    cc(root / "usr/bin/prog2", main_source(("z9",)), f"-L{root}/srv", "-lz9", compiler="musl-gcc")
    assert via(resolve("/usr/bin/prog2", root=str(root)))["libz9.so"] == (
        "/srv/libz9.so", "path-file")


# ---- roots -------------------------------------------------------------------------------


def _copy_real(src: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath(src), dest)


def make_root(tmp_path: Path, cc: Compile) -> Path:
    """A small Debian-like root: merged /usr, absolute symlinks, no ld.so.cache."""
    root = tmp_path / "root"
    gnu = root / "usr/lib/x86_64-linux-gnu"
    _copy_real("/lib/x86_64-linux-gnu/libc.so.6", gnu / "libc.so.6")
    _copy_real("/lib64/ld-linux-x86-64.so.2", gnu / "ld-linux-x86-64.so.2")
    (root / "lib").symlink_to("usr/lib")
    (root / "usr/lib64").mkdir(parents=True)
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    (root / "lib64").symlink_to("usr/lib64")
    cc(root / "usr/bin/hello", main_source())
    return root


def test_root_with_absolute_symlinks_never_reaches_the_host(cc: Compile, tmp_path: Path) -> None:
    root = make_root(tmp_path, cc)
    gnu = root / "usr/lib/x86_64-linux-gnu"
    # Links that would lead into the host if followed naively: an absolute link to a host
    # library, and a relative one that climbs far above the root.
    (gnu / "libz.so.1").symlink_to(os.path.realpath("/usr/lib/x86_64-linux-gnu/libz.so.1"))
    jq_real = os.path.realpath("/usr/lib/x86_64-linux-gnu/libjq.so.1")
    (gnu / "libjq.so.1").symlink_to("../../../../../../../.." + jq_real)
    assert os.path.exists(gnu / "libz.so.1")  # on the host, these links do lead somewhere
    stubs = [cc(f"stub/{n}", lib_source(n.split(".")[0]), "-shared", "-fPIC", f"-Wl,-soname,{n}")
             for n in ("libz.so.1", "libjq.so.1")]
    cc(root / "usr/bin/prog", main_source(), "-Wl,--no-as-needed", *map(str, stubs))
    closure = resolve("/usr/bin/hello", root=str(root))
    assert closure.missing == ()
    assert closure.interpreter is not None
    assert closure.interpreter.real == "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert [link.path for link in closure.interpreter.links] == [
        "/lib64", "/usr/lib64/ld-linux-x86-64.so.2", "/lib"]
    assert via(closure)["libc.so.6"] == ("/lib/x86_64-linux-gnu/libc.so.6", "default")

    evil = resolve("/usr/bin/prog", root=str(root))
    assert sorted(m.soname for m in evil.missing) == ["libjq.so.1", "libz.so.1"]
    (gnu / "libjq.so.1").unlink()
    (gnu / "libjq.so.1").symlink_to("../../../../../../../../lib/x86_64-linux-gnu/libjq.so.1")
    loop = resolve("/usr/bin/prog", root=str(root))
    assert [m.reason for m in loop.missing if m.soname == "libjq.so.1"] == [
        "/lib/x86_64-linux-gnu/libjq.so.1: too many levels of symbolic links"]
    # and the chroot agrees: the program cannot start there
    if os.geteuid() == 0:
        run = subprocess.run(["chroot", str(root), "/usr/bin/prog"], capture_output=True,
                             text=True)
        assert run.returncode != 0 and "libz.so.1" in run.stderr
        ok = subprocess.run(["chroot", str(root), "/usr/bin/hello"], capture_output=True,
                            text=True)
        assert ok.stdout == "0\n"


def test_ld_so_conf_stands_in_for_a_missing_cache(cc: Compile, tmp_path: Path) -> None:
    root = make_root(tmp_path, cc)
    cc(root / "opt/vendor/lib/libv.so.1", lib_source("v"), "-shared", "-fPIC",
       "-Wl,-soname,libv.so.1")
    cc(root / "usr/bin/vprog", main_source(("v",)), f"{root}/opt/vendor/lib/libv.so.1")
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("# comment\ninclude /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/vendor.conf").write_text("/opt/vendor/lib  # trailing\n")
    closure = resolve("/usr/bin/vprog", root=str(root))
    assert via(closure)["libv.so.1"] == ("/opt/vendor/lib/libv.so.1", "ld.so.conf")

    # With a cache, only the cache counts (ld.so never reads ld.so.conf): build one with the
    # real ldconfig inside the root, then drop the directory from the conf.
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    (root / "etc/ld.so.conf.d/vendor.conf").write_text("")
    cached = resolve("/usr/bin/vprog", root=str(root))
    assert via(cached)["libv.so.1"] == ("/opt/vendor/lib/libv.so.1", "cache")
    if os.geteuid() == 0:
        run = subprocess.run(["chroot", str(root), "/usr/bin/vprog"], capture_output=True,
                             text=True)
        assert run.stdout == "1\n"


def test_missing_interpreter_is_reported(cc: Compile, tmp_path: Path) -> None:
    root = tmp_path / "r"
    cc(root / "bin/prog", main_source())
    closure = resolve("/bin/prog", root=str(root))
    assert closure.interpreter is None
    assert closure.missing[0].soname == HOST_LOADER
    assert closure.missing[0].reason == "interpreter not found"


def test_ld_so_conf_files_that_include_each_other_are_read_once(tmp_path: Path) -> None:
    # Each of 12 files names its directory and includes all the others: read along every
    # include chain this is 12! readings; ldconfig's answer needs each file once.
    conf_d = tmp_path / "etc/ld.so.conf.d"
    conf_d.mkdir(parents=True)
    (tmp_path / "etc/ld.so.conf").write_text("/first\ninclude ld.so.conf.d/*.conf\n/last\n")
    for i in range(12):
        (conf_d / f"{i:02}.conf").write_text(f"/opt/d{i:02}\ninclude *.conf\n"
                                             "include /etc/ld.so.conf\n")

    reads: list[str] = []

    class Counting(SysRoot):
        def read_real(self, real: str, limit: int | None = None) -> bytes:
            reads.append(real)
            return super().read_real(real, limit)

    root = Counting(tmp_path)
    started = time.monotonic()
    dirs = read_ld_so_conf(root)
    assert time.monotonic() - started < 5
    assert dirs == ("/first", *(f"/opt/d{i:02}" for i in range(12)), "/last")
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 13


def test_a_search_directory_that_is_a_symlink_loop_is_skipped(cc: Compile,
                                                              tmp_path: Path) -> None:
    # glibc stat()s a directory it could not open the library in; ELOOP marks it nonexisting
    # and the search goes on. A loop at the library itself, in a directory that exists, stops
    # the program (test_root_with_absolute_symlinks_never_reaches_the_host).
    cc("good/libx.so", lib_source("x"), "-shared", "-fPIC")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "l1").symlink_to("l2")
    (tmp_path / "l2").symlink_to("l1")
    rpath = f"{tmp_path}/loop:{tmp_path}/l1/sub:{tmp_path}/good"
    for tags in ("--disable-new-dtags", "--enable-new-dtags"):
        prog = cc("prog", main_source(("x",)), f"-L{tmp_path}/good", "-lx",
                  f"-Wl,-rpath,{rpath}", f"-Wl,{tags}")
        closure = agree(prog)
        assert via(closure)["libx.so"][0] == f"{tmp_path}/good/libx.so"
    closure = agree(prog, library_path=f"{tmp_path}/loop")
    assert via(closure)["libx.so"][0] == f"{tmp_path}/good/libx.so"


def test_a_relative_library_path_is_relative_to_the_working_directory(cc: Compile,
                                                                      tmp_path: Path) -> None:
    cc("work/lib/libx.so", lib_source("x"), "-shared", "-fPIC")
    cc("work/prog", main_source(("x",)), f"-L{tmp_path}/work/lib", "-lx")
    done = slimmer("deps", "--json", "--library-path", "lib", "prog", cwd=tmp_path / "work")
    assert done.returncode == 0, done.stderr
    (found,) = json.loads(done.stdout)
    libx = next(lib for lib in found["libraries"] if lib["soname"] == "libx.so")
    assert (libx["path"], libx["found_via"]) == (f"{tmp_path}/work/lib/libx.so", "library-path")
    oracle = loader_list(tmp_path / "work/prog", {"LD_LIBRARY_PATH": f"{tmp_path}/work/lib"})
    assert libx["path"] in oracle


LEGACY = {  # library -> the subdirectories of the search directory holding a copy of it
    "liba.so": ("haswell", "x86_64", ""),
    "libb.so": ("tls", ""),
    "libc2.so": ("tls/haswell", "x86_64/x86_64", ""),
    "libd.so": ("tls/haswell/x86_64", "haswell/x86_64", "tls/x86_64", ""),
    "libe.so": ("avx512_1", ""),
}
EXPECTED = {  # where glibc 2.36 finds each, by $PLATFORM (hwcap names: x86_64 only)
    "haswell": {"liba.so": "haswell", "libb.so": "tls", "libc2.so": "tls/haswell",
                "libd.so": "tls/haswell/x86_64", "libe.so": ""},
    "x86_64": {"liba.so": "x86_64", "libb.so": "tls", "libc2.so": "x86_64/x86_64",
               "libd.so": "tls/x86_64", "libe.so": ""},
}


@pytest.mark.parametrize("tags", ["--disable-new-dtags", "--enable-new-dtags", "library-path"])
def test_legacy_hwcaps_subdirectories(cc: Compile, tmp_path: Path, tags: str) -> None:
    # glibc 2.36 still tries tls/, the platform and the hwcap names (all combinations) under
    # every search directory, after glibc-hwcaps/ and before the directory itself.
    for name, subdirs in LEGACY.items():
        for sub in subdirs:
            cc(f"d/{sub}/{name}".replace("//", "/"), lib_source(name[3:-3]), "-shared", "-fPIC")
    names = [n[3:-3] for n in LEGACY]
    link = [f"-L{tmp_path}/d", *(f"-l{n}" for n in names), "-Wl,--no-as-needed"]
    if tags == "library-path":
        prog = cc("prog", main_source(tuple(names)), *link)
        closure = agree(prog, library_path=f"{tmp_path}/d")
    else:
        prog = cc("prog", main_source(tuple(names)), *link, f"-Wl,-rpath,{tmp_path}/d",
                  f"-Wl,{tags}")
        closure = agree(prog)  # the real loader, on this machine's CPU
    lp = (f"{tmp_path}/d",) if tags == "library-path" else ()
    for platform, expected in EXPECTED.items():
        options = Options(library_path=lp, platform=platform, legacy_hwcaps=("x86_64",))
        got = Resolver(SysRoot("/"), options).closure(str(prog))
        assert {k: v[0] for k, v in via(got).items() if k in LEGACY} == {
            k: f"{tmp_path}/d/{v}/{k}".replace("//", "/") for k, v in expected.items()}
    assert via(closure)["liba.so"][0] == f"{tmp_path}/d/{host().platform}/liba.so"


def test_legacy_hwcaps_entries_of_the_cache(cc: Compile, tmp_path: Path) -> None:
    # ldconfig 2.36 lists libraries of tls/, platform and hwcap subdirectories with hwcap bits;
    # ld.so 2.36 takes the first entry whose bits the CPU has.
    root = make_root(tmp_path, cc)
    for sub in ("", "x86_64/", "haswell/"):
        cc(root / f"opt/v/lib/{sub}libv.so.1", lib_source("v"), "-shared", "-fPIC",
           "-Wl,-soname,libv.so.1")
    for sub in ("", "tls/"):
        cc(root / f"opt/v/lib/{sub}libw.so.1", lib_source("w"), "-shared", "-fPIC",
           "-Wl,-soname,libw.so.1")
    cc(root / "usr/bin/vprog", main_source(("v", "w")), f"{root}/opt/v/lib/libv.so.1",
       f"{root}/opt/v/lib/libw.so.1")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/opt/v/lib\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    for platform in ("haswell", "x86_64"):
        options = Options(platform=platform, legacy_hwcaps=("x86_64",))
        closure = Resolver(SysRoot(root), options).closure("/usr/bin/vprog")
        assert via(closure)["libv.so.1"] == (f"/opt/v/lib/{platform}/libv.so.1", "cache")
        assert via(closure)["libw.so.1"] == ("/opt/v/lib/tls/libw.so.1", "cache")
    if os.geteuid() == 0:  # the root's own loader, on this machine's CPU
        closure = Resolver(SysRoot(root), host().options()).closure("/usr/bin/vprog")
        done = subprocess.run(["/usr/sbin/chroot", str(root), HOST_LOADER, "--list",
                               "/usr/bin/vprog"], capture_output=True, text=True, env={})
        oracle = parse_loader_list(done)
        assert as_oracle(closure, oracle) == oracle


def test_pack_takes_the_platform_of_the_target_cpu(cc: Compile, tmp_path: Path) -> None:
    for sub in ("haswell", "x86_64"):
        cc(f"d/{sub}/libx.so", lib_source("x"), "-shared", "-fPIC")
    prog = cc("prog", main_source(("x",)), f"-L{tmp_path}/d/x86_64", "-lx",
              f"-Wl,-rpath,{tmp_path}/d")
    for platform in ("haswell", "x86_64"):
        out = tmp_path / f"{platform}.tar"
        done = slimmer("pack", str(prog), "-o", str(out), "--platform", platform, "--hwcaps",
                       "x86-64-v2")
        assert done.returncode == 0, done.stderr
        libs = [n for n in Archive(out).members() if n.endswith("/libx.so")]
        assert [n.rsplit("/", 2)[1] for n in libs] == [platform], libs
