"""Write docs/API.md from the OpenAPI document: ``python tools/gen_api_docs.py [--check] [--from URL]``.

By default the document is built from the route table (what ``GET /api/openapi.json`` serves);
``--from URL`` reads it from a running server instead. ``--check`` exits 1 when docs/API.md is
stale (tests/unit/tools/test_api_docs.py runs the same comparison against a live server).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "API.md"
METHODS = ("get", "post", "put", "patch", "delete")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"[{schema['$ref'].rsplit('/', 1)[-1]}](#{schema['$ref'].rsplit('/', 1)[-1].lower()})"
    kind = schema.get("type", "any")
    bits = [kind if kind != "array" else f"array of {_schema_text(schema.get('items', {}))}"]
    if "enum" in schema:
        bits.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "pattern" in schema:
        bits.append(f"pattern `{schema['pattern']}`")
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None or hi is not None:
        bits.append(f"{lo if lo is not None else '…'}..{hi if hi is not None else '…'}")
    if schema.get("maxLength") is not None:
        bits.append(f"≤ {schema['maxLength']} chars")
    if schema.get("nullable"):
        bits.append("nullable")
    return ", ".join(bits)


def _access(op: dict[str, Any]) -> str:
    if "x-roles" in op:
        return ", ".join(op["x-roles"])
    schemes = [name for req in op.get("security", []) for name in req]
    return ", ".join(schemes) if schemes else "public"


def render(doc: dict[str, Any]) -> str:
    """The Markdown reference of an OpenAPI document (its servers list is left out: it names one host)."""
    out = [f"# {doc['info']['title']} reference", "",
           "Generated from the OpenAPI document (`GET /api/openapi.json`) by `tools/gen_api_docs.py`; "
           "do not edit by hand. A test fails when this file is stale.", "",
           doc["info"].get("description", ""), "",
           "Access names the roles allowed (bearer tokens of users, `device` for signed device requests), or the "
           "credential of the endpoint. Errors are RFC 9457 problem documents with a stable `code`.", ""]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                op = item[method]
                by_tag.setdefault(op.get("tags", ["other"])[0], []).append((method.upper(), path, op))
    out += ["## Endpoints", "", "| method | path | summary | access |", "|---|---|---|---|"]
    for tag in sorted(by_tag):
        for method, path, op in by_tag[tag]:
            out.append(f"| {method} | `{path}` | {_cell(op['summary'])} | {_cell(_access(op))} |")
    out.append("")
    for tag in sorted(by_tag):
        out += [f"## {tag}", ""]
        for method, path, op in by_tag[tag]:
            out += [f"### {method} `{path}`", "", _cell(op["summary"]), "", f"Access: {_access(op)}.", ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | required | type |", "|---|---|---|---|"]
                out += [f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                        f"{_cell(_schema_text(p.get('schema', {})))} |" for p in params]
                out.append("")
            body = op.get("requestBody")
            if body:
                for ctype, media in body["content"].items():
                    out += [f"Body: `{ctype}`, {_schema_text(media.get('schema', {}))}.", ""]
            ok = [code for code in op["responses"] if code.startswith("2")]
            out += [f"Success: {', '.join(ok)}.", ""]
    out += ["## Schemas", ""]
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        out += [f"### {name}", ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            out += ["| field | required | type | description |", "|---|---|---|---|"]
            out += [f"| `{field}` | {'yes' if field in required else 'no'} | {_cell(_schema_text(p))} | "
                    f"{_cell(p.get('description', ''))} |" for field, p in props.items()]
        else:
            out.append(_cell(schema.get("description", _schema_text(schema))))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def current_document() -> dict[str, Any]:
    """The OpenAPI document built from the route table."""
    from server.api.openapi import build_openapi
    from server.api.routes import ROUTES

    return build_openapi(ROUTES)


def main(argv: list[str] | None = None) -> int:
    """Write (or check) docs/API.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/API.md is stale")
    parser.add_argument("--from", dest="url", help="read the document from a running server's /api/openapi.json")
    args = parser.parse_args(argv)
    if args.url:
        with urllib.request.urlopen(args.url.rstrip("/") + "/api/openapi.json") as r:  # noqa: S310 - operator's URL
            doc = json.load(r)
    else:
        doc = current_document()
    text = render(doc)
    if args.check:
        if not API_MD.exists() or API_MD.read_text(encoding="utf-8") != text:
            print(f"{API_MD} is stale: run python tools/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    API_MD.write_text(text, encoding="utf-8")
    print(f"wrote {API_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
