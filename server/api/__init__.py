"""The HTTP API: one route table drives routing, authentication, role checks and the OpenAPI document."""
