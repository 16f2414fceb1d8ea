"""Secrets are never written down: one redaction for every text govern records, and the guard the ledgers check.

`redact` is the one redaction: every event payload passes it before it is hashed (`envelope.PendingEvent`), and so
do the server's log lines, MLflow's tags and params, and the messages that carry a URI. It removes

- the password of a URI of any scheme (`postgresql+psycopg://govern:pw@db/x` -> `postgresql+psycopg://govern@db/x`):
  the user stays, as `without_password` keeps it for messages, unless the user part is itself a credential
  (`https://ghp_...@github.com`, a long random string), which goes;
- the value of a secret-named parameter or assignment wherever it stands: a query string (`?password=`, `sslpassword=`,
  `access_token=`, `X-Amz-Signature=`, `sig=`), a command line or a log (`PGPASSWORD=...`, `--api-key=...`), a
  printed mapping (`'password': '...'`);
- bearer credentials and tokens of known forms (`Authorization: Bearer ...`, govern's `gvn_<id>_<secret>`, whose id
  stays, GitHub's and GitLab's).

A secret-named value is replaced by `[redacted]`; a URI's password is dropped. Structure is what is recognised, so a
password no structure announces ("connection failed: hunter2") cannot be: that is what the guard is for. The ledgers'
append path refuses an event whose text holds any secret this process was configured with (`remember`): the
passwords of the configured URIs (ledger, MLflow, git and DVC remotes) and the values of secret-named environment
variables. Only distinctive values are guarded (`distinctive`): a six-letter word would refuse ordinary facts.

Pure: no I/O; the composition (`govern.api.context`, the server) reads the configuration and hands it here.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

REDACTED = "[redacted]"

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_USER = r"[^\s:@/?#\[\]\"'<>]*"


@functools.cache
def _rx() -> SimpleNamespace:
    """The patterns, compiled on first use: most commands never redact anything, and compiling them all costs
    more than a fast command's whole import."""
    return SimpleNamespace(
        # user:password@ -- the password runs to the last '@' before a space or quote, so a password holding '@'
        # or '/' goes whole (a path with '@' after a host:port is cut too: over-redaction of a rare URI is the
        # safe side).
        userinfo=re.compile(rf"(?P<scheme>{_SCHEME})(?P<user>{_USER}):(?P<password>[^\s\"'<>]*)@"),
        user_only=re.compile(rf"(?P<scheme>{_SCHEME})(?P<user>[^\s:@/?#\[\]\"'<>]+)@"),
        # name=value: in a query string, a command line, an environment listing, a connection string
        assignment=re.compile(
            r"(?<![A-Za-z0-9_.])(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)=(?P<value>\"[^\"]*\"|'[^']*'|[^\s&;\"'<>]+)"
        ),
        # 'name': 'value' and "name": "value" (a mapping printed into an error message)
        pair=re.compile(
            r"(?P<quote>[\"'])(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P=quote)\s*:\s*"
            r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
        ),
        # a credential is long: "bearer token" in a sentence is not one
        bearer=re.compile(r"\b(?P<word>[Bb]earer|(?i:authorization:\s*basic))\s+(?P<value>[A-Za-z0-9._~+/\-]{16,}=*)"),
        # a token or a code, even glued to a word, and with its separators percent-encoded (a query string in the
        # access log), full-width or padded with zero-width characters (pasted from a chat or a document)
        govern_token=re.compile(
            r"(?P<id>gv[nc]{sep}[0-9a-f]{{12}}{sep})[A-Za-z0-9_\-\uff3f%][A-Za-z0-9_\-\u200b-\u200d\u2060\ufeff\uff3f%]*".format(
                sep=r"[\u200b-\u200d\u2060\ufeff]*(?:_|%5[Ff]|\uff3f)[\u200b-\u200d\u2060\ufeff]*"
            )
        ),
        known_tokens=re.compile(
            r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,})"
        ),
    )


_SECRET_ENDINGS = ("password", "passwd", "passphrase", "secret", "token", "signature", "credential", "credentials")
_KEY_KINDS = frozenset(
    {"api", "access", "secret", "private", "account", "storage", "sas", "signing", "master", "subscription", "client"}
)  # an X_KEY or XKey of these kinds is a secret
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_", "glpat-", "gvn_", "gvc_", "x-access-token")


def is_secret_name(name: str) -> bool:
    """Whether a parameter or variable of this name holds a secret: its last part ends in password, secret, token,
    signature or credential(s), or is pwd, or an api/access/secret/private/account... key (`AccountKey` too); `key`
    and `sig` only as the whole name (`?key=`, a SAS's `sig=`). `PGPASSWORD`, `sslpassword`, `access_token`,
    `X-Amz-Signature`, `AWS_SECRET_ACCESS_KEY` are; `max_tokens`, `AWS_ACCESS_KEY_ID`, `PGPASSFILE`, `noise.sig`
    are not."""
    parts = [part for part in re.split(r"[^a-z0-9]+", name.lower()) if part]
    if not parts:
        return False
    last = parts[-1]
    if last.endswith(_SECRET_ENDINGS) or last == "pwd":
        return True
    if last in ("key", "sig"):
        return len(parts) == 1 or (last == "key" and parts[-2] in _KEY_KINDS)
    return last.endswith("key") and last[:-3] in _KEY_KINDS


