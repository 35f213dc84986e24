"""`slimmer pack`: programs -> closures -> file tree -> checked -> one-layer image archive.

Stages (each a function): resolve the programs in the root; place every file the loader opens
(with the symlinks on the way) in a FileTree, moving a build tree under /app; add the baseline
files and --add files; check the tree on its own by resolving the entrypoint again inside it;
write the layer and the archive.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from slimmer import baseline, runtime
from slimmer.arch import Arch
from slimmer.errors import FileProblem, MissingLibraries, SlimmerError
from slimmer.layer import Progress, write_layer
from slimmer.ldcache import write_ldcache
from slimmer.oci import ImageConfig, ImageResult, parse_reference, write_image
from slimmer.resolve import Closure, Library, Options, Resolver
from slimmer.rootfs import File, FileTree, OverlayRoot, Symlink, TreeRoot, host_file
from slimmer.scripts import interpreters, read_shebang
from slimmer.sysroot import Link, Root, SysRoot, normalize

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APP_DIR = "/app"
# Files under these keep their place in the image; anything else (a build tree, a home
# directory, /tmp) is moved under /app.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
               "/var", "/nix")


def is_system_path(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS)
VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class PackOptions:
    programs: tuple[str, ...]  # absolute paths inside the root
    output: str
    root: str = "/"
    tag: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    expose: tuple[str, ...] = ()
    add: tuple[tuple[str, str], ...] = ()  # (host source, image destination)
    library_path: tuple[str, ...] = ()
    hwcaps: tuple[str, ...] = ()
    compression: str = "gzip"
    keep_setuid: bool = False
    epoch: int = 0  # SOURCE_DATE_EPOCH: file mtimes and `created`
    with_features: frozenset[str] = frozenset()  # runtime.py: rules to force or add
    without_features: frozenset[str] = frozenset()  # rules to drop


@dataclass(frozen=True, slots=True)
class PackResult:
    image: ImageResult
    files: int
    content_bytes: int
    tree: FileTree
    warnings: tuple[str, ...] = ()


def pack(options: PackOptions, progress: Progress | None = None) -> PackResult:
    """Build the image archive described by `options`."""
    output = _check_output(options.output)
    root = SysRoot(options.root)
    resolver = Resolver(root, Options(library_path=options.library_path, hwcaps=options.hwcaps))
    env = _env(options.env)
    path_dirs = _path_dirs(env)
    scripts = {p: interpreters(root, p, path_dirs) for p in options.programs
               if read_shebang(root, p) is not None}
    elf_programs = list(dict.fromkeys(
        q for p in options.programs for q in scripts.get(p, [p])))
    closures = [resolver.closure(p) for p in elf_programs]
    _refuse_missing(closures)
    arch = _one_arch(closures)
    ref = parse_reference(options.tag or _default_tag(options.programs[0]))
    place = Placement.plan(closures, relocate=root.root == "/", also=tuple(scripts))

    tree = FileTree()
    baseline.add_to(tree)
    for script, needs in scripts.items():
        found = root.require_file(script)
        add_resolved(tree, root, found.real, found.links, place,
                     f"script run by {' then '.join(needs)}", options.keep_setuid)
    for closure in closures:
        add_closure(tree, root, closure, place, options.keep_setuid)
    features = runtime.enabled(options.with_features, options.without_features)
    warnings = add_runtime_needs(tree, root, resolver, closures, place, features, options)
    for source, dest in options.add:
        added = add_host_path(tree, source, dest, options.keep_setuid)
        closures.extend(_add_elf_closures(tree, root, added, options))
    if "ld-cache" in features:
        add_ld_cache(tree, closures, place, arch)

    entrypoint = options.entrypoint or (place.image_path(options.programs[0]),)
    check_tree(tree, [place.image_path(p) for p in options.programs], options, arch, path_dirs)
    config = ImageConfig(
        architecture=arch.oci_arch,
        variant=arch.oci_variant,
        entrypoint=entrypoint,
        cmd=options.cmd,
        env=env,
        workdir=options.workdir,
        user=baseline.user_spec(options.user),
        labels=dict(options.labels),
        exposed_ports=tuple(_port(p) for p in options.expose),
    )
    try:
        layer = write_layer(tree, os.path.dirname(output), options.compression, options.epoch,
                            progress)
        try:
            image = write_image(output, layer, config, ref, options.epoch,
                                f"slimmer {VERSION}", options.annotations)
        finally:
            if os.path.exists(layer.path):
                os.unlink(layer.path)
    except OSError as exc:
        raise FileProblem(f"{options.output}: cannot write the image ({exc.strerror})") from exc
    return PackResult(image, len(tree), tree.content_size(), tree, warnings)


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
                keep_setuid: bool) -> None:
    """The program, its interpreter and libraries, each with the symlinks on the way."""
    items: list[tuple[str, tuple[Link, ...], str, str]] = [
        (closure.real, closure.links, closure.binary, "program")]
    if closure.interpreter is not None:
        interp = closure.interpreter
        items.append((interp.real, interp.links, interp.path, f"interpreter of {closure.binary}"))
    for lib in closure.libraries:
        items.append((lib.real, lib.links, lib.path,
                      f"{lib.soname} needed by {lib.needed_by} ({lib.found_via})"))
    for real, links, _opened, reason in items:
        add_resolved(tree, root, real, links, place, reason, keep_setuid)


def add_resolved(tree: FileTree, root: Root, real: str, links: tuple[Link, ...],
                 place: Placement, reason: str, keep_setuid: bool) -> None:
    for link in links:
        tree.add(place.image_path(link.path), Symlink(place.link_target(link)),
                 f"symlink on the way to {real}: {reason}")
    if not isinstance(root, SysRoot):
        raise SlimmerError(f"{real}: cannot copy from {root!r}")
    tree.add(place.image_path(real), host_file(root.host_path(real), keep_setuid), reason)


# ---- runtime needs (runtime.py) ------------------------------------------------------------


def add_runtime_needs(tree: FileTree, root: SysRoot, resolver: Resolver,
                      closures: list[Closure], place: Placement, features: frozenset[str],
                      options: PackOptions) -> tuple[str, ...]:
    """Libraries glibc dlopens and data files libraries read, as the runtime rules find them.
    The closures of added libraries join `closures` (for the image's ld.so.cache)."""
    needs = runtime.find_needs(root, closures, features, options.with_features)
    warnings: list[str] = []
    for soname, reason in needs.libraries:
        path = resolver.dlopen_path(closures[0], soname)
        if path is None:
            warnings.append(f"{soname} not found in the root ({reason})")
            continue
        closure = resolver.closure(path)
        _refuse_missing([closure])
        opened = resolver.root.lookup(path)
        assert opened is not None
        add_resolved(tree, root, opened.real, opened.links, place, reason, options.keep_setuid)
        add_closure(tree, root, closure, place, options.keep_setuid)
        closures.append(_as_library_closure(closure, soname, path))
    for path, reason in needs.paths:
        add_root_path(tree, root, path, place, reason, options.keep_setuid)
    for image_path, target, reason in needs.links:
        tree.add(image_path, Symlink(target), reason)
    return tuple(warnings)


def _as_library_closure(closure: Closure, soname: str, path: str) -> Closure:
    """A dlopened library's closure with the library itself listed among its libraries."""
    itself = Library(soname, path, closure.real, closure.links, "dlopen", "dlopen", (),
                     closure.elf)
    return replace(closure, libraries=(itself, *closure.libraries))


def add_root_path(tree: FileTree, root: SysRoot, path: str, place: Placement, reason: str,
                  keep_setuid: bool) -> None:
    """A file or directory of the root (with the symlinks on the way); a directory with all it
    holds, its symlinks kept as symlinks."""
    found = root.lookup(path)
    if found is None:
        return
    for link in found.links:
        tree.add(place.image_path(link.path), Symlink(place.link_target(link)), reason)
    if not found.is_dir:
        if found.is_file:
            tree.add(place.image_path(found.real),
                     host_file(root.host_path(found.real), keep_setuid), reason)
        return
    host_top = root.host_path(found.real)
    for top, dirnames, filenames in os.walk(host_top):
        dirnames.sort()
        rel = os.path.relpath(top, host_top)
        image_dir = place.image_path(normalize(f"{found.real}/{rel}"))
        tree.add(image_dir, baseline.DIR, reason)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(f"{top}/{d}")]:
            _add_one(tree, f"{top}/{name}", f"{image_dir}/{name}", reason, keep_setuid, [])


