"""GET /console: the web console (docs/console.md), served by gp8 from its own files.

The console is static: `console/` (our HTML, JS and CSS) and the map library installed from
npm into `node_modules/` by the set-up (`make demo`, `make test`: `npm ci`). It talks to gp8
only through the public API and the live stream, with the key the user pastes, so nothing here
authenticates: these routes serve files, the configuration the page needs (the tile server),
and a page saying what to run when the map library is missing.

Files are served from tables, never from a path taken from the URL as is: our own files by a
name pattern inside `console/`, the vendor files by an explicit list. The page carries a
Content-Security-Policy with no inline script or style, so an injected vehicle label can at
worst be text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from api.problems import ApiProblem

_ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIR = _ROOT / "console"
# Where `npm ci` puts the map library (package.json at the repository's root).
DEFAULT_VENDOR_DIR = _ROOT / "node_modules"

# OpenStreetMap's standard tiles and the attribution their tile usage policy asks for.
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = (
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
)

# Our files: a flat directory of plain names, so nothing from the URL can walk out of it.
_OWN_FILE = re.compile(r"^[a-z][a-z0-9-]*\.(js|css)$")
# What the page cannot work without, ours (an install without the source tree lacks them).
CONSOLE_FILES = ("index.html", "app.js", "api.js", "app.css")
# The vendor files the page loads, by the name it asks for (leaflet.css asks for images/...).
VENDOR_FILES: dict[str, str] = {
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "images/layers.png": "leaflet/dist/images/layers.png",
    "images/layers-2x.png": "leaflet/dist/images/layers-2x.png",
    "images/marker-icon.png": "leaflet/dist/images/marker-icon.png",
    "images/marker-icon-2x.png": "leaflet/dist/images/marker-icon-2x.png",
    "images/marker-shadow.png": "leaflet/dist/images/marker-shadow.png",
    "leaflet.markercluster.js": "leaflet.markercluster/dist/leaflet.markercluster.js",
    "MarkerCluster.css": "leaflet.markercluster/dist/MarkerCluster.css",
    "MarkerCluster.Default.css": "leaflet.markercluster/dist/MarkerCluster.Default.css",
}
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}

_MISSING_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gp8 console: set-up needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>The gp8 console is not set up</h1>
<p>{missing} is missing. The console's map library (Leaflet, from npm) is installed by the
set-up, and its own files come with the gp8 source tree.</p>
<p>Run the set-up in the gp8 checkout: <code>make demo</code> or <code>make test</code>
(both run <code>npm ci</code>), or <code>npm ci</code> alone, then reload this page.</p>
</body></html>
"""


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    """What the console needs from the entry point (GP8_CONSOLE__*)."""

    tile_url: str = DEFAULT_TILE_URL
    tile_attribution: str = DEFAULT_TILE_ATTRIBUTION
    vendor_dir: Path = field(default=DEFAULT_VENDOR_DIR)

    def missing_file(self) -> Path | None:
        """The first file of the console or its map library that is not installed, or None."""
        paths = [CONSOLE_DIR / name for name in CONSOLE_FILES]
        paths += [self.vendor_dir / relative for relative in VENDOR_FILES.values()]
        return next((path for path in paths if not path.is_file()), None)


router = APIRouter(tags=["console"], include_in_schema=False)


def _options(request: Request) -> ConsoleOptions:
    return cast(ConsoleOptions, request.app.state.console)


def tile_origin(tile_url: str) -> str:
    """The tile server's origin for the CSP's img-src: ``{s}`` subdomains become ``*``."""
    parts = urlsplit(tile_url)
    host = parts.netloc.replace("{s}", "*")
    if parts.scheme not in ("http", "https") or not host or "{" in host:
        return "https:"  # a template we cannot narrow: any HTTPS image, still no script
    return f"{parts.scheme}://{host}"


def content_security_policy(request: Request, options: ConsoleOptions) -> str:
    """No inline script or style, no framing; images from us and the tile server; requests
    and the WebSocket only to this server."""
    ws_scheme = "wss" if request.url.scheme == "https" else "ws"
    host = request.headers.get("host", request.url.netloc)
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' data: blob: {tile_origin(options.tile_url)}",
            f"connect-src 'self' {ws_scheme}://{host}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/console", response_class=HTMLResponse)
async def console_page(request: Request) -> Response:
    """The console's page, or (503) a page saying to run the set-up."""
    options = _options(request)
    missing = options.missing_file()
    if missing is not None:
        body = _MISSING_PAGE.format(missing=html.escape(str(missing)))
        return HTMLResponse(body, status_code=503, headers=_PAGE_HEADERS)
    headers = {
        **_PAGE_HEADERS,
        "Content-Security-Policy": content_security_policy(request, options),
    }
    return FileResponse(CONSOLE_DIR / "index.html", media_type="text/html", headers=headers)


@router.get("/console/config.json")
async def console_config(request: Request) -> JSONResponse:
    """What the page cannot know by itself: the tile server and its attribution."""
    options = _options(request)
    return JSONResponse(
        {"tile_url": options.tile_url, "tile_attribution": options.tile_attribution},
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/console/assets/{name:path}")
async def console_asset(name: str, request: Request) -> FileResponse:
    """One of the console's files or of the map library's."""
    if name in VENDOR_FILES:
        path = _options(request).vendor_dir / VENDOR_FILES[name]
    elif _OWN_FILE.match(name):
        path = CONSOLE_DIR / name
    else:
        raise ApiProblem(404, "no such console file")
    if not path.is_file():
        raise ApiProblem(404, "no such console file")
    # no-cache = revalidate (FileResponse sends ETag and Last-Modified): an upgrade shows at once.
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES[path.suffix],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
