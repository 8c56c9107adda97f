"""HTTP: the legacy BC-pipelines routes, the v1 API, and the one place errors become HTTP.

- `app`: `create_app`, the wiring (lifespan, middleware, routers, schema tweaks)
- `legacy`: the original BC-pipelines routes (`/assignwork`, `/keepalive`, ...)
- `v1`: the v1 API (`/v1/...`, `/healthz`, `/metrics`)
- `schemas`: request bodies and answer models (pydantic, the OpenAPI schema)
- `errors`: bcmanager's errors (and the framework's) mapped to HTTP status and JSON

The long-poll claim itself lives in `bcmanager.longpoll`.
"""

from bcmanager.api.app import create_app

__all__ = ["create_app"]