def _credential_like(user: str) -> bool:
    """A URI's user part that is itself a credential: a known token's prefix, or a long random string."""
    if user.lower().startswith(_TOKEN_PREFIXES):
        return True
    return len(user) >= 24 and bool(re.fullmatch(r"[A-Za-z0-9_\-.~%]+", user)) and bool(re.search(r"\d", user))


def _drop_password(found: re.Match[str]) -> str:
    user = found["user"]
    if not user or _credential_like(user):
        return found["scheme"]
    return f"{found['scheme']}{user}@"


def _drop_credential_user(found: re.Match[str]) -> str:
    return found["scheme"] if _credential_like(found["user"]) else found[0]


def _kept(value: str) -> bool:
    """Values that are not secrets though their names say so: a reference to a variable, or already redacted."""
    bare = value.strip("\"'")
    return not bare or bare.startswith(("$", "%(", "{{")) or bare == REDACTED


def _assignment(found: re.Match[str]) -> str:
    if not is_secret_name(found["name"]) or _kept(found["value"]):
        return found[0]
    return f"{found['name']}={REDACTED}"


def _pair(found: re.Match[str]) -> str:
    if not is_secret_name(found["name"]) or _kept(found["value"]):
        return found[0]
    quote = found["value"][0]
    return f"{found['quote']}{found['name']}{found['quote']}: {quote}{REDACTED}{quote}"


def redact(text: str) -> str:
    """`text` without the secrets its structure shows (see the module docstring). Idempotent."""
    if not isinstance(text, str) or not might_hold_secrets(text):
        return text
    text = _rx().userinfo.sub(_drop_password, text)
    text = _rx().user_only.sub(_drop_credential_user, text)
    text = _rx().assignment.sub(_assignment, text)
    text = _rx().pair.sub(_pair, text)
    text = _rx().bearer.sub(lambda found: f"{found['word']} {REDACTED}", text)
    text = _rx().govern_token.sub(lambda found: f"{found['id']}{REDACTED}", text)
    return _rx().known_tokens.sub(REDACTED, text)


