"""PostgreSQL, the system of record: schema migrations, the local cluster for `make run` and tests."""
