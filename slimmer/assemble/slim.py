"""`slimmer slim`: a fat image in, the slim image that still runs out, without a daemon.

The input's layers are merged into a Root (image_in.py); the entry program comes from its
Entrypoint/Cmd (looked up in the image's PATH), and the same pipeline as `pack` runs inside that
root: closure, scripts, recipes, runtime rules, --keep paths, the self-check, the writer. The
output keeps the input's run-time config (Env, WorkingDir, User, Entrypoint, Cmd, ExposedPorts,
Labels, StopSignal); history becomes one entry, created = SOURCE_DATE_EPOCH or 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from slimmer.assemble.pack import (
    PackOptions,
    PackResult,
    input_names,
    output_names,
    pack,
)
from slimmer.assemble.recipe import Group, Recipe, User
from slimmer.errors import SlimmerError
from slimmer.image.layer import Progress
from slimmer.image.merged import Image, open_image
from slimmer.loader.programs import DEFAULT_PATH, find_in_path
from slimmer.outputs import refuse_overlap
from slimmer.paths import normalize


@dataclass(frozen=True, slots=True)
class SlimResult:
    packed: PackResult
    reference: str  # of the input image
    program: str
    files_before: int
    bytes_before: int

    def report(self) -> dict[str, Any]:
        return {
            "input": self.reference,
            "program": self.program,
            "before": {"files": self.files_before, "bytes": self.bytes_before},
            "after": {"files": self.packed.tree.file_count(),
                      "bytes": self.packed.content_bytes},
            "image_id": self.packed.image.config_digest,
            "warnings": list(self.packed.warnings),
        }


@dataclass(frozen=True, slots=True)
class SlimOptions:
    """What differs from the input image; everything else is taken from its config."""

    pack: PackOptions  # programs are found from the image; fields set here win over its config
    image: str | None = None  # which image of an archive holding several
    keep: tuple[str, ...] = field(default=())  # paths or globs the analysis cannot see


def slim(source: str, options: SlimOptions, progress: Progress | None = None) -> SlimResult:
    refuse_overlap(output_names(options.pack),
                   [("input image", source), *input_names(options.pack, None)])
    with open_image(source, options.image) as image:
        cfg = image.source.config.get("config") or {}
        program, pack_options = _options(image, cfg, options)
        packed = pack(pack_options, progress, root=image.root)
        return SlimResult(packed, image.source.reference, program, image.file_count(),
                          image.content_size())


def _options(image: Image, cfg: dict[str, Any], options: SlimOptions) -> tuple[str, PackOptions]:
    given = options.pack
    entrypoint = given.entrypoint if given.entrypoint is not None else tuple(
        cfg.get("Entrypoint") or ())
    cmd = given.cmd if given.cmd is not None else tuple(cfg.get("Cmd") or ()) or None
    argv = list(entrypoint) + list(cmd or ())
    if not argv:
        raise SlimmerError("the image has neither Entrypoint nor Cmd: say what runs with "
                           "--entrypoint")
    env = tuple(cfg.get("Env") or ()) + given.env
    program = _find(image, argv[0], env)
    user = given.user or str(cfg.get("User") or "")
    extra = _recipe(image, options.keep, user)
    return program, replace(
        given,
        programs=(program,),
        tag=given.tag or _tag(image.source.reference),
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        workdir=given.workdir or str(cfg.get("WorkingDir") or ""),
        user=user,
        labels={**(cfg.get("Labels") or {}), **given.labels},
        expose=tuple(dict.fromkeys((*(cfg.get("ExposedPorts") or {}), *given.expose))),
        stop_signal=given.stop_signal or str(cfg.get("StopSignal") or ""),
        recipes=(*given.recipes, extra),
    )


def _find(image: Image, name: str, env: tuple[str, ...]) -> str:
    """The entry program inside the image: a path, or a name looked up in the image's PATH."""
    if "/" in name:
        path = normalize(name if name.startswith("/") else "/" + name)
        if image.root.lookup(path) is None:
            raise SlimmerError(f"entry program {name} is not in the image")
        return path
    path_value = next((e[5:] for e in reversed(env) if e.startswith("PATH=")), DEFAULT_PATH)
    found = find_in_path(image.root, name, path_value.split(":"))
    if found is not None:
        return found
    raise SlimmerError(f"entry program {name} not found in the image's PATH ({path_value})")


def _recipe(image: Image, keep: tuple[str, ...], user: str) -> Recipe:
    """An ad-hoc recipe: --keep paths, and the image's own entry for a User given by name."""
    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()
    name = user.split(":", 1)[0]
    if name and not name.isdigit() and name not in ("root", "nonroot"):
        users, groups = _account(image, name)
    for pattern in keep:
        if not pattern.startswith("/") or ".." in pattern.split("/"):
            raise SlimmerError(f"--keep {pattern}: must be an absolute path inside the image")
    return Recipe(name="slim", source="slim", include=keep, users=users, groups=groups)


def _account(image: Image, name: str) -> tuple[tuple[User, ...], tuple[Group, ...]]:
    passwd = (image.root.read_bytes("/etc/passwd") or b"").decode("utf-8", "replace")
    group = (image.root.read_bytes("/etc/group") or b"").decode("utf-8", "replace")
    # Lines end at "\n" only, as glibc reads them (splitlines would also end one at "\r" or
    # U+0085 and take a user that glibc sees inside another line).
    for line in passwd.split("\n"):
        fields = line.split(":")
        if (len(fields) >= 7 and fields[0] == name and fields[2].isdecimal()
                and fields[3].isdecimal()):
            gid = int(fields[3])
            names = [g.split(":")[0] for g in group.split("\n")
                     if len(g.split(":")) >= 3 and g.split(":")[2] == str(gid)]
            return ((User(name, int(fields[2]), gid, fields[5] or "/nonexistent",
                          fields[6] or "/usr/sbin/nologin"),),
                    (Group(names[0] if names else name, gid),))
    raise SlimmerError(f"the image's User {name} is not in its /etc/passwd")


def _tag(reference: str) -> str:
    if not reference:
        return "slim:latest"
    name, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (
        reference, "", "latest")
    for prefix in ("docker.io/library/", "docker.io/"):
        name = name.removeprefix(prefix)
    return f"{name}-slim:{tag or 'latest'}"
