"""Talking to a registry over the OCI distribution API: where to connect, authentication
(Basic, or the Bearer token flow), and retries of transient failures.

HTTPS with the system CA store always, except with `insecure`, which means plain HTTP and is
allowed only for a loopback host (127.0.0.0/8, ::1, localhost, and only when the connected
peer is a loopback address): credentials never cross a network unencrypted. Credentials (and
tokens) go only to the origin (scheme, host, port) of the registry; a `Location` elsewhere gets
none, a plain-HTTP one after HTTPS is refused, and a token service on another origin gets the
Basic credentials only when the user says so (`realm_credentials`).

Every request has a connect timeout, a read timeout (which also bounds the whole answer, so a
registry sending a byte now and then cannot hold a push), and the push's overall deadline
(`timeout`); answers are read up to `answer_limit` bytes. Requests that may be repeated as they
are (HEAD, GET, a manifest PUT) are retried here on connection errors, 5xx and 429, with
exponential backoff (Retry-After is honoured); blob uploads handle their own failures
(slimmer.registry.push) because their state lives on the registry.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from slimmer import __version__
from slimmer.errors import SlimmerError, printable
from slimmer.image.reference import BadReference, parse_reference
from slimmer.registry.auth import (
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
            if isinstance(errors, list):
                detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}"
                                   for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError, RecursionError):
            pass
        return printable(f"{self.status} {self.reason}" + (f" ({detail})" if detail else ""),
                         SHOWN)


Body = bytes | None
Origin = tuple[str, str, int]  # scheme, host (lower-case, no brackets), port

# The OCI distribution spec lets a registry refuse manifests over 4 MiB; JSON answers, error
# bodies and tokens are far smaller. Nothing a registry answers is read beyond this.
ANSWER_LIMIT = 4 << 20
SHOWN = 300  # characters of a registry's text (a URL, an error body) put in a message


@dataclass(frozen=True, slots=True)
class ClientOptions:
    insecure: bool = False
    docker_config: DockerConfig = field(default_factory=DockerConfig)
    attempts: int = 4  # tries per request before giving up on a transient failure
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    connect_timeout: float = 30.0
    read_timeout: float = 60.0  # per send or receive, and for a whole answer
    timeout: float | None = None  # seconds for the whole push (--timeout); None: no deadline
    realm_credentials: bool = False  # Basic credentials to a token service on another origin
    answer_limit: int = ANSWER_LIMIT
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


USER_AGENT = f"slimmer/{__version__}"
TRANSIENT = (OSError, http.client.HTTPException)
FATAL = (ssl.SSLError, ssl.CertificateError, socket.gaierror)  # no use trying again
DOCKER_HUB_TOKENS = ("https", "auth.docker.io", 443)  # Docker Hub's own token service


class Transient(Exception):
    """A failure worth another try: no connection, a dropped one, a 5xx or a 429."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


