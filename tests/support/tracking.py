"""MLflow's client, imported when a test asks for one.

Importing MLflow takes seconds, and every xdist worker imports every test module to collect it, the fast tier's
runs included: a module that imported MLflow at its top made each worker pay for it before any test ran.
"""

from __future__ import annotations

from typing import Any


def mlflow_client(tracking_uri: str) -> Any:
    """`MlflowClient(tracking_uri=...)`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)
