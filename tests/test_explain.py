"""`slimmer why` and `slimmer inspect`, on archives slimmer wrote and on others."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from tests.support.cli import run as slimmer
from tests.support.compile import Compile, main_source


def test_why_follows_the_chain_to_the_program(tmp_path: Path) -> None:
    out = tmp_path / "jq.tar"
    assert slimmer("pack", "/usr/bin/jq", "-o", str(out)).returncode == 0
    done = slimmer("why", str(out), "/lib/x86_64-linux-gnu/libonig.so.5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "/lib/x86_64-linux-gnu/libonig.so.5 => /usr/lib/x86_64-linux-gnu/libonig.so.5.3.0: "
        "libonig.so.5 needed by /lib/x86_64-linux-gnu/libjq.so.1 (cache)",
        "  /lib/x86_64-linux-gnu/libjq.so.1 => /usr/lib/x86_64-linux-gnu/libjq.so.1.0.4: "
        "libjq.so.1 needed by /usr/bin/jq (cache)",
        "    /usr/bin/jq: program",
    ]
    # the same answer before packing, from the program
    before = slimmer("why", "/usr/bin/jq", "/lib/x86_64-linux-gnu/libonig.so.5")
    assert before.stdout == done.stdout
    missing = slimmer("why", str(out), "/etc/nothing")
    assert missing.returncode == 1 and missing.stderr == (
        "error: /etc/nothing: not in the image\n"
        "hint: pack (or build) with --add SRC:/etc/nothing to add it\n")


def test_why_names_rules_and_recipes(tmp_path: Path, cc: Compile) -> None:
    prog = cc("cancel", "#include <pthread.h>\nint main(void) { "
              "return pthread_cancel(pthread_self()); }\n", "-pthread")
    done = slimmer("why", str(prog), "/lib/x86_64-linux-gnu/libgcc_s.so.1")
    assert "glibc dlopens it for pthread_cancel/pthread_exit, used by /app/cancel" in done.stdout
    done = slimmer("why", "/usr/sbin/nginx", "/etc/nginx/nginx.conf")
    assert done.stdout == "/etc/nginx/nginx.conf: recipe nginx\n"


def test_inspect_lists_largest_first_with_totals(tmp_path: Path) -> None:
    out = tmp_path / "jq.tar"
    # --without nss, dpkg-status: the count below must not depend on this machine's
    # nsswitch.conf or its packages
    assert slimmer("pack", "/usr/bin/jq", "-o", str(out), "--compress", "zstd",
                   "--without", "nss", "--without", "dpkg-status").returncode == 0
    done = slimmer("inspect", str(out))
    lines = done.stdout.splitlines()
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" in lines[0]
    assert lines[-1].startswith("total: ") and "in 10 files" in lines[-1]
    doc = json.loads(slimmer("inspect", "--json", str(out)).stdout)
    sizes = [f["size"] for f in doc["files"]]
    assert sizes == sorted(sizes, reverse=True)
    assert doc["totals"]["bytes"] == sum(sizes)
    libc = next(f for f in doc["files"] if f["path"].endswith("/libc.so.6"))
    assert libc["reason"] == "libc.so.6 needed by /usr/bin/jq (cache)"


def test_inspect_an_archive_from_another_tool(tmp_path: Path, cc: Compile) -> None:
    # A docker-save style archive made by hand: manifest.json and one plain layer.
    layer = tmp_path / "layer.tar"
    prog = cc("p", main_source(), "-static")
    with tarfile.open(layer, "w") as t:
        t.add(prog, arcname="bin/p")
    image = tmp_path / "other.tar"
    (tmp_path / "manifest.json").write_text(json.dumps(
        [{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["layer.tar"]}]))
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    (tmp_path / "c.json").write_text(json.dumps({"architecture": "amd64", "os": "linux",
                                                 "rootfs": {"diff_ids": [diff_id]}}))
    with tarfile.open(image, "w") as t:
        t.add(tmp_path / "manifest.json", arcname="manifest.json")
        t.add(tmp_path / "c.json", arcname="c.json")
        t.add(layer, arcname="layer.tar")
    done = slimmer("inspect", str(image))
    assert done.returncode == 0, done.stderr
    assert "/bin/p  (reason unknown)" in done.stdout
    text = tmp_path / "notes.txt"
    text.write_text("neither an image nor a program\n")
    bad = slimmer("inspect", str(text))
    assert bad.returncode == 1 and bad.stderr == f"error: {text}: not an ELF file\n"
