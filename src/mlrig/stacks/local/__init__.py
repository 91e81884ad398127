"""The local stack: PostgreSQL, an S3 endpoint and an MLflow server on 127.0.0.1.

Everything lives under `.mlrig/stack/` in the project; credentials are generated on first start,
kept in `stack.env` (mode 0600) and never printed.
"""
