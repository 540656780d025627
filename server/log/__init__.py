"""The transparency log: the Merkle tree in the database (tree) and the service around it (service)."""
