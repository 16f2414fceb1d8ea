"""Run a model's own inference entry point: the `meta.infer` command template of its artifact in dvc.yaml.

`govern predict` scores a user's file with it; `govern ci verify` runs it on
both the committed and the reproduced model file to judge them by behaviour;
the server scores a consumer's rows with it.

The template is split into an argument vector (`shlex.split`) and `{model}`,
`{input}` and `{output}` are filled in inside each argument: no shell ever
runs it, so nothing needs quoting and nothing in it can chain another
command. A template written for a shell (pipes, `;`, `&&`, redirections,
`$VAR`, backticks, a leading `VAR=value`) is refused, not half-run. The
process gets the sandbox's scrubbed environment (`govern.sandbox`), and on
the server its confinement.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from govern import sandbox
from govern.errors import GovernError

ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
OPERATORS = {
    "|": "a pipe (|)", "&": "& (background or &&)", ";": "a command separator (;)", "<": "a redirection (<)",
    ">": "a redirection (>)", "(": "a subshell (()", ")": "a subshell ())", "$": "a variable or substitution ($)",
    "`": "a command substitution (`)", "\n": "a line break", "*": "a glob (*)", "?": "a glob (?)",
}  # fmt: skip


class InferenceFailed(GovernError):
    """The model's inference command failed; `last_line` is what it said last (the exception, for Python)."""

    http_status = 422  # the model's own entry point could not score these rows

    def __init__(self, message: str | None = None, last_line: str = "") -> None:
        super().__init__(message)
        self.last_line = last_line


class InferenceTimedOut(InferenceFailed):
    """The model's inference command ran past its time limit and was stopped."""

    http_status = 504


class NotAPlainCommand(InferenceFailed):
    """The inference command template is written for a shell, and govern runs no shell."""


def shell_syntax(template: str) -> str | None:
    """What a shell would act on in `template` (outside quotes that make it literal), described; None if nothing.

    Inside single quotes everything is literal, as without a shell; inside double quotes a shell would still
    expand `$` and backticks, so those are refused there too. A `#` or `~` starting a word is a shell's comment or
    home directory."""
    quote: str | None = None
    escaped, word_start = False, True
    for char in template:
        if escaped:
            escaped, word_start = False, False
            continue
        if quote == "'":
            quote = None if char == "'" else quote
            continue
        if char == "\\":
            escaped = True
            continue
        if quote == '"':
            if char == '"':
                quote = None
            elif char in "$`":
                return OPERATORS[char]
            continue
        if char in "'\"":
            quote, word_start = char, False
            continue
        if char in OPERATORS:
            return OPERATORS[char]
        if word_start and char in "#~":
            return "a comment (#)" if char == "#" else "a home directory (~)"
        word_start = char in " \t"
    return None


def command(template: str, model_file: Path, input_path: Path, output_path: Path) -> list[str]:
    """The argument vector of `template` with `{model}`, `{input}` and `{output}` filled in each argument."""
    fix = "fix meta.infer in dvc.yaml"
    plain = (
        "govern runs it as a plain command, without a shell: write it as one "
        "(`python score.py --model {model} --input {input} --output {output}`), or put the steps in a script"
    )
    found = shell_syntax(template)
    try:
        words = shlex.split(template)
    except ValueError as error:
        raise NotAPlainCommand(
            f"The inference command {template!r} cannot be split into words ({error}): {fix}"
        ) from None
    if found is None and words and ASSIGNMENT.match(words[0]):
        found = f"a variable assignment ({words[0].split('=', 1)[0]}=...)"
    if found is not None:
        raise NotAPlainCommand(
            f"The inference command {template!r} uses shell syntax, {found}: {plain}",
            "its inference command is written for a shell, which govern does not run",
        )
    if not words:
        raise NotAPlainCommand(f"The inference command is empty: {fix}")
    values = {"model": str(model_file), "input": str(input_path), "output": str(output_path)}
    try:
        return [word.format(**values) for word in words]
    except (KeyError, IndexError, ValueError) as error:
        raise InferenceFailed(
            f"The inference command {template!r} is not a template with {{model}}, {{input}} and {{output}} "
            f"({error}): {fix}"
        ) from None


