"""Push's pieces that need no server: references, WWW-Authenticate, config.json, layouts."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import tarfile
import threading
import time
import tracemalloc
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from slimmer.errors import FileProblem, SlimmerError
from slimmer.image.reference import BadReference
from slimmer.image.store import Store
from slimmer.registry.auth import (
    AuthProblem,
    Credentials,
    DockerConfig,
    credentials_for,
    parse_challenge,
    read_docker_config,
)
from slimmer.registry.client import (
    Client,
    ClientOptions,
    RegistryError,
    Response,
    checked_destination,
    is_loopback,
    parse_destination,
)
from slimmer.registry.layout import BadLayout, Layout, select
from slimmer.registry.push import PushOptions, push
from tests.support.archives import desc as _desc
from tests.support.cli import run as slimmer
from tests.support.cli import run_process
from tests.support.registries import self_signed, serve

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
    with Store(str(layout_dir)) as files, pytest.raises(
            SlimmerError, match="is not a file of the layout"):
        files.read_json("blobs/sha256/" + hashlib.sha256(manifest).hexdigest())


# ---- talking to misbehaving registries (in-test servers on 127.0.0.1) ------------------

Script = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@contextmanager
def scripted(script: Script, tls: tuple[Path, Path] | None = None
             ) -> Iterator[tuple[int, list[Seen]]]:
    """A server on 127.0.0.1 answering every request with `script`; yields its port and the
    requests it saw."""
    seen: list[Seen] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen.append(Seen(self.command, self.path, dict(self.headers)))
            script(self)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def log_message(self, *_: object) -> None:
            pass

    with serve(Handler, tls) as port:
        yield port, seen


def reply(h: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"",
          **headers: str) -> None:
    h.send_response(status)
    for name, value in headers.items():
        h.send_header(name.replace("_", "-"), value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def port_of(h: http.server.BaseHTTPRequestHandler) -> int:
    address = h.server.server_address
    assert isinstance(address, tuple)
    return int(address[1])


def within(seconds: float, action: Callable[[], object]) -> BaseException | None:
    """Run `action` in a thread; the exception it raised (None if none). A hang fails."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s"
    return outcome[0]


USER_AUTH = "Basic " + base64.b64encode(b"alice:pw").decode()


def _creds_config(tmp_path: Path, registry: str) -> DockerConfig:
    return _config(tmp_path, {"auths": {registry: {"auth": USER_AUTH[6:]}}})


def _layout(tmp_path: Path) -> Path:
    blobs, manifest = _image("amd64")
    return _layout_tar(tmp_path / "img.tar", blobs, {"schemaVersion": 2,
                                                      "manifests": [_desc(MANIFEST, manifest)]})


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def basic_registry(h: http.server.BaseHTTPRequestHandler) -> None:
    """Basic auth on everything; uploads sent to the Location in the test's query."""
    if h.headers.get("Authorization") != USER_AUTH and not h.path.startswith("/elsewhere"):
        reply(h, 401, WWW_Authenticate='Basic realm="test"')
    elif h.command == "POST":
        reply(h, 202, Location=urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
              ["to"][0].replace("PORT", str(port_of(h))))
    else:
        reply(h, 201 if h.command == "PUT" else 200)


def test_credentials_never_follow_a_location_to_plain_http(
        tls: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTPS, an upload Location on the same host and port but plain HTTP is refused
    before anything is sent (it used to get `Authorization: Basic` in cleartext); one on
    another origin over HTTPS is used without credentials."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    with scripted(basic_registry, tls) as (port, seen):
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(docker_config=_creds_config(tmp_path, f"127.0.0.1:{port}"),
                                      attempts=1))
        assert client.request("GET", "/v2/").status == 200
        assert seen[-1].headers["Authorization"] == USER_AUTH
        plain = client.request("POST", "/v2/a/blobs/uploads/?to=http://127.0.0.1:PORT/up")
        with pytest.raises(RegistryError, match=(
                rf"^127.0.0.1:{port}: PUT /up: plain HTTP \(http://127.0.0.1:{port}/up\?"
                r"digest=x\) after HTTPS: refused \(credentials and data go over HTTPS only")):
            client.exchange("PUT", plain.header("Location") + "?digest=x", body=b"secret")
        other = client.request("POST", "/v2/a/blobs/uploads/?to=https://localhost:PORT/"
                                       "elsewhere")
        assert client.exchange("PUT", other.header("Location"), body=b"x").status == 201
        client.close()
    assert [s.path for s in seen if s.method == "PUT"] == ["/elsewhere"]
    assert "Authorization" not in seen[-1].headers


