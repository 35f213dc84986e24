"""`slimmer pack`: programs -> closures -> file tree -> checked -> one-layer image archive.

`assembly.py` builds the checked tree and config (a flat list of named steps); this module
writes it: the archive (layer, config, manifest, index), and the provenance asked for (--lock,
--locked, --sbom). What is written never overwrites what is read (outputs.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from slimmer import outputs
from slimmer.assemble.assembly import Assembled, assemble
from slimmer.assemble.options import BuildOptions, OutputOptions
from slimmer.assemble.provenance import Input, check_lock, inputs, lock_text, spdx, write_atomically
from slimmer.assemble.spec import ImageSpec
from slimmer.errors import FileProblem
from slimmer.fileio import read_small_file
from slimmer.image.cache import LayerCache, make_layer
from slimmer.image.model import RunConfig, canonical_json, rfc3339
from slimmer.image.reference import Reference, parse_reference
from slimmer.image.write import ImageResult, write_image
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


def pack(image: ImageSpec, build: BuildOptions, output: OutputOptions,
         progress: Progress | None = None, root: Root | None = None,
         base: RunConfig | None = None) -> PackResult:
    """Build the image archive described by the three parts (from `root`, an image being
    slimmed whose config is `base`, see assembly.assemble)."""
    written_files = output_names(build, output)
    outputs.refuse_overlap(written_files, input_names(build, root))
    ref = parse_reference(output.tag or _default_tag(build.programs[0]))
    if progress is not None:
        progress("resolving", 0, 0)
    built = assemble(image, build, root, base)
    tree = built.tree
    outputs.refuse_overlap(written_files, [("file read into the image", e.source)
                                           for _, e in tree.items()
                                           if isinstance(e, File) and e.source is not None])
    wants_inputs = build.lock or build.locked or build.sbom
    items = inputs(tree, built.dpkg) if wants_inputs else []
    if build.locked:
        raw = read_small_file(build.locked, "lock file")
        check_lock(raw.decode("utf-8", "replace"), items, build.locked)
    written = _write(built, ref, image, build, output.path, progress)
    _write_provenance(items, ref, build)
    return PackResult(written, len(tree), tree.content_size(), tree, built.warnings)


def _write(built: Assembled, ref: Reference, image: ImageSpec, build: BuildOptions, path: str,
           progress: Progress | None) -> ImageResult:
    """The layer (in a scratch file beside the output) and the archive."""
    target = outputs.target(path)
    scratch = None if target.stream else os.path.dirname(target.path)  # not /dev
    try:
        cache = LayerCache(build.cache_dir) if build.cache_dir else None
        layer = make_layer(built.tree, scratch, build.compression, build.epoch, progress,
                           build.workers, cache)
        try:
            return write_image(path, layer, built.platform, built.config, ref, build.epoch,
                               f"slimmer {VERSION}", image.annotations,
                               contents_json(built.tree))
        finally:
            layer.close()
    except OSError as exc:
        raise FileProblem(f"{path}: cannot write the image ({exc.strerror})") from exc


def _write_provenance(items: list[Input], ref: Reference, build: BuildOptions) -> None:
    if build.lock:
        write_atomically(build.lock, lock_text(items).encode())
    if build.sbom:
        write_atomically(build.sbom, spdx(items, ref.short, rfc3339(build.epoch),
                                          f"slimmer-{VERSION}"))


def contents_json(tree: FileTree) -> bytes:
    """Why each entry is in the image, and what brought it in: slimmer.json of the archive."""
    files = []
    for path, _entry in tree.items():
        item: dict[str, object] = {"path": path, "reason": tree.reasons.get(path, "")}
        if path in tree.parents:
            item["parent"] = tree.parents[path]
        files.append(item)
    return canonical_json({"slimmer": 1, "files": files})


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
