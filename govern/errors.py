"""Every failure a user can cause or meet, as one exception class each.

The CLI prints `str(error)` as a single line and exits with `exit_code`; a
message says what was wrong and what to do about it.
"""

from __future__ import annotations

import re


class GovernError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1
    http_status = 500  # the status of its problem document over HTTP: `status_of`

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.__class__.__name__).strip())


class NotAGitRepository(GovernError):
    """Not inside a git repository: run `git init` first, or cd into your project."""


class NoCommitYet(GovernError):
    """The repository has no commit yet: commit your pipeline (dvc.yaml, params.yaml, code) first."""


class ConfigError(GovernError):
    """The govern configuration could not be read."""

    http_status = 400


class ProjectError(GovernError):
    """The DVC project is not usable as it is."""


class DirtyWorktree(GovernError):
    """Uncommitted changes to tracked files."""


class StageFailed(GovernError):
    """A pipeline stage failed."""

    def __init__(self, stage: str, message: str, output_tail: str = "") -> None:
        self.stage = stage
        self.output_tail = output_tail
        super().__init__(message)


class MirrorError(GovernError):
    """MLflow could not be reached or refused the run."""


class LedgerError(GovernError):
    """The ledger could not be used."""


class LedgerMissing(LedgerError):
    """No ledger yet."""


class LedgerLocked(LedgerError):
    """Another govern process holds the ledger."""

    http_status = 503


class LedgerSchemaTooNew(LedgerError):
    """The ledger was written by a newer govern."""


class EventConflict(LedgerError):
    """An event with this id already exists with different content."""

    http_status = 409


class AttestationRefused(LedgerError):
    """An event claiming authentication by govern serve, without the server's signing key: nothing was appended."""


class LedgerCorrupt(LedgerError):
    """The ledger's hash chain does not verify."""


class SecretInEvent(LedgerError):
    """An event would record a configured secret (a password of a configured URI, a secret environment value): the
    ledger can never remove what it records, so it is refused and nothing is appended (422 over HTTP)."""

    http_status = 422


class QueryError(GovernError):
    """An audit query was refused or failed."""

    http_status = 400


class QueryLimitExceeded(QueryError):
    """An audit query ran past its time or memory limit, or its result past its row or byte limit (422 over HTTP)."""

    http_status = 422  # understood, but over what an auditor's statement may cost


class NotFound(GovernError):
    """Something named on the command line does not exist."""

    http_status = 404


class PolicyViolation(GovernError):
    """The action is refused by the project's governance policy."""

    http_status = 409


class Forbidden(GovernError):
    """The acting principal's roles do not allow this operation (403 over HTTP)."""

    http_status = 403


class FourEyesViolation(PolicyViolation):
    """The approver is the person who asked for the promotion or who trained the version (403 over HTTP)."""

    http_status = 403


class InvalidInput(GovernError):
    """An argument or option has an invalid value."""

    exit_code = 2
    http_status = 400


class UnverifiableVerdict(InvalidInput):
    """An uploaded verdict the server cannot check against its repository (an unknown commit), or one that does not
    match it (another dvc.lock, other outputs): 422 over HTTP, nothing recorded."""

    http_status = 422


class StateConflict(InvalidInput):
    """The request is well formed, but the ledger's state already answers it (the same deployment, a role held,
    a token revoked, a time before the recorded history): a conflict, 409 over HTTP; exit 2 on the CLI."""

    http_status = 409


def status_of(error: BaseException) -> int:
    """The HTTP status of a failure, the API's problem and the pages' alike: the `http_status` of the first class in
    the error's MRO that declares one (500 for a failure nothing declares one for)."""
    return getattr(type(error), "http_status", 500)


def problem_kind(cls: type[BaseException]) -> str:
    """The name an error goes by over HTTP (`StateConflict` -> `state-conflict`): the server's problem `type`
    ends with it, and the remote CLI raises the same class again from it."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()


class Note(str):
    """A message among a command's warnings that reports progress, not a problem: printed without "Warning:"."""
