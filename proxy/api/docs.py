"""``/openapi.json`` and ``/docs`` (Swagger UI), both without a key.

The document describes the API, not its data, so it is public like the
routes' own error messages. Swagger UI's files ship inside the package
(``proxy/static/swagger-ui``) and the page references nothing outside the
proxy: ``/docs`` works on a host with no internet access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template_string,
    url_for,
)
from flask.typing import ResponseReturnValue

from proxy.api.openapi.document import build_document

STATIC = Path(__file__).resolve().parents[1] / "static"

bp = Blueprint("docs", __name__, static_folder=str(STATIC), static_url_path="/docs/assets")

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Comptroller API</title>
  <link rel="stylesheet" href="{{ asset('swagger-ui/swagger-ui.css') }}">
  <link rel="icon" href="{{ asset('swagger-ui/favicon-32x32.png') }}" sizes="32x32">
  <link rel="icon" href="{{ asset('swagger-ui/favicon-16x16.png') }}" sizes="16x16">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{{ spec_url }}"></div>
  <script src="{{ asset('swagger-ui/swagger-ui-bundle.js') }}"></script>
  <script src="{{ asset('docs/init.js') }}"></script>
</body>
</html>
"""


def _asset(filename: str) -> str:
    return url_for("docs.static", filename=filename)


def openapi_document() -> dict[str, Any]:
    """Built once per app: the routes and schemas do not change while it runs."""
    cache = current_app.extensions.setdefault("comptroller_docs", {})
    if "openapi" not in cache:
        cache["openapi"] = build_document(current_app)
    return cache["openapi"]


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(openapi_document())


@bp.get("/docs")
def swagger_ui() -> ResponseReturnValue:
    html = render_template_string(PAGE, asset=_asset, spec_url=url_for("docs.openapi_json"))
    return Response(html, mimetype="text/html")


@bp.get("/")
def root() -> ResponseReturnValue:
    """LiteLLM serves its Swagger UI at ``/``; the seeds' "See Swagger" links point there.

    The browser keeps the link's ``#/tag/operation`` fragment across the redirect.
    """
    return redirect(url_for("docs.swagger_ui"))
