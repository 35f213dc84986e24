"""Fixture registration and the Hypothesis profile; the helpers themselves live in
tests/support/ (see its __init__)."""

from __future__ import annotations

import os

from hypothesis import settings

# The fixtures: `cc` (C fixtures), the private Docker daemon and podman storage, qemu binfmt.
pytest_plugins = ["tests.support.compile", "tests.support.engines", "tests.support.roots"]

# Hypothesis (the fuzz targets): "ci" is derandomized, the same examples on every run.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")
