"""The sandbox a probe runs in: bubblewrap for the isolation, strace for the record.

    strace -f -y ... -o TRACE -- bwrap --unshare-{user,pid,net,ipc,uts,cgroup} --ro-bind ROOT / \
        --proc /proc --dev /dev --tmpfs /tmp ... -- ARGV

Why these tools: bubblewrap is made for exactly this (namespaces, a read-only root, a private
/tmp, no capabilities, `--die-with-parent`), and it runs unprivileged in a user namespace, so the
workload runs as an ordinary user of the host kernel: the image's uid and gid for real, with the
image's owners and modes on every file (as in the container), and nothing it does can reach the
host's filesystem (the root is read-only, /tmp a tmpfs of its own) or network (a network
namespace with loopback only). strace records what the workload asks the kernel for, with each
fd's path (`-y`); fanotify would need CAP_SYS_ADMIN and sees no failed lookups or execs.

A workload whose user is root runs as root inside a user namespace mapped to the host's nobody
(65534): it cannot read what only the host's root may read, and it holds no capability on the
host. The run is stopped at its time limit: strace is killed, bwrap dies with its parent, and
with bwrap's PID 1 every process of the sandbox's PID namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass

from slimmer.errors import SlimmerError
from slimmer.probe.trace import Touch, touches
from slimmer.tree import Dir, File, FileTree, Symlink

NOBODY = 65534
OUTPUT_TAIL = 2000  # bytes of the workload's output kept for messages
# what a host root's top level must not show inside (pseudo file systems, other users' files,
# sockets of daemons under /run)
HOST_HIDDEN = frozenset({"proc", "sys", "dev", "tmp", "run", "home", "root", "mnt", "media",
                         "boot", "lost+found", "srv"})
STRACE_OPTIONS = ("-f", "-qq", "-y", "-s", "4096", "-e", "trace=%file,%process,getdents64",
                  "-e", "signal=none")


class ProbeError(SlimmerError):
    """The probe cannot run here (a tool or a privilege missing) or its workload is wrong."""

    code = "probe-failed"


@dataclass(frozen=True, slots=True)
class Workload:
    """One run: the command line inside the root, its environment (K=V), working directory,
    user, standard input (a host file, or nothing) and time limit in seconds."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    stdin: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Run:
    workload: Workload
    status: int | None  # exit status; None when stopped at the time limit
    touched: tuple[Touch, ...]
    output: str  # the tail of what it wrote to stdout and stderr


@dataclass(frozen=True, slots=True)
class Tools:
    bwrap: str
    strace: str


def find_tools(search_path: str | None) -> Tools:
    """bwrap and strace in `search_path` (the caller's PATH), or one line naming what is
    missing."""
    bwrap, strace = shutil.which("bwrap", path=search_path), shutil.which("strace",
                                                                          path=search_path)
    missing = [name for name, path in (("bubblewrap (bwrap)", bwrap), ("strace", strace))
               if path is None]
    if missing or bwrap is None or strace is None:
        raise ProbeError(f"--probe needs {' and '.join(missing)} on this machine "
                         f"(Debian: apt-get install bubblewrap strace)")
    return Tools(bwrap, strace)


def root_binds(root: str, host: bool) -> list[str]:
    """bwrap arguments that show `root` at / read-only: its top-level entries one by one (so
    that /proc, /dev and /tmp are made by bwrap, whatever the root holds), symlinks as
    symlinks; a host root hides HOST_HIDDEN."""
    args: list[str] = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name in ("proc", "dev", "tmp") or (host and name in HOST_HIDDEN):
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif os.path.isdir(path) or os.path.isfile(path):
            args += ["--ro-bind", path, f"/{name}"]
    return args


