"""Programs that need more than their libraries, packed from the host with no extra flags (or
slimmed from a fat image) and run in Docker: what evidence finds (evidence.py) must be enough
for each to give the host's result. docs/evidence.md lists what each one needed and which
evidence found it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.archives import Archive
from tests.support.cli import run as slimmer
from tests.support.engines import Docker
from tests.support.fat import derived_image
from tests.support.host import need_tool
from tests.support.roots import FAT_PACKAGES, mmdebstrap_root

pytestmark = pytest.mark.e2e
PG_BIN = "/usr/lib/postgresql/15/bin"
RunIn = Callable[..., bytes]


def packed(tmp_path: Path, *programs: str) -> Path:
    """`slimmer pack PROGRAMS` with no other flag than the output and the tag."""
    for program in programs:
        if not os.path.exists(program):
            need_tool(os.path.basename(program))
    out = tmp_path / f"img-{uuid.uuid4().hex[:8]}.tar"
    done = slimmer("pack", *programs, "-o", str(out), "--tag",
                   f"slimmer-rt/{os.path.basename(programs[0])}:{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def run_in(docker: Docker, tmp_path: Path) -> Iterator[RunIn]:
    """run_in(programs, args, stdin=b"", docker_args=()) -> the container's stdout."""
    tags: list[str] = []

    def run(programs: tuple[str, ...], args: list[str], stdin: bytes = b"",
            docker_args: tuple[str, ...] = ()) -> bytes:
        archive = packed(tmp_path, *programs)
        tag = docker.load(archive)
        tags.append(tag)
        done = docker.run("run", "--rm", "-i", "--network", "none", *docker_args, tag, *args,
                          input=stdin, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    yield run
    for tag in tags:
        docker.run("rmi", tag, check=False)


def host(*argv: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> bytes:
    """The host's own result, to compare the image's with."""
    need_tool(argv[0])
    done = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=True)
    return done.stdout


# ---- interpreters and their standard libraries -----------------------------------------------

RUBY = ('require "json"; require "openssl"; require "zlib"; '
        'puts JSON.generate({"crc" => Zlib.crc32("abc"), '
        '"sha" => OpenSSL::Digest::SHA256.hexdigest("abc")[0, 16]})')


def test_ruby_json_openssl_zlib(run_in: RunIn) -> None:
    """libruby's compiled /usr/lib/ruby/3.1.0 and /usr/lib/x86_64-linux-gnu/ruby/3.1.0."""
    out = run_in(("/usr/bin/ruby",), ["-e", RUBY])
    assert out == host("ruby", "-e", RUBY) == b'{"crc":891568578,"sha":"ba7816bf8f01cfea"}\n'


PHP = ('date_default_timezone_set("Asia/Tokyo"); '
       'echo mb_strtoupper("h\u00e9llo"), " ", date("Y-m-d H:i T", 86400 * 365), " ", '
       'json_encode(["a" => [1, 2]]), "\\n";')


def test_php_mbstring_date_json(run_in: RunIn) -> None:
    """php's compiled /etc/php/8.2/cli (php.ini, conf.d) and /usr/lib/php/20220829 (mbstring
    from php8.2-mbstring), and tzdata (php8.2-cli depends on it)."""
    out = run_in(("/usr/bin/php",), ["-r", PHP])
    expect = "H\u00c9LLO 1971-01-01 09:00 JST {\"a\":[1,2]}\n".encode()
    assert out == host("php", "-r", PHP) == expect


def test_imagemagick_png_to_jpeg(run_in: RunIn) -> None:
    """The coders directory compiled into libMagickCore (dlopened through libltdl) and
    imagemagick-6-common's configuration: the same JPEG bytes as the host's."""
    png = host("convert", "-size", "16x8", "gradient:red-blue", "png:-")
    out = run_in(("/usr/bin/convert",), ["png:-", "-quality", "90", "jpeg:-"], stdin=png)
    assert out[:3] == b"\xff\xd8\xff"
    assert out == host("convert", "png:-", "-quality", "90", "jpeg:-", stdin=png)


def test_postgres_initdb_and_single_user_query(run_in: RunIn) -> None:
    """initdb popens `postgres -V` (/bin/sh, from the popen import), reads postgres.bki from
    /usr/share/postgresql/15 and loads plpgsql from /usr/lib/postgresql/15/lib (both compiled
    into postgres), and the time zones (postgresql-15 depends on tzdata); as uid 65532."""
    script = (f"{PG_BIN}/initdb --no-sync -A trust -U postgres -D /tmp/db >/dev/null && "
              f"echo 'SELECT 6 * 7 AS answer, now() IS NOT NULL AS clock' | "
              f"{PG_BIN}/postgres --single -D /tmp/db postgres")
    out = run_in((f"{PG_BIN}/initdb", f"{PG_BIN}/postgres"), ["-c", script],
                 docker_args=("--user", "65532:65532", "--entrypoint", "/bin/sh"))
    assert b'answer = "42"' in out and b'clock = "t"' in out, out.decode()


def test_python3_locale_and_curses(run_in: RunIn) -> None:
    """The recipe's LANG=C.UTF-8 brings /usr/lib/locale/C.utf8; _curses's libtinfo brings the
    xterm terminal description."""
    code = ("import curses, locale; print(locale.setlocale(locale.LC_ALL, '')); "
            "curses.setupterm(); print(curses.tigetnum('colors'), curses.tigetstr('bold'))")
    out = run_in(("/usr/bin/python3",), ["-c", code], docker_args=("-e", "TERM=xterm"))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "xterm"}
    assert out == host("python3", "-c", code, env=env) == b"C.UTF-8\n8 b'\\x1b[1m'\n"


