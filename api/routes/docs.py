"""GET /: where things are — the API docs (served by gp8 itself), the schema, health, console.

The Swagger UI and ReDoc pages and their assets come from the `fastapi-offline` package
(`api/app.py` builds the app with it), so /docs works on a network without internet. It is
used instead of `swagger-ui-bundle`, whose last release ships Swagger UI 4.15, which cannot
render the OpenAPI 3.1 document FastAPI produces (3.1 support starts with Swagger UI 5).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

router = APIRouter(tags=["health"])

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OPENAPI_URL = "/openapi.json"
# Where the Swagger UI / ReDoc scripts, styles and favicon are mounted.
DOCS_ASSETS_URL = "/static/docs"


class IndexLinks(BaseModel):
    docs: str
    redoc: str
    openapi: str
    health: str
    ready: str
    metrics: str
    console: str


class IndexPublic(BaseModel):
    """What this service is and where to go next; no key needed."""

    name: str
    version: str
    links: IndexLinks


@router.get("/", response_model=IndexPublic)
async def get_index(request: Request) -> IndexPublic:
    """Links to the API docs, the OpenAPI schema, health, readiness, metrics and the console."""
    # Behind a proxy that mounts gp8 under a prefix, the links keep that prefix.
    root = str(request.scope.get("root_path", ""))
    return IndexPublic(
        name=request.app.title,
        version=request.app.version,
        links=IndexLinks(
            docs=root + DOCS_URL,
            redoc=root + REDOC_URL,
            openapi=root + OPENAPI_URL,
            health=root + "/health",
            ready=root + "/ready",
            metrics=root + "/metrics",
            console=root + "/console",
        ),
    )
