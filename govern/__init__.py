"""govern: Git-driven, event-sourced governance for machine-learning models."""

__version__ = "0.1.0"
