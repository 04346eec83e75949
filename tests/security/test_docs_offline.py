"""``/docs`` works with no internet: every file it loads comes from the proxy itself.

The page and every asset it references are fetched from the app; none may
name another host (a CDN, Swagger's online validator, a font service). The
Swagger UI files must also be inside the built wheel, not only in the
source tree.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = re.compile(r"(?:https?:)?//[^\s\"'()]+", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")
SHIPPED = (
    "proxy/static/swagger-ui/swagger-ui-bundle.js",
    "proxy/static/swagger-ui/swagger-ui.css",
    "proxy/static/swagger-ui/LICENSE",
    "proxy/static/docs/init.js",
)


class References(HTMLParser):
    """Every URL an HTML page makes the browser load or follow."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.spec_urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in ("src", "href", "action", "data-spec-url"):
                (self.spec_urls if name == "data-spec-url" else self.urls).append(value)


def test_docs_and_every_asset_they_load_come_from_the_proxy(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    refs = References()
    refs.feed(html)
    assert refs.spec_urls == ["/openapi.json"]
    assert len(refs.urls) >= 4  # stylesheet, icons, the bundle, the start-up script
    assert EXTERNAL.findall(html) == []
    fetched = {}
    for url in [*refs.urls, *refs.spec_urls]:
        assert url.startswith("/") and not url.startswith("//"), url
        resp = client.get(url)
        assert resp.status_code == 200, url
        fetched[url] = resp.get_data()
    init = next(body.decode() for url, body in fetched.items() if url.endswith("init.js"))
    # Swagger UI's default validator badge is an online service: switched off.
    assert "validatorUrl: null" in init
    assert EXTERNAL.findall(init) == []
    css = next(body.decode() for url, body in fetched.items() if url.endswith(".css"))
    for url in CSS_URL.findall(css):
        assert url.startswith("data:"), f"the stylesheet loads {url}"
    assert b"SwaggerUIBundle" in next(b for u, b in fetched.items() if u.endswith("bundle.js"))


def test_the_root_leads_to_the_docs_as_litellms_swagger_links_expect(client: FlaskClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/docs"


@pytest.mark.slow
def test_the_swagger_ui_files_are_inside_the_wheel(tmp_path: Path) -> None:
    # pip, not `python -m build`: a new venv's setuptools is older than build-system asks.
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*command, "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True
    )
    (wheel,) = tmp_path.glob("comptroller-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in SHIPPED if name not in names] == []
