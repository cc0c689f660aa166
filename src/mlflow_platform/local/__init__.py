"""The local platform: the same tracking server on embedded PostgreSQL and a local S3 API."""
