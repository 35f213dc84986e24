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
from typing import Any

from slimmer.assemble.globs import BadGlob, compile_glob
from slimmer.errors import SlimmerError, printable
from slimmer.fileio import read_small_file
from slimmer.image.model import RunConfig
from slimmer.paths import normalize


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
    image: RunConfig = field(default_factory=RunConfig)  # [image]: defaults, below the command line

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
    """Read and check one recipe file (a FIFO, a directory or a huge file is refused before
    it is read)."""
    raw = read_small_file(path, "recipe")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({printable(str(exc), 200)})") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise RecipeError(f"{path}: not a recipe (arrays or tables nested too deeply)") from None
    return parse_recipe(data, path)


def _shown(value: Any) -> str:
    """A value from a recipe in a message: repr (which escapes line breaks), shortened."""
    if isinstance(value, (list, dict)):
        return type(value).__name__  # a deeply nested one must not be printed whole
    return printable(repr(value), 80)


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
        users.append(User(check.account(item, "name", required=True), check.number(item, "uid"),
                          check.number(item, "gid"),
                          check.account(item, "home", path=True) or "/nonexistent",
                          check.account(item, "shell", path=True) or "/usr/sbin/nologin"))
    groups = []
    for item in check.tables(data, "groups"):
        check.keys(item, _GROUP, "[[groups]]")
        groups.append(Group(check.account(item, "name", required=True),
                            check.number(item, "gid")))
    return Recipe(
        name=check.name(data),
        source=source,
        description=check.text(data, "description"),
        match=tuple(check.glob(p, "match") for p in check.strings(data, "match")),
        programs=tuple(check.abs_path(p, "programs") for p in check.strings(data, "programs")),
        include=tuple(check.glob(check.abs_path(p, "include"), "include")
                      for p in check.strings(files, "include")),
        exclude=tuple(check.glob(check.abs_path(p, "exclude"), "exclude")
                      for p in check.strings(files, "exclude")),
        dirs=tuple(dirs),
        users=tuple(users),
        groups=tuple(groups),
        with_features=check.strings(data, "with"),
        image=RunConfig(
            entrypoint=check.strings(image, "entrypoint") if "entrypoint" in image else None,
            cmd=check.strings(image, "cmd") if "cmd" in image else None,
            env=tuple(f"{k}={v}" for k, v in check.env(image)),
            working_dir=check.path(image, "workdir"),
            user=check.text(image, "user"),
            exposed_ports=check.strings(image, "expose"),
            stop_signal=check.text(image, "stop_signal"),
        ),
    )


def account_problem(value: str) -> str | None:
    """Why `value` cannot be a field of an /etc/passwd or /etc/group line, or None: a ':'
    would start another field and a line break another line (another user, uid 0 say)."""
    if ":" in value:
        return "must not contain ':'"
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or not value.isprintable():
        return "must not contain line breaks or control characters"
    if value[:1] in ("+", "-"):
        return "must not start with '+' or '-' (NIS entries in /etc/passwd)"
    return None


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
                raise self.fail(f"unknown key {_shown(key)} in {where}{hint}")

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
            raise self.fail(f"mode {_shown(value)} must be an octal string such as \"0755\"")
        return int(value, 8)

    def abs_path(self, value: str, where: str) -> str:
        if not value.startswith("/"):
            raise self.fail(f"{where}: {_shown(value)} must be an absolute path")
        if ".." in value.split("/"):
            raise self.fail(f"{where}: {_shown(value)} must not contain '..' "
                            "(paths stay in the root)")
        return value

    def glob(self, value: str, where: str) -> str:
        try:
            compile_glob(value)
        except BadGlob as exc:
            raise self.fail(f"{where}: {exc}") from None
        return value

    def name(self, data: dict[str, Any]) -> str:
        value = self.text(data, "name", required=True)
        if not value.isprintable():
            raise self.fail(f"'name' {_shown(value)} must not contain control characters")
        return value

    def account(self, data: dict[str, Any], key: str, required: bool = False,
                path: bool = False) -> str:
        """A field of an /etc/passwd or /etc/group line."""
        value = self.path(data, key, required) if path else self.text(data, key, "", required)
        problem = account_problem(value) if value else None
        if problem:
            raise self.fail(f"'{key}' {_shown(value)} {problem}")
        return value

    def env(self, image: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        env = image.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise self.fail("[image] env must be a table of strings")
        for key, value in env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise self.fail(f"[image] env {_shown(key)}: a name must be non-empty without "
                                "'=', and neither name nor value may hold a NUL")
        return tuple(sorted(env.items()))

    def path(self, data: dict[str, Any], key: str, required: bool = False) -> str:
        value = self.text(data, key, required=required)
        return normalize(self.abs_path(value, key)) if value else ""


# ---- built-in recipes and lookup ---------------------------------------------------------------


def builtin_dir() -> str:
    """The built-in recipes, installed as files beside the package (package-data; found by
    path: importlib.resources took 7 ms of every start-up to say the same)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


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


def fixed_prefix(pattern: str) -> str:
    """The directories of a glob before its first wildcard: where to start looking."""
    fixed = []
    for part in pattern.strip("/").split("/"):
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/" + "/".join(fixed)
