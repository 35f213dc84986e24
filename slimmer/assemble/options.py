"""What `pack` is asked for, in three parts: the image spec (spec.ImageSpec: what the image is
when it runs), the build options (what goes in and how it is built) and the output options
(where it is written, under which name)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from slimmer.assemble.placing import Add
from slimmer.assemble.recipe import Group, Recipe, User
from slimmer.assemble.spec import ImageSpec
from slimmer.image.model import DEFAULT_EPOCH, RunConfig
from slimmer.probe.probe import Probed


@dataclass(frozen=True, slots=True)
class BuildOptions:
    programs: tuple[str, ...]  # absolute paths inside the root
    root: str = "/"
    # --add: Add, or (host source, image destination) for root's and the source's own modes
    add: tuple[Add | tuple[str, str], ...] = ()
    library_path: tuple[str, ...] = ()
    hwcaps: tuple[str, ...] = ()
    platform: str | None = None  # $PLATFORM of the target CPU (default: the architecture's)
    compression: str = "gzip"
    layers: int | None = 1  # --layers: a count, or None for auto (image/layering.py)
    keep_setuid: bool = False
    epoch: int = DEFAULT_EPOCH  # SOURCE_DATE_EPOCH: file mtimes and `created`
    with_features: frozenset[str] = frozenset()  # runtime.py: rules to force or add
    without_features: frozenset[str] = frozenset()  # rules to drop
    gconv_charsets: tuple[str, ...] = ()  # keep only these iconv charsets (default: all)
    recipes: tuple[Recipe, ...] = ()  # applied to every program, besides the matching ones
    builtin_recipes: bool = True  # apply the built-in recipes that match a program
    # Paths or globs of the root kept although no analysis finds them (slim's --keep)
    keep: tuple[str, ...] = ()
    # What a probe touched (--probe, or the probe recorded in the --locked lock file)
    probed: tuple[Probed, ...] = ()
    # Accounts the image gets besides root, nonroot and the recipes' (a slimmed image's User)
    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()
    sbom: str | None = None  # write an SPDX 2.3 document here
    lock: str | None = None  # write a lock file of every input here
    locked: str | None = None  # refuse to build when the inputs differ from this lock file
    workers: int = 1  # threads compressing the layer (the bytes are the same for any number)
    cache_dir: str | None = None  # the layer cache (image/cache.py); None: no cache

    def adds(self) -> tuple[Add, ...]:
        return tuple(spec if isinstance(spec, Add) else Add(*spec) for spec in self.add)


@dataclass(frozen=True, slots=True)
class OutputOptions:
    path: str  # the archive (-o)
    tag: str | None = None  # NAME[:TAG]; default: the first program's name, or slim's own


# The library's flat keywords (slimmer.pack) that are not the fields of their part by name.
_SPEC_NAMES = {"entrypoint": "entrypoint", "cmd": "cmd", "env": "env", "workdir": "working_dir",
               "user": "user", "labels": "labels", "expose": "exposed_ports",
               "stop_signal": "stop_signal"}


def from_keywords(programs: tuple[str, ...], output: str,
                  **options: Any) -> tuple[ImageSpec, BuildOptions, OutputOptions]:
    """The three parts from flat keywords (slimmer.pack's): tag; entrypoint, cmd, env, workdir,
    user, labels, expose, stop_signal, annotations; and the fields of BuildOptions."""
    config = {_SPEC_NAMES[k]: options.pop(k) for k in list(options) if k in _SPEC_NAMES}
    annotations = options.pop("annotations", {})
    tag = options.pop("tag", None)
    unknown = set(options) - {f.name for f in fields(BuildOptions)}
    if unknown:
        raise TypeError(f"unknown pack options: {', '.join(sorted(unknown))}")
    return (ImageSpec(RunConfig(**config), dict(annotations)),
            BuildOptions(programs=programs, **options), OutputOptions(output, tag))
