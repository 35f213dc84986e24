"""Fat images for `slim` tests: the shared mmdebstrap root (roots.FAT_PACKAGES) imported into the
test's private Docker daemon, with a Dockerfile's layers on top (built with the classic builder,
no network), saved as a docker-archive. Every image and tag made here is removed again."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from tests.support.engines import Docker


def derived_image(docker: Docker, fat_root: Path, work: Path, dockerfile: str,
                  files: dict[str, bytes] | None = None) -> Path:
    """The docker-archive of `dockerfile` (whose `FROM {base}` is the imported root) built with
    `files` in its context; written under `work`."""
    base = f"slimmer-fat/root:{uuid.uuid4().hex[:8]}"
    tag = f"slimmer-fat/derived:{uuid.uuid4().hex[:8]}"
    context = work / f"ctx-{uuid.uuid4().hex[:8]}"
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(dockerfile.format(base=base))
    for name, data in (files or {}).items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_bytes(data)
    env = {"DOCKER_BUILDKIT": "0"}
    docker.run("import", str(fat_root), base)
    try:
        docker.run("build", "--network", "none", "-t", tag, str(context), env=env)
        fat = work / f"fat-{tag.rsplit(':', 1)[1]}.tar"
        docker.run("save", tag, "-o", str(fat))
    finally:
        docker.run("rmi", tag, base, check=False)
    assert os.path.getsize(fat) > 0
    return fat
