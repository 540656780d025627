"""Footage stores: a local write-once directory (embedded default) and S3 with Object Lock (at scale)."""
