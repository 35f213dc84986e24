"""Fuzzing the recipe parser and the glob matcher with Hypothesis (issue 17).

Documents built from a valid recipe, then mutated (wrong types, random strings in fields,
random globs, deep nesting, unknown keys, bytes flipped), go through load_recipe; the only
allowed outcomes are a Recipe or a SlimmerError whose message is one line naming the file.
A parsed recipe's accounts must give one /etc/passwd line per user, and its globs must match
as a plain regex of the same meaning would (on patterns small enough for a regex to be quick).
The run is bounded (FUZZ below: about 10 s in all) and derandomized when CI=true (the
profile tests/conftest.py loads).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from slimmer.assemble import baseline
from slimmer.assemble.globs import BadGlob, compile_glob
from slimmer.assemble.recipe import Recipe, load_recipe
from slimmer.errors import SlimmerError
from slimmer.tree import File, FileTree

# On top of the profile tests/conftest.py loads (derandomized when CI=true).
FUZZ = settings(max_examples=1000, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

BASE: dict[str, Any] = {
    "name": "tool",
    "description": "what it is",
    "match": ["/usr/bin/tool", "/usr/bin/tool-*"],
    "programs": ["/usr/bin/tool"],
    "with": ["tzdata"],
    "files": {"include": ["/usr/lib/{name}/**", "/etc/tool.conf"],
              "exclude": ["/usr/lib/{name}/test/**", "/**/*.log"]},
    "dirs": [{"path": "/var/lib/tool", "mode": "0750", "owner": "svc", "group": "svc"}],
    "users": [{"name": "svc", "uid": 1000, "gid": 1000, "home": "/var/lib/tool",
               "shell": "/usr/sbin/nologin"}],
    "groups": [{"name": "svc", "gid": 1000}],
    "image": {"entrypoint": ["/usr/bin/tool", "serve"], "cmd": ["--port", "8080"],
              "env": {"TOOL_HOME": "/var/lib/tool"}, "workdir": "/var/lib/tool",
              "user": "svc", "expose": ["8080/tcp"], "stop_signal": "SIGTERM"},
}

GLOB_CHARS = "ab/*?[]!^-z\\.:\n{}"
ACCOUNT_CHARS = "ab:/+-\n\r\x85\u2028\x00 ."
globs = st.text(alphabet=GLOB_CHARS, max_size=24).map(lambda s: "/" + s)
scalars = st.one_of(
    st.text(max_size=30), globs, st.integers(min_value=-2**63, max_value=2**63 - 1),
    st.floats(), st.booleans(), st.datetimes(min_value=datetime(1, 1, 1)),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


@dataclass(frozen=True, slots=True)
class Deep:
    """Arrays nested `depth` times around a 1: deeper than tomllib's recursion allows."""

    depth: int


