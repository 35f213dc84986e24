"""`slimmer push` against a real registry (Debian's docker-registry, distribution 2.8) on
127.0.0.1: without auth, with htpasswd, with the Bearer token flow; pulled back with skopeo and
a private Docker daemon and compared byte for byte with the archive; mounts; uploads cut off
half-way by a proxy and retried; bad inputs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from slimmer.registry.client import ClientOptions
from slimmer.registry.layout import BadLayout
from slimmer.registry.push import PushOptions, PushResult, push
from tests.support.archives import tiny_static_elf
from tests.support.cli import error_line, run_process
from tests.support.engines import Docker
from tests.support.host import need_tool
from tests.support.registries import (
    PASSWORD,
    SERVICE,
    USER,
    Proxy,
    Registry,
    TokenService,
    docker_config,
    dropping_proxy,
    free_port,
    htpasswd_file,
    run_registry,
    token_registry,
)

pytestmark = pytest.mark.e2e
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


# ---- images and tools ------------------------------------------------------------------


@dataclass(frozen=True)
class Packed:
    archive: Path
    message: bytes
    manifest: str  # digest
    config: str
    layer: str


def slimmer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A process of its own: push reads its credentials from the environment (DOCKER_CONFIG,
    HOME), and a push that hangs must not take the session with it."""
    return run_process(*args, env={**os.environ, **(env or {})}, timeout=300)


def pack(tmp_path: Path, name: str = "img", extra_bytes: int = 0) -> Packed:
    """A static program that prints a fresh message, plus `extra_bytes` of random data (which
    gzip cannot shrink), packed into a new archive."""
    message = f"hello from {uuid.uuid4().hex}\n".encode()
    work = tmp_path / f"src-{name}"
    work.mkdir()
    program = work / name
    program.write_bytes(tiny_static_elf(message))
    program.chmod(0o755)
    extra = []
    if extra_bytes:
        (work / "random").write_bytes(os.urandom(extra_bytes))
        extra = ["--add", f"{work / 'random'}:/data/random"]
    archive = tmp_path / f"{name}.tar"
    done = slimmer("pack", str(program), "-o", str(archive), "--tag", f"{name}:1", *extra)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(blobs_of(archive)[index_of(archive)["manifests"][0]["digest"]])
    return Packed(archive, message, index_of(archive)["manifests"][0]["digest"],
                  manifest["config"]["digest"], manifest["layers"][0]["digest"])


def blobs_of(archive: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                data = tar.extractfile(member)
                assert data is not None
                out["sha256:" + member.name.rsplit("/", 1)[1]] = data.read()
    return out


def index_of(archive: Path) -> dict[str, list[dict[str, str]]]:
    with tarfile.open(archive) as tar:
        data = tar.extractfile("index.json")
        assert data is not None
        index: dict[str, list[dict[str, str]]] = json.load(data)
        return index


def skopeo(*args: str) -> bytes:
    done = subprocess.run([need_tool("skopeo"), *args], capture_output=True, timeout=300)
    assert done.returncode == 0, f"skopeo {' '.join(args)}: {done.stderr.decode()}"
    return done.stdout


def raw_manifest(reference: str, creds: bool = False) -> bytes:
    """The manifest bytes the registry serves, as skopeo fetches them."""
    auth = ["--creds", f"{USER}:{PASSWORD}"] if creds else []
    return skopeo("inspect", "--raw", "--tls-verify=false", *auth, f"docker://{reference}")


def pulled_blobs(reference: str, directory: Path, creds: bool = False,
                 all_platforms: bool = False) -> dict[str, bytes]:
    """Every blob of `reference`, copied by skopeo into an OCI layout directory."""
    auth = ["--src-creds", f"{USER}:{PASSWORD}"] if creds else []
    every = ["--all"] if all_platforms else []
    skopeo("copy", "--src-tls-verify=false", *auth, *every, f"docker://{reference}",
           f"oci:{directory}:pulled")
    return {"sha256:" + p.name: p.read_bytes() for p in (directory / "blobs/sha256").iterdir()}


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1]


