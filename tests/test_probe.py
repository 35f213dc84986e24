"""`--probe` (issue 14): the trace parser on strace's own lines, what a probe keeps, the lock
records, the sandbox's isolation and clean-up checked from the host, and a fat image whose app
reads a computed path and runs jq through subprocess, slimmed with the probe and run in Docker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from slimmer.assemble.provenance import check_lock, lock_text, probed_in_lock
from slimmer.errors import SlimmerError
from slimmer.loader.root import SysRoot
from slimmer.probe.probe import Probed, excluded, kept
from slimmer.probe.sandbox import ProbeError, Run, Workload, find_tools
from slimmer.probe.trace import Touch, touches
from tests.support.archives import Archive
from tests.support.cli import run as slimmer
from tests.support.compile import Compile
from tests.support.engines import Docker
from tests.support.fat import derived_image
from tests.support.host import need_tool
from tests.support.roots import FAT_PACKAGES, host_libc_root, mmdebstrap_root

BWRAP = "/usr/bin/bwrap"

# ---- the trace parser -------------------------------------------------------------------------

TRACE = f"""\
100 execve("{BWRAP}", ["bwrap", "--ro-bind", "/r", "/"], 0x7ffc /* 3 vars */) = 0
100 openat(AT_FDCWD</work>, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3</etc/ld.so.cache>
100 clone(child_stack=NULL, flags=CLONE_NEWNS|CLONE_NEWPID|SIGCHLD) = 101
101 openat(AT_FDCWD</>, "/newroot/usr", O_RDONLY|O_PATH) = 4</newroot/usr>
102 execve("/usr/bin/python3", ["python3", "app.py"], 0x55 /* 2 vars */ <unfinished ...>
102 <... execve resumed>)             = 0
102 openat(AT_FDCWD</app>, "app.py", O_RDONLY|O_CLOEXEC) = 3</app/app.py>
102 newfstatat(AT_FDCWD</app>, "/opt/cfg/missing.ini", 0x7ffd, 0) = -1 ENOENT (No such file)
102 newfstatat(AT_FDCWD</app>, "/etc/ssl/certs", {{st_mode=S_IFDIR|0755, ...}}, 0) = 0
102 openat(AT_FDCWD</app>, "/lib/libz.so.1", O_RDONLY|O_CLOEXEC) = 3</usr/lib/libz.so.1.2.13>
102 getdents64(5</usr/lib/plugins>, 0x5555 /* 4 entries */, 32768) = 112
102 newfstatat(3</usr/lib/libz.so.1.2.13>, "", {{st_mode=S_IFREG, ...}}, AT_EMPTY_PATH) = 0
102 openat(AT_FDCWD</>, "/opt/caf\\303\\251 \\"x\\".txt", O_RDONLY) = 6</opt/caf\\303\\251 "x".txt>
103 openat(AT_FDCWD</app>, "/etc/forked.conf", O_RDONLY) = 3</etc/forked.conf>
103 execve("/usr/bin/jq", ["jq", "-n"], 0x55 /* 2 vars */) = 0
103 access("/etc/jq.conf", R_OK) = 0
104 execve("/usr/bin/nothere", ["nothere"], 0x55 /* 2 vars */) = -1 ENOENT (No such file)
"""


def test_trace_keeps_the_workloads_successful_accesses_only() -> None:
    found = touches(TRACE.splitlines(keepends=True), BWRAP)
    assert found == [
        Touch("/usr/bin/python3", None, "exec", "/usr/bin/python3"),
        Touch("/app/app.py", "/app/app.py", "open", "/usr/bin/python3"),
        Touch("/etc/ssl/certs", None, "stat", "/usr/bin/python3"),
        Touch("/lib/libz.so.1", "/usr/lib/libz.so.1.2.13", "open", "/usr/bin/python3"),
        Touch("/usr/lib/plugins", "/usr/lib/plugins", "list", "/usr/bin/python3"),
        Touch('/opt/café "x".txt', '/opt/café "x".txt', "open", "/usr/bin/python3"),
        # a fork of the workload, before it runs a program of its own
        Touch("/etc/forked.conf", "/etc/forked.conf", "open", "/usr/bin/python3"),
        Touch("/usr/bin/jq", None, "exec", "/usr/bin/jq"),
        Touch("/etc/jq.conf", None, "stat", "/usr/bin/jq"),
    ]


def test_nothing_counts_before_the_workload_starts() -> None:
    setup_only = [line for line in TRACE.splitlines() if line.startswith(("100 ", "101 "))]
    assert touches(setup_only, BWRAP) == []


# ---- what is kept -----------------------------------------------------------------------------


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for name in ("etc/app.conf", "tmp/written", "var/cache/x/y", "home/u/.cache/z",
                 "usr/lib/libz.so.1.2.13", "usr/bin/jq"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    (root / "lib").symlink_to("usr/lib")
    (root / "usr/lib/libz.so.1").symlink_to("libz.so.1.2.13")
    return root


def test_kept_drops_pseudo_private_caches_and_what_is_not_in_the_root(tmp_path: Path) -> None:
    root = SysRoot(_root(tmp_path))
    work = Workload(("/usr/bin/jq",), (), "/", 0, 0)
    touched = (
        Touch("/usr/bin/jq", None, "exec", "/usr/bin/jq"),
        Touch("/etc/app.conf", None, "stat", "/usr/bin/jq"),
        Touch("/etc/app.conf", "/etc/app.conf", "open", "/usr/bin/jq"),  # upgrades the reason
        Touch("/lib/libz.so.1", "/usr/lib/libz.so.1.2.13", "open", "/usr/bin/jq"),
        Touch("/proc/self/maps", "/proc/self/maps", "open", "/usr/bin/jq"),
        Touch("/tmp/written", "/tmp/written", "open", "/usr/bin/jq"),
        Touch("/var/cache/x/y", "/var/cache/x/y", "open", "/usr/bin/jq"),
        Touch("/home/u/.cache/z", "/home/u/.cache/z", "open", "/usr/bin/jq"),
        Touch("/etc/gone", "/etc/gone", "open", "/usr/bin/jq"),
    )
    got = kept(root, [Run(work, 0, touched, "")])
    assert got == (
        Probed("/usr/bin/jq", "probe: executed"),
        Probed("/etc/app.conf", "probe: opened by /usr/bin/jq"),
        Probed("/lib/libz.so.1", "probe: opened by /usr/bin/jq"),
        Probed("/usr/lib/libz.so.1.2.13", "probe: opened by /usr/bin/jq"),
    )
    assert excluded("/dev/null") and excluded("/sys") and excluded("/var/tmp/a")
    assert not excluded("/devices/x") and not excluded("/tmpl/x")


def test_lock_records_what_the_probe_touched(tmp_path: Path) -> None:
    probed = (Probed("/etc/app.conf", "probe: opened by /usr/bin/jq"),
              Probed("/usr/bin/jq", "probe: executed"))
    text = lock_text([], probed)
    assert probed_in_lock(text, "l.lock") == probed
    check_lock(text, [], "l.lock")  # the probe's records are not input files
    bad = text + "probe\trelative\tx\n"
    with pytest.raises(SlimmerError) as err:
        probed_in_lock(bad, "l.lock")
    assert str(err.value) == "l.lock: a bad probe record: probe\\trelative\\tx"


def test_missing_tools_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ProbeError) as err:
        find_tools(str(tmp_path))
    assert str(err.value) == ("--probe needs bubblewrap (bwrap) and strace on this machine "
                              "(Debian: apt-get install bubblewrap strace)")


# ---- the sandbox, from the host's side ----------------------------------------------------------

PROBED_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    char path[64], line[64] = "";
    snprintf(path, sizeof path, "/etc/%s.conf", argc > 0 ? "probed" : "");  /* computed */
    FILE *f = fopen(path, "r");
    if (f) { if (!fgets(line, sizeof line, f)) line[0] = 0; fclose(f); }
    printf("conf: %s", line);
    if (argc == 2) sleep(atoi(argv[1]));
    if (argc == 3) {  /* a host file to write, a host port to connect to */
        FILE *w = fopen(argv[1], "w");
        printf("write: %s\n", w ? "yes" : "no");
        if (w) fclose(w);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[2]));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        printf("connect: %s\n", connect(s, (struct sockaddr *)&a, sizeof a) ? "no" : "yes");
    }
    return 0;
}
"""


@pytest.fixture
def probed_root(cc: Compile) -> Iterator[Path]:
    """A root with the host's libc and /usr/bin/probed (reads /etc/probed.conf by a computed
    name), in a directory the sandbox's unprivileged user can reach (tmp_path is 0700)."""
    need_tool("bwrap")
    need_tool("strace")
    top = Path(tempfile.mkdtemp(prefix="slimmer-test-probe-"))
    try:
        top.chmod(0o755)
        root = host_libc_root(top / "root")
        cc(root / "usr/bin/probed", PROBED_C)
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/probed.conf").write_text("from the computed path\n")
        for parent in [root, *[p for p in (root / "usr/bin/probed").parents
                               if str(p).startswith(str(root))]]:
            parent.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(top)


def test_pack_probe_keeps_a_computed_path(probed_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.tar"
    static = slimmer("pack", "--root", str(probed_root), "/usr/bin/probed", "-o", str(out))
    assert static.returncode == 0, static.stderr
    assert "etc/probed.conf" not in Archive(out).members()  # no static evidence of it

    done = slimmer("pack", "--root", str(probed_root), "/usr/bin/probed", "-o", str(out),
                   "--probe-args", "")
    assert done.returncode == 0, done.stderr
    assert "probe: ran /usr/bin/probed: exit status 0" in done.stderr
    assert "  /etc/probed.conf (probe: opened by /usr/bin/probed)" in done.stderr.splitlines()
    assert Archive(out).file("etc/probed.conf") == b"from the computed path\n"
    why = slimmer("why", str(out), "/etc/probed.conf")
    assert why.stdout == "/etc/probed.conf: probe: opened by /usr/bin/probed\n"


@contextmanager
def host_side() -> Iterator[tuple[Path, int, Callable[[], None]]]:
    """A path in the host's /tmp that must stay absent, a listener on the host's loopback,
    and the check that nobody connected to it; both removed at the end."""
    canary = Path("/tmp") / f"slimmer-probe-canary-{uuid.uuid4().hex}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)

    def nobody_came() -> None:
        with pytest.raises(BlockingIOError):
            listener.accept()
    try:
        yield canary, listener.getsockname()[1], nobody_came
    finally:
        listener.close()
        canary.unlink(missing_ok=True)


def test_probe_cannot_reach_the_hosts_files_or_network(probed_root: Path,
                                                       tmp_path: Path) -> None:
    with host_side() as (canary, port, nobody_came):
        out = tmp_path / "p.tar"
        done = slimmer("pack", "--root", str(probed_root), "/usr/bin/probed", "-o", str(out),
                       "--probe-args", f"{canary} {port}")
        assert done.returncode == 0, done.stderr
        assert not canary.exists()  # written in the sandbox's own /tmp, if anywhere
        nobody_came()


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(pid))
    return found


def test_a_run_is_stopped_at_its_time_limit_and_leaves_nothing(probed_root: Path,
                                                                tmp_path: Path) -> None:
    marker = "7431"  # seconds the program would sleep: its argv names it
    out = tmp_path / "p.tar"
    done = slimmer("pack", "--root", str(probed_root), "/usr/bin/probed", "-o", str(out),
                   "--probe-args", marker, "--probe-timeout", "2")
    assert done.returncode == 0, done.stderr
    assert ("probe: ran /usr/bin/probed 7431: stopped at the time limit (2 s)"
            in done.stderr)
    assert _processes_with(f"probed\0{marker}") == []
    assert Archive(out).file("etc/probed.conf") == b"from the computed path\n"


def test_probe_of_a_missing_workload_is_one_line(probed_root: Path, tmp_path: Path) -> None:
    done = slimmer("pack", "--root", str(probed_root), "/usr/bin/probed", "-o",
                   str(tmp_path / "p.tar"), "--probe-args", "x", "--probe-stdin",
                   str(tmp_path / "nothere"))
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "nothere" in done.stderr


# ---- a fat image's app, slimmed with the probe, run in Docker ---------------------------------

APP = b"""import configparser, os, subprocess
name = "sett" + "ings.ini"  # a path no static analysis can see
config = configparser.ConfigParser()
config.read(os.path.join("/opt/cfg", name))
print("greeting:", config["main"]["greeting"])
print("jq:", subprocess.run(["jq", "-n", "6 * 7"], capture_output=True, text=True).stdout.strip())
canary = os.environ["CANARY"]
try:
    with open(canary, "w") as f:
        f.write("x")
    print("wrote", canary)
except OSError as e:
    print("cannot write", canary, e.errno)
import socket
try:
    socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=2)
    print("connected")
except OSError as e:
    print("cannot connect")
"""
DOCKERFILE = """FROM {base}
COPY app.py /srv/app/app.py
COPY settings.ini /opt/cfg/settings.ini
ENV CANARY=%s PORT=%d
WORKDIR /srv/app
USER 65532
ENTRYPOINT ["python3", "app.py"]
"""


@pytest.mark.e2e
def test_slim_probe_of_a_fat_app(docker: Docker, tmp_path: Path) -> None:
    need_tool("bwrap")
    need_tool("strace")
    with host_side() as (canary, port, nobody_came):
        fat = derived_image(docker, mmdebstrap_root("bookworm", FAT_PACKAGES), tmp_path,
                            DOCKERFILE % (canary, port),
                            {"app.py": APP, "settings.ini": b"[main]\ngreeting = hello\n"})
        out, lock = tmp_path / "slim.tar", tmp_path / "slim.lock"
        tag = f"probed:{uuid.uuid4().hex[:8]}"
        done = slimmer("slim", str(fat), "-o", str(out), "--probe", "--lock", str(lock),
                       "--report", "json", "--tag", tag)
        assert done.returncode == 0, done.stderr
        # the host's side: nothing written in its /tmp, nobody connected to its loopback
        assert not canary.exists()
        nobody_came()
        report = json.loads(done.stdout)
        beyond = {p["path"]: p["reason"] for p in report["probe"]["beyond_static"]}
        assert beyond["/opt/cfg/settings.ini"] == "probe: opened by /usr/bin/python3"
        assert beyond["/usr/bin/jq"] == "probe: executed"
        assert report["probe"]["runs"][0]["status"] == 0
        why = slimmer("why", str(out), "/opt/cfg/settings.ini")
        assert why.stdout == "/opt/cfg/settings.ini: probe: opened by /usr/bin/python3\n"

        def output(archive: Path) -> bytes:
            with docker.loaded(archive) as tag:
                done = docker.run("run", "--rm", "--network", "none", tag, check=False)
                assert done.returncode == 0, done.stderr.decode()
                return done.stdout
        expected = (f"greeting: hello\njq: 42\nwrote {canary}\ncannot connect\n").encode()
        assert output(fat) == expected
        assert output(out) == expected

        # the release build: the lock's records, no probe, the same bytes
        again = tmp_path / "again.tar"
        done = slimmer("slim", str(fat), "-o", str(again), "--locked", str(lock), "--tag", tag)
        assert done.returncode == 0, done.stderr
        assert "probe:" not in done.stderr  # nothing ran
        assert again.read_bytes() == out.read_bytes()
