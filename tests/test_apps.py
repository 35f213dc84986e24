"""Applications run in Docker with no extra flags (issue 13): a shell script calling jq and curl,
a numpy and pillow app in a virtualenv (pack), and fat images whose Entrypoint/Cmd is an app in
its WorkingDir or a shell script (slim), each giving the output it gives on the host or in the
fat image."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.archives import Archive
from tests.support.cli import run as slimmer
from tests.support.engines import Docker
from tests.support.fat import derived_image
from tests.support.host import COWSAY, need_file
from tests.support.roots import FAT_PACKAGES, cached, mmdebstrap_root

pytestmark = pytest.mark.e2e

# The wheels the virtualenv test installs from PyPI (cached: downloaded once)
NUMPY, PILLOW = "2.2.6", "11.3.0"


@pytest.fixture(scope="session")
def fat_root() -> Path:
    return mmdebstrap_root("bookworm", FAT_PACKAGES)


def _pack(tmp_path: Path, program: str, *args: str) -> tuple[Path, str]:
    out = tmp_path / f"{uuid.uuid4().hex[:8]}.tar"
    done = slimmer("pack", program, "-o", str(out), *args)
    assert done.returncode == 0, done.stderr
    return out, done.stderr


def _in_docker(docker: Docker, archive: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    with docker.loaded(archive) as tag:
        return docker.run("run", "--rm", "--network", "none", tag, *args, check=False)


def _slim(source: Path, out: Path) -> dict[str, object]:
    done = slimmer("slim", str(source), "-o", str(out), "--report", "json", "--tag",
                   f"slim-app:{uuid.uuid4().hex[:8]}")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _same_run(docker: Docker, fat: Path, slim: Path, *args: str) -> bytes:
    """Both images run with `args`; the slim one's output is the fat one's. Returns it."""
    ran = [_in_docker(docker, image, *args) for image in (fat, slim)]
    assert ran[0].returncode == 0, ran[0].stderr
    assert (ran[1].returncode, ran[1].stdout, ran[1].stderr) == (
        0, ran[0].stdout, ran[0].stderr), ran[1].stderr
    return ran[0].stdout


# ---- pack -------------------------------------------------------------------------------------

JQ_CURL = """#!/bin/sh
set -eu
printf '{"name": "%s", "n": [1, 2, 3]}' "${1:-none}" | jq -c '{name: .name, sum: (.n | add)}'
f=$(mktemp)
printf 'sent through curl' | curl -s -T - "file://$f"
cat "$f"; echo
rm -f "$f"
curl --version | head -n 1 | cut -d' ' -f1
"""


def test_a_shell_script_brings_jq_and_curl(docker: Docker, tmp_path: Path) -> None:
    script = tmp_path / "tools" / "report.sh"
    script.parent.mkdir()
    script.write_text(JQ_CURL)
    script.chmod(0o755)
    host = subprocess.run([str(script), "abc"], capture_output=True, check=True)
    archive, said = _pack(tmp_path, str(script))
    assert "warning" not in said
    ran = _in_docker(docker, archive, "abc")
    assert (ran.returncode, ran.stdout) == (0, host.stdout), ran.stderr
    assert ran.stdout.startswith(b'{"name":"abc","sum":6}\nsent through curl\ncurl\n')
    why = slimmer("why", str(archive), "/usr/bin/jq").stdout
    assert "run by /" in why and "report.sh (line 3)" in why, why


def test_debian_scripts_run_like_on_the_host(docker: Docker, tmp_path: Path) -> None:
    """Debian's own shell scripts: zgrep (its grep named in a variable it evals, sed, expr,
    gzip, mktemp) and zcat (exec gzip)."""
    data = subprocess.run(["gzip", "-c", "-n"], input=b"alpha\nfoo bar\nbeta foo\n",
                          capture_output=True, check=True).stdout
    for program, args in (("/usr/bin/zgrep", ["-n", "foo"]), ("/usr/bin/zcat", [])):
        host = subprocess.run([program, *args], input=data, capture_output=True, check=True)
        archive, _ = _pack(tmp_path, program)
        with docker.loaded(archive) as tag:
            assert docker.container(tag, *args, input=data) == host.stdout, program
    assert host.stdout == b"alpha\nfoo bar\nbeta foo\n"


def test_cowsay_draws_its_cow_with_no_flag(docker: Docker, tmp_path: Path) -> None:
    """Debian's cowsay, a perl script: its cows are its own package's data, named only in its
    text ('/usr/share/cowsay/cows'); it failed with `Could not find default.cow cowfile!`."""
    cowsay = need_file(COWSAY, "cowsay")
    host = subprocess.run([cowsay, "hello"], capture_output=True, check=True)
    archive, said = _pack(tmp_path, cowsay)
    assert "warning" not in said
    ran = _in_docker(docker, archive, "hello")
    assert (ran.returncode, ran.stdout) == (0, host.stdout), ran.stderr
    assert b"< hello >" in ran.stdout and b"(oo)" in ran.stdout
    why = slimmer("why", str(archive), "/usr/share/cowsay/cows/default.cow").stdout
    assert "path /usr/share/cowsay/cows named in script /usr/games/cowsay" in why, why


def _venv(partial: Path) -> None:
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(partial)], check=True)
    subprocess.run([str(partial / "bin/python3"), "-m", "pip", "install", "-q",
                    "--only-binary", ":all:", f"numpy=={NUMPY}", f"pillow=={PILLOW}"],
                   check=True, capture_output=True)


NUMPY_APP = """import io, sys
import numpy as np
from PIL import Image, ImageFilter

