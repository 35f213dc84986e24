"""What a program needs beyond its libraries, found from static evidence, each path with the
evidence that found it (the reason `why` shows). Nothing is run. Three kinds live here:

evidence-packages  The packages that own the closure's files (the root's dpkg database) and the
    packages they depend on, transitively, that ship no ELF object: runtime data (Debian's
    node-undici for libnode, imagemagick-6-common for libMagickCore, libmagic-mgc, fontconfig's
    configuration and fonts). Their files are kept, minus documentation (FILTERED). The walk
    goes through data packages only: a package with ELF files is a library or a program, whose
    files come in only when the loader or other evidence asks for them.
compiled-paths  Absolute paths in the read-only data of the closure's ELF files (not glibc's):
    one that exists in the root and is specific (not a system directory: GENERIC, the library
    and PATH directories; nor the directory of a program packed, whose other programs the
    caller names) and is owned by the package of the file naming it or by one of that
    package's dependencies is kept; a directory whole, whatever else put files in it (php's
    extensions from php8.2-mbstring, phpenmod's conf.d links, php.ini from ucf: what sits in the
    directory a program reads is there for it), minus documentation, up to CAP bytes (past it a
    warning names the path and --keep). A path that does not exist but begins the name of files
    beside it is taken as a prefix the program completes (libmagic's /usr/share/misc/magic is
    opened as magic.mgc). Paths under /usr/share/zoneinfo turn the tzdata rule on; the state,
    cache and log directories under /var are the application's (--keep them). The quoted
    paths of the scripts' text (loader/script_literals.py) go through the same rules, owned by
    the script's package ("named in script S"); an interpreter's module directory is not kept
    whole from them.
dlopen  An object that imports dlopen: its library-name literals that resolve in the root as
    dlopen would resolve them are kept; when it names no library at all (a computed name) and
    no compiled directory of it was kept, one warning names the object (quiet for QUIET_DLOPEN:
    covered by a rule or recipe, loading what the application names, or opt-in plugins; and
    quiet for modules outside the programs' own closures: a module a recipe, --keep or an
    application directory brought is optional until something imports it).

The package walk and the scans take the closures as found at this step (the programs', the
recipes' and --keep's); what they bring gets its libraries, and the runtime rules that run next
look at all of it, but it is not searched for evidence again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from slimmer.errors import SlimmerError
from slimmer.loader.dpkg import PackageDb
from slimmer.loader.resolve import Closure, Resolver
from slimmer.loader.root import Root
from slimmer.loader.script_literals import script_paths, searched
from slimmer.loader.strings import MAX_FILE, literals_in
from slimmer.notices import Notice
from slimmer.paths import normalize

CAP = 64 << 20  # bytes one piece of path evidence may bring
# Documentation, translations, build-time and service-management files of a package or a kept
# directory.
FILTERED_DIRS = ("/usr/share/doc", "/usr/share/doc-base", "/usr/share/man", "/usr/share/info",
                 "/usr/share/locale", "/usr/share/lintian", "/usr/include",
                 "/usr/share/bash-completion", "/etc/bash_completion.d", "/usr/share/menu",
                 "/usr/share/applications", "/usr/share/bug", "/usr/share/gtk-doc",
                 "/usr/share/pixmaps", "/usr/share/icons",
                 # service management a container does not run
                 "/lib/systemd", "/usr/lib/systemd", "/etc/systemd", "/etc/init.d",
                 "/etc/logrotate.d", "/etc/cron.d", "/etc/cron.daily", "/usr/share/apport")
FILTERED_PARTS = ("/pkgconfig/", "/LC_MESSAGES/", "/man/man", "/__pycache__/")
# (not .la: libltdl opens ImageMagick's coders through them)
FILTERED_SUFFIXES = (".a", ".h", ".desktop", ".pod")
# Packages that are never runtime data: maintainer-script machinery, and data the runtime rules
# own (glibc's locales and gconv, the CA store, the time zones: the rules decide).
NOT_DATA = frozenset({
    "debconf", "ucf", "dpkg", "adduser", "init-system-helpers", "lsb-base", "sysvinit-utils",
    "install-info", "sensible-utils", "debianutils", "base-files", "base-passwd", "libc6",
    "libc-bin", "libc-l10n", "locales", "locales-all", "ca-certificates", "tzdata",
    "tzdata-legacy", "media-types", "mime-support", "libpam-runtime", "logrotate", "cron",
    "systemd", "systemd-sysv", "ssl-cert", "python3", "perl", "perl-base",
})
RULE_PACKAGES = {"tzdata": "tzdata"}  # package -> the runtime rule a dependency on it turns on
# Directories that are too general to be one program's: every system directory, and the trees
# the runtime rules own or nobody should copy whole.
GENERIC = frozenset({
    "/", "/usr", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libexec", "/usr/share", "/etc",
    "/var", "/tmp", "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/lib", "/lib64", "/lib32",
    "/usr/local", "/usr/local/lib", "/usr/local/share", "/usr/local/bin", "/usr/local/sbin",
    "/usr/local/etc", "/usr/local/include", "/opt", "/srv", "/home", "/root", "/mnt", "/media",
    "/boot", "/usr/share/misc", "/usr/share/common-licenses", "/usr/src", "/usr/games",
    "/etc/alternatives", "/etc/default", "/etc/init.d", "/etc/profile.d", "/etc/security",
    "/etc/xdg",  # the XDG configuration root every desktop package writes into
})
NEVER = ("/dev", "/proc", "/sys", "/run", "/tmp", "/var", "/usr/share/doc", "/usr/share/man",
         "/usr/share/info", "/usr/include", "/usr/share/locale", "/usr/lib/locale",
         "/etc/ssl", "/usr/lib/ssl", "/usr/lib/debug", "/etc/ld.so.conf.d")
ZONEINFO = "/usr/share/zoneinfo"
# A directory under these compiled into a program is where it puts its sockets and pid files
# (postgres's /var/run/postgresql): kept empty, with the image's owner and mode, when the image
# has it (a fresh root makes them at boot; a container does not boot).
RUN_DIRS = ("/run/", "/var/run/")
RULED = ("gconv", "ossl-modules")  # directories the gconv and openssl rules decide on
GLIBC_PACKAGES = frozenset({"libc6", "libc-bin", "libc6-i386", "libc6-x32", "libc-dev-bin"})
# Objects whose dlopen stays quiet: covered elsewhere (glibc's: the nss, gconv and libgcc_s
# rules; libcrypto's: the openssl rule; the interpreters': their recipes and compiled paths;
# libkrb5support: the plugin directories compiled into libkrb5), wrappers whose callers name
# the directories (libltdl for ImageMagick, GModule), APIs that load what the application names
# at run time (ctypes, sqlite3's load_extension, libxml2's xmlModuleOpen, node's native addons
# and libuv's uv_dlopen), and opt-in features
# (ICU plugins, GOMP offloading, p11-kit's configured modules).
QUIET_DLOPEN = ("libc.so", "ld-linux", "libdl.so", "libcrypto.so", "libpython", "python",
                "libperl.so", "perl", "libltdl.so", "libgmodule-2.0.so", "libstdc++.so",
                "libgcc_s.so", "libkrb5support.so", "_ctypes.", "libsqlite3.so", "libxml2.so",
                "libicuuc.so", "libgomp.so", "libp11-kit.so", "libnode.so", "node", "libuv.so")
# GPU driver loaders: neither their dlopen literals nor their compiled paths are followed (in a
# container the drivers come from the host's runtime: a GPU image adds its own).
GPU_LOADERS = ("libva.so", "libva-drm.so", "libva-x11.so", "libvulkan.so", "libOpenCL.so",
               "libGLX.so", "libGLdispatch.so", "libEGL.so", "libGL.so", "libgbm.so",
               "libvdpau.so", "libmfx.so", "libcuda.so", "libnvidia")
GLIBC = ("libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
         "libresolv.so.2", "libutil.so.1", "libanl.so.1", "libmvec.so.1", "libnsl.so.1",
         "libBrokenLocale.so.1", "libthread_db.so.1", "libcrypt.so.1", "libmemusage.so",
         "libpcprofile.so", "libc_malloc_debug.so.0")
EVIDENCE = ("evidence-packages", "compiled-paths", "dlopen", "script-packages")
SHELL_SYMBOLS = frozenset({"popen", "system"})
EXEC_SYMBOLS = frozenset({"execl", "execle", "execlp", "execv", "execve", "execvp", "execvpe",
                          "posix_spawn", "posix_spawnp"})


def filtered(path: str) -> bool:
    """Documentation, translations, headers and the like: never runtime data."""
    return (any(path == d or path.startswith(d + "/") for d in FILTERED_DIRS)
            or any(part in path for part in FILTERED_PARTS)
            or path.endswith(FILTERED_SUFFIXES))


@dataclass(frozen=True, slots=True)
class Scope:
    """What the evidence steps read: the root, its package database (empty when it has none),
    the closures so far, and the directories that are never one program's own."""

    root: Root
    db: PackageDb
    resolver: Resolver
    closures: tuple[Closure, ...]
    system_dirs: frozenset[str]  # library search and PATH directories
    own_dirs: frozenset[str]  # the directories of the programs packed: the caller names those
    features: frozenset[str]
    show: Callable[[str], str] = str
    # the programs' own closures (programs and their libraries): only these get a
    # dlopen-computed warning; a module that a recipe, --keep or an application directory
    # brought is optional until something imports it (add_elf_closures says the same)
    primary: frozenset[str] = frozenset()
    listings: dict[str, list[str]] = field(default_factory=dict)  # directory -> names, read once
    scripts: tuple[str, ...] = ()  # the scripts the image runs: their path literals are evidence


