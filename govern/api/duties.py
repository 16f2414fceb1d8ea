"""Separation of duties: who may ask for, approve or make a promotion, counting only identities that count.

For one person on one machine (solo mode) the rules are what the project configures, off by default. For a team
(a PostgreSQL ledger, a declared `[tool.govern.server] url`, `mode = "team"`, or a ledger a server has signed
in) they protect people from themselves by default and count only identities the server authenticated:

- the last stage needs an approved request (`registry.require_approval` unset), and four-eyes is on;
- whoever asks, approves or promotes must be authenticated now (a self-asserted name can be typed by anyone who
  can write the ledger), and a request counts only if the server attested it;
- nobody approves or promotes a version they trained, by any path; the trainers are every training that produced
  the version's bytes, authenticated or not (a self-asserted trainer name is compared too: a wrong name can only
  make the rule stricter); a version no authenticated training produced needs an authenticated, verified
  reproduction before it enters a four-eyes stage, and its requester then counts as a trainer;
- an approver whose token was issued by the requester or a trainer is that person's hands: refused too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from govern import access, attestations, attribution
from govern.api.context import Project
from govern.errors import FourEyesViolation, PolicyViolation
from govern.readmodel import access as access_reads
from govern.readmodel import events
from govern.readmodel.approvals import PromotionRequestRow
from govern.readmodel.reader import Reader
from govern.readmodel.versions import VersionFacts, trainings_of_version, verdicts_of_version


@dataclass(frozen=True)
class Policy:
    """The rules in force for one decision."""

    team: bool
    approval_stages: frozenset[str]
    four_eyes: bool

    def needs_request(self, stage: str) -> bool:
        return stage in self.approval_stages


def team_mode(project: Project, reader: Reader) -> bool:
    """A team's project: a ledger a server has signed in (every server registers its key before it answers
    anything, so a server's own decisions are always in team mode), or one whose configuration says so (a
    PostgreSQL ledger, a declared server, `mode = "team"`).

    A ledger's team mode is the ledger's: `mode = "solo"` cannot turn it off once a server has signed in, since
    the configuration is read from whichever checkout a command runs in (an insider's own, pointed at the
    team's ledger with GOVERN_LEDGER, said `mode = "solo"` and promoted to production unapproved)."""
    if access_reads.server_key_registered(reader):
        return True
    return project.config.declares_team


def policy(project: Project, reader: Reader) -> Policy:
    cfg = project.config
    team = team_mode(project, reader)
    configured = cfg.require_approval
    if configured is None:
        stages = frozenset(cfg.stages[-1:]) if team else frozenset()
    elif configured is True:
        stages = frozenset(cfg.stages)
    elif configured is False:
        stages = frozenset()
    else:
        stages = frozenset(configured)
    return Policy(team, stages, cfg.four_eyes if cfg.four_eyes is not None else team)


def require_authenticated(project: Project, policy_: Policy, what: str) -> None:
    """In team mode a decision about people counts only from someone the server authenticated."""
    if policy_.team and not project.actor.authenticated:
        raise PolicyViolation(
            f"In team mode {what} counts only when govern serve authenticated who made it; "
            f"{attribution.shown(project.actor.name, project.actor.authn)} is not: run it with GOVERN_URL and "
            "GOVERN_TOKEN set (your own token), or through the web pages"
        )


@dataclass(frozen=True)
class Trainers:
    """Who trained a version: every name (for comparison), and whether any training was authenticated."""

    names: tuple[str, ...]
    authenticated: tuple[str, ...]
    shown: tuple[str, ...]
    seqs: tuple[int, ...] = ()  # the trainings' events


def trainers(project: Project, reader: Reader, facts: VersionFacts) -> Trainers:
    rows = trainings_of_version(reader, facts.model, facts.version)
    verdicts = attestations.check_events(reader, [r.seq for r in rows], project.config.trusted_keys)
    names, authenticated, shown = [], [], []
    for row in rows:
        names.append(row.actor)
        authn = attribution.Authn.from_json(row.authn) if row.authn else None
        attested = authn is not None and authn.authenticated and verdicts.get(row.seq) is None
        if attested:
            authenticated.append(row.actor)
        shown.append(attribution.shown(row.actor, authn))
    if facts.training_actor and facts.training_actor not in names:
        names.append(facts.training_actor)
    return Trainers(tuple(names), tuple(authenticated), tuple(shown), tuple(r.seq for r in rows))


def verified_reproduction(project: Project, reader: Reader, facts: VersionFacts) -> bool:
    """Is there a verified reproduction of a lock holding the version's model file, authenticated by the server?"""
    rows = [r for r in verdicts_of_version(reader, facts.model, facts.version) if r.type == "reproduction.verified"]
    candidates = [r for r in rows if r.authn and attribution.Authn.from_json(r.authn).authenticated]
    verdicts = attestations.check_events(reader, [r.seq for r in candidates], project.config.trusted_keys)
    return any(verdicts.get(r.seq) is None for r in candidates)


def check_not_trainer(
    project: Project,
    reader: Reader,
    policy_: Policy,
    facts: VersionFacts,
    who: str,
    doing: str,
    requester: str | None = None,
) -> None:
    """Refuse `who` (approving or promoting) where they trained the version, by any name linked to them; in team
    mode, also where no authenticated training (nor an authenticated verified reproduction) vouches for the
    version's trainer."""
    if not policy_.four_eyes:
        return
    links = access_reads.identity_links(reader)
    found = trainers(project, reader, facts)
    for name in found.names:
        if access.same_person(who, name, links):
            raise FourEyesViolation(
                f"Four-eyes rule: {_who(who)} trained version {facts.version} of {facts.model} (as {name}) and "
                f"cannot {doing}; another approver must {doing.split()[0]} it"
            )
    if policy_.team and not found.authenticated:
        if not verified_reproduction(project, reader, facts):
            raise FourEyesViolation(
                f"Four-eyes rule: version {facts.version} of {facts.model} was trained by a self-asserted identity "
                f"({', '.join(found.shown) or 'unknown'}), which proves nobody's hands: it can {doing.split()[0]} "
                "only after a training through govern serve (POST /trainings, or govern repro with GOVERN_URL) or a "
                "verified reproduction uploaded by a verifier (govern ci verify --server)"
            )
        if requester and access.same_person(who, requester, links):
            raise FourEyesViolation(
                f"Four-eyes rule: {_who(who)} asked for this version, whose training is self-asserted, and counts as "
                f"its trainer: another approver must {doing.split()[0]} it"
            )


def check_token_issuer(reader: Reader, who: attribution.Actor, others: list[str], doing: str) -> None:
    """An approver whose token another person issued acts with that person's hands, as far as the ledger can
    tell: refused where the issuer asked for or trained what is approved."""
    token = (who.authn.via or "").removeprefix("token ") if who.authenticated else None
    if not token or not access.TOKEN_ID.match(token):
        return
    issuer = token_issuer(reader, token)
    if not issuer or access.same_person(issuer, who.name, {}):
        return
    links = access_reads.identity_links(reader)
    for other in others:
        if other and access.same_person(issuer, other, links):
            raise FourEyesViolation(
                f"Four-eyes rule: {_who(who.name)}'s token {token} was issued by {_who(issuer)}, who asked for or "
                f"trained this version: it cannot {doing}; redeem a token of your own (govern tokens redeem) or let "
                "another approver decide"
            )


def check_same_hands(reader: Reader, who: attribution.Actor, parties: Sequence[int], doing: str) -> None:
    """Refuse an approver where one admin could have held both the approver's token and the token of one who asked
    for or trained the version (the events `parties`): the same admin handed both over through the server, or
    handed over a token that handed over one of them (a code for a second admin, redeemed by the first, issuing
    the next code), or is the requester herself (the security reviews: one admin minted a scientist and a code for
    an existing approver, redeemed both, and approved her own request, directly or through a second admin's code).
    Codes the operator issued (self-asserted) are the bootstrap's and count for no one; a local writer cannot issue
    one for an approver once two admins exist."""
    token = _token_in(who.authn) if who.authenticated else None
    mine = hands_behind(reader, token)
    if not mine:
        return
    rows = events.actors_of(reader, list(parties))
    links = access_reads.identity_links(reader)
    for row in rows:
        authn = attribution.Authn.from_json(row.authn) if row.authn else None
        other = _token_in(authn)
        if not other or other == token:
            continue
        theirs = [*hands_behind(reader, other), authn.principal or _who(row.actor)]
        shared = next((a for a in mine for b in theirs if access.same_person(a, b, links)), None)
        if shared is not None:
            raise FourEyesViolation(
                f"Four-eyes rule: {_who(who.name)}'s token {token} was handed over, through the server, by "
                f"{_who(shared)}, who held or handed over the token {other} of {_who(row.actor)}, who asked for "
                f"or trained this version, and could have acted as both: it cannot {doing}; ask another admin to "
                f"issue {_who(who.name)} a new code, or let another approver decide"
            )


def hands_behind(reader: Reader, token_id: str | None, depth: int = 16) -> list[str]:
    """Every admin who handed this token over through the server, and who handed over the token each of them did
    it with, up the chain: each could have held it. Empty for a token its principal made, or the operator's."""
    found: list[str] = []
    seen: set[str] = set()
    while token_id and token_id not in seen and len(seen) < depth:
        seen.add(token_id)
        issuer, token_id = _handed_over(reader, token_id)
        if issuer is None:
            break
        found.append(issuer)
    return found


def _token_in(authn: attribution.Authn | None) -> str | None:
    """The token an authenticated act was done with (`via`: "token X", or "job J (token X)")."""
    if authn is None or not authn.authenticated:
        return None
    found = re.search(r"token ([0-9a-f]{12})\)?$", authn.via or "")
    return found.group(1) if found else None


def _handed_over(reader: Reader, token_id: str | None) -> tuple[str | None, str | None]:
    """(the admin who handed this token over through the server, the token that admin did it with)."""
    if not token_id or not access.TOKEN_ID.match(token_id):
        return None, None
    handover = access_reads.token_handover(reader, token_id)
    if handover is None or not handover.issuer_authn:
        return None, None
    authn = attribution.Authn.from_json(handover.issuer_authn)
    if authn is None or not authn.authenticated:
        return None, None
    issuer = authn.principal or handover.issuer
    if access.same_person(issuer, handover.principal, {}):
        return None, None
    return issuer, _token_in(authn)


def token_issuer(reader: Reader, token_id: str | None) -> str | None:
    """The actor who handed this token to its principal (an enrollment code's issuer, not the principal who
    exchanged it, nor a token the principal made for itself with one), as recorded; None for no such token."""
    if not token_id or not access.TOKEN_ID.match(token_id):
        return None
    return access_reads.token_issuer(reader, token_id)


def request_attested(project: Project, reader: Reader, request: PromotionRequestRow) -> None:
    """In team mode a request counts only if the server attested who asked for it."""
    seq = request.request_seq
    found = events.actor_of(reader, seq)
    authn = attribution.Authn.from_json(found.authn) if found and found.authn else None
    verdict = attestations.check_events(reader, [seq], project.config.trusted_keys).get(seq)
    if authn is None or not authn.authenticated or verdict is not None:
        shown = attribution.shown(found.actor, authn) if found else "unknown"
        raise PolicyViolation(
            f"Request {seq} was not authenticated by govern serve ({shown}{'; ' + verdict if verdict else ''}): in "
            "team mode it cannot be approved; reject it and ask again through the server"
        )


def _who(actor: str) -> str:
    return attribution.principal_of(str(actor)) or str(actor)
