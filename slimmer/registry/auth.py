"""Registry credentials and challenges: a Docker config.json's `auths`, and the
`WWW-Authenticate` headers a registry answers 401 with (Basic, or Bearer with the token
service to ask).

Nothing here reads the environment: the CLI finds config.json ($DOCKER_CONFIG or
~/.docker/config.json) and hands its path to `read_docker_config`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field

from slimmer.errors import SlimmerError
from slimmer.fileio import read_small_file


class AuthProblem(SlimmerError):
    """Credentials that cannot be read or used, or a registry that refuses them."""


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class DockerConfig:
    """What a Docker config.json says about registries (an empty one when there is none)."""

    path: str = ""
    auths: dict[str, dict[str, str]] = field(default_factory=dict)
    creds_store: str = ""
    cred_helpers: dict[str, str] = field(default_factory=dict)


CONFIG_LIMIT = 4 << 20  # a config.json with a few hundred registries is a few KiB
ENTRY_FIELDS = ("auth", "username", "password", "identitytoken", "registrytoken", "email")


def read_docker_config(path: str) -> DockerConfig:
    """Parse config.json at `path`; a missing file means no credentials. A FIFO, a directory
    or a huge file is refused (read_small_file), as is any field of the wrong shape."""
    if not os.path.lexists(path):
        return DockerConfig(path)
    data = read_small_file(path, "Docker config", CONFIG_LIMIT)
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise AuthProblem(f"{path}: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise AuthProblem(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise AuthProblem(f"{path}: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise AuthProblem(f"{path}: not a JSON object")
    auths = doc.get("auths") or {}
    helpers = doc.get("credHelpers") or {}
    store = doc.get("credsStore") or ""
    if not isinstance(auths, dict) or not all(isinstance(v, dict) for v in auths.values()):
        raise AuthProblem(f"{path}: `auths` is not an object of objects")
    if not isinstance(helpers, dict):
        raise AuthProblem(f"{path}: `credHelpers` is not an object")
    for key, helper in helpers.items():
        if not isinstance(helper, str):
            raise AuthProblem(f"{path}: credHelpers.{key} is not a string")
    if not isinstance(store, str):
        raise AuthProblem(f"{path}: credsStore is not a string")
    for key, entry in auths.items():
        for name in ENTRY_FIELDS:
            if entry.get(name) is not None and not isinstance(entry[name], str):
                raise AuthProblem(f"{path}: auths.{key}.{name} is not a string")
    return DockerConfig(path, {str(k): {f: v for f, v in entry.items() if isinstance(v, str)}
                               for k, entry in auths.items()},
                        store, {str(k): v for k, v in helpers.items()})


def _host_of(key: str) -> str:
    """The host[:port] of an `auths` key, which may be a URL (https://host/v1/)."""
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io",
                   "registry-1.docker.io")


def credentials_for(config: DockerConfig, registry: str) -> Credentials | None:
    """The credentials config.json holds for `registry` (host[:port]), or None to go
    anonymous. A credential helper for it is refused: slimmer does not run helpers."""
    hub = registry in ("docker.io", "registry-1.docker.io", "index.docker.io")
    wanted = set(DOCKER_HUB_KEYS) if hub else {registry}
    helper = next((h for k, h in config.cred_helpers.items() if _host_of(k) in wanted), "")
    if helper:
        raise AuthProblem(f"{config.path}: credHelpers names docker-credential-{helper} for "
                          f"{registry}: credential helpers are not supported; put "
                          "`auth` in `auths` instead")
    entry = next((v for k, v in config.auths.items() if _host_of(k) in wanted or k in wanted),
                 None)
    if entry is None or not (entry.get("auth") or entry.get("username")):
        if config.creds_store and entry is not None:
            raise AuthProblem(f"{config.path}: credentials for {registry} are kept by "
                              f"credsStore docker-credential-{config.creds_store}: credential "
                              "helpers are not supported; put `auth` in `auths` instead")
        if entry is not None and entry.get("identitytoken"):
            raise AuthProblem(f"{config.path}: {registry} has an identitytoken: not "
                              "supported; use a username and password (or token) in `auth`")
        return None
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthProblem(f"{config.path}: auths.{registry}.auth is not base64 of "
                              "user:password") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise AuthProblem(f"{config.path}: auths.{registry}.auth holds no ':' between "
                              "user and password")
        return Credentials(user, password)
    return Credentials(str(entry.get("username", "")), str(entry.get("password", "")))


# ---- WWW-Authenticate ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower-case
    params: dict[str, str]

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


_PARAM = re.compile(r'\s*([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*,?')


def parse_challenge(header: str) -> Challenge:
    """`Bearer realm="https://auth",service="reg",scope="repository:a:pull"` or
    `Basic realm="x"` into a scheme and its parameters (quoted strings unescaped)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise AuthProblem(f"cannot parse WWW-Authenticate header {header!r}")
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        position = match.end()
    return Challenge(scheme.lower(), params)


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"
