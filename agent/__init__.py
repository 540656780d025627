"""Custody agent: runs on a body-worn recorder or a Raspberry Pi (capture, chunk, sign, buffer, upload)."""
