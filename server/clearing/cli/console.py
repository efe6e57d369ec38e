"""`clearing console`: the back-office web console (clearing.console), a client of the
server at --addr (CLEARING_GRPC_ADDR), connecting as the client commands do (TLS with
var/tls/ from `make run`, or --tls-*/CLEARING_CLIENT_TLS_*), listening on --listen
(CLEARING_CONSOLE_ADDR, 127.0.0.1:8080 by default). People sign in with their API key."""

from __future__ import annotations

from clearing.config import Settings


def cmd_console(args, settings: Settings) -> int:
    from clearing import logs
    from clearing.cli.client import credentials_for
    from clearing.console import serve

    logs.setup(settings.log_level)
    target = args.addr or settings.grpc_addr
    serve.run(settings, target, credentials_for(args, settings, target), args.listen)
    return 0


def add_parser(sub) -> None:
    from clearing.cli.client import tls_options

    p = sub.add_parser("console", help="the back-office web console")
    p.add_argument("--addr", help="the server's gRPC address (default: CLEARING_GRPC_ADDR)")
    p.add_argument("--listen", help="host:port to serve on (default: CLEARING_CONSOLE_ADDR)")
    tls_options(p)
    p.set_defaults(func=cmd_console)
