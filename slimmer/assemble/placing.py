"""Placing files from a root (or the host, for --add) into the image's FileTree: where each lands
(system paths stay, a build tree moves under /app), with the symlinks on the way."""

from __future__ import annotations

import os
import re
import stat
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slimmer.errors import FileProblem, SlimmerError, SymlinkLoop, UnsupportedElf
from slimmer.loader.resolve import Closure, Resolver
from slimmer.loader.root import MAX_SYMLINKS, Link, Root
from slimmer.notices import Notice
from slimmer.paths import normalize
from slimmer.tree import IMPLIED, SETID, Dir, File, FileTree, Symlink, kept_mode

APP_DIR = "/app"
# Files under these keep their place in the image; anything else (a build tree, a home
# directory, /tmp) is moved under /app.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
               "/var", "/nix")


def is_system_path(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS)


# ---- placement ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Placement:
    """Where host paths land in the image: system paths stay, a build tree moves under /app
    as one block, so that $ORIGIN-relative layouts keep working."""

    base: str | None  # the host directory that becomes /app, or None

    @staticmethod
    def plan(closures: Iterable[Closure], relocate: bool, also: tuple[str, ...] = ()) -> Placement:
        if not relocate:
            return Placement(None)
        paths: list[str] = list(also)
        for c in closures:
            paths.extend([c.binary, c.real, *(link.path for link in c.links)])
            for lib in c.libraries:
                paths.extend([normalize(lib.path), lib.real, *(link.path for link in lib.links)])
        outside = [p for p in paths if not is_system_path(p)]
        if not outside:
            return Placement(None)
        dirs = [os.path.dirname(p) for p in outside]
        base = os.path.commonpath(dirs)
        return Placement(base if base != "/" else None)

    def image_path(self, path: str) -> str:
        path = normalize(path)
        if self.base is None:
            return path
        if path == self.base or path.startswith(self.base.rstrip("/") + "/"):
            return normalize(APP_DIR + "/" + path[len(self.base):])
        return path

    def link_target(self, link: Link) -> str:
        if self.base is not None and link.target.startswith("/"):
            return self.image_path(link.target)
        return link.target


def add_closure(tree: FileTree, root: Root, closure: Closure, place: Placement,
                keep_setuid: bool, reason: str = "program") -> None:
    """The program, its interpreter and libraries, each with the symlinks on the way. Reasons
    name image paths only (never a host path, so they are the same wherever a tree sits), and
    each library's parent is the object that needed it."""
    show = place.image_path
    program = show(closure.binary)
    items: list[tuple[str, tuple[Link, ...], str, str | None]] = [
        (closure.real, closure.links, reason, None)]
    if closure.interpreter is not None:
        interp = closure.interpreter
        items.append((interp.real, interp.links, f"interpreter of {program}", program))
    for lib in closure.libraries:
        needer = show(lib.needed_by)
        items.append((lib.real, lib.links, f"{lib.soname} needed by {needer} ({lib.found_via})",
                      needer))
    for real, links, why, parent in items:
        add_resolved(tree, root, real, links, place, why, keep_setuid, parent)


def add_resolved(tree: FileTree, root: Root, real: str, links: tuple[Link, ...],
                 place: Placement, reason: str, keep_setuid: bool,
                 parent: str | None = None) -> None:
    """A file of the root at its place, with the symlinks that lead to it (whose parent is the
    file)."""
    target = place.image_path(real)
    for link in links:
        add_parents(tree, root, link.path, place, keep_setuid)
        tree.add(place.image_path(link.path), Symlink(place.link_target(link)),
                 f"symlink on the way to {target}", target)
    add_parents(tree, root, real, place, keep_setuid)
    tree.add(target, root.file_entry(real, keep_setuid), reason, parent)


def add_parents(tree: FileTree, root: Root, real: str, place: Placement,
                keep_setuid: bool) -> None:
    """The directories above a path of the root as the root has them (an image's owners and
    modes: a postgres data directory stays 0700 postgres), where the tree has none yet or only
    an implied one. A relocated host tree keeps implied ones: its host directories mean nothing
    in the image, and a host root's directories are root's 0755 anyway: what the tree implies
    for the parents of whatever is added next (Root.plain_dirs)."""
    if place.base is not None or root.plain_dirs:
        return
    cur = ""
    for name in real.strip("/").split("/")[:-1]:
        cur = f"{cur}/{name}"
        if cur not in tree or tree.reasons.get(cur) == IMPLIED:
            entry = root.dir_entry(cur, keep_setuid)
            if tree.get(cur) != entry:
                tree.add(cur, entry, IMPLIED)


