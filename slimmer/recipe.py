"""Recipes: what a runtime needs beyond its program's closure, in TOML (docs/recipes.md).

A recipe names the programs it matches, files and directories to add from the root (globs, with
excludes), directories to create, users and groups, and image defaults. Validation is strict:
an unknown key is an error that suggests the key probably meant, and every path must be
absolute and stay inside the root. `{name}` in a path is the matched program's real file name
(python3.11 for /usr/bin/python3), so one recipe serves several versions; `{triplet}` is the
Debian multiarch triplet of the program's architecture.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from slimmer.errors import SlimmerError
from slimmer.sysroot import normalize


class RecipeError(SlimmerError):
    """A recipe file that cannot be used, with the file named."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    uid: int
    gid: int
    home: str = "/nonexistent"
    shell: str = "/usr/sbin/nologin"


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    gid: int


@dataclass(frozen=True, slots=True)
class DirSpec:
    path: str
    mode: int = 0o755
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True, slots=True)
class ImageDefaults:
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    expose: tuple[str, ...] = ()
    stop_signal: str = ""


@dataclass(frozen=True, slots=True)
class Recipe:
    name: str
    source: str  # where it was read from
    description: str = ""
    match: tuple[str, ...] = ()  # globs over program paths (as given, or real)
    programs: tuple[str, ...] = ()  # what `slimmer build` packs
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dirs: tuple[DirSpec, ...] = ()
    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()
    with_features: tuple[str, ...] = ()
    image: ImageDefaults = field(default_factory=ImageDefaults)

    def matches(self, program: str, real: str) -> bool:
        return any(fnmatch.fnmatchcase(p, pattern) for pattern in self.match
                   for p in (program, real))


# ---- reading ------------------------------------------------------------------------------

_TOP = {"name", "description", "match", "programs", "with", "files", "dirs", "users",
        "groups", "image"}
_FILES = {"include", "exclude"}
_DIR = {"path", "mode", "owner", "group"}
_USER = {"name", "uid", "gid", "home", "shell"}
_GROUP = {"name", "gid"}
_IMAGE = {"entrypoint", "cmd", "env", "workdir", "user", "expose", "stop_signal"}


