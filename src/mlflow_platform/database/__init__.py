"""Everything the platform does to its PostgreSQL databases, one module per concern.

- ``connection``: libpq parameters from a SQLAlchemy URL, connections, the PostgreSQL client
  binaries and their flags;
- ``revisions``: where each schema stands against the installed MLflow;
- ``schema``: the migration step (the auth database, both schemas, the server's DML-only role);
- ``backup``: pg_dump files, RDS snapshots, and restores from either;
- ``upgrade``: the coordinated upgrade (writers stopped, backup, migrate, verify);
- ``kubernetes``: the writers in a cluster, as the coordinated upgrade stops them;
- ``drill``: the restore drill, proving a backup restores to what the source holds;
- ``workspace_mode``: opening MLflow's SQL stores on a database that holds teams' data.

It depends on nothing above it (no runbook, local platform or command line), so each of those
may use it and the tests can drive it with any writers and any backup.
"""
