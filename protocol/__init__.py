"""Custody's sans-IO protocol: schemas, canonical encoding, signing, chains, topics, proofs.

Nothing in this package opens a socket or a file, reads a clock or the environment: callers
pass bytes, keys and ``now`` in. Agent and server share exactly this code, so they share
exactly one wire contract.
"""