def has_blob(registry: Registry, repository: str, digest: str) -> bool:
    request = urllib.request.Request(
        f"http://{registry.address}/v2/{repository}/blobs/{digest}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return False


# ---- registries ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    directory = tmp_path_factory.mktemp("auth-registry")
    passwords = htpasswd_file(directory / "htpasswd")
    auth = f"  htpasswd:\n    realm: slimmer-test\n    path: {passwords}\n"
    with run_registry(directory / "registry", auth) as running:
        yield running


@pytest.fixture(scope="module")
def token_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry,
                                                                            TokenService]]:
    with token_registry(tmp_path_factory.mktemp("token")) as running:
        yield running


# ---- without authentication ------------------------------------------------------------


def test_push_then_pull_back_byte_identical(registry: Registry, tmp_path: Path) -> None:
    image = pack(tmp_path)
    done = slimmer("push", str(image.archive), f"{registry.address}/plain/app:v1", "--insecure")
    assert done.returncode == 0, done.stderr
    assert last_line(done) == f"{registry.address}/plain/app@{image.manifest}"
    assert "2 blobs (2 uploaded, 0 already there, 0 mounted)" in done.stdout
    ours = blobs_of(image.archive)
    assert raw_manifest(f"{registry.address}/plain/app:v1") == ours[image.manifest]
    pulled = pulled_blobs(f"{registry.address}/plain/app:v1", tmp_path / "pulled")
    assert set(pulled) == {image.manifest, image.config, image.layer}
    for digest, data in pulled.items():
        assert data == ours[digest], digest

    again = slimmer("push", str(image.archive), f"{registry.address}/plain/app:v2",
                    "--insecure")
    assert "2 blobs (0 uploaded, 2 already there, 0 mounted), 0.0 MB sent" in again.stdout
    assert last_line(again) == f"{registry.address}/plain/app@{image.manifest}"


def check_docker_pull(docker: Docker, image: Packed, reference: str, tmp_path: Path,
                      config: Path | None = None, pinned: str = "") -> None:
    """docker pull: the image ID is our config digest, the repo digest our manifest digest
    (or `pinned`, an index's), the layer's content our diff_id, and the program runs."""
    docker.run("pull", reference, config=config)
    try:
        found = json.loads(docker.run("image", "inspect", reference).stdout)[0]
        assert found["Id"] == image.config
        repo_digest = f"{reference.rsplit(':', 1)[0]}@{pinned or image.manifest}"
        assert found["RepoDigests"] == [repo_digest]
        saved = tmp_path / "saved.tar"
        docker.run("save", "-o", str(saved), reference)
        diff_id = json.loads(blobs_of(image.archive)[image.config])["rootfs"]["diff_ids"][0]
        with tarfile.open(saved) as tar:
            entry = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
            layer = tar.extractfile(entry["Layers"][0])
            assert layer is not None
            assert "sha256:" + hashlib.sha256(layer.read()).hexdigest() == diff_id
        assert docker.container(reference) == image.message
    finally:
        docker.run("rmi", reference, check=False)


def test_docker_pulls_what_was_pushed(registry: Registry, docker: Docker,
                                      tmp_path: Path) -> None:
    image = pack(tmp_path)
    reference = f"{registry.address}/dockerpull/app:v1"
    done = slimmer("push", str(image.archive), reference, "--insecure")
    assert done.returncode == 0, done.stderr
    check_docker_pull(docker, image, reference, tmp_path)


def mounts_in_log(registry: Registry, repository: str, source: str) -> list[str]:
    return [line for line in registry.log().splitlines()
            if f'"POST /v2/{repository}/blobs/uploads/?mount=' in line
            and f"from={source.replace('/', '%2F')} HTTP" in line and '" 201 ' in line]


