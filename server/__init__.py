"""Custody server: enrollment, ingest and verification, cases, audit, transparency log, dashboard."""
