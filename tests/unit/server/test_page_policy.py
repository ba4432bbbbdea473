"""The Content-Security-Policy of the browser client's page (e2ee.server.page_policy):
unchanged without a cluster; in cluster mode, the exact origins of the live nodes'
public URLs (http(s) and the ws(s) of the same scheme), never a wildcard, and nothing
that is not a plain origin."""

from __future__ import annotations

from e2ee.server.page_policy import node_sources, page_policy

#: The policy before cluster mode existed, for a page served at 127.0.0.1:8080.
SINGLE_NODE = (
    "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def directive(policy: str, name: str) -> list[str]:
    [found] = [d.split() for d in policy.split("; ") if d.split()[0] == name]
    return found[1:]


def test_without_a_cluster_the_policy_is_unchanged() -> None:
    assert page_policy("127.0.0.1:8080") == SINGLE_NODE
    assert page_policy("127.0.0.1:8080", []) == SINGLE_NODE
    # A Host header that is not a plain host names nothing but 'self'.
    assert directive(page_policy("a b; script-src *"), "connect-src") == ["'self'"]


def test_cluster_nodes_are_named_by_exact_origin() -> None:
    policy = page_policy(
        "127.0.0.1:8080",
        [
            "http://127.0.0.1:8080",  # this node: no repeat
            "http://127.0.0.1:8081/",
            "https://B.calls.example.org/e2ee/",  # path dropped, host lowercased
            "http://[::1]:8082",
        ],
    )
    assert directive(policy, "connect-src") == [
        "'self'",
        "ws://127.0.0.1:8080",
        "wss://127.0.0.1:8080",
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8081",
        "ws://127.0.0.1:8081",
        "https://b.calls.example.org",
        "wss://b.calls.example.org",
        "http://[::1]:8082",
        "ws://[::1]:8082",
    ]
    # Only connections widen: scripts, workers and the rest stay this origin's.
    assert directive(policy, "script-src") == ["'self'"]
    assert directive(policy, "default-src") == ["'none'"]


def test_only_plain_origins_are_named() -> None:
    refused = [
        "",
        "not a url",
        "ftp://files.example.org",
        "javascript:alert(1)",
        "http://*.example.org",
        "https://*",
        "http://user:pw@node.example.org",
        "http://node.example.org;script-src *",
        "http://node example.org",
        "http://[::1",
        "//node.example.org",
    ]
    assert node_sources(refused) == []
    policy = page_policy("127.0.0.1:8080", refused)
    assert policy == SINGLE_NODE
    assert "*" not in policy


def test_an_https_node_gets_no_cleartext_socket() -> None:
    assert node_sources(["https://node.example.org:8443"]) == [
        "https://node.example.org:8443",
        "wss://node.example.org:8443",
    ]
