"""The one JSON form the hash chain depends on: keys sorted, no whitespace, UTF-8 as is, no NaN.

A leaf: the envelope hashes it, attribution stores an identity in it, and neither needs the other for it.
"""

from __future__ import annotations

import json
from typing import Any

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """Serialise `value` the one way the hash chain depends on."""
    return _CANONICAL.encode(value)  # json.dumps with these options, without building an encoder per call
