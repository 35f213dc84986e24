"""Every file slimmer writes is written safely (slimmer/outputs.py): never through a planted
temporary name, never over a device, FIFO or input, in place only when complete, nothing left
behind after a failure, SIGTERM or SIGKILL; and names printed by inspect/why/diff are quoted."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slimmer import outputs
from slimmer.assemble.options import BuildOptions, OutputOptions, from_keywords
from slimmer.assemble.pack import pack
from slimmer.assemble.slim import slim
from slimmer.assemble.spec import ImageSpec
from slimmer.errors import printable
from slimmer.image.explain import Step, format_inventory, format_why, inventory
from slimmer.image.index import write_index
from slimmer.image.reference import parse_reference
from slimmer.outputs import OutputProblem
from slimmer.tree import File, FileTree
from tests.support.archives import tiny_static_elf
from tests.support.cli import command, error_line, run_process, run_process_bytes
from tests.support.cli import run as slimmer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, mount, chown)")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root holding one tiny static program: packs in milliseconds."""
    where = tmp_path / "root"
    (where / "bin").mkdir(parents=True)
    (where / "bin/hello").write_bytes(tiny_static_elf(b"hello\n"))
    (where / "bin/hello").chmod(0o755)
    return where


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    where = tmp_path / "out"
    where.mkdir()
    return where


def options(root: Path, output: Path | str,
            **extra: object) -> tuple[ImageSpec, BuildOptions, OutputOptions]:
    return from_keywords(("/bin/hello",), str(output), root=str(root), compression="none",
                         **extra)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def reference_bytes(root: Path, tmp_path: Path) -> bytes:
    plain = tmp_path / "reference.tar"
    pack(*options(root, plain))
    return plain.read_bytes()


# ---- temporary files ------------------------------------------------------------------------


