"""`slimmer diff` and `--check-reproducible`."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimmer.assemble.options import from_keywords
from slimmer.assemble.pack import pack
from slimmer.errors import SlimmerError
from slimmer.image.diff import diff
from slimmer.image.model import DEFAULT_EPOCH
from tests.support.archives import tiny_static_elf
from tests.support.cli import run as slimmer


def tiny(tmp_path: Path, name: str, message: bytes, mode: int = 0o755) -> Path:
    root = tmp_path / name
    (root / "bin").mkdir(parents=True)
    (root / "bin/hello").write_bytes(tiny_static_elf(message))
    (root / "bin/hello").chmod(mode)
    (root / "etc").mkdir()
    (root / "etc/data").write_text(name)
    return root


def build(root: Path, out: Path, **options: object) -> Path:
    pack(*from_keywords(programs=("/bin/hello",), output=str(out), root=str(root), tag="t:1",
                            add=((str(root / "etc/data"), "/etc/data"),), **options))
    return out


def test_diff_finds_content_mode_mtime_and_config(tmp_path: Path) -> None:
    a = build(tiny(tmp_path, "a", b"one\n"), tmp_path / "a.tar")
    b_root = tiny(tmp_path, "b", b"two\n", mode=0o4755)
    b = build(b_root, tmp_path / "b.tar", epoch=86400, keep_setuid=True, env=("X=1",))
    lines = [d.line for d in diff(str(a), str(b))]
    size = len(tiny_static_elf(b"one\n"))
    assert f"changed content: /bin/hello ({size} -> {size} bytes)" in lines
    assert "changed content: /etc/data (1 -> 1 bytes)" in lines
    assert "changed mode: /bin/hello: 0755 -> 4755" in lines
    assert f"changed mtime: /bin/hello: {DEFAULT_EPOCH} -> 86400" in lines
    assert any(line.startswith("changed config Env: ") and '"X=1"' in line for line in lines)
    assert any(line.startswith("changed config created: ") for line in lines)
    # most useful first: content before mode before mtime before config
    order = [line.split(":")[0] for line in lines]
    assert order.index("changed content") < order.index("changed mode") < order.index(
        "changed mtime") < order.index("changed config Env")
    done = slimmer("diff", str(a), str(b))
    assert done.returncode == 1 and "changed mode: /bin/hello: 0755 -> 4755" in done.stdout
    same = slimmer("diff", str(a), str(a))
    assert same.returncode == 0 and same.stdout.startswith("same: ")


def test_added_removed_and_links(tmp_path: Path) -> None:
    root = tiny(tmp_path, "r", b"x\n")
    a = build(root, tmp_path / "a.tar")
    (root / "etc/more").write_text("more")
    b = tmp_path / "b.tar"
    pack(*from_keywords(programs=("/bin/hello",), output=str(b), root=str(root), tag="t:1",
                        add=((str(root / "etc/more"), "/etc/more"),)))
    lines = [d.line for d in diff(str(a), str(b))]
    assert "added: /etc/more (file)" in lines and "removed: /etc/data (file)" in lines


def test_check_reproducible(tmp_path: Path) -> None:
    root = tiny(tmp_path, "c", b"c\n")
    done = slimmer("pack", "--root", str(root), "/bin/hello", "-o", str(tmp_path / "c.tar"),
                   "--check-reproducible")
    assert done.returncode == 0, done.stderr
    assert "reproducible: a second build" in done.stdout

    from slimmer.cli.shared import check_reproducible

    first = build(root, tmp_path / "first.tar")
    with pytest.raises(SlimmerError, match=r"not reproducible: \d+ differences"):
        check_reproducible(str(first), lambda out, _: build(root, Path(out), epoch=1))
