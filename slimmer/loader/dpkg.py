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


class PackageDb:
    """The installed packages of a root and the paths they own."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.entries: dict[str, Entry] = {}
        self.providers: dict[str, list[str]] = {}  # virtual name -> installed packages
        self.files: dict[str, tuple[str, ...]] = {}  # package -> paths as its list gives them
        self.owners: dict[str, list[str]] = {}  # path (as listed, and real) -> packages
        self._elf: dict[str, bool] = {}
        self._dirs: dict[str, str] = {}  # listed directory -> its real path
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
                                       depends, provides)
            for virtual in provides:
                self.providers.setdefault(virtual, []).append(name)
        for name, entry in self.entries.items():
            self._read_list(name, entry.architecture)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def _read_list(self, name: str, arch: str) -> None:
        data = None
        for candidate in (f"{name}:{arch}.list", f"{name}.list"):
            data = self.root.read_bytes(f"{INFO}/{candidate}", LIST_LIMIT)
            if data is not None:
                break
        paths = []
        owners, dirs = self.owners, self._dirs
        for line in (data or b"").decode("utf-8", "surrogateescape").splitlines():
            if not line.startswith("/") or line == "/.":
                continue
            plain = "//" not in line and "/." not in line and not line.endswith("/")
            listed = line if plain else normalize(line)
            paths.append(listed)
            directory, _, base = listed.rpartition("/")
            real_dir = dirs.get(directory)
            if real_dir is None:
                real_dir = dirs[directory] = self._real_dir(directory)
            real = f"{real_dir}/{base}"
            owners.setdefault(listed, []).append(name)
            if real != listed:
                owners.setdefault(real, []).append(name)
        self.files[name] = tuple(paths)

    def _real_dir(self, directory: str) -> str:
        """A listed directory as the root has it (through /usr-merge links), "" for /."""
        try:
            found = self.root.lookup(directory or "/")
        except SlimmerError:  # a symlink loop: the path as listed
            return directory
        return found.real.rstrip("/") if found is not None else directory

    def real(self, path: str) -> str:
        """`path` with its directory resolved in the root (the name itself not followed)."""
        directory, _, base = path.rpartition("/")
        if directory not in self._dirs:
            self._dirs[directory] = self._real_dir(directory)
        return f"{self._dirs[directory]}/{base}"

    def owners_of(self, path: str) -> list[str]:
        """The packages that list `path` (a real path, or as a package lists it)."""
        return self.owners.get(path, [])

    def depends(self, name: str) -> list[str]:
        """The installed packages `name` depends on: for each dependency the first alternative
        that is installed (as itself, else through a package that Provides it)."""
        entry = self.entries.get(name)
        out: list[str] = []
        for alternatives in entry.depends if entry is not None else ():
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
            self._elf[name] = any(self._is_elf(p) for p in self.files.get(name, ()))
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
