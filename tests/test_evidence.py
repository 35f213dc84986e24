"""Evidence beyond DT_NEEDED (evidence.py, loader/dpkg.py, loader/strings.py) on a tiny root: a
fake dpkg database (status and info/*.list) over compiled C fixtures that hold path strings and
import popen and dlopen. Exact expectations about what is kept, why, and what is not."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from slimmer.assemble.evidence import is_shared_object
from slimmer.assemble.options import from_keywords
from slimmer.assemble.pack import PackResult, pack
from slimmer.loader.dpkg import PackageDb
from slimmer.loader.root import SysRoot
from slimmer.loader.strings import literals
from tests.support.archives import Archive, Member, docker_archive, layer_tar
from tests.support.cli import run as slimmer
from tests.support.compile import Compile
from tests.support.host import need_tool
from tests.support.roots import host_libc_root

GNU = "/usr/lib/x86_64-linux-gnu"
CORE = f"{GNU}/libappcore.so.1"
SHOWN = "/lib/x86_64-linux-gnu/libappcore.so.1"  # as the loader finds it: reasons name this
CORE_SOURCE = r"""
#include <stdio.h>
#include <dlfcn.h>
const char *const app_paths[] = {
    "/usr/share/app/data", "/etc/app", "/usr/share/misc/appmagic", "/usr/share",
    "/usr/share/other", "/usr/share/big", "/usr/share/zoneinfo/%s", "/usr/share/doc/app",
    "libplug.so.1", "libabsent.so.9", "/var/run/app", 0};
