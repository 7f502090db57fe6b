"""Every route that takes a body declares it, so /openapi.json has its request schema (a body
nested deeper than the decoder takes: tests/test_hostile_input.py)."""

from __future__ import annotations

from chat_server.app import create_app
from chat_server.settings import Settings

# POST routes that take no body at all (their input is the token and the path).
BODILESS = {("POST", "/telegram/link")}


def test_every_route_with_a_body_has_a_request_schema(settings: Settings) -> None:
    schema = create_app(settings).openapi()
    with_body = {(method.upper(), path): op.get("requestBody")
                 for path, ops in schema["paths"].items() for method, op in ops.items()
                 if method in ("post", "put", "patch")}
    assert ("POST", "/materials/text") in with_body and ("POST", "/materials/youtube") in with_body
    for route in BODILESS:
        assert with_body.pop(route) is None, f"{route} takes a body now: drop it from BODILESS"
    for route, body in with_body.items():
        assert body and body["content"], route
        for media in body["content"].values():
            assert media.get("schema"), route
    refs = {route: next(iter(body["content"].values()))["schema"].get("$ref", "")
            for route, body in with_body.items()}
    assert refs[("POST", "/materials/text")].endswith("/TextIn")
    assert refs[("POST", "/materials/youtube")].endswith("/YouTubeIn")
    assert "multipart/form-data" in with_body[("POST", "/materials")]["content"]