# ---- --add ----------------------------------------------------------------------------------


def add_host_path(tree: FileTree, source: str, dest: str, keep_setuid: bool) -> list[str]:
    """Copy a host file or directory into the image at `dest`; returns the image paths of the
    regular files added."""
    if not os.path.lexists(source):
        raise FileProblem(f"{source}: no such file or directory (--add)")
    if not dest.startswith("/"):
        raise SlimmerError(f"--add {source}:{dest}: the destination must be an absolute path")
    reason = f"--add {source}"
    files: list[str] = []
    if not os.path.isdir(source) or os.path.islink(source):
        _add_one(tree, source, normalize(dest), reason, keep_setuid, files)
        return files
    for top, dirnames, filenames in os.walk(source):
        dirnames.sort()
        rel = os.path.relpath(top, source)
        image_dir = normalize(f"{dest}/{rel}")
        tree.add(image_dir, baseline.DIR, reason)
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


def _add_elf_closures(tree: FileTree, root: SysRoot, added: list[str],
                      options: PackOptions) -> list[Closure]:
    """ELF programs and libraries among added files get their libraries too, found in the
    image first and then in the root."""
    view = OverlayRoot(tree, root)
    resolver = Resolver(view, Options(library_path=options.library_path, hwcaps=options.hwcaps))
    closures = []
    for path in added:
        data = view.read_bytes(path, 4)
        if data != b"\x7fELF":
            continue
        closures.append(resolver.closure(path))
    _refuse_missing(closures)
    for closure in closures:
        for lib in [closure.interpreter, *closure.libraries]:
            if lib is None or lib.real in tree:
                continue
            for link in lib.links:
                if link.path not in tree:
                    tree.add(link.path, Symlink(link.target), f"symlink on the way to {lib.real}")
            tree.add(lib.real, host_file(root.host_path(lib.real), options.keep_setuid),
                     f"{lib.soname} needed by {lib.needed_by} ({lib.found_via})")
    return closures


