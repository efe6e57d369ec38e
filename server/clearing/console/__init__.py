"""The back-office web console (issue 17): a Starlette app with Jinja2 templates, served by
uvicorn (`clearing console`, and inside `make run`). It is a client of the core's own gRPC
API through the clearing_client SDK, never of the database: it signs in with an API key and
can do nothing that key could not do over gRPC; tenancy and roles are the API's
(docs/console.md)."""
