"""The named bad-message corpus (files built by make_corpus.py)."""
