"""Adapters: the only modules that import third-party libraries (GitPython, DVC, MLflow).

Each returns govern's own dataclasses and turns library errors into
`GovernError` subclasses. Heavy imports happen inside functions, so that
commands which do not need a library never pay for importing it.
"""