def uploads_in_log(registry: Registry, repository: str) -> list[str]:
    return [line for line in registry.log().splitlines()
            if f'"PUT /v2/{repository}/blobs/uploads/' in line
            or f'"PATCH /v2/{repository}/blobs/uploads/' in line]


def test_second_repository_mounts_the_blobs(registry: Registry, tmp_path: Path) -> None:
    image = pack(tmp_path)
    first = slimmer("push", str(image.archive), f"{registry.address}/mount/a:1", "--insecure")
    assert first.returncode == 0, first.stderr
    second = slimmer("push", str(image.archive), f"{registry.address}/mount/b:1", "--insecure",
                     "--mount-from", "mount/a")
    assert second.returncode == 0, second.stderr
    assert "2 blobs (0 uploaded, 0 already there, 2 mounted), 0.0 MB sent" in second.stdout
    assert len(mounts_in_log(registry, "mount/b", "mount/a")) == 2
    assert uploads_in_log(registry, "mount/b") == []
    assert raw_manifest(f"{registry.address}/mount/b:1") == blobs_of(image.archive)[
        image.manifest]

    # Several destinations in one run: the later ones mount from the first.
    both = slimmer("push", str(image.archive), f"{registry.address}/mount/c:1",
                   f"{registry.address}/mount/d:1", "--insecure")
    assert both.returncode == 0, both.stderr
    assert "mount/c:1: 2 blobs (2 uploaded" in both.stdout
    assert "mount/d:1: 2 blobs (0 uploaded, 0 already there, 2 mounted)" in both.stdout
    assert len(mounts_in_log(registry, "mount/d", "mount/c")) == 2


def test_pack_and_slim_push(registry: Registry, tmp_path: Path) -> None:
    program = tmp_path / "hi"
    program.write_bytes(tiny_static_elf(f"{uuid.uuid4()}\n".encode()))
    program.chmod(0o755)
    reference = f"{registry.address}/packed/hi:1"
    done = slimmer("pack", str(program), "-o", str(tmp_path / "hi.tar"), "--push", reference,
                   "--insecure")
    assert done.returncode == 0, done.stderr
    manifest = next(line.split()[1] for line in done.stdout.splitlines()
                    if line.startswith("manifest "))
    assert last_line(done) == f"{registry.address}/packed/hi@{manifest}"
    assert raw_manifest(reference) == blobs_of(tmp_path / "hi.tar")[manifest]

    # slim: with a JSON report on stdout, what was pushed is said on stderr.
    slim_ref = f"{registry.address}/packed/hi-slim:1"
    done = slimmer("slim", str(tmp_path / "hi.tar"), "-o", str(tmp_path / "slim.tar"),
                   "--push", slim_ref, "--insecure", "--report", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["program"].endswith("/hi")
    slim_manifest = index_of(tmp_path / "slim.tar")["manifests"][0]["digest"]
    assert done.stderr.strip().splitlines()[-1] == \
        f"{registry.address}/packed/hi-slim@{slim_manifest}"
    assert raw_manifest(slim_ref) == blobs_of(tmp_path / "slim.tar")[slim_manifest]


# ---- indexes ---------------------------------------------------------------------------


def write_layout(path: Path, blobs: dict[str, bytes], index: dict[str, object]) -> Path:
    with tarfile.open(path, "w") as tar:
        files = {f"blobs/sha256/{d[7:]}": b for d, b in sorted(blobs.items())}
        files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
        files["index.json"] = json.dumps(index).encode()
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def platform_entries(images: list[Packed]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for image, arch in zip(images, ("amd64", "arm64"), strict=True):
        data = blobs_of(image.archive)[image.manifest]
        out.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": image.manifest, "size": len(data),
                    "platform": {"architecture": arch, "os": "linux"}})
    return out


