"""The use cases of govern, as plain functions: no printing, no click.

The CLI is one caller; tests and notebooks are others.
"""

from govern.api.audit import audit_log, audit_verify
from govern.api.project import InitResult, init_project
from govern.api.repro import ReproOutcome, repro

__all__ = ["InitResult", "ReproOutcome", "audit_log", "audit_verify", "init_project", "repro"]
