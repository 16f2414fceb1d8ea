"""Demo ML pipeline stages for the breast-cancer classifier (run via dvc.yaml)."""
