"""The webhook signature (server side, clearing.events.webhooks) and the client's verifier
(clearing_client.webhooks) agree; endpoint URLs are checked."""

from __future__ import annotations

import pytest

from clearing.errors import Violations
from clearing.events import webhooks
from clearing_client import WebhookSignatureError, verify_signature, verify_webhook

BODY = b'{"seq": "1", "type": "split.held"}'


def test_the_verifier_accepts_what_the_server_signs():
    header = webhooks.signature_header(["whsec_new", "whsec_old"], 1_700_000_000, BODY)
    assert header.startswith("t=1700000000,v1=") and header.count("v1=") == 2
    for secret in ("whsec_new", "whsec_old", ["x", "whsec_old"]):
        assert verify_signature(BODY, header, secret, now=1_700_000_010) == 1_700_000_000
    assert verify_webhook(BODY, header, "whsec_new", tolerance_s=0)["type"] == "split.held"


@pytest.mark.parametrize("body, header, secret, now", [
    (BODY, "t=1700000000,v1=00", "whsec_new", 1_700_000_000),      # wrong signature
    (BODY + b" ", None, "whsec_new", 1_700_000_000),                # body changed
    (BODY, None, "whsec_other", 1_700_000_000),                     # another secret
    (BODY, None, "whsec_new", 1_700_001_000),                       # too old
    (BODY, "v1=abc", "whsec_new", 1_700_000_000),                   # no timestamp
])
def test_the_verifier_refuses(body, header, secret, now):
    header = header or webhooks.signature_header(["whsec_new"], 1_700_000_000, BODY)
    with pytest.raises(WebhookSignatureError):
        verify_signature(body, header, secret, now=now)


@pytest.mark.parametrize("url, loopback_ok, ok", [
    ("https://hooks.example.com/x", False, True),
    ("http://hooks.example.com/x", True, False),
    ("http://127.0.0.1:8080/x", False, False),
    ("http://127.0.0.1:8080/x", True, True),
    ("http://localhost/x", True, True),
    ("http://[::1]:9/x", True, True),
    ("https://user:pw@example.com/x", False, False),
    ("https://", False, False),
    ("https://example.com:99999/x", False, False),
    ("https://example.com/" + "x" * 3000, False, False),
])
def test_endpoint_urls(url, loopback_ok, ok):
    v = Violations()
    webhooks.url_violations(v, url, allow_http_loopback=loopback_ok)
    try:
        v.raise_if_any()
        assert ok
    except Exception as exc:  # InvalidArgument naming url
        assert not ok and exc.violations[0].field == "url"
