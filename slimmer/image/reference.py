"""Image references: NAME[:TAG] checked with Docker's rules, and the forms engines name an
image by. Part of the image model (slimmer/image/model.py has the documents); kept apart so
that the CLI and the registry client can check a --tag without loading the rest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from slimmer.errors import SlimmerError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"
_NAME = re.compile(_HOST + _COMPONENT + r"(?:/" + _COMPONENT + r")*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")


class BadReference(SlimmerError):
    """An image name or tag that engines would refuse."""


@dataclass(frozen=True, slots=True)
class Reference:
    """An image reference split the way Docker normalises it."""

    name: str  # as the user wrote it, without the tag: "app", "me/app", "reg:5000/me/app"
    tag: str

    @property
    def full(self) -> str:
        """docker.io/library/app:tag, as containerd and Docker 25+ name images."""
        first = self.name.split("/", 1)[0]
        if "/" in self.name and ("." in first or ":" in first or first == "localhost"):
            return f"{self.name}:{self.tag}"
        if "/" not in self.name:
            return f"docker.io/library/{self.name}:{self.tag}"
        return f"docker.io/{self.name}:{self.tag}"

    @property
    def short(self) -> str:
        return f"{self.name}:{self.tag}"


def parse_reference(text: str) -> Reference:
    """NAME[:TAG] with Docker's rules: lower-case name components, tag of [\\w][\\w.-]{0,127}."""
    name, tag = text, "latest"
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = text.rsplit(":", 1)
    if "@" in text or not _NAME.fullmatch(name):
        raise BadReference(f"{text}: not a valid image name (lower-case letters, digits, "
                           "'.', '_', '-', '/' separated)")
    if not _TAG.fullmatch(tag):
        raise BadReference(f"{text}: not a valid tag {tag!r}")
    return Reference(name, tag)


def matches(wanted: str, names: list[str]) -> bool:
    """Whether NAME[:TAG] `wanted` names one of these references (docker.io/library/... too)."""
    full = wanted if ":" in wanted.rsplit("/", 1)[-1] else f"{wanted}:latest"
    return any(n in (wanted, full) or n.endswith(("/" + wanted, "/" + full)) for n in names)
