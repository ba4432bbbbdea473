"""docs/api.md cannot drift from the server: the routes the real application registers are
exactly the documented ones, every client message type the signaling socket handles has
its own entry, and every error code, close code and server message type the server can
send is named.

The server's vocabulary is read from the real objects (the aiohttp application, the
signaling handler table, the token errors) and from the source of ``e2ee.server`` (every
``ApiError("code", ...)``, every ``{"type": "..."}`` message), so a new endpoint, message
or error fails here until it is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from e2ee.server import app as server_app
from e2ee.server import errors, signaling, tokens

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
SERVER_SRC = Path(server_app.__file__).resolve().parent

#: ``### `POST /v1/sessions` `` (REST and the WebSocket's upgrade request).
ROUTE_HEADING = re.compile(r"^#{2,4} `(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`", re.MULTILINE)
#: ``#### `publish` `` under the client messages heading.
MESSAGE_HEADING = re.compile(r"^#### `([a-z_]+)`", re.MULTILINE)
CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def section(text: str, title: str) -> str:
    """The text under the level-2 or level-3 heading ``title``, up to the next heading of
    the same or a higher level."""
    match = re.search(rf"^(#{{2,3}}) {re.escape(title)}\s*$", text, re.MULTILINE)
    assert match, f"docs/api.md has no heading {title!r}"
    level = len(match[1])
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


async def registered_routes(data_dir: Path) -> set[tuple[str, str]]:
    app = await server_app.create_app(data_dir, dev=True)  # dev mode: every route
    try:
        return {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        }
    finally:
        await app.cleanup()


def _sources() -> list[ast.Module]:
    return [ast.parse(p.read_text(encoding="utf-8")) for p in sorted(SERVER_SRC.glob("*.py"))]


def error_codes() -> set[str]:
    """Every error ``code`` the server can send."""
    codes: set[str] = set()
    for tree in _sources():
        for node in ast.walk(tree):
            # ApiError("code", ...)
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                first = node.args[0]
                if (
                    name == "ApiError"
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                ):
                    codes.add(first.value)
            # A code handed over before it becomes an ApiError (return "rate_limited").
            if (
                isinstance(node, ast.Return)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and CODE.fullmatch(node.value.value)
            ):
                codes.add(node.value.value)
    pending = [tokens.TokenError]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls is not tokens.TokenError:
            codes.add(f"token_{cls.reason}")
    codes |= set(server_app._HTTP_CODES.values())
    codes.add("http_error")  # app._errors: an HTTP status without a code of its own
    return codes


def server_message_types() -> set[str]:
    """The ``type`` of every message the server sends (``{"type": "...", ...}``)."""
    types: set[str] = set()
    for tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "type"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        types.add(value.value)
    return types


@pytest.mark.asyncio
async def test_every_route_is_documented_and_every_documented_route_exists(
    tmp_path: Path,
) -> None:
    registered = await registered_routes(tmp_path)
    documented = set(ROUTE_HEADING.findall(doc_text()))
    assert registered - documented == set(), "routes missing from docs/api.md"
    assert documented - registered == set(), "docs/api.md documents routes that do not exist"


def test_every_client_message_type_has_an_entry() -> None:
    documented = set(MESSAGE_HEADING.findall(section(doc_text(), "Client messages")))
    handled = set(signaling.HANDLERS)
    assert handled - documented == set(), "message types missing from docs/api.md"
    assert documented - handled == set(), "docs/api.md documents message types that do not exist"


def test_every_server_message_type_is_named() -> None:
    text = doc_text()
    types = server_message_types()
    assert {"session", "ok", "error", "disconnected"} <= types  # the scan sees them
    missing = sorted(t for t in types if f"`{t}`" not in text)
    assert missing == [], f"server message types not named in docs/api.md: {missing}"


def test_every_error_code_is_named() -> None:
    text = doc_text()
    codes = error_codes()
    assert {"session_not_found", "token_expired", "bad_request"} <= codes  # the scan works
    missing = sorted(c for c in codes if f"`{c}`" not in text)
    assert missing == [], f"error codes not named in docs/api.md: {missing}"


def test_every_close_code_is_named() -> None:
    text = doc_text()
    closes = {
        name: value
        for name, value in vars(errors).items()
        if name.startswith("CLOSE_") and isinstance(value, int)
    }
    assert closes
    missing = sorted(name for name, value in closes.items() if f"`{value}`" not in text)
    assert missing == [], f"close codes not named in docs/api.md: {missing}"


def test_section_reader_finds_nested_headings() -> None:
    """The helper the message check relies on: a level-3 section ends at the next level-3
    or higher heading, and keeps its level-4 entries."""
    text = "## A\n### Client messages\n#### `x`\nbody\n#### `y`\n### Events\n#### `z`\n"
    assert MESSAGE_HEADING.findall(section(text, "Client messages")) == ["x", "y"]
