"""Recipes: strict reading, the built-in ones, globs, and what applying one adds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from slimmer.assemble import baseline
from slimmer.assemble.assembly import assemble
from slimmer.assemble.globs import BadGlob, compile_glob
from slimmer.assemble.options import from_keywords
from slimmer.assemble.pack import pack
from slimmer.assemble.recipe import User, builtin_recipes, expand, find_recipe, load_recipe
from slimmer.assemble.recipes_apply import _glob
from slimmer.assemble.slim import _account
from slimmer.errors import SlimmerError
from slimmer.image.merged import Image
from slimmer.tree import Dir, File
from tests.support.cli import error_line, run_process
from tests.support.cli import run as slimmer


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return str(path)


def test_builtin_recipes_load_and_name_their_programs() -> None:
    names = {r.name: r for r in builtin_recipes()}
    assert {"python3", "nginx", "git", "perl", "redis"} <= set(names)
    assert names["nginx"].image.entrypoint == ("/usr/sbin/nginx", "-g", "daemon off;")
    assert names["python3"].matches("/usr/bin/python3", "/usr/bin/python3.11")
    assert names["redis"].matches("/usr/bin/redis-server", "/usr/bin/redis-check-rdb")
    assert not names["git"].matches("/usr/bin/jq", "/usr/bin/jq")


@pytest.mark.parametrize(("text", "message"), [
    ('name = "x"\nentrypiont = 1\n', "unknown key 'entrypiont' in the top level"),
    ('name = "x"\n[image]\nentrypiont = ["a"]\n',
     "unknown key 'entrypiont' in [image] (did you mean 'entrypoint'?)"),
    ('name = "x"\n[files]\nincludes = ["/a"]\n',
     "unknown key 'includes' in [files] (did you mean 'include'?)"),
    ('name = "x"\n[files]\ninclude = ["etc/x"]\n', "'etc/x' must be an absolute path"),
    ('name = "x"\n[files]\ninclude = ["/etc/../../host"]\n', "must not contain '..'"),
    ('name = "x"\n[[dirs]]\npath = "/d"\nmode = "rwx"\n', "must be an octal string"),
    ('name = "x"\n[[users]]\nname = "u"\nuid = -1\ngid = 1\n', "'uid' must be a number"),
    ('name = "x"\nmatch = "/usr/bin/x"\n', "'match' must be a list of strings"),
    ('description = "no name"\n', "'name' is required"),
    ('name = "x"\n[image]\nenv = { A = 1 }\n', "env must be a table of strings"),
    ('name = \n', "not valid TOML"),
])
def test_bad_recipes_are_refused_with_the_file_named(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SlimmerError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_unknown_builtin_suggests_one() -> None:
    with pytest.raises(SlimmerError, match="no such built-in recipe \\(did you mean 'nginx'"):
        find_recipe("ngnix")


def test_globs() -> None:
    rx = compile_glob("/usr/lib/python3.11/**")
    assert rx.fullmatch("/usr/lib/python3.11/json/__init__.py")
    assert not rx.fullmatch("/usr/lib/python3.12/json/__init__.py")
    rx = compile_glob("/usr/lib/*/test/**")
    assert rx.fullmatch("/usr/lib/python3.11/test/x.py")
    assert not rx.fullmatch("/usr/lib/a/b/test/x.py")
    rx = compile_glob("/etc/[!x]*.conf")
    assert rx.fullmatch("/etc/a.conf") and not rx.fullmatch("/etc/x.conf")
    rx = compile_glob("/a/**/b")
    assert rx.fullmatch("/a/b") and rx.fullmatch("/a/x/y/b")


def test_a_recipe_of_ones_own(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "share/tool").mkdir(parents=True)
    (data / "share/tool/keep.txt").write_text("keep")
    (data / "share/tool/drop.log").write_text("drop")
    recipe = write(tmp_path, f'''
name = "tool"
match = ["/usr/bin/jq"]
programs = ["/usr/bin/jq"]
[files]
include = ["{data}/share/tool/**"]
exclude = ["/**/*.log"]
[[users]]
name = "svc"
uid = 1000
gid = 1000
[[groups]]
name = "svc"
gid = 1000
[[dirs]]
path = "/var/lib/tool"
mode = "0750"
owner = "svc"
group = "svc"
[image]
entrypoint = ["/usr/bin/jq", "-n"]
env = {{ TOOL = "1" }}
user = "svc"
''')
    result = pack(*from_keywords(programs=("/usr/bin/jq",), output=str(tmp_path / "t.tar"),
                                 recipes=(load_recipe(recipe),)))
    tree = result.tree
    assert f"{data}/share/tool/keep.txt" in tree
    assert f"{data}/share/tool/drop.log" not in tree
    entry = tree.get("/var/lib/tool")
    assert isinstance(entry, Dir) and (entry.mode, entry.uid, entry.gid) == (0o750, 1000, 1000)
    passwd = tree.get("/etc/passwd")
    assert isinstance(passwd, File) and b"svc:x:1000:1000:" in (passwd.data or b"")
    assert "recipe tool" in tree.reasons[f"{data}/share/tool/keep.txt"]


def test_build_command_and_overrides(tmp_path: Path) -> None:
    out = tmp_path / "n.tar"
    done = slimmer("build", "nginx", "-o", str(out), "--cmd=-t")
    assert done.returncode == 0, done.stderr
    assert "nginx:latest" in done.stdout
    listing = subprocess.run(["tar", "xOf", str(out), "manifest.json"], capture_output=True,
                             text=True, check=True).stdout
    assert '"RepoTags":["nginx:latest"]' in listing
    bad = slimmer("build", "nosuch", "-o", str(out))
    assert bad.returncode == 1 and "no such built-in recipe" in bad.stderr


def test_many_double_stars_do_not_backtrack() -> None:
    # As a regex, 12 `**` against these 30 names took 195 s; 16 against 40 would take hours.
    pattern = "/" + "**/" * 16 + "x"
    assert not compile_glob(pattern).fullmatch("/" + "/".join(["a"] * 40))
    assert compile_glob(pattern).fullmatch("/" + "/".join(["a"] * 40) + "/x")
    stars = "/" + "**/*a*/" * 30 + "b"
    assert not compile_glob(stars).fullmatch("/" + "/".join(["aaaa"] * 60))
    assert compile_glob(stars).fullmatch("/" + "/".join(["aaaa"] * 60) + "/b")
    within = "/" + "*a" * 50 + "*b"
    assert not compile_glob(within).fullmatch("/" + "a" * 5000)


def test_glob_meanings() -> None:
    assert compile_glob("/a/**").fullmatch("/a/x/y") and not compile_glob("/a/**").fullmatch("/a")
    assert compile_glob("/**").fullmatch("/") and compile_glob("/**/b").fullmatch("/b")
    assert not compile_glob("/a/**/b").fullmatch("/a//b")  # `**` inside takes whole names
    assert compile_glob("/a?c/*.so").fullmatch("/abc/x.so")
    assert not compile_glob("/a?c").fullmatch("/a/c") and not compile_glob("/a*").fullmatch("/a/b")
    assert compile_glob("/x/[]a]").fullmatch("/x/]")  # a `]` first is a member
    assert compile_glob("/x/[^a-c]").fullmatch("/x/d") and not compile_glob("/x/[!a-c]").fullmatch(
        "/x/b")
    assert compile_glob("/x/[ab").fullmatch("/x/[ab")  # not closed: an ordinary `[`
    assert not compile_glob("/a[!x]b").fullmatch("/a/b")  # a class never matches `/`
    with pytest.raises(BadGlob, match="the range 'z-a' in '\\[z-a\\]' is reversed"):
        compile_glob("/x/[z-a]")


def write_bytes(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "r.toml"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(("data", "message"), [
    (b'name = "x"\n[files]\ninclude = ["/x/[z-a]"]\n', "include: glob '/x/[z-a]': the range"),
    (b'name = "x"\n[files]\nexclude = ["/x/[9-0]*"]\n', "exclude: glob '/x/[9-0]*': the range"),
    (b'name = "x"\nmatch = ["/usr/bin/[z-a]"]\n', "match: glob '/usr/bin/[z-a]': the range"),
    (b"name = " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested too deeply"),
    (b"a = " + b"{b = " * 20_000 + b"1" + b"}" * 20_000 + b"\n", "nested too deeply"),
    (b'name = "caf\xe9"\n', "not UTF-8 text (byte 11)"),
    (b"name = 1\n", "'name' must be a non-empty string"),
    (b'name = "x"\nfiles = 1\n', "'files' must be a table"),
    (b'name = "x"\ndirs = [1]\n', "'dirs' must be an array of tables"),
    (b'name = "x"\n[[dirs]]\npath = "/d"\nmode = 755\n', "mode 755 must be an octal string"),
    (b'name = "x"\n[[dirs]]\npath = "/d"\nmode = [[[1]]]\n', "mode list must be an octal"),
    (b'name = "x"\n[[users]]\nname = "u"\nuid = 1\ngid = 1\nhome = 5\n',
     "'home' must be a non-empty string"),
    (b'name = "x"\n[image]\nentrypoint = 1\n', "'entrypoint' must be a list of strings"),
    (b'name = "x"\n[image]\nworkdir = []\n', "'workdir' must be a non-empty string"),
    (b'name = "x"\n[image]\nenv = { "A=B" = "1" }\n', "a name must be non-empty without '='"),
    (b'name = "x"\n"bad\\nkey" = 1\n', "unknown key 'bad\\nkey' in the top level"),
    (b'name = "x\\u001b[31m"\n', "must not contain control characters"),
])
def test_hostile_recipes_fail_in_one_line(tmp_path: Path, data: bytes, message: str) -> None:
    path = write_bytes(tmp_path, data)
    with pytest.raises(SlimmerError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


@pytest.mark.parametrize(("field", "value"), [
    ("name", "svc\nevil:x:0:0::/root:/bin/sh"),
    ("name", "svc:x"),
    ("name", "+svc"),
    ("home", "/home/svc\nevil:x:0:0::/root:/bin/sh"),
    ("home", "/home/svc:/bin/sh"),
    ("shell", "/bin/sh\revil"),
    ("shell", "/bin/sh:x"),
])
def test_user_fields_cannot_inject_passwd_lines(tmp_path: Path, field: str, value: str) -> None:
    user = {"name": "svc", "uid": 1000, "gid": 1000, field: value}
    lines = "\n".join(f"{k} = {_toml_str(v) if isinstance(v, str) else v}"
                      for k, v in user.items())
    path = write(tmp_path, f'name = "x"\n[[users]]\n{lines}\n')
    with pytest.raises(SlimmerError, match=f"'{field}' .* must not") as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["svc\nroot:x:0:", "svc:x", "svc\u0085evil"])
def test_group_names_cannot_inject_group_lines(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f'name = "x"\n[[groups]]\nname = {_toml_str(value)}\ngid = 1\n')
    with pytest.raises(SlimmerError, match=r"'name' .* must not") as err:
        load_recipe(path)
    assert "\n" not in str(err.value)


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, but for \\u0085 and friends)."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                         for c in value) + '"'


def _image(passwd: bytes, group: bytes = b"") -> Image:
    files = {"/etc/passwd": passwd, "/etc/group": group}
    return cast(Image, SimpleNamespace(root=SimpleNamespace(read_bytes=files.get)))


def test_a_fat_images_passwd_cannot_inject_lines() -> None:
    # glibc reads lines to "\n" only: here evil is part of svc's line, not a user.
    hidden = b"svc:x:1000:1000::/home/svc:/bin/sh\xc2\x85evil:x:0:0::/root:/bin/sh\n"
    with pytest.raises(SlimmerError, match="User evil is not in its /etc/passwd"):
        _account(_image(hidden), "evil")
    users, groups = _account(_image(hidden), "svc")
    with pytest.raises(SlimmerError, match="must not contain line breaks") as err:
        baseline.accounts(users, groups)
    assert "\n" not in str(err.value)
    with pytest.raises(SlimmerError, match="User odd is not in"):  # "²".isdigit(), not int()
        _account(_image("odd:x:\u00b2:1::/:/bin/sh\n".encode()), "odd")
    with pytest.raises(SlimmerError, match="must not contain ':'"):
        baseline.accounts([User("a:b", 1, 1)])


def test_hostile_recipe_files_through_the_cli(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    bad = write(tmp_path, 'name = "x"\n[files]\ninclude = ["/usr/lib/[z-a]/**"]\n')
    for recipe, message in [(str(fifo), "recipe is not a regular file"),
                            (str(tmp_path), "recipe is a directory"),
                            (bad, "include: glob '/usr/lib/[z-a]/**': the range 'z-a'")]:
        done = run_process("pack", "/usr/bin/jq", "--recipe", recipe, "-o",
                           str(tmp_path / "o.tar"), timeout=60)
        error_line(done, recipe, message)


@pytest.mark.parametrize("literal", [True, False])
def test_an_included_file_keeps_its_tighter_mode(tmp_path: Path, literal: bool) -> None:
    # include = ["/etc/shadow"] shipped a 0640 file as 0644.
    secret = tmp_path / "etc" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:*:19000:0:99999:7:::\n")
    secret.chmod(0o640)
    pattern = str(secret) if literal else f"{secret.parent}/sha*"
    recipe = write(tmp_path, f'name = "tool"\n[files]\ninclude = ["{pattern}"]\n')
    image, build, _ = from_keywords(("/usr/bin/jq",), str(tmp_path / "t.tar"),
                                    recipes=(load_recipe(recipe),))
    built = assemble(image, build)
    entry = built.tree.get(str(secret))
    assert isinstance(entry, File)
    assert entry.mode & 0o777 & ~0o640 == 0, oct(entry.mode)


def test_a_glob_made_bad_by_a_program_name_fails_in_one_line(tmp_path: Path) -> None:
    # `{name}` is replaced when the recipe is applied: a program named `x[z-a]` makes a class.
    recipe = load_recipe(write(tmp_path, 'name = "x"\n[files]\ninclude = ["/usr/lib/{name}*"]\n'))
    with pytest.raises(SlimmerError, match=r"r\.toml: glob '/usr/lib/x\[z-a\]\*': the range"):
        _glob(recipe.source, expand(recipe.include[0], "/usr/bin/x[z-a]", "x86_64-linux-gnu"))
