"""`govern serve`: the controller, a REST API over the same use cases as the CLI (FastAPI is imported here only)."""