int appcore(void) {
    FILE *f = popen("true", "r");
    if (f) pclose(f);
    return dlopen(app_paths[8], RTLD_NOW) != 0;
}
"""
COMPUTED_SOURCE = r"""
#include <stdio.h>
#include <dlfcn.h>
int computed(const char *name) {
    char buf[64];
    snprintf(buf, sizeof buf, "lib%s.so", name);
    return dlopen(buf, RTLD_NOW) != 0;
}
"""
APP_SOURCE = "int appcore(void); int computed(const char *);\n" \
             "int main(void) { return appcore() + computed(\"x\"); }\n"

# package -> (Depends, Provides, files it lists)
PACKAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "app": ("libappcore1, libc6 (>= 2.34)", "", ("/usr/bin/app",)),
    "libappcore1": (
        "libc6, app-common (= 1.0), app-mgc, app-fonts | app-fonts-alt, virtual-data, app-ext",
        "", ("/usr/lib/x86_64-linux-gnu/libappcore.so.1", "/lib/x86_64-linux-gnu/"
             "libcomputed.so.1", "/usr/share/app", "/usr/share/app/data",
             "/usr/share/app/data/x.dat", "/usr/share/app/data/sub/y.dat",
             "/usr/share/app/data/include/z.h", "/usr/share/big", "/usr/share/big/huge.bin")),
    "app-common": ("debconf", "", (
        "/etc/app", "/etc/app/app.conf", "/usr/share/app-common/data.txt",
        "/usr/share/doc/app-common/README", "/usr/share/man/man1/app.1.gz",
        "/usr/share/locale/de/LC_MESSAGES/app.mo", "/usr/share/lintian/overrides/app-common",
        "/usr/lib/x86_64-linux-gnu/pkgconfig/app.pc")),
    "app-mgc": ("", "", ("/usr/share/misc/appmagic.mgc",)),
    "app-fonts-alt": ("", "", ("/usr/share/fonts/alt.ttf",)),
    "app-provider": ("", "virtual-data", ("/usr/share/provided/p.txt",)),
    "app-ext": ("", "", ("/usr/lib/x86_64-linux-gnu/libext.so.1",
                         "/usr/share/app-ext/ext.dat")),
    "debconf": ("", "", ("/usr/share/debconf/confmodule",)),
    "libplug1": ("", "", ("/usr/lib/x86_64-linux-gnu/libplug.so.1",)),
    "other": ("", "", ("/usr/share/other", "/usr/share/other/o.txt", "/usr/share/app-unrelated")),
    "libc6": ("", "", ("/usr/lib/x86_64-linux-gnu/libc.so.6",)),
}
DIRECTORIES = {"/usr/share/app", "/usr/share/app/data", "/usr/share/big", "/etc/app",
               "/usr/share/other", "/usr/share/app-unrelated"}


def write(path: Path, data: bytes | str = b"x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def dpkg_database(root: Path, packages: dict[str, tuple[str, str, tuple[str, ...]]]) -> None:
    stanzas = []
    for name, (depends, provides, files) in packages.items():
        lines = [f"Package: {name}", "Status: install ok installed", "Architecture: amd64",
                 "Version: 1.0"]
        lines += [f"Depends: {depends}"] if depends else []
        lines += [f"Provides: {provides}"] if provides else []
        stanzas.append("\n".join(lines) + "\n")
        write(root / f"var/lib/dpkg/info/{name}.list", "/.\n" + "".join(f"{f}\n" for f in files))
    stanzas.append("Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n")
    write(root / "var/lib/dpkg/status", "\n".join(stanzas))


@pytest.fixture
def app_root(tmp_path: Path, cc: Compile) -> Path:
    root = host_libc_root(tmp_path / "root", ("libc.so.6",))
    lib = root / GNU[1:]
    cc(lib / "libplug.so.1", "int plug(void) { return 1; }\n", "-shared", "-fPIC",
       "-Wl,-soname,libplug.so.1")
    cc(lib / "libext.so.1", "int ext(void) { return 1; }\n", "-shared", "-fPIC",
       "-Wl,-soname,libext.so.1")
    core = cc(lib / "libappcore.so.1", CORE_SOURCE, "-shared", "-fPIC",
              "-Wl,-soname,libappcore.so.1")
    computed = cc(lib / "libcomputed.so.1", COMPUTED_SOURCE, "-shared", "-fPIC",
                  "-Wl,-soname,libcomputed.so.1")
    cc(root / "usr/bin/app", APP_SOURCE, str(core), str(computed))
    shutil.copy("/usr/bin/dash", root / "usr/bin/dash")
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/bin/sh").symlink_to("dash")
    for listed in (f for _, _, files in PACKAGES.values() for f in files):
        target = root / listed[1:]  # /lib is /usr/lib here
        if listed in DIRECTORIES:
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            write(target)
    with open(root / "usr/share/big/huge.bin", "wb") as fh:  # sparse: 65 MB that cost nothing
        fh.truncate(65 << 20)
    write(root / "usr/share/app/data/unowned.dat")  # put there by a maintainer script
    gone = cc(tmp_path / "gone/libgone.so.1", "int gone(void) { return 1; }\n", "-shared",
              "-fPIC", "-Wl,-soname,libgone.so.1")
    cc(root / "usr/share/app/data/plugin.so", "int gone(void); int plugin(void) "
       "{ return gone(); }\n", "-shared", "-fPIC", str(gone))  # libgone.so.1: not in the root
    write(root / "usr/share/outside/target.dat")
    (root / "usr/share/app/data/linked.dat").symlink_to("/usr/share/outside/target.dat")
    write(root / "usr/share/zoneinfo/UTC", b"TZif2")
    write(root / "var/run/app/app.pid", b"7\n")  # the run-time directory, with a stale pid
    dpkg_database(root, PACKAGES)
    return root


def pack_app(tmp_path: Path, root: Path, **options: object) -> PackResult:
    return pack(*from_keywords(programs=("/usr/bin/app",), output=str(tmp_path / "o.tar"),
                               root=str(root), **options))


def test_literals_finds_paths_and_library_names(app_root: Path) -> None:
    found = literals((app_root / CORE[1:]).read_bytes())
    assert {"/usr/share/app/data", "/etc/app", "/usr/share/misc/appmagic",
            "/usr/share/zoneinfo/%s"} <= set(found.paths)
    assert {"libplug.so.1", "libabsent.so.9"} <= set(found.libraries)
    assert literals(b"not an ELF file /usr/share/x\x00") == ((), (), ())


def test_package_database(app_root: Path) -> None:
    db = PackageDb(SysRoot(str(app_root)))
    assert "removed" not in db.entries
    # alternatives: the installed one; a virtual package: its provider; debconf as listed
    assert db.depends("libappcore1") == ["libc6", "app-common", "app-mgc", "app-fonts-alt",
                                         "app-provider", "app-ext"]
    # /lib/x86_64-linux-gnu is /usr/lib/x86_64-linux-gnu in this root (merged /usr)
    assert db.owners_of(f"{GNU}/libcomputed.so.1") == ["libappcore1"]
    assert db.ships_elf("app-ext") and not db.ships_elf("app-common")


def test_what_evidence_keeps_and_why(tmp_path: Path, app_root: Path) -> None:
    result = pack_app(tmp_path, app_root)
    tree, why = result.tree, result.tree.reasons
    data = "data package {}, a dependency of libappcore1"
    assert why["/etc/app/app.conf"] == data.format("app-common")
    assert why["/usr/share/app-common/data.txt"] == data.format("app-common")
    assert why["/usr/share/misc/appmagic.mgc"] == data.format("app-mgc")
    assert why["/usr/share/fonts/alt.ttf"] == data.format("app-fonts-alt")
    assert why["/usr/share/provided/p.txt"] == data.format("app-provider")
    compiled = f"path /usr/share/app/data compiled into {SHOWN}"
    for name in ("x.dat", "sub/y.dat", "unowned.dat", "linked.dat"):
        assert why[f"/usr/share/app/data/{name}"] == compiled
    assert why["/usr/share/outside/target.dat"] == f"{compiled} (a link in it)"
    assert why[f"{GNU}/libplug.so.1"] == f"libplug.so.1: a dlopen literal in {SHOWN}"
    assert why["/usr/bin/sh"] == why["/usr/bin/dash"] == f"popen in {SHOWN}"  # /bin is usr/bin
    assert why["/usr/share/zoneinfo/UTC"] == f"path /usr/share/zoneinfo/%s compiled into {SHOWN}"
    assert tree.get("/etc/localtime") is not None
    assert why["/var/run/app"] == f"run-time directory /var/run/app compiled into {SHOWN}"
    left_out = [
        "/var/run/app/app.pid",  # a run-time directory is kept empty
        "/usr/share/doc/app-common/README", "/usr/share/man/man1/app.1.gz",  # docs
        "/usr/share/locale/de/LC_MESSAGES/app.mo", "/usr/share/lintian/overrides/app-common",
        f"{GNU}/pkgconfig/app.pc", "/usr/share/app/data/include/z.h",
        "/usr/share/other/o.txt",  # compiled in, but another package's
        "/usr/share/debconf/confmodule",  # maintainer-script machinery
        f"{GNU}/libext.so.1", "/usr/share/app-ext/ext.dat",  # a package with ELF files
        "/usr/share/big/huge.bin",  # past the cap
    ]
    assert [p for p in left_out if p in tree] == []
    notices = {(n.code, n.path): n for n in result.warnings}
    big = notices[("evidence-too-large", "/usr/share/big")]
    assert big.fix == "--keep /usr/share/big (slim) or --add it (pack) to keep it"
    assert "65 MB" in big.problem
    computed = notices[("dlopen-computed", "/lib/x86_64-linux-gnu/libcomputed.so.1")]
    assert "--keep DIR" in computed.fix
    assert ("dlopen-computed", SHOWN) not in notices  # its literal was found
    plugin = notices[("library-unloadable", "/usr/share/app/data/plugin.so")]
    assert "libgone.so.1 not found" in plugin.problem and compiled in plugin.problem
    assert len(result.warnings) == 3


def test_a_programs_own_directory_is_not_evidence(tmp_path: Path, app_root: Path,
                                                  cc: Compile) -> None:
    """A compiled path naming the directory of a program packed brings nothing: its other
    programs are the caller's to name."""
    core = app_root / CORE[1:]
    cc(app_root / "usr/share/app/data/tool", APP_SOURCE, str(core),
       str(app_root / GNU[1:] / "libcomputed.so.1"))
    tree = pack(*from_keywords(programs=("/usr/share/app/data/tool",),
                               output=str(tmp_path / "t.tar"), root=str(app_root))).tree
    assert "/usr/share/app/data/x.dat" not in tree
    assert tree.reasons["/etc/app/app.conf"] == "data package app-common, a dependency of " \
                                                "libappcore1"


