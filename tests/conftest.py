"""Fixture registration and the Hypothesis profile; the helpers themselves live in
tests/support/ (see its __init__)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# The fixtures: `cc` (C fixtures), the private Docker daemon and podman storage, qemu binfmt.
pytest_plugins = ["tests.support.compile", "tests.support.engines", "tests.support.roots"]

# Hypothesis (the fuzz targets): "ci" is derandomized, the same examples on every run.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture(autouse=True)
def _layer_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer cache (on by default, under $XDG_CACHE_HOME/slimmer) of every test, and of the
    processes it starts, is a directory of its own under the session's temporary directory:
    nothing is written to the home directory, and no test sees another's entries."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
