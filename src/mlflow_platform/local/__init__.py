"""The local platform: the same tracking server on embedded PostgreSQL and SeaweedFS (S3)."""
