"""The files every image gets: users root (0) and nonroot (65532), nsswitch.conf, /tmp."""

from __future__ import annotations

from collections.abc import Iterable

from slimmer.assemble.recipe import Group, User, account_problem
from slimmer.errors import SlimmerError, printable
from slimmer.tree import Dir, File, FileTree

NONROOT = 65532
DIR = Dir()

USERS = (User("root", 0, 0, "/root", "/sbin/nologin"),
         User("nonroot", NONROOT, NONROOT, "/home/nonroot", "/sbin/nologin"))
GROUPS = (Group("root", 0), Group("nonroot", NONROOT))
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


def add_nsswitch(tree: FileTree, content: str = NSSWITCH, reason: str = "baseline") -> None:
    tree.add("/etc/nsswitch.conf", _text(content), reason)


def _text(content: str) -> File:
    data = content.encode()
    return File(0o644, len(data), data=data)


def add_to(tree: FileTree) -> None:
    reason = "baseline"
    tree.add("/tmp", Dir(0o1777), reason)
    tree.add("/root", Dir(0o700), reason)
    tree.add("/home/nonroot", Dir(0o700, NONROOT, NONROOT), reason)


def accounts(extra_users: Iterable[User] = (),
             extra_groups: Iterable[Group] = ()) -> tuple[tuple[User, ...], tuple[Group, ...]]:
    """root and nonroot, then the recipes' users and groups; a name or id twice with different
    values is an error."""
    users = {u.name: u for u in USERS}
    groups = {g.name: g for g in GROUPS}
    for user in extra_users:
        _check_fields("user", user.name, (user.name, user.home, user.shell), user.uid, user.gid)
        if users.setdefault(user.name, user) != user:
            raise SlimmerError(f"user {user.name} is defined twice, differently")
    for group in extra_groups:
        _check_fields("group", group.name, (group.name,), group.gid)
        if groups.setdefault(group.name, group) != group:
            raise SlimmerError(f"group {group.name} is defined twice, differently")
    return tuple(users.values()), tuple(groups.values())


def _check_fields(kind: str, name: str, fields: tuple[str, ...], *ids: int) -> None:
    """Every account becomes a line of /etc/passwd or /etc/group, wherever it came from (a
    recipe, a fat image's /etc/passwd): none may add a field or a line."""
    shown = printable(repr(name), 80)
    for value in fields:
        problem = account_problem(value)
        if problem:
            raise SlimmerError(f"{kind} {shown}: {printable(repr(value), 80)} {problem}")
    if not all(0 <= number < 2**31 for number in ids):
        raise SlimmerError(f"{kind} {shown}: ids must be numbers from 0 to 2147483647")


def add_accounts(tree: FileTree, users: tuple[User, ...], groups: tuple[Group, ...],
                 reason: str = "baseline") -> None:
    """/etc/passwd and /etc/group, in a fixed order (by id, then name)."""
    passwd = "".join(f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:{u.home}:{u.shell}\n"
                     for u in sorted(users, key=lambda u: (u.uid, u.name)))
    group = "".join(f"{g.name}:x:{g.gid}:\n" for g in sorted(groups, key=lambda g: (g.gid, g.name)))
    tree.add("/etc/passwd", _text(passwd), reason)
    tree.add("/etc/group", _text(group), reason)


def user_spec(user: str, users: tuple[User, ...] = USERS) -> str:
    """The config's User: a known name becomes uid:gid (runAsNonRoot wants numbers);
    uid[:gid] stays."""
    if not user:
        return ""
    for known in users:
        if known.name == user:
            return f"{known.uid}:{known.gid}"
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        return user
    names = ", ".join(u.name for u in users)
    raise SlimmerError(f"--user {user}: unknown user (known: {names}; or uid[:gid])")


def owner_ids(owner: str, group: str, users: tuple[User, ...],
              groups: tuple[Group, ...]) -> tuple[int, int]:
    uid = next((u.uid for u in users if u.name == owner), None)
    gid = next((g.gid for g in groups if g.name == group), None)
    if uid is None and owner.isdigit():
        uid = int(owner)
    if gid is None and group.isdigit():
        gid = int(group)
    if uid is None or gid is None:
        raise SlimmerError(f"unknown owner {owner}:{group} (not a user or group of the image)")
    return uid, gid
