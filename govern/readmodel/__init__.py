"""The read side: every question govern's use cases ask of the ledger's views, as functions of a `Reader`.

Each function takes a `Reader` (the ledger, or a transaction in progress) and runs SQL with bound parameters;
nothing is computed in Python loops over events. State is always derived here from events, never stored. The use
cases (`govern.api`) hold no SQL: they ask these functions, grouped by topic (`versions`, `deployments`,
`approvals`, `access`, `reports`, ...), and get rows (frozen dataclasses or dicts) or plain values back.
"""
