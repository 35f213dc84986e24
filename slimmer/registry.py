"""Talking to a registry over the OCI distribution API: where to connect, authentication
(Basic, or the Bearer token flow), and retries of transient failures.

HTTPS with the system CA store always, except with `insecure`, which means plain HTTP and is
allowed only for a loopback host (127.0.0.0/8, ::1, localhost): credentials never cross a
network unencrypted. Requests that may be repeated as they are (HEAD, GET, a manifest PUT) are
retried here on connection errors, 5xx and 429, with exponential backoff (Retry-After is
honoured); blob uploads handle their own failures (slimmer.push) because their state lives on
the registry.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from slimmer import __version__
from slimmer.errors import SlimmerError
from slimmer.oci import BadReference, parse_reference
from slimmer.regauth import (
    AuthProblem,
    Challenge,
    Credentials,
    DockerConfig,
    credentials_for,
    parse_challenge,
)


class RegistryError(SlimmerError):
    """A registry that cannot be reached or answers with an error."""


# ---- where to push -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Destination:
    """REGISTRY/REPOSITORY:TAG, split."""

    registry: str  # host[:port] as written ("[::1]:5000" for IPv6)
    repository: str
    tag: str

    @property
    def host(self) -> str:
        if self.registry.startswith("["):
            return self.registry[1:self.registry.index("]")]
        return self.registry.rsplit(":", 1)[0] if ":" in self.registry else self.registry

    @property
    def endpoint(self) -> str:
        """The host[:port] to connect to (Docker Hub's API lives on registry-1)."""
        return "registry-1.docker.io" if self.registry == "docker.io" else self.registry

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    def pinned(self, digest: str) -> str:
        return f"{self.registry}/{self.repository}@{digest}"


def parse_destination(text: str) -> Destination:
    """REGISTRY/REPO[:TAG]; without a registry part (no '.', ':' or localhost in the first
    component) the registry is docker.io, as Docker has it."""
    if "@" in text:
        raise BadReference(f"{text}: push to a tag (REGISTRY/REPO:TAG), not to a digest")
    first, sep, rest = text.partition("/")
    if sep and (first.startswith("[") or "." in first or ":" in first or first == "localhost"):
        if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?", first):
            raise BadReference(f"{text}: {first!r} is not a registry host[:port]")
        registry = first
    else:
        registry, rest = "docker.io", text
    ref = parse_reference(rest)
    repository = ref.name
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return Destination(registry, repository, ref.tag)


def checked_destination(text: str, insecure: bool) -> Destination:
    """parse_destination, refusing --insecure for a host that is not loopback."""
    dest = parse_destination(text)
    if insecure and not is_loopback(dest.host):
        raise _insecure_refused(dest)
    return dest


def _insecure_refused(dest: Destination) -> RegistryError:
    return RegistryError(f"{dest.registry}: --insecure (plain HTTP) is allowed only for a "
                         "loopback registry (127.0.0.0/8, ::1, localhost)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes
    url: str

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""

    def problem(self) -> str:
        """`404 Not Found (BLOB_UNKNOWN: blob unknown to registry)`, from the error body."""
        detail = ""
        try:
            errors = json.loads(self.body).get("errors") or []
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
        except (ValueError, AttributeError):
            pass
        return f"{self.status} {self.reason}" + (f" ({detail})" if detail else "")


Body = bytes | None


@dataclass(frozen=True, slots=True)
class ClientOptions:
    insecure: bool = False
    docker_config: DockerConfig = field(default_factory=DockerConfig)
    attempts: int = 4  # tries per request before giving up on a transient failure
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    timeout: float = 60.0
    sleep: Callable[[float], None] = time.sleep


USER_AGENT = f"slimmer/{__version__}"
TRANSIENT = (OSError, http.client.HTTPException)
FATAL = (ssl.SSLError, ssl.CertificateError, socket.gaierror)  # no use trying again


class Transient(Exception):
    """A failure worth another try: no connection, a dropped one, a 5xx or a 429."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class Client:
    """One registry: connections kept alive, credentials and tokens, retry counting."""

    def __init__(self, dest: Destination, options: ClientOptions) -> None:
        if options.insecure and not is_loopback(dest.host):
            raise _insecure_refused(dest)
        self.registry = dest.registry
        self.base = f"{'http' if options.insecure else 'https'}://{dest.endpoint}"
        self.options = options
        self.credentials: Credentials | None = credentials_for(options.docker_config,
                                                               dest.registry)
        self.retries = 0  # transient failures that were tried again
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], str] = {}
        self._tls = ssl.create_default_context()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def url(self, path_or_location: str) -> str:
        return urllib.parse.urljoin(self.base + "/", path_or_location)

    # -- one exchange --

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body) -> Response:
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        conn = self._connections.get(key)
        if conn is None:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.netloc, timeout=self.options.timeout,
                                                   context=self._tls)
            else:
                conn = http.client.HTTPConnection(parts.netloc, timeout=self.options.timeout)
            self._connections[key] = conn
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": USER_AGENT, **headers}
        try:
            conn.request(method, target, body=body, headers=headers,
                         encode_chunked=False)
            answer = conn.getresponse()
            data = answer.read()
        except BaseException:
            conn.close()
            del self._connections[key]
            raise
        if answer.getheader("Connection", "").lower() == "close":
            conn.close()
            del self._connections[key]
        return Response(answer.status, answer.reason, answer.headers, data, url)

    def exchange(self, method: str, path: str, *, scopes: tuple[str, ...] = (),
                 headers: dict[str, str] | None = None, body: Body = None) -> Response:
        """One request, authenticated (answering a 401 once with credentials or a token).
        Connection failures and 5xx/429 raise Transient."""
        url = self.url(path)
        same_host = urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(self.base).netloc
        sent = dict(headers or {})
        for attempt in range(2):
            auth = self._authorization(scopes) if same_host else None
            if auth:
                sent["Authorization"] = auth
            try:
                response = self._send(method, url, sent, body)
            except FATAL as exc:
                raise RegistryError(f"{self.registry}: {method} {_path(url)}: "
                                    f"{_reason(exc)}") from None
            except TRANSIENT as exc:
                raise Transient(f"{method} {_path(url)}: {_reason(exc)}") from exc
            if response.status == 401 and same_host and attempt == 0:
                self._answer(response, scopes, auth)
                continue
            if response.status == 401:
                raise AuthProblem(self._refused(response))
            if response.status >= 500 or response.status == 429:
                raise Transient(f"{method} {_path(url)}: {response.problem()}",
                                _retry_after(response))
            return response
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, *, scopes: tuple[str, ...] = (),
                headers: dict[str, str] | None = None, body: Body = None) -> Response:
        """`exchange`, tried again after transient failures with backoff."""
        return self.retrying(lambda: self.exchange(method, path, scopes=scopes,
                                                   headers=headers, body=body))

    def retrying(self, action: Callable[[], Response]) -> Response:
        attempt = 0
        while True:
            try:
                return action()
            except Transient as exc:
                attempt += 1
                if attempt >= self.options.attempts:
                    raise RegistryError(f"{self.registry}: {exc} (gave up after {attempt} "
                                        "tries)") from None
                self.pause(attempt, exc.wait)

    def pause(self, attempt: int, wait: float | None = None) -> None:
        self.retries += 1
        delay = self.options.backoff * 2 ** (attempt - 1)
        self.options.sleep(min(wait, 30.0) if wait is not None else delay)

    # -- authentication --

    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        if self._challenge is None:
            return None
        if self._challenge.scheme == "basic":
            return self.credentials.basic() if self.credentials else None
        token = self._tokens.get(_scope_key(scopes))
        return f"Bearer {token}" if token else None

    def _answer(self, response: Response, scopes: tuple[str, ...], sent: str | None) -> None:
        header = response.header("WWW-Authenticate")
        if not header:
            raise AuthProblem(self._refused(response))
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise AuthProblem(f"{self.registry}: the registry needs credentials "
                                  f"({response.status} {response.reason}) and "
                                  f"{self.options.docker_config.path or 'config.json'} has "
                                  "none for it")
            if sent is not None:
                raise AuthProblem(self._refused(response))
            self._challenge = challenge
            return
        if challenge.scheme != "bearer" or not challenge.params.get("realm"):
            raise AuthProblem(f"{self.registry}: unsupported authentication {header!r}")
        self._challenge = challenge
        wanted = _scope_key((*scopes, *challenge.scopes))
        self._tokens[_scope_key(scopes)] = self._token(challenge, wanted)

    def _token(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        realm = challenge.params["realm"]
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme != "https" and not (parts.scheme == "http"
                                            and is_loopback(parts.hostname or "")):
            raise AuthProblem(f"{self.registry}: token service {realm} is not HTTPS (plain "
                              "HTTP only on loopback)")
        query = [("scope", s) for s in scopes]
        if challenge.params.get("service"):
            query.insert(0, ("service", challenge.params["service"]))
        if self.credentials is not None:
            query.append(("account", self.credentials.username))
        url = realm + ("&" if parts.query else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            answer = self.retrying(lambda: self._token_exchange(url, headers))
        except RegistryError as exc:
            raise AuthProblem(f"{self.registry}: token service {realm}: {exc}") from None
        if answer.status != 200:
            who = f" for user {self.credentials.username}" if self.credentials else ""
            raise AuthProblem(f"{self.registry}: token service {realm} refused{who}: "
                              f"{answer.problem()}")
        try:
            doc = json.loads(answer.body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthProblem(f"{self.registry}: token service {realm} answered without a "
                              "token")
        return token

    def _token_exchange(self, url: str, headers: dict[str, str]) -> Response:
        try:
            answer = self._send("GET", url, headers, None)
        except FATAL as exc:
            raise RegistryError(f"GET {_path(url)}: {_reason(exc)}") from None
        except TRANSIENT as exc:
            raise Transient(f"GET {_path(url)}: {_reason(exc)}") from exc
        if answer.status >= 500 or answer.status == 429:
            raise Transient(f"GET {_path(url)}: {answer.problem()}", _retry_after(answer))
        return answer

    def _refused(self, response: Response) -> str:
        who = f" for user {self.credentials.username}" if self.credentials else ""
        return (f"{self.registry}: authentication failed{who}: {response.problem()} at "
                f"{_path(response.url)}")


def _scope_key(scopes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(scopes)))


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return f"TLS failed ({exc}); a plain-HTTP registry on loopback needs --insecure"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "cannot connect (connection refused)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "the connection was dropped"
    return f"{type(exc).__name__}: {exc}"


def _retry_after(response: Response) -> float | None:
    value = response.header("Retry-After")
    return float(value) if value.isdigit() else None

