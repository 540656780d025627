"""docs/API.md is the rendering of the live /api/openapi.json: regenerate it with tools/gen_api_docs.py."""

from __future__ import annotations

from server.app import RunningServer
from tests.integration.server.conftest import Api
from tools.gen_api_docs import API_MD, render


async def test_api_md_is_up_to_date_with_the_served_openapi_document(server: RunningServer, admin: Api) -> None:
    doc = await admin.ok("GET", "/api/openapi.json")
    assert API_MD.read_text(encoding="utf-8") == render(doc), "docs/API.md is stale: run python tools/gen_api_docs.py"
