"""Every dynamic program of this machine, resolved by slimmer and listed by the real loader
(`ld.so --list`, used only as a test oracle): the same files in the same order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slimmer import Resolver, SysRoot
from slimmer.errors import SlimmerError
from slimmer.loader.elf import read_elf
from tests.support.host import host
from tests.support.loader import HOST_LOADER, loader_list


def host_programs() -> list[str]:
    found = []
    for directory in ("/usr/bin", "/usr/sbin"):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                continue
            try:
                info = read_elf(path)
            except SlimmerError:
                continue
            if info.interpreter == HOST_LOADER:
                found.append(path)
    return found


@pytest.mark.slow
def test_all_host_programs_match_the_real_loader() -> None:
    programs = host_programs()
    assert len(programs) > 300
    resolver = Resolver(SysRoot("/"), host().options())
    differ = []
    for program in programs:
        closure = resolver.closure(program)
        oracle = loader_list(Path(os.path.realpath(program)))
        ours = [lib.path for lib in closure.libraries]
        ours += [f"MISSING:{m.soname}" for m in closure.missing]
        theirs = [p for p in oracle if p != HOST_LOADER]
        if len(theirs) == 1 and theirs[0].startswith("MISSING:"):
            ok = theirs[0] in ours
        else:
            ok = ours == theirs and (HOST_LOADER in oracle) == (closure.interpreter is not None)
        if not ok:
            differ.append(f"{program}: ours {ours} loader {theirs}")
    assert differ == [], "\n".join(differ[:20])
