"""The browser client, served by the relay at ``/`` with strict security headers.

The bundle is built from ``clients/web/`` (TypeScript, esbuild) and committed under
``clients/web/dist/``; it ships in the Python distribution as package data, so
``./scripts/relay`` and ``pip install`` users get it with no Node.js. The relay never
imports client code: it only serves these static files.

* ``GET /`` → ``index.html`` with the brand's name in ``<title>`` (HTML-escaped; the app
  itself reads the rest of the brand from ``/v1/config`` at start, so no rebuild is needed).
* ``GET /<file>`` for every file of the bundle (``app.js``, ``app.css``, ``sw.js``, ...).

Every answer carries a Content-Security-Policy without inline script or ``eval``,
``connect-src`` limited to the relay itself, ``frame-ancestors 'none'`` and no third-party
origin, except the brand's logo origin in ``img-src`` (only ``https://``, or ``http://`` on
localhost as the settings allow).
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request, Response

from server.settings import Settings

__all__ = ["DIST", "content_security_policy", "mount"]

#: Where the committed bundle lives (in a checkout and in an installed distribution alike:
#: ``clients/`` is installed beside ``server/``).
DIST = Path(__file__).resolve().parents[2] / "clients" / "web" / "dist"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
}
_TITLE_MARK = "%BRAND_NAME%"
_COLOR_MARK = "%BRAND_COLOR%"
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def _logo_origin(settings: Settings) -> str | None:
    url = settings.brand.logo_url
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: Settings, host: str | None) -> str:
    """The CSP of every web-app answer (``host``: the request's Host, if well-formed)."""
    connect = ["'self'"]
    if host and _HOST.match(host):
        connect += [f"ws://{host}", f"wss://{host}"]
    images = ["'self'", "blob:", "data:"]
    logo = _logo_origin(settings)
    if logo:
        images.append(logo)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "media-src 'self' blob:",
            f"connect-src {' '.join(connect)}",
            "worker-src 'self'",
            "manifest-src 'self'",
            "font-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _security_headers(settings: Settings, request: Request) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(settings, request.headers.get("host")),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
        "Cache-Control": "no-cache",
    }


class _Bundle:
    """The files of ``dist`` read once at startup (the bundle is small and immutable)."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.files: dict[str, bytes] = {}
        if root.is_dir():
            for path in sorted(root.iterdir()):
                if path.is_file() and path.suffix in _TYPES:
                    self.files[path.name] = path.read_bytes()
        index = self.files.get("index.html")
        if index is not None:
            text = index.decode("utf-8")
            text = text.replace(_TITLE_MARK, html.escape(settings.brand.name))
            text = text.replace(_COLOR_MARK, settings.brand.primary_color)
            self.files["index.html"] = text.encode("utf-8")
        self.etags = {
            name: '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            for name, data in self.files.items()
        }

    def answer(self, name: str, settings: Settings, request: Request) -> Response:
        data = self.files[name]
        headers = _security_headers(settings, request)
        headers["ETag"] = self.etags[name]
        if name == "sw.js":
            headers["Service-Worker-Allowed"] = "/"
        if request.headers.get("if-none-match") == self.etags[name]:
            return Response(status_code=304, headers=headers)
        media = _TYPES[Path(name).suffix]
        return Response(content=data, media_type=media, headers=headers)


def mount(app: FastAPI, settings: Settings, root: Path = DIST) -> None:
    """Serve the bundle at ``/`` (nothing is mounted when the bundle is absent)."""
    bundle = _Bundle(root, settings)
    if "index.html" not in bundle.files:
        return
    router = APIRouter(include_in_schema=False)

    def route(name: str) -> None:
        async def serve(request: Request) -> Response:
            return bundle.answer(name, settings, request)

        path = "/" if name == "index.html" else f"/{name}"
        router.add_api_route(path, serve, methods=["GET", "HEAD"], name=f"web:{name}")

    for name in bundle.files:
        route(name)
    app.include_router(router)
