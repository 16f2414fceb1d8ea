"""The use cases of govern, as plain functions: no printing, no click.

One module per use case (`project`, `repro`, `grid`, `lifecycle`, `predict`,
`audit`); the CLI is one caller, tests and notebooks are others.
"""