@dataclass(slots=True)
class Found:
    paths: list[tuple[str, str]] = field(default_factory=list)  # (in-root path, reason)
    # directories kept as directories only: the run-time directories compiled in (RUN_DIRS)
    directories: list[tuple[str, str]] = field(default_factory=list)
    libraries: list[tuple[Closure, str, str]] = field(default_factory=list)  # (from, name, why)
    rules: dict[str, str] = field(default_factory=dict)  # runtime rule -> why it is on
    notices: list[Notice] = field(default_factory=list)


def find(scope: Scope) -> Found:
    found = Found()
    objects = _objects(scope)
    if "evidence-packages" in scope.features and scope.db:
        _data_packages(scope, objects, found)
    if "compiled-paths" in scope.features or "dlopen" in scope.features:
        _scan(scope, objects, found)
    if "compiled-paths" in scope.features:
        _script_paths(scope, found)
    return found


# ---- the objects -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Object:
    real: str
    shown: str  # the image path reasons name
    soname: str
    closure: Closure


def _objects(scope: Scope) -> list[_Object]:
    """Every ELF file of the closures but glibc's own (by name, and by package: ldconfig),
    each once."""
    out: dict[str, _Object] = {}
    for c in scope.closures:
        name = c.elf.soname or os.path.basename(c.binary)
        out.setdefault(c.real, _Object(c.real, scope.show(c.binary), name, c))
        for lib in c.libraries:
            soname = lib.elf.soname or lib.soname
            if soname not in GLIBC:
                out.setdefault(lib.real, _Object(lib.real, scope.show(lib.path), soname, c))
    return [o for o in out.values() if not GLIBC_PACKAGES & set(_owners(scope, o.real))]


