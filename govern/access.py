"""Who may do what: roles, principals, bearer tokens. Pure: no I/O, no click, no web framework.

Principals and their roles are ledger facts (`access.granted`, `access.revoked`), and so are tokens
(`token.issued`, `token.revoked`): "who could approve on date T" is a query, like "what served app X at T".
A token is shown once when it is issued; the ledger keeps only the SHA-256 of its secret. A slow password hash
(argon2, bcrypt) protects secrets people choose; this one is 256 random bits, which no hash speed makes
guessable, and every request checks it, so a fast hash is the right one (as GitHub's and PyPI's tokens do).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from govern.errors import InvalidInput

if TYPE_CHECKING:
    from govern.attribution import Actor

# The roles of the architecture, each the job of one kind of user.
ROLES: dict[str, str] = {
    "scientist": "trains, registers and requests promotions",
    "approver": "approves or rejects promotion requests (never their own, never of a version they trained)",
    "deployer": "a CD system: records deployments and retirements",
    "consumer": "asks for predictions of the versions serving its apps, and sees those apps' status",
    "verifier": "a CI runner: uploads reproduction verdicts (`govern ci verify --server`)",
    "auditor": "reads everything, writes nothing",
    "admin": "manages principals, roles and tokens",
}

# Every operation of the server, by its OpenAPI operationId, and the roles that may call it. The server checks
# each request against this table; tests/test_server.py calls every operation of the OpenAPI document with
# every role's token and with none, and fails on an operation missing here.
_READERS = frozenset({"scientist", "approver", "deployer", "auditor", "admin"})
_AUDITORS = frozenset({"auditor", "admin"})
POLICY: dict[str, frozenset[str]] = {
    "whoami": frozenset(ROLES),
    "status": _READERS,
    "production": frozenset(ROLES),  # a consumer: for its own apps only (APP_SCOPED)
    "predict": frozenset({"consumer"}),  # for its own apps only
    "inferences": frozenset({"consumer", "auditor", "admin"}),  # a consumer: its own batches, of its own apps
    "windows": _READERS,
    "events": frozenset({"auditor", "admin"}),
    "verify": _AUDITORS,
    "history": _READERS,
    "report": _READERS,
    "sql": _AUDITORS,
    "named_queries": _AUDITORS,
    "run_query": _AUDITORS,
    "anchors": _AUDITORS,
    "anchor": frozenset({"admin"}),
    "record_reproduction": frozenset({"verifier"}),
    "requests": _READERS,
    "request_promotion": frozenset({"scientist"}),
    "approve": frozenset({"approver"}),
    "reject": frozenset({"approver", "scientist"}),  # a scientist: withdrawing its own request only
    "promote": frozenset({"approver"}),  # directly, where `registry.require_approval` is off
    "deprecate": frozenset({"approver"}),
    "trainings": _READERS,
    "training": _READERS,
    "training_progress": _READERS,
    "request_training": frozenset({"scientist"}),
    "record_training": frozenset({"scientist"}),  # a training run on the scientist's machine (remote govern repro)
    "known_snapshots": frozenset({"scientist", "auditor", "admin"}),
    "cancel_training": frozenset({"scientist", "admin"}),
    "deploy": frozenset({"deployer"}),
    "retire": frozenset({"deployer"}),
    "principals": frozenset({"auditor", "admin"}),
    "grant": frozenset({"admin"}),
    "revoke": frozenset({"admin"}),
    "tokens": frozenset({"auditor", "admin"}),
    "issue_token": frozenset({"admin"}),
    "revoke_token": frozenset({"admin"}),
    "link_identity": frozenset({"admin"}),
    "identities": frozenset({"auditor", "admin"}),
    "grant_history": frozenset({"auditor", "admin"}),
    "grant_proposals": frozenset({"auditor", "admin"}),
    "confirm_grant": frozenset({"admin"}),  # never the proposer, never the grantee (govern.api.access)
    "decline_grant": frozenset({"admin"}),
    "withdraw_grant": frozenset({"admin"}),  # the proposer only
    "redeem_code": frozenset(),  # no token: the enrollment code itself authenticates (CODE_AUTHENTICATED)
}
APP_SCOPED = frozenset({"production", "predict", "inferences"})
# Operations called without a bearer token, authenticated by what the request carries (an enrollment code): no
# role may call them "as" anyone, and the server limits how often one address may try.
CODE_AUTHENTICATED = frozenset({"redeem_code"})

# Roles whose grant takes two admins (the first proposes, a second confirms) where `two_admin_grants` is on:
# an approver's decision is what four-eyes rests on, and an admin makes approvers.
PRIVILEGED = frozenset({"approver", "admin"})

# Roles one principal may not hold at once, each pair with the reason: granting (or confirming) the second is
# refused, whichever comes second.
CONFLICTS: dict[frozenset[str], str] = {
    frozenset({"admin", "approver"}): (
        "an admin decides who approves; an admin who approves too could make the approvers that count with them "
        "and approve with them: separation of duties keeps the two apart"
    ),
}


def conflict(role: str, held: Sequence[str]) -> tuple[str, str] | None:
    """The role among `held` that `role` may not be held with, and why; None when there is none."""
    for other in sorted(held):
        reason = CONFLICTS.get(frozenset({role, other}))
        if reason is not None and other != role:
            return other, reason
    return None


# What any authenticated principal may call, even one whose roles were all revoked (to learn that they were).
ANY_PRINCIPAL = frozenset({"whoami"})


def allowed(principal: Principal, operation: str, app: str | None = None) -> bool:
    """May `principal` call `operation` (on `app`)? An operation not in the table is allowed to no one."""
    if operation in ANY_PRINCIPAL:
        return True
    roles = POLICY.get(operation, frozenset())
    if not any(role in roles for role in principal.roles):
        return False
    if operation in APP_SCOPED and app is not None:
        return principal.may_use(app)
    return True


PRINCIPAL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TOKEN_PREFIX = "gvn"
TOKEN = re.compile(rf"^{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
TOKEN_ID = re.compile(r"^[0-9a-f]{12}$")
CODE_PREFIX = "gvc"  # an enrollment code: never a bearer token, exchanged once for one
CODE = re.compile(rf"^{CODE_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
CODE_LIFETIME = timedelta(hours=24)
DEFAULT_TOKEN_LIFETIME = timedelta(days=90)
MAX_TOKEN_LIFETIME = timedelta(days=3650)
DURATION = re.compile(r"^(\d+)([hdw])$")


@dataclass(frozen=True)
class Principal:
    """An authenticated identity: its roles (a consumer's with the apps it may use) and the token it used."""

    name: str
    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    token_id: str | None = None

    @property
    def actor(self) -> Actor:
        """How the ledger names an action taken through the server: the principal and the token it used,
        authenticated by the server (which signs the events it writes for it)."""
        from govern import attribution

        if not self.token_id:
            raise ValueError(f"principal {self.name} has no token: nothing authenticated it")
        return attribution.authenticated(self.name, self.token_id)

    def has(self, role: str) -> bool:
        return role in self.roles

    def may_use(self, app: str) -> bool:
        """A consumer is limited to its apps; every other role that may read apps reads all of them."""
        return any(role != "consumer" for role in self.roles) or app in self.roles.get("consumer", ())


TOKEN_ACTOR = re.compile(r"^([a-z0-9][a-z0-9._-]{0,62}) \(token [0-9a-f]{12}\)$")
GIT_IDENTITY = re.compile(r"^\s*(.*?)\s*<([^>]*)>\s*$")


def identity_keys(actor: str, links: Mapping[str, Sequence[str]]) -> set[str]:
    """Every name of the person behind an actor: a principal (as the server records it, `NAME (token ID)`), a git
    or CI identity's name and email, and across `links` (principal -> linked identities) both ways."""

    def parts(identity: str) -> set[str]:
        """A git identity's name and email, each alone enough (`--approver ada@example.com` is Ada); a bare
        string is either."""
        found = GIT_IDENTITY.match(identity)
        names = [found.group(1), found.group(2)] if found else [identity]
        return {f"git:{value.strip().lower()}" for value in names if value.strip()}

    actor = str(actor)
    principal = TOKEN_ACTOR.match(actor.strip())
    keys = {f"principal:{principal.group(1)}"} if principal else parts(actor)
    for name, identities in links.items():
        linked = set().union(*(parts(identity) for identity in identities)) if identities else set()
        if f"principal:{name}" in keys or keys & linked:
            keys |= {f"principal:{name}"} | linked
    return keys


def same_person(one: str | None, other: str | None, links: Mapping[str, Sequence[str]]) -> bool:
    """Do two actors name one person? `Name <email>`, a bare name or email, or a principal, through `links`."""
    if not one or not other:
        return False
    return bool(identity_keys(str(one), links) & identity_keys(str(other), links))


def check_identity(identity: str) -> str:
    if not GIT_IDENTITY.match(identity or "") or "\n" in identity:
        raise InvalidInput(
            f"{identity!r} is not a git identity: give it as git records it, 'Name <email>' "
            "(git log --format='%an <%ae>')"
        )
    return identity.strip()


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `secret` is the only copy of the bearer value and is shown once."""

    token_id: str
    principal: str
    secret: str
    expires_at: datetime | None

    @property
    def bearer(self) -> str:
        return f"{TOKEN_PREFIX}_{self.token_id}_{self.secret}"


def check_principal_name(name: str) -> str:
    if not PRINCIPAL_NAME.match(name or ""):
        raise InvalidInput(
            f"{name!r} is not a principal name: use lower-case letters, digits, '.', '_' and '-', starting with a "
            "letter or digit (at most 63), such as alice or ci-runner"
        )
    return name


def check_role(role: str, apps: tuple[str, ...]) -> tuple[str, ...]:
    """A known role; a consumer names its apps, the others name none."""
    if role not in ROLES:
        raise InvalidInput(f"Unknown role {role!r}: use one of {', '.join(ROLES)}")
    if role == "consumer" and not apps:
        raise InvalidInput("A consumer is limited to named apps: add --app APP (once per app)")
    if role != "consumer" and apps:
        raise InvalidInput(f"--app limits a consumer; the role {role!r} is not limited to apps: leave --app out")
    for app in apps:
        if not APP_NAME.match(app):
            raise InvalidInput(f"--app {app!r} is not a valid app name: letters, digits, '.', '_' and '-'")
    return tuple(sorted(set(apps)))


@dataclass(frozen=True)
class IssuedCode:
    """A new enrollment code: `secret` is the only copy, shown once to the admin, who hands it to `principal`."""

    code_id: str
    principal: str
    secret: str
    expires_at: datetime
    token_expires_at: datetime | None

    @property
    def code(self) -> str:
        return f"{CODE_PREFIX}_{self.code_id}_{self.secret}"


def new_token(principal: str, expires_at: datetime | None) -> IssuedToken:
    return IssuedToken(secrets.token_hex(6), principal, secrets.token_urlsafe(32), expires_at)


def new_code(principal: str, now: datetime, token_expires_at: datetime | None) -> IssuedCode:
    """A code valid for `CODE_LIFETIME`, and never longer than the token it gives."""
    ends = now + CODE_LIFETIME if token_expires_at is None else min(now + CODE_LIFETIME, token_expires_at)
    return IssuedCode(secrets.token_hex(6), principal, secrets.token_urlsafe(32), ends, token_expires_at)


def parse_code(value: str) -> tuple[str, str] | None:
    """(code id, secret) of a well-formed enrollment code, else None."""
    found = CODE.match((value or "").strip())
    return (found.group(1), found.group(2)) if found else None


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_bearer(value: str) -> tuple[str, str] | None:
    """(token id, secret) of a well-formed bearer value, else None."""
    found = TOKEN.match(value.strip())
    return (found.group(1), found.group(2)) if found else None


def secret_matches(secret: str, digest: str) -> bool:
    return hmac.compare_digest(secret_digest(secret), digest)


def expiry(text: str | None, now: datetime) -> datetime | None:
    """`--expires`: a lifetime (`12h`, `30d`, `8w`), an instant, or `never`; 90 days when not given."""
    from govern.timeparse import parse_instant

    if text is None:
        return now + DEFAULT_TOKEN_LIFETIME
    if text == "never":
        return None
    found = DURATION.match(text.strip())
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        if amount == 0:
            raise InvalidInput("--expires 0: a token must live a while; give e.g. 30d, or never")
        hours = amount * {"h": 1, "d": 24, "w": 24 * 7}[unit]
        if hours > MAX_TOKEN_LIFETIME.total_seconds() / 3600:
            raise InvalidInput(f"--expires {text}: at most {MAX_TOKEN_LIFETIME.days} days; or never, on purpose")
        return now + timedelta(hours=hours)
    try:
        moment = parse_instant(text, "--expires")
    except InvalidInput:
        raise InvalidInput(
            f"--expires {text!r} is not a lifetime (12h, 30d, 8w), an ISO 8601 instant with a zone, or never"
        ) from None
    if moment <= now:
        raise InvalidInput(f"--expires {text} is not in the future: a token that has expired cannot be used")
    return moment