class Client:
    """One registry: connections kept alive, credentials and tokens, retry counting."""

    def __init__(self, dest: Destination, options: ClientOptions,
                 started: float | None = None) -> None:
        if options.insecure and not is_loopback(dest.host):
            raise _insecure_refused(dest)
        self.registry = dest.registry
        self.base = f"{'http' if options.insecure else 'https'}://{dest.endpoint}"
        self.origin = origin_of(self.base)
        self.options = options
        self.credentials: Credentials | None = credentials_for(options.docker_config,
                                                               dest.registry)
        self.retries = 0  # transient failures that were tried again
        if options.timeout is None:
            self.deadline: float | None = None
        else:
            self.deadline = (options.clock() if started is None else started) + options.timeout
        self._connections: dict[Origin, http.client.HTTPConnection] = {}
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], str] = {}
        self._withheld = False  # credentials were kept from a token service on another origin
        self._tls = ssl.create_default_context()

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def url(self, path_or_location: str, method: str = "") -> str:
        try:
            return urllib.parse.urljoin(self.base + "/", path_or_location)
        except ValueError:  # a Location such as http://[::1
            raise RegistryError(f"{self.registry}: {method or 'request'}: malformed URL "
                                f"{printable(path_or_location, SHOWN)}") from None

    # -- where a request may go --

    def checked_origin(self, url: str, what: str) -> Origin:
        """The origin of `url`, refusing what may not be connected to: a scheme other than
        HTTP(S), plain HTTP after HTTPS, plain HTTP to a host that is not loopback."""
        try:
            origin = origin_of(url)
        except ValueError:
            raise RegistryError(f"{self.registry}: {what}: malformed URL "
                                f"{printable(url, SHOWN)}") from None
        scheme, host, _ = origin
        if scheme == "https":
            return origin
        if scheme != "http" or not host:
            raise RegistryError(f"{self.registry}: {what}: {printable(url, SHOWN)} is not an "
                                "HTTP(S) URL: refused")
        if not self.options.insecure:
            raise RegistryError(f"{self.registry}: {what}: plain HTTP ({printable(url, SHOWN)}) "
                                "after HTTPS: refused (credentials and data go over HTTPS "
                                "only; --insecure is for a loopback registry)")
        if not is_loopback(host):
            raise RegistryError(f"{self.registry}: {what}: {printable(url, SHOWN)}: --insecure "
                                "allows plain HTTP only to a loopback host (127.0.0.0/8, ::1, "
                                "localhost)")
        return origin

    # -- time --

    def remaining(self, what: str) -> float:
        """Seconds left before the deadline (inf without one); the error when none are."""
        if self.deadline is None:
            return float("inf")
        left = self.deadline - self.options.clock()
        if left <= 0:
            raise self.too_late(what)
        return left

    def too_late(self, what: str) -> RegistryError:
        return RegistryError(f"{self.registry}: {what}: not done within the --timeout of "
                             f"{self.options.timeout:g} s")

    # -- one exchange --

    def _connection(self, origin: Origin, what: str) -> http.client.HTTPConnection:
        conn = self._connections.get(origin)
        if conn is not None and conn.sock is not None:
            return conn
        scheme, host, port = origin
        timeout = min(self.options.connect_timeout, self.remaining(what))
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._connections[origin] = conn
        conn.connect()
        if scheme == "http":
            # `localhost` is a name: plain HTTP only when it did lead to a loopback address.
            peer = str(conn.sock.getpeername()[0]).partition("%")[0]
            if not ipaddress.ip_address(peer).is_loopback:
                self._drop(origin)
                raise RegistryError(f"{self.registry}: {what}: {host} is {peer}, not a "
                                    "loopback address: plain HTTP refused")
        return conn

    def _drop(self, origin: Origin) -> None:
        conn = self._connections.pop(origin, None)
        if conn is not None:
            conn.close()

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body) -> Response:
        what = f"{method} {_path(url)}"
        origin = self.checked_origin(url, what)
        parts = urllib.parse.urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": USER_AGENT, **headers}
        try:
            conn = self._connection(origin, what)
        except TimeoutError:
            self._drop(origin)
            self.remaining(what)
            raise Transient(f"{what}: cannot connect within "
                            f"{self.options.connect_timeout:g} s (connect timeout)") from None
        except BaseException:
            self._drop(origin)
            raise
        cut = threading.Event()
        try:
            limit = min(self.options.read_timeout, self.remaining(what))
            conn.sock.settimeout(limit)
            conn.request(method, target, body=body, headers=headers, encode_chunked=False)
            # A socket timeout bounds each read, not the answer: a registry sending a byte
            # now and then is cut off when the whole answer has taken too long.
            watchdog = threading.Timer(min(self.options.read_timeout, self.remaining(what)),
                                       _cut_off, (conn.sock, cut))
            watchdog.start()
            try:
                answer = conn.getresponse()
                data = self._body(answer, what)
            finally:
                watchdog.cancel()
        except BaseException as exc:
            self._drop(origin)
            if cut.is_set() or isinstance(exc, TimeoutError):
                self._late(what)
            raise
        if cut.is_set():  # an answer without a length reads as ended when it was cut
            self._drop(origin)
            self._late(what)
        if answer.getheader("Connection", "").lower() == "close":
            self._drop(origin)
        return Response(answer.status, answer.reason, answer.headers, data, url)

    def _late(self, what: str) -> None:
        """After a timeout: the deadline's error if it has passed, else a Transient."""
        self.remaining(what)
        raise Transient(f"{what}: no complete answer within {self.options.read_timeout:g} s "
                        "(read timeout)")

    def _body(self, answer: http.client.HTTPResponse, what: str) -> bytes:
        limit = self.options.answer_limit
        if answer.length is not None and answer.length > limit:
            raise self._too_big(what, f"of {answer.length} bytes")
        data = answer.read(limit + 1)
        if len(data) > limit:
            raise self._too_big(what, "")
        return data

    def _too_big(self, what: str, size: str) -> RegistryError:
        return RegistryError(f"{self.registry}: {what}: the answer{' ' if size else ''}{size} "
                             f"is larger than the {self.options.answer_limit >> 20} MiB a "
                             "registry's answer may have: refused")

    def exchange(self, method: str, path: str, *, scopes: tuple[str, ...] = (),
                 headers: dict[str, str] | None = None, body: Body = None) -> Response:
        """One request, authenticated (answering a 401 once with credentials or a token).
        Connection failures and 5xx/429 raise Transient."""
        url = self.url(path, method)
        same_origin = self.checked_origin(url, f"{method} {_path(url)}") == self.origin
        sent = dict(headers or {})
        for attempt in range(2):
            auth = self._authorization(scopes) if same_origin else None
            if auth:
                sent["Authorization"] = auth
            try:
                response = self._send(method, url, sent, body)
            except FATAL as exc:
                raise RegistryError(f"{self.registry}: {method} {_path(url)}: "
                                    f"{_reason(exc)}") from None
            except TRANSIENT as exc:
                raise Transient(f"{method} {_path(url)}: {_reason(exc)}") from exc
            if response.status == 401 and same_origin and attempt == 0:
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
                self.pause(attempt, exc.wait, str(exc))

    def pause(self, attempt: int, wait: float | None = None, what: str = "retrying") -> None:
        self.retries += 1
        delay = min(wait, 30.0) if wait is not None else self.options.backoff * 2 ** (attempt - 1)
        if delay >= self.remaining(what):
            raise self.too_late(what)
        self.options.sleep(delay)

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
        shown = printable(realm, SHOWN)
        origin = self.checked_origin(realm, f"token service {shown}")
        trusted = (origin == self.origin or self.options.realm_credentials
                   or (self.registry == "docker.io" and origin == DOCKER_HUB_TOKENS))
        credentials = self.credentials if trusted else None
        self._withheld = self.credentials is not None and not trusted
        parts = urllib.parse.urlsplit(realm)
        query = [("scope", s) for s in scopes]
        if challenge.params.get("service"):
            query.insert(0, ("service", challenge.params["service"]))
        if credentials is not None:
            query.append(("account", credentials.username))
        url = realm + ("&" if parts.query else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": credentials.basic()} if credentials else {}
        try:
            answer = self.retrying(lambda: self._token_exchange(url, headers))
        except RegistryError as exc:
            raise AuthProblem(f"{self.registry}: token service {shown}: {exc}") from None
        if answer.status != 200:
            who = f" for user {credentials.username}" if credentials else ""
            raise AuthProblem(f"{self.registry}: token service {shown} refused{who}: "
                              f"{answer.problem()}{self._withheld_hint()}")
        try:
            doc = json.loads(answer.body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError, RecursionError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthProblem(f"{self.registry}: token service {shown} answered without a "
                              "token")
        return token

    def _withheld_hint(self) -> str:
        if not self._withheld:
            return ""
        return ("; the token service is on another origin than the registry: credentials go "
                "to it only with --send-credentials-to-realm")

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
                f"{_path(response.url)}{self._withheld_hint()}")


def _scope_key(scopes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(scopes)))


def _path(url: str) -> str:
    try:
        return printable(urllib.parse.urlsplit(url).path, SHOWN)
    except ValueError:
        return printable(url, SHOWN)


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of `url`, the port filled in; ValueError for a malformed one."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def _cut_off(sock: socket.socket, cut: threading.Event) -> None:
    """The watchdog's end of an answer that took too long: the blocked read returns."""
    cut.set()
    with contextlib.suppress(OSError):  # already closed: nothing to cut
        sock.shutdown(socket.SHUT_RDWR)


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
    """Retry-After in seconds; an HTTP date or anything malformed means the usual backoff."""
    value = response.header("Retry-After").strip()
    return float(value) if re.fullmatch(r"[0-9]{1,9}", value) else None

