"""Applying recipes to an image being assembled: their files (with ELF files among them resolved),
directories, and image defaults merged under the command line's options."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from slimmer.loader.resolve import Closure, Resolver
from slimmer.loader.root import Root
from slimmer.tree import Dir, FileTree, Symlink

if TYPE_CHECKING:
    from slimmer.assemble.pack import PackOptions


@dataclass(frozen=True, slots=True)
class Defaults:
    """Image settings after merging: the command line wins over recipes."""

    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    env: tuple[str, ...]  # KEY=VALUE, recipes' first, then the command line's
    workdir: str
    user: str
    expose: tuple[str, ...]
    stop_signal: str


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


def merged_defaults(options: PackOptions, recipes: list[tuple[Recipe, str]]) -> Defaults:
    first = recipes[0][0].image if recipes else None
    env = [f"{k}={v}" for r, _ in recipes for k, v in r.image.env]
    expose = [p for r, _ in recipes for p in r.image.expose]
    return Defaults(
        entrypoint=(options.entrypoint if options.entrypoint is not None
                    else first.entrypoint if first else None),
        cmd=options.cmd if options.cmd is not None else (first.cmd if first else None),
        env=(*env, *options.env),
        workdir=options.workdir or (first.workdir if first else ""),
        user=options.user or (first.user if first else ""),
        expose=tuple(dict.fromkeys((*expose, *options.expose))),
        stop_signal=options.stop_signal or (first.stop_signal if first else ""),
    )


def apply_recipe(tree: FileTree, root: Root, resolver: Resolver, recipe: Recipe,
                 program: str, triplet: str, place: Placement, keep_setuid: bool,
                 warnings: list[str]) -> list[Closure]:
    """Add a recipe's files; return the closures of the ELF files among them (their libraries
    are added; one that cannot be loaded gives a warning, not a failure: it is optional)."""
    reason = f"recipe {recipe.name}"
    excludes = [_glob(recipe, expand(p, program, triplet)) for p in recipe.exclude]
    excludes += [_glob(recipe, expand(p[:-3], program, triplet)) for p in recipe.exclude
                 if p.endswith("/**")]

    def skip(path: str) -> bool:
        return any(rx.fullmatch(path) for rx in excludes)

    added: list[str] = []
    for pattern in recipe.include:
        pattern = expand(pattern, program, triplet)
        if not any(c in pattern for c in "*?["):
            if not skip(pattern):
                added += add_root_path(tree, root, pattern, place, reason, keep_setuid, skip)
            continue
        added += _add_matches(tree, root, _glob(recipe, pattern), place, reason, keep_setuid,
                              skip)
    return add_elf_closures(tree, root, resolver, added, place, keep_setuid, warnings,
                            f"recipe {recipe.name}")


def _glob(recipe: Recipe, pattern: str) -> Glob:
    """A recipe's glob after `{name}` was replaced (a program's name may hold `[z-a]`)."""
    try:
        return compile_glob(pattern)
    except BadGlob as exc:
        raise RecipeError(f"{recipe.source}: {exc}") from None


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