def redact_value(value: Any) -> Any:
    """Every string of a JSON-like value redacted (mapping keys are names, and stay); new containers, the given
    ones untouched."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


_WORDS = (
    "pass", "pwd", "secret", "token", "sig", "key", "credential", "bearer", "basic", "gvn", "gvc", "ghp_", "gho_",
    "ghs_", "ghu_", "ghr_", "github_pat_", "glpat-",
)  # fmt: skip


def might_hold_secrets(text: str) -> bool:
    """False when `redact` would certainly leave `text` (or a JSON document's strings) as it is: the words every
    rule needs, looked for as plain substrings (a regular expression's alternation costs ten times more on a
    training's payload)."""
    if "://" in text and "@" in text:
        return True
    lower = text.lower()
    return any(word in lower for word in _WORDS)


def without_password(url: str) -> str:
    """A URL with its user but not its password (`postgresql://govern:pw@db/x` -> `postgresql://govern@db/x`), and
    without secret-named query parameters (`?password=pw`, `sslpassword=`), dropped: still a URL libpq can use,
    finding the password in PGPASSWORD or ~/.pgpass. For messages and committed configuration."""
    found = re.match(rf"(?P<scheme>{_SCHEME})(?P<user>{_USER}):(?P<password>[^\s\"'<>]*)@", url)
    if found:
        url = found["scheme"] + (f"{found['user']}@" if found["user"] else "") + url[found.end() :]
    base, mark, query = url.partition("?")
    if not mark:
        return url
    kept = [part for part in query.split("&") if part and not is_secret_name(part.partition("=")[0])]
    return base + ("?" + "&".join(kept) if kept else "")


def has_password(url: str) -> bool:
    return without_password(url) != url


# -- the guard: configured secrets that must never reach the ledger

MIN_GUARDED = 6  # characters; see `distinctive`


def distinctive(secret: str) -> bool:
    """Whether a secret can be looked for in a payload without refusing ordinary facts.

    Six characters at least, five of them different, and not a plain word or number: at least two kinds of
    character (lower case, upper case, digits, others) below 12 characters, and 16 or more when it is all
    hexadecimal (payloads carry hashes, in which a short hexadecimal string turns up by chance). `postgres` as a
    password, or `mlflow`, would refuse every training that names its tracking store, and `cccc...` every event
    with such a made-up hash; such passwords are still redacted wherever a URI or an assignment shows them, only not
    looked for in free text."""
    if len(secret) < MIN_GUARDED or len(set(secret)) < 5 or secret == REDACTED:
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", secret) and len(secret) < 16:
        return False
    kinds = sum(bool(re.search(pattern, secret)) for pattern in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]"))
    return kinds >= 2 or len(secret) >= 12


def _spellings(secret: str) -> set[str]:
    """The ways a secret can appear in a payload: as given, percent-decoded or -encoded, and escaped in JSON."""
    forms = {secret, urllib.parse.unquote(secret), urllib.parse.quote(secret, safe="")}
    return forms | {json.dumps(form, ensure_ascii=False)[1:-1] for form in forms}


def secrets_of_uri(uri: str) -> list[str]:
    """The credentials a URI carries: its password, a user part that is itself a credential, and the values of its
    secret-named query parameters."""
    found: list[str] = []
    for match in _rx().userinfo.finditer(uri):
        found.append(match["password"])
        if _credential_like(match["user"]):
            found.append(match["user"])
    found += [match["user"] for match in _rx().user_only.finditer(uri) if _credential_like(match["user"])]
    for match in _rx().assignment.finditer(uri):
        if is_secret_name(match["name"]) and not _kept(match["value"]):
            found.append(match["value"].strip("\"'"))
    return [secret for secret in found if secret]


def secrets_of_config(text: str) -> list[str]:
    """The credentials of a configuration file (`.git/config`, `.dvc/config.local`): every URI's, and the values of
    secret-named keys (`password = ...`, `secret_access_key = ...`)."""
    found = secrets_of_uri(text)
    for line in text.splitlines():
        pair = re.match(r"\s*(?P<name>[A-Za-z0-9_.\-]+)\s*=\s*(?P<value>.*?)\s*$", line)
        if pair and is_secret_name(pair["name"]) and not _kept(pair["value"]):
            found.append(pair["value"].strip("\"'"))
    return [secret for secret in found if secret]


_NOT_SECRETS = frozenset({"PWD", "OLDPWD"})  # the shell's working directories, though named like ODBC's password


def secrets_of_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Secret -> where it was found: the values of secret-named variables (`PGPASSWORD`, `MLFLOW_TRACKING_TOKEN`,
    `AWS_SECRET_ACCESS_KEY`, `GOVERN_TOKEN`...) and the credentials of any URI a variable holds (`DATABASE_URL`)."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if not value:
            continue
        if is_secret_name(name) and name not in _NOT_SECRETS and not _kept(value):
            found.setdefault(value, f"the value of {name}")
        if "://" in value:
            for secret in secrets_of_uri(value):
                found.setdefault(secret, f"the password in {name}")
    return found


def guarded(candidates: Mapping[str, str], recorded_forms: Iterable[str] = ()) -> dict[str, str]:
    """Of `candidates` (secret -> where), each distinctive spelling, unless it appears in what govern records on
    purpose (`recorded_forms`: the redacted URIs, in which a password equal to its user name stays)."""
    shown = list(recorded_forms)
    guard: dict[str, str] = {}
    for secret, where in candidates.items():
        for form in _spellings(secret):
            if distinctive(form) and not any(form in text for text in shown):
                guard.setdefault(form, where)
    return guard


# Replaced, never changed in place: a ledger's append reads the current mapping while another thread may add to it.
_guard: Mapping[str, str] = {}
_guard_lock = threading.Lock()


def remember(secrets: Mapping[str, str]) -> None:
    """Add to this process's guard (secret -> where it is configured, for the refusal's message): from then on, no
    ledger of this process appends an event that holds one. Pass `guarded(...)`'s answer."""
    global _guard
    if all(secret in _guard for secret in secrets):
        return
    with _guard_lock:
        _guard = {**secrets, **_guard}


def forget() -> None:
    """Empty the guard (tests)."""
    global _guard
    with _guard_lock:
        _guard = {}


def guard() -> Mapping[str, str]:
    return _guard


def scrub(text: str) -> str:
    """`redact`, and every guarded secret replaced wherever it stands: for texts that are shown or logged rather than
    recorded (a log line, a job's log), where a refusal would help no one."""
    text = redact(text)
    if isinstance(text, str):
        for secret in _guard:
            if secret in text:
                text = text.replace(secret, REDACTED)
    return text


def refuse_secrets(kind: str, texts: Mapping[str, str | None], also: Mapping[str, str] | None = None) -> None:
    """Raise `SecretInEvent` when one of `texts` (a part of an event: its payload's JSON, actor, subject, commit)
    holds a guarded secret: one substring search per secret, nothing when none is configured."""
    guarded_now = _guard if not also else {**_guard, **also}
    if not guarded_now:
        return
    for part, text in texts.items():
        if not text:
            continue
        for secret, where in guarded_now.items():
            if secret in text:
                from govern.errors import SecretInEvent

                raise SecretInEvent(
                    f"Refused to record {kind}: its {part} holds {where}, a configured secret, and the ledger can "
                    "never remove what it records; nothing was appended. Find what put it there (an error message, "
                    "a parameter, a log line) and keep the secret out of it"
                )