def _owners(scope: Scope, path: str) -> list[str]:
    return scope.db.owners_of(path) or scope.db.owners_of(scope.db.real(path))


# ---- runtime data packages -------------------------------------------------------------------


def _data_packages(scope: Scope, objects: list[_Object], found: Found) -> None:
    db = scope.db
    owners = {p for o in objects for p in _owners(scope, o.real)}
    # owners first, by name; each dependency reached once, through the first package naming it
    queue = sorted(owners)
    seen = set(owners)
    while queue:
        parent = queue.pop(0)
        for dep in db.depends(parent):
            if dep in seen:
                continue
            seen.add(dep)
            if dep in RULE_PACKAGES:
                found.rules.setdefault(RULE_PACKAGES[dep], f"{parent} depends on {dep}")
            if dep in NOT_DATA or db.ships_elf(dep):
                continue
            queue.append(dep)
            reason = f"data package {dep}, a dependency of {parent}"
            found.paths += [(path, reason) for path in db.files(dep)
                            if not filtered(path) and is_leaf(scope.root, path)]


def is_leaf(root: Root, path: str) -> bool:
    """A listed file, or a symlink to one (the directories come with what they hold)."""
    try:
        found = root.lookup(path)
    except SlimmerError:
        return False
    return found is not None and not found.is_dir