def run(
    root: Path,
    template: str,
    model_file: Path,
    input_path: Path,
    output_path: Path,
    timeout: float | None = None,
    *,
    policy: sandbox.Policy | None = None,
    hidden: Iterable[Path] = (),
) -> None:
    """Run the command from `root` (the project, or the code it is confined to); `timeout` (seconds) stops it, with
    its process group, when a caller cannot wait (the server). `policy`: how it is confined (default: the scrubbed
    environment only, with the `pass_env` of the project at `root`); a confined run sees `root`, the model file and
    the input read-only, the output's folder writable, never `hidden`."""
    argv = command(template, model_file, input_path, output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if policy is None:
        from govern import config as config_module

        policy = sandbox.Policy.local(config_module.load(root))
    with tempfile.TemporaryDirectory(prefix="govern-infer-") as scratch:
        launch = sandbox.prepare(
            argv,
            policy=policy,
            scratch=Path(scratch),
            cwd=root,
            readonly=[root, model_file, input_path],
            writable=[output_path.parent],
            hidden=hidden,
        )
        try:
            process = subprocess.Popen(  # noqa: S603 - an argument vector, never a shell; see the module docstring
                launch.argv,
                cwd=root,
                env=launch.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                **launch.kwargs,
            )
        except OSError as error:
            raise InferenceFailed(
                f"The inference command could not start ({error.strerror or error}): fix meta.infer in dvc.yaml",
                str(error.strerror or error),
            ) from None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise InferenceTimedOut(
                f"The inference command ran longer than {timeout:g} s and was stopped: send fewer rows at a time"
            ) from None
    if process.returncode != 0:
        lines = (stderr or stdout).strip().splitlines()
        tail = " ".join(lines[-3:])
        raise InferenceFailed(f"The inference command failed (exit {process.returncode}): {tail}", (lines or [""])[-1])
    if policy.confine:
        take_output(output_path)


MAX_OUTPUT = 256 << 20  # bytes of predictions a confined entry point may leave for the server to read


def take_output(output_path: Path, limit: int = MAX_OUTPUT) -> None:
    """Make the output a confined entry point left (in a folder it could write) a file of the server's own before the
    server reads it: read once without following a link (a model's code made predictions.csv a link to the server's
    signing key, its .pgpass, the ledger or /proc/self/environ, and the server, reading it as itself, sent that back
    to the consumer), only a plain file with one name (no hard link either) and of at most `limit` bytes, then
    written again, new, in its place. Nothing of the sandbox runs any more (its process namespace ended with it)."""
    import stat

    try:
        handle = os.open(output_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return  # no output: the caller says so
    except OSError as error:
        raise InferenceFailed(
            f"The inference command's output is not a plain file ({error.strerror}): write the predictions to "
            "{output} as a file",
            "output not a plain file",
        ) from None
    try:
        found = os.fstat(handle)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
            raise InferenceFailed(
                "The inference command's output is not a plain file of its own (a link, a device or a pipe): write "
                "the predictions to {output} as a file",
                "output not a plain file",
            )
        if found.st_size > limit:
            raise InferenceFailed(
                f"The inference command wrote {found.st_size} bytes of predictions, over the limit of {limit}: send "
                "fewer rows at a time",
                "output too large",
            )
        chunks, size = [], 0
        while chunk := os.read(handle, 1 << 20):
            size += len(chunk)
            if size > limit:
                raise InferenceFailed(
                    f"The inference command wrote over {limit} bytes of predictions: send fewer rows at a time",
                    "output too large",
                )
            chunks.append(chunk)
    finally:
        os.close(handle)
    output_path.unlink()
    kept = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(kept, "wb") as sink:
        sink.write(b"".join(chunks))
