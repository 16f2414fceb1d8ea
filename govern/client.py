"""The remote CLI: `HttpGovernance`, the `api.service.Governance` interface through a `govern serve`.

With `GOVERN_URL` (and `GOVERN_TOKEN`) set, each `govern` command that works on the ledger asks this
implementation instead of `api.local.LocalGovernance`. Each method takes the same arguments and returns the same
kind of result (events as `RecordedEvent`, rows as dicts), so the command prints exactly what it prints
locally, `--json` included, and a refusal exits with the same code (the server's problem names the error class).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from govern.api.results import (
    Anchor,
    IntegrityReport,
    Issued,
    Outcome,
    Prediction,
    QueryResult,
    ReproOutcome,
    Requested,
)
from govern.envelope import RecordedEvent
from govern.errors import InvalidInput
from govern.remote import Server


def _outcome(answer: Mapping[str, Any]) -> Any:
    return Outcome([RecordedEvent.from_dict(e) for e in answer["events"]], answer["warnings"], answer["tags"])


def _when(at: datetime | None) -> str | None:
    """An instant as the server reads it: `timeparse.display`'s four-digit years (the hashing spelling,
    `format_timestamp`, writes year 1 as `1-01-01`, which no ISO 8601 reader takes)."""
    from govern.timeparse import display

    return display(at) if at is not None else None


class HttpGovernance:
    """The `Governance` interface through a `govern serve` (its REST API): each method one request, answered in
    the local result types, so a command prints the same either way. Who acts is the server's business: the
    principal of the token."""

    def __init__(self, server: Server | None = None) -> None:
        self._server = server

    @property
    def server(self) -> Server:
        """The server of GOVERN_URL with GOVERN_TOKEN, read on first use (redeeming a code needs no token)."""
        if self._server is None:
            self._server = Server.from_environment()
        return self._server

    # ---------------------------------------------------------------- lifecycle

    def promote(self, model: str, version: str, to_stage: str, reason: str, *, approver: str | None = None,
                force: bool = False, on_progress: Any = None) -> Any:  # fmt: skip
        if approver is not None:
            raise InvalidInput("--approver is not accepted by a server: the approver is the principal of GOVERN_TOKEN")
        body = {"model": model, "version": version, "to_stage": to_stage, "reason": reason, "force": force}
        return _outcome(self.server.call("POST", "/promotions", body))

    def deprecate(self, model: str, version: str, reason: str, *, force: bool = False, on_progress: Any = None) -> Any:
        path = f"/models/{_segment(model)}/versions/{_segment(version)}/deprecation"
        return _outcome(self.server.call("POST", path, {"reason": reason, "force": force}))

    def deploy(self, model: str, version: str, *, app: str, env: str = "production", at: datetime | None = None) -> Any:
        body = {"model": model, "version": version, "app": app, "env": env, "at": _when(at)}
        return _outcome(self.server.call("POST", "/deployments", body))

    def retire(self, *, app: str, env: str = "production", at: datetime | None = None) -> Any:
        return _outcome(self.server.call("POST", "/retirements", {"app": app, "env": env, "at": _when(at)}))

    def request_promotion(self, model: str, version: str, to_stage: str, reason: str, force: bool = False) -> Any:
        body = {"model": model, "version": version, "to_stage": to_stage, "reason": reason, "force": force}
        return Requested(RecordedEvent.from_dict(self.server.call("POST", "/promotion-requests", body)["event"]))

    def approve(self, request: str, reason: str, on_progress: Any = None) -> Any:
        return _outcome(
            self.server.call("POST", f"/promotion-requests/{_number(request)}/approval", {"reason": reason})
        )

    def reject(self, request: str, reason: str) -> RecordedEvent:
        answer = self.server.call("POST", f"/promotion-requests/{_number(request)}/rejection", {"reason": reason})
        return RecordedEvent.from_dict(answer)

    def requests(self, state: str | None = "pending", model: str | None = None) -> list[dict[str, Any]]:
        return self.server.call("GET", "/promotion-requests", query={"state": state or "all", "model": model})

    def predict(self, input_path: Path, output_path: Path, *, model: str | None = None, version: str | None = None,
                app: str | None = None, env: str = "production", record: bool = False,
                allow_deprecated: bool = False) -> Any:  # fmt: skip
        """Over the server a prediction is for an app, and always recorded under the token's principal."""
        if app is None or model is not None:
            raise InvalidInput(
                "Through a server, predictions are for an app: give --app APP (and --env), not a version"
            )
        if allow_deprecated:
            raise InvalidInput("--allow-deprecated is not offered by a server: deploy a version that is not deprecated")
        if not input_path.is_file():
            raise InvalidInput(f"--input {input_path} is not a file")
        body, headers = self.server.send(
            f"/apps/{_segment(app)}/predict", input_path.read_bytes(), "text/csv", {"env": env}
        )
        output_path.write_bytes(body)
        rows = max(0, len(body.decode("utf-8", errors="replace").splitlines()) - 1)
        event = (
            RecordedEvent.from_dict(json.loads(headers["x-govern-event"])) if headers.get("x-govern-event") else None
        )
        return Prediction(headers["x-govern-model"], headers["x-govern-version"], app, env, output_path, rows, event)

    # ---------------------------------------------------------------- training

    def repro(
        self, stages: Sequence[str], *, allow_dirty: bool = False, commit_lock: bool = False, on_progress: Any = None
    ) -> Any:
        """`govern repro` through a server: the pipeline runs here (DVC, this checkout, its cache) and its facts and
        model files go to the server, which records them under the token's principal: the trainer is authenticated
        for the four-eyes rule, and the server mirrors the run into MLflow. Returns the local `ReproOutcome` shape."""
        import tempfile

        from govern.api import repro as repro_api
        from govern.errors import StageFailed

        if allow_dirty:
            raise InvalidInput(
                "--allow-dirty is not offered through a server: a training it records names a commit an auditor can "
                "check out; commit (and push) your changes first"
            )
        project = repro_api.reporting()
        root = project.root
        server = self.server
        known = server.call("GET", "/trainings/known-snapshots")
        with tempfile.TemporaryDirectory(prefix="govern-remote-repro-") as scratch:
            report_path, known_path = Path(scratch) / "report.json", Path(scratch) / "known.json"
            known_path.write_text(json.dumps(known), encoding="utf-8")
            failure = None
            try:
                reported = repro_api.report_facts(
                    project, stages, report_path, known_path, on_progress=on_progress, pull=False
                )
            except StageFailed as failed:
                if not report_path.exists():
                    raise
                failure, reported = failed, None
            report = json.loads(report_path.read_text(encoding="utf-8"))
            models = [
                m["path"] for e in report["events"] if e["type"] == "training.completed" for m in e["payload"]["models"]
            ]
            answer = server.upload(
                "/trainings/reported", {"report": json.dumps(report)}, {path: root / path for path in models}
            )
        events = [RecordedEvent.from_dict(e) for e in answer["events"]]
        if failure is not None:
            seq = events[0].seq if events else "?"
            raise StageFailed(failure.stage, f"{failure} (recorded by the server as training.failed, seq {seq})",
                              failure.output_tail)  # fmt: skip
        committed = None
        if commit_lock and answer["status"] == "recorded":
            pipeline = repro_api.dvc_adapter.load_pipeline(root)
            training = next(e for e in events if e.type == "training.completed")
            committed = repro_api._commit_lock(root, pipeline, training.seq, training.event_id)
        existing = answer["training_seq"] if answer["status"] == "up-to-date" else None
        return ReproOutcome(
            status=answer["status"],
            stage_runs=reported.stage_runs if reported else [],
            events=events,
            existing_seq=existing,
            committed=committed,
            warnings=answer["warnings"],
        )

    # ---------------------------------------------------------------- audit

    def audit_log(self, types: Sequence[str] = (), since: datetime | None = None, limit: int | None = None) -> list:
        query = {"type": list(types) or None, "since": _when(since), "limit": limit}
        return [RecordedEvent.from_dict(e) for e in self.server.call("GET", "/events", query=query)]

    def production_answer(self, app: str, env: str, at: datetime) -> dict[str, Any]:
        return self.server.call("GET", f"/apps/{_segment(app)}/production", query={"env": env, "at": _when(at)})

    def window_records(self, app: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        return self.server.call("GET", "/windows", query={"app": app, "model": model})

    def history(self, model: str, version: str | None = None) -> list[RecordedEvent]:
        answer = self.server.call("GET", f"/models/{_segment(model)}/history", query={"version": version})
        return [RecordedEvent.from_dict(e) for e in answer]

    def sql(self, statement: str, params: Mapping[str, Any] | None = None) -> Any:
        return _result(self.server.call("POST", "/sql", {"statement": statement, "params": dict(params or {})}))

    def named_queries(self) -> dict[str, str]:
        return {q["name"]: q["description"] for q in self.server.call("GET", "/queries")}

    def run_named(self, name: str, params: Mapping[str, str]) -> Any:
        return _result(self.server.call("POST", f"/queries/{_segment(name)}", {"params": dict(params)}))

    def gather(self, model: str, version: str, verify_chain: bool = False) -> dict[str, Any]:
        """The report's data from the server (its JSON form); the CLI renders HTML or Markdown from it locally."""
        path = f"/models/{_segment(model)}/versions/{_segment(version)}/report"
        query = {"format": "json", "verify_chain": str(verify_chain).lower()}
        body, _ = self.server.fetch(path, query)
        return json.loads(body)

    def verify(self, repository: Path | None = None) -> Any:
        from govern.attestations import AttestationReport
        from govern.storage.contract import Verification

        if repository is not None:
            raise InvalidInput("--repo checks anchors in a local repository: a server checks its own; leave --repo out")
        answer = self.server.call("GET", "/verify")
        chain = Verification(
            answer["chain_ok"], answer["count"], answer["head_hash"], answer["bad_seq"], answer["problem"]
        )
        anchors = [Anchor(a["tag"], a["seq"], a["hash"]) for a in answer["anchors"]]
        where = Path(answer["repository"]) if answer["repository"] else None
        found = answer.get("attestations")
        return IntegrityReport(
            chain, anchors, answer["anchor_problems"], where, AttestationReport.from_dict(found) if found else None
        )

    def anchor(self) -> RecordedEvent:
        return RecordedEvent.from_dict(self.server.call("POST", "/anchors"))

    def status(self) -> dict[str, Any]:
        return self.server.call("GET", "/status")

    # ---------------------------------------------------------------- access

    def grant(self, principal: str, role: str, apps: Sequence[str] = (), reason: str = "") -> RecordedEvent:
        body = {"principal": principal, "role": role, "apps": list(apps), "reason": reason}
        return RecordedEvent.from_dict(self.server.call("POST", "/principals", body))

    def revoke(self, principal: str, role: str, reason: str = "") -> RecordedEvent:
        path = f"/principals/{_segment(principal)}/roles/{_segment(role)}"
        return RecordedEvent.from_dict(self.server.call("DELETE", path, query={"reason": reason}))

    def link_identity(self, principal: str, identity: str, reason: str = "") -> RecordedEvent:
        body = {"identity": identity, "reason": reason}
        return RecordedEvent.from_dict(self.server.call("POST", f"/principals/{_segment(principal)}/identities", body))

    def identities(self) -> list[dict[str, Any]]:
        return self.server.call("GET", "/identities")

    def roles_at(self, at: datetime | None = None) -> list[dict[str, Any]]:
        return self.server.call("GET", "/principals", query={"at": _when(at)})

    def tokens(self, principal: str | None = None) -> list[dict[str, Any]]:
        return self.server.call("GET", "/tokens", query={"principal": principal})

    def issue_token(self, principal: str, expires: str | None = None, description: str = "") -> Any:
        answer = self.server.call(
            "POST", f"/principals/{_segment(principal)}/tokens", {"expires": expires, "description": description}
        )
        return _issued(answer)

    def redeem(self, code: str) -> Any:
        """An enrollment code exchanged by the server: no GOVERN_TOKEN needed (nor sent), the code authenticates."""
        import os

        url = Server.from_environment(environ={**os.environ, "GOVERN_TOKEN": "-"}).url  # the URL's checks only
        return _issued(Server(url, "").call("POST", "/enrollment-codes/redemptions", {"code": code}))

    def confirm_grant(self, proposal: str, reason: str = "") -> RecordedEvent:
        path = f"/grant-proposals/{_number_of(proposal)}/confirmation"
        return RecordedEvent.from_dict(self.server.call("POST", path, {"reason": reason}))

    def decline_grant(self, proposal: str, reason: str) -> RecordedEvent:
        path = f"/grant-proposals/{_number_of(proposal)}/decline"
        return RecordedEvent.from_dict(self.server.call("POST", path, {"reason": reason}))

    def withdraw_grant(self, proposal: str, reason: str = "") -> RecordedEvent:
        path = f"/grant-proposals/{_number_of(proposal)}/withdrawal"
        return RecordedEvent.from_dict(self.server.call("POST", path, {"reason": reason}))

    def proposals(self, state: str | None = "pending") -> list[dict[str, Any]]:
        return self.server.call("GET", "/grant-proposals", query={"state": state or "all"})

    def grant_history(self, principal: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return self.server.call("GET", "/grants", query={"principal": principal, "limit": limit})

    def revoke_token(self, token_id: str, reason: str = "") -> RecordedEvent:
        from govern import access

        bearer = access.parse_bearer(token_id) or access.parse_code(token_id)  # a secret never goes into a URL
        token_id = bearer[0] if bearer else token_id
        return RecordedEvent.from_dict(
            self.server.call("DELETE", f"/tokens/{_segment(token_id)}", query={"reason": reason})
        )


def _issued(answer: Mapping[str, Any]) -> Any:
    """A token, or an enrollment code, as the server answered it (`kind` says which)."""
    from govern import access
    from govern.access import IssuedCode, IssuedToken

    event = RecordedEvent.from_dict(answer["event"])
    if answer.get("kind") == "enrollment code":
        code_id, secret = access.parse_code(answer["code"]) or ("", "")
        code = IssuedCode(code_id, answer["principal"], secret, _instant(answer["expires_at"]),
                          _instant(answer["token_expires_at"]))  # fmt: skip
        return Issued(None, event, code)
    token_id, secret = access.parse_bearer(answer["token"]) or ("", "")
    return Issued(IssuedToken(token_id, answer["principal"], secret, _instant(answer["expires_at"])), event)


def _instant(text: str | None) -> Any:
    return datetime.fromisoformat(text) if text else None


def _number_of(proposal: str) -> str:
    from govern.api.access import proposal_number

    return str(proposal_number(proposal))


# ---------------------------------------------------------------- helpers


def _result(answer: Mapping[str, Any]) -> Any:
    columns = answer["columns"]
    return QueryResult(columns, [tuple(row[c] for c in columns) for row in answer["rows"]])


def _segment(value: str) -> str:
    import urllib.parse

    return urllib.parse.quote(str(value), safe="")


def _number(request: str) -> str:
    from govern.api.approvals import request_number

    return str(request_number(request))
