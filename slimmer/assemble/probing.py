"""`--probe` for `slim` and `pack`: the workloads an image would run, run once in the sandbox
(slimmer/probe), and what they touched handed to the build as BuildOptions.probed.

slim runs the image's own Entrypoint and Cmd (or the Entrypoint with each `--probe-args`), with
the image's Env, WorkingDir and User, over the image's merged root laid out in a private
directory. pack runs the first program with each `--probe-args`, as the image would run it (the
image's --user, --env and --workdir, PATH as the image's default), over the root it packs from
(`--root`, or the host's, whose /home, /root, /run, /tmp... stay hidden).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from slimmer.assemble import baseline, spec
from slimmer.assemble.recipe import User
from slimmer.image.merged import Image
from slimmer.image.model import RunConfig
from slimmer.loader.programs import DEFAULT_PATH
from slimmer.loader.root import Root
from slimmer.probe.probe import PREFIX, Probed, kept
from slimmer.probe.sandbox import ProbeError, Run, Workload, find_tools, lay_out, run
from slimmer.tree import FileTree


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """--probe-args (each a workload's arguments; none: the image's own command line),
    --probe-stdin, --probe-timeout."""

    args: tuple[tuple[str, ...], ...] = ()
    stdin: str | None = None
    timeout: float = 30.0
    tool_path: str | None = None  # where bwrap and strace are looked for (the caller's PATH)


@dataclass(frozen=True, slots=True)
class Probe:
    """What the probe ran and what of it the image keeps."""

    runs: tuple[Run, ...]
    kept: tuple[Probed, ...]


def ids(user: str, users: tuple[User, ...]) -> tuple[int, int]:
    """uid and gid of an image's User ("" is root)."""
    given = baseline.user_spec(user, (*baseline.USERS, *users)) or "0:0"
    uid, _, gid = given.partition(":")
    return int(uid), int(gid or uid)


def probe_image(image: Image, config: RunConfig, users: tuple[User, ...],
                options: ProbeOptions) -> Probe:
    """Probe a merged image (slim): its config is `config` (merged), `users` the accounts the
    slim build knows."""
    tools = find_tools(options.tool_path)  # before laying anything out
    entry = tuple(config.entrypoint or ())
    commands = ([(*entry, *args) for args in options.args] if options.args
                else [(*entry, *(config.cmd or ()))])
    uid, gid = ids(config.user, users)
    env = spec.env_pairs(config.env)
    directory = tempfile.mkdtemp(prefix="slimmer-probe-root-")
    try:
        lay_out(image.tree, directory)
        runs = tuple(run(tools, directory, _workload(argv, env, config.working_dir, uid, gid,
                                                     options)) for argv in commands)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return Probe(runs, kept(image.root, list(runs)))


def probe_root(root: Root, directory: str, program: str, config: RunConfig,
               users: tuple[User, ...], options: ProbeOptions) -> Probe:
    """Probe `program` of the root at `directory` (pack), with each of options.args."""
    tools = find_tools(options.tool_path)
    env = spec.env_pairs((f"PATH={DEFAULT_PATH}", *config.env))
    uid, gid = ids(config.user, users)
    host = os.path.realpath(directory) == "/"
    runs = tuple(run(tools, directory, _workload((program, *args), env,
                                                 config.working_dir, uid, gid, options), host)
                 for args in options.args)
    return Probe(runs, kept(root, list(runs)))


def _workload(argv: tuple[str, ...], env: tuple[str, ...], cwd: str, uid: int,
              gid: int, options: ProbeOptions) -> Workload:
    if not argv:
        raise ProbeError("--probe: the image has neither Entrypoint nor Cmd to run")
    return Workload(argv, env, cwd or "/", uid, gid,
                    options.stdin, options.timeout)


def beyond_static(probe: Probe, tree: FileTree) -> list[Probed]:
    """What the image holds because of the probe alone (no other step brought it)."""
    return [p for p in probe.kept if tree.reasons.get(p.path, "").startswith(PREFIX)]


def probe_report(probe: Probe, tree: FileTree) -> dict[str, Any]:
    """The probe's part of --report json."""
    return {
        "runs": [{"argv": list(r.workload.argv), "status": r.status,
                  "stopped_at_time_limit": r.status is None, "touched": len(r.touched)}
                 for r in probe.runs],
        "kept": len(probe.kept),
        "beyond_static": [{"path": p.path, "reason": p.reason}
                          for p in beyond_static(probe, tree)],
    }


def summary(probe: Probe, tree: FileTree, shown: int = 8) -> list[str]:
    """The probe's lines on stderr: each run, then what it alone brought."""
    lines = []
    for r in probe.runs:
        end = (f"stopped at the time limit ({r.workload.timeout:g} s)" if r.status is None
               else f"exit status {r.status}")
        lines.append(f"probe: ran {' '.join(r.workload.argv)}: {end}, "
                     f"{len(r.touched)} accesses")
    extra = beyond_static(probe, tree)
    lines.append(f"probe: {len(probe.kept)} paths touched, {len(extra)} kept beyond the "
                 f"static evidence" + (":" if extra else ""))
    lines += [f"  {p.path} ({p.reason})" for p in extra[:shown]]
    if len(extra) > shown:
        lines.append(f"  and {len(extra) - shown} more (--report json lists them)")
    return lines
