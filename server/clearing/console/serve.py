"""Serving the console: its settings (ConsoleSettings) to a ConsoleConfig and uvicorn."""

from __future__ import annotations

import logging

from clearing.config import Settings

log = logging.getLogger("clearing.console")


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"CLEARING_CONSOLE_ADDR={addr!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def config_for(settings: Settings, target: str, credentials):
    from clearing.console.app import ConsoleConfig

    c = settings.console
    return ConsoleConfig(target=target, credentials=credentials, session_s=c.session_s,
                         session_max_s=c.session_max_s,
                         secure_cookie=bool(c.tls_cert and c.tls_key),
                         call_timeout_s=c.call_timeout_s)


def uvicorn_config(app, settings: Settings, listen: str | None = None):
    """uvicorn's configuration of the console: its address, HTTPS when a certificate is
    set, the access log (paths only: nothing secret is ever in a console URL)."""
    import uvicorn

    c = settings.console
    if bool(c.tls_cert) != bool(c.tls_key):
        raise SystemExit("CLEARING_CONSOLE_TLS_CERT and CLEARING_CONSOLE_TLS_KEY go together")
    host, port = split_addr(listen or c.addr)
    return uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on",
                          ssl_certfile=c.tls_cert, ssl_keyfile=c.tls_key,
                          server_header=False, proxy_headers=False)


def run(settings: Settings, target: str, credentials, listen: str | None = None) -> None:
    import uvicorn

    from clearing.console.app import create_app

    app = create_app(config_for(settings, target, credentials))
    server = uvicorn.Server(uvicorn_config(app, settings, listen))
    host, port = split_addr(listen or settings.console.addr)
    scheme = "https" if settings.console.tls_cert else "http"
    log.info("console on %s://%s:%d/ (API %s)", scheme, host, port, target)
    server.run()