@pytest.mark.parametrize(("without", "gone", "kept"), [
    ("evidence-packages", "/usr/share/app-common/data.txt", "/usr/share/app/data/x.dat"),
    ("compiled-paths", "/usr/share/app/data/x.dat", "/usr/share/app-common/data.txt"),
    ("dlopen", f"{GNU}/libplug.so.1", "/usr/share/app/data/x.dat"),
    ("shell", "/usr/bin/dash", "/usr/share/app/data/x.dat"),
    ("tzdata", "/usr/share/zoneinfo/UTC", "/usr/share/app/data/x.dat"),
])
def test_without_drops_one_kind(tmp_path: Path, app_root: Path, without: str, gone: str,
                                kept: str) -> None:
    tree = pack_app(tmp_path, app_root, without_features=frozenset({without})).tree
    assert gone not in tree and kept in tree


def test_locale_and_terminfo(tmp_path: Path, cc: Compile) -> None:
    """LANG=C.UTF-8 in the image's environment brings the C.utf8 locale; a closure with
    libtinfo gets the common terminal descriptions, and no others."""
    root = host_libc_root(tmp_path / "root", ("libc.so.6",))
    tinfo = cc(root / GNU[1:] / "libtinfo.so.6", "int setupterm(void) { return 0; }\n",
               "-shared", "-fPIC", "-Wl,-soname,libtinfo.so.6")
    cc(root / "usr/bin/app", "int setupterm(void); int main(void) { return setupterm(); }\n",
       str(tinfo))
    for name in ("x/xterm", "x/xterm-256color", "l/linux", "v/vt100", "s/screen", "a/ansi"):
        write(root / "usr/share/terminfo" / name)
    write(root / "usr/lib/locale/C.utf8/LC_CTYPE")
    result = pack_app(tmp_path, root, env=("LANG=C.UTF-8",))
    why = result.tree.reasons
    assert why["/usr/lib/locale/C.utf8/LC_CTYPE"] == \
        "LANG=C.UTF-8 in the image's environment: C.UTF-8"
    for name in ("x/xterm", "x/xterm-256color", "l/linux", "v/vt100", "s/screen"):
        assert why[f"/usr/share/terminfo/{name}"] == "terminal descriptions for libtinfo.so.6"
    assert "/usr/share/terminfo/a/ansi" not in result.tree
    plain = pack_app(tmp_path, root, env=("LANG=en_US.UTF-8",)).tree
    assert "/usr/lib/locale/C.utf8/LC_CTYPE" not in plain


