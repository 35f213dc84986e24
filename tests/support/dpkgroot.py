"""A fake dpkg database in a test root, and assembling programs of such a root."""

from __future__ import annotations

from pathlib import Path

from slimmer.assemble.assembly import Assembled, assemble
from slimmer.assemble.options import BuildOptions
from slimmer.assemble.spec import ImageSpec
from slimmer.image.model import RunConfig

Packages = dict[str, tuple[str, tuple[str, ...]]]  # package -> (Depends, the paths it lists)


def write_database(root: Path, packages: Packages) -> None:
    """/var/lib/dpkg/status and one .list per package (architecture all, version 1)."""
    stanzas = []
    for name, (depends, files) in packages.items():
        stanzas.append(f"Package: {name}\nStatus: install ok installed\nArchitecture: all\n"
                       f"Version: 1\n" + (f"Depends: {depends}\n" if depends else ""))
        info = root / f"var/lib/dpkg/info/{name}.list"
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text("/.\n" + "".join(f"{f}\n" for f in files))
    (root / "var/lib/dpkg/status").write_text("\n".join(stanzas))


def assemble_in(root: Path, *programs: str,
                without: frozenset[str] = frozenset()) -> Assembled:
    """The assembly of `programs` from `root`, without the built-in recipes."""
    build = BuildOptions(programs=programs, root=str(root), builtin_recipes=False,
                         without_features=without)
    return assemble(ImageSpec(RunConfig()), build)
