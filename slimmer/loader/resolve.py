"""The breadth-first closure of a program, found as glibc's or musl's loader would find it.

glibc (elf/dl-deps.c, dl-load.c _dl_map_object), for each DT_NEEDED name of each loaded object in
breadth-first order:
  1. a name with '/' is opened as it is;
  2. an object already loaded under that name (or with that SONAME) is reused;
  3. only if the requester has no DT_RUNPATH: DT_RPATH of the requester, of its loader, and so on up
     the chain, then the main program's DT_RPATH;
  4. LD_LIBRARY_PATH (`library_path`);
  5. the requester's own DT_RUNPATH (never inherited);
  6. /etc/ld.so.cache (skipped for system directories when the requester has DF_1_NODEFLIB);
  7. the loader's compiled-in system directories (unless DF_1_NODEFLIB).
In every directory the enabled glibc-hwcaps subdirectories come first. A candidate of the wrong ELF
class or machine is skipped and the search goes on; one that is not a loadable ELF object stops the
program with an error. A file that is already loaded (same device and inode) is reused.
musl (ldso/dynlink.c load_library) is simpler: see `_search_musl`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from slimmer.errors import (
    CorruptElf,
    FileProblem,
    NotElf,
    SlimmerError,
    SymlinkLoop,
    UnsupportedElf,
)
from slimmer.loader.arch import LEGACY_HWCAP_BITS, LEGACY_PLATFORM_BITS, LEGACY_PLATFORM_MASK, Arch
from slimmer.loader.closure import (
    VIA_CACHE,
    VIA_CONF,
    VIA_DEFAULT,
    VIA_HWCAPS,
    VIA_LIBRARY_PATH,
    VIA_PATH,
    VIA_PATH_FILE,
    VIA_RPATH,
    VIA_RUNPATH,
    Closure,
    Library,
    Missing,
    Options,
)
from slimmer.loader.elf import DF_1_PIE, ELFOSABI_GNU, ELFOSABI_SYSV, ET_DYN, ElfInfo, Kind
from slimmer.loader.ldcache import CacheEntry, LdCache, read_ldcache
from slimmer.loader.ldpaths import (
    SearchDefaults,
    glibc_defaults,
    legacy_subdirs,
    musl_is_libc,
    musl_system_dirs,
    read_ld_so_conf,
    split_glibc_path,
    split_musl_path,
)
from slimmer.loader.root import Resolved, Root

__all__ = ["Closure", "Library", "Missing", "Options", "Resolver"]

class _Obj:
    """A loaded object while the closure is being computed (mutable: $ORIGIN and the expanded
    search paths are filled in when first needed)."""

    __slots__ = ("elf", "extra", "loader", "origin_dir", "path")

    def __init__(self, path: str, elf: ElfInfo, loader: _Obj | None,
                 origin_dir: str | None = None) -> None:
        self.path = path
        self.elf = elf
        self.loader = loader
        self.origin_dir = origin_dir  # $ORIGIN; for libraries worked out when first needed
        self.extra: dict[str, tuple[str, ...]] = {}  # cached expanded paths

    @property
    def origin(self) -> str:
        if self.origin_dir is None:
            self.origin_dir = os.path.dirname(self.path)
        return self.origin_dir


Hit = tuple[str, Resolved, ElfInfo, str, tuple[str, ...]]  # path, file, facts, via, hwcaps
# What the search past RPATH, LD_LIBRARY_PATH and RUNPATH (cache, default directories) gave for
# one name: the same for every program of one ABI, so a Resolver keeps it.
SystemSearch = tuple[Hit | None, tuple[str, ...], str | None]  # hit, searched, failure


class UnsupportedCache(SlimmerError):
    """An ld.so.cache whose entries slimmer cannot follow the way the loader would."""


class LoadFailure(SlimmerError):
    """A candidate the loader would open and then refuse (fatal for the program)."""


class Resolver:
    """Resolves programs inside one root. Caches parsed files, so one Resolver over many
    programs (as `slimmer deps /usr/bin/*` does) reads each library once."""

    def __init__(self, root: Root, options: Options | None = None) -> None:
        self.root = root
        self.options = options if options is not None else Options()
        self._elf: dict[str, ElfInfo | SlimmerError] = {}
        self._cache: LdCache | None = None
        self._cache_read = False
        self._conf: tuple[str, ...] | None = None
        self._defaults: dict[tuple[str | None, str], SearchDefaults] = {}
        self._musl_dirs: dict[str, tuple[tuple[str, ...], str]] = {}
        self._system: dict[tuple[str, bool, str, str | None], SystemSearch] = {}
        self._templates: dict[tuple[object, ...], _Template] = {}
        self._legacy: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}

    # ---- reading ---------------------------------------------------------------------------

    def elf_at(self, found: Resolved) -> ElfInfo:
        """The ELF facts of a resolved file (cached by real path); raises on bad files."""
        cached = self._elf.get(found.real)
        if cached is None:
            try:
                cached = self.root.read_elf(found)
            except SlimmerError as exc:
                cached = exc
            self._elf[found.real] = cached
        if isinstance(cached, SlimmerError):
            raise cached
        return cached

    def ld_cache(self) -> LdCache | None:
        if not self._cache_read:
            self._cache = read_ldcache(self.root)
            self._cache_read = True
        return self._cache

    def search_dirs(self) -> tuple[str, ...]:
        """The directories libraries are found in without a path of their own: ld.so.conf's
        and LD_LIBRARY_PATH (the loader's compiled-in ones are the caller's to add)."""
        return (*self.options.library_path, *self._conf_dirs())

    def _conf_dirs(self) -> tuple[str, ...]:
        if self._conf is None:
            self._conf = read_ld_so_conf(self.root)
        return self._conf

    # ---- the closure -----------------------------------------------------------------------

    def closure(self, binary: str) -> Closure:
        """Resolve one program (an absolute path inside the root)."""
        found = self.root.require_file(binary)
        elf = self.elf_at(found)
        arch = elf.arch
        if arch is None:
            raise UnsupportedElf(f"{binary}: unsupported architecture ({elf.arch_name})")
        if elf.kind in (Kind.STATIC, Kind.STATIC_PIE):
            return Closure(binary, found.real, found.links, elf, None, (), ())
        main_inode = (found.dev, found.ino)
        key = self._shared_key(elf, found.real)
        template = self._templates.get(key)
        if template is None or main_inode in template.inodes:
            # The main program's path is left out (MAIN) so that the result can serve every
            # program with the same needs; `closure_for` puts it in.
            origin = os.path.dirname(found.real)  # the kernel's /proc/self/exe: the real path
            state = _State(self, _Obj(MAIN, elf, None, origin), arch, main_inode)
            state.load_interpreter()
            state.walk()
            template = _Template(state.interpreter, tuple(state.libraries),
                                 tuple(state.missing), tuple(state.warnings),
                                 frozenset(k for k, v in state.by_inode.items()
                                           if v is not state.main))
            if not state.reused_main:
                self._templates[key] = template
        return template.closure_for(binary, found, elf)

    def dlopen_path(self, closure: Closure, name: str) -> str | None:
        """Where glibc's dlopen(name), called from libc, finds a library: libc's loader chain's
        DT_RPATH (the program's), LD_LIBRARY_PATH, the cache, the default directories. None when
        it finds none, or for a program that does not use glibc."""
        libc = next((lib for lib in closure.libraries
                     if (lib.elf.soname or lib.soname) == "libc.so.6"), None)
        arch = closure.elf.arch
        if libc is None or arch is None or closure.elf.is_musl:
            return None
        main = _Obj(closure.binary, closure.elf, None, os.path.dirname(closure.real))
        state = _State(self, main, arch, (-1, -1))
        try:
            hit = state._search(_Obj(libc.path, libc.elf, main), name, [])
        except LoadFailure:
            return None
        return hit[0] if hit is not None else None

    def _shared_key(self, elf: ElfInfo, real: str) -> tuple[object, ...]:
        """What a program's closure depends on besides the root and the options: programs that
        agree on all of it load the same libraries, so their closure is worked out once per
        Resolver. The program's directory counts only when a token in its search paths
        ($ORIGIN) can make use of it."""
        paths = (elf.raw_rpath or "", elf.runpath or "", *self.options.library_path)
        origin = os.path.dirname(real) if any("$" in p for p in paths) else None
        return (elf.interpreter, elf.needed, elf.soname, elf.machine, elf.elf_class,
                elf.raw_rpath, elf.runpath, elf.nodeflib, origin)


MAIN = "\0main"  # stands for the main program's path in a shared closure


class _Template(NamedTuple):
    """A closure with the main program's path left out."""

    interpreter: Library | None
    libraries: tuple[Library, ...]
    missing: tuple[Missing, ...]
    warnings: tuple[str, ...]
    inodes: frozenset[tuple[int, int]]

    def closure_for(self, binary: str, found: Resolved, elf: ElfInfo) -> Closure:
        def lib(i: Library) -> Library:
            if i.needed_by != MAIN:
                return i
            return Library(i.soname, i.path, i.real, i.links, binary, i.found_via, i.hwcaps, i.elf)

        def miss(i: Missing) -> Missing:
            return Missing(i.soname, binary, i.searched, i.reason) if i.needed_by == MAIN else i

        interp = lib(self.interpreter) if self.interpreter is not None else None
        return Closure(binary, found.real, found.links, elf, interp,
                       tuple(map(lib, self.libraries)), tuple(map(miss, self.missing)),
                       tuple(w.replace(MAIN, binary) for w in self.warnings))


class _State:
    """One program's resolution in progress."""

    def __init__(self, resolver: Resolver, main: _Obj, arch: Arch,
                 main_inode: tuple[int, int]) -> None:
        self.r = resolver
        self.root = resolver.root
        self.opts = resolver.options
        self.main = main
        self.arch = arch
        self.musl = main.elf.is_musl
        self.names: dict[str, _Obj] = {}  # every name an object was loaded or matched under
        self.sonames: dict[str, _Obj] = {}
        self._register(main, ())
        self.reused_main = False  # a library turned out to be the main program's own file
        self.by_inode: dict[tuple[int, int], _Obj] = {main_inode: main}
        self.interpreter: Library | None = None
        self.libraries: list[Library] = []
        self.missing: list[Missing] = []
        self.warnings: list[str] = []
        interp = main.elf.interpreter
        self.platform = self.opts.platform or arch.platform
        self.legacy: tuple[str, ...] = ()  # legacy hwcaps subdirectories, best first
        if self.musl:
            assert interp is not None
            key = interp
            if key not in resolver._musl_dirs:
                resolver._musl_dirs[key] = musl_system_dirs(self.root, interp, arch.musl_name)
            self.musl_dirs, self.musl_via = resolver._musl_dirs[key]
        else:
            dkey = (interp, arch.name)
            if dkey not in resolver._defaults:
                resolver._defaults[dkey] = glibc_defaults(self.root, interp, arch)
            self.defaults = resolver._defaults[dkey]
            if self.defaults.legacy:
                names = self.opts.legacy_hwcaps
                self.legacy = legacy_subdirs(arch.legacy_hwcaps if names is None else names,
                                             self.platform)

    # ---- interpreter ---------------------------------------------------------------------

    def load_interpreter(self) -> None:
        interp = self.main.elf.interpreter
        if interp is None:
            return
        try:
            found = self.root.lookup(interp)
            if found is None:
                raise LoadFailure("not found")
            elf = self._verify(found)
        except _WrongClass:
            reason = "of another ELF class or machine than the program"
            self.missing.append(Missing(interp, self.main.path, (interp,),
                                        f"interpreter {reason}"))
            return
        except SlimmerError as exc:
            reason = exc.message
            self.missing.append(Missing(interp, self.main.path, (interp,),
                                        f"interpreter {reason}"))
            return
        obj = _Obj(interp, elf, None)
        self._register(obj, (interp,))
        self.by_inode[(found.dev, found.ino)] = obj
        self.interpreter = Library(os.path.basename(interp), interp, found.real, found.links,
                                   self.main.path, "interpreter", (), elf)

    # ---- breadth-first walk ----------------------------------------------------------------

    def walk(self) -> None:
        queue = [self.main]
        i = 0
        while i < len(queue):
            obj = queue[i]
            i += 1
            for name in obj.elf.needed:
                new = self._need(obj, name)
                if new is not None:
                    queue.append(new)

    def _register(self, obj: _Obj, names: tuple[str, ...]) -> None:
        for name in names:
            self.names.setdefault(name, obj)
        if obj.elf.soname and not self.musl:  # musl matches names only, never a SONAME
            self.sonames.setdefault(obj.elf.soname, obj)

    def _match(self, name: str) -> _Obj | None:
        obj = self.names.get(name) or self.sonames.get(name)
        if obj is not None:
            self.names.setdefault(name, obj)
        return obj

    def _need(self, requester: _Obj, name: str) -> _Obj | None:
        if self.musl and "/" not in name and musl_is_libc(name):
            return None  # musl's loader is libc, libpthread, libm... all at once
        if self._match(name) is not None:
            return None
        searched: list[str] = []
        try:
            hit = self._search(requester, name, searched)
        except LoadFailure as exc:
            self.missing.append(Missing(name, requester.path, tuple(searched), str(exc)))
            return None
        if hit is None:
            self.missing.append(Missing(name, requester.path, tuple(searched)))
            return None
        path, found, elf, via, variants = hit
        same = self.by_inode.get((found.dev, found.ino))
        if same is not None:
            self.names.setdefault(name, same)
            self.reused_main |= same is self.main
            return None
        obj = _Obj(path, elf, requester)
        self._register(obj, (name, path))
        self.by_inode[(found.dev, found.ino)] = obj
        self.libraries.append(Library(name, path, found.real, found.links, requester.path, via,
                                      variants, elf))
        return obj

    # ---- one candidate -----------------------------------------------------------------------

    def _verify(self, found: Resolved) -> ElfInfo:
        """Accept or refuse a file the loader opened (glibc open_verify and the map checks).
        Raises _WrongClass for a file glibc skips silently, LoadFailure for one it refuses."""
        if not found.is_file:
            raise LoadFailure(f"{found.asked}: cannot read file data: not a regular file")
        try:
            elf = self.r.elf_at(found)
        except NotElf:
            raise LoadFailure(f"{found.asked}: invalid ELF header") from None
        except (CorruptElf, UnsupportedElf, FileProblem) as exc:
            raise LoadFailure(exc.message) from None
        main = self.main.elf
        if elf.elf_class != main.elf_class or elf.machine != main.machine:
            raise _WrongClass()
        if elf.little_endian != main.little_endian:
            raise LoadFailure(f"{found.asked}: ELF file data encoding does not match")
        if elf.osabi not in (ELFOSABI_SYSV, ELFOSABI_GNU):
            raise LoadFailure(f"{found.asked}: ELF file OS ABI invalid")
        return elf

    def _try(self, path: str, searched: list[str],
             last: bool = True) -> tuple[Resolved, ElfInfo] | None:
        """Open one candidate. `last` is false for a candidate whose open error glibc forgets:
        one in a hwcaps subdirectory (only the errno of a directory's last candidate, the plain
        one, counts) and the cache's (ld.so goes on to the default directories)."""
        try:
            found = self.root.lookup(path)
        except SymlinkLoop:
            if not self.musl and (not last or not self._dir_exists(path.rpartition("/")[0])):
                # glibc's open_path stat()s a directory it could not open a file in; one that
                # fails (ELOOP too) is marked nonexisting and the search goes on.
                searched.append(f"{path} (skipped: too many levels of symbolic links)")
                return None
            # open() fails with ELOOP, which is not ENOENT: glibc's open_path gives up there
            # when the directory exists; musl's path_open gives up on any such error.
            raise LoadFailure(f"{path}: too many levels of symbolic links") from None
        if found is None:
            searched.append(path)
            return None
        try:
            elf = self._verify(found)
        except _WrongClass:
            if self.musl:  # musl maps the first file it opens and fails on a foreign one
                raise LoadFailure(f"{path}: wrong ELF class or machine") from None
            searched.append(f"{path} (skipped: wrong ELF class or machine)")
            return None
        if self.musl:
            return found, elf
        if elf.etype != ET_DYN:
            raise LoadFailure(f"{path}: cannot dynamically load executable")
        if elf.flags_1 & DF_1_PIE:
            raise LoadFailure(f"{path}: cannot dynamically load position-independent executable")
        return found, elf

    def _dir_exists(self, directory: str) -> bool:
        """Whether glibc's stat() finds a directory there (a symlink loop: no)."""
        try:
            return self.root.is_dir(directory or "/")
        except SymlinkLoop:
            return False

    def _exists(self, path: str) -> bool:
        try:
            return self.root.lookup(path) is not None
        except SymlinkLoop:
            return False

    def _in_dirs(self, dirs: tuple[str, ...], name: str, via: str,
                 searched: list[str]) -> Hit | None:
        for d in dirs:
            base = d if d.endswith("/") else d + "/"
            hw_dir = f"{base}glibc-hwcaps/"
            has_hwcaps = not self.musl and self._dir_exists(hw_dir)
            if has_hwcaps:
                for sub in self.opts.hwcaps:
                    hit = self._try(f"{hw_dir}{sub}/{name}", searched, last=False)
                    if hit is not None:
                        path = f"{hw_dir}{sub}/{name}"
                        return path, hit[0], hit[1], VIA_HWCAPS, ()
            for sub in self._legacy_in(base):
                hit = self._try(f"{base}{sub}/{name}", searched, last=False)
                if hit is not None:
                    return f"{base}{sub}/{name}", hit[0], hit[1], via, ()
            path = base + name
            hit = self._try(path, searched)
            if hit is not None:
                variants: tuple[str, ...] = ()
                if has_hwcaps:
                    variants = tuple(f"{hw_dir}{sub}/{name}" for sub in self.arch.hwcaps
                                     if self._exists(f"{hw_dir}{sub}/{name}"))
                return path, hit[0], hit[1], via, variants
        return None

    def _legacy_in(self, base: str) -> tuple[str, ...]:
        """The legacy hwcaps subdirectories that exist in one search directory (remembered:
        most directories have none, and each name searched would try them all)."""
        if not self.legacy:
            return ()
        key = (base, self.legacy)
        found = self.r._legacy.get(key)
        if found is None:
            tops = {sub.split("/", 1)[0] for sub in self.legacy}
            present = {top for top in tops if self._dir_exists(base + top)}
            found = tuple(sub for sub in self.legacy
                          if sub.split("/", 1)[0] in present and self._dir_exists(base + sub))
            self.r._legacy[key] = found
        return found

    def _expand(self, obj: _Obj, tag: str, value: str) -> tuple[str, ...]:
        if tag not in obj.extra:
            obj.extra[tag] = split_glibc_path(value, obj.origin, self.defaults.lib_token,
                                              self.platform)
        return obj.extra[tag]

    def _search(self, requester: _Obj, name: str, searched: list[str]) -> Hit | None:
        if "/" in name:
            hit = self._try(name, searched)
            if hit is None:
                return None
            return name, hit[0], hit[1], VIA_PATH, ()
        if self.musl:
            return self._search_musl(requester, name, searched)
        return self._search_glibc(requester, name, searched)

    def _search_glibc(self, requester: _Obj, name: str, searched: list[str]) -> Hit | None:
        main = self.main
        if requester.elf.runpath is None:
            did_main = False
            chain: _Obj | None = requester
            while chain is not None:
                if chain.elf.rpath is not None:
                    dirs = self._expand(chain, "rpath", chain.elf.rpath)
                    hit = self._in_dirs(dirs, name, VIA_RPATH, searched)
                    if hit is not None:
                        return hit
                    did_main |= chain is main
                chain = chain.loader
            if not did_main and main.elf.rpath is not None and requester is not main:
                dirs = self._expand(main, "rpath", main.elf.rpath)
                hit = self._in_dirs(dirs, name, VIA_RPATH, searched)
                if hit is not None:
                    return hit
        if self.opts.library_path:
            dirs = self._expand(main, "library-path", ":".join(self.opts.library_path))
            hit = self._in_dirs(dirs, name, VIA_LIBRARY_PATH, searched)
            if hit is not None:
                return hit
        if requester.elf.runpath is not None:
            dirs = self._expand(requester, "runpath", requester.elf.runpath)
            hit = self._in_dirs(dirs, name, VIA_RUNPATH, searched)
            if hit is not None:
                return hit
        return self._system_search(name, requester.elf.nodeflib, searched)

    def _system_search(self, name: str, nodeflib: bool, searched: list[str]) -> Hit | None:
        """The cache and default-directory steps, remembered per name by the Resolver."""
        key = (name, nodeflib, self.arch.name, self.main.elf.interpreter)
        memo = self.r._system.get(key)
        if memo is None:
            mine: list[str] = []
            try:
                memo = (self._system_search_uncached(name, nodeflib, mine), tuple(mine), None)
            except LoadFailure as exc:
                memo = (None, tuple(mine), exc.message)
            self.r._system[key] = memo
        hit, done, failure = memo
        searched.extend(done)
        if failure is not None:
            raise LoadFailure(failure)
        return hit

    def _system_search_uncached(self, name: str, nodeflib: bool,
                                searched: list[str]) -> Hit | None:
        cache = self.r.ld_cache()
        if cache is not None:
            entry = cache.lookup(name, self.arch.cache_flags, self.opts.hwcaps,
                                 self._legacy_entry if self.legacy else None)
            if entry is not None and not (nodeflib and self._in_system_dir(entry.path)):
                hit2 = self._try(entry.path, searched, last=False)
                if hit2 is not None:
                    via = VIA_HWCAPS if entry.hwcaps_subdir else VIA_CACHE
                    return entry.path, hit2[0], hit2[1], via, ()
            elif entry is None:
                searched.append(f"/etc/ld.so.cache ({name} not listed)")
            else:
                searched.append("/etc/ld.so.cache (skipped: DF_1_NODEFLIB)")
        else:
            hit = self._in_dirs(self.r._conf_dirs(), name, VIA_CONF, searched)
            if hit is not None:
                return hit
        if not nodeflib:
            return self._in_dirs(self.defaults.dirs, name, VIA_DEFAULT, searched)
        return None

    def _legacy_entry(self, entry: CacheEntry) -> bool:
        """Whether ld.so 2.36's search_cache takes a legacy hwcap entry on the target CPU: its
        hwcap bits among the CPU's, its platform bit (if any) the CPU's platform."""
        machine = self.arch.machine
        bits = LEGACY_HWCAP_BITS.get(machine)
        if bits is None:
            raise UnsupportedCache(
                f"/etc/ld.so.cache: {entry.soname} => {entry.path} is a legacy hwcaps entry "
                f"({entry.hwcap:#x}), which slimmer follows only on x86; rebuild the cache "
                "without hwcap subdirectories")
        names = self.opts.legacy_hwcaps
        allowed = 1 << 63  # tls
        for hw in self.arch.legacy_hwcaps if names is None else names:
            allowed |= 1 << bits[hw] if hw in bits else 0
        platform_mask = LEGACY_PLATFORM_MASK[machine]
        bit = LEGACY_PLATFORM_BITS[machine].get(self.platform)
        platform = 1 << bit if bit is not None else 0
        if entry.hwcap & ~(allowed | platform_mask):
            return False
        return entry.hwcap & platform_mask in (0, platform)

    def _in_system_dir(self, path: str) -> bool:
        return any(path.startswith(d.rstrip("/") + "/") for d in self.defaults.dirs)

    def _search_musl(self, requester: _Obj, name: str, searched: list[str]) -> Hit | None:
        if self.opts.library_path:
            hit = self._in_dirs(self.opts.library_path, name, VIA_LIBRARY_PATH, searched)
            if hit is not None:
                return hit
        chain: _Obj | None = requester
        while chain is not None:
            # musl: DT_RUNPATH replaces DT_RPATH, and both are inherited down the needed-by chain.
            value = chain.elf.runpath if chain.elf.runpath is not None else chain.elf.raw_rpath
            if value is not None:
                dirs = split_musl_path(value, chain.origin)
                if dirs is None:
                    self.warnings.append(f"{chain.path}: rpath {value!r} has a token musl does not "
                                         "know; musl ignores it")
                else:
                    via = VIA_RUNPATH if chain.elf.runpath is not None else VIA_RPATH
                    hit = self._in_dirs(dirs, name, via, searched)
                    if hit is not None:
                        return hit
            chain = chain.loader
        via = VIA_PATH_FILE if self.musl_via == "path-file" else VIA_DEFAULT
        return self._in_dirs(self.musl_dirs, name, via, searched)


class _WrongClass(Exception):
    """A candidate glibc skips silently (other ELF class or machine)."""
