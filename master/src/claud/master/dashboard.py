"""The live dashboard: a static page, its script and its style, holding no data.

The page asks for the API token and reads the authenticated ``/v1`` API with
it (see static/dashboard.js), so these files are served without a credential
and the token never travels in a URL. Its Content-Security-Policy admits only
the master's own script, style and API: no inline script, no other origin, no
framing, so that even a value the script mishandled could not run code.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_STATIC = Path(__file__).with_name("static")

#: URL path -> (file in static/, media type).
_ASSETS = {
    "/ui": ("dashboard.html", "text/html; charset=utf-8"),
    "/ui/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/ui/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    # Its own icon, so that the browser does not ask for /favicon.ico (which is not open).
    "/ui/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
DASHBOARD_PATHS = frozenset(_ASSETS)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@cache
def dashboard_asset(path: str) -> tuple[bytes, str]:
    """The bytes and media type of one of DASHBOARD_PATHS."""
    filename, media_type = _ASSETS[path]
    return (_STATIC / filename).read_bytes(), media_type