def add_elf_closures(tree: FileTree, root: Root, resolver: Resolver, paths: Iterable[str],
                     place: Placement, keep_setuid: bool, warnings: list[Notice],
                     source: str) -> list[Closure]:
    """The libraries of the ELF programs and libraries among files added from the root. One
    that cannot be loaded gives a warning, not a failure: such files are optional (a module
    nobody imports)."""
    closures = []
    for path in dict.fromkeys(paths):
        if root.read_bytes(path, 4) != b"\x7fELF":
            continue
        try:
            closure = resolver.closure(path)
        except UnsupportedElf:
            continue  # object files, core files: data as far as loading goes
        except SlimmerError as exc:
            warnings.append(Notice("elf-unreadable", path, f"{exc.message} ({source})"))
            continue
        if closure.missing:
            miss = closure.missing[0]
            warnings.append(Notice(
                "library-unloadable", path,
                f"cannot be loaded ({source}): {miss.soname} {miss.reason}",
                "--add the library, or --library-path DIR where the root holds it"))
            continue
        add_closure(tree, root, closure, place, keep_setuid)
        closures.append(closure)
    return closures


Skip = Callable[[str], bool]  # in-root path -> leave it out


def add_root_path(tree: FileTree, root: Root, path: str, place: Placement, reason: str,
                  keep_setuid: bool, skip: Skip | None = None) -> list[str]:
    """A file or directory of the root (with the symlinks on the way); a directory with all it
    holds, its symlinks kept as symlinks, less what `skip` says (matched against the path as
    asked for, below `path`). Returns the in-root paths of the regular files added."""
    found = root.lookup(path)
    if found is None:
        return []
    for link in found.links:
        add_parents(tree, root, link.path, place, keep_setuid)
        tree.add(place.image_path(link.path), Symlink(place.link_target(link)), reason)
    if not found.is_dir:
        return add_tree_entry(tree, root, path, found.real, place, reason, keep_setuid)
    add_parents(tree, root, found.real, place, keep_setuid)
    files: list[str] = []
    for real, dirnames, others in root.walk(found.real):
        rel = real[len(found.real):].lstrip("/")
        asked = f"{path.rstrip('/')}/{rel}" if rel else path
        dirnames[:] = [d for d in dirnames if not (skip and skip(f"{asked}/{d}"))]
        tree.add(place.image_path(real), root.dir_entry(real, keep_setuid), reason)
        for name in others:
            if skip is None or not skip(f"{asked}/{name}"):
                files += add_tree_entry(tree, root, f"{asked}/{name}",
                                        f"{real.rstrip('/')}/{name}", place, reason,
                                        keep_setuid)
    return files


def add_tree_entry(tree: FileTree, root: Root, asked: str, real: str, place: Placement,
                   reason: str, keep_setuid: bool) -> list[str]:
    """One entry of the root as it is (a symlink stays a symlink; special files are left out).
    Returns [real] for a regular file, else []."""
    st = root.stat_real(real)
    image = place.image_path(real)
    if st is None:
        return []
    add_parents(tree, root, real, place, keep_setuid)
    if stat.S_ISLNK(st.mode):
        tree.add(image, Symlink(root.readlink_real(real)), reason)
    elif stat.S_ISDIR(st.mode):
        tree.add(image, root.dir_entry(real, keep_setuid), reason)
    elif stat.S_ISREG(st.mode):
        tree.add(image, root.file_entry(real, keep_setuid), reason)
        return [real]
    return []


# ---- --add ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Add:
    """--add SRC:DEST[:UID:GID[:MODE]]: a host file or directory copied into the image, owned
    by UID:GID (default root), with MODE (default: the source's own permission bits)."""

    source: str
    dest: str
    uid: int = 0
    gid: int = 0
    mode: int | None = None


MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to chown


def parse_add(spec: str, cwd: str) -> Add:
    """SRC:DEST[:UID:GID[:MODE]]; SRC may hold colons (DEST is the last absolute part)."""
    parts = spec.split(":")
    at = max((i for i, p in enumerate(parts) if p.startswith("/") and i > 0), default=None)
    if at is None:  # no absolute DEST: the last part is DEST (add_host_path says what is wrong)
        at = len(parts) - 1
    source, dest, extra = ":".join(parts[:at]), parts[at], parts[at + 1:]
    if not source or not dest or len(extra) not in (0, 2, 3):
        raise SlimmerError(f"--add {spec}: expected SRC:DEST[:UID:GID[:MODE]]")
    source = os.path.join(cwd, source)
    if not extra:
        return Add(source, dest)
    uid, gid = (_id(spec, "UID", v) for v in extra[:2])
    mode = None
    if len(extra) == 3:
        if not re.fullmatch(r"[0-7]{1,4}", extra[2]):
            raise SlimmerError(f"--add {spec}: MODE {extra[2]!r} is not an octal mode "
                               "(e.g. 0640)")
        mode = int(extra[2], 8)
    return Add(source, dest, uid, gid, mode)


def _id(spec: str, what: str, value: str) -> int:
    if not value.isdigit() or int(value) > MAX_ID:
        raise SlimmerError(f"--add {spec}: {what} {value!r} is not a number from 0 to {MAX_ID}")
    return int(value)


