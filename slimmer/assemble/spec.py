"""The image's run-time config, merged from layers by one rule, for `pack`, `build` and `slim`.

Every layer is a model.RunConfig (the type an image config is read into and written from),
an empty field (None for entrypoint and cmd) being unset. From lowest to highest precedence:

1. defaults: PATH, and the first program as entrypoint;
2. the recipes: the first recipe's single settings, every recipe's env and ports;
3. the slimmed image's own config (`slim` only);
4. the command line.

A single setting (entrypoint, cmd, working dir, user, stop signal) comes from the highest layer
that sets it; env pairs from every layer, a higher layer's value winning for a name (each name
where it first appeared); labels likewise; ports from every layer, each once.

A slimmed image sits above the recipes: its config is what the image was built to run with.
It also stands in for the built-in recipes' single settings: only a recipe named by the caller
can fill what the image leaves unset (a built-in one brings its env and ports only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from slimmer.assemble.recipe import Recipe
from slimmer.errors import SlimmerError
from slimmer.image.model import RunConfig
from slimmer.loader.programs import DEFAULT_PATH


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What the caller says of the image itself: its run-time config (the top layer of the
    merge) and the manifest's annotations."""

    config: RunConfig = field(default_factory=RunConfig)
    annotations: dict[str, str] = field(default_factory=dict)


def merge(layers: Sequence[RunConfig]) -> RunConfig:
    """The layers, lowest precedence first, merged by the rule of the module docstring."""
    out = RunConfig()
    for layer in layers:
        out = RunConfig(
            env=(*out.env, *layer.env),
            entrypoint=layer.entrypoint if layer.entrypoint is not None else out.entrypoint,
            cmd=layer.cmd if layer.cmd is not None else out.cmd,
            working_dir=layer.working_dir or out.working_dir,
            user=layer.user or out.user,
            labels={**out.labels, **layer.labels},
            exposed_ports=tuple(dict.fromkeys((*out.exposed_ports, *layer.exposed_ports))),
            stop_signal=layer.stop_signal or out.stop_signal,
        )
    return out


def defaults(entrypoint: tuple[str, ...] | None = None) -> RunConfig:
    """The lowest layer: the default PATH, and `entrypoint` (the first program)."""
    return RunConfig(env=(f"PATH={DEFAULT_PATH}",), entrypoint=entrypoint)


def recipes_layer(recipes: Sequence[Recipe], first: Recipe | None) -> RunConfig:
    """The recipes as one layer: the single settings of `first` (the first recipe, see the
    module docstring), the env and ports of all, in order."""
    singles = first.image if first is not None else RunConfig()
    return RunConfig(
        env=tuple(e for r in recipes for e in r.image.env),
        entrypoint=singles.entrypoint,
        cmd=singles.cmd,
        working_dir=singles.working_dir,
        user=singles.user,
        exposed_ports=tuple(p for r in recipes for p in r.image.exposed_ports),
        stop_signal=singles.stop_signal,
    )


def slimmed_layer(config: RunConfig) -> RunConfig:
    """A slimmed image's config as a layer: an image without Entrypoint keeps none (the
    program found from its Cmd does not become one), an empty Cmd is unset."""
    return RunConfig(
        env=config.env,
        entrypoint=config.entrypoint or (),
        cmd=config.cmd or None,
        working_dir=config.working_dir,
        user=config.user,
        labels=dict(config.labels),
        exposed_ports=config.exposed_ports,
        stop_signal=config.stop_signal,
    )


def env_pairs(pairs: Sequence[str]) -> tuple[str, ...]:
    """KEY=VALUE pairs, one per name: each name where it first appeared, with its last value."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SlimmerError(f"--env {pair}: expected KEY=VALUE")
        env[key] = value
    return tuple(f"{k}={v}" for k, v in env.items())


def path_dirs(env: Sequence[str]) -> tuple[str, ...]:
    """The PATH the image's programs get (env's `#!/usr/bin/env NAME` searches it)."""
    for pair in env:
        if pair.startswith("PATH="):
            return tuple(d for d in pair[5:].split(":") if d)
    return tuple(DEFAULT_PATH.split(":"))


def port(text: str) -> str:
    number, _, proto = text.partition("/")
    proto = proto or "tcp"
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("tcp", "udp", "sctp"):
        raise SlimmerError(f"--expose {text}: expected PORT[/tcp|udp|sctp]")
    return f"{int(number)}/{proto}"


def finished(config: RunConfig) -> RunConfig:
    """The merged config as it is written: env one pair per name, ports normalised."""
    return RunConfig(
        env=env_pairs(config.env),
        entrypoint=config.entrypoint,
        cmd=config.cmd,
        working_dir=config.working_dir,
        user=config.user,
        labels=dict(config.labels),
        exposed_ports=tuple(port(p) for p in config.exposed_ports),
        stop_signal=config.stop_signal,
    )
