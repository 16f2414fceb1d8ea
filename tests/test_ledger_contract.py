"""The storage contract, written once and run against both backends (as eventsourcing tests its recorders).

`LedgerContract` holds the behaviour every ledger must have; `TestDuckDBFile`, `TestPostgreSQL` and `TestInMemory`
only say how to make an empty ledger and how to alter a stored row behind govern's back.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import duckdb
import psycopg
import pytest
from conftest import snapshot_event

from govern import attestations, attribution, signing
from govern.envelope import PendingEvent, RecordedEvent, envelope_hash, utc_now
from govern.errors import AttestationRefused, EventConflict, InvalidInput, LedgerError, LedgerSchemaTooNew, QueryError
from govern.events import DeploymentStarted, Fact
from govern.storage import LedgerStore, copy, open_store
from govern.storage.chain import COLUMNS
from govern.storage.duckdb_log import Ledger
from govern.storage.memory_log import MemoryLedger
from govern.storage.postgres_log import PostgresLedger


@dataclass(frozen=True)
class VerifiedV1(Fact):
    """reproduction.verified as schema v1 wrote it: no `match`, outputs judged by md5 alone."""

    type: ClassVar[str] = "reproduction.verified"
    schema_version: ClassVar[int] = 1

    commit: str = "c0ffee"
    outputs: list = field(default_factory=lambda: [{"path": "model.pkl", "md5": "0" * 32}])
    differing_outputs: list = field(default_factory=list)
    metric_deltas: dict = field(default_factory=dict)
    duration_s: float = 1.5
    ci: dict = field(default_factory=lambda: {"system": "local"})

    @property
    def subject(self) -> str:
        return f"commit:{self.commit}"


def deployment(i: int, app: str = "scoring", env: str = "production") -> PendingEvent:
    fact = DeploymentStarted(model="churn", version=str(i), app=app, env=env)
    return PendingEvent(fact, actor="Zoë <zoe@example.com>", occurred_at=utc_now(), git_commit="c0ffee")


class LedgerContract:
    """Every behaviour here holds for the DuckDB file and for PostgreSQL alike."""

    def make(self, tmp_path: Path) -> LedgerStore:
        raise NotImplementedError

    def tamper(self, ledger: LedgerStore, statement: str) -> None:
        """Change stored rows the way someone with direct access to the database could."""
        raise NotImplementedError

    def add_migration_row(self, ledger: LedgerStore, version: int, name: str) -> None:
        raise NotImplementedError

    @pytest.fixture
    def ledger(self, tmp_path: Path) -> Iterator[LedgerStore]:
        store = self.make(tmp_path)
        yield store
        store.close()

    @pytest.fixture
    def filled(self, ledger: LedgerStore) -> LedgerStore:
        ledger.append([snapshot_event(i, source=f'tricky "source" é\n\u0001{i}') for i in range(1, 6)])
        return ledger

    def test_a_new_ledger_does_not_exist_until_its_first_write(self, ledger: LedgerStore) -> None:
        assert ledger.head() is None and not ledger.exists()
        ledger.append([snapshot_event(1)])
        assert ledger.exists()

    def test_appends_get_gapless_seq_and_a_chain_that_verifies(self, filled: LedgerStore) -> None:
        events = filled.read()
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == "0" * 64
        assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:], strict=False))
        result = filled.verify()
        assert result.ok and result.count == 5 and result.head_hash == events[-1].hash
        assert filled.head() == (5, events[-1].hash)

    def test_a_retried_identical_event_is_a_no_op_and_a_changed_one_is_refused(self, ledger: LedgerStore) -> None:
        event = snapshot_event(1)
        first = ledger.append([event])
        assert ledger.append([event]) == first
        with pytest.raises(EventConflict, match="already in the ledger"):
            ledger.append([replace(event, actor="Mallory <m@example.com>")])
        assert [e.seq for e in ledger.read()] == [1]

    def test_decide_sees_the_state_and_a_refusal_appends_nothing(self, filled: LedgerStore) -> None:
        seen: list[int] = []

        def decide(reader):  # noqa: ANN001, ANN202
            seen.append(reader.query("SELECT count(*) FROM datasets")[1][0][0])
            raise LedgerError("refused by the rule")

        with pytest.raises(LedgerError, match="refused by the rule"):
            filled.transact(decide)
        assert seen == [5]
        assert filled.head()[0] == 5 and filled.verify().ok

    def test_decide_on_an_empty_ledger_sees_no_events(self, ledger: LedgerStore) -> None:
        counts: list[int] = []

        def decide(reader):  # noqa: ANN001, ANN202
            counts.append(reader.query("SELECT count(*) FROM model_versions")[1][0][0])
            return [snapshot_event(1)]

        assert [e.seq for e in ledger.transact(decide)] == [1]
        assert counts == [0]

    def test_read_filters_by_type_time_subject_seqs_and_limit(self, filled: LedgerStore) -> None:
        filled.append([deployment(1)])
        assert [e.seq for e in filled.read(types=["deployment.started"])] == [6]
        assert [e.seq for e in filled.read(limit=2)] == [5, 6]
        assert [e.seq for e in filled.read(seqs=[2, 4])] == [2, 4]
        assert filled.read(since=utc_now() + timedelta(hours=1)) == []
        assert len(filled.read(subject_prefix="dataset:")) == 5

    def test_the_read_model_answers_in_duckdb_sql_over_the_views(self, filled: LedgerStore) -> None:
        filled.append([deployment(1), deployment(2, env="staging")])
        columns, rows = filled.query("SELECT app, env, version FROM production_windows ORDER BY start_seq")
        assert columns == ["app", "env", "version"]
        assert rows == [("scoring", "production", "1"), ("scoring", "staging", "2")]
        with filled.reader() as reader:
            assert reader.query("SELECT count(*) FROM deployment_index")[1] == [(2,)]

    def test_payload_bytes_come_back_exactly_as_hashed(self, ledger: LedgerStore) -> None:
        event = snapshot_event(1, source='ünïcode "quotes" \\ and \t tabs \u2028')
        [recorded] = ledger.append([event])
        assert ledger.read()[0].payload_json == event.payload_json == recorded.payload_json
        assert ledger.read() == [recorded]  # what the append returned is exactly what was stored
        assert ledger.verify().ok

    def test_a_payload_written_at_an_older_schema_is_read_at_the_current_one_everywhere(
        self, ledger: LedgerStore
    ) -> None:
        """reproduction.verified v1 (as govern wrote it before issue 11) against today's v2, on every read path."""
        [old] = ledger.append([PendingEvent(VerifiedV1(), actor="CI", occurred_at=utc_now(), git_commit="c0ffee")])
        [stored] = ledger.read()
        assert stored.schema_version == 1 and stored.payload_json == old.payload_json, "the hashed bytes stay"
        assert stored.payload["match"] == "exact" and stored.payload["stale_inputs"] == []
        query = "SELECT schema_version, payload->>'$.match', payload->>'$.commit' FROM events"
        assert ledger.query(query)[1] == [(2, "exact", "c0ffee")]
        assert ledger.audit_query(query)[1] == [(2, "exact", "c0ffee")]
        with ledger.reader() as reader:
            assert reader.query(query)[1] == [(2, "exact", "c0ffee")]
        seen = []
        ledger.transact(lambda reader: seen.append(reader.query(query)[1]) or [])
        assert seen == [[(2, "exact", "c0ffee")]]
        assert ledger.verify().ok

    def test_audit_sql_is_one_select_in_duckdbs_sandbox(self, filled: LedgerStore, tmp_path: Path) -> None:
        assert filled.audit_query("SELECT count(*) AS n FROM events") == (["n"], [(5,)])
        with pytest.raises(QueryError, match="not COPY"):
            filled.audit_query(f"COPY events TO '{tmp_path / 'out.csv'}'")
        with pytest.raises(QueryError, match="out of its reach"):
            filled.audit_query(f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')")
        assert not (tmp_path / "out.csv").exists()

    def test_verify_names_an_event_altered_behind_govern(self, filled: LedgerStore) -> None:
        self.tamper(filled, "UPDATE events SET payload = replace(payload, 'tricky', 'benign') WHERE seq = 3")
        result = filled.verify()
        assert not result.ok and result.bad_seq == 3 and "seq 3" in result.problem

    def test_verify_names_a_deleted_event(self, filled: LedgerStore) -> None:
        self.tamper(filled, "DELETE FROM events WHERE seq = 2")
        result = filled.verify()
        assert not result.ok and "seq 2 is missing" in result.problem

    def test_a_schema_newer_than_this_govern_is_refused(self, filled: LedgerStore, tmp_path: Path) -> None:
        self.add_migration_row(filled, 99, "m099_from_the_future")
        again = self.reopen(filled, tmp_path)
        with pytest.raises(LedgerSchemaTooNew, match="upgrade govern"):
            again.append([snapshot_event(9)])

    def test_a_migration_this_govern_never_had_is_refused_by_name(self, ledger: LedgerStore, tmp_path: Path) -> None:
        ledger.append([snapshot_event(1)])
        self.tamper(ledger, "UPDATE govern_migrations SET name = 'm001_someone_elses' WHERE version = 1")
        with pytest.raises(LedgerError, match="migrated by another build of govern"):
            self.reopen(ledger, tmp_path).read()

    def in_threads(self, ledger: LedgerStore, tmp_path: Path, workers: range, work) -> list[BaseException]:  # noqa: ANN001
        """Run `work(store, worker)` in one thread per worker, each on its own store; the errors they met."""
        errors: list[BaseException] = []

        def run(worker: int) -> None:
            store = self.reopen(ledger, tmp_path)
            try:
                work(store, worker)
            except BaseException as error:  # noqa: BLE001 - reported to the test
                errors.append(error)
            finally:
                store.close()

        threads = [threading.Thread(target=run, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return errors

    @pytest.mark.slow  # races writers for seconds
    def test_concurrent_writers_never_fork_the_chain(self, ledger: LedgerStore, tmp_path: Path) -> None:
        ledger.append([snapshot_event(0)])

        def write(store: LedgerStore, worker: int) -> None:
            for i in range(10):
                store.append([snapshot_event(1000 * worker + i)])

        assert self.in_threads(ledger, tmp_path, range(1, 5), write) == []
        result = ledger.verify()
        assert result.ok and result.count == 41

    @pytest.mark.slow  # races readers, auditors and writers for seconds
    def test_threads_reading_auditing_and_writing_at_once_all_succeed(
        self, ledger: LedgerStore, tmp_path: Path
    ) -> None:
        """A server answers in threads: reads, sandboxed audit SQL and writes overlap on one ledger."""
        ledger.append([snapshot_event(0)])

        def work(store: LedgerStore, worker: int) -> None:
            for i in range(8):
                if worker % 3 == 0:
                    store.append([snapshot_event(1000 * worker + i)])
                elif worker % 3 == 1:
                    store.query("SELECT count(*) FROM datasets")
                    store.head()
                else:
                    store.audit_query("SELECT count(*) FROM events")

        assert self.in_threads(ledger, tmp_path, range(9), work) == []
        assert ledger.verify().ok and ledger.head()[0] == 1 + 3 * 8

    def test_a_copy_to_the_other_backend_and_back_verifies_byte_for_byte(
        self, filled: LedgerStore, tmp_path: Path, pg_database: str
    ) -> None:
        filled.append([deployment(1)])
        other = (
            PostgresLedger(pg_database, cache_dir=tmp_path / "other-cache")
            if isinstance(filled, Ledger)
            else Ledger(tmp_path / "copy.duckdb")
        )
        assert copy(filled, other).ok
        back = Ledger(tmp_path / "back.duckdb")
        assert copy(other, back).ok
        assert [e.to_dict() for e in back.read()] == [e.to_dict() for e in filled.read()]
        assert other.head() == filled.head()
        assert copy(filled, other).count == 6, "copying again resumes at the head: nothing is added twice"
        unrelated = Ledger(tmp_path / "unrelated.duckdb")
        unrelated.append([snapshot_event(1)])
        with pytest.raises(LedgerError, match="already holds other events"):
            copy(filled, unrelated)
        other.close()

    def reopen(self, ledger: LedgerStore, tmp_path: Path) -> LedgerStore:
        """The same ledger opened afresh, as another process would."""
        raise NotImplementedError

    def insert_raw(self, ledger: LedgerStore, row: RecordedEvent) -> None:
        """Insert a whole row as someone with direct write access to the database could (no govern involved)."""
        raise NotImplementedError

    # -- attestations (issue 25): who acted, and whether the server vouches for it

    @pytest.fixture
    def server_key(self, tmp_path: Path) -> Iterator[signing.Signer]:
        """This process as a govern server: a key, registered in the ledger by an event it signs itself."""
        signer = signing.create(tmp_path / "keys" / "server.key")
        signing.activate(signer)
        yield signer
        signing.activate(None)

    def register(self, ledger: LedgerStore, signer: signing.Signer) -> None:
        from govern.api.keys import _registration

        ledger.append([_registration(signer, None, None, "first key of this ledger")])

    def forge(self, ledger: LedgerStore, authn: str | None, actor: str, signature: str | None = None) -> int:
        """Append a row with a correct chain hash, as a database superuser (or the file's owner) could."""
        seq, prev = ledger.head()
        event = snapshot_event(99)  # a fact with no projection table: only the events view derives from it
        row = RecordedEvent(
            seq=seq + 1,
            event_id=str(uuid.uuid4()),
            type=event.fact.type,
            schema_version=event.fact.schema_version,
            occurred_at=utc_now().replace(tzinfo=None, microsecond=0),
            recorded_at=utc_now().replace(tzinfo=None, microsecond=0),
            actor=actor,
            subject=event.fact.subject,
            git_commit=None,
            payload_json=event.payload_json,
            prev_hash=prev,
            hash="",
            authn=authn,
            signature=signature,
        )
        hashed = {k: v for k, v in row.__dict__.items() if k not in ("hash", "signature")}
        row = replace(row, hash=envelope_hash(**hashed))
        self.insert_raw(ledger, row)
        return row.seq

    def test_an_event_the_server_authenticates_is_signed_over_its_hash_and_verifies(
        self, ledger: LedgerStore, server_key: signing.Signer
    ) -> None:
        self.register(ledger, server_key)
        [event] = ledger.append([replace(deployment(1), actor=attribution.authenticated("abe", "f20373caf69d"))])
        assert event.actor == "abe (token f20373caf69d)"
        assert json.loads(event.authn) == {
            "by": "server", "key": server_key.fingerprint, "principal": "abe", "via": "token f20373caf69d",
        }  # fmt: skip
        assert signing.verifier(server_key.public).verifies(event.signature, signing.attestation_message(event.hash))
        assert ledger.read()[-1] == event, "the attestation is stored as it was returned"
        assert event.actor_shown == "abe (authenticated, token f20373caf69d)"
        report = attestations.check(ledger.query_stored)
        assert (
            report.ok and report.authenticated == 2 and [k.fingerprint for k in report.keys] == [server_key.fingerprint]
        )
        assert ledger.verify().ok

    def test_a_self_asserted_event_says_where_its_name_came_from(self, ledger: LedgerStore) -> None:
        tess = attribution.self_asserted("Tess <tess@example.com>", attribution.GIT_CONFIG)
        [event] = ledger.append([replace(deployment(1), actor=tess)])
        assert event.signature is None and json.loads(event.authn) == {"by": "self", "via": "git config"}
        assert event.actor_shown == "Tess <tess@example.com> (self-asserted, git config)"
        report = attestations.check(ledger.query_stored)
        assert report.ok and report.self_asserted == 1 and report.authenticated == 0

    def test_a_claim_of_server_authentication_without_the_servers_key_appends_nothing(
        self, ledger: LedgerStore
    ) -> None:
        ledger.append([deployment(0)])
        with pytest.raises(AttestationRefused, match="only by the server holding its signing key"):
            ledger.append([replace(deployment(1), actor=attribution.authenticated("abe", "f20373caf69d"))])
        assert ledger.head()[0] == 1

    def test_a_self_asserted_name_in_the_servers_form_is_refused(self, ledger: LedgerStore) -> None:
        forged = attribution.Actor("alice (token 00d199502a68)", attribution.Authn("self", "GOVERN_CI_IDENTITY"))
        with pytest.raises(InvalidInput, match="form govern serve gives authenticated principals"):
            ledger.append([replace(deployment(1), actor=forged)])
        assert ledger.head() is None

    def test_verify_names_every_event_dressed_as_server_authenticated_without_a_valid_signature(
        self, ledger: LedgerStore, server_key: signing.Signer, tmp_path: Path
    ) -> None:
        """What a database superuser (or whoever can write the file) can do: append rows with correct hashes."""
        self.register(ledger, server_key)
        ledger.append([replace(deployment(1), actor=attribution.authenticated("abe", "f20373caf69d"))])
        claim = attribution.Authn("server", "token b6e5036e1e3b", "abe", server_key.fingerprint).to_json()
        bogus = self.forge(ledger, claim, "abe (token b6e5036e1e3b)", signature="A" * 88)
        stripped = self.forge(ledger, claim, "abe (token b6e5036e1e3b)")
        bare = self.forge(ledger, None, "abe (token b6e5036e1e3b)")
        dressed = self.forge(ledger, '{"by":"self","via":"git config"}', "abe (token b6e5036e1e3b)")
        # a key of the forger's own, registered by a self-signed event: consistent, but nobody endorsed it
        rogue = signing.create(tmp_path / "keys" / "rogue.key")
        signing.activate(rogue)
        from govern.api.keys import _registration

        rogue_seq = ledger.append([_registration(rogue, None, None, "mine")])[0].seq
        signed_by_rogue = ledger.append(
            [replace(snapshot_event(2), actor=attribution.authenticated("abe", "b6e5036e1e3b"))]
        )
        signing.activate(server_key)
        assert ledger.verify().ok, "the chain itself is intact: only the attestations tell"
        report = attestations.check(ledger.query_stored)
        named = " ".join(report.problems)
        for seq in (bogus, stripped, bare, dressed, rogue_seq, signed_by_rogue[0].seq):
            assert f"seq {seq}:" in named, (seq, report.problems)
        assert not report.ok and report.authenticated == 2  # the registration and abe's real event
        assert "not endorsed by a trusted key" in named

    def test_pinned_fingerprints_are_the_only_keys_trusted(
        self, ledger: LedgerStore, server_key: signing.Signer
    ) -> None:
        self.register(ledger, server_key)
        ledger.append([replace(deployment(1), actor=attribution.authenticated("abe", "f20373caf69d"))])
        assert attestations.check(ledger.query_stored, [server_key.fingerprint]).ok
        other = "ed25519:" + "0" * 32
        report = attestations.check(ledger.query_stored, [other])
        assert not report.ok and "not pinned" in " ".join(report.problems)


class TestDuckDBFile(LedgerContract):
    def make(self, tmp_path: Path) -> LedgerStore:
        return Ledger(tmp_path / "audit" / "ledger.duckdb", lock_timeout=20)

    def insert_raw(self, ledger: LedgerStore, row: RecordedEvent) -> None:
        con = duckdb.connect(ledger.location)
        try:
            values = [getattr(row, "payload_json" if name == "payload" else name) for name in COLUMNS]
            con.execute(f"INSERT INTO stored_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                        values)  # fmt: skip
        finally:
            con.close()

    def reopen(self, ledger: LedgerStore, tmp_path: Path) -> LedgerStore:
        return Ledger(Path(ledger.location), lock_timeout=20)

    def tamper(self, ledger: LedgerStore, statement: str) -> None:
        statement = statement.replace(" events", " stored_events")  # the bytes that were hashed
        con = duckdb.connect(ledger.location)
        try:
            con.execute(statement)
        finally:
            con.close()

    def add_migration_row(self, ledger: LedgerStore, version: int, name: str) -> None:
        self.tamper(ledger, f"INSERT INTO govern_migrations VALUES ({version}, '{name}', now())")


class TestPostgreSQL(LedgerContract):
    # What happens before govern's schema is in the database is tried on an empty one; every other test starts
    # from a copy of the migrated template (conftest.pg_ledger_database), as `govern init --ledger` leaves it.
    BEFORE_THE_SCHEMA = frozenset({"test_a_new_ledger_does_not_exist_until_its_first_write"})

    @pytest.fixture(autouse=True)
    def _database(self, request: pytest.FixtureRequest) -> None:
        empty = request.node.originalname in self.BEFORE_THE_SCHEMA
        self.url = request.getfixturevalue("pg_database" if empty else "pg_ledger_database")

    def make(self, tmp_path: Path) -> LedgerStore:
        return PostgresLedger(self.url, lock_timeout=20, cache_dir=tmp_path / "read-models")

    def reopen(self, ledger: LedgerStore, tmp_path: Path) -> LedgerStore:
        return PostgresLedger(self.url, lock_timeout=20, cache_dir=tmp_path / "read-models")

    def insert_raw(self, ledger: LedgerStore, row: RecordedEvent) -> None:
        values = [getattr(row, "payload_json" if name == "payload" else name) for name in COLUMNS]
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(f"INSERT INTO govern.events ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                        values)  # fmt: skip

    def tamper(self, ledger: LedgerStore, statement: str) -> None:
        """As a superuser who switches the append-only trigger off for the session."""
        statement = statement.replace("govern_migrations", "govern.migrations").replace(" events", " govern.events")
        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute("SET session_replication_role = replica")
            con.execute(statement)

    def add_migration_row(self, ledger: LedgerStore, version: int, name: str) -> None:
        self.tamper(ledger, f"INSERT INTO govern_migrations VALUES ({version}, '{name}', now())")


class TestInMemory(LedgerContract):
    """The store use-case tests may inject: the file's behaviour without the file."""

    def make(self, tmp_path: Path) -> LedgerStore:
        return MemoryLedger(lock_timeout=20)

    def reopen(self, ledger: LedgerStore, tmp_path: Path) -> LedgerStore:
        assert isinstance(ledger, MemoryLedger)
        return ledger.sharing()

    def insert_raw(self, ledger: LedgerStore, row: RecordedEvent) -> None:
        assert isinstance(ledger, MemoryLedger)
        values = [getattr(row, "payload_json" if name == "payload" else name) for name in COLUMNS]
        marks = ", ".join("?" * len(COLUMNS))
        ledger.raw().execute(f"INSERT INTO stored_events ({', '.join(COLUMNS)}) VALUES ({marks})", values)

    def tamper(self, ledger: LedgerStore, statement: str) -> None:
        assert isinstance(ledger, MemoryLedger)
        ledger.raw().execute(statement.replace(" events", " stored_events"))

    def add_migration_row(self, ledger: LedgerStore, version: int, name: str) -> None:
        self.tamper(ledger, f"INSERT INTO govern_migrations VALUES ({version}, '{name}', now())")


def test_the_url_opens_postgresql_and_a_path_opens_the_file(tmp_path: Path, pg_database: str) -> None:
    assert isinstance(open_store(pg_database), PostgresLedger)
    assert isinstance(open_store(tmp_path / "l.duckdb"), Ledger)


def test_a_pulled_or_copied_ledger_is_checkpointed_not_left_in_the_write_ahead_log(tmp_path: Path) -> None:
    """Every open replays the log: a read model of a million events left there took seconds to open."""
    from govern.checkpoints import wal_path

    source = Ledger(tmp_path / "source.duckdb")
    source.append([snapshot_event(i) for i in range(1, 300)])
    target = Ledger(tmp_path / "target.duckdb")
    copy(source, target)
    assert not wal_path(target.path).exists() or wal_path(target.path).stat().st_size < 16 * 1024
    assert target.verify().ok and target.head() == source.head()
