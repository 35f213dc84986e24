"""The TARGET of `why` and `inspect`: an image archive or layout, or a program, read as the
file tree of the image (for a program: the image `pack` would make of it, not written)."""

from __future__ import annotations

import os
import tarfile

from slimmer.assemble.assembly import assemble
from slimmer.assemble.options import BuildOptions
from slimmer.assemble.spec import ImageSpec
from slimmer.image.explain import ImageView, read_image
from slimmer.loader.programs import find_program
from slimmer.loader.root import SysRoot


def image_or_program(target: str, cwd: str, root: str = "/",
                     library_path: tuple[str, ...] = ()) -> ImageView:
    """The files of `target`: an archive or a layout directory (relative to `cwd`) as its
    layers merge (and its layers), else a program of `root` (relative to `cwd` on the host
    root, or looked up in the default PATH) as `pack` would place it with its closure (and
    warn)."""
    host = os.path.join(cwd, target)
    if os.path.isdir(host) or (os.path.isfile(host) and tarfile.is_tarfile(host)):
        return read_image(host)
    program = find_program(SysRoot(root), target, cwd)
    build = BuildOptions(programs=(program,), root=root, library_path=library_path)
    built = assemble(ImageSpec(), build)
    return ImageView(built.tree, True, "pack", built.warnings)
