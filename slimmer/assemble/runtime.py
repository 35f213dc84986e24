"""Files a program needs beyond what the loader opens at start-up: libraries glibc dlopens, data
files libraries read. Each rule looks at the closures (their libraries and the symbols they
import) and names what to add from the root, and why. See ../shared/reference/runtime-needs.md.

Rules on by default (each can be dropped with --without NAME):
  libgcc_s  libgcc_s.so.1 when an object imports pthread_cancel/pthread_exit or the closure is C++
  gconv     the root's gconv modules when an object imports iconv_open (or only named charsets)
  certs     the CA bundle when the closure has a TLS library
  openssl   openssl.cnf and the providers (ossl-modules) when libcrypto is in the closure
  nss       libnss_files, libnss_dns and libresolv for glibc before 2.34; for a program that looks
            up users, groups or hosts, the modules the root's nsswitch.conf names for them, and
            an nsswitch.conf that matches what the image holds
  ld-cache  the image's own /etc/ld.so.cache (packer.py)
  dpkg-status  /var/lib/dpkg/status.d entries for the packages files came from (provenance.py)
  terminfo  a few terminal descriptions (xterm, linux, vt100, screen and their 256-colour
            variants) when libtinfo or libncurses is in the closure
  evidence-packages, compiled-paths, dlopen  evidence.py's kinds of evidence
  script-packages  the modules of a packaged script's package and its dependencies
            (script_packages.py)
On request (--with NAME), or when evidence asks for them (evidence.py; its reason is shown):
tzdata (zoneinfo, /etc/localtime = UTC: a package depends on tzdata, a path under zoneinfo is
compiled in), locales (C.UTF-8: the image's environment sets LANG, LC_ALL or LC_CTYPE to it),
shell (/bin/sh: an object imports popen or system); certs or gconv forced on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from slimmer.assemble.baseline import NSSWITCH
from slimmer.errors import SlimmerError
from slimmer.loader.resolve import Closure
from slimmer.loader.root import Root

DEFAULT_ON = ("libgcc_s", "gconv", "certs", "openssl", "nss", "ld-cache", "dpkg-status", "terminfo",
              "evidence-packages", "compiled-paths", "dlopen", "script-packages")
ON_REQUEST = ("tzdata", "locales", "shell")
FEATURES = DEFAULT_ON + ON_REQUEST

CANCEL_SYMBOLS = frozenset({"pthread_cancel", "pthread_exit"})
NSS_SYMBOLS = frozenset({
    "getpwnam", "getpwnam_r", "getpwuid", "getpwuid_r", "getpwent", "getgrnam", "getgrnam_r",
    "getgrgid", "getgrgid_r", "getgrent", "getgrouplist", "initgroups", "getaddrinfo",
    "gethostbyname", "gethostbyname_r", "gethostbyname2", "gethostbyname2_r", "gethostbyaddr",
    "gethostbyaddr_r", "getnameinfo", "getspnam",
})
NSS_DATABASES = ("passwd", "group", "hosts")
NSS_BUILTIN = frozenset({"files", "dns"})  # inside libc since glibc 2.34
TLS_LIBRARIES = ("libssl.so", "libgnutls.so", "libnss3.so", "libcurl.so", "libcurl-gnutls.so")
# Where each TLS stack looks for CA certificates on Debian (and the paths Go probes elsewhere).
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
              "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem")
CA_LINKS = ("/usr/lib/ssl/cert.pem", "/usr/lib/ssl/certs")
CURSES_LIBRARIES = ("libtinfo.so", "libncurses.so", "libncursesw.so", "libtinfow.so")
TERMINFO_DIRS = ("/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo")
TERMINALS = ("xterm", "xterm-256color", "linux", "vt100", "screen", "screen-256color")
C_UTF8 = ("c.utf-8", "c.utf8")
LOCALE_VARIABLES = ("LC_ALL", "LC_CTYPE", "LANG")


@dataclass(slots=True)
class Needs:
    """What the rules ask for: libraries to load as dlopen would, paths to copy from the root,
    symlinks to make, and the image's nsswitch.conf."""

    libraries: list[tuple[str, str]] = field(default_factory=list)  # (soname, reason)
    paths: list[tuple[str, str]] = field(default_factory=list)  # (in-root path, reason)
    links: list[tuple[str, str, str]] = field(default_factory=list)  # (path, target, reason)
    nsswitch: str = NSSWITCH


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules look at."""

    root: Root
    closures: list[Closure]
    features: frozenset[str]
    forced: frozenset[str]  # named with --with
    imports: dict[str, frozenset[str]]  # shown path -> imported symbols
    sonames: frozenset[str]
    libc: str | None  # real path of libc.so.6
    gconv_charsets: tuple[str, ...]
    programs: frozenset[str]  # the programs, as `show` names them
    because: dict[str, str]  # rule -> the evidence that turned it on (evidence.py)

    def reason(self, rule: str) -> str:
        return f"--with {rule}" if rule in self.forced else self.because.get(rule, rule)

    def users_of(self, symbols: frozenset[str]) -> list[str]:
        """The objects importing any of `symbols`: programs first, then libraries, by path."""
        return sorted((p for p, names in self.imports.items() if names & symbols),
                      key=lambda p: (p not in self.programs, p))


def check_features(names: Iterable[str], option: str) -> frozenset[str]:
    chosen = frozenset(names)
    unknown = sorted(chosen - set(FEATURES))
    if unknown:
        raise SlimmerError(f"{option} {unknown[0]}: unknown feature (known: "
                           f"{', '.join(FEATURES)})")
    return chosen


def enabled(with_: frozenset[str], without: frozenset[str]) -> frozenset[str]:
    both = with_ & without
    if both:
        raise SlimmerError(f"--with and --without both name {sorted(both)[0]}")
    return (frozenset(DEFAULT_ON) | with_) - without


def find_needs(root: Root, closures: list[Closure], features: frozenset[str],
               forced: frozenset[str] = frozenset(), show: Callable[[str], str] = str,
               gconv_charsets: tuple[str, ...] = (),
               because: dict[str, str] | None = None) -> Needs:
    """Apply every enabled rule to the programs' closures; `forced` (from --with) adds certs or
    gconv even where no library asks for them; `because` names the evidence that turned an
    on-request rule on. `show` turns a path into the one reasons name (its place in the
    image)."""
    objects = [(c.real, c.binary) for c in closures] + [
        (lib.real, lib.path) for c in closures for lib in c.libraries]
    wants_imports = features & {"libgcc_s", "gconv", "nss"}
    facts = Facts(root, closures, features, forced,
                  _imports(root, objects, show) if wants_imports else {},
                  frozenset(lib.elf.soname or lib.soname for c in closures for lib in c.libraries),
                  _libc(closures), gconv_charsets, frozenset(show(c.binary) for c in closures),
                  dict(because or {}))
    needs = Needs()
    for name, rule in RULES:
        if name in features:
            rule(facts, needs)
    return needs


# ---- the rules -----------------------------------------------------------------------------


def _libgcc_s(facts: Facts, needs: Needs) -> None:
    if "libgcc_s.so.1" in facts.sonames:
        return
    users = facts.users_of(CANCEL_SYMBOLS)
    if users:
        needs.libraries.append(("libgcc_s.so.1", "glibc dlopens it for pthread_cancel/"
                                                 f"pthread_exit, used by {users[0]}"))
    elif any(s.startswith("libstdc++.so") for s in facts.sonames):
        needs.libraries.append(("libgcc_s.so.1", "C++ exceptions unwind through it"))


def _gconv(facts: Facts, needs: Needs) -> None:
    users = facts.users_of(frozenset({"iconv_open"}))
    if (not users and "gconv" not in facts.forced) or facts.libc is None:
        return
    gconv = f"{os.path.dirname(facts.libc)}/gconv"
    if not facts.root.is_dir(gconv):
        return
    reason = f"iconv modules: {users[0]} calls iconv_open" if users else "--with gconv"
    if not facts.gconv_charsets:
        needs.paths.append((gconv, reason))
        return
    files = charset_modules(facts.root, gconv, facts.gconv_charsets)
    needs.paths += [(f"{gconv}/{name}", f"{reason} (charsets "
                     f"{', '.join(facts.gconv_charsets)})") for name in files]


def _certs(facts: Facts, needs: Needs) -> None:
    tls = sorted(s for s in facts.sonames if s.startswith(TLS_LIBRARIES))
    if not tls and "certs" not in facts.forced:
        return
    reason = f"CA certificates for {tls[0]}" if tls else "--with certs"
    needs.paths += [(p, reason) for p in CA_BUNDLES if facts.root.lookup(p)]
    for p in CA_LINKS:  # the links only: the directory behind them holds just the bundle
        found = facts.root.lookup(p)
        if found is not None:
            needs.links += [(link.path, link.target, reason) for link in found.links]


def _openssl(facts: Facts, needs: Needs) -> None:
    crypto = sorted(s for s in facts.sonames if s.startswith("libcrypto.so"))
    if not crypto:
        return
    reason = f"OpenSSL configuration and providers for {crypto[0]}"
    needs.paths += [(p, reason) for p in ("/usr/lib/ssl/openssl.cnf", "/etc/ssl/openssl.cnf")
                    if facts.root.lookup(p)]
    if facts.libc is not None and facts.root.is_dir(f"{os.path.dirname(facts.libc)}/ossl-modules"):
        needs.paths.append((f"{os.path.dirname(facts.libc)}/ossl-modules", reason))


def _nss(facts: Facts, needs: Needs) -> None:
    version = _glibc_version(facts.root, facts.libc)
    old = version is not None and version < (2, 34)
    if old:
        assert version is not None
        for soname in ("libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"):
            needs.libraries.append((soname, f"glibc {version[0]}.{version[1]} loads it for "
                                            "user, group and host lookups"))
    users = facts.users_of(NSS_SYMBOLS)
    config = facts.root.read_bytes("/etc/nsswitch.conf")
    if not users or config is None:
        return
    services = parse_nsswitch(config.decode("utf-8", "replace"))
    chosen: dict[str, list[str]] = {}
    modules: dict[str, str] = {}  # soname -> reason
    for database in NSS_DATABASES:
        kept = []
        for service in services.get(database, []):
            soname = f"libnss_{service}.so.2"
            if service in NSS_BUILTIN and not old:
                kept.append(service)
            elif _in_root(facts.root, facts.libc, soname):
                modules.setdefault(soname, f"{database}: {service} in the root's nsswitch.conf, "
                                           f"for {users[0]}")
                kept.append(service)
        if kept:
            chosen[database] = kept
    have = {soname for soname, _ in needs.libraries}
    needs.libraries += [(s, why) for s, why in modules.items() if s not in have]
    needs.nsswitch = matching_nsswitch(chosen)


def _tzdata(facts: Facts, needs: Needs) -> None:
    if facts.root.is_dir("/usr/share/zoneinfo"):
        reason = facts.reason("tzdata")
        needs.paths.append(("/usr/share/zoneinfo", reason))
        needs.links.append(("/etc/localtime", "/usr/share/zoneinfo/UTC", f"{reason}: UTC"))


def _locales(facts: Facts, needs: Needs) -> None:
    for path in ("/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8"):
        if facts.root.lookup(path):
            needs.paths.append((path, f"{facts.reason('locales')}: C.UTF-8"))


def _shell(facts: Facts, needs: Needs) -> None:
    needs.paths.append(("/bin/sh", facts.reason("shell")))


def _terminfo(facts: Facts, needs: Needs) -> None:
    curses = sorted(s for s in facts.sonames if s.startswith(CURSES_LIBRARIES))
    if not curses:
        return
    reason = f"terminal descriptions for {curses[0]}"
    for directory in TERMINFO_DIRS:
        for name in TERMINALS:
            path = f"{directory}/{name[0]}/{name}"
            if facts.root.lookup(path):
                needs.paths.append((path, reason))


def locale_evidence(env: dict[str, str]) -> str | None:
    """Why the image needs the C.UTF-8 locale: the variable of its environment that names it."""
    for name in LOCALE_VARIABLES:
        if env.get(name, "").lower() in C_UTF8:
            return f"{name}={env[name]} in the image's environment"
    return None


RULES: tuple[tuple[str, Callable[[Facts, Needs], None]], ...] = (
    ("libgcc_s", _libgcc_s), ("gconv", _gconv), ("certs", _certs), ("openssl", _openssl),
    ("nss", _nss), ("tzdata", _tzdata), ("locales", _locales), ("shell", _shell),
    ("terminfo", _terminfo),
)


# ---- helpers -------------------------------------------------------------------------------


def parse_nsswitch(text: str) -> dict[str, list[str]]:
    """database -> services, as nsswitch.conf lists them ([...] actions left out)."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        database, _, rest = line.partition(":")
        rest = re.sub(r"\[[^]]*\]", " ", rest)
        out[database.strip()] = rest.split()
    return out