def bwrap_command(tools: Tools, root: str, work: Workload, host: bool,
                  as_nobody: bool) -> list[str]:
    args = [tools.bwrap, "--unshare-user", "--uid", str(work.uid), "--gid", str(work.gid),
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session",
            "--hostname", "slimmer-probe", *root_binds(root, host),
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    if os.path.isdir(os.path.join(root, "var/tmp")) and not os.path.islink(
            os.path.join(root, "var")):
        args += ["--tmpfs", "/var/tmp"]
    if host or not os.path.isdir(os.path.join(root, "run")):
        args += ["--tmpfs", "/run"]
    args += ["--chdir", work.cwd, "--clearenv"]
    for pair in work.env:
        name, _, value = pair.partition("=")
        args += ["--setenv", name, value]
    del as_nobody  # the host user is chosen by `run`, bwrap maps it to work.uid either way
    return [*args, "--", *work.argv]


def run(tools: Tools, root: str, work: Workload, host: bool = False) -> Run:
    """Run `work` once in the sandbox over `root` and return what it touched."""
    if work.stdin is not None and not os.path.isfile(work.stdin):
        raise ProbeError(f"--probe-stdin {work.stdin}: not a readable file")
    if os.geteuid() == 0:
        host_uid, host_gid = (NOBODY, NOBODY) if work.uid == 0 else (work.uid, work.gid)
    else:
        host_uid, host_gid = os.geteuid(), os.getegid()
    scratch = tempfile.mkdtemp(prefix="slimmer-probe-")
    try:
        os.chmod(scratch, 0o700)
        if os.geteuid() == 0:
            os.chown(scratch, host_uid, host_gid)
        trace = os.path.join(scratch, "trace")
        out_path = os.path.join(scratch, "output")
        command = [tools.strace, *STRACE_OPTIONS, "-o", trace, "--",
                   *bwrap_command(tools, root, work, host, work.uid == 0)]
        status = _execute(command, work, out_path, host_uid, host_gid)
        with open(out_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - OUTPUT_TAIL))
            output = f.read().decode("utf-8", "replace")
        if not os.path.exists(trace):
            raise ProbeError(f"--probe: the sandbox did not start: {output.strip()[-300:]}")
        with open(trace, encoding="utf-8", errors="surrogateescape") as lines:
            found = touches(lines, tools.bwrap)
        if not found and status not in (None, 0):
            raise ProbeError(f"--probe: the sandbox did not start ({' '.join(work.argv)}): "
                             f"{output.strip()[-300:]}")
        return Run(work, status, tuple(found), output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _execute(command: list[str], work: Workload, out_path: str, uid: int, gid: int
             ) -> int | None:
    """Run the traced sandbox; its exit status, or None when stopped at the time limit."""
    privileged = os.geteuid() == 0
    with ExitStack() as stack:
        stdin = stack.enter_context(open(work.stdin, "rb")) if work.stdin else None
        out = stack.enter_context(open(out_path, "wb"))
        if privileged:
            os.fchown(out.fileno(), uid, gid)
        child = subprocess.Popen(
            command, stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=out,
            stderr=out, start_new_session=True, close_fds=True,
            user=uid if privileged else None, group=gid if privileged else None,
            extra_groups=[] if privileged else None)
        try:
            return child.wait(timeout=work.timeout)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if child.poll() is None:  # strace's group; bwrap dies with it, and its PID 1 with
                os.killpg(child.pid, signal.SIGKILL)  # every process of the sandbox
                child.wait()


# ---- an image's merged root, laid out for the sandbox ----------------------------------------


def lay_out(tree: FileTree, directory: str) -> None:
    """Write `tree` (a merged image) under `directory` with its owners and modes, for the
    sandbox to bind read-only: files are hard links to their spilled copies where the file
    system allows (no copy of the image's bytes), setuid/setgid bits are dropped (the sandbox
    mounts nosuid anyway), device files and FIFOs are not made."""
    privileged = os.geteuid() == 0
    linked: dict[str, str] = {}  # node -> the first path written for it
    used: set[str] = set()  # spilled files already linked to
    for path, entry in tree.items():
        target = os.path.join(directory, path.lstrip("/")) if path != "/" else directory
        if isinstance(entry, Dir):
            os.makedirs(target, exist_ok=True)
            if privileged:
                os.chown(target, entry.uid, entry.gid)
            os.chmod(target, stat.S_IMODE(entry.mode) & ~stat.S_ISUID)
        elif isinstance(entry, Symlink):
            os.symlink(entry.target, target)
            if privileged:
                os.lchown(target, 0, 0)
        elif isinstance(entry, File):
            if entry.node is not None and entry.node in linked:
                os.link(linked[entry.node], target)
                continue
            _write_file(entry, target, used)
            if privileged:
                os.chown(target, entry.uid, entry.gid)
            os.chmod(target, stat.S_IMODE(entry.mode) & ~(stat.S_ISUID | stat.S_ISGID))
            if entry.node is not None:
                linked[entry.node] = target
    # the directory itself must be reachable by the workload's user
    os.chmod(directory, 0o755)


def _write_file(entry: File, target: str, used: set[str]) -> None:
    """A hard link to the spilled copy the first time (its owner and mode are then set on
    that inode: the writer reads only its bytes), a copy otherwise."""
    if entry.data is not None:
        with open(target, "wb") as f:
            f.write(entry.data)
        return
    assert entry.source is not None
    if entry.source not in used:
        used.add(entry.source)
        try:
            os.link(entry.source, target)
            return
        except OSError:
            pass
    shutil.copyfile(entry.source, target)
