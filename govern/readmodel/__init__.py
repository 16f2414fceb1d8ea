"""The read side: every question govern's use cases ask of the ledger's views, as functions of a `Reader`.

Each function takes a `Reader` (the ledger, or a transaction in progress) and runs SQL with bound parameters;
nothing is computed in Python loops over events. State is always derived here from events, never stored. The use
cases (`govern.api`) hold no SQL (tests/test_layers.py): they ask these functions and get typed rows (frozen
slots dataclasses, built by column name with `rows.rows_as`) or plain values back. By topic:

- `reader`: the `Reader` protocol itself
- `migrations`: the schema that builds the views and projections every query reads (each backend's read model is a
  DuckDB database built by them)

- `rows`: what every query shares (typed rows, naive UTC parameters, actors shown with their identity)
- `versions`: model versions, their standing, stages, history, trainings and CI verdicts
- `deployments`: slots and production windows
- `events`: the event log itself (head, types, pages, actors, anchors, verdicts of a commit)
- `reports`: the lineage report's sections
- `approvals`: promotion requests, the approver's queue and a request's evidence
- `access`: principals, roles, grant proposals, enrollment codes, tokens, signing keys
- `mirrors`: what MLflow has yet to be told
- `jobs`: training jobs
- `trainings`: trainings, their locks and their data snapshots
- `inferences`: a version's model file, its training data, the inference records

The SQL is tuned (see the comments beside it): a move here changes no statement, parameter or ordering.
"""
