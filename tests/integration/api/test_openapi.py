"""GET /v1/openapi.json documents every route the server has, with its bodies and errors."""

from __future__ import annotations

from typing import Any

from tests.integration.api.conftest import Api


async def test_openapi_covers_every_registered_route(api: Api) -> None:
    async with api.client(None) as http, http.get("/v1/openapi.json") as resp:
        assert resp.status == 200  # no token needed
        spec: dict[str, Any] = await resp.json()
    assert spec["openapi"].startswith("3.1")
    registered = set()
    for route in api.service.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method in ("HEAD", "OPTIONS") or path is None:
            continue
        registered.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert registered == documented
    schemas = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["operationId"], (method, path)
            assert any(s.startswith("2") for s in op["responses"]), (method, path)
            if path.startswith("/v1/") and path != "/v1/openapi.json":
                assert op["security"] == [{"bearer": []}]
                for status in ("401", "500"):
                    ref = op["responses"][status]["content"]["application/json"]["schema"]
                    assert ref["$ref"].endswith("/ErrorBody")
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path
            body = op.get("requestBody")
            if body is not None:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                name = ref.rsplit("/", 1)[1]
                assert name in schemas
                schema = schemas[name]
                if schema.get("type") == "object" and "properties" in schema:
                    # unknown fields are rejected, and the spec says so
                    assert schema.get("additionalProperties") is False, name
    for path in ("/", "/ui/{path}"):  # the web UI's static files: no token
        op = spec["paths"][path]["get"]
        assert op["tags"] == ["ui"] and op["security"] == [], path
        assert {"200", "304"} <= set(op["responses"]), path
    assert set(spec["paths"]["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert set(spec["paths"]["/ui/{path}"]["get"]["responses"]["200"]["content"]) == {
        "text/css", "text/javascript"}
    create = spec["paths"]["/v1/apps/{app}/deploys"]["post"]
    assert "application/gzip" in create["requestBody"]["content"]
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
    assert {"202", "200", "413", "422", "503"} <= set(create["responses"])
    assert "Retry-After" in create["responses"]["503"]["headers"]
    assert schemas["AppCreate"]["required"] == ["name"]
    assert schemas["DeployView"]["properties"]["status"]["enum"] == [
        "pending", "building", "deploying", "healthy", "failed", "rolled_back", "superseded",
        "cancelled"]


async def test_healthz_and_metrics(api: Api) -> None:
    async with api.client(None) as http:
        async with http.get("/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"nats": "ok"}
        async with api.http.get("/v1/apps"):
            pass
        async with http.get("/metrics") as resp:
            text = await resp.text()
    assert "shaman_api_requests_total" in text
    assert 'route="GET /v1/apps"' in text
