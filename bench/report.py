"""How bench_pack and bench_startup hand over their report: printed, and appended to the file
`make bench` collects (bench_deps starts that file)."""

from __future__ import annotations


def publish(text: str, out: str | None) -> None:
    print(text)
    if out:
        with open(out, "a") as fh:
            fh.write("\n" + text)
