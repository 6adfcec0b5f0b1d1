"""The live topology page: /ui (HTML), /ui/static/* (one script, one stylesheet).

The page holds no data: its script asks the REST API (`GET /api/v1/topology`)
every second with the token the user typed in, kept in the tab's sessionStorage
and sent as a bearer header, never in a URL. The API scopes the answer, so a
tenant token draws only that tenant; the page itself needs no token. Nothing is
loaded from anywhere else (Content-Security-Policy: 'self' only), and names are
put in the drawing as text, never as markup.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.paths import API_PREFIX, UI_PATH

_HERE = files(__name__)
_STATIC = f"{UI_PATH}/static"
# The page runs only its own script and talks only to this service.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page() -> str:
    template = _HERE.joinpath("page.html").read_text(encoding="utf-8")
    return template.replace("{{static}}", _STATIC).replace("{{api}}", API_PREFIX)


def install(app: FastAPI) -> None:
    html = page()

    @app.get(UI_PATH, include_in_schema=False)
    def topology_page() -> HTMLResponse:
        return HTMLResponse(html, headers=_SECURITY_HEADERS)

    static = StaticFiles(directory=str(_HERE.joinpath("static")), check_dir=True)
    app.mount(_STATIC, static, name="ui-static")
