"""Real registries for the push tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1,
with its own config and storage in a temporary directory, stopped by the pid we started; a
token service for its `auth: token` mode (JWTs signed RS256 with a key and certificate made
here by openssl, the certificate carried in the `x5c` header, which distribution 2.8 checks
against its rootcertbundle); and an HTTP proxy that drops one upload's connection."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.host import need_tool

USER, PASSWORD = "alice", "s3cret-pass"
SERVICE, ISSUER = "slimmer-test-registry", "slimmer-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    directory: Path
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.directory / "registry.log").read_text(errors="replace")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docker-registry exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # 401: up, and asking for credentials
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"docker-registry did not start: {log.read_text(errors='replace')[-2000:]}")


@contextmanager
def run_registry(directory: Path, auth: str = "") -> Iterator[Registry]:
    """docker-registry serving `directory`/data on a free port; `auth` is YAML for `auth:`."""
    binary = need_tool("docker-registry")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory}/data\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: slimmer-test-secret\n"
        + (f"auth:\n{auth}" if auth else ""))
    log_path = directory / "registry.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, proc, log_path)
        yield Registry(directory, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def htpasswd_file(path: Path) -> Path:
    """A bcrypt htpasswd file (distribution accepts only bcrypt) for USER."""
    done = subprocess.run([need_tool("htpasswd"), "-Bbn", USER, PASSWORD], capture_output=True,
                          text=True, check=True)
    path.write_text(done.stdout)
    return path


def docker_config(directory: Path, registry: str, password: str = PASSWORD) -> Path:
    """A Docker config directory whose config.json holds USER's credentials for `registry`."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return directory


# ---- the token service -----------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    """Issues registry tokens to USER:PASSWORD (Basic), for whatever scopes are asked."""

    directory: Path
    port: int = 0
    seen: list[dict[str, object]] = field(default_factory=list)  # one per token request

    @property
    def key(self) -> Path:
        return self.directory / "token.key"

    @property
    def cert(self) -> Path:
        return self.directory / "token.crt"

    def make_key(self) -> None:
        openssl = need_tool("openssl")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(self.key), "-out", str(self.cert), "-days", "2", "-subj",
                        "/CN=slimmer-test-token-signer"], capture_output=True, check=True)

    def token(self, scopes: list[str]) -> str:
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             capture_output=True, check=True).stdout
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), capture_output=True,
                                   check=True).stdout
        return signing_input + "." + _b64url(signature)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                ok = self.headers.get("Authorization") == expected
                service.seen.append({"scopes": query.get("scope", []), "ok": ok,
                                     "service": query.get("service", [""])[0]})
                if not ok:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": service.token(query.get("scope", [])),
                                   "expires_in": 600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return Handler


@contextmanager
def serve(handler: type[http.server.BaseHTTPRequestHandler],
          tls: tuple[Path, Path] | None = None) -> Iterator[int]:
    """An HTTP server on a free loopback port, in a thread; yields its port. With `tls`
    (certificate, key), HTTPS."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def token_registry(directory: Path) -> Iterator[tuple[Registry, TokenService]]:
    tokens = TokenService(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokens.make_key()
    with serve(tokens.handler()) as port:
        tokens.port = port
        auth = (f"  token:\n    realm: http://127.0.0.1:{port}/token\n"
                f"    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {tokens.cert}\n")
        with run_registry(directory / "registry", auth) as registry:
            yield registry, tokens


# ---- a proxy that drops one upload ------------------------------------------------------

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class Proxy:
    """Forwards to the registry; the first request `drop_when` picks is cut off: with
    `forward_half`, half of its body reaches the registry before both connections are closed
    unanswered; without, the registry never sees it. With `status`, it is answered with that
    status instead."""

    upstream: int
    drop_when: Callable[[str, str, int], bool]
    forward_half: bool = True
    status: int = 0  # instead of cutting it, answer the request with this status
    port: int = 0
    requests: list[str] = field(default_factory=list)  # "METHOD path" of each request seen
    dropped: list[str] = field(default_factory=list)
    cut_at: int = -1  # the index in `requests` of the request that was cut

    def after_cut(self) -> list[str]:
        return self.requests[self.cut_at + 1:]

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                proxy.requests.append(f"{self.command} {path}")
                if not proxy.dropped and proxy.drop_when(self.command, path, length):
                    proxy.dropped.append(f"{self.command} {path}")
                    proxy.cut_at = len(proxy.requests) - 1
                    self._cut(length)
                    return
                body = self.rfile.read(length) if length else None
                upstream = self._upstream(body)
                try:
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _upstream(self, body: bytes | None) -> http.client.HTTPConnection:
                """This request sent on to the registry (without hop-by-hop headers)."""
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                upstream.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP:
                        upstream.putheader(name, value)
                upstream.endheaders(body)
                return upstream

            def _cut(self, length: int) -> None:
                if proxy.status:
                    self.rfile.read(length)
                    self.send_response(proxy.status)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if not proxy.forward_half:
                    self.rfile.read(length)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                upstream = self._upstream(self.rfile.read(length // 2))
                time.sleep(0.3)  # let the registry read what it got before the cut
                upstream.close()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *_: object) -> None:
                pass

        return Handler


@contextmanager
def dropping_proxy(registry: Registry, drop_when: Callable[[str, str, int], bool],
                   forward_half: bool = True, status: int = 0) -> Iterator[Proxy]:
    proxy = Proxy(registry.port, drop_when, forward_half, status)
    with serve(proxy.handler()) as port:
        proxy.port = port
        yield proxy


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost (trust it with SSL_CERT_FILE) and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([need_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key