# ---- literals in the objects -----------------------------------------------------------------


def _scan(scope: Scope, objects: list[_Object], found: Found) -> None:
    dependencies: dict[str, frozenset[str]] = {}
    for obj in objects:
        entry = scope.root.lookup(obj.real)
        if entry is None or entry.size > MAX_FILE:
            continue
        with scope.root.reader_real(obj.real) as (read, size):
            lits = literals_in(read, size)
        kept_dir = False
        if "compiled-paths" in scope.features and not obj.soname.startswith(GPU_LOADERS):
            own = _eligible(scope, obj.real, dependencies)
            for path in dict.fromkeys(normalize(p) for p in lits.paths):
                kept_dir |= _compiled_path(scope, f"compiled into {obj.shown}", own, path, found)
        if lits.locales and "compiled-paths" in scope.features:  # setlocale(..., "C.UTF-8")
            found.rules.setdefault("locales", f"{lits.locales[0]} compiled into {obj.shown}")
        imports = scope.root.imports_real(obj.real, obj.shown)
        _shell(obj, imports, lits.paths, found)
        if "dlopen" in imports and "dlopen" in scope.features \
                and not obj.soname.startswith(QUIET_DLOPEN + GPU_LOADERS):
            _dlopen(scope, obj, lits.libraries, lits.paths, kept_dir, found)


def _eligible(scope: Scope, real: str, cache: dict[str, frozenset[str]]) -> frozenset[str]:
    """The packages whose paths the file `real` may bring: its owner, what the owner
    recommends (installed: fortune names /usr/share/games/fortunes, which fortunes-min ships),
    and all these depend on."""
    owners = _owners(scope, real)
    out: set[str] = set()
    for owner in owners:
        if owner not in cache:
            seen = {owner, *scope.db.depends(owner, recommends=True)}
            queue = list(seen)
            while queue:
                for dep in scope.db.depends(queue.pop()):
                    if dep not in seen:
                        seen.add(dep)
                        queue.append(dep)
            cache[owner] = frozenset(seen)
        out |= cache[owner]
    return frozenset(out)


