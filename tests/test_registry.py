"""Push's pieces that need no server: references, WWW-Authenticate, config.json, layouts."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from slimmer.errors import SlimmerError
from slimmer.image_in import ArchiveFiles
from slimmer.layout import BadLayout, Layout, select
from slimmer.oci import BadReference
from slimmer.regauth import (
    AuthProblem,
    Credentials,
    DockerConfig,
    credentials_for,
    parse_challenge,
    read_docker_config,
)
from slimmer.registry import (
    Client,
    ClientOptions,
    RegistryError,
    checked_destination,
    is_loopback,
    parse_destination,
)

# ---- references ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "registry", "repository", "tag"), [
    ("127.0.0.1:5000/app:1", "127.0.0.1:5000", "app", "1"),
    ("localhost/team/app", "localhost", "team/app", "latest"),
    ("reg.example.com/a/b/c:v1.2-x", "reg.example.com", "a/b/c", "v1.2-x"),
    ("[::1]:5000/app:2", "[::1]:5000", "app", "2"),
    ("app:3", "docker.io", "library/app", "3"),
    ("me/app", "docker.io", "me/app", "latest"),
])
def test_destination(text: str, registry: str, repository: str, tag: str) -> None:
    dest = parse_destination(text)
    assert (dest.registry, dest.repository, dest.tag) == (registry, repository, tag)


def test_destination_parts() -> None:
    assert parse_destination("[::1]:5000/app").host == "::1"
    assert parse_destination("127.0.0.1:5000/app").host == "127.0.0.1"
    assert parse_destination("localhost/app").endpoint == "localhost"
    assert parse_destination("app").endpoint == "registry-1.docker.io"
    assert str(parse_destination("r.io/a:b")) == "r.io/a:b"
    assert parse_destination("r.io/a:b").pinned("sha256:00") == "r.io/a@sha256:00"


@pytest.mark.parametrize("text", ["127.0.0.1:5000/App:1", "r.io/a@sha256:" + "0" * 64,
                                  "r.io/a:b:c", "r.io/a:-bad", "r.io/"])
def test_bad_destination(text: str) -> None:
    with pytest.raises(BadReference):
        parse_destination(text)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
    ("128.0.0.1", False), ("10.0.0.1", False), ("example.com", False), ("localhost.evil", False),
])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_insecure_refused_for_a_remote_host() -> None:
    with pytest.raises(RegistryError, match=r"reg.example.com: --insecure .* only for a "
                                            r"loopback"):
        checked_destination("reg.example.com/app:1", insecure=True)
    with pytest.raises(RegistryError, match="only for a loopback"):
        Client(parse_destination("10.1.2.3:5000/a"), ClientOptions(insecure=True))
    assert checked_destination("127.0.0.1:1/app", insecure=True).host == "127.0.0.1"
    assert Client(parse_destination("[::1]:5000/a"), ClientOptions(insecure=True)).base == \
        "http://[::1]:5000"
    assert Client(parse_destination("r.io/a"), ClientOptions()).base == "https://r.io"
    assert Client(parse_destination("a"), ClientOptions()).base == \
        "https://registry-1.docker.io"


# ---- WWW-Authenticate ------------------------------------------------------------------


def test_bearer_challenge() -> None:
    c = parse_challenge('Bearer realm="https://auth.example.com/token",service="registry.'
                        'example.com",scope="repository:a/b:pull,push repository:c:pull"')
    assert c.scheme == "bearer"
    assert c.params["realm"] == "https://auth.example.com/token"
    assert c.params["service"] == "registry.example.com"
    assert c.scopes == ("repository:a/b:pull,push", "repository:c:pull")


def test_basic_challenge_and_odd_spacing() -> None:
    c = parse_challenge('Basic realm="Registry \\"realm\\""')
    assert (c.scheme, c.params) == ("basic", {"realm": 'Registry "realm"'})
    c = parse_challenge('bearer  Realm = "http://127.0.0.1:1/t" , error=insufficient_scope')
    assert c.params == {"realm": "http://127.0.0.1:1/t", "error": "insufficient_scope"}
    assert c.scopes == ()


def test_unparseable_challenge() -> None:
    with pytest.raises(AuthProblem, match="cannot parse WWW-Authenticate"):
        parse_challenge('Bearer realm="unterminated')


# ---- config.json -----------------------------------------------------------------------


def _config(tmp_path: Path, doc: object) -> DockerConfig:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return read_docker_config(str(path))


def test_auth_field_and_url_keys(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()
    config = _config(tmp_path, {"auths": {"https://127.0.0.1:5000/v1/": {"auth": auth},
                                          "other.io": {"username": "bob", "password": "pw"}}})
    assert credentials_for(config, "127.0.0.1:5000") == Credentials("alice", "pa:ss")
    assert credentials_for(config, "other.io") == Credentials("bob", "pw")
    assert credentials_for(config, "127.0.0.1:5001") is None
    assert Credentials("alice", "pa:ss").basic() == f"Basic {auth}"


def test_docker_hub_key(tmp_path: Path) -> None:
    auth = base64.b64encode(b"me:tok").decode()
    config = _config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": auth}}})
    assert credentials_for(config, "docker.io") == Credentials("me", "tok")


def test_missing_config_is_anonymous(tmp_path: Path) -> None:
    config = read_docker_config(str(tmp_path / "none.json"))
    assert credentials_for(config, "127.0.0.1:5000") is None


def test_credential_helpers_are_refused_clearly(tmp_path: Path) -> None:
    config = _config(tmp_path, {"auths": {"r.io": {}}, "credsStore": "desktop"})
    with pytest.raises(AuthProblem, match="kept by credsStore docker-credential-desktop"):
        credentials_for(config, "r.io")
    config = _config(tmp_path, {"credHelpers": {"r.io": "ecr-login"}})
    with pytest.raises(AuthProblem, match=r"docker-credential-ecr-login .* not supported"):
        credentials_for(config, "r.io")
    assert credentials_for(config, "s.io") is None


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"auths": {"r.io": "x"}}', "not an object of objects"),
])
def test_bad_config(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(AuthProblem, match=message):
        read_docker_config(str(path))


def test_bad_auth_value(tmp_path: Path) -> None:
    config = _config(tmp_path, {"auths": {"r.io": {"auth": "%%%"}}})
    with pytest.raises(AuthProblem, match="not base64"):
        credentials_for(config, "r.io")
    config = _config(tmp_path, {"auths": {"r.io": {"auth": base64.b64encode(b"x").decode()}}})
    with pytest.raises(AuthProblem, match="no ':'"):
        credentials_for(config, "r.io")


# ---- layouts ---------------------------------------------------------------------------


def _desc(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data), **extra}


def _layout_tar(path: Path, blobs: list[bytes], index: dict[str, object]) -> Path:
    files = {"blobs/sha256/" + hashlib.sha256(b).hexdigest(): b for b in blobs}
    files["index.json"] = json.dumps(index).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _image(arch: str) -> tuple[list[bytes], bytes]:
    config = json.dumps({"architecture": arch, "os": "linux"}).encode()
    layer = arch.encode() * 10
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image."
                           "manifest.v1+json",
                           "config": _desc("application/vnd.oci.image.config.v1+json", config),
                           "layers": [_desc("application/vnd.oci.image.layer.v1.tar", layer)]}
                          ).encode()
    return [config, layer, manifest], manifest


INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def test_nested_index_is_walked(tmp_path: Path) -> None:
    amd, m1 = _image("amd64")
    arm, m2 = _image("arm64")
    inner = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        _desc(MANIFEST, m1, platform={"architecture": "amd64", "os": "linux"}),
        _desc(MANIFEST, m2, platform={"architecture": "arm64", "os": "linux"})]}).encode()
    archive = _layout_tar(tmp_path / "multi.tar", [*amd, *arm, inner], {
        "schemaVersion": 2, "manifests": [_desc(INDEX, inner)]})
    with Layout(str(archive)) as layout:
        top = select(layout, None)
    assert top.media_type == INDEX and top.data == inner
    assert [c.data for c in top.children] == [m1, m2]
    assert len(list(top.all_blobs())) == 4


def test_several_platforms_push_index_json_itself(tmp_path: Path) -> None:
    amd, m1 = _image("amd64")
    arm, m2 = _image("arm64")
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        _desc(MANIFEST, m1, platform={"architecture": "amd64", "os": "linux"}),
        _desc(MANIFEST, m2, platform={"architecture": "arm64", "os": "linux"})]}
    archive = _layout_tar(tmp_path / "flat.tar", [*amd, *arm], index)
    with Layout(str(archive)) as layout:
        top = select(layout, None)
        assert top.data == layout.read("index.json")
    assert [c.data for c in top.children] == [m1, m2]


def test_several_images_need_image(tmp_path: Path) -> None:
    one, m1 = _image("amd64")
    two, m2 = _image("amd64-b")
    index = {"schemaVersion": 2, "manifests": [
        _desc(MANIFEST, m1, annotations={"io.containerd.image.name": "docker.io/library/a:1"}),
        _desc(MANIFEST, m2, annotations={"io.containerd.image.name": "docker.io/library/b:2"})]}
    archive = _layout_tar(tmp_path / "two.tar", [*one, *two], index)
    with Layout(str(archive)) as layout:
        with pytest.raises(BadLayout, match=r"holds 2 images .*a:1; .*b:2.*--image"):
            select(layout, None)
        assert select(layout, "b:2").data == m2
        with pytest.raises(BadLayout, match="0 images match c"):
            select(layout, "c")


def test_missing_and_resized_blobs_are_named(tmp_path: Path) -> None:
    blobs, manifest = _image("amd64")
    archive = _layout_tar(tmp_path / "missing.tar", [blobs[0], manifest], {
        "schemaVersion": 2, "manifests": [_desc(MANIFEST, manifest)]})
    layer_digest = "sha256:" + hashlib.sha256(blobs[1]).hexdigest()
    with Layout(str(archive)) as layout, pytest.raises(BadLayout, match=f"blob {layer_digest}"
                                                                         " is missing"):
        select(layout, None)


def test_hostile_digest_is_refused(tmp_path: Path) -> None:
    archive = _layout_tar(tmp_path / "evil.tar", [b"x"], {
        "schemaVersion": 2, "manifests": [{"mediaType": MANIFEST, "digest": "sha256:../../x",
                                           "size": 1}]})
    with Layout(str(archive)) as layout, pytest.raises(BadLayout, match="not a sha256"):
        select(layout, None)


def test_not_a_layout(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"hello" * 300)
    with pytest.raises(SlimmerError, match=r"junk\.tar: not an image archive"), Layout(str(junk)):
        pass
    docker_only = tmp_path / "docker.tar"
    with tarfile.open(docker_only, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    with Layout(str(docker_only)) as layout, pytest.raises(BadLayout, match="docker-archive"):
        select(layout, None)


def test_manifest_with_other_content_than_its_digest_is_refused(tmp_path: Path) -> None:
    blobs, manifest = _image("amd64")
    other = manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":\t2')  # same size
    named = "sha256:" + hashlib.sha256(manifest).hexdigest()
    archive = _layout_tar(tmp_path / "swapped.tar", blobs[:2], {
        "schemaVersion": 2, "manifests": [_desc(MANIFEST, manifest)]})
    with tarfile.open(archive, "a") as tar:  # the manifest's name, another manifest's bytes
        info = tarfile.TarInfo("blobs/sha256/" + named.removeprefix("sha256:"))
        info.size = len(other)
        tar.addfile(info, io.BytesIO(other))
    with Layout(str(archive)) as layout, pytest.raises(
            BadLayout, match=f"manifest {named}: its content has another digest"):
        select(layout, None)


def test_layout_directory_never_reads_through_a_symlink(tmp_path: Path) -> None:
    """A directory layout whose blobs/ is a symlink to elsewhere: nothing is read there."""
    blobs, manifest = _image("amd64")
    elsewhere = tmp_path / "elsewhere" / "sha256"
    elsewhere.mkdir(parents=True)
    for data in [*blobs]:
        (elsewhere / hashlib.sha256(data).hexdigest()).write_bytes(data)
    layout_dir = tmp_path / "layout"
    layout_dir.mkdir()
    (layout_dir / "blobs").symlink_to(tmp_path / "elsewhere")
    (layout_dir / "index.json").write_text(json.dumps(
        {"schemaVersion": 2, "manifests": [_desc(MANIFEST, manifest)]}))
    (layout_dir / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    with Layout(str(layout_dir)) as layout, pytest.raises(BadLayout, match="is missing"):
        select(layout, None)
    with ArchiveFiles(str(layout_dir)) as files, pytest.raises(
            SlimmerError, match="is not a file of the layout"):
        files.read_json("blobs/sha256/" + hashlib.sha256(manifest).hexdigest())
