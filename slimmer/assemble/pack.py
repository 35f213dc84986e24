"""`slimmer pack`: programs -> closures -> file tree -> checked -> image archive (one layer,
or a few with --layers: image/layering.py).

`assembly.py` builds the checked tree and config (a flat list of named steps); this module
writes it: the archive (layer, config, manifest, index), and the provenance asked for (--lock,
--locked, --sbom). What is written never overwrites what is read (outputs.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from slimmer import outputs
from slimmer.assemble.assembly import Assembled, assemble
from slimmer.assemble.bytecode import BytecodeReport, OriginalMtime, fix_bytecode, host_mtime
from slimmer.assemble.options import BuildOptions, OutputOptions
from slimmer.assemble.provenance import (
    Input,
    check_lock,
    inputs,
    lock_text,
    probed_in_lock,
    spdx,
    write_atomically,
)
from slimmer.assemble.spec import ImageSpec
from slimmer.errors import FileProblem
from slimmer.fileio import read_small_file
from slimmer.image.cache import LayerCache, make_layer
from slimmer.image.compress import Premade
from slimmer.image.layer import Layer
from slimmer.image.layering import split
from slimmer.image.model import RunConfig, canonical_json, rfc3339
from slimmer.image.precompress import Precompressor, candidates
from slimmer.image.reference import Reference, parse_reference
from slimmer.image.write import Archive, ImageResult, finish_image
from slimmer.loader.root import Root
from slimmer.notices import Notice
from slimmer.progress import Progress
from slimmer.tree import File, FileTree

VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class PackResult:
    image: ImageResult
    files: int
    content_bytes: int
    tree: FileTree
    warnings: tuple[Notice, ...] = ()
    bytecode: BytecodeReport = field(default_factory=BytecodeReport)


def pack(image: ImageSpec, build: BuildOptions, output: OutputOptions,
         progress: Progress | None = None, root: Root | None = None,
         base: RunConfig | None = None, original: OriginalMtime = host_mtime) -> PackResult:
    """Build the image archive described by the three parts (from `root`, an image being
    slimmed whose config is `base`, see assembly.assemble). `original`: a file's mtime
    before the layer normalises it (the host's; `slim`: the input image's), which the
    pycs are checked against (bytecode.py)."""
    written_files = output_names(build, output)
    outputs.refuse_overlap(written_files, input_names(build, root))
    ref = parse_reference(output.tag or _default_tag(build.programs[0]))
    lock = None
    if build.locked:
        lock = read_small_file(build.locked, "lock file").decode("utf-8", "replace")
        if not build.probed:  # what the probe touched when the lock was made
            build = replace(build, probed=probed_in_lock(lock, build.locked))
    if progress is not None:
        progress("resolving", 0, 0)
    early = _Early(build, _scratch(output.path))
    try:
        built = assemble(image, build, root, base, early.start)
        tree = built.tree
        outputs.refuse_overlap(written_files, [("file read into the image", e.source)
                                               for _, e in tree.items()
                                               if isinstance(e, File) and e.source is not None])
        bytecode = fix_bytecode(tree, build.epoch, original)
        wants_inputs = build.lock or build.locked or build.sbom
        items = inputs(tree, built.dpkg) if wants_inputs else []
        if build.locked and lock is not None:
            check_lock(lock, items, build.locked)
        written = _write(built, ref, image, build, output.path, progress, base is not None,
                         early.stop())
    finally:
        early.close()
    _write_provenance(items, ref, build)
    return PackResult(written, len(tree), tree.content_size(), tree, built.warnings, bytecode)


class _Early:
    """The zstd frames of the large files, made while the assembly goes on
    (image/precompress.py): started when the assembly shows its tree, stopped before the
    layer is written."""

    def __init__(self, build: BuildOptions, scratch: str | None) -> None:
        self._build = build
        self._scratch = scratch
        self._child: Precompressor | None = None

    def start(self, tree: FileTree) -> None:
        # One core: the child would take it from the assembly.
        if self._build.compression == "zstd" and self._build.workers > 1:
            self._child = Precompressor.start(candidates(tree, self._build.epoch),
                                              self._scratch)

    def stop(self) -> Premade | None:
        if self._child is None:
            return None
        self._child.stop()
        return self._child.premade

    def close(self) -> None:
        if self._child is not None:
            self._child.close()


def _scratch(path: str) -> str | None:
    """Where scratch files go: beside the output (None, the temporary directory, for a device
    or FIFO)."""
    target = outputs.target(path)
    return None if target.stream else os.path.dirname(target.path)


def _write(built: Assembled, ref: Reference, image: ImageSpec, build: BuildOptions, path: str,
           progress: Progress | None, slimmed: bool, premade: Premade | None) -> ImageResult:
    """The archive, its layers written straight into it (one, or as layering.split makes them
    with --layers), or copied from the layer cache."""
    parts = split(built.tree, build.layers)
    layers: list[Layer] = []
    try:
        with outputs.writing(path) as out:
            archive = Archive(out, build.epoch)
            total, done = built.tree.content_size(), 0
            cache = LayerCache(build.cache_dir) if build.cache_dir else None
            for part in parts:
                shown = None if progress is None else _offset(progress, done, total)
                layer = make_layer(part.tree, archive, build.compression, build.epoch, shown,
                                   build.workers, cache, premade)
                layers.append(layer)
                archive.add(layer.blob)  # one from the cache: in its place, as if written
                done += part.tree.content_size()
            return finish_image(archive, layers, built.platform, built.config, ref,
                                build.epoch, f"slimmer {VERSION}", image.annotations,
                                contents_json(built.tree, "slim" if slimmed else "pack",
                                              built.warnings),
                                [p.name for p in parts] if len(parts) > 1 else ())
    except OSError as exc:
        raise FileProblem(f"{path}: cannot write the image ({exc.strerror})") from exc
    finally:
        for layer in layers:
            layer.close()


def _offset(progress: Progress, done: int, total: int) -> Progress:
    """One layer's progress as a share of the whole image's."""
    return lambda stage, written, _: progress(stage, done + written, total)


def _write_provenance(items: list[Input], ref: Reference, build: BuildOptions) -> None:
    if build.lock:
        write_atomically(build.lock, lock_text(items, build.probed).encode())
    if build.sbom:
        write_atomically(build.sbom, spdx(items, ref.short, rfc3339(build.epoch),
                                          f"slimmer-{VERSION}"))


def contents_json(tree: FileTree, made_by: str = "pack",
                  warnings: tuple[Notice, ...] = ()) -> bytes:
    """Why each entry is in the image, and what brought it in: slimmer.json of the archive;
    with the command that made it and the warnings it gave (`why` shows them)."""
    files = []
    for path, _entry in tree.items():
        item: dict[str, object] = {"path": path, "reason": tree.reasons.get(path, "")}
        if path in tree.parents:
            item["parent"] = tree.parents[path]
        files.append(item)
    return canonical_json({"slimmer": 1, "made_by": made_by, "files": files,
                           "warnings": [w.as_json() for w in warnings]})


def output_names(build: BuildOptions, output: OutputOptions) -> list[outputs.Named]:
    """The files `pack` writes, named as on the command line."""
    named = [("-o", output.path), ("--sbom", build.sbom), ("--lock", build.lock)]
    return [(what, path) for what, path in named if path]


def input_names(options: BuildOptions, root: Root | None) -> list[outputs.Named]:
    """The host files `pack` reads that the user named: the programs (when read from a host
    directory rather than an image), --add sources, recipe files, the --locked file."""
    named: list[outputs.Named] = []
    if root is None:
        named += [("program", os.path.join(options.root, p.lstrip("/")))
                  for p in options.programs]
    named += [("--add source", add.source) for add in options.adds()]
    named += [("recipe", r.source) for r in options.recipes if os.path.isabs(r.source)]
    if options.locked:
        named.append(("--locked file", options.locked))
    return named


def _default_tag(program: str) -> str:
    name = os.path.basename(program).lower()
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("._-")
    return f"{cleaned or 'image'}:latest"
