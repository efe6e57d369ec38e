"""Transport security of the gRPC port: TLS from a certificate and key, mutual TLS with a
client CA, certificates re-read without a restart, the platform a client certificate is
bound to, and the development CA of `make run` (docs/operations.md, "TLS").

- `server_credentials(settings.tls)`: the server's credentials, or None (plaintext) only
  when CLEARING_TLS_ALLOW_PLAINTEXT=1; a server with neither refuses to start.
- Reload: gRPC core calls the credentials' fetcher before every new handshake
  (`grpc.dynamic_ssl_server_credentials`); it looks at the files' modification stamps and
  hands gRPC a new configuration when they changed and still make a valid pair (a
  certificate whose key is not yet written is skipped until it is). Connections already
  open keep the certificate they were made with: their calls finish undisturbed.
- Minimum TLS 1.2: gRPC core's SSL server credentials accept TLS 1.2 and 1.3 only (their
  minimum is TLS 1.2 unless the C API changes it, which gRPC Python does not expose);
  tests/integration/test_tls.py checks that 1.2 and 1.3 handshakes work and 1.1 does not.
- A client certificate names its platform with the URI SAN `urn:clearing:platform:NAME`
  (`PLATFORM_URI_PREFIX`); the interceptor refuses another platform's key on that
  connection (clearing.api.interceptor).
- `ensure_dev_pki(dir)`: a development CA, a server certificate for 127.0.0.1/localhost and
  a client certificate of the demo platform, made once with the `cryptography` package and
  reused while valid.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clearing.config import TlsSettings

log = logging.getLogger("clearing.tls")

PLATFORM_URI_PREFIX = "urn:clearing:platform:"
# The auth context property gRPC core fills with the peer's certificate (PEM) under TLS.
PEM_CERT_PROPERTY = "x509_pem_cert"
PLAINTEXT_REFUSED = (
    "refusing to serve plaintext: set CLEARING_TLS_CERT and CLEARING_TLS_KEY (TLS; and "
    "CLEARING_TLS_CLIENT_CA for mutual TLS), or allow plaintext explicitly for local "
    "development with CLEARING_TLS_ALLOW_PLAINTEXT=1 (`clearing serve --allow-plaintext`); "
    "`make run` (clearing serve --dev) makes a development CA under var/tls/")
IDENTITY_CACHE_MAX = 1024

# The development PKI under <data dir>/tls (`make run`).
DEV_TLS_DIR = "tls"
CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
CLIENT_CERT, CLIENT_KEY = "client.pem", "client.key"
DEV_HOSTS = ("127.0.0.1", "localhost", "::1")
DEV_CA_DAYS = 3650
DEV_LEAF_DAYS = 825
DEV_RENEW_BEFORE = dt.timedelta(days=7)


# ---- server credentials and their reload -------------------------------------------------

def check(tls: TlsSettings) -> CertificateFiles | None:
    """Refuse (SystemExit, saying why) plaintext that is not allowed explicitly, and TLS
    files that are missing or not a valid set; the files, None for plaintext. `clearing
    serve` calls it before it starts anything, the server again when it starts."""
    if not tls.enabled:
        if not tls.allow_plaintext:
            raise SystemExit(PLAINTEXT_REFUSED)
        return None
    if not (tls.cert and tls.key):
        raise SystemExit("CLEARING_TLS_CERT and CLEARING_TLS_KEY are set together (and "
                         "CLEARING_TLS_CLIENT_CA needs both)")
    files = CertificateFiles(Path(tls.cert), Path(tls.key),
                             Path(tls.client_ca) if tls.client_ca else None)
    try:
        files.load()
    except (OSError, ValueError) as exc:
        raise SystemExit(f"TLS: {exc}") from None
    return files


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """The gRPC port's credentials; None means plaintext, which only an explicit
    CLEARING_TLS_ALLOW_PLAINTEXT=1 allows. A bad file stops the server (SystemExit)."""
    files = check(tls)
    if files is None:
        log.warning("serving PLAINTEXT (CLEARING_TLS_ALLOW_PLAINTEXT=1): API keys and "
                    "payment data cross the network unencrypted; local development only")
        return None
    try:
        initial = files.load()
    except (OSError, ValueError) as exc:
        raise SystemExit(f"TLS: {exc}") from None
    log.info("serving TLS", extra={"cert": tls.cert, "mutual": tls.client_ca is not None,
                                   "subject": files.subject})
    return grpc.dynamic_ssl_server_credentials(
        initial, files.fetch, require_client_authentication=tls.client_ca is not None)


class CertificateFiles:
    """The server's certificate, key and client CA files, re-read when they change.

    `fetch` is gRPC core's certificate configuration fetcher: called (from a core thread)
    before each new handshake, it returns a new configuration when a file changed and the
    files make a valid pair, else None (gRPC keeps the one it has)."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.paths = tuple(p for p in (cert, key, client_ca) if p is not None)
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.subject = ""
        self._stamp: tuple | None = None
        self._refused: tuple | None = None  # the stamp of files found invalid (logged once)
        self._lock = threading.Lock()

    def _stamps(self) -> tuple:
        out = []
        for path in self.paths:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def load(self) -> grpc.ServerCertificateConfiguration:
        """Read and check the files (ValueError/OSError when they are not a valid set)."""
        stamp = self._stamps()
        cert_pem, key_pem = self.cert.read_bytes(), self.key.read_bytes()
        ca_pem = self.client_ca.read_bytes() if self.client_ca else None
        self.subject = check_pair(cert_pem, key_pem, str(self.cert), str(self.key))
        if ca_pem is not None:
            try:
                if not x509.load_pem_x509_certificates(ca_pem):
                    raise ValueError("no certificate")
            except ValueError as exc:
                raise ValueError(f"{self.client_ca}: not a PEM CA bundle ({exc})") from None
        self._stamp = stamp
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)],
                                                         root_certificates=ca_pem)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = self._stamps()
                if stamp == self._stamp or stamp == self._refused:
                    return None
                config = self.load()
            except Exception as exc:  # noqa: BLE001 - never fail a handshake over a file
                # Mid-rotation (the certificate written, its key not yet) or a bad file:
                # keep serving the previous certificate; try again on the next handshake.
                try:
                    self._refused = self._stamps()
                except OSError:
                    self._refused = None
                log.warning("TLS files changed but cannot be used yet; keeping the "
                            "previous certificate: %s", exc)
                return None
            self._refused = None
            log.info("TLS certificate reloaded", extra={"subject": self.subject})
            return config