# ---- the image's own ld.so.cache ---------------------------------------------------------------


def add_ld_cache(tree: FileTree, closures: Iterable[Closure], place: Placement,
                 arch: Arch) -> None:
    """An /etc/ld.so.cache listing every library in the image under its SONAME, so that the
    loader inside finds libraries that the root's own cache placed outside the default
    directories. Nothing is written for an image without shared libraries."""
    pairs: set[tuple[str, str]] = set()
    for closure in closures:
        for lib in closure.libraries:
            soname = lib.elf.soname or lib.soname
            opened = place.image_path(lib.path)
            by_soname = f"{os.path.dirname(opened)}/{soname}"
            pairs.add((soname, by_soname if by_soname in tree else opened))
    if pairs:
        data = write_ldcache(sorted(pairs), arch.cache_flags[0])
        tree.add("/etc/ld.so.cache", File(0o644, len(data), data=data),
                 "ld.so.cache for the libraries in the image")


# ---- checks ---------------------------------------------------------------------------------


def check_tree(tree: FileTree, programs: list[str], options: PackOptions, arch: Arch,
               path_dirs: tuple[str, ...]) -> None:
    """Resolve each program again inside the assembled tree alone (a script's interpreters in
    its place): refuse an image that would fail with "no such file or directory"."""
    view = TreeRoot(tree)
    resolver = Resolver(view, Options(library_path=options.library_path, hwcaps=options.hwcaps))
    starts = [q for p in programs
              for q in (interpreters(view, p, path_dirs) if read_shebang(view, p) else [p])]
    for program in dict.fromkeys(starts):
        closure = resolver.closure(program)
        if closure.missing:
            lines = "; ".join(f"{m.soname} needed by {m.needed_by}: {m.reason}"
                              for m in closure.missing)
            raise MissingLibraries(f"the image would not start {program}: {lines}")
        if closure.elf.arch != arch:
            raise SlimmerError(f"{program}: {closure.elf.arch_name} program in a "
                               f"{arch.name} image")


def _refuse_missing(closures: Iterable[Closure]) -> None:
    problems = [f"{m.soname} needed by {m.needed_by}: {m.reason} (searched: "
                f"{'; '.join(m.searched) or 'nothing'})"
                for c in closures for m in c.missing]
    if problems:
        raise MissingLibraries(problems[0] if len(problems) == 1 else
                               f"{len(problems)} libraries missing: " + " | ".join(problems))


def _one_arch(closures: list[Closure]) -> Arch:
    arches = {c.elf.arch for c in closures}
    first = closures[0].elf.arch
    if len(arches) > 1 or first is None:
        names = ", ".join(f"{c.binary} is {c.elf.arch_name}" for c in closures)
        raise SlimmerError(f"programs of different architectures cannot share an image ({names})")
    return first


def _check_output(output: str) -> str:
    path = os.path.abspath(output)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise FileProblem(f"{output}: output directory {directory} does not exist")
    if os.path.isdir(path):
        raise FileProblem(f"{output}: is a directory")
    return path


def _default_tag(program: str) -> str:
    name = os.path.basename(program).lower()
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("._-")
    return f"{cleaned or 'image'}:latest"


def _path_dirs(env: tuple[str, ...]) -> tuple[str, ...]:
    """The PATH the image's programs get (env's `#!/usr/bin/env NAME` searches it)."""
    for pair in env:
        if pair.startswith("PATH="):
            return tuple(d for d in pair[5:].split(":") if d)
    return tuple(DEFAULT_PATH.split(":"))


def _env(pairs: tuple[str, ...]) -> tuple[str, ...]:
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SlimmerError(f"--env {pair}: expected KEY=VALUE")
        env[key] = value
    return tuple(f"{k}={v}" for k, v in env.items())


def _port(text: str) -> str:
    number, _, proto = text.partition("/")
    proto = proto or "tcp"
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("tcp", "udp", "sctp"):
        raise SlimmerError(f"--expose {text}: expected PORT[/tcp|udp|sctp]")
    return f"{int(number)}/{proto}"
