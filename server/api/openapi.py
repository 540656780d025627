"""The OpenAPI 3 document, built from the route table (so it lists exactly the routes that exist)."""

from __future__ import annotations

import re
from typing import Any

from server.api.body import Body
from server.api.routes import COSIGNATURE, ENROLL, ENTRY, ENVELOPE, PATH_PARAMS, PUBLIC, UPLOAD, Route

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem document; branch on `code`",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "code": {"type": "string", "description": "stable machine code"}, "detail": {"type": "string"},
    },
}

ENVELOPE_SCHEMA = {
    "type": "object",
    "description": "A signed envelope as canonical JSON (RFC 8785); sent and kept byte for byte",
    "required": ["alg", "kid", "payload", "sig", "type"],
    "additionalProperties": False,
    "properties": {k: {"type": "string"} for k in ("alg", "kid", "payload", "sig", "type")},
}

_ERRORS = {
    "400": "malformed request (code says what)", "401": "not authenticated", "403": "role may not do this",
    "404": "not found", "409": "conflicts with what is stored", "413": "body too large",
    "422": "well-formed but fails a check",
}


def _security(route: Route) -> list[dict[str, list[str]]]:
    if route.access == PUBLIC:
        return []
    if route.access == ENROLL:
        return [{"enrollmentToken": []}]
    if route.access == UPLOAD:
        return [{"uploadCapability": []}]
    if route.access == ENTRY:
        return [{"signedManifest": []}]
    if route.access == COSIGNATURE:
        return []  # the body authenticates itself: a cosignature by a registered witness key
    assert isinstance(route.access, frozenset)
    out: list[dict[str, list[str]]] = []
    if any(r.value != "device" for r in route.access):
        out.append({"bearerToken": []})
    if any(r.value == "device" for r in route.access):
        out.append({"deviceSignature": []})
    return out


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.method.lower() + "_" + re.sub(r"[^a-z0-9]+", "_", route.openapi_path.lower()).strip("_"),
        "summary": route.summary,
        "tags": [route.tag],
        "security": _security(route),
        "responses": {
            str(route.ok_status): {"description": "success",
                                   "content": {route.response: {"schema": {"type": "object"}}}},
            **{code: {"description": text, "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}}} for code, text in _ERRORS.items()},
        },
    }
    if isinstance(route.access, frozenset):
        op["x-roles"] = sorted(r.value for r in route.access)
    params = [{"name": n, "in": "path", "required": True, "schema": PATH_PARAMS[n].schema()}
              for n in route.path_params]
    params += [{"name": n, "in": "query", "required": f.required, "schema": f.schema()}
               for n, f in route.query.items()]
    if params:
        op["parameters"] = params
    if isinstance(route.body, Body):
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{route.body.name}"}}}}
    elif route.body == ENVELOPE:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Envelope"}}}}
    elif route.body == "bytes":
        op["requestBody"] = {"required": True, "content": {"video/mp4": {
            "schema": {"type": "string", "format": "binary"}}}}
    elif route.body == "note":
        op["requestBody"] = {"required": True, "content": {"text/plain": {
            "schema": {"type": "string", "description": "a C2SP signed note"}}}}
    return op


def build_openapi(routes: tuple[Route, ...], *, public_url: str = "") -> dict[str, Any]:
    """The document."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA, "Envelope": ENVELOPE_SCHEMA}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(route)
        if isinstance(route.body, Body):
            schemas[route.body.name] = route.body.schema()
    return {
        "openapi": "3.0.3",
        "info": {"title": "Custody API", "version": "1",
                 "description": "Evidence-grade recording: accounts, officers, devices, enrollment, ingest."},
        "servers": [{"url": public_url}] if public_url else [],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerToken": {"type": "http", "scheme": "bearer", "description": "API token (cst_...)"},
                "deviceSignature": {"type": "apiKey", "in": "header", "name": "Custody-Signature",
                                    "description": "signed device request: Custody-Device, -Key-Id, -Time, "
                                                   "-Nonce, -Content-SHA256, -Signature (protocol/httpsig.py)"},
                "enrollmentToken": {"type": "apiKey", "in": "header", "name": "X-Enrollment-Token",
                                    "description": "not a header: the one-time token travels inside the signed "
                                                   "EnrollmentRequest body"},
                "uploadCapability": {"type": "apiKey", "in": "query", "name": "sig",
                                     "description": "HMAC the server put in the upload URL"},
                "signedManifest": {"type": "apiKey", "in": "header", "name": "Custody-Entry",
                                   "description": "base64 of the chunk's signed manifest (envelope bytes); it names "
                                                  "the body's SHA-256 and size"},
            },
        },
    }