@pytest.mark.parametrize(("location", "message"), [
    ("http://registry.invalid/up", r"http://registry.invalid/up: --insecure allows plain "
                                   r"HTTP only to a loopback host"),
    ("http://10.0.0.1:PORT/up", r"http://10.0.0.1:\d+/up: --insecure allows plain HTTP only"),
    ("ftp://127.0.0.1:PORT/up", r"ftp://127.0.0.1:\d+/up is not an HTTP\(S\) URL: refused"),
    ("http://[::1/up", r"malformed URL http://\[::1/up"),
    ("http://127.0.0.1:99999/up", r"malformed URL http://127.0.0.1:99999/up"),
])
def test_insecure_goes_only_to_loopback(tmp_path: Path, location: str, message: str) -> None:
    """--insecure never resolves or connects to a name that is not loopback, whatever a
    Location says; other schemes and malformed URLs are one-line errors."""
    with scripted(basic_registry) as (port, seen):
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(insecure=True, attempts=1,
                                      docker_config=_creds_config(tmp_path, f"127.0.0.1:{port}")))
        to = urllib.parse.quote(location, safe="")
        up = client.request("POST", f"/v2/a/blobs/uploads/?to={to}").header("Location")
        error = within(10, lambda: client.exchange("PUT", up, body=b"x"))
        client.close()
    assert isinstance(error, RegistryError), error
    assert re.match(rf"127.0.0.1:{port}: PUT.*{message}", str(error)), str(error)
    assert [s.method for s in seen] == ["POST", "POST"]


def token_registry(realm: str) -> Script:
    def script(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path.startswith("/token"):
            reply(h, 200, b'{"token": "t0k"}', Content_Type="application/json")
        elif h.headers.get("Authorization") == "Bearer t0k":
            reply(h, 200)
        else:
            url = realm.replace("PORT", str(port_of(h)))
            reply(h, 401, WWW_Authenticate=f'Bearer realm="{url}",service="s"')
    return script


@pytest.mark.parametrize("opt_in", [False, True])
def test_token_service_on_another_origin_gets_no_credentials(tmp_path: Path,
                                                             opt_in: bool) -> None:
    """A realm on another port of the same host is another origin: no Basic credentials
    unless --send-credentials-to-realm; a realm on the registry's own origin gets them."""
    with scripted(token_registry("unused")) as (token_port, tokens), \
            scripted(token_registry(f"http://127.0.0.1:{token_port}/token")) as (port, _):
        config = _creds_config(tmp_path, f"127.0.0.1:{port}")
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(insecure=True, docker_config=config,
                                      realm_credentials=opt_in))
        assert client.request("GET", "/v2/", scopes=("repository:a:push",)).status == 200
        client.close()
    asked = [s for s in tokens if s.path.startswith("/token")]
    assert len(asked) == 1
    assert asked[0].headers.get("Authorization") == (USER_AUTH if opt_in else None)
    assert ("account=alice" in asked[0].path) is opt_in
    with scripted(token_registry("http://127.0.0.1:PORT/token")) as (port, seen):
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(insecure=True, docker_config=_creds_config(
                            tmp_path, f"127.0.0.1:{port}")))
        assert client.request("GET", "/v2/").status == 200
        client.close()
    assert [s.headers.get("Authorization") for s in seen if s.path.startswith("/token")] == \
        [USER_AUTH]


def test_token_service_refusal_says_how_to_opt_in(tmp_path: Path) -> None:
    def refusing(h: http.server.BaseHTTPRequestHandler) -> None:
        reply(h, 401, b'{"errors": [{"code": "DENIED", "message": "no"}]}')

    with scripted(refusing) as (token_port, _), \
            scripted(token_registry(f"http://127.0.0.1:{token_port}/token")) as (port, _):
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(insecure=True, docker_config=_creds_config(
                            tmp_path, f"127.0.0.1:{port}")))
        with pytest.raises(AuthProblem, match=r"refused: 401 Unauthorized \(DENIED: no\); the "
                                              r"token service is on another origin .* only "
                                              r"with --send-credentials-to-realm$"):
            client.request("GET", "/v2/")
        client.close()


