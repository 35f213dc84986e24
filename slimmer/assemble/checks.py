"""The checks of an assembled image: one architecture, no library missing, and the tree on its
own starts every program (its loader, libraries and symbol versions all there)."""

from __future__ import annotations

from collections.abc import Iterable

from slimmer.assemble import missing
from slimmer.assemble.missing import Where
from slimmer.errors import MissingLibraries, SlimmerError
from slimmer.loader.arch import Arch
from slimmer.loader.elf import Versions, parse_versions, read_versions
from slimmer.loader.resolve import Closure, Options, Resolver
from slimmer.loader.scripts import interpreters, read_shebang
from slimmer.loader.views import TreeRoot
from slimmer.tree import File, FileTree


def check_tree(tree: FileTree, programs: list[str], options: Options, arch: Arch,
               path_dirs: tuple[str, ...]) -> None:
    """Resolve each program again inside the assembled tree alone (a script's interpreters in
    its place): refuse an image that would fail with "no such file or directory"."""
    view = TreeRoot(tree)
    resolver = Resolver(view, options)
    starts = [q for p in programs
              for q in (interpreters(view, p, path_dirs) if read_shebang(view, p) else [p])]
    for program in dict.fromkeys(starts):
        closure = resolver.closure(program)
        missing.refuse([closure], None, f"{program}: the image would not start it: ")
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
        raise MissingLibraries(f"{closure.binary}: the image would not start it: "
                               + "; ".join(problems))


def _versions_of(view: TreeRoot, real: str, shown: str) -> Versions:
    entry = view.tree.get(real)
    if not isinstance(entry, File):
        return Versions(frozenset(), ())
    if entry.data is not None:
        return parse_versions(entry.data, shown)
    assert entry.source is not None
    return read_versions(entry.source, shown)


def refuse_missing(closures: Iterable[Closure], where: Where | None = None) -> None:
    """Refuse libraries missing from the root: grouped by name, with the fix that fits
    (missing.py)."""
    missing.refuse(closures, where)


def one_arch(closures: list[Closure]) -> Arch:
    arches = {c.elf.arch for c in closures}
    first = closures[0].elf.arch
    if len(arches) > 1 or first is None:
        names = ", ".join(f"{c.binary} is {c.elf.arch_name}" for c in closures)
        raise SlimmerError(f"programs of different architectures cannot share an image ({names})")
    return first


def refuse_other_arches(closures: list[Closure], arch: Arch) -> None:
    """What recipes, runtime rules and --add brought in must be of the programs' architecture:
    the loader cannot load anything else, and the image's ld.so.cache is for one ABI."""
    for closure in closures:
        if closure.elf.arch != arch:
            raise SlimmerError(f"{closure.binary} is {closure.elf.arch_name}, the image's programs "
                               f"are {arch.name}: one image holds one architecture")
