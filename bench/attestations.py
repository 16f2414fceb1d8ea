"""What checking attestations costs (issue 25): `govern audit verify` on a ledger whose every event the server signed.

A1  `govern audit verify` on N events every one authenticated and signed (the chain, the attestations), against
    the same command on N self-asserted events (the chain and one scan of the authn and actor columns), with the
    floor of the signatures alone: cryptography's Ed25519 check of the same N signatures in one Python loop

Run alone: `python -m bench.attestations [--events N] [--repeat R] [--record]` (`--record` puts the row into
bench/results.json and BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.figures import stats

BATCH = 10_000


def signed_ledger(path: Path, events: int, signed: bool, key: Path) -> None:
    """`events` small facts, each as the server records an authenticated principal's (signed), or self-asserted."""
    from govern import attribution, signing
    from govern.api.keys import _registration
    from govern.envelope import PendingEvent, utc_now
    from govern.events import DatasetSnapshotted
    from govern.storage.duckdb_log import Ledger

    ledger = Ledger(path)
    signer = signing.create(key)
    actor = (
        attribution.authenticated("bench", "be9c00000001")
        if signed
        else attribution.self_asserted("Bench <bench@example.com>", attribution.GIT_CONFIG)
    )
    with signing.signing_with(signer):
        if signed:
            ledger.append([_registration(signer, None, None, "bench")])
        written = 0
        while written < events:
            batch = [
                PendingEvent(
                    DatasetSnapshotted(
                        path=f"data/part-{i}.csv",
                        md5=f"{i:032x}",
                        sha256=f"{i:064x}",
                        size=i,
                        source="bench",
                        extracted_at="2026-01-01T00:00:00.000000Z",
                        extracted_at_basis="stage-run",
                    ),  # fmt: skip
                    actor=actor,
                    occurred_at=utc_now(),
                )
                for i in range(written, min(written + BATCH, events))
            ]
            ledger.append(batch)
            written += len(batch)


def timed(command: list[str], env: dict[str, str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")
    return times


def measure(base: Path, events: int, repeat: int) -> dict[str, Any]:
    from govern import signing
    from govern.storage.duckdb_log import Ledger

    signed, plain = base / "signed.duckdb", base / "plain.duckdb"
    signed_ledger(signed, events, True, base / "keys" / "signed.key")
    signed_ledger(plain, events, False, base / "keys" / "plain.key")
    env = {**os.environ, "GOVERN_LEDGER": str(signed)}
    verify = [sys.executable, "-m", "govern", "audit", "verify", "--json"]
    with_signatures = timed(verify, env, repeat)
    without = timed(verify, {**os.environ, "GOVERN_LEDGER": str(plain)}, repeat)
    rows = Ledger(signed).query_stored("SELECT hash, signature FROM {events} WHERE signature IS NOT NULL")
    check = signing.verifier(signing.load(base / "keys" / "signed.key").public)
    floor = []
    for _ in range(repeat):
        began = time.perf_counter()
        assert all(check.verifies(sig, signing.attestation_message(digest)) for digest, sig in rows)
        floor.append(time.perf_counter() - began)
    return {
        "A1": {
            "govern": {"signed": stats(with_signatures), "self-asserted": stats(without)},
            "peer": stats(floor),
            "peer_name": f"cryptography's Ed25519 check of the {len(rows):,} signatures, one Python loop (floor)",
            "target": f"- (reported at {events:,} events: the signatures' share of `audit verify`)",
            "met": True,
        }
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="ledger size (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement")
    parser.add_argument("--record", action="store_true", help="write the row into bench/results.json, BENCHMARKS.md")
    args = parser.parse_args(argv)
    from bench.__main__ import REPO, environment, markdown

    base = Path(tempfile.mkdtemp(prefix="govern-bench-attestations-"))
    os.environ.update({k: v for k, v in environment(base / "home").items() if k in ("HOME", "XDG_CONFIG_HOME")})
    row = measure(base, args.events, args.repeat)
    print(json.dumps(row, indent=2))
    if args.record:
        results_path = REPO / "bench" / "results.json"
        results = json.loads(results_path.read_text())
        results["rows"].update(row)
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        (REPO / "BENCHMARKS.md").write_text(markdown(results))
    print(f"bench: {base} can be deleted", file=sys.stderr)


if __name__ == "__main__":
    main()
