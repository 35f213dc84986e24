"""Recipes: strict reading, the built-in ones, globs, and what applying one adds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slimmer.errors import SlimmerError
from slimmer.packer import PackOptions, pack
from slimmer.recipe import builtin_recipes, find_recipe, glob_regex, load_recipe
from slimmer.rootfs import Dir, File


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
    rx = glob_regex("/usr/lib/python3.11/**")
    assert rx.fullmatch("/usr/lib/python3.11/json/__init__.py")
    assert not rx.fullmatch("/usr/lib/python3.12/json/__init__.py")
    rx = glob_regex("/usr/lib/*/test/**")
    assert rx.fullmatch("/usr/lib/python3.11/test/x.py")
    assert not rx.fullmatch("/usr/lib/a/b/test/x.py")
    rx = glob_regex("/etc/[!x]*.conf")
    assert rx.fullmatch("/etc/a.conf") and not rx.fullmatch("/etc/x.conf")
    rx = glob_regex("/a/**/b")
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
    result = pack(PackOptions(programs=("/usr/bin/jq",), output=str(tmp_path / "t.tar"),
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
    done = subprocess.run([sys.executable, "-m", "slimmer", "build", "nginx", "-o", str(out),
                           "--cmd=-t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "nginx:latest" in done.stdout
    listing = subprocess.run(["tar", "xOf", str(out), "manifest.json"], capture_output=True,
                             text=True, check=True).stdout
    assert '"RepoTags":["nginx:latest"]' in listing
    bad = subprocess.run([sys.executable, "-m", "slimmer", "build", "nosuch", "-o", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "no such built-in recipe" in bad.stderr
