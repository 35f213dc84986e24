"""The image before it is written: one file tree, filled by named steps in a fixed order.

`assemble` is the list of steps (learned from apko's buildImage: a flat list of named steps
over one filesystem); `Assembly` holds what they share (the tree, the root, the resolver, the
placement, the closures found so far, the warnings) and each step is one of its methods.
`pack.py` writes what it returns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from slimmer.assemble import apps, baseline, evidence, runtime, script_data, script_packages, spec
from slimmer.assemble.checks import check_tree, one_arch, refuse_missing, refuse_other_arches
from slimmer.assemble.missing import Where
from slimmer.assemble.options import BuildOptions
from slimmer.assemble.placing import (
    Placement,
    Skip,
    add_closure,
    add_elf_closures,
    add_host_path,
    add_parents,
    add_resolved,
    add_root_path,
    merge_added,
)
from slimmer.assemble.provenance import Dpkg, add_dpkg_status
from slimmer.assemble.recipe import Group, Recipe, User
from slimmer.assemble.recipes_apply import (
    add_included,
    add_recipe_dirs,
    apply_recipe,
    embedded_interpreters,
    recipes_for,
)
from slimmer.assemble.spec import ImageSpec
from slimmer.errors import SlimmerError
from slimmer.image.model import Platform, RunConfig
from slimmer.loader.arch import Arch
from slimmer.loader.dpkg import PackageDb
from slimmer.loader.ldcache import write_ldcache
from slimmer.loader.resolve import Closure, Library, Options, Resolver
from slimmer.loader.root import Resolved, Root, SysRoot
from slimmer.loader.scripts import interpreters, read_shebang
from slimmer.loader.views import OverlayRoot
from slimmer.notices import Notice
from slimmer.paths import normalize
from slimmer.tree import IMPLIED, File, FileTree, Symlink

OS_RELEASE = "/etc/os-release"
KEPT = "slim --keep"  # the reason `why`, `inspect` and slimmer.json give a path --keep kept


@dataclass(frozen=True, slots=True)
class Assembled:
    """An image before it is written: its file tree and config."""

    tree: FileTree
    platform: Platform
    config: RunConfig
    warnings: tuple[Notice, ...]
    dpkg: Dpkg | None  # the root's package database, when provenance was asked for


def assemble(image: ImageSpec, build: BuildOptions, root: Root | None = None,
             base: RunConfig | None = None,
             early: Callable[[FileTree], object] | None = None) -> Assembled:
    """Everything `pack` does but writing. The files come from `root` when given (an image
    being slimmed, whose config is `base`), else from the directory build.root. `early` is
    shown the tree once the closures, recipes and kept paths are in (the bulk of the bytes;
    the layer writer starts compressing them: image/precompress.py)."""
    job = Assembly(image, build, root, base)  # --add files placed first, the resolver
    job.resolve_programs()  # closures; a script's interpreters in its place
    job.find_commands()  # what scripts and the command line run, the application, virtualenvs
    job.plan_placement()  # a build tree moves under /app
    job.choose_recipes()
    job.add_baseline()
    job.add_host_files()
    job.place_scripts()
    job.place_closures()
    job.add_application()
    job.apply_recipes(job.recipes[:len(build.recipes)])  # those named by the caller
    job.add_kept_paths()
    job.apply_recipes(job.recipes[len(build.recipes):])  # the built-in ones that match
    job.add_accounts()
    job.add_recipe_dirs()
    if early is not None:
        early(job.tree)
    job.add_evidence()
    job.add_runtime_needs()
    job.add_closures_of_added_files()
    job.add_probed_paths()  # after every static step: what they bring keeps their reason
    job.check_script_data()  # a script's package data that nothing brought: a warning
    job.add_ld_cache()
    job.add_dpkg_status()
    job.check()
    return job.finish()


class Assembly:
    """The state the steps share; each step adds to the tree (see `assemble` for the order)."""

    def __init__(self, image: ImageSpec, build: BuildOptions, root: Root | None,
                 base: RunConfig | None) -> None:
        self.image = image
        self.build = build
        self.base = base
        host_root = build.root if root is None else None  # None: an image being slimmed
        root = SysRoot(build.root) if root is None else root
        self.relocate = isinstance(root, SysRoot) and root.root == "/"
        self.added, self.added_files = _host_files(root, build)
        if build.add:  # the image's own files are searched like the root's (a library --added)
            root = OverlayRoot(self.added, root)
        self.root = root
        self.where = Where(root, host_root, self.added)  # for the hints of a missing library
        self.options = Options(library_path=build.library_path, hwcaps=build.hwcaps,
                               platform=build.platform)
        self.resolver = Resolver(root, self.options)
        # The PATH `#!/usr/bin/env NAME` searches: the caller's env over the slimmed image's
        # (recipes are chosen later, from the programs this finds).
        above = [spec.slimmed_layer(base)] if base is not None else []
        self.entry = spec.merge([spec.defaults(), *above, image.config])  # recipes not yet
        self.path_dirs = spec.path_dirs(spec.env_pairs(self.entry.env))
        self.tree = FileTree()
        self.warnings: list[Notice] = []
        self.scripts: dict[str, list[str]] = {}
        self.closures: list[Closure] = []
        self.why: dict[str, str] = {}  # the reason of a program evidence found (apps.py)
        self.app_paths: list[tuple[str, str]] = []  # kept whole, with their reasons
        self._arch: Arch | None = None
        self.place = Placement(None)
        self.recipes: list[tuple[Recipe, str]] = []
        self.users: tuple[User, ...] = ()
        self.groups: tuple[Group, ...] = ()
        self.forced: frozenset[str] = frozenset()  # --with and the recipes' `with`
        self.features: frozenset[str] = frozenset()
        self.dpkg: Dpkg | None = None
        self.db: PackageDb | None = None  # read once, for evidence and provenance
        self.because: dict[str, str] = {}  # on-request rules evidence turned on, and why

    @property
    def arch(self) -> Arch:
        assert self._arch is not None, "resolve_programs comes first"
        return self._arch

    # ---- before the tree: what the programs need -------------------------------------------

    def resolve_programs(self) -> None:
        """The closure of every program; a script (#!) is resolved through its interpreters.
        Every library must be found, and all of one architecture."""
        programs = self.build.programs
        self.scripts = {p: interpreters(self.root, p, self.path_dirs) for p in programs
                        if read_shebang(self.root, p) is not None}
        elf_programs = dict.fromkeys(q for p in programs for q in self.scripts.get(p, [p]))
        self.closures = [self.resolver.closure(p) for p in elf_programs]
        refuse_missing(self.closures, self.where)
        self._arch = one_arch(self.closures)

    def find_commands(self) -> None:
        """Evidence of the application (apps.py): the programs its shell scripts and command
        line run, what the command line names and the WorkingDir (slim), the virtualenvs of
        its interpreters; with a warning where the evidence ends."""
        argv = apps.entry_argv(self.entry.entrypoint, self.entry.cmd, self.build.programs[0])
        found = apps.gather(self.root, self.resolver, self.scripts, self.closures, argv,
                            self.entry.working_dir, self.base is not None, self.path_dirs)
        self.scripts.update(found.scripts)
        self.closures += found.closures
        self.why, self.app_paths = found.why, list(found.paths)
        self.warnings += found.notices

    def plan_placement(self) -> None:
        self.place = Placement.plan(self.closures, relocate=self.relocate,
                                    also=tuple(self.scripts))

    def choose_recipes(self) -> None:
        """The caller's recipes (for the first program), then the built-in ones that match."""
        programs = [(c.binary, c.real) for c in self.closures]
        self.recipes = recipes_for(programs + embedded_interpreters(self.root, self.closures),
                                   self.build.recipes, self.build.builtin_recipes)
        with_features = self.build.with_features | {f for r, _ in self.recipes
                                                    for f in r.with_features}
        self.forced = runtime.check_features(with_features, "with")
        self.features = runtime.enabled(self.forced, self.build.without_features)
        self.warnings += apps.unknown_interpreters(self.root, self.scripts,
                                                   (p for _, p in self.recipes))

    # ---- the tree ----------------------------------------------------------------------------

    def add_baseline(self) -> None:
        baseline.add_to(self.tree)

    def add_host_files(self) -> None:
        merge_added(self.tree, self.added)

    def place_scripts(self) -> None:
        for script, needs in self.scripts.items():
            found = self.root.require_file(script)
            reason = self.why.get(script, f"script, run by {' then '.join(needs)}")
            add_resolved(self.tree, self.root, found.real, found.links, self.place, reason,
                         self.build.keep_setuid)
            moved = apps.moved_shebang(self.root, found.real, self.place, self.build.keep_setuid)
            if moved is not None:  # its interpreter moved under /app with it
                self.tree.remove(self.place.image_path(found.real))
                self.tree.add(self.place.image_path(found.real), moved, reason)

    def place_closures(self) -> None:
        for closure in self.closures:  # the programs' (recipes and rules add theirs later)
            add_closure(self.tree, self.root, closure, self.place, self.build.keep_setuid,
                        self.why.get(closure.binary, "program"))

    def add_application(self) -> None:
        """The paths the application evidence keeps whole (its files, WorkingDir, virtualenvs),
        with the libraries of the ELF files among them."""
        for path, reason in self.app_paths:
            if apps.generated(path):
                continue
            added = add_root_path(self.tree, self.root, path, self.place, reason,
                                  self.build.keep_setuid, apps.generated)
            self.closures += add_elf_closures(self.tree, self.root, self.resolver,
                                              apps.loaded_alone(added), self.place,
                                              self.build.keep_setuid, self.warnings, reason)

    def apply_recipes(self, recipes: list[tuple[Recipe, str]]) -> None:
        for recipe, program in recipes:
            self.closures.extend(apply_recipe(self.tree, self.root, self.resolver, recipe,
                                              program, self.arch.triplet, self.place,
                                              self.build.keep_setuid, self.warnings))

    def add_kept_paths(self) -> None:
        """--keep: paths or globs of the root that no analysis finds, with the libraries of the
        ELF files among them (`{name}` is the first program's file name, as in a recipe)."""
        if self.build.keep:
            self.closures.extend(add_included(
                self.tree, self.root, self.resolver, self.build.keep, (), self.closures[0].real,
                self.arch.triplet, self.place, self.build.keep_setuid, self.warnings, KEPT,
                "--keep"))

    def add_probed_paths(self) -> None:
        """What the probe touched that no step before brought, with the probe's reason (a
        directory as a directory only), and the libraries of the ELF files among it. Files
        the image gets generated (its own ld.so.cache, written next) are not taken."""
        files: list[str] = []
        generated = {"/etc/ld.so.cache"} if "ld-cache" in self.features else set()
        for probed in self.build.probed:
            found = self.root.lookup(probed.path)
            image_path = self.place.image_path(probed.path)
            if found is None or image_path in self.tree or image_path in generated:
                continue  # (a path a lock names that is gone: the lock check names it)
            if not found.is_dir:
                files += add_root_path(self.tree, self.root, probed.path, self.place,
                                       probed.reason, self.build.keep_setuid)
                continue
            self._add_directory(found, probed.reason)
        self.closures += add_elf_closures(self.tree, self.root, self.resolver, files,
                                          self.place, self.build.keep_setuid, self.warnings,
                                          "--probe")

    def check_script_data(self) -> None:
        """Where static evidence ends for scripts (script_data.py): the data files of a
        script's own package that nothing kept, named once per script the image starts (the
        scripts those run bring what they find without a word, as in commands.py)."""
        scripts = [p for p in self.build.programs if p in self.scripts]
        if not scripts:
            return
        if self.db is None:
            self.db = PackageDb(self.root)
        self.warnings += script_data.left_out(
            self.root, self.db, scripts, lambda real: self.place.image_path(real) in self.tree,
            self.place.image_path)

    def _add_directory(self, found: Resolved, reason: str) -> None:
        """A directory of the root as a directory only (not what it holds), with the symlinks
        on the way to it."""
        for link in found.links:
            add_parents(self.tree, self.root, link.path, self.place, self.build.keep_setuid)
            self.tree.add(self.place.image_path(link.path),
                          Symlink(self.place.link_target(link)), reason)
        add_parents(self.tree, self.root, found.real, self.place, self.build.keep_setuid)
        image = self.place.image_path(found.real)
        if image not in self.tree or self.tree.reasons.get(image) == IMPLIED:
            self.tree.add(image, self.root.dir_entry(found.real, self.build.keep_setuid), reason)

    def add_accounts(self) -> None:
        """/etc/passwd and /etc/group: root, nonroot, the caller's and the recipes' accounts."""
        self.users, self.groups = baseline.accounts(
            [*self.build.users, *(u for r, _ in self.recipes for u in r.users)],
            [*self.build.groups, *(g for r, _ in self.recipes for g in r.groups)])
        baseline.add_accounts(self.tree, self.users, self.groups)

    def add_recipe_dirs(self) -> None:
        for recipe, _ in self.recipes:
            add_recipe_dirs(self.tree, recipe, self.users, self.groups)

    def add_evidence(self) -> None:
        """What static evidence finds beyond the libraries (evidence.py): runtime data
        packages, paths compiled into the closure, dlopen literals, the modules of the
        scripts' packages (script_packages.py); and the on-request rules
        it turns on (shell for popen, tzdata, locales for LANG=C.UTF-8), which run next."""
        env = dict(p.partition("=")[::2] for p in self._config().env)
        locale = runtime.locale_evidence(env)
        because = {"locales": locale} if locale else {}
        if self.features & set(evidence.EVIDENCE):
            programs = {q for p in self.build.programs for q in self.scripts.get(p, [p])}
            triplet = self.arch.triplet
            system = {*self.resolver.search_dirs(), *self.path_dirs, f"/lib/{triplet}",
                      f"/usr/lib/{triplet}", f"/usr/local/lib/{triplet}", f"/lib64/{triplet}"}
            own = frozenset([*(os.path.dirname(c.real) for c in self.closures
                               if c.binary in programs),
                             *(os.path.dirname(self.root.require_file(p).real)
                               for p in self.build.programs if p in self.scripts)])
            self.db = PackageDb(self.root)
            primary = frozenset(f for c in self.closures if c.binary in programs
                                for f in (c.real, *(lib.real for lib in c.libraries)))
            scope = evidence.Scope(self.root, self.db, self.resolver, tuple(self.closures),
                                   frozenset(normalize(d) for d in system), own, self.features,
                                   self.place.image_path, primary, scripts=tuple(self.scripts))
            found = evidence.find(scope)
            self.warnings += found.notices
            for closure, name, reason in found.libraries:
                self._add_library(closure, name, reason, missing_ok=True)
            skip = evidence.filtered
            for path, reason in found.paths:
                self._add_path(path, reason, skip)
            for path, reason in found.directories:
                entry = self.root.lookup(path)
                if entry is not None and entry.is_dir:
                    self._add_directory(entry, reason)
            if script_packages.FEATURE in self.features:
                for path, reason in script_packages.modules(
                        self.root, self.db, self.scripts, triplet, self.place.image_path):
                    self._add_path(path, reason, skip)
            because = {**found.rules, **because}
        self.because = {k: v for k, v in because.items()
                        if k not in self.build.without_features}

    def _add_library(self, closure: Closure, soname: str, reason: str,
                     missing_ok: bool = False) -> None:
        """A library as `closure`'s libc would dlopen it, with its own libraries."""
        path = self.resolver.dlopen_path(closure, soname)
        if path is None:
            self.warnings.append(Notice("dlopen-missing", soname,
                                        f"not found in the root ({reason})",
                                        "--add it, or --without the rule"))
            return
        if self.place.image_path(path) in self.tree:
            return
        found = self.resolver.closure(path)
        if found.missing and missing_ok:
            miss = found.missing[0]
            self.warnings.append(Notice(
                "library-unloadable", path, f"cannot be loaded ({reason}): {miss.soname} "
                f"{miss.reason}", "--add the library, or --library-path DIR where the root "
                "holds it"))
            return
        refuse_missing([found], self.where)
        add_closure(self.tree, self.root, found, self.place, self.build.keep_setuid, reason)
        self.closures.append(_as_library_closure(found, soname, path))

    def _add_path(self, path: str, reason: str, skip: Skip | None = None) -> None:
        """A path of the root, and the libraries of the ELF files it brings."""
        added = add_root_path(self.tree, self.root, path, self.place, reason,
                              self.build.keep_setuid, skip)
        self.closures += add_elf_closures(self.tree, self.root, self.resolver, added,
                                          self.place, self.build.keep_setuid, self.warnings,
                                          reason)

    def add_runtime_needs(self) -> None:
        """Libraries glibc dlopens and data files libraries read, as the runtime rules find
        them; then nothing brought in so far may be of another architecture."""
        features = self.features | set(self.because)
        needs = runtime.find_needs(self.root, self.closures, features, self.forced,
                                   self.place.image_path, self.build.gconv_charsets,
                                   self.because)
        reason = "baseline" if needs.nsswitch == baseline.NSSWITCH else "matches the NSS modules"
        baseline.add_nsswitch(self.tree, needs.nsswitch, reason)
        for soname, reason in needs.libraries:
            self._add_library(self.closures[0], soname, reason)
        for path, reason in needs.paths:
            self._add_path(path, reason)
        for image_path, target, reason in needs.links:
            self.tree.add(image_path, Symlink(target), reason)
        refuse_other_arches(self.closures, self.arch)  # --add's are checked in the next step

    def add_closures_of_added_files(self) -> None:
        """ELF programs and libraries among --add files get their libraries too, found in the
        image first and then in the root."""
        keep_setuid = self.build.keep_setuid
        view = OverlayRoot(self.tree, self.root)
        resolver = Resolver(view, self.options)
        closures = [resolver.closure(path) for path in self.added_files
                    if view.read_bytes(path, 4) == b"\x7fELF"]
        refuse_other_arches(closures, self.arch)  # before its libraries are missed in this root
        refuse_missing(closures, self.where)
        for closure in closures:
            for lib in [closure.interpreter, *closure.libraries]:
                if lib is None or lib.real in self.tree:
                    continue
                for link in lib.links:
                    if link.path not in self.tree:
                        add_parents(self.tree, self.root, link.path, Placement(None), keep_setuid)
                        self.tree.add(link.path, Symlink(link.target),
                                      f"symlink on the way to {lib.real}", lib.real)
                add_parents(self.tree, self.root, lib.real, Placement(None), keep_setuid)
                self.tree.add(lib.real, self.root.file_entry(lib.real, keep_setuid),
                              f"{lib.soname} needed by {lib.needed_by} ({lib.found_via})",
                              lib.needed_by)
        self.closures.extend(closures)

    def add_ld_cache(self) -> None:
        """An /etc/ld.so.cache listing every library in the image under its SONAME, so that the
        loader inside finds libraries that the root's own cache placed outside the default
        directories. Nothing is written for an image without shared libraries."""
        if "ld-cache" not in self.features:
            return
        pairs: set[tuple[str, str]] = set()
        for closure in self.closures:
            for lib in closure.libraries:
                soname = lib.elf.soname or lib.soname
                opened = self.place.image_path(lib.path)
                by_soname = f"{os.path.dirname(opened)}/{soname}"
                pairs.add((soname, by_soname if by_soname in self.tree else opened))
        if pairs:
            data = write_ldcache(sorted(pairs), self.arch.cache_flags[0])
            self.tree.add("/etc/ld.so.cache", File(0o644, len(data), data=data),
                          "ld.so.cache for the libraries in the image")

    def add_dpkg_status(self) -> None:
        """The root's package database: read for provenance (--sbom, --lock, --locked), and
        what of it describes the image's files added (the dpkg-status rule)."""
        build = self.build
        if "dpkg-status" in self.features or build.sbom or build.lock or build.locked:
            self.dpkg = Dpkg(self.root, self.db)
        if self.dpkg is not None and self.dpkg.db and "dpkg-status" in self.features:
            # the OS the entries belong to: scanners read /etc/os-release to know which
            # distribution's advisories apply (distroless images carry it too)
            with contextlib.suppress(SlimmerError):  # a symlink loop: left out
                add_root_path(self.tree, self.root, OS_RELEASE, self.place,
                              "the distribution of the dpkg status entries, for vulnerability "
                              "scanners", self.build.keep_setuid)
            add_dpkg_status(self.tree, self.dpkg)

    # ---- the end -----------------------------------------------------------------------------

    def check(self) -> None:
        """Resolve each program again in the tree alone: refuse an image that would not start."""
        check_tree(self.tree, [self.place.image_path(p) for p in self.build.programs],
                   self.options, self.arch, self.path_dirs)

    def _config(self) -> RunConfig:
        """The image's config, merged by spec.py's rule (known once the recipes are)."""
        # the recipe whose single settings count: a slimmed image's config stands in for the
        # built-in recipes' (spec.py)
        counted = self.build.recipes if self.base is not None else [r for r, _ in self.recipes]
        layers = [spec.defaults((self.place.image_path(self.build.programs[0]),)),
                  spec.recipes_layer([r for r, _ in self.recipes],
                                     counted[0] if counted else None)]
        if self.base is not None:
            layers.append(spec.slimmed_layer(self.base))
        return spec.finished(spec.merge([*layers, self.image.config]))

    def finish(self) -> Assembled:
        """The image's config, merged by spec.py's rule, and the tree."""
        merged = self._config()
        config = RunConfig(
            env=merged.env, entrypoint=merged.entrypoint, cmd=merged.cmd,
            working_dir=merged.working_dir, user=baseline.user_spec(merged.user, self.users),
            labels=dict(merged.labels), exposed_ports=merged.exposed_ports,
            stop_signal=merged.stop_signal)
        platform = Platform(self.arch.oci_arch, "linux", self.arch.oci_variant)
        return Assembled(self.tree, platform, config, tuple(self.warnings), self.dpkg)


def _host_files(root: Root, build: BuildOptions) -> tuple[FileTree, list[str]]:
    """The --add files in a tree of their own, placed before anything is resolved so that the
    programs' libraries are found among them too; each destination resolved through the
    symlinks of the image so far. Returns the tree and the image paths of its regular files."""
    added = FileTree()
    files: list[str] = []
    for add in build.adds():
        files += add_host_path(added, OverlayRoot(added, root), add, build.keep_setuid)
    return added, files


def _as_library_closure(closure: Closure, soname: str, path: str) -> Closure:
    """A dlopened library's closure with the library itself listed among its libraries."""
    itself = Library(soname, path, closure.real, closure.links, "dlopen", "dlopen", (),
                     closure.elf)
    return closure._replace(libraries=(itself, *closure.libraries))
