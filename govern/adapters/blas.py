"""The BLAS/LAPACK and OpenMP libraries numeric code would use, as threadpoolctl reports them.

The only module that imports threadpoolctl (and numpy and scipy, to load
their bundled BLAS). Loading them costs about half a second, so a training
starts the probe in the background while its first stage runs (`prefetch`),
and reads the result when it records the training.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

FIELDS = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads")

_probe: dict[str, Any] = {}
_lock = threading.Lock()


def prefetch() -> None:
    """Start describing the libraries in a background thread (once per process)."""
    with _lock:
        if "thread" not in _probe:
            _probe["thread"] = threading.Thread(target=_run, name="govern-blas-probe")
            _probe["thread"].start()


def libraries() -> list[dict[str, Any]] | None:
    """Each loaded numeric library's API, kernel architecture and thread count; None if it cannot tell."""
    prefetch()
    _probe["thread"].join()
    return _probe.get("result")


def _run() -> None:
    try:
        import importlib

        for module in ("numpy", "scipy.linalg"):
            try:
                importlib.import_module(module)
            except ImportError:
                continue
        from threadpoolctl import threadpool_info

        found = [
            {**{key: library.get(key) for key in FIELDS}, "filename": Path(library.get("filepath") or "").name}
            for library in threadpool_info()
        ]
        _probe["result"] = sorted(found, key=lambda lib: (str(lib["user_api"]), lib["filename"]))
    except Exception:  # noqa: BLE001 - a probe that fails leaves the fact unrecorded, never a training
        _probe["result"] = None
