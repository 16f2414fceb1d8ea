"""The CLI as a user runs it: in a fresh interpreter, with what it imported (test_cli.py, test_registry_mirror.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def modules_after(args: list[str], env: dict[str, str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run the CLI in a fresh interpreter and report which modules it imported."""
    code = (
        "import sys, json\n"
        "from govern.cli import cli\n"
        "try:\n"
        "    cli(args=sys.argv[1:], prog_name='govern')\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "else:\n"
        "    code = 0\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1])), done