def toml_value(value: Any) -> str:
    """Any value as an inline TOML value."""
    if isinstance(value, Deep):
        return "[" * value.depth + "1" + "]" * value.depth
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, float):
        return ("nan" if value != value else "inf" if value == float("inf")
                else "-inf" if value == float("-inf") else repr(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    return str(value)


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    return '"' + "".join(f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 32 or ord(c) == 127
                         else c for c in text) + '"'


def toml_document(data: dict[str, Any]) -> bytes:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in data.items()).encode()


def paths_in(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document where a value sits (keys and list indexes)."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += paths_in(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += paths_in(value, (*prefix, index))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = json.loads(json.dumps(BASE))  # a deep copy
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(paths_in(data)))
        parent = data
        for step in where[:-1]:
            parent = parent[step]
        kind = draw(st.sampled_from(["value", "glob", "string", "nest", "key", "drop"]))
        if kind == "value":
            parent[where[-1]] = draw(values)
        elif kind == "glob":
            parent[where[-1]] = draw(globs)
        elif kind == "string":
            parent[where[-1]] = draw(st.text(max_size=40))
        elif kind == "nest":
            parent[where[-1]] = Deep(draw(st.integers(1, 3000)))
        elif kind == "key" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(values)
        elif kind == "drop" and isinstance(parent, dict):
            del parent[where[-1]]
    if draw(st.booleans()):  # the fields that become /etc/passwd and /etc/group lines
        table, key = draw(st.sampled_from([("users", "name"), ("users", "home"),
                                           ("users", "shell"), ("groups", "name")]))
        if isinstance(data.get(table), list) and data[table] and isinstance(data[table][0], dict):
            prefix = "/" if key != "name" else ""
            data[table][0][key] = prefix + draw(st.text(alphabet=ACCOUNT_CHARS, min_size=1,
                                                        max_size=12))
    text = toml_document(data)
    if draw(st.integers(0, 3)):
        return text
    # Byte-level damage: what a truncated, badly encoded or hand-broken file looks like.
    at = draw(st.integers(0, len(text)))
    cut = draw(st.integers(0, 8))
    return text[:at] + draw(st.binary(max_size=8)) + text[at + cut:]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "r.toml"


def load(path: Path, data: bytes) -> Recipe | None:
    path.write_bytes(data)
    try:
        return load_recipe(str(path))
    except SlimmerError as err:
        message = str(err)
        assert message.splitlines() == [message], message
        assert message.startswith(f"{path}: "), message
        return None


@FUZZ
@given(document=mutated())
def test_mutated_recipes_parse_or_fail_in_one_line(recipe_file: Path, document: bytes) -> None:
    recipe = load(recipe_file, document)
    event("parsed" if recipe is not None else "refused")
    if recipe is None:
        return
    for pattern in (*recipe.include, *recipe.exclude):
        assert isinstance(compile_glob(pattern).fullmatch("/usr/lib/tool/x.log"), bool)
    recipe.matches("/usr/bin/tool", "/usr/bin/tool-1")
    try:
        users, groups = baseline.accounts(recipe.users, recipe.groups)
    except SlimmerError as err:  # an account given twice, differently
        assert str(err).splitlines() == [str(err)]
        return
    tree = FileTree()
    baseline.add_accounts(tree, users, groups)
    passwd = tree.get("/etc/passwd")
    assert isinstance(passwd, File) and passwd.data is not None
    lines = passwd.data.decode().split("\n")[:-1]
    assert len(lines) == len(users) and all(line.count(":") == 6 for line in lines)


def reference(pattern: str) -> re.Pattern[str]:
    """The same glob as a regex (backtracking: fine for the short patterns used here)."""
    parts = pattern.strip("/").split("/")
    out = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_reference_name(part) + ("" if last else "/"))
    return re.compile("/" + "".join(out), re.DOTALL)


def _reference_name(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        char = part[i]
        close = -1
        if char == "[":
            body = i + 1 + (part[i + 1:i + 2] in ("!", "^"))
            close = part.find("]", body + (part[body:body + 1] == "]"))
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif close >= 0:
            negated = part[i + 1] in "!^"
            members = part[i + 1 + negated:close]
            ranges = re.sub(r"(.)-(.)", lambda m: f"{re.escape(m[1])}-{re.escape(m[2])}",
                            members, flags=re.DOTALL)
            singles = "".join(re.escape(c) if len(c) == 1 else c
                              for c in re.findall(r"\\.-\\.|.-\\.|\\.-.|.-.|.", ranges,
                                                  flags=re.DOTALL))
            out.append(f"(?!/)[{'^' if negated else ''}{singles}]")
            i = close
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


names = st.text(alphabet="ab[]!^-z\\.*?:\n", max_size=5)
paths = st.lists(names, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
short_globs = st.lists(st.one_of(st.just("**"), st.text(alphabet=GLOB_CHARS.replace("/", ""),
                                                        max_size=6)),
                       min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@FUZZ
@given(pattern=short_globs, path=paths)
def test_globs_match_as_the_regex_of_the_same_meaning(pattern: str, path: str) -> None:
    try:
        glob = compile_glob(pattern)
    except BadGlob as err:
        assert str(err).splitlines() == [str(err)] and "is reversed" in str(err)
        return
    matched = glob.fullmatch(path)
    event(f"matched={matched}")
    assert matched == bool(reference(pattern).fullmatch(path))


@FUZZ
@given(pattern=globs, path=st.text(alphabet="ab/z.\n", max_size=400))
def test_any_glob_on_any_path_is_quick_and_total(pattern: str, path: str) -> None:
    try:
        glob = compile_glob("/**/" * 20 + pattern)
    except BadGlob:
        return
    assert isinstance(glob.fullmatch("/" + path), bool)
