"""What several test modules share, so that no test module imports another.

cli: the CLI in a fresh interpreter. history: a deployment history for the auditor's pages. load_clients: the
clients that load a server (run as a script). sandbox: the job sandbox's needs and a served version. server: a served
project, its tokens and HTTP calls. team: the team setup's PostgreSQL databases and MLflow server. tracking: MLflow's
client, imported when asked for. web: a browser, signed-in clients and the web app's routes. Fixtures built on them
are in tests/conftest.py.
"""
