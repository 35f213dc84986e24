"""Fixture registration and the Hypothesis profile; the helpers themselves live in
tests/support/ (see its __init__)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# The fixtures: `cc` (C fixtures), the private Docker daemon and podman storage, qemu binfmt.
pytest_plugins = ["tests.support.compile", "tests.support.engines", "tests.support.roots"]

# Hypothesis (the fuzz targets): "ci" is derandomized, the same examples on every run.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture(autouse=True, scope="session")
def _layer_cache_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The layer cache (on by default, under $XDG_CACHE_HOME/slimmer) of the session's module
    and session fixtures, and of the processes they start: under the session's temporary
    directory, never the home directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache-session")))
        yield


@pytest.fixture(autouse=True)
def _layer_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test's own layer cache, for it and the processes it starts: no test sees
    another's entries."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