def _compiled_path(scope: Scope, named: str, own: frozenset[str], path: str,
                   found: Found) -> bool:
    """Keep one path a file names (`named`: "compiled into OBJECT", "named in script S") if
    it is the program's; True for a kept directory."""
    root = scope.root
    reason = f"path {path} {named}"
    if path == ZONEINFO or path.startswith(ZONEINFO + "/"):
        found.rules.setdefault("tzdata", reason)
        return False
    if path.startswith(RUN_DIRS):
        try:
            entry = root.lookup(path)
        except SlimmerError:
            return False
        if entry is not None and entry.is_dir:
            found.directories.append((path, f"run-time directory {path} {named}"))
        return False
    if _too_general(scope, path):
        return False
    try:
        entry = root.lookup(path)
    except SlimmerError:  # a symlink loop: not evidence
        return False
    if entry is None:
        for name in _completed(root, path, scope.listings):
            if _is_own(scope, own, name):
                found.paths.append((name, f"{reason} (as a prefix of its name)"))
        return False
    if _too_general_real(scope, entry.real):
        return False
    if not _is_own(scope, own, path):
        return False
    if not entry.is_dir:
        if entry.is_file:
            found.paths.append((path, reason))
            _beside(scope, own, path, entry.real, named, found)
        return False
    return _directory(scope, path, entry.real, reason, named, found, warn=True)


def _too_general(scope: Scope, path: str) -> bool:
    """A path never kept as evidence: a system or search directory, one too general to be a
    program's, a pattern, or what the runtime rules decide on (zoneinfo, gconv...)."""
    return (path in GENERIC or path in scope.system_dirs or "%" in path
            or any(path == d or path.startswith(d + "/") for d in NEVER)
            or path == ZONEINFO or path.startswith(ZONEINFO + "/")
            or any(f"/{name}" in path for name in RULED))


def _too_general_real(scope: Scope, real: str) -> bool:
    """The same for where a path leads: never a system directory, nor the programs' own."""
    return real in GENERIC or real in scope.system_dirs or real in scope.own_dirs


def _directory(scope: Scope, path: str, real: str, reason: str, named: str, found: Found,
               warn: bool) -> bool:
    """Keep a directory whole, up to CAP (beyond, a warning when `warn`); True if kept."""
    size = _tree_size(scope.root, real)
    if size > CAP:
        if warn:
            found.notices.append(Notice(
                "evidence-too-large", path,
                f"{named} but holds {size >> 20} MB (more than {CAP >> 20} MB): "
                "left out", f"--keep {path} (slim) or --add it (pack) to keep it"))
        return False
    found.paths.append((path, reason))
    # a link inside that leads out of it brings what it leads to (php's conf.d/20-mbstring.ini
    # -> /etc/php/8.2/mods-available/mbstring.ini)
    found.paths += [(link, f"{reason} (a link in it)")
                    for link in _links_out(scope.root, real)]
    return True


def _beside(scope: Scope, own: frozenset[str], path: str, real: str, named: str,
            found: Found) -> None:
    """The directory of a data file a program names, when only the program's packages list
    it: what is beside it is the program's too (units names definitions.units, which includes
    currency.units beside it). Not without a package database (nothing says whose it is)."""
    directory = path.rpartition("/")[0]
    real_dir = real.rpartition("/")[0]
    if (not scope.db or not directory or _too_general(scope, directory)
            or _too_general_real(scope, real_dir)):
        return
    owners = _owners(scope, directory)
    if owners and all(p in own for p in owners):
        _directory(scope, directory, real_dir, f"beside {path}, {named}", named, found,
                   warn=False)


def _script_paths(scope: Scope, found: Found) -> None:
    """The path literals of the scripts' text (loader/script_literals.py), kept as compiled
    paths are; not an interpreter's module directory (a file in one still comes)."""
    dependencies: dict[str, frozenset[str]] = {}
    for script in scope.scripts:
        try:
            entry = scope.root.lookup(script)
        except SlimmerError:
            continue
        if entry is None or not entry.is_file:
            continue
        own = _eligible(scope, entry.real, dependencies)
        named = f"named in script {scope.show(script)}"
        for path in script_paths(scope.root, script):
            try:
                target = scope.root.lookup(path)
            except SlimmerError:
                continue
            if target is None or not (target.is_dir and (searched(path) or searched(target.real))):
                _compiled_path(scope, named, own, path, found)