def check_pair(cert_pem: bytes, key_pem: bytes, cert_name: str, key_name: str) -> str:
    """Check that `cert_pem` is a certificate chain whose first certificate is the public
    half of `key_pem`; its subject (RFC 4514). ValueError says what is wrong."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ValueError(f"{cert_name}: not a PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{key_name}: not an unencrypted PEM private key ({exc})") from None
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.DER, pub)
            != key.public_key().public_bytes(serialization.Encoding.DER, pub)):
        raise ValueError(f"{key_name} is not the key of {cert_name}")
    if leaf.not_valid_after_utc <= dt.datetime.now(dt.timezone.utc):
        log.warning("TLS certificate %s expired on %s", cert_name, leaf.not_valid_after_utc)
    return leaf.subject.rfc4514_string()


# ---- the client's certificate ------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A connection's client certificate: its subject (RFC 4514) and the platforms its URI
    SANs urn:clearing:platform:NAME name (sorted, distinct; normally one or none). A
    certificate naming two platforms is bound to neither: every key is refused on it. A
    certificate whose names cannot be parsed is `readable` False: every key is refused."""

    subject: str
    platforms: tuple[str, ...]
    readable: bool = True

    @property
    def platform(self) -> str:
        """The one platform the certificate is bound to ("" if none, or several)."""
        return self.platforms[0] if len(self.platforms) == 1 else ""


def peer_certificate(context) -> ClientCertificate | None:
    """The client certificate of the call's connection (None without one)."""
    pems = context.auth_context().get(PEM_CERT_PROPERTY)
    if not pems:
        return None
    return identity(pems[0])


