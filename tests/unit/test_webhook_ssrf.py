"""Webhook endpoints cannot make the server post to its own network (SSRF; review of the
events merge): a URL naming a loopback, private, link-local or reserved address is refused
at creation (loopback only with CLEARING_WEBHOOK_ALLOW_HTTP_LOOPBACK), and at every attempt
the target is checked again: an IP literal by the deliverer, a name by its resolver (a
name that resolves to such an address: DNS rebinding)."""

from __future__ import annotations

import pytest

from clearing.errors import Violations
from clearing.events.webhooks import PublicResolver, target_refused, url_violations

REFUSED = ["https://127.0.0.1/h", "https://localhost/h", "https://[::1]/h",
           "https://10.0.0.5/h", "https://192.168.1.1/h", "https://172.16.0.1/h",
           "https://169.254.169.254/latest/meta-data", "https://0.0.0.0/h",
           "https://[::ffff:10.0.0.5]/h", "https://[fd00::1]/h", "https://100.64.0.1/h",
           "http://10.0.0.5/h"]


def _violations(url: str, allow: bool) -> list[str]:
    v = Violations()
    url_violations(v, url, allow_http_loopback=allow)
    return [f.field for f in v.items]


@pytest.mark.parametrize("url", REFUSED)
def test_private_and_loopback_targets_are_refused_at_creation(url):
    assert _violations(url, False) == ["url"]


def test_public_targets_and_dev_loopback_are_accepted():
    assert _violations("https://hooks.example.com/clearing", False) == []
    assert _violations("https://93.184.216.34/h", False) == []
    assert _violations("http://127.0.0.1:8080/h", True) == []
    assert _violations("https://10.0.0.5/h", True) == ["url"]


def test_an_attempt_to_a_private_literal_is_refused():
    assert target_refused("https://169.254.169.254/x", allow_loopback=False)
    assert target_refused("https://[::ffff:127.0.0.1]/x", allow_loopback=False)
    assert target_refused("http://127.0.0.1:9/x", allow_loopback=False)
    assert not target_refused("http://127.0.0.1:9/x", allow_loopback=True)
    assert not target_refused("https://hooks.example.com/x", allow_loopback=False)


@pytest.mark.asyncio
async def test_a_name_resolving_to_loopback_is_refused_by_the_resolver():
    resolver = PublicResolver(allow_loopback=False)
    try:
        with pytest.raises(OSError, match="no public address"):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()
    resolver = PublicResolver(allow_loopback=True)
    try:
        assert {r["host"] for r in await resolver.resolve("localhost", 443)} <= {
            "127.0.0.1", "::1"}
    finally:
        await resolver.close()


@pytest.mark.parametrize("url, description", [
    ("https://hooks.example.com/\x00", ""), ("https://exa\x00mple.com/x", ""),
    ("https://hooks.example.com/a b", ""), ("https://hooks.example.com/\r\nX: y", ""),
    ("https://hooks.example.com/x", "a\x00b")])
def test_nul_and_control_characters_are_field_violations(url, description):
    """PostgreSQL text cannot hold NUL: such a URL or description answered INTERNAL."""
    from clearing.events.webhooks import description_violations

    v = Violations()
    url_violations(v, url, allow_http_loopback=False)
    description_violations(v, description)
    assert [f.field for f in v.items] == ["description" if description else "url"]