def _links_out(root: Root, real: str) -> list[str]:
    out = []
    for top, _dirs, others in root.walk(real):
        for name in others:
            path = f"{top.rstrip('/')}/{name}"
            st = root.stat_real(path)
            if st is None or st.mode & 0o170000 != 0o120000 or filtered(path):
                continue
            try:
                target = root.lookup(path)
            except SlimmerError:
                continue
            if target is not None and not target.real.startswith(real.rstrip("/") + "/"):
                out.append(path)
    return out


_SHARED_OBJECT = re.compile(r"[^/]*\.so(?:\.[0-9]+)*")


def is_shared_object(path: str) -> bool:
    """Whether a path literal names a shared object (`/usr/lib/x/libfoo.so.1`, `plugin.so`) that
    a dlopen could load; not a file of the kernel's trees (node's
    /sys/fs/cgroup/memory/memory.soft_limit_in_bytes)."""
    return (_SHARED_OBJECT.fullmatch(path.rpartition("/")[2]) is not None
            and not any(path.startswith(d + "/") for d in ("/proc", "/sys", "/dev")))


def _is_own(scope: Scope, own: frozenset[str], path: str) -> bool:
    """Whether the program's packages list `path`; anything existing counts in a root without
    a package database."""
    if not scope.db:
        return True
    return any(p in own for p in _owners(scope, path))


def _completed(root: Root, path: str, listings: dict[str, list[str]]) -> list[str]:
    """The files beside a missing `path` whose names begin with its name and a dot."""
    directory, _, stem = path.rpartition("/")
    if not stem or not directory or any(directory == d or directory.startswith(d + "/")
                                        for d in NEVER):
        return []
    if directory not in listings:
        listings[directory] = root.listdir(directory) if root.is_dir(directory) else []
    out = []
    for name in listings[directory]:
        if name.startswith(stem + "."):
            entry = root.lookup(f"{directory}/{name}")
            if entry is not None and entry.is_file:
                out.append(f"{directory}/{name}")
    return out


def _tree_size(root: Root, real: str) -> int:
    total = 0
    for top, _dirs, others in root.walk(real):
        for name in others:
            st = root.stat_real(f"{top.rstrip('/')}/{name}")
            if st is not None and st.mode & 0o170000 == 0o100000:
                total += st.size
        if total > CAP:
            break
    return total


def _shell(obj: _Object, imports: frozenset[str], paths: tuple[str, ...], found: Found) -> None:
    """popen and system run /bin/sh -c; the exec and spawn calls do when the object names
    /bin/sh too."""
    used = sorted(imports & SHELL_SYMBOLS)
    if not used and "/bin/sh" in paths:
        used = sorted(imports & EXEC_SYMBOLS)
    if used:
        found.rules.setdefault("shell", f"{used[0]} in {obj.shown}")


def _dlopen(scope: Scope, obj: _Object, names: tuple[str, ...], paths: tuple[str, ...],
            kept_dir: bool, found: Found) -> None:
    hits = 0
    for name in names:
        path = scope.resolver.dlopen_path(obj.closure, name)
        if path is not None:
            found.libraries.append((obj.closure, name, f"{name}: a dlopen literal in "
                                                       f"{obj.shown}"))
            hits += 1
    for path in paths:
        if is_shared_object(path):
            entry = scope.root.lookup(path)
            if entry is not None and entry.is_file:
                found.paths.append((path, f"{path}: a dlopen literal in {obj.shown}"))
                hits += 1
    # A name that is not in the root is not in it for the program outside the image either:
    # the image behaves as the root does. Only an object that names nothing gets a warning.
    named = names or any(is_shared_object(p) for p in paths)
    if not hits and not named and not kept_dir and obj.real in scope.primary:
        found.notices.append(Notice(
            "dlopen-computed", obj.shown,
            "imports dlopen but names no library or plugin directory found in the root: what "
            "it loads at run time may be missing",
            "--keep DIR or --add the files it loads, or --probe to see them used"))
