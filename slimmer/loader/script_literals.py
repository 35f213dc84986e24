"""The absolute paths a script's text names in its string literals: what an interpreted program
(perl, python, ruby, php, tcl, node, sh...) compiles in, as `.rodata` is for an ELF file.
Nothing runs; the text is read, not parsed:

- a literal is a quoted string on one line: '...' or "..." (a backslash escapes the next
  character, but not in a shell's single quotes); a quote that does not close on its line is
  taken as a character (an apostrophe in a regular expression or a here-document spoils one
  line, not the rest of the file); backquotes hold commands (sh, perl, ruby), read as code;
- a `#` at the start of a line or after a blank or `;` outside a literal starts a comment;
- a literal that begins with `/` and holds no blank is a path (one with a blank is a message),
  each part of a `/a:/b` list too; where it goes on with a variable, a format or a glob
  (`"/usr/share/cows/$f"`, `f"/etc/app/{name}"`, `"/etc/app.d/*.conf"`), or ends as a name the
  code completes (`'/usr/share/pam/common-' . $type`), the directory before it is what it
  names;
- the text is read up to MAX_TEXT bytes and up to its first NUL (a self-extracting script's
  payload is no text); a literal longer than MAX_LITERAL characters is no path.

The evidence step (assemble/evidence.py) keeps the paths found under the rules of compiled paths.
"""

from __future__ import annotations

import re

from slimmer.errors import SlimmerError
from slimmer.loader.root import Root
from slimmer.loader.scripts import read_shebang
from slimmer.loader.shell import shell_of
from slimmer.paths import normalize

MAX_TEXT = 1 << 18  # as commands.py reads a shell script: Debian 12's largest is 42 KB
MAX_LITERAL = 1023  # as strings.py takes an ELF literal
QUOTES = "'\""
# Where a literal stops being a plain path: interpolation ($x, @x, {x}, #{x}), formats (%s),
# globs, escapes and what separates words.
_CUT = re.compile(r"[$@{}%*?\[\]\\()<>|;,&]")
_BLANK = re.compile(r"\s")
CONTINUED = ("-", "_", ".")  # how a literal ends that the code completes by concatenation
# Directories an interpreter searches for its modules: one script's literal naming one, or a
# directory in one, does not bring it whole; a file in it still comes.
_SEARCHED = re.compile(
    r"/(dist-packages|site-packages|site_perl|vendor_perl|perl5|vendor_ruby|site_ruby"
    r"|node_modules|nodejs|php|tcltk|lua)$"
    r"|^/usr/(local/)?lib/python[0-9.]*$|^/usr/(local/)?share/perl/[0-9.]+$"
    r"|^/usr/lib/[^/]+/perl(-base|5)?(/[0-9.]+)?$|^/usr/lib/ruby(/[0-9.]+)?$")


def module_dir(path: str) -> bool:
    """Whether `path` is a module directory of an interpreter (dist-packages, perl5...)."""
    return bool(_SEARCHED.search(path))


def searched(path: str) -> bool:
    """Whether `path` is a module directory of an interpreter or lies in one (a directory
    there is not kept whole for a script: the interpreter's recipe decides on its tree)."""
    while len(path) > 1:
        if module_dir(path):
            return True
        path = path.rpartition("/")[0]
    return False


def script_paths(root: Root, script: str) -> tuple[str, ...]:
    """The path literals of a script of the root (its `#!` says whether it is a shell's);
    () for a file without a `#!` line or that cannot be read."""
    try:
        bang = read_shebang(root, script)
        if bang is None:
            return ()
        text = root.read_bytes(script, MAX_TEXT) or b""
    except SlimmerError:
        return ()
    return path_literals(text, shell=shell_of(bang.interpreter, bang.env_program))


def path_literals(text: bytes, *, shell: bool = False) -> tuple[str, ...]:
    """The absolute paths named by the string literals of a script's text, normalised, in
    order, each once. `shell`: single quotes escape nothing (sh, bash, dash...)."""
    text = text[:MAX_TEXT].split(b"\x00", 1)[0]
    out: dict[str, None] = {}
    for line in text.decode("utf-8", "surrogateescape").splitlines():
        for literal in _strings(line, shell):
            for path in _paths(literal):
                out.setdefault(path, None)
    return tuple(out)


def _strings(line: str, shell: bool) -> list[str]:
    """The quoted strings of one line, comments left out."""
    out = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "#" and (i == 0 or line[i - 1] in " \t;"):
            break
        if ch not in QUOTES:
            i += 1
            continue
        escapes = not (shell and ch == "'")
        j = i + 1
        while j < n and line[j] != ch:
            j += 2 if escapes and line[j] == "\\" else 1
        if j >= n:  # not closed on its line: a character
            i += 1
            continue
        out.append(line[i + 1:j])
        i = j + 1
    return out


def _paths(literal: str) -> list[str]:
    if not literal.startswith("/") or len(literal) > MAX_LITERAL or _BLANK.search(literal):
        return []
    out = []
    for part in literal.split(":"):
        if not part.startswith("/"):
            continue
        cut = _CUT.search(part)
        if cut is not None:  # what comes before a variable, a format or a glob: its directory
            part = part[:cut.start()].rpartition("/")[0]
        elif part.endswith(CONTINUED):  # '/usr/share/pam/common-' . $type: its directory
            part = part.rpartition("/")[0]
        if part and part != "/" and part.isprintable():
            out.append(normalize(part))
    return out
