"""`slimmer pack`: programs -> closures -> file tree -> checked -> one-layer image archive.

Stages (each a function): resolve the programs in the root; place every file the loader opens
(with the symlinks on the way) in a FileTree, moving a build tree under /app; add the baseline
files and --add files; check the tree on its own by resolving the entrypoint again inside it;
write the layer and the archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from slimmer import outputs
from slimmer.assemble import baseline, runtime
from slimmer.assemble.placing import (
    Add,
    Placement,
    add_closure,
    add_elf_closures,
    add_host_path,
    add_parents,
    add_resolved,
    add_root_path,
    merge_added,
)
from slimmer.assemble.provenance import (
    Dpkg,
    add_dpkg_status,
    check_lock,
    inputs,
    lock_text,
    spdx,
    write_atomically,
)
from slimmer.assemble.recipe import Recipe
from slimmer.assemble.recipes_apply import (
    add_recipe_dirs,
    apply_recipe,
    merged_defaults,
    recipes_for,
)
from slimmer.errors import FileProblem, MissingLibraries, SlimmerError
from slimmer.fileio import read_small_file
from slimmer.image.layer import Progress, write_layer
from slimmer.image.model import canonical_json, rfc3339
from slimmer.image.reference import Reference, parse_reference
from slimmer.image.write import ImageConfig, ImageResult, write_image
from slimmer.loader.arch import Arch
from slimmer.loader.elf import Versions, parse_versions, read_versions
from slimmer.loader.ldcache import write_ldcache
from slimmer.loader.programs import DEFAULT_PATH
from slimmer.loader.resolve import Closure, Library, Options, Resolver
from slimmer.loader.root import Root, SysRoot
from slimmer.loader.scripts import interpreters, read_shebang
from slimmer.loader.views import OverlayRoot, TreeRoot
from slimmer.tree import File, FileTree, Symlink

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
    # --add: Add, or (host source, image destination) for root's and the source's own modes
    add: tuple[Add | tuple[str, str], ...] = ()
    library_path: tuple[str, ...] = ()
    hwcaps: tuple[str, ...] = ()
    platform: str | None = None  # $PLATFORM of the target CPU (default: the architecture's)
    compression: str = "gzip"
    keep_setuid: bool = False
    epoch: int = 0  # SOURCE_DATE_EPOCH: file mtimes and `created`
    with_features: frozenset[str] = frozenset()  # runtime.py: rules to force or add
    without_features: frozenset[str] = frozenset()  # rules to drop
    gconv_charsets: tuple[str, ...] = ()  # keep only these iconv charsets (default: all)
    stop_signal: str = ""
    sbom: str | None = None  # write an SPDX 2.3 document here
    lock: str | None = None  # write a lock file of every input here
    locked: str | None = None  # refuse to build when the inputs differ from this lock file
    recipes: tuple[Recipe, ...] = ()  # applied to every program, besides the matching ones
    builtin_recipes: bool = True  # apply the built-in recipes that match a program


@dataclass(frozen=True, slots=True)
class PackResult:
    image: ImageResult
    files: int
    content_bytes: int
    tree: FileTree
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Assembled:
    """An image before it is written: its file tree, config and name."""

    tree: FileTree
    config: ImageConfig
    reference: Reference
    warnings: tuple[str, ...]
    dpkg: Dpkg | None  # the root's package database, when provenance was asked for


def pack(options: PackOptions, progress: Progress | None = None,
         root: Root | None = None) -> PackResult:
    """Build the image archive described by `options` (from `root`, see `assemble`)."""
    written_files = output_names(options)
    outputs.refuse_overlap(written_files, input_names(options, root))
    built = assemble(options, root)
    tree = built.tree
    outputs.refuse_overlap(written_files, [("file read into the image", e.source)
                                           for _, e in tree.items()
                                           if isinstance(e, File) and e.source is not None])
    items = inputs(tree, built.dpkg) if options.lock or options.locked or options.sbom else []
    if options.locked:
        raw = read_small_file(options.locked, "lock file")
        check_lock(raw.decode("utf-8", "replace"), items, options.locked)
    output = outputs.target(options.output)
    scratch = None if output.stream else os.path.dirname(output.path)  # not /dev
    try:
        layer = write_layer(tree, scratch, options.compression, options.epoch, progress)
        try:
            written = write_image(options.output, layer, built.config, built.reference,
                                  options.epoch, f"slimmer {VERSION}", options.annotations,
                                  contents_json(tree))
        finally:
            layer.close()
    except OSError as exc:
        raise FileProblem(f"{options.output}: cannot write the image ({exc.strerror})") from exc
    if options.lock:
        write_atomically(options.lock, lock_text(items).encode())
    if options.sbom:
        write_atomically(options.sbom, spdx(items, built.reference.short,
                                            rfc3339(options.epoch), f"slimmer-{VERSION}"))
    return PackResult(written, len(tree), tree.content_size(), tree, built.warnings)


def assemble(options: PackOptions, root: Root | None = None) -> Assembled:
    """Everything `pack` does but writing: resolve, place, add what the rules and recipes ask
    for, and check the tree on its own. The files come from `root` when given (an image being
    slimmed), else from the directory options.root."""
    if root is None:
        root = SysRoot(options.root)
    relocate = isinstance(root, SysRoot) and root.root == "/"
    added, added_files = _host_files(root, options)
    if options.add:  # the image's own files are searched like the root's (a library --added)
        root = OverlayRoot(added, root)
    resolver = Resolver(root, Options(library_path=options.library_path, hwcaps=options.hwcaps,
                                      platform=options.platform))
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
    place = Placement.plan(closures, relocate=relocate, also=tuple(scripts))
    recipes = _recipes_for(closures, options)
    image = merged_defaults(options, recipes)

    tree = FileTree()
    baseline.add_to(tree)
    merge_added(tree, added)
    for script, needs in scripts.items():
        found = root.require_file(script)
        add_resolved(tree, root, found.real, found.links, place,
                     f"script, run by {' then '.join(needs)}", options.keep_setuid)
    for closure in closures:
        add_closure(tree, root, closure, place, options.keep_setuid)
    warnings: list[str] = []
    for recipe, program in recipes:
        closures.extend(apply_recipe(tree, root, resolver, recipe, program, arch.triplet, place,
                                     options.keep_setuid, warnings))
    users, groups = baseline.accounts([u for r, _ in recipes for u in r.users],
                                      [g for r, _ in recipes for g in r.groups])
    baseline.add_accounts(tree, users, groups)
    for recipe, _ in recipes:
        add_recipe_dirs(tree, recipe, users, groups)
    with_features = options.with_features | {f for r, _ in recipes for f in r.with_features}
    features = runtime.enabled(runtime.check_features(with_features, "with"),
                               options.without_features)
    warnings += add_runtime_needs(tree, root, resolver, closures, place, features, options,
                                  with_features)
    _refuse_other_arches(closures, arch)  # what recipes and rules brought in; --add's below
    closures.extend(_add_elf_closures(tree, root, added_files, options, arch))
    if "ld-cache" in features:
        add_ld_cache(tree, closures, place, arch)
    wants_dpkg = "dpkg-status" in features or options.sbom or options.lock or options.locked
    dpkg = Dpkg(root) if wants_dpkg else None
    if dpkg is not None and "dpkg-status" in features:
        add_dpkg_status(tree, dpkg)

    # None: the first program; () for no entrypoint at all (an image that runs its Cmd).
    entrypoint = (image.entrypoint if image.entrypoint is not None
                  else (place.image_path(options.programs[0]),))
    check_tree(tree, [place.image_path(p) for p in options.programs], options, arch, path_dirs)
    config = ImageConfig(
        architecture=arch.oci_arch,
        variant=arch.oci_variant,
        entrypoint=entrypoint,
        cmd=image.cmd,
        env=_env(image.env),
        workdir=image.workdir,
        user=baseline.user_spec(image.user, users),
        labels=dict(options.labels),
        exposed_ports=tuple(_port(p) for p in image.expose),
        stop_signal=image.stop_signal,
    )
    return Assembled(tree, config, ref, tuple(warnings), dpkg)


# ---- runtime needs (runtime.py) ------------------------------------------------------------


def add_runtime_needs(tree: FileTree, root: Root, resolver: Resolver,
                      closures: list[Closure], place: Placement, features: frozenset[str],
                      options: PackOptions, forced: frozenset[str]) -> list[str]:
    """Libraries glibc dlopens and data files libraries read, as the runtime rules find them.
    The closures of added libraries join `closures` (for the image's ld.so.cache)."""
    needs = runtime.find_needs(root, closures, features, forced, place.image_path,
                               options.gconv_charsets)
    reason = "baseline" if needs.nsswitch == baseline.NSSWITCH else "matches the NSS modules"
    baseline.add_nsswitch(tree, needs.nsswitch, reason)
    warnings: list[str] = []
    for soname, reason in needs.libraries:
        path = resolver.dlopen_path(closures[0], soname)
        if path is None:
            warnings.append(f"{soname} not found in the root ({reason})")
            continue
        closure = resolver.closure(path)
        _refuse_missing([closure])
        add_closure(tree, root, closure, place, options.keep_setuid, reason)
        closures.append(_as_library_closure(closure, soname, path))
    for path, reason in needs.paths:
        added = add_root_path(tree, root, path, place, reason, options.keep_setuid)
        closures += add_elf_closures(tree, root, resolver, added, place, options.keep_setuid,
                                     warnings, reason)
    for image_path, target, reason in needs.links:
        tree.add(image_path, Symlink(target), reason)
    return warnings


def _as_library_closure(closure: Closure, soname: str, path: str) -> Closure:
    """A dlopened library's closure with the library itself listed among its libraries."""
    itself = Library(soname, path, closure.real, closure.links, "dlopen", "dlopen", (),
                     closure.elf)
    return closure._replace(libraries=(itself, *closure.libraries))


# ---- --add ------------------------------------------------------------------------------------


def _adds(options: PackOptions) -> list[Add]:
    return [spec if isinstance(spec, Add) else Add(*spec) for spec in options.add]


def _host_files(root: Root, options: PackOptions) -> tuple[FileTree, list[str]]:
    """The --add files in a tree of their own, placed before anything is resolved so that the
    programs' libraries are found among them too; each destination resolved through the
    symlinks of the image so far. Returns the tree and the image paths of its regular files."""
    added = FileTree()
    files: list[str] = []
    for add in _adds(options):
        files += add_host_path(added, OverlayRoot(added, root), add, options.keep_setuid)
    return added, files


def _add_elf_closures(tree: FileTree, root: Root, added: list[str],
                      options: PackOptions, arch: Arch) -> list[Closure]:
    """ELF programs and libraries among added files get their libraries too, found in the
    image first and then in the root."""
    view = OverlayRoot(tree, root)
    resolver = Resolver(view, Options(library_path=options.library_path, hwcaps=options.hwcaps,
                                      platform=options.platform))
    closures = []
    for path in added:
        data = view.read_bytes(path, 4)
        if data != b"\x7fELF":
            continue
        closures.append(resolver.closure(path))
    _refuse_other_arches(closures, arch)  # before its libraries are missed in this root
    _refuse_missing(closures)
    for closure in closures:
        for lib in [closure.interpreter, *closure.libraries]:
            if lib is None or lib.real in tree:
                continue
            for link in lib.links:
                if link.path not in tree:
                    add_parents(tree, root, link.path, Placement(None), options.keep_setuid)
                    tree.add(link.path, Symlink(link.target), f"symlink on the way to {lib.real}",
                             lib.real)
            add_parents(tree, root, lib.real, Placement(None), options.keep_setuid)
            tree.add(lib.real, root.file_entry(lib.real, options.keep_setuid),
                     f"{lib.soname} needed by {lib.needed_by} ({lib.found_via})", lib.needed_by)
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
    resolver = Resolver(view, Options(library_path=options.library_path, hwcaps=options.hwcaps,
                                      platform=options.platform))
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
        check_versions(tree, closure)


def check_versions(tree: FileTree, closure: Closure) -> None:
    """Every symbol version an object needs (DT_VERNEED) must be defined (DT_VERDEF) by the
    library it needs it from: otherwise the program fails at start with "version `GLIBC_2.xx'
    not found". Refused here instead, with the versions named."""
    view = TreeRoot(tree)
    objects = [(closure.binary, closure.real)]
    if closure.interpreter is not None:
        objects.append((closure.interpreter.path, closure.interpreter.real))
    objects += [(lib.path, lib.real) for lib in closure.libraries]
    versions = {real: _versions_of(view, real, shown) for shown, real in objects}
    by_name: dict[str, str] = {}
    for lib in [*closure.libraries, *([closure.interpreter] if closure.interpreter else [])]:
        by_name.setdefault(lib.soname, lib.real)
        if lib.elf.soname:
            by_name.setdefault(lib.elf.soname, lib.real)
    problems = []
    for shown, real in objects:
        for library, wanted in versions[real].needed:
            provider = by_name.get(library)
            if provider is None:
                continue
            missing = sorted(set(wanted) - versions[provider].defined)
            if missing:
                problems.append(f"{shown} needs {', '.join(missing)} from {library}, which "
                                f"does not define {'it' if len(missing) == 1 else 'them'}")
    if problems:
        raise MissingLibraries(f"the image would not start {closure.binary}: "
                               + "; ".join(problems))


def _versions_of(view: TreeRoot, real: str, shown: str) -> Versions:
    entry = view.tree.get(real)
    if not isinstance(entry, File):
        return Versions(frozenset(), ())
    if entry.data is not None:
        return parse_versions(entry.data, shown)
    assert entry.source is not None
    return read_versions(entry.source, shown)


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


def _refuse_other_arches(closures: list[Closure], arch: Arch) -> None:
    """What recipes, runtime rules and --add brought in must be of the programs' architecture:
    the loader cannot load anything else, and the image's ld.so.cache is for one ABI."""
    for closure in closures:
        if closure.elf.arch != arch:
            raise SlimmerError(f"{closure.binary} is {closure.elf.arch_name}, the image's programs "
                               f"are {arch.name}: one image holds one architecture")


def contents_json(tree: FileTree) -> bytes:
    """Why each entry is in the image, and what brought it in: slimmer.json of the archive."""
    files = []
    for path, _entry in tree.items():
        item: dict[str, object] = {"path": path, "reason": tree.reasons.get(path, "")}
        if path in tree.parents:
            item["parent"] = tree.parents[path]
        files.append(item)
    return canonical_json({"slimmer": 1, "files": files})


def _recipes_for(closures: list[Closure], options: PackOptions) -> list[tuple[Recipe, str]]:
    return recipes_for([(c.binary, c.real) for c in closures], options.recipes,
                       options.builtin_recipes)


def output_names(options: PackOptions) -> list[outputs.Named]:
    """The files `pack` writes, named as on the command line."""
    named = [("-o", options.output), ("--sbom", options.sbom), ("--lock", options.lock)]
    return [(what, path) for what, path in named if path]


def input_names(options: PackOptions, root: Root | None) -> list[outputs.Named]:
    """The host files `pack` reads that the user named: the programs (when read from a host
    directory rather than an image), --add sources, recipe files, the --locked file."""
    named: list[outputs.Named] = []
    if root is None:
        named += [("program", os.path.join(options.root, p.lstrip("/")))
                  for p in options.programs]
    named += [("--add source", add.source) for add in _adds(options)]
    named += [("recipe", r.source) for r in options.recipes if os.path.isabs(r.source)]
    if options.locked:
        named.append(("--locked file", options.locked))
    return named


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
