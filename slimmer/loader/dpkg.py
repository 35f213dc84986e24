"""The dpkg database of a root, read inside the root only: which installed package owns each
path (/var/lib/dpkg/info/*.list, resolved through the root's own /usr-merge links: dpkg lists
/lib/x86_64-linux-gnu/libz.so.1 for a file that lives in /usr/lib), what each package depends
on (Depends and Pre-Depends, an alternative's first installed choice, Provides honoured), and
whether a package ships ELF objects. Sizes are bounded: the status file and each list are read
up to a limit, a larger one is taken as truncated there.

One reader for provenance (SBOMs, lock files, status.d) and evidence (runtime data packages,
owners of paths compiled into programs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from slimmer.errors import SlimmerError
from slimmer.loader.root import Root
from slimmer.paths import normalize

STATUS = "/var/lib/dpkg/status"
INFO = "/var/lib/dpkg/info"
STATUS_LIMIT = 64 << 20  # a fat root's status file is a few MB
LIST_LIMIT = 16 << 20  # the largest Debian package lists (linux-image, texlive) stay below
_DEPENDENCY = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?")


@dataclass(frozen=True, slots=True)
class Entry:
    """One installed package, as the status file describes it."""

    name: str
    version: str
    architecture: str
    stanza: str  # its entry of the status file, as written there
    depends: tuple[tuple[str, ...], ...]  # Pre-Depends then Depends: each a list of alternatives
    provides: tuple[str, ...]
    recommends: tuple[tuple[str, ...], ...] = ()  # installed by default (apt): fortune's cookies


class PackageDb:
    """The installed packages of a root and the paths they own.

    Built for speed (every pack reads it: 900 lists and 130,000 paths in a fat root): each
    list becomes a dict at C speed, the paths listed by several packages (directories, mostly)
    are found by set intersection, and no listed path is resolved through the root up front: a
    real path is looked up as itself, and as listed under the directories of the same name that
    the root resolves to its directory (the /usr-merge links: see _aliases)."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.entries: dict[str, Entry] = {}
        self.providers: dict[str, list[str]] = {}  # virtual name -> installed packages
        self._lists: dict[str, list[str]] = {}  # package -> paths as its list gives them
        self._first: dict[str, str] = {}  # listed path -> the first package listing it
        self._more: dict[str, list[str]] = {}  # listed path -> all, when several list it
        self._by_name: dict[str, list[str]] | None = None  # last name -> listed dirs
        self._listed_as: dict[str, list[str]] = {}  # real dir -> listed dirs, when asked
        self._elf: dict[str, bool] = {}
        self._dirs: dict[str, str] = {}  # directory -> its real path ("" for /)
        status = root.read_bytes(STATUS, STATUS_LIMIT)
        if status is None:
            return
        for stanza in status.decode("utf-8", "replace").split("\n\n"):
            fields = stanza_fields(stanza)
            name = fields.get("Package", "")
            if not name or "install ok installed" not in fields.get("Status", ""):
                continue
            depends = tuple(_alternatives(fields.get("Pre-Depends", ""))
                            + _alternatives(fields.get("Depends", "")))
            provides = tuple(alt[0] for alt in _alternatives(fields.get("Provides", "")))
            self.entries[name] = Entry(name, fields.get("Version", ""),
                                       fields.get("Architecture", ""), stanza.strip() + "\n",
                                       depends, provides,
                                       tuple(_alternatives(fields.get("Recommends", ""))))
            for virtual in provides:
                self.providers.setdefault(virtual, []).append(name)
        info = root.lookup(INFO)
        if info is None or not info.is_dir:
            return
        listed = set(root.listdir_real(info.real))  # one listing, not a failed lookup each
        for name, entry in self.entries.items():
            for candidate in (f"{name}:{entry.architecture}.list", f"{name}.list"):
                if candidate in listed:
                    self._read_list(name, root.read_bytes(f"{INFO}/{candidate}", LIST_LIMIT))
                    break
            else:
                self._lists[name] = []

    def __bool__(self) -> bool:
        return bool(self.entries)

    def _read_list(self, name: str, data: bytes | None) -> None:
        text = (data or b"").decode("utf-8", "surrogateescape").strip("\n")
        if text.startswith("/.\n"):  # every list begins with its root
            text = text[3:]
        lines = text.split("\n") if text else []
        # checked on the whole text at C speed: a line that is not a path, or one to normalise
        if lines and (not text.startswith("/") or text.count("\n/") != len(lines) - 1):
            lines = [line for line in lines if line.startswith("/") and line != "/."]
        # dpkg writes its lists normalised: two scans find a line to look at (a "/." is mostly
        # a dot file); a trailing "/" is not looked for (such a line is only never matched)
        if "//" in text or "/." in text:
            lines = [line if "//" not in line and "/." not in line else normalize(line)
                     for line in lines]
        self._lists[name] = lines
        mine = dict.fromkeys(lines, name)
        first, more = self._first, self._more
        shared = mine.keys() & first.keys()
        for path in shared:
            names = more.get(path)
            if names is None:
                more[path] = [first[path], name]
            else:
                names.append(name)
        first.update(mine)
        for path in shared:  # the earlier package stays first
            first[path] = more[path][0]

    def files(self, name: str) -> list[str]:
        """The paths a package lists, as it lists them."""
        return self._lists.get(name, [])

    def real(self, path: str) -> str:
        """`path` with its directory resolved in the root (the name itself not followed)."""
        directory, _, base = path.rpartition("/")
        if directory not in self._dirs:  # a missing one (or a loop): as listed
            self._dirs[directory] = self._found_dir(directory) or directory
        return f"{self._dirs[directory]}/{base}"

    def _aliases(self, real: str) -> list[str]:
        """The listed directories that are the real directory `real` under another name: those
        of the same last name that the root resolves to it (/lib/x86_64-linux-gnu for
        /usr/lib/x86_64-linux-gnu, /lib64 for /usr/lib64). Not found: a directory reached
        through a link to a directory of another name (/var/lib/x -> /srv/y): the paths under
        it are found as listed, not by the target's name."""
        if self._by_name is None:
            by_name: dict[str, list[str]] = {}
            for directory in {p.rpartition("/")[0] for lines in self._lists.values()
                              for p in lines}:
                by_name.setdefault(directory.rpartition("/")[2], []).append(directory)
            self._by_name = by_name
        found = self._listed_as.get(real)
        if found is None:
            candidates = self._by_name.get(real.rpartition("/")[2], ())
            found = self._listed_as[real] = sorted(
                c for c in candidates if c != real and self._found_dir(c) == real)
        return found

    def _found_dir(self, directory: str) -> str | None:
        """The real path of an existing directory of the root, else None."""
        try:
            found = self.root.lookup(directory or "/")
        except SlimmerError:
            return None
        return found.real.rstrip("/") if found is not None and found.is_dir else None

    def _listed_owners(self, path: str) -> list[str]:
        more = self._more.get(path)
        if more is not None:
            return more
        first = self._first.get(path)
        return [first] if first is not None else []

    def owners_of(self, path: str) -> list[str]:
        """The packages that list `path` (a real path, or as a package lists it)."""
        out = self._listed_owners(path)
        directory, _, base = path.rpartition("/")
        for alias in self._aliases(directory) if self._lists and directory else ():
            out = out + [n for n in self._listed_owners(f"{alias}/{base}") if n not in out]
        return out

    def owner_of(self, path: str) -> str | None:
        """The first package listing `path` (a file has one owner; a directory many)."""
        owners = self.owners_of(path)
        return owners[0] if owners else None

    def depends(self, name: str, recommends: bool = False) -> list[str]:
        """The installed packages `name` depends on (and recommends, when asked): for each
        dependency the first alternative that is installed (as itself, else through a package
        that Provides it)."""
        entry = self.entries.get(name)
        out: list[str] = []
        wanted = () if entry is None else entry.depends + (entry.recommends if recommends else ())
        for alternatives in wanted:
            for choice in alternatives:
                if choice in self.entries:
                    out.append(choice)
                    break
                if self.providers.get(choice):
                    out.append(self.providers[choice][0])
                    break
        return list(dict.fromkeys(out))

    def ships_elf(self, name: str) -> bool:
        """Whether a regular file of the package starts with the ELF magic."""
        if name not in self._elf:
            self._elf[name] = any(self._is_elf(p) for p in self.files(name))
        return self._elf[name]

    def _is_elf(self, path: str) -> bool:
        try:
            found = self.root.lookup(path)
        except SlimmerError:
            return False
        return (found is not None and found.is_file and found.size >= 4
                and self.root.read_bytes(path, 4) == b"\x7fELF")


def stanza_fields(stanza: str) -> dict[str, str]:
    """The fields of one status stanza (continuation lines left out)."""
    out: dict[str, str] = {}
    for line in stanza.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _alternatives(field: str) -> list[tuple[str, ...]]:
    """`a (>= 1) | b, c:any` -> [("a", "b"), ("c",)]."""
    out = []
    for part in field.split(","):
        names = []
        for choice in part.split("|"):
            match = _DEPENDENCY.match(choice)
            if match:
                names.append(match.group(1))
        if names:
            out.append(tuple(names))
    return out