def matching_nsswitch(chosen: dict[str, list[str]]) -> str:
    """The baseline nsswitch.conf with the lines for passwd, group and hosts replaced."""
    lines = []
    for line in NSSWITCH.splitlines():
        database = line.split(":", 1)[0]
        if database in chosen:
            line = f"{database}: {' '.join(chosen[database])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def charset_modules(root: Root, gconv: str, charsets: tuple[str, ...]) -> list[str]:
    """The gconv configuration files, and the module files that convert the named charsets
    (through their aliases), read from gconv-modules and gconv-modules.d."""
    texts = [root.read_bytes(f"{gconv}/gconv-modules")]
    conf_d = f"{gconv}/gconv-modules.d"
    texts += [root.read_bytes(f"{conf_d}/{n}") for n in root.listdir(conf_d) if n.endswith(".conf")]
    aliases: dict[str, str] = {}
    modules: dict[str, set[str]] = {}
    for text in texts:
        for raw in (text or b"").decode("utf-8", "replace").splitlines():
            words = raw.split("#", 1)[0].split()
            if len(words) >= 3 and words[0] == "alias":
                aliases[words[1].upper().rstrip("/")] = words[2].upper().rstrip("/")
            elif len(words) >= 4 and words[0] == "module":
                for name in (words[1], words[2]):
                    modules.setdefault(name.upper().rstrip("/"), set()).add(words[3])
    wanted: set[str] = set()
    for charset in charsets:
        name = charset.upper().rstrip("/")
        name = aliases.get(name, name)
        if name not in modules:
            raise SlimmerError(f"--gconv-charsets: no gconv module converts {charset} in "
                               f"{gconv}")
        wanted |= {f if f.endswith(".so") else f"{f}.so" for f in modules[name]}
    configs = ["gconv-modules", "gconv-modules.cache", "gconv-modules.d"]
    return [c for c in configs if root.lookup(f"{gconv}/{c}")] + sorted(wanted)


def _in_root(root: Root, libc: str | None, soname: str) -> bool:
    """Whether a module sits beside libc (where glibc's dlopen finds it on Debian and Fedora)."""
    return libc is not None and root.lookup(f"{os.path.dirname(libc)}/{soname}") is not None


def _imports(root: Root, objects: list[tuple[str, str]],
             show: Callable[[str], str]) -> dict[str, frozenset[str]]:
    seen: dict[str, frozenset[str]] = {}
    for real, shown in objects:
        if show(shown) not in seen:
            seen[show(shown)] = root.imports_real(real, shown)
    return seen


def _libc(closures: list[Closure]) -> str | None:
    """The real path of glibc's libc.so.6 in the closures, if any."""
    for c in closures:
        for lib in c.libraries:
            if (lib.elf.soname or lib.soname) == "libc.so.6":
                return lib.real
    return None


_VERSION = re.compile(rb"release version (\d+)\.(\d+)")


def _glibc_version(root: Root, libc: str | None) -> tuple[int, int] | None:
    """glibc's version, from the banner libc.so.6 prints when it is run."""
    data = root.read_bytes(libc) if libc else None
    match = _VERSION.search(data) if data else None
    return (int(match.group(1)), int(match.group(2))) if match else None
