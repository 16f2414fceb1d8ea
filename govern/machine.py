"""The facts that explain float drift: CPU, its vector extensions, BLAS/LAPACK kernels, thread counts.

A floating-point fit gives results that differ in the last bits between
CPUs and BLAS kernels. govern records these facts with every training and
every verification, so that a verdict can say what differed between the
machine that made the committed lock and the one that re-executed it.

The numeric libraries are described as loaded in the interpreter govern
runs in, which is the one the stages' `python` resolves to when the
project's virtualenv is active (as the README's Quickstart does).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Vector extensions that change which float kernels numpy, OpenBLAS and MKL pick (x86 and ARM;
# Linux calls SSE3 `pni`).
FLOAT_FLAGS = frozenset(
    {
        "sse2", "pni", "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq",
        "avx512cd", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "asimd",
        "asimdhp", "fphp", "sve", "sve2",
    }
)  # fmt: skip

# Settings that choose kernels or thread counts, and with them the order of float operations.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "NPY_DISABLE_CPU_FEATURES",
    "VECLIB_MAXIMUM_THREADS",
)

CPUINFO = Path("/proc/cpuinfo")


def describe(numeric_libraries: list[dict[str, Any]] | None) -> dict[str, Any]:
    """CPU, threads and the numeric libraries (from the BLAS adapter; None when it could not tell)."""
    return {"cpu": cpu(), "threads": threads(), "numeric_libraries": numeric_libraries}


def cpu(cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """Model, vendor and the float-relevant flags of the first CPU (Linux); the architecture elsewhere."""
    facts: dict[str, Any] = {"architecture": platform.machine(), "model": platform.processor() or None}
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {**facts, "vendor": None, "flags": None}
    first: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            first.setdefault(key.strip(), value.strip())
    flags = (first.get("flags") or first.get("Features") or "").split()
    return {
        **facts,
        "model": first.get("model name") or first.get("CPU part") or facts["model"],
        "vendor": first.get("vendor_id") or first.get("CPU implementer"),
        "flags": sorted(FLOAT_FLAGS.intersection(flags)),
    }


def threads(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "env": {name: env.get(name) for name in THREAD_VARIABLES if env.get(name) is not None},
    }


def summary(environment: Mapping[str, Any]) -> dict[str, str | None]:
    """The machine facts of an environment as three readable lines (None where not recorded)."""
    cpu_facts, threads_facts = environment.get("cpu"), environment.get("threads")
    libraries = environment.get("numeric_libraries")
    cpu_line = None
    if cpu_facts:
        flags = " ".join(cpu_facts.get("flags") or []) or "flags not recorded"
        cpu_line = f"{cpu_facts.get('model') or 'unknown model'} ({cpu_facts.get('architecture')}; {flags})"
    library_line = None
    if libraries is not None:
        library_line = (
            "; ".join(
                f"{lib.get('internal_api')} {lib.get('version')}, {lib.get('architecture') or 'default'} kernel, "
                f"{lib.get('num_threads')} threads ({lib.get('filename')})"
                for lib in libraries
            )
            or "none loaded"
        )
    thread_line = None
    if threads_facts:
        settings = " ".join(f"{k}={v}" for k, v in (threads_facts.get("env") or {}).items()) or "none set"
        thread_line = f"{threads_facts.get('usable_cpus')} of {threads_facts.get('cpu_count')} CPUs usable; {settings}"
    return {"cpu": cpu_line, "numeric_libraries": library_line, "thread_settings": thread_line}


def differences(training: Mapping[str, Any] | None, verification: Mapping[str, Any]) -> dict[str, Any]:
    """What differs between the environment a training recorded and the one verifying it.

    Facts are compared section by section (`cpu`, `threads`, `numeric_libraries`,
    `packages`, and the top-level ones); a section the training did not record
    (an older govern) is listed as not compared, never reported as a difference.
    """
    if not training:
        return {"compared": False, "differences": [], "not_recorded_at_training": []}
    before, after = _flat(training), _flat(verification)
    both = {_section(key) for key in before} & {_section(key) for key in after}
    found = [
        {"fact": key, "training": before.get(key), "verification": after.get(key)}
        for key in sorted(set(before) | set(after))
        if _section(key) in both and before.get(key) != after.get(key)
    ]
    missing = sorted({_section(key) for key in after} - {_section(key) for key in before})
    return {"compared": True, "differences": found, "not_recorded_at_training": missing}


def _section(key: str) -> str:
    return key.split(".", 1)[0]


IGNORED = frozenset({"host", "python_executable", "packages_count"})


def _flat(environment: Mapping[str, Any]) -> dict[str, Any]:
    """Comparable facts as dotted keys; libraries keyed by their file name, not their path."""
    flat: dict[str, Any] = {}
    for key, value in environment.items():
        if key in IGNORED or value is None:
            continue
        if key == "numeric_libraries":
            flat["numeric_libraries.loaded"] = len(value)
            for library in value:
                name = library.get("filename") or f"{library.get('internal_api')}:{library.get('prefix')}"
                for field in ("version", "architecture", "threading_layer", "num_threads"):
                    flat[f"numeric_libraries.{name}.{field}"] = library.get(field)
        elif key in ("cpu", "threads", "packages") and isinstance(value, Mapping):
            for inner, item in value.items():
                if isinstance(item, Mapping):
                    for name, leaf in item.items():
                        flat[f"{key}.{inner}.{name}"] = leaf
                elif isinstance(item, list):
                    flat[f"{key}.{inner}"] = " ".join(map(str, item))
                else:
                    flat[f"{key}.{inner}"] = item
        else:
            flat[key] = value
    return flat
