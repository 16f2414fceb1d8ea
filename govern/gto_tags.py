"""GTO's git-tag grammar, so GTO, DVC Studio and gto-action see govern's promotions.

Annotated tags only (GTO ignores lightweight tags):

- ``MODEL@vX.Y.Z``      register a version
- ``MODEL@vX.Y.Z!``     deregister a version (govern: deprecate)
- ``MODEL#STAGE#N``     assign a stage; ``N`` is one more than the highest
  counter on any tag of that artifact

MLflow numbers versions 1, 2, 3...; govern maps MLflow version ``N`` to the
semver ``vN.0.0``, which keeps GTO's ordering equal to MLflow's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?$")


def semver(version: str) -> str:
    return f"v{int(version)}.0.0"


def registration(model: str, version: str) -> str:
    return f"{model}@{semver(version)}"


def deregistration(model: str, version: str) -> str:
    return f"{registration(model, version)}!"


def assignment(model: str, stage: str, counter: int) -> str:
    return f"{model}#{stage}#{counter}"


def next_counter(model: str, tags: Iterable[str]) -> int:
    """One more than the highest `#N` on any tag of `model`."""
    pattern = re.compile(rf"^{re.escape(model)}[#@].*#(\d+)$")
    counters = [int(match.group(1)) for tag in tags if (match := pattern.match(tag))]
    return max(counters, default=0) + 1


def representable(model: str, stage: str | None = None) -> bool:
    """GTO accepts the artifact (and stage) names."""
    return bool(NAME.match(model)) and (stage is None or bool(NAME.match(stage)))


def version_tags_on(model: str, tags_at_commit: Iterable[str]) -> list[str]:
    """Registration tags of `model` already pointing at one commit."""
    prefix = f"{model}@v"
    return [tag for tag in tags_at_commit if tag.startswith(prefix) and not tag.endswith("!")]