def slow_loris(h: http.server.BaseHTTPRequestHandler) -> None:
    """A status line, then a header byte every 0.2 s, for ever."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(300):
        h.wfile.write(b"a")
        h.wfile.flush()
        time.sleep(0.2)


def silent(h: http.server.BaseHTTPRequestHandler) -> None:
    time.sleep(3)
    h.close_connection = True


@pytest.mark.parametrize("script", [slow_loris, silent])
def test_read_timeout_bounds_a_whole_answer(script: Script) -> None:
    with scripted(script) as (port, seen):
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(insecure=True, read_timeout=0.6, attempts=2,
                                      backoff=0.01))
        started = time.monotonic()
        error = within(20, lambda: client.request("GET", "/v2/"))
        client.close()
    assert str(error) == (f"127.0.0.1:{port}: GET /v2/: no complete answer within 0.6 s "
                          "(read timeout) (gave up after 2 tries)")
    assert time.monotonic() - started < 5 and len(seen) == 2


def test_overall_deadline_ends_a_slow_loris_push(tmp_path: Path) -> None:
    archive = _layout(tmp_path)
    with scripted(slow_loris) as (port, _):
        error = within(20, lambda: push(str(archive), [f"127.0.0.1:{port}/a:1"], PushOptions(
            ClientOptions(insecure=True, timeout=1.0, read_timeout=30))))
        assert str(error) == f"127.0.0.1:{port}: GET /v2/: not done within the --timeout of 1 s"
        started = time.monotonic()
        done = run_process("push", str(archive), f"127.0.0.1:{port}/a:1", "--insecure",
                           "--timeout", "1.5", timeout=60)
    assert done.returncode == 1
    assert done.stderr == (f"error: 127.0.0.1:{port}: GET /v2/: not done within the "
                           "--timeout of 1.5 s\n")
    assert time.monotonic() - started < 10


def test_timeout_needs_push(tmp_path: Path) -> None:
    done = slimmer("pack", str(tmp_path / "x"), "-o", str(tmp_path / "o.tar"), "--timeout", "5")
    assert done.stderr == "error: --timeout is about --push: give --push REGISTRY/REPO:TAG\n"
    done = slimmer("push", "a.tar", "r.io/a:1", "--timeout", "0")
    assert done.returncode == 2 and "'0' is not a number of seconds above 0" in done.stderr


def huge(h: http.server.BaseHTTPRequestHandler) -> None:
    if "length" in h.path:
        h.send_response(200)
        h.send_header("Content-Length", str(1 << 30))
        h.end_headers()
        h.close_connection = True
        return
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"{" * (1 << 20)
    with contextlib.suppress(OSError):  # the client hangs up
        for _ in range(64):
            h.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        h.wfile.write(b"0\r\n\r\n")


def test_a_huge_answer_is_refused_in_bounded_memory() -> None:
    with scripted(huge) as (port, _):
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(insecure=True, attempts=1))
        tracemalloc.start()
        try:
            with pytest.raises(RegistryError, match=rf"^127.0.0.1:{port}: GET /v2/: the answer "
                                                    r"is larger than the 4 MiB a registry's "
                                                    r"answer may have: refused$"):
                client.request("GET", "/v2/")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        with pytest.raises(RegistryError, match=r"GET /v2/length: the answer of 1073741824 "
                                                r"bytes is larger than the 4 MiB"):
            client.request("GET", "/v2/length")
        client.close()
    assert peak < 16 << 20, peak


@pytest.mark.parametrize(("value", "slept"), [
    ("\u00b2", 0.25), ("1e9", 0.25), ("-1", 0.25), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.25),
    ("\u0661", 0.25), ("7", 7.0), ("99999", 30.0),
])
def test_retry_after_malformed_means_the_usual_backoff(value: str, slept: float) -> None:
    sleeps: list[float] = []

    def busy_once(h: http.server.BaseHTTPRequestHandler) -> None:
        if len(sleeps) == 0:
            h.send_response(503)
            h.flush_headers()  # raw: http.client reads header bytes as latin-1 (0xB2: ²)
            raw = value.encode("latin-1") if value.isascii() or value == "\u00b2" else \
                value.encode()
            h.wfile.write(b"Retry-After: " + raw + b"\r\n")
            h.send_header("Content-Length", "0")
            h.end_headers()
        else:
            reply(h, 200)

    with scripted(busy_once) as (port, _):
        client = Client(parse_destination(f"127.0.0.1:{port}/a"),
                        ClientOptions(insecure=True, backoff=0.25, sleep=sleeps.append))
        assert client.request("GET", "/v2/").status == 200
        client.close()
    assert sleeps == [slept]


@pytest.mark.parametrize("range_header", ["0-999999", "0-\u00b2", "bytes=0-5", "0-" + "9" * 40])
def test_a_registry_lying_about_its_range_is_an_error(tmp_path: Path,
                                                      range_header: str) -> None:
    """The second PATCH is dropped; the upload's status then claims more than was sent (an
    assert fired) or is malformed (a ValueError): an error, or a new upload."""
    patches: list[str] = []

    def registry(h: http.server.BaseHTTPRequestHandler) -> None:
        if h.command == "HEAD":
            reply(h, 404)
        elif h.command == "POST":
            reply(h, 202, Location="/up/1")
        elif h.command == "PATCH":
            patches.append(h.path)
            if len(patches) == 2:
                h.close_connection = True  # dropped: no answer at all
                return
            reply(h, 202, Location="/up/1")
        elif h.command == "GET" and h.path == "/up/1":
            reply(h, 204, Range=range_header, Location="/up/1")
        else:
            reply(h, 201 if h.command == "PUT" else 200)

    archive = _layout(tmp_path)
    with scripted(registry) as (port, seen):
        error = within(20, lambda: push(str(archive), [f"127.0.0.1:{port}/a:1"], PushOptions(
            ClientOptions(insecure=True, backoff=0.01), chunk_size=8)))
    if range_header == "0-999999":
        assert isinstance(error, RegistryError), error
        assert re.fullmatch(rf"127.0.0.1:{port}: uploading sha256:[0-9a-f]{{64}}: the registry "
                            r"says it holds bytes 0-999999 of the upload, but only 16 were "
                            r"sent: refused", str(error)), str(error)
    else:
        assert error is None
        assert [s.method for s in seen].count("POST") == 3  # the upload began again


@pytest.mark.parametrize(("doc", "field"), [
    ({"auths": {"r.io": {"auth": 123}}}, "auths.r.io.auth"),
    ({"auths": {"r.io": {"username": ["a"], "password": "p"}}}, "auths.r.io.username"),
    ({"auths": {"r.io": {"auth": USER_AUTH[6:], "identitytoken": {}}}},
     "auths.r.io.identitytoken"),
    ({"credsStore": 5}, "credsStore"),
    ({"credHelpers": {"r.io": None}}, "credHelpers.r.io"),
])
def test_config_fields_of_the_wrong_shape(tmp_path: Path, doc: object, field: str) -> None:
    path = tmp_path / "config.json"
    with pytest.raises(AuthProblem, match=rf"^{path}: {re.escape(field)} is not a string$"):
        credentials_for(_config(tmp_path, doc), "r.io")


def test_deeply_nested_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(AuthProblem, match=rf"^{path}: "):
        read_docker_config(str(path))


def test_config_that_is_a_fifo_or_a_directory(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    error = within(5, lambda: read_docker_config(str(fifo)))
    assert isinstance(error, FileProblem)
    assert str(error) == f"{fifo}: Docker config is not a regular file"
    with pytest.raises(FileProblem, match=rf"^{tmp_path}: Docker config is a directory$"):
        read_docker_config(str(tmp_path))


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"errors": 5}', "400 Bad Request"),
    (b'{"errors": [5, {"code": "X", "message": "two\\nlines\\u001b[31m"}]}',
     "400 Bad Request (X: two\\nlines\\x1b[31m)"),
    (b"[" * 100_000, "400 Bad Request"),
])
def test_error_bodies_of_any_shape_make_one_line(body: bytes, problem: str) -> None:
    response = Response(400, "Bad Request", http.client.HTTPMessage(), body, "http://x/")
    assert response.problem() == problem
