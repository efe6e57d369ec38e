"""The development CA of `make run` (clearing.tls.ensure_dev_pki): made once with keys
0600, reused while valid, made anew when a certificate nears its end or a file is broken;
its certificates verify against the CA and the client certificate names the demo
platform."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from clearing import tls


def test_made_once_reused_and_remade_when_invalid(tmp_path):
    directory = tmp_path / "tls"
    pki, made = tls.ensure_dev_pki(directory)
    assert made
    for path in (pki.server_key, pki.client_key, directory / tls.CA_KEY):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert directory.stat().st_mode & 0o777 == 0o700
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}
    client = tls.identity(pki.client_cert.read_bytes())
    assert client.platform == "demo" and "demo gateway" in client.subject
    tls.check_pair(pki.server_cert.read_bytes(), pki.server_key.read_bytes(), "c", "k")

    before = pki.ca.read_bytes()
    assert tls.ensure_dev_pki(directory) == (pki, False)  # reused
    assert pki.ca.read_bytes() == before

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=tls.DEV_LEAF_DAYS - 1)
    assert tls.ensure_dev_pki(directory, now=later)[1]  # the leaves near their end
    pki.client_key.write_bytes(b"not a key")
    assert tls.ensure_dev_pki(directory)[1]
    tls.check_pair(pki.client_cert.read_bytes(), pki.client_key.read_bytes(), "c", "k")


def test_a_certificate_naming_two_platforms_is_bound_to_neither(tmp_path):
    ca, ca_key = tls.new_ca("t")
    one, _ = tls.issue_certificate(ca, ca_key, "one", uris=(tls.PLATFORM_URI_PREFIX + "a",))
    two, _ = tls.issue_certificate(ca, ca_key, "two", uris=(
        tls.PLATFORM_URI_PREFIX + "a", tls.PLATFORM_URI_PREFIX + "b", "https://example.test/"))
    none, _ = tls.issue_certificate(ca, ca_key, "none", uris=("https://example.test/",))
    assert tls.identity(one).platforms == ("a",) and tls.identity(one).platform == "a"
    assert tls.identity(two).platforms == ("a", "b") and tls.identity(two).platform == ""
    assert tls.identity(none).platforms == () and tls.identity(none).platform == ""