def test_multi_platform_index(registry: Registry, docker: Docker, tmp_path: Path) -> None:
    images = [pack(tmp_path, "amd"), pack(tmp_path, "arm")]
    blobs = {**blobs_of(images[0].archive), **blobs_of(images[1].archive)}
    inner = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": platform_entries(images)}, indent=1).encode()
    inner_digest = "sha256:" + hashlib.sha256(inner).hexdigest()
    blobs[inner_digest] = inner
    archive = write_layout(tmp_path / "multi.tar", blobs, {
        "schemaVersion": 2, "manifests": [{"mediaType": OCI_INDEX, "digest": inner_digest,
                                           "size": len(inner)}]})
    reference = f"{registry.address}/multi/app:1"
    done = slimmer("push", str(archive), reference, "--insecure")
    assert done.returncode == 0, done.stderr
    assert last_line(done) == f"{registry.address}/multi/app@{inner_digest}"
    assert "4 blobs (4 uploaded" in done.stdout and "3 manifests" in done.stdout
    assert raw_manifest(reference) == inner
    for image in images:
        assert raw_manifest(f"{registry.address}/multi/app@{image.manifest}") == \
            blobs[image.manifest]
    pulled = pulled_blobs(reference, tmp_path / "pulled", all_platforms=True)
    assert set(pulled) == set(blobs)
    assert all(pulled[d] == blobs[d] for d in pulled)
    # Docker picks the linux/amd64 image; its repo digest is the index's.
    check_docker_pull(docker, images[0], reference, tmp_path, pinned=inner_digest)


def test_index_push_sends_what_index_wrote(registry: Registry, tmp_path: Path) -> None:
    """`slimmer index ... --push`: the registry serves the image index `index` wrote, and
    each platform's manifest under its digest."""
    amd = pack(tmp_path, "amd")
    source = tmp_path / "p32.c"
    source.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-m32", "-static", "-o", str(tmp_path / "p32"), str(source)],
                   check=True)
    done = slimmer("pack", str(tmp_path / "p32"), "-o", str(tmp_path / "p32.tar"))
    assert done.returncode == 0, done.stderr
    reference = f"{registry.address}/idx/app:1"
    out = tmp_path / "multi.tar"
    done = slimmer("index", str(amd.archive), str(tmp_path / "p32.tar"), "-o", str(out),
                   "--tag", "idx/app:1", "--push", reference, "--insecure")
    assert done.returncode == 0, done.stderr
    top = index_of(out)["manifests"][0]["digest"]
    blobs = blobs_of(out)
    assert last_line(done) == f"{registry.address}/idx/app@{top}"
    assert raw_manifest(reference) == blobs[top]
    children = json.loads(blobs[top])["manifests"]
    assert {c["platform"]["architecture"] for c in children} == {"amd64", "386"}
    for child in children:
        assert raw_manifest(f"{registry.address}/idx/app@{child['digest']}") == \
            blobs[child["digest"]]


def test_layout_listing_platforms_pushes_its_index_json(registry: Registry,
                                                        tmp_path: Path) -> None:
    images = [pack(tmp_path, "one"), pack(tmp_path, "two")]
    blobs = {**blobs_of(images[0].archive), **blobs_of(images[1].archive)}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platform_entries(images)}
    archive = write_layout(tmp_path / "flat.tar", blobs, index)
    reference = f"{registry.address}/flat/app:1"
    done = slimmer("push", str(archive), reference, "--insecure")
    assert done.returncode == 0, done.stderr
    expected = json.dumps(index).encode()
    assert raw_manifest(reference) == expected
    assert last_line(done).endswith("@sha256:" + hashlib.sha256(expected).hexdigest())


# ---- authentication --------------------------------------------------------------------