def test_no_package_database_keeps_compiled_paths_by_existence(tmp_path: Path,
                                                               app_root: Path) -> None:
    """Without a dpkg database there is no ownership to ask: a specific path that exists is
    kept; generic directories still are not."""
    shutil.rmtree(app_root / "var/lib/dpkg")
    tree = pack_app(tmp_path, app_root).tree
    assert "/usr/share/other/o.txt" in tree and "/usr/share/app/data/x.dat" in tree
    assert "/usr/share/app-common/data.txt" not in tree  # no package metadata, no data packages
    assert "/usr/share/big/huge.bin" not in tree  # the cap holds without packages too


# ---- bounded: the evidence keeps real images small --------------------------------------------

LIMITS = [("/usr/bin/jq", 5), ("/usr/bin/curl", 32), ("/usr/bin/python3", 60)]


@pytest.mark.parametrize(("program", "megabytes"), LIMITS, ids=[p for p, _ in LIMITS])
def test_host_programs_stay_small(tmp_path: Path, program: str, megabytes: int) -> None:
    """The host's programs packed with every kind of evidence on: their files stay within the
    sizes issue 13 sets (docs/evidence.md has the figures)."""
    need_tool(os.path.basename(program))
    result = pack(*from_keywords(programs=(program,), output=str(tmp_path / "o.tar")))
    assert result.content_bytes <= megabytes * 1_000_000, result.content_bytes


