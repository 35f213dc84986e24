"""Benchmark: Python start-up in slim images against the fat image they come from.

The fat image is a bookworm root with python3 (mmdebstrap, the tests' cached root
$SLIMMER_TEST_CACHE/bookworm-python3.tar, made here when missing) imported into a private Docker
daemon (its own data root and socket, stopped by its pid at the end). Against it: that image
slimmed (`slimmer slim`) and this machine's /usr/bin/python3 packed (`slimmer pack`). In each,
as uid 65532 (distroless `nonroot`, who cannot write __pycache__), one container times
`python3 -c "import email.message, http.client, json, decimal"` run N times from inside (after
one untimed run), so that container start-up is not measured; rounds interleave the images.
Every container runs with LANG=C.UTF-8, the locale the slim images set (python3's recipe) and
now hold: the fat image sets none and would start in the C locale, without loading a locale's
files, so that a working locale would be measured as slimmer's cost.

    python -m bench.bench_startup [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bench.report import publish
from tests.support.dockerd import DockerdFailed, private_dockerd

IMPORTS = "import email.message, http.client, json, decimal"
LOCALE = "LANG=C.UTF-8"  # given to every container: the slim images set it (module docstring)
TARGET = 1.10  # slim median at most 10% over the fat image's
CACHE = os.environ.get("SLIMMER_TEST_CACHE", "/var/tmp/slimmer-test-cache")
ROOT = os.path.join(CACHE, "bookworm-python3.tar")
# Runs inside the container: the command N times, each timed; the seconds as JSON.
TIMER = ("import json, subprocess, sys, time\n"
         "argv = [sys.executable, '-c', sys.argv[2]]\n"
         "subprocess.run(argv, check=True)\n"
         "out = []\n"
         "for _ in range(int(sys.argv[1])):\n"
         "    start = time.perf_counter()\n"
         "    subprocess.run(argv, check=True)\n"
         "    out.append(time.perf_counter() - start)\n"
         "print(json.dumps(out))\n")


DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"


def slimmer_script() -> str:
    script = os.path.join(os.path.dirname(sys.executable), "slimmer")
    return script if os.path.exists(script) else "slimmer"


def fat_root() -> str:
    """The tests' cached bookworm+python3 root tarball, made with mmdebstrap if missing."""
    if not os.path.exists(ROOT):
        os.makedirs(CACHE, exist_ok=True)
        partial = f"{ROOT}.bench-{os.getpid()}"
        subprocess.run(["mmdebstrap", "--quiet", "--variant=apt", "--format=tar",
                        "--include=python3", "bookworm", partial], check=True)
        os.rename(partial, ROOT)
    return ROOT


@contextmanager
def private_docker() -> Iterator[dict[str, str]]:
    """A Docker daemon of our own (tests/support/dockerd.py, as the e2e tests start theirs);
    yields the environment its client needs."""
    try:
        with private_dockerd("dockerd", DOCKER, "slimmer-bench-dk-") as (_directory, env):
            yield env
    except DockerdFailed as exc:
        raise SystemExit(str(exc)) from None


def docker(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def slimmer(*args: str) -> None:
    done = subprocess.run([slimmer_script(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"slimmer {' '.join(args)}: {done.stderr.strip()}")


def images(env: dict[str, str], work: str) -> dict[str, str]:
    """Tags of the fat image, it slimmed, and this machine's python3 packed."""
    suffix = uuid.uuid4().hex[:8]
    tags = {"fat bookworm + python3": f"bench/fat:{suffix}",
            "slimmed (`slimmer slim` of it)": f"bench/slimmed:{suffix}",
            "packed (`slimmer pack /usr/bin/python3`)": f"bench/packed:{suffix}"}
    fat, slimmed, packed = tags.values()
    docker(env, "import", "--change", 'ENTRYPOINT ["/usr/bin/python3"]', fat_root(), fat)
    docker(env, "save", fat, "-o", f"{work}/fat.tar")
    slimmer("slim", f"{work}/fat.tar", "-o", f"{work}/slimmed.tar", "--tag", slimmed)
    slimmer("pack", "/usr/bin/python3", "-o", f"{work}/packed.tar", "--tag", packed)
    for name in ("slimmed", "packed"):
        docker(env, "load", "-i", f"{work}/{name}.tar")
    return tags


def measure(env: dict[str, str], tags: dict[str, str], runs: int,
            rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in tags}
    for round_no in range(rounds):
        for name, tag in tags.items():
            print(f"round {round_no + 1}/{rounds}: {name}", file=sys.stderr)
            out = docker(env, "run", "--rm", "--network", "none", "--user", "65532:65532",
                         "--env", LOCALE, tag, "-c", TIMER, str(runs), IMPORTS)
            samples[name] += json.loads(out)
    return samples


def report(samples: dict[str, list[float]], runs: int, rounds: int) -> str:
    medians = {name: statistics.median(s) for name, s in samples.items()}
    fat = next(iter(medians.values()))
    lines = [
        "## Python start-up: slim images against the fat image",
        "",
        f"- measured: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.platform()}, {os.cpu_count()} CPUs",
        f"- `python3 -c \"{IMPORTS}\"` inside the container as uid 65532 with {LOCALE} (the "
        f"slim images' locale, given to the fat image too), {runs} runs x "
        f"{rounds} round(s) per image (after one untimed run), images interleaved",
        "",
        "| image | median (ms) | min (ms) | vs fat |",
        "|---|---|---|---|",
    ]
    for name, values in samples.items():
        lines.append(f"| {name} | {medians[name] * 1e3:.1f} | {min(values) * 1e3:.1f} | "
                     f"{medians[name] / fat:.2f}x |")
    lines.append("")
    for name in list(samples)[1:]:
        ratio = medians[name] / fat
        met = "met" if ratio <= TARGET else "NOT met"
        lines.append(f"- {name}: **{ratio:.2f}x** the fat image's start-up (target: at most "
                     f"{TARGET:.2f}x: {met})")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    parser.add_argument("--runs", type=int, default=21, help="timed runs per container")
    parser.add_argument("--out", help="append the markdown report to this file as well")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else 3
    work = tempfile.mkdtemp(prefix="slimmer-bench-")
    try:
        with private_docker() as env:
            tags = images(env, work)
            samples = measure(env, tags, args.runs, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(samples, args.runs, rounds)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