def test_htpasswd_registry(auth_registry: Registry, docker: Docker, tmp_path: Path) -> None:
    image = pack(tmp_path)
    reference = f"{auth_registry.address}/secret/app:1"
    config = docker_config(tmp_path / "docker", auth_registry.address)
    done = slimmer("push", str(image.archive), reference, "--insecure",
                   env={"DOCKER_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert last_line(done) == f"{auth_registry.address}/secret/app@{image.manifest}"
    assert raw_manifest(reference, creds=True) == blobs_of(image.archive)[image.manifest]
    check_docker_pull(docker, image, reference, tmp_path, config=config)

    wrong = docker_config(tmp_path / "wrong", auth_registry.address, password="nope")
    line = error_line(slimmer("push", str(image.archive), reference, "--insecure",
                              env={"DOCKER_CONFIG": str(wrong)}))
    assert line == (f"error: {auth_registry.address}: authentication failed for user {USER}: "
                    "401 Unauthorized (UNAUTHORIZED: authentication required) at /v2/")

    (tmp_path / "empty").mkdir()
    line = error_line(slimmer("push", str(image.archive), reference, "--insecure",
                              env={"DOCKER_CONFIG": str(tmp_path / "empty")}))
    assert line.startswith(f"error: {auth_registry.address}: the registry needs credentials "
                           "(401 Unauthorized)")


def test_bearer_token_flow(token_auth: tuple[Registry, TokenService], tmp_path: Path) -> None:
    registry, tokens = token_auth
    image = pack(tmp_path)
    config = docker_config(tmp_path / "docker", registry.address)
    env = {"DOCKER_CONFIG": str(config)}
    # The token service listens on another port: another origin, which gets the credentials
    # only when the user says so.
    line = error_line(slimmer("push", str(image.archive), f"{registry.address}/tok/a:1",
                              "--insecure", env=env))
    assert line == (f"error: {registry.address}: token service "
                    f"http://127.0.0.1:{tokens.port}/token refused: 401 Unauthorized; the token "
                    "service is on another origin than the registry: credentials go to it only "
                    "with --send-credentials-to-realm")
    assert tokens.seen and not any(seen["ok"] for seen in tokens.seen)
    tokens.seen.clear()
    done = slimmer("push", str(image.archive), f"{registry.address}/tok/a:1", "--insecure",
                   "--send-credentials-to-realm", env=env)
    assert done.returncode == 0, done.stderr
    assert last_line(done) == f"{registry.address}/tok/a@{image.manifest}"
    asked = [s for seen in tokens.seen for s in seen["scopes"]]  # type: ignore[attr-defined]
    assert "repository:tok/a:pull,push" in asked
    assert all(seen["ok"] and seen["service"] == SERVICE for seen in tokens.seen)
    assert raw_manifest(f"{registry.address}/tok/a:1", creds=True) == \
        blobs_of(image.archive)[image.manifest]

    # A mount needs pull on the source too: the token asked for says so.
    mounted = slimmer("push", str(image.archive), f"{registry.address}/tok/b:1", "--insecure",
                      "--mount-from", "tok/a", "--send-credentials-to-realm", env=env)
    assert mounted.returncode == 0, mounted.stderr
    assert "2 mounted" in mounted.stdout
    asked = [s for seen in tokens.seen for s in seen["scopes"]]  # type: ignore[attr-defined]
    assert "repository:tok/a:pull" in asked
    assert len(mounts_in_log(registry, "tok/b", "tok/a")) == 2

    wrong = docker_config(tmp_path / "wrong", registry.address, password="nope")
    line = error_line(slimmer("push", str(image.archive), f"{registry.address}/tok/a:1",
                              "--insecure", "--send-credentials-to-realm",
                              env={"DOCKER_CONFIG": str(wrong)}))
    assert line.startswith(f"error: {registry.address}: token service "
                           f"http://127.0.0.1:{tokens.port}/token refused for user {USER}: "
                           "401 Unauthorized")


# ---- interrupted uploads ---------------------------------------------------------------


def is_blob_upload(method: str, path: str, length: int) -> bool:
    return method in ("PATCH", "PUT") and "/blobs/uploads/" in path and length > 0


CHUNK = 64 << 10


def chunked_push(image: Packed, proxy: Proxy, repository: str) -> PushResult:
    results = push(str(image.archive), [f"127.0.0.1:{proxy.port}/{repository}:1"],
                   PushOptions(ClientOptions(insecure=True, backoff=0.05), chunk_size=CHUNK))
    assert results[0].retries == 1 and results[0].digest == image.manifest
    return results[0]


def check_pulled(registry: Registry, image: Packed, repository: str, tmp_path: Path) -> None:
    pulled = pulled_blobs(f"{registry.address}/{repository}:1", tmp_path / "pulled")
    ours = blobs_of(image.archive)
    assert set(pulled) == {image.manifest, image.config, image.layer}
    assert all(pulled[d] == ours[d] for d in pulled)


def test_dropped_chunk_resumes_where_the_registry_stands(registry: Registry,
                                                         tmp_path: Path) -> None:
    """The third PATCH is lost before the registry sees it: the upload's status (GET, Range)
    says two chunks arrived, and the upload goes on from there."""
    image = pack(tmp_path, extra_bytes=400_000)
    patches: list[str] = []

    def third_patch(method: str, path: str, length: int) -> bool:
        if method == "PATCH":
            patches.append(path)
        return len(patches) == 3

    with dropping_proxy(registry, third_patch, forward_half=False) as proxy:
        chunked_push(image, proxy, "cut/resume")
    upload = proxy.dropped[0].split()[1]
    after = proxy.after_cut()
    assert after[:2] == [f"GET {upload}", f"PATCH {upload}"]
    layer_size = len(blobs_of(image.archive)[image.layer])
    sent = [r for r in proxy.requests if r.startswith("PATCH ")]
    assert len(sent) == -(-layer_size // CHUNK) + 1  # every chunk once, the lost one twice
    assert proxy.requests.count("POST /v2/cut/resume/blobs/uploads/") == 2  # config, layer
    check_pulled(registry, image, "cut/resume", tmp_path)


def test_chunk_cut_half_way_starts_the_upload_again(registry: Registry,
                                                    tmp_path: Path) -> None:
    """Half of the first PATCH reaches the registry, which then no longer accepts the
    upload at the offset it handed out: its status query fails and a new upload begins."""
    image = pack(tmp_path, extra_bytes=400_000)
    with dropping_proxy(registry, lambda m, p, n: m == "PATCH" and n > 0) as proxy:
        chunked_push(image, proxy, "cut/chunks")
    assert proxy.dropped[0].startswith("PATCH /v2/cut/chunks/blobs/uploads/")
    after = proxy.after_cut()
    # The upload's status was asked for (GET on its location) before going on.
    assert after[0] == "GET " + proxy.dropped[0].split()[1], after[:3]
    assert after[1] == "POST /v2/cut/chunks/blobs/uploads/", after[:3]
    check_pulled(registry, image, "cut/chunks", tmp_path)


def test_dropped_put_is_retried(registry: Registry, tmp_path: Path) -> None:
    image = pack(tmp_path, extra_bytes=100_000)
    with dropping_proxy(registry, lambda m, p, n: is_blob_upload(m, p, n) and n > 50_000) \
            as proxy:
        done = slimmer("push", str(image.archive), f"127.0.0.1:{proxy.port}/cut/put:1",
                       "--insecure")
    assert done.returncode == 0, done.stderr
    assert "2 uploaded" in done.stdout and "1 retried" in done.stdout
    assert proxy.dropped[0].startswith("PUT /v2/cut/put/blobs/uploads/")
    puts = [r for r in proxy.requests if r.startswith("PUT /v2/cut/put/blobs/uploads/")]
    posts = [r for r in proxy.requests if r == "POST /v2/cut/put/blobs/uploads/"]
    assert (len(puts), len(posts)) == (3, 3)  # the cut blob's upload began again
    ours = blobs_of(image.archive)
    pulled = pulled_blobs(f"{registry.address}/cut/put:1", tmp_path / "pulled")
    assert all(pulled[d] == ours[d] for d in pulled) and len(pulled) == 3


@pytest.mark.parametrize("status", [503, 429])
def test_busy_registry_is_tried_again(registry: Registry, tmp_path: Path, status: int) -> None:
    image = pack(tmp_path)
    with dropping_proxy(registry, lambda m, p, n: m == "PUT" and "/manifests/" in p,
                        status=status) as proxy:
        done = slimmer("push", str(image.archive), f"127.0.0.1:{proxy.port}/busy/{status}:1",
                       "--insecure")
    assert done.returncode == 0, done.stderr
    assert "1 retried" in done.stdout
    assert proxy.requests.count(f"PUT /v2/busy/{status}/manifests/1") == 2
    assert raw_manifest(f"{registry.address}/busy/{status}:1") == \
        blobs_of(image.archive)[image.manifest]


# ---- bad inputs ------------------------------------------------------------------------


def test_unreachable_registry(tmp_path: Path) -> None:
    image = pack(tmp_path)
    port = free_port()
    line = error_line(slimmer("push", str(image.archive), f"127.0.0.1:{port}/a:1",
                              "--insecure"))
    assert line == (f"error: 127.0.0.1:{port}: GET /v2/: cannot connect (connection refused) "
                    "(gave up after 4 tries)")


def test_plain_http_needs_insecure(registry: Registry, tmp_path: Path) -> None:
    image = pack(tmp_path)
    line = error_line(slimmer("push", str(image.archive), f"{registry.address}/a:1"))
    assert line.startswith(f"error: {registry.address}: GET /v2/: TLS failed (")
    assert line.endswith("; a plain-HTTP registry on loopback needs --insecure")


def test_insecure_for_a_remote_host_is_refused(tmp_path: Path) -> None:
    image = pack(tmp_path)
    line = error_line(slimmer("push", str(image.archive), "registry.example.com/a:1",
                              "--insecure"))
    assert line == ("error: registry.example.com: --insecure (plain HTTP) is allowed only for "
                    "a loopback registry (127.0.0.0/8, ::1, localhost)")
    program = tmp_path / "src-img" / "img"
    out = tmp_path / "never.tar"
    line = error_line(slimmer("pack", str(program), "-o", str(out), "--push",
                              "registry.example.com/a:1", "--insecure"))
    assert "only for a loopback registry" in line and not out.exists()


def test_not_an_image_archive(registry: Registry, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    line = error_line(slimmer("push", str(junk), f"{registry.address}/a:1", "--insecure"))
    assert line.startswith(f"error: {junk}: not an image archive")
    line = error_line(slimmer("push", str(tmp_path / "none.tar"), f"{registry.address}/a:1",
                              "--insecure"))
    assert line == f"error: {tmp_path / 'none.tar'}: no such file or directory"


def tampered(image: Packed, out: Path) -> Path:
    """A copy of the archive whose layer has one byte changed (same size, same names)."""
    data = bytearray(image.archive.read_bytes())
    with tarfile.open(image.archive) as tar:
        member = tar.getmember(f"blobs/sha256/{image.layer[7:]}")
        data[member.offset_data + member.size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("chunk", [16 << 20, 32 << 10], ids=["monolithic", "chunked"])
def test_a_blob_that_does_not_match_its_digest_is_not_pushed(registry: Registry,
                                                             tmp_path: Path, chunk: int) -> None:
    image = pack(tmp_path, extra_bytes=100_000)
    bad = tampered(image, tmp_path / "bad.tar")
    repository = f"tampered/{'mono' if chunk > 1 << 20 else 'chunks'}"
    with pytest.raises(BadLayout, match=rf"bad.tar: blob {image.layer}: its content "
                                        r"\(\d+ bytes\) hashes to sha256:[0-9a-f]{64}: not "
                                        r"pushed"):
        push(str(bad), [f"{registry.address}/{repository}:1"],
             PushOptions(ClientOptions(insecure=True), chunk_size=chunk))
    assert not has_blob(registry, repository, image.layer)
    done = slimmer("push", str(bad), f"{registry.address}/{repository}:1", "--insecure")
    assert f"blob {image.layer}: its content" in error_line(done)