def test_why_names_the_evidence(tmp_path: Path, app_root: Path) -> None:
    """`slimmer why` on the archive prints the reason each kind of evidence gave; the
    warnings are printed as `warning: PATH: problem; fix`."""
    out = tmp_path / "app.tar"
    done = slimmer("pack", "/usr/bin/app", "--root", str(app_root), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert ("warning: /usr/share/big: compiled into /lib/x86_64-linux-gnu/libappcore.so.1 but "
            "holds 65 MB (more than 64 MB): left out; --keep /usr/share/big (slim) or --add it "
            "(pack) to keep it\n"
            in done.stderr)
    for path, reason in [
            ("/usr/share/app-common/data.txt", "data package app-common, a dependency of "
                                               "libappcore1"),
            ("/usr/share/app/data/x.dat", f"path /usr/share/app/data compiled into {SHOWN}")]:
        why = slimmer("why", str(out), path)
        assert why.returncode == 0, why.stderr
        assert why.stdout.startswith(f"{path}: {reason}"), why.stdout


def test_slim_reports_the_warnings(tmp_path: Path, app_root: Path) -> None:
    """The same root as a fat image: `slim --report json` carries evidence's warnings as
    objects (code, path, message, fix), and the evidence it keeps is the same."""
    members: list[Member] = []
    for top, dirs, files in os.walk(app_root):
        rel = os.path.relpath(top, app_root)
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            inside = name if rel == "." else f"{rel}/{name}"
            if os.path.islink(path):
                members.append(("sym", inside, os.readlink(path)))
            elif os.path.isdir(path):
                members.append(("dir", inside, b""))
            elif not inside.startswith("usr/share/big/"):  # the sparse 65 MB file stays out
                members.append(("file", inside, Path(path).read_bytes()))
    diff_id = "sha256:" + hashlib.sha256(layer_tar(members)).hexdigest()
    fat = docker_archive(tmp_path / "fat.tar", [members], config={
        "architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/usr/bin/app"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    done = slimmer("slim", str(fat), "-o", str(tmp_path / "slim.tar"), "--report", "json")
    assert done.returncode == 0, done.stderr
    warnings = {(w["code"], w["path"]): w for w in json.loads(done.stdout)["warnings"]}
    computed = warnings[("dlopen-computed", "/lib/x86_64-linux-gnu/libcomputed.so.1")]
    assert computed["fix"] == "--keep DIR or --add the files it loads, or --probe to see them used"
    assert computed["message"].startswith("/lib/x86_64-linux-gnu/libcomputed.so.1: imports dlopen")
    assert ("library-unloadable", "/usr/share/app/data/plugin.so") in warnings
    members_out = Archive(tmp_path / "slim.tar").members()
    assert "usr/share/app/data/x.dat" in members_out
    assert "usr/share/app-common/data.txt" in members_out


def test_a_dlopen_path_literal_names_a_shared_object() -> None:
    for path in ("/usr/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/lib/app/plugin.so",
                 "/opt/x/libbar-2.0.so.0.1.2", "/usr/lib/%s/lib%s.so"):
        assert is_shared_object(path), path
    # node's cgroup files have ".so" in their names; kernel trees are never files to load
    for path in ("/sys/fs/cgroup/memory/memory.soft_limit_in_bytes", "/proc/self/x.so",
                 "/usr/lib/app/plugins.soon", "/etc/ld.so.conf", "/usr/lib/app/so"):
        assert not is_shared_object(path), path


def test_node_packs_without_the_kernels_files(tmp_path: Path) -> None:
    # Debian's node names /sys/fs/cgroup/memory/memory.soft_limit_in_bytes: once taken for a
    # dlopen literal, it went into the image and the pack failed ("file changed")
    node = need_tool("node")
    out = tmp_path / "node.tar"
    done = slimmer("pack", node, "-o", str(out), "--compress", "none")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    names = Archive(out).members()
    assert not any(n.startswith(("sys/", "proc/")) for n in names)


def test_what_is_beside_a_named_data_file_of_the_programs_own_directory(tmp_path: Path) -> None:
    # units names /usr/share/units/definitions.units, which includes currency.units beside it
    # (a link to /var/lib/units/currency.units): without it every run printed an error
    units = need_tool("units")
    out = tmp_path / "units.tar"
    done = slimmer("pack", units, "-o", str(out), "--compress", "none")
    assert done.returncode == 0, done.stderr
    names = Archive(out).members()
    assert names["usr/share/units/currency.units"].issym()
    assert "var/lib/units/currency.units" in names
    why = slimmer("why", str(out), "/usr/share/units/currency.units")
    assert "beside /usr/share/units/definitions.units, compiled into /usr/bin/units" in why.stdout


def test_a_locale_name_compiled_in_brings_the_locale(tmp_path: Path, cc: Compile) -> None:
    # tmux asks setlocale for "C.UTF-8" when the environment names no UTF-8 locale
    root = host_libc_root(tmp_path / "root", ("libc.so.6",))
    cc(root / "usr/bin/app", '#include <locale.h>\n'
       'int main(void) { return setlocale(LC_CTYPE, "C.UTF-8") == 0; }\n')
    write(root / "usr/lib/locale/C.utf8/LC_CTYPE")
    why = pack_app(tmp_path, root).tree.reasons
    assert why["/usr/lib/locale/C.utf8/LC_CTYPE"] == \
        "C.UTF-8 compiled into /usr/bin/app: C.UTF-8"


def test_a_library_embedding_python_brings_its_standard_library(tmp_path: Path,
                                                               cc: Compile) -> None:
    # gdb (and uwsgi, vim-nox) link libpython: without the standard library it cannot start
    root = host_libc_root(tmp_path / "root", ("libc.so.6",))
    lib = cc(root / GNU[1:] / "libpython3.11.so.1.0", "int Py_Initialize(void) { return 0; }\n",
             "-shared", "-fPIC", "-Wl,-soname,libpython3.11.so.1.0")
    cc(root / "usr/bin/app",
       "int Py_Initialize(void); int main(void) { return Py_Initialize(); }\n", str(lib))
    cc(root / "usr/bin/python3.11", "int main(void) { return 0; }\n")
    os.symlink("python3.11", root / "usr/bin/python3")
    write(root / "usr/lib/python3.11/os.py")
    write(root / "usr/lib/python3.11/test/test_os.py")
    tree = pack_app(tmp_path, root).tree
    assert tree.reasons["/usr/lib/python3.11/os.py"] == "recipe python3"
    assert "/usr/lib/python3.11/test/test_os.py" not in tree  # the recipe's own exclusions
    plain = host_libc_root(tmp_path / "plain", ("libc.so.6",))
    cc(plain / "usr/bin/app", "int main(void) { return 0; }\n")
    cc(plain / "usr/bin/python3.11", "int main(void) { return 0; }\n")
    write(plain / "usr/lib/python3.11/os.py")
    assert "/usr/lib/python3.11/os.py" not in pack_app(tmp_path, plain).tree


def test_a_path_of_a_package_the_owner_recommends_is_the_programs(tmp_path: Path,
                                                                   cc: Compile) -> None:
    # fortune names /usr/share/games/fortunes, which fortunes-min ships: fortune-mod only
    # Recommends it (apt installs recommendations); without it the image said "No fortunes"
    def root_with(recommends: bool) -> Path:
        root = host_libc_root(tmp_path / f"root-{recommends}", ("libc.so.6",))
        cc(root / "usr/bin/app", 'const char *d = "/usr/share/games/sayings";\n'
           "int main(void) { return d[0] == 'x'; }\n")
        write(root / "usr/share/games/sayings/wise")
        dpkg_database(root, {
            "libc6": ("", "", (f"{GNU}/libc.so.6",)),
            "teller": ("libc6", "", ("/usr/bin/app",)),
            "sayings": ("", "", ("/usr/share/games/sayings", "/usr/share/games/sayings/wise"))})
        if recommends:
            status = root / "var/lib/dpkg/status"
            status.write_text(status.read_text().replace("Depends: libc6\n",
                                                         "Depends: libc6\nRecommends: sayings\n"))
        return root

    why = pack_app(tmp_path, root_with(True)).tree.reasons
    assert why["/usr/share/games/sayings/wise"] == \
        "path /usr/share/games/sayings compiled into /usr/bin/app"
    assert "/usr/share/games/sayings/wise" not in pack_app(tmp_path, root_with(False)).tree
