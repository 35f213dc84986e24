"""Placing files from a root (or the host, for --add) into the image's FileTree: where each lands
(system paths stay, a build tree moves under /app), with the symlinks on the way."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slimmer.errors import FileProblem, SlimmerError, UnsupportedElf
from slimmer.resolve import Closure, Resolver
from slimmer.rootfs import Dir, FileTree, Symlink, host_file
from slimmer.sysroot import Link, Root, normalize

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
        tree.add(place.image_path(link.path), Symlink(place.link_target(link)),
                 f"symlink on the way to {target}", target)
    tree.add(target, root.file_entry(real, keep_setuid), reason, parent)


def add_elf_closures(tree: FileTree, root: Root, resolver: Resolver, paths: Iterable[str],
                     place: Placement, keep_setuid: bool, warnings: list[str],
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
            warnings.append(f"{exc.message} ({source})")
            continue
        if closure.missing:
            miss = closure.missing[0]
            warnings.append(f"{path} ({source}) cannot be loaded: {miss.soname} {miss.reason}")
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
        tree.add(place.image_path(link.path), Symlink(place.link_target(link)), reason)
    if not found.is_dir:
        return add_tree_entry(tree, root, path, found.real, place, reason, keep_setuid)
    files: list[str] = []
    for real, dirnames, others in root.walk(found.real):
        rel = real[len(found.real):].lstrip("/")
        asked = f"{path.rstrip('/')}/{rel}" if rel else path
        dirnames[:] = [d for d in dirnames if not (skip and skip(f"{asked}/{d}"))]
        tree.add(place.image_path(real), Dir(), reason)
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
    if stat.S_ISLNK(st.mode):
        tree.add(image, Symlink(root.readlink_real(real)), reason)
    elif stat.S_ISDIR(st.mode):
        tree.add(image, Dir(), reason)
    elif stat.S_ISREG(st.mode):
        tree.add(image, root.file_entry(real, keep_setuid), reason)
        return [real]
    return []


# ---- --add ----------------------------------------------------------------------------------


def add_host_path(tree: FileTree, source: str, dest: str, keep_setuid: bool) -> list[str]:
    """Copy a host file or directory into the image at `dest`; returns the image paths of the
    regular files added."""
    if not os.path.lexists(source):
        raise FileProblem(f"{source}: no such file or directory (--add)")
    if not dest.startswith("/"):
        raise SlimmerError(f"--add {source}:{dest}: the destination must be an absolute path")
    reason = f"--add to {normalize(dest)}"
    files: list[str] = []
    if not os.path.isdir(source) or os.path.islink(source):
        _add_one(tree, source, normalize(dest), reason, keep_setuid, files)
        return files
    for top, dirnames, filenames in os.walk(source):
        dirnames.sort()
        rel = os.path.relpath(top, source)
        image_dir = normalize(f"{dest}/{rel}")
        tree.add(image_dir, Dir(), reason)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(f"{top}/{d}")]:
            _add_one(tree, f"{top}/{name}", f"{image_dir}/{name}", reason, keep_setuid, files)
    return files


def _add_one(tree: FileTree, source: str, image: str, reason: str, keep_setuid: bool,
             files: list[str]) -> None:
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        tree.add(image, Symlink(os.readlink(source)), reason)
    elif stat.S_ISREG(st.st_mode):
        tree.add(image, host_file(source, keep_setuid), reason)
        files.append(image)
    elif not stat.S_ISDIR(st.st_mode):
        raise FileProblem(f"{source}: not a regular file, directory or symlink (--add)")
