"""The web console under /ui: one HTML page and a few plain ES modules, no build step.

Every /ui/... path answers the same page and the modules draw the view the path names (batches, a batch, a file,
search, upload). They call this service's /v1 API, and ingest's for uploads, with the API key the user enters
once (kept in the tab's sessionStorage).
"""
import html
import urllib.parse
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.status_api.settings import StatusSettings

__all__ = ["UI_DIR", "mount"]

UI_DIR = Path(__file__).with_name("ui")


def mount(app: FastAPI, settings: StatusSettings) -> None:
    page = (UI_DIR / "index.html").read_text().replace("{{ingest_url}}", html.escape(settings.console_ingest_url))
    ingest = urllib.parse.urlsplit(settings.console_ingest_url)
    headers = {
        # Scripts, styles and data only from here; uploads, cancel and retry also to ingest's origin.
        "Content-Security-Policy": (f"default-src 'self'; connect-src 'self' {ingest.scheme}://{ingest.netloc}; "
                                    "img-src 'self' blob: data:; object-src 'none'; frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    def console_page() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    app.mount("/ui/assets", StaticFiles(directory=UI_DIR), name="console-assets")
    app.add_api_route("/ui", console_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/{path:path}", console_page, methods=["GET"], include_in_schema=False)