def add_host_path(tree: FileTree, root: Root, add: Add, keep_setuid: bool) -> list[str]:
    """Copy a host file or directory into the image at `add.dest`, its directories resolved
    through the image's own symlinks (merged /usr: /lib/terminfo lands in /usr/lib/terminfo,
    /lib kept as the link); `root` is the image so far (the tree over the root). Returns the
    image paths of the regular files added."""
    source, dest = add.source, add.dest
    if not os.path.lexists(source):
        raise FileProblem(f"{source}: no such file or directory (--add)")
    if os.path.islink(source):
        # As cp (and Docker's COPY) treat the source named: the file or directory the link
        # leads to is copied (a link kept as a link would dangle in the image: Debian's
        # /usr/share/misc/magic.mgc is ../../lib/file/magic.mgc). Links inside a directory
        # stay links.
        if not os.path.exists(source):
            raise FileProblem(f"{source}: a dangling symlink (--add)")
        source = os.path.realpath(source)
    if not dest.startswith("/"):
        raise SlimmerError(f"--add {source}:{dest}: the destination must be an absolute path")
    if add.mode is not None and add.mode & SETID and not keep_setuid:
        raise SlimmerError(f"--add {source}:{dest}: MODE {add.mode:04o} sets setuid/setgid: "
                           "add --keep-setuid to allow it")
    reason = f"--add to {normalize(dest)}"
    files: list[str] = []
    if not os.path.isdir(source):
        _add_one(tree, root, add, source, dest, reason, keep_setuid, files)
        return files
    for top, dirnames, filenames in os.walk(source):
        dirnames.sort()
        rel = os.path.relpath(top, source)
        image_dir = in_image(tree, root, normalize(f"{dest}/{rel}"), keep_setuid)
        tree.add(image_dir, Dir(_dir_mode(add, os.stat(top).st_mode, keep_setuid), add.uid,
                                add.gid), reason)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(f"{top}/{d}")]:
            _add_one(tree, root, add, f"{top}/{name}", f"{image_dir}/{name}", reason,
                     keep_setuid, files)
    return files


def _add_one(tree: FileTree, root: Root, add: Add, source: str, dest: str, reason: str,
             keep_setuid: bool, files: list[str]) -> None:
    st = os.lstat(source)
    image = in_image(tree, root, normalize(dest), keep_setuid)
    if stat.S_ISLNK(st.st_mode):
        tree.add(image, Symlink(os.readlink(source)), reason)
    elif stat.S_ISREG(st.st_mode):
        mode = add.mode if add.mode is not None else kept_mode(st.st_mode & ~stat.S_ISVTX,
                                                               keep_setuid)
        tree.add(image, File(mode, st.st_size, source=source, uid=add.uid, gid=add.gid),
                 reason)
        files.append(image)
    elif not stat.S_ISDIR(st.st_mode):
        raise FileProblem(f"{source}: not a regular file, directory or symlink (--add)")


def _dir_mode(add: Add, host_mode: int, keep_setuid: bool) -> int:
    """A directory's own bits; under a MODE, that MODE with search allowed wherever reading is
    (as chmod's X: a 0640 MODE gives files 0640 and their directories 0750)."""
    if add.mode is None:
        return kept_mode(host_mode, keep_setuid)
    return add.mode | (add.mode & 0o444) >> 2


def in_image(tree: FileTree, root: Root, path: str, keep_setuid: bool) -> str:
    """Where `path` lands in the image: each directory on the way resolved through the image's
    own symlinks (never the host's: `root` is the image so far), as a shell writing there would;
    the links met are added to the tree, and the directories met as the root has them (an
    image's /etc/ssl/private keeps its mode). The last name is not followed."""
    pending = deque(path.strip("/").split("/")[:-1])
    last = path.rsplit("/", 1)[-1]
    cur = ""
    hops = 0
    while pending:
        name = pending.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            cur = cur.rsplit("/", 1)[0]
            continue
        nxt = f"{cur}/{name}"
        st = root.stat_real(nxt)
        if st is None or not stat.S_ISLNK(st.mode):
            implied = tree.reasons.get(nxt, IMPLIED) == IMPLIED
            if st is not None and stat.S_ISDIR(st.mode) and implied:
                entry = root.dir_entry(nxt, keep_setuid)
                if tree.get(nxt) != entry:
                    tree.add(nxt, entry, IMPLIED)
            cur = nxt
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise SymlinkLoop(f"{path}: too many levels of symbolic links in the image (--add)")
        target = root.readlink_real(nxt)
        if nxt not in tree:
            tree.add(nxt, Symlink(target), f"symlink on the way to {path}")
        cur = "" if target.startswith("/") else cur
        pending.extendleft(reversed(target.split("/")))
    return f"{cur}/{last}"


def merge_added(tree: FileTree, added: FileTree) -> None:
    """The --add entries (built apart, see packer) into the image; a directory they only imply
    does not replace one the image has for a reason (baseline's /tmp stays 1777)."""
    for path, entry in added.items():
        reason = added.reasons.get(path, "")
        if reason == IMPLIED and tree.reasons.get(path, IMPLIED) != IMPLIED:
            continue
        tree.add(path, entry, reason, added.parents.get(path))
