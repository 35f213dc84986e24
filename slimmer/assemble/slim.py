"""`slimmer slim`: a fat image in, the slim image that still runs out, without a daemon.

The input's layers are merged into a Root (image/merged.py); the entry program comes from its
Entrypoint/Cmd (looked up in the image's PATH), and the same pipeline as `pack` runs inside that
root: closure, scripts, recipes, runtime rules, --keep paths, the self-check, the writer. The
input's config is a layer of the one merge (spec.py), below the command line: the output keeps
the input's run-time config (Env, WorkingDir, User, Entrypoint, Cmd, ExposedPorts,
Labels, StopSignal); history becomes one entry, created = SOURCE_DATE_EPOCH (or 1980-01-02).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from slimmer.assemble import spec
from slimmer.assemble.bytecode import OriginalMtime, host_mtime
from slimmer.assemble.options import BuildOptions, OutputOptions
from slimmer.assemble.pack import PackResult, input_names, output_names, pack
from slimmer.assemble.probing import Probe, ProbeOptions, probe_image, probe_report
from slimmer.assemble.recipe import Group, User
from slimmer.assemble.spec import ImageSpec
from slimmer.errors import SlimmerError
from slimmer.image.merged import Image, open_image
from slimmer.image.model import RunConfig
from slimmer.loader.programs import find_in_path
from slimmer.outputs import refuse_overlap
from slimmer.paths import normalize
from slimmer.progress import Progress
from slimmer.tree import File


@dataclass(frozen=True, slots=True)
class SlimResult:
    packed: PackResult
    reference: str  # of the input image
    program: str
    files_before: int
    bytes_before: int
    probe: Probe | None = None

    def report(self) -> dict[str, Any]:
        return {
            "input": self.reference,
            "program": self.program,
            "before": {"files": self.files_before, "bytes": self.bytes_before},
            "after": {"files": self.packed.tree.file_count(),
                      "bytes": self.packed.content_bytes},
            "image_id": self.packed.image.config_digest,
            "warnings": [w.as_json() for w in self.packed.warnings],
            **({"probe": probe_report(self.probe, self.packed.tree)} if self.probe else {}),
        }


def slim(source: str, image: ImageSpec, build: BuildOptions, output: OutputOptions,
         which: str | None = None, progress: Progress | None = None,
         probe: ProbeOptions | None = None) -> SlimResult:
    """Slim the image at `source` (`which` of an archive holding several). `image` and `build`
    say what differs from the input: its config is a layer of the merge (spec.py) below
    `image`; build.programs is found from it, its User's account added."""
    refuse_overlap(output_names(build, output), [("input image", source),
                                                 *input_names(build, None)])
    if progress is not None:
        progress("reading the image", 0, 0)
    with open_image(source, which) as fat:
        base = fat.source.spec.config if fat.source.spec is not None else RunConfig()
        program, build = _build(fat, base, image.config, build)
        tag = output.tag or _tag(fat.source.reference)
        probed = None
        if probe is not None:  # the image's own command line, once, in a sandbox
            merged = spec.merge([spec.defaults(), spec.slimmed_layer(base), image.config])
            probed = probe_image(fat, merged, build.users, probe)
            build = replace(build, probed=probed.kept)
        packed = pack(image, build, replace(output, tag=tag), progress, fat.root, base,
                      _image_mtime(fat))
        return SlimResult(packed, fat.source.reference, program, fat.file_count(),
                          fat.content_size(), probed)


def _image_mtime(image: Image) -> OriginalMtime:
    """A file's mtime as the input image has it (its layers' tar headers), for a file the
    slim image keeps at the same path; a host file's (--add) otherwise."""

    def original(path: str, entry: File) -> int | None:
        if image.tree.get(path) == entry:
            return image.mtimes.get(path)
        return host_mtime(path, entry)

    return original


def _build(image: Image, base: RunConfig, given: RunConfig,
           build: BuildOptions) -> tuple[str, BuildOptions]:
    """The entry program (what the merged Entrypoint and Cmd run first) and the build options
    that slim it: that program, and the account of the image's User given by name."""
    merged = spec.merge([spec.slimmed_layer(base), given])
    argv = [*(merged.entrypoint or ()), *(merged.cmd or ())]
    if not argv:
        raise SlimmerError("the image has neither Entrypoint nor Cmd: say what runs with "
                           "--entrypoint")
    program = _find(image, argv[0], merged.env)
    users, groups = _accounts(image, merged.user)
    for pattern in build.keep:
        if not pattern.startswith("/") or ".." in pattern.split("/"):
            raise SlimmerError(f"--keep {pattern}: must be an absolute path inside the image")
    return program, replace(build, programs=(program,), users=(*build.users, *users),
                            groups=(*build.groups, *groups))


def _find(image: Image, name: str, env: tuple[str, ...]) -> str:
    """The entry program inside the image: a path, or a name looked up in the image's PATH."""
    if "/" in name:
        path = normalize(name if name.startswith("/") else "/" + name)
        if image.root.lookup(path) is None:
            raise SlimmerError(f"{name}: the entry program is not in the image",
                               "say what runs with --entrypoint")
        return path
    directories = spec.path_dirs(spec.env_pairs(env))  # the PATH the assembly uses too
    found = find_in_path(image.root, name, directories)
    if found is not None:
        return found
    raise SlimmerError(f"{name}: the entry program is not in the image's PATH "
                       f"({':'.join(directories)})", "say what runs with --entrypoint",
                       code="program-not-found")


def _accounts(image: Image, user: str) -> tuple[tuple[User, ...], tuple[Group, ...]]:
    """The image's own entry for a User given by name (root and nonroot every image has)."""
    name = user.split(":", 1)[0]
    if name and not name.isdigit() and name not in ("root", "nonroot"):
        return _account(image, name)
    return (), ()


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
