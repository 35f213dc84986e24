"""The files every image gets: users root (0) and nonroot (65532), nsswitch.conf, /tmp."""

from __future__ import annotations

from slimmer.errors import SlimmerError
from slimmer.rootfs import Dir, File, FileTree

NONROOT = 65532
DIR = Dir()

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnonroot:x:{NONROOT}:\n"
# glibc's defaults when the file is missing, written out so that every libc agrees.
NSSWITCH = (
    "passwd: files\n"
    "group: files\n"
    "shadow: files\n"
    "hosts: files dns\n"
    "networks: files\n"
    "protocols: files\n"
    "services: files\n"
    "ethers: files\n"
    "rpc: files\n"
)
USERS = {"root": "0:0", "nonroot": f"{NONROOT}:{NONROOT}"}


def _text(content: str) -> File:
    data = content.encode()
    return File(0o644, len(data), data=data)


def add_to(tree: FileTree) -> None:
    reason = "baseline"
    tree.add("/etc/passwd", _text(PASSWD), reason)
    tree.add("/etc/group", _text(GROUP), reason)
    tree.add("/etc/nsswitch.conf", _text(NSSWITCH), reason)
    tree.add("/tmp", Dir(0o1777), reason)
    tree.add("/root", Dir(0o700), reason)
    tree.add("/home/nonroot", Dir(0o700, NONROOT, NONROOT), reason)


def user_spec(user: str) -> str:
    """The config's User: names of the baseline users become numbers (runAsNonRoot wants
    numbers); uid[:gid] stays."""
    if not user:
        return ""
    if user in USERS:
        return USERS[user]
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        return user
    raise SlimmerError(f"--user {user}: unknown user (use root, nonroot or uid[:gid])")