def load_recipe(path: str) -> Recipe:
    """Read and check one recipe file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_recipe(data, path)


def parse_recipe(data: dict[str, Any], source: str) -> Recipe:
    check = _Checker(source)
    check.keys(data, _TOP, "the top level")
    files = check.table(data, "files")
    check.keys(files, _FILES, "[files]")
    image = check.table(data, "image")
    check.keys(image, _IMAGE, "[image]")
    dirs = []
    for item in check.tables(data, "dirs"):
        check.keys(item, _DIR, "[[dirs]]")
        dirs.append(DirSpec(check.path(item, "path", required=True),
                            check.mode(item.get("mode", "0755")),
                            check.text(item, "owner", "root"), check.text(item, "group", "root")))
    users = []
    for item in check.tables(data, "users"):
        check.keys(item, _USER, "[[users]]")
        users.append(User(check.text(item, "name", required=True), check.number(item, "uid"),
                          check.number(item, "gid"), check.path(item, "home") or "/nonexistent",
                          check.path(item, "shell") or "/usr/sbin/nologin"))
    groups = []
    for item in check.tables(data, "groups"):
        check.keys(item, _GROUP, "[[groups]]")
        groups.append(Group(check.text(item, "name", required=True), check.number(item, "gid")))
    env = image.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise RecipeError(f"{source}: [image] env must be a table of strings")
    return Recipe(
        name=check.text(data, "name", required=True),
        source=source,
        description=check.text(data, "description"),
        match=check.strings(data, "match"),
        programs=tuple(check.abs_path(p, "programs") for p in check.strings(data, "programs")),
        include=tuple(check.abs_path(p, "include") for p in check.strings(files, "include")),
        exclude=tuple(check.abs_path(p, "exclude") for p in check.strings(files, "exclude")),
        dirs=tuple(dirs),
        users=tuple(users),
        groups=tuple(groups),
        with_features=check.strings(data, "with"),
        image=ImageDefaults(
            entrypoint=check.strings(image, "entrypoint") if "entrypoint" in image else None,
            cmd=check.strings(image, "cmd") if "cmd" in image else None,
            env=tuple(sorted(env.items())),
            workdir=check.path(image, "workdir"),
            user=check.text(image, "user"),
            expose=check.strings(image, "expose"),
            stop_signal=check.text(image, "stop_signal"),
        ),
    )


class _Checker:
    """Type and key checks with messages that name the recipe file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> RecipeError:
        return RecipeError(f"{self.source}: {message}")

    def keys(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in sorted(table):
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(f"unknown key '{key}' in {where}{hint}")

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(f"'{key}' must be a table ([{key}])")
        return value

    def tables(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(f"'{key}' must be an array of tables ([[{key}]])")
        return value

    def text(self, data: dict[str, Any], key: str, default: str = "",
             required: bool = False) -> str:
        if key not in data:
            if required:
                raise self.fail(f"'{key}' is required")
            return default
        value = data[key]
        if not isinstance(value, str) or not value:
            raise self.fail(f"'{key}' must be a non-empty string")
        return value

    def number(self, data: dict[str, Any], key: str) -> int:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
            raise self.fail(f"'{key}' must be a number from 0 to 2147483647")
        return value

    def strings(self, data: dict[str, Any], key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"'{key}' must be a list of strings")
        return tuple(value)

    def mode(self, value: Any) -> int:
        if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
            raise self.fail(f"mode {value!r} must be an octal string such as \"0755\"")
        return int(value, 8)

    def abs_path(self, value: str, where: str) -> str:
        if not value.startswith("/"):
            raise self.fail(f"{where}: {value!r} must be an absolute path")
        if ".." in value.split("/"):
            raise self.fail(f"{where}: {value!r} must not contain '..' (paths stay in the root)")
        return value

    def path(self, data: dict[str, Any], key: str, required: bool = False) -> str:
        value = self.text(data, key, required=required)
        return normalize(self.abs_path(value, key)) if value else ""


# ---- built-in recipes and lookup ---------------------------------------------------------------


def builtin_dir() -> str:
    return str(resources.files("slimmer") / "recipes")


def builtin_recipes() -> list[Recipe]:
    directory = builtin_dir()
    return [load_recipe(os.path.join(directory, name))
            for name in sorted(os.listdir(directory)) if name.endswith(".toml")]


def find_recipe(name_or_path: str) -> Recipe:
    """A recipe by built-in name, or from a file path."""
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        return load_recipe(name_or_path)
    known = {r.name: r for r in builtin_recipes()}
    if name_or_path not in known:
        close = difflib.get_close_matches(name_or_path, sorted(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RecipeError(f"{name_or_path}: no such built-in recipe{hint}; known: "
                          f"{', '.join(sorted(known))}")
    return known[name_or_path]


def matching_recipes(program: str, real: str, recipes: list[Recipe]) -> list[Recipe]:
    return [r for r in recipes if r.matches(program, real)]


def expand(pattern: str, program_real: str, triplet: str) -> str:
    """`{name}`: the program's real file name; `{triplet}`: the Debian multiarch triplet of its
    architecture (x86_64-linux-gnu)."""
    return pattern.replace("{name}", os.path.basename(program_real)).replace("{triplet}", triplet)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """An absolute glob as a regex over absolute paths: `*` and `?` stay within one name,
    `**` spans any number of directories, `[...]` is a character class."""
    out = []
    parts = pattern.strip("/").split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        out.append(_segment(part) + ("" if last else "/"))
    return re.compile("/" + "".join(out))


def _segment(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in part[i + 1:]:
            end = part.index("]", i + 1)
            body = part[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def fixed_prefix(pattern: str) -> str:
    """The directories of a glob before its first wildcard: where to start looking."""
    fixed = []
    for part in pattern.strip("/").split("/"):
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/" + "/".join(fixed)