@functools.lru_cache(maxsize=IDENTITY_CACHE_MAX)
def identity(pem: bytes) -> ClientCertificate:
    """What a client certificate says (parsed once per certificate)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        subject = cert.subject.rfc4514_string()
    except ValueError:  # the handshake's library accepted what `cryptography` cannot read
        return ClientCertificate("", (), readable=False)
    try:
        platforms = {uri[len(PLATFORM_URI_PREFIX):] for uri in _uris(cert)
                     if uri.startswith(PLATFORM_URI_PREFIX)}
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return ClientCertificate(subject, (), readable=False)
    return ClientCertificate(subject, tuple(sorted(platforms)))


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


# ---- the development PKI of `make run` ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class DevPki:
    """Paths of the development CA and certificates (<data dir>/tls)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / CA_CERT

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY

    @property
    def client_cert(self) -> Path:
        return self.directory / CLIENT_CERT

    @property
    def client_key(self) -> Path:
        return self.directory / CLIENT_KEY


def ensure_dev_pki(directory: Path, *, platform: str = "demo",
                   now: dt.datetime | None = None) -> tuple[DevPki, bool]:
    """The development CA, the server certificate (127.0.0.1, localhost, ::1) and a client
    certificate bound to `platform`, under `directory` (keys 0600). Made once; reused while
    they are valid (signed by the CA, matching their keys, not expiring within a week);
    otherwise made anew. (pki, whether it was made now)."""
    pki = DevPki(Path(directory))
    now = now or dt.datetime.now(dt.timezone.utc)
    if _dev_pki_valid(pki, now):
        return pki, False
    pki.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.directory, 0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clearing core (dev)"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "clearing development CA")])
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now, DEV_CA_DAYS)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _leaf(ca, ca_key, server_key, "clearing server (dev)", now,
                   [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() or ":" in h
                    else x509.DNSName(h) for h in DEV_HOSTS], ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _leaf(ca, ca_key, client_key, f"{platform} gateway (dev)", now,
                   [x509.UniformResourceIdentifier(PLATFORM_URI_PREFIX + platform)],
                   ExtendedKeyUsageOID.CLIENT_AUTH)
    # Keys first, then certificates, each replaced whole (a reloading server never reads
    # half a file; a new certificate whose key is not yet there is skipped).
    _write(pki.directory / CA_KEY, _key_pem(ca_key), secret=True)
    _write(pki.server_key, _key_pem(server_key), secret=True)
    _write(pki.client_key, _key_pem(client_key), secret=True)
    _write(pki.ca, _cert_pem(ca))
    _write(pki.server_cert, _cert_pem(server))
    _write(pki.client_cert, _cert_pem(client))
    return pki, True


def issue_certificate(ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str, *,
                      hosts: tuple[str, ...] = (), uris: tuple[str, ...] = (),
                      client: bool = True, days: int = DEV_LEAF_DAYS
                      ) -> tuple[bytes, bytes]:
    """A certificate signed by the CA (PEM cert, PEM key): for tests and tools."""
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() or ":" in h
        else x509.DNSName(h) for h in hosts]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    cert = _leaf(ca, ca_key, key, common_name, dt.datetime.now(dt.timezone.utc), names,
                 ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH,
                 days=days)
    return _cert_pem(cert), _key_pem(key)


def new_ca(common_name: str) -> tuple[bytes, bytes]:
    """A fresh self-signed CA (PEM cert, PEM key): for tests and tools."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (_builder(name, name, key.public_key(), dt.datetime.now(dt.timezone.utc), DEV_CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: dt.datetime,
             days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def _leaf(ca: x509.Certificate, ca_key, key, common_name: str, now: dt.datetime,
          names: list, usage, *, days: int = DEV_LEAF_DAYS) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "clearing core (dev)"),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (_builder(subject, ca.subject, key.public_key(), now, days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _dev_pki_valid(pki: DevPki, now: dt.datetime) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
        ca_key = pki.directory / CA_KEY
        check_pair(pki.ca.read_bytes(), ca_key.read_bytes(), "ca", "ca key")
        for cert_path, key_path in ((pki.server_cert, pki.server_key),
                                    (pki.client_cert, pki.client_key)):
            check_pair(cert_path.read_bytes(), key_path.read_bytes(), str(cert_path),
                       str(key_path))
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            cert.verify_directly_issued_by(ca)
            if cert.not_valid_after_utc - DEV_RENEW_BEFORE <= now:
                return False
        return ca.not_valid_after_utc - DEV_RENEW_BEFORE > now
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    except Exception:  # noqa: BLE001 - anything unreadable: make them anew
        return False


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Replace `path` whole (a temporary file renamed over it); secrets 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    os.fchmod(fd, 0o600 if secret else 0o644)  # a leftover temporary file keeps its mode
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
