"""Runtime rules (runtime.py) on their own: what they add, and the options that steer them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from slimmer.assemble.options import from_keywords
from slimmer.assemble.pack import pack
from slimmer.assemble.runtime import check_features, enabled
from slimmer.errors import SlimmerError
from slimmer.tree import File
from tests.support.cli import run as slimmer
from tests.support.compile import Compile, main_source


def old_glibc_root(tmp_path: Path, cc: Compile) -> Path:
    """A root whose libc says it is glibc 2.31 (the banner patched in a copy), with NSS
    modules beside it."""
    root = tmp_path / "old"
    gnu = root / "usr/lib/x86_64-linux-gnu"
    gnu.mkdir(parents=True)
    data = Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")).read_bytes()
    assert b"release version 2.36" in data
    (gnu / "libc.so.6").write_bytes(data.replace(b"release version 2.36",
                                                 b"release version 2.31"))
    for name in ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"):
        shutil.copy(os.path.realpath(f"/lib/x86_64-linux-gnu/{name}"), gnu / name)
    shutil.copy(os.path.realpath("/lib64/ld-linux-x86-64.so.2"), gnu / "ld-linux-x86-64.so.2")
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    cc(root / "usr/bin/prog", main_source())
    return root


def test_old_glibc_gets_its_nss_modules(tmp_path: Path, cc: Compile) -> None:
    root = old_glibc_root(tmp_path, cc)
    result = pack(*from_keywords(programs=("/usr/bin/prog",), output=str(tmp_path / "o.tar"),
                                 root=str(root)))
    tree = result.tree
    for name in ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"):
        path = f"/usr/lib/x86_64-linux-gnu/{name}"
        assert path in tree, name
        assert "glibc 2.31 loads it" in tree.reasons[path]
    without = pack(*from_keywords(programs=("/usr/bin/prog",), output=str(tmp_path / "n.tar"),
                                  root=str(root), without_features=frozenset({"nss"})))
    assert "/usr/lib/x86_64-linux-gnu/libnss_files.so.2" not in without.tree


def test_a_current_glibc_needs_no_files_or_dns_module(tmp_path: Path) -> None:
    result = pack(*from_keywords(programs=("/usr/bin/jq",), output=str(tmp_path / "j.tar")))
    names = {p.rsplit("/", 1)[1] for p, _ in result.tree.items()}
    assert not names & {"libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"}


def test_reasons_say_why(tmp_path: Path, cc: Compile) -> None:
    prog = cc("cancel", "#include <pthread.h>\nint main(void) { "
              "return pthread_cancel(pthread_self()); }\n", "-pthread")
    result = pack(*from_keywords(programs=(str(prog),), output=str(tmp_path / "c.tar")))
    reason = result.tree.reasons["/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"]
    assert reason == "glibc dlopens it for pthread_cancel/pthread_exit, used by /app/cancel"
    assert "ld.so.cache" in result.tree.reasons["/etc/ld.so.cache"]


def test_feature_names_are_checked() -> None:
    assert check_features(["tzdata"], "--with") == {"tzdata"}
    with pytest.raises(SlimmerError, match="--with tzdat: unknown feature"):
        check_features(["tzdat"], "--with")
    with pytest.raises(SlimmerError, match="--with and --without both name certs"):
        enabled(frozenset({"certs"}), frozenset({"certs"}))
    assert "shell" not in enabled(frozenset(), frozenset())
    assert "gconv" not in enabled(frozenset(), frozenset({"gconv"}))


def test_cli_rejects_an_unknown_feature(tmp_path: Path) -> None:
    done = slimmer("pack", "/usr/bin/jq", "-o", str(tmp_path / "x.tar"), "--without", "nothing")
    assert done.returncode == 1
    assert done.stderr.startswith("error: --without nothing: unknown feature")


def test_nss_modules_named_by_the_roots_nsswitch(tmp_path: Path, cc: Compile) -> None:
    root = old_glibc_root(tmp_path, cc)
    # a current glibc this time: the banner as it is
    gnu = root / "usr/lib/x86_64-linux-gnu"
    shutil.copy(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"), gnu / "libc.so.6")
    cc(gnu / "libnss_mymod.so.2", "int _nss_mymod_getpwnam_r(void) { return 0; }\n", "-shared",
       "-fPIC", "-Wl,-soname,libnss_mymod.so.2")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/nsswitch.conf").write_text(
        "passwd: files mymod [NOTFOUND=return] gone\ngroup: files\nhosts: files dns\n")
    cc(root / "usr/bin/who", "#include <pwd.h>\n#include <stdio.h>\nint main(void) { "
       "struct passwd *p = getpwnam(\"root\"); puts(p ? p->pw_dir : \"none\"); return 0; }\n")
    result = pack(*from_keywords(programs=("/usr/bin/who",), output=str(tmp_path / "w.tar"),
                                 root=str(root)))
    tree = result.tree
    assert "/usr/lib/x86_64-linux-gnu/libnss_mymod.so.2" in tree
    conf = tree.get("/etc/nsswitch.conf")
    assert isinstance(conf, File) and conf.data is not None
    lines = conf.data.decode().splitlines()
    assert "passwd: files mymod" in lines and "hosts: files dns" in lines
    assert result.tree.reasons["/usr/lib/x86_64-linux-gnu/libnss_mymod.so.2"] == (
        "passwd: mymod in the root's nsswitch.conf, for /usr/bin/who")
    # a program that looks nothing up gets the baseline file
    plain = pack(*from_keywords(programs=("/usr/bin/prog",), output=str(tmp_path / "p.tar"),
                                root=str(root)))
    assert "/usr/lib/x86_64-linux-gnu/libnss_mymod.so.2" not in plain.tree
    assert plain.tree.reasons["/etc/nsswitch.conf"] == "baseline"


def test_gconv_charsets_and_locales(tmp_path: Path, cc: Compile) -> None:
    prog = cc("conv", "#include <iconv.h>\nint main(void) { "
              "return iconv_open(\"UTF-16\", \"UTF-8\") == (iconv_t)-1; }\n")
    result = pack(*from_keywords(programs=(str(prog),), output=str(tmp_path / "g.tar"),
                                 gconv_charsets=("utf-16", "latin1"),
                                 with_features=frozenset({"locales"})))
    gconv = sorted(p.rsplit("/", 1)[1] for p, _ in result.tree.items()
                   if "/gconv/" in p and p.endswith(".so"))
    assert gconv == ["ISO8859-1.so", "UTF-16.so"]
    assert "/usr/lib/locale/C.utf8/LC_CTYPE" in result.tree
    with pytest.raises(SlimmerError, match="no gconv module converts KLINGON"):
        pack(*from_keywords(programs=(str(prog),), output=str(tmp_path / "k.tar"),
                            gconv_charsets=("KLINGON",)))