def test_a_planted_temporary_name_is_not_written_through(root: Path, out_dir: Path,
                                                         tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for name in ("sbom.json", "lock.txt"):
        (out_dir / f"{name}.slimmer-tmp").symlink_to(victim)
    pack(*options(root, out_dir / "image.tar", sbom=str(out_dir / "sbom.json"),
                 lock=str(out_dir / "lock.txt")))
    assert victim.read_text() == "precious\n"
    assert (out_dir / "sbom.json").read_bytes().startswith(b"{")
    assert (out_dir / "lock.txt").read_text().startswith("# slimmer lock")
    assert listing(out_dir) == ["image.tar", "lock.txt", "lock.txt.slimmer-tmp", "sbom.json",
                                "sbom.json.slimmer-tmp"]


def test_new_outputs_are_0644_whatever_the_umask(root: Path, out_dir: Path) -> None:
    umask = os.umask(0o077)
    try:
        pack(*options(root, out_dir / "image.tar", sbom=str(out_dir / "sbom.json"),
                     lock=str(out_dir / "lock.txt")))
    finally:
        os.umask(umask)
    for name in ("image.tar", "sbom.json", "lock.txt"):
        assert stat.S_IMODE((out_dir / name).stat().st_mode) == 0o644, name


def _fail_after(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """Every Output write fails with ENOSPC once `limit` bytes were written."""
    real = outputs.Output.write

    def write(self: outputs.Output, data: bytes) -> None:
        if self.size + len(data) > limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, data)

    monkeypatch.setattr(outputs.Output, "write", write)


@pytest.mark.parametrize("fallback", ["O_TMPFILE", "mkstemp", "copy"])
def test_a_full_disk_leaves_the_old_file_and_nothing_else(root: Path, out_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          fallback: str) -> None:
    if fallback == "mkstemp":
        monkeypatch.delattr(os, "O_TMPFILE")
    if fallback == "copy":  # neither /proc nor AT_EMPTY_PATH can link the unnamed file
        def refuse(fd: int, name: str) -> None:
            raise OSError(errno.EXDEV, "refused")
        monkeypatch.setattr(outputs, "_linkat", refuse)
    image, sbom = out_dir / "image.tar", out_dir / "sbom.json"
    image.write_bytes(b"old image")
    sbom.write_bytes(b"old sbom")
    with monkeypatch.context() as patch:
        _fail_after(patch, 1000)
        with pytest.raises(OutputProblem, match=r"image.tar: cannot write \(No space left"):
            pack(*options(root, image, sbom=str(sbom)))
    assert image.read_bytes() == b"old image" and sbom.read_bytes() == b"old sbom"
    assert listing(out_dir) == ["image.tar", "sbom.json"]

    with monkeypatch.context() as patch:  # the image fits, the SBOM does not
        real = outputs.write_file

        def small_disk(given: str, data: bytes) -> int:
            _fail_after(patch, 10)
            return real(given, data)

        patch.setattr("slimmer.assemble.provenance.write_file", small_disk)
        with pytest.raises(OutputProblem, match=r"sbom.json: cannot write \(No space left"):
            pack(*options(root, image, sbom=str(sbom)))
    assert sbom.read_bytes() == b"old sbom"
    assert listing(out_dir) == ["image.tar", "sbom.json"]

    pack(*options(root, image, sbom=str(sbom)))  # and on a good day, by the same path
    assert tarfile.is_tarfile(image) and sbom.read_bytes().startswith(b"{")
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
    assert listing(out_dir) == ["image.tar", "sbom.json"]


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "tiny"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                            str(where)]).returncode != 0:
        pytest.skip("needs root to mount a tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_real_full_disk(tiny_fs: Path) -> None:
    image, sbom = tiny_fs / "image.tar", tiny_fs / "sbom.json"
    image.write_bytes(b"old image")
    error_line(slimmer("pack", "/usr/bin/jq", "-o", str(image)),
               str(image), "No space left on device")
    assert image.read_bytes() == b"old image"
    assert listing(tiny_fs) == ["image.tar"]
    sbom.write_bytes(b"old sbom")
    filler = tiny_fs / "filler"
    with open(filler, "wb") as fh, pytest.raises(OSError):
        fh.write(b"x" * (1 << 20))  # the rest of the 64 KiB
    sink = tiny_fs.parent / "null"  # not /dev/null: a broken writer would replace it
    os.mknod(sink, 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    error_line(slimmer("pack", "/usr/bin/true", "-o", str(sink), "--sbom", str(sbom)),
               str(sbom), "No space left on device")
    assert sbom.read_bytes() == b"old sbom"
    assert listing(tiny_fs) == ["filler", "image.tar", "sbom.json"]


def _big_add(tmp_path: Path) -> Path:
    big = tmp_path / "big"
    with open(big, "wb") as fh:  # incompressible enough to take a while
        for i in range(48):
            fh.write(os.urandom(1 << 20) if i % 8 == 0 else bytes([i]) * (1 << 20))
    return big


def _wait_for_writing(process: subprocess.Popen[str], directory: Path) -> None:
    """Until the process holds a file open in `directory` (the blob or the archive)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            fds = os.listdir(f"/proc/{process.pid}/fd")
            links = [os.readlink(f"/proc/{process.pid}/fd/{fd}") for fd in fds]
        except OSError:
            links = []
        if any(link.startswith(str(directory) + "/") for link in links):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError("the process never started writing")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_run_leaves_nothing_behind(tmp_path: Path, out_dir: Path,
                                            how: signal.Signals) -> None:
    big = _big_add(tmp_path)
    image = out_dir / "image.tar"
    image.write_bytes(b"old image")
    process = subprocess.Popen(command("pack", "/usr/bin/true", "--add", f"{big}:/big", "-o",
                                       str(image)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_writing(process, out_dir)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=60)
    assert listing(out_dir) == ["image.tar"]
    assert image.read_bytes() == b"old image"
    if how == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM
        assert stderr == "error: terminated\n"


# ---- what is at the output path ---------------------------------------------------------------


@needs_root
def test_a_character_device_stays_a_device(tmp_path: Path) -> None:
    null = os.stat("/dev/null").st_rdev
    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("image", "sbom", "lock"):
        os.mknod(devices / name, 0o666 | stat.S_IFCHR, null)
    done = slimmer("pack", "/usr/bin/jq", "-o", str(devices / "image"), "--sbom",
                   str(devices / "sbom"), "--lock", str(devices / "lock"),
                   "--check-reproducible")
    assert done.returncode == 0, done.stderr
    assert "reproducible" in done.stdout
    for name in ("image", "sbom", "lock"):
        found = os.lstat(devices / name)
        assert stat.S_ISCHR(found.st_mode) and found.st_rdev == null, name
    assert listing(devices) == ["image", "lock", "sbom"]


def test_a_fifo_gets_the_bytes(root: Path, out_dir: Path, tmp_path: Path) -> None:
    fifo = out_dir / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = pack(*options(root, fifo))
    reader.join(timeout=30)
    expected = reference_bytes(root, tmp_path)
    assert got == [expected] and result.image.archive_size == len(expected)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert listing(out_dir) == ["pipe"]


def test_stdout_gets_the_archive_and_the_summary_goes_to_stderr(root: Path,
                                                                tmp_path: Path) -> None:
    # /dev/stdout's own target: a broken writer cannot replace anything in /proc
    done = run_process_bytes("pack", "/bin/hello", "--root", str(root), "--compress", "none",
                             "-o", "/proc/self/fd/1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == reference_bytes(root, tmp_path)
    assert done.stderr.startswith(b"wrote /proc/self/fd/1")
    error_line(run_process("pack", "/bin/hello", "--root", str(root), "-o", "/proc/self/fd/1",
                           "--push", "localhost:5000/x:1", "--insecure"),
               "--push reads the archive back")


def test_a_symlink_is_followed_to_the_file_it_names(root: Path, out_dir: Path,
                                                    tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "image.tar").write_bytes(b"old")
    (out_dir / "link.tar").symlink_to(elsewhere / "image.tar")
    pack(*options(root, out_dir / "link.tar"))
    assert os.readlink(out_dir / "link.tar") == str(elsewhere / "image.tar")
    assert (elsewhere / "image.tar").read_bytes() == reference_bytes(root, tmp_path)
    assert listing(elsewhere) == ["image.tar"] and listing(out_dir) == ["link.tar"]


def test_a_dangling_symlink_and_a_directory_are_refused(root: Path, out_dir: Path) -> None:
    (out_dir / "dangling").symlink_to(out_dir / "nowhere")
    (out_dir / "directory").mkdir()
    (out_dir / "to-directory").symlink_to(out_dir / "directory")
    cases = {"dangling": "which does not exist", "directory": "is a directory",
             "to-directory": "is a directory"}
    for name, words in cases.items():
        error_line(slimmer("pack", "/bin/hello", "--root", str(root), "-o",
                           str(out_dir / name)), name, words)
        error_line(slimmer("pack", "/bin/hello", "--root", str(root), "-o",
                           str(out_dir / "image.tar"), "--sbom", str(out_dir / name)),
                   name, words)
    assert listing(out_dir) == ["dangling", "directory", "to-directory"]
    assert listing(out_dir / "directory") == []


@needs_root
def test_a_link_planted_in_a_shared_directory_is_not_followed(root: Path,
                                                              tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = shared / "image.tar"
    planted.symlink_to(victim)
    os.lchown(planted, 4242, 4242)
    with pytest.raises(OutputProblem, match="owned by uid 4242 in the shared directory"):
        pack(*options(root, planted))
    assert victim.read_text() == "precious\n"
    os.lchown(planted, 0, 0)  # the user's own link is followed
    pack(*options(root, planted))
    assert tarfile.is_tarfile(victim)


# ---- outputs over inputs ----------------------------------------------------------------------


def test_an_output_over_an_input_is_refused(root: Path, out_dir: Path, tmp_path: Path) -> None:
    program = root / "bin/hello"
    original = program.read_bytes()
    added = tmp_path / "added"
    added.mkdir()
    (added / "data").write_text("data\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "r"\n')
    lock = out_dir / "lock.txt"
    pack(*options(root, out_dir / "first.tar", lock=str(lock)))
    locked = lock.read_bytes()
    os.link(lock, out_dir / "hardlink")
    image = str(out_dir / "image.tar")
    cases: list[tuple[dict[str, object], tuple[str, ...]]] = [
        ({"output": str(program)}, ("-o would overwrite the program", str(program))),
        ({"output": str(root / "bin/../bin/hello")}, ("the program",)),
        ({"sbom": image}, ("--sbom names the same file as -o",)),
        ({"lock": str(program)}, ("--lock would overwrite the program",)),
        ({"lock": str(out_dir / "sbom"), "sbom": str(out_dir / "sbom")}, ("--sbom", "--lock")),
        ({"add": ((str(added / "data"), "/data"),), "sbom": str(added / "data")},
         ("--sbom would overwrite the --add source",)),
        ({"add": ((str(added), "/added"),), "output": str(added / "data")},
         ("-o would overwrite the file read into the image", str(added / "data"))),
        ({"locked": str(lock), "lock": str(out_dir / "hardlink")},
         ("--lock would overwrite the --locked file",)),
    ]
    for extra, words in cases:
        given = {"output": image, **extra}
        with pytest.raises(OutputProblem) as caught:
            pack(*options(root, **given))  # type: ignore[arg-type]
        for word in words:
            assert word in caught.value.message, (word, caught.value.message)
    assert program.read_bytes() == original and lock.read_bytes() == locked
    assert (added / "data").read_text() == "data\n"
    assert listing(out_dir) == ["first.tar", "hardlink", "lock.txt"]

    done = slimmer("pack", "./hello", "-o", "./hello", cwd=root / "bin")  # on the host root
    error_line(done, "would overwrite the program")
    assert program.read_bytes() == original
    done = slimmer("pack", "/bin/hello", "--root", str(root), "-o", image, "--recipe",
                   str(recipe), "--lock", str(recipe))
    error_line(done, "--lock would overwrite the recipe", str(recipe))
    assert recipe.read_text() == 'name = "r"\n'


def test_slim_and_index_refuse_their_input_as_output(root: Path, out_dir: Path) -> None:
    image = out_dir / "image.tar"
    pack(*options(root, image))
    before = image.read_bytes()
    (out_dir / "link.tar").symlink_to(image)
    for output in (image, out_dir / "link.tar"):
        with pytest.raises(OutputProblem, match="would overwrite the input image"):
            slim(str(image), *options(root, output))
    with pytest.raises(OutputProblem, match="--sbom would overwrite the input image"):
        slim(str(image), *options(root, out_dir / "x.tar", sbom=str(image)))
    with pytest.raises(OutputProblem, match="-o would overwrite the input"):
        write_index([str(image)], str(out_dir / "link.tar"), parse_reference("x:1"))
    error_line(slimmer("slim", str(image), "-o", str(image)), "input image")
    assert image.read_bytes() == before
    assert listing(out_dir) == ["image.tar", "link.tar"]


# ---- names printed -------------------------------------------------------------------------


EVIL = "/a\nerror: fake\x1b[31m\u202e\udcff"


def test_names_are_quoted_when_printed() -> None:
    assert printable("/usr/lib/libc.so.6 ok") == "/usr/lib/libc.so.6 ok"
    assert printable(EVIL) == "/a\\nerror: fake\\x1b[31m\\u202e\\udcff"
    tree = FileTree()
    tree.add(EVIL, File(0o644, 1, data=b"x"), f"needed by {EVIL}")
    for line in format_inventory(inventory(tree)) + format_why([Step(EVIL, EVIL, (), EVIL)]):
        assert line.isprintable(), line


def test_inspect_and_diff_print_one_line_per_name(root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "x\nerror: fake\x1b[2J").write_text("x")
    plain, evil = tmp_path / "plain.tar", tmp_path / "evil.tar"
    pack(*options(root, plain))
    pack(*options(root, evil, add=((str(data), "/data"),)))
    for done in (slimmer("inspect", str(evil)), slimmer("diff", str(plain), str(evil))):
        assert not any(line.startswith("error") for line in done.stdout.splitlines()), done
        assert "\x1b" not in done.stdout and "x\\nerror: fake\\x1b[2J" in done.stdout