a = np.arange(12, dtype=np.float64).reshape(3, 4)
print(np.linalg.inv(a[:, :3] @ a[:, :3].T + np.eye(3)).round(6).tolist())
img = Image.fromarray((np.indices((64, 64)).sum(axis=0) * 2).astype(np.uint8))
out = io.BytesIO()
img.filter(ImageFilter.GaussianBlur(2)).save(out, format="PNG")
print(len(out.getvalue()), np.asarray(Image.open(io.BytesIO(out.getvalue()))).sum())
print(sys.prefix == sys.base_prefix, np.__version__)
"""


def test_a_numpy_and_pillow_app_in_a_virtualenv(docker: Docker, tmp_path: Path) -> None:
    venv = cached(f"venv-numpy-{NUMPY}-pillow-{PILLOW}", _venv)
    app = tmp_path / "app" / "main.py"
    app.parent.mkdir()
    app.write_text(f"#!{venv}/bin/python3\n{NUMPY_APP}")
    app.chmod(0o755)
    host = subprocess.run([str(app)], capture_output=True, check=True)
    assert host.stdout.endswith(f"False {NUMPY}\n".encode())  # the venv's numpy
    archive, said = _pack(tmp_path, str(app))
    assert "warning" not in said
    ran = _in_docker(docker, archive)
    assert (ran.returncode, ran.stdout) == (0, host.stdout), ran.stderr
    members = Archive(archive).members()
    site = f"{str(venv)[1:]}/lib/python3.11/site-packages"
    assert any(name.startswith(f"{site}/numpy.libs/libscipy_openblas") for name in members)
    assert any(name.startswith(f"{site}/pillow.libs/") for name in members)


# ---- slim -------------------------------------------------------------------------------------

SERVER = """import json, os, stat
import helpers
print(helpers.greeting())
with open("data.txt") as f:
    print(f.read().strip())
print(sorted(os.listdir("static")), open("static/css/site.css").read().strip())
st = os.stat("data.txt")
print(st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode)), os.getcwd())
"""
APP_DOCKERFILE = """FROM {base}
WORKDIR /app
COPY server.py helpers.py data.txt /app/
COPY static /app/static
RUN chown 1234:2345 /app/data.txt && chmod 0640 /app/data.txt
CMD ["python3", "server.py"]
"""


def test_slim_keeps_the_app_in_its_working_directory(docker: Docker, fat_root: Path,
                                                      tmp_path: Path) -> None:
    files = {"server.py": SERVER.encode(),
             "helpers.py": b"def greeting():\n    return 'hello from helpers'\n",
             "data.txt": b"some data\n", "static/index.html": b"<p>hi</p>\n",
             "static/css/site.css": b"p { color: red }\n"}
    fat = derived_image(docker, fat_root, tmp_path, APP_DOCKERFILE, files)
    slim = tmp_path / "app-slim.tar"
    report = _slim(fat, slim)
    out = _same_run(docker, fat, slim)
    assert out == (b"hello from helpers\nsome data\n['css', 'index.html'] p { color: red }\n"
                   b"1234 2345 0o640 /app\n")
    members = Archive(slim).members()
    data = members["app/data.txt"]
    assert (data.uid, data.gid, data.mode) == (1234, 2345, 0o640)
    assert members["app/static/css/site.css"].isfile()
    why = slimmer("why", str(slim), "/app/helpers.py").stdout
    assert "working directory" in why, why
    assert report["warnings"] == [], report["warnings"]


ENTRY = """#!/bin/sh
set -e
echo "{\\"arg\\": \\"$1\\"}" | jq -c '.arg |= ascii_upcase'
curl -s file:///etc/debian_version | cut -d. -f1
curl --version | head -n 1 | cut -d' ' -f1,2
if command -v nosuch >/dev/null; then echo yes; else echo no; fi
"""
SCRIPT_DOCKERFILE = """FROM {base}
COPY entry.sh /usr/local/bin/entry.sh
RUN chmod 0755 /usr/local/bin/entry.sh
ENTRYPOINT ["/usr/local/bin/entry.sh"]
CMD ["hello"]
"""


def test_slim_of_a_shell_script_entrypoint(docker: Docker, fat_root: Path,
                                           tmp_path: Path) -> None:
    fat = derived_image(docker, fat_root, tmp_path, SCRIPT_DOCKERFILE,
                        {"entry.sh": ENTRY.encode()})
    slim = tmp_path / "script-slim.tar"
    report = _slim(fat, slim)
    assert report["program"] == "/usr/local/bin/entry.sh"
    out = _same_run(docker, fat, slim)
    assert out.startswith(b'{"arg":"HELLO"}\n12\ncurl ')
    assert _same_run(docker, fat, slim, "other") .startswith(b'{"arg":"OTHER"}\n')
    assert report["warnings"] == [], report["warnings"]
    members = Archive(slim).members()
    assert "usr/bin/jq" in members and "usr/bin/curl" in members


def test_slim_of_bookworm_python3_stays_small(docker: Docker, tmp_path: Path) -> None:
    """The application evidence adds nothing to an image whose Entrypoint names no app."""
    root = mmdebstrap_root("bookworm", "python3")
    tag = f"slimmer-fat/py:{uuid.uuid4().hex[:8]}"
    docker.run("import", "--change", 'ENTRYPOINT ["python3"]', str(root), tag)
    fat = tmp_path / "py.tar"
    try:
        docker.run("save", tag, "-o", str(fat))
    finally:
        docker.run("rmi", tag, check=False)
    slim = tmp_path / "py-slim.tar"
    report = _slim(fat, slim)
    before, after = report["before"], report["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    assert after["bytes"] <= 0.25 * before["bytes"], report
    out = _same_run(docker, fat, slim, "-c", "import json, sqlite3; print(json.dumps(1))")
    assert out == b"1\n"