# ---- data files found through libraries ---------------------------------------------------------

FRAME = ["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "color=c=black:s=48x24:d=0.04", "-vf", "drawtext=text=Hi:fontcolor=white:fontsize=16",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"]


def test_ffmpeg_drawtext_finds_a_font(run_in: RunIn) -> None:
    """fontconfig-config and the font it depends on (data packages of libfontconfig1)."""
    out = run_in(("/usr/bin/ffmpeg",), FRAME)
    assert len(out) == 48 * 24 and any(out), "no text drawn"
    assert out == host("ffmpeg", *FRAME)


SAMPLES = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02",
           b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", b"#!/bin/sh\necho hi\n",
           b"<?xml version=\"1.0\"?>\n<a/>\n", b"%PDF-1.4\n"]


@pytest.mark.parametrize("sample", SAMPLES, ids=["png", "gzip", "sh", "xml", "pdf"])
def test_file_identifies_like_the_host(run_in: RunIn, sample: bytes) -> None:
    """libmagic's compiled /usr/share/misc/magic (opened as magic.mgc, from libmagic-mgc)."""
    out = run_in(("/usr/bin/file",), ["-b", "-"], stdin=sample)
    assert out == host("file", "-b", "-", stdin=sample)
    assert out != b"data\n"


def test_units_reads_its_definitions(run_in: RunIn) -> None:
    """units' compiled /usr/share/units/definitions.units."""
    out = run_in(("/usr/bin/units",), ["-t", "1 mile", "km"])
    assert out == host("units", "-t", "1 mile", "km") == b"1.609344\n"


TCL = ('puts [string toupper hi]; '
       'puts [clock format 0 -timezone :Asia/Tokyo -format "%Y-%m-%d %H:%M %Z"]; '
       'puts [encoding convertto iso8859-2 "\u0159"]\n')


def test_tcl_library_encodings_and_clock(run_in: RunIn) -> None:
    """Tcl's library (init.tcl, the clock code, the encodings) in /usr/share/tcltk/tcl8.6,
    compiled into libtcl8.6; the time zones (libtcl8.6 depends on tzdata)."""
    out = run_in(("/usr/bin/tclsh",), [], stdin=TCL.encode(), docker_args=("-e", "LANG=C.UTF-8"))
    assert out == host("tclsh", stdin=TCL.encode(), env={"LANG": "C.UTF-8"})
    assert out.startswith(b"HI\n1970-01-01 09:00 JST\n")


VIM = ["-es", "-N", "-c", "syntax on", "-c", "set ft=python", "-c",
       'put =exists(\\"b:current_syntax\\") ? b:current_syntax : \\"none\\"', "-c", "$print",
       "-c", "qa!"]


def test_vim_finds_its_syntax_files(run_in: RunIn) -> None:
    """vim's runtime (syntax/python.vim) in vim-runtime, a data package vim depends on."""
    out = run_in(("/usr/bin/vim",), VIM)
    assert out == host("vim", *VIM) == b"python\n"


# ---- a fat image: Debian's node 18 ------------------------------------------------------------


@pytest.fixture(scope="session")
def fat_root() -> Path:
    return mmdebstrap_root("bookworm", FAT_PACKAGES)


def test_debian_node_from_a_fat_image(docker: Docker, fat_root: Path, tmp_path: Path) -> None:
    """Debian's libnode108 keeps its builtins in /usr/share/nodejs, in data packages it
    depends on (node-undici, node-acorn, node-cjs-module-lexer...)."""
    fat = derived_image(docker, fat_root, tmp_path, 'FROM {base}\nENTRYPOINT ["/usr/bin/node"]\n')
    out = tmp_path / "node.tar"
    tag = f"slim-node:{uuid.uuid4().hex[:8]}"
    done = slimmer("slim", str(fat), "-o", str(out), "--tag", tag, "--report", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["warnings"] == [], report["warnings"]  # node's dlopen is its addons': quiet
    members = Archive(out).members()
    assert any(name.startswith("usr/share/nodejs/undici/") for name in members)
    code = ("console.log(1); console.log(require('path').join('a', 'b'), "
            "require('util').format('%d', 42), typeof fetch)")
    with docker.loaded(out) as image:
        result = docker.container(image, "-e", code)
    assert result == b"1\na/b 42 function\n"
