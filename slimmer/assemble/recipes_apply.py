"""Applying recipes to an image being assembled: which recipes, their files (with ELF files among
them resolved) and directories. Their [image] defaults are merged in spec.py."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable

from slimmer.assemble import baseline
from slimmer.assemble.globs import BadGlob, Glob, compile_glob
from slimmer.assemble.placing import (
    Placement,
    Skip,
    add_elf_closures,
    add_root_path,
    add_tree_entry,
)
from slimmer.assemble.recipe import (
    Group,
    Recipe,
    RecipeError,
    User,
    builtin_recipes,
    expand,
    fixed_prefix,
    matching_recipes,
)
from slimmer.errors import SlimmerError
from slimmer.loader.resolve import Closure, Resolver
from slimmer.loader.root import Root
from slimmer.notices import Notice
from slimmer.tree import Dir, FileTree, Symlink

# Libraries that embed an interpreter (gdb, uwsgi and vim link libpython): the interpreter's
# recipe (its standard library) applies as if the program were the interpreter.
EMBEDDED = ((re.compile(r"libpython(?P<version>3\.[0-9]+)\.so(?:\..*)?"),
             "/usr/bin/python{version}"),
            (re.compile(r"libperl\.so\.5(?:\..*)?"), "/usr/bin/perl"))


def embedded_interpreters(root: Root, closures: Iterable[Closure]) -> list[tuple[str, str]]:
    """(interpreter, real path) for each interpreter a library of the closures embeds, where
    the root has that interpreter."""
    out: dict[str, str] = {}
    for closure in closures:
        for lib in closure.libraries:
            for pattern, program in EMBEDDED:
                match = pattern.fullmatch(lib.elf.soname or lib.soname)
                if match is None:
                    continue
                path = program.format(**match.groupdict())
                try:
                    found = root.lookup(path)
                except SlimmerError:
                    continue
                if found is not None and found.is_file:
                    out.setdefault(path, found.real)
    return list(out.items())


def recipes_for(programs: Iterable[tuple[str, str]], explicit: tuple[Recipe, ...],
                builtins: bool) -> list[tuple[Recipe, str]]:
    """(recipe, program real path) pairs: explicit recipes for the first program, built-in ones
    for every program they match. Each recipe once."""
    programs = list(programs)
    chosen: list[tuple[Recipe, str]] = [(r, programs[0][1]) for r in explicit]
    available = builtin_recipes() if builtins else []
    for given, real in programs:
        for recipe in matching_recipes(given, real, available):
            if all(r.name != recipe.name for r, _ in chosen):
                chosen.append((recipe, real))
    return chosen


def apply_recipe(tree: FileTree, root: Root, resolver: Resolver, recipe: Recipe,
                 program: str, triplet: str, place: Placement, keep_setuid: bool,
                 warnings: list[Notice]) -> list[Closure]:
    """Add a recipe's files; return the closures of the ELF files among them (their libraries
    are added; one that cannot be loaded gives a warning, not a failure: it is optional)."""
    return add_included(tree, root, resolver, recipe.include, recipe.exclude, program, triplet,
                        place, keep_setuid, warnings, f"recipe {recipe.name}", recipe.source)


def add_included(tree: FileTree, root: Root, resolver: Resolver, include: tuple[str, ...],
                 exclude: tuple[str, ...], program: str, triplet: str, place: Placement,
                 keep_setuid: bool, warnings: list[Notice], reason: str,
                 source: str) -> list[Closure]:
    """Add the root's paths and globs `include` (but `exclude`), `{name}` and `{triplet}`
    expanded for `program`, as `reason`; return the closures of the ELF files among them. A
    bad glob is a RecipeError naming `source`."""
    excludes = [_glob(source, expand(p, program, triplet)) for p in exclude]
    excludes += [_glob(source, expand(p[:-3], program, triplet)) for p in exclude
                 if p.endswith("/**")]

    def skip(path: str) -> bool:
        return any(rx.fullmatch(path) for rx in excludes)

    added: list[str] = []
    for pattern in include:
        pattern = expand(pattern, program, triplet)
        if not any(c in pattern for c in "*?["):
            if not skip(pattern):
                added += add_root_path(tree, root, pattern, place, reason, keep_setuid, skip)
            continue
        added += _add_matches(tree, root, _glob(source, pattern), place, reason, keep_setuid,
                              skip)
    return add_elf_closures(tree, root, resolver, added, place, keep_setuid, warnings, reason)


def _glob(source: str, pattern: str) -> Glob:
    """A recipe's glob after `{name}` was replaced (a program's name may hold `[z-a]`)."""
    try:
        return compile_glob(pattern)
    except BadGlob as exc:
        raise RecipeError(f"{source}: {exc}") from None


def _add_matches(tree: FileTree, root: Root, glob: Glob, place: Placement, reason: str,
                 keep_setuid: bool, skip: Skip) -> list[str]:
    """Every entry below the pattern's fixed directories that the pattern matches (`dir/**`
    for a whole tree: a directory matched alone comes without what it holds)."""
    prefix = fixed_prefix(glob.pattern)
    top = root.lookup(prefix)
    if top is None or not top.is_dir:
        return []
    for link in top.links:
        tree.add(place.image_path(link.path), Symlink(place.link_target(link)), reason)
    files: list[str] = []
    for real, dirnames, others in root.walk(top.real):
        rel = real[len(top.real):].lstrip("/")
        asked = f"{prefix.rstrip('/')}/{rel}" if rel else prefix
        dirnames[:] = [d for d in dirnames if not skip(f"{asked}/{d}")]
        for name in sorted(others + dirnames):
            path = f"{asked.rstrip('/')}/{name}"
            if glob.fullmatch(path) and not skip(path):
                files += add_tree_entry(tree, root, path, f"{real.rstrip('/')}/{name}", place,
                                        reason, keep_setuid)
    return files


def add_recipe_dirs(tree: FileTree, recipe: Recipe, users: tuple[User, ...],
                    groups: tuple[Group, ...]) -> None:
    for spec in recipe.dirs:
        uid, gid = baseline.owner_ids(spec.owner, spec.group, users, groups)
        tree.add(spec.path, Dir(spec.mode & 0o7777 & ~(stat.S_ISUID | stat.S_ISGID), uid, gid),
                 f"recipe {recipe.name}: directory")
