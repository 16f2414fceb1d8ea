"""The controller's job runner: threads of the server process that take queued training jobs and run them.

Which jobs exist and in what state is the ledger's (`govern.api.jobs`); this runner only decides when to look.
It looks when a job is requested through this process, and every few seconds for jobs requested elsewhere (a
second worker, a restart): taking a job is a ledger transaction, so two processes never run the same one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from govern.api import jobs
from govern.api.context import open_project
from govern.api.keys import server_actor
from govern.api.results import Ran
from govern.errors import GovernError

log = logging.getLogger("govern.server.jobs")
POLL_SECONDS = 3.0


class JobRunner:
    """At most `slots` jobs of this process at once; the rest wait, in the order they were requested."""

    def __init__(self, root: Path, slots: int | None = None, signer: Any = None) -> None:
        self.root = root
        self.slots = slots
        self.signer = signer  # what the runner's threads append is signed with the server's key
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._signed(self._loop), name="govern-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def _signed(self, work: Any) -> Any:
        """`work` run with the server's key signing what it appends (threads start with an empty context)."""
        if self.signer is None:
            return work

        def signed(*args: Any) -> None:
            from govern.signing import signing_with

            with signing_with(self.signer):
                work(*args)

        return signed

    def _loop(self) -> None:
        host = socket.gethostname()
        while not self._stop.is_set():
            try:
                self._take(host)
            except GovernError as error:
                log.warning("govern jobs: %s", error)
            except Exception:  # noqa: BLE001 - the runner must outlive any one failure; the log has it
                log.exception("govern jobs: unexpected failure while looking for jobs")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def _take(self, host: str) -> None:
        project = open_project(self.root, actor=server_actor())
        slots = self.slots or project.config.jobs_concurrency
        with self._lock:
            self._running = {k: t for k, t in self._running.items() if t.is_alive()}
            free = slots - len(self._running)
        if free <= 0:
            return
        for job_id in jobs.claimable(project, host):
            if free <= 0 or job_id in self._running:
                continue
            started = jobs.claim(project, job_id)
            if started is None:
                continue
            worker = threading.Thread(
                target=self._signed(self._run), args=(job_id,), name=f"govern-job-{job_id}", daemon=True
            )
            with self._lock:
                self._running[job_id] = worker
            worker.start()
            free -= 1

    def _run(self, job_id: str) -> None:
        project = open_project(self.root, actor=server_actor())

        checked = [0.0]

        def cancelled() -> bool:
            """Stopping, or cancelled in the ledger (read every two seconds, not at every poll)."""
            if self._stop.is_set():
                return True
            if time.monotonic() - checked[0] < 2.0:
                return False
            checked[0] = time.monotonic()
            return jobs.job(project, job_id).row.state == "cancelled"

        try:
            ran = jobs.run(project, job_id, jobs.interpreter(project), cancelled)
        except GovernError as failure:
            ran = Ran("failed", error=str(failure))
        except Exception as failure:  # noqa: BLE001 - recorded as the job's failure, logged in full
            log.exception("govern jobs: job %s failed unexpectedly", job_id)
            ran = Ran("failed", error=f"unexpected {type(failure).__name__}: {failure}")
        if self._stop.is_set() and ran.outcome == "cancelled":
            return  # the server is stopping: the job stays running in the record, and is taken again on restart
        tail = jobs.job(project, job_id).log_tail
        jobs.finish(project, job_id, ran, tail)
        if ran.outcome == "failed":
            log.warning("govern jobs: job %s failed: %s", job_id, ran.error)
        else:
            log.info("govern jobs: job %s %s", job_id, ran.outcome)
        self._wake.set()
