"""Real services for the integration tests: Mosquitto, a throwaway PostgreSQL cluster, LocalStack S3.

Each module starts one kind of service as a child process on a free loopback port, waits until it
answers, and tears it down. The pytest fixtures in ``tests/conftest.py`` wrap them; tests use the
fixtures, not these modules directly.
"""
