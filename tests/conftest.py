"""Shared fixtures: an isolated weights cache and online/offline switches for every test."""

from __future__ import annotations

import os

import pytest


def _fail_forbidden_skip(report):
    """Turn a skip into a failure where CI sets CANOPY_NO_SKIPS and its reason does not name CUDA; return the report."""
    if not os.environ.get("CANOPY_NO_SKIPS") or not report.skipped or hasattr(report, "wasxfail"):
        return report
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if "CUDA" not in reason:
        report.outcome = "failed"
        report.longrepr = f"skipped where every test but the CUDA ones must run (CANOPY_NO_SKIPS is set): {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A forbidden skip of a test fails it, so that CI cannot pass with tests quietly missing."""
    return _fail_forbidden_skip((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped while it is collected (``pytest.importorskip`` at its top)."""
    return _fail_forbidden_skip((yield))


@pytest.fixture(autouse=True, scope="session")
def fp32_auto_precision_on_every_cpu():
    """Make ``--precision auto`` fp32 on the CPU whatever this CPU's bf16 instructions, so maps that tests
    compare tightly are the same on every machine (module-scoped fixtures included); tests of the rule
    itself patch it their own way."""
    import canopy.runtime.device as device

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device, "cpu_has_bf16_instructions", lambda: False)
        yield


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point the weights cache at a fresh temporary directory and clear offline mode."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CANOPY_CACHE_DIR", str(cache))
    monkeypatch.delenv("CANOPY_OFFLINE", raising=False)
    return cache


class LocalServer:
    """An HTTP server on 127.0.0.1 serving a directory with byte ranges (as COG readers need), and
    optionally a STAC API search endpoint (POST /search) over a list of item dicts; with ``token``,
    GETs without ``Authorization: Bearer <token>`` are refused (401), as the Hub does for gated files."""

    def __init__(self, directory, stac_items=None, flaky=None, token=None):
        import functools
        import http.server
        import json
        import threading

        self.bytes_sent: dict[str, int] = {}
        self.requests: list[str] = []
        self.flaky = dict(flaky or {})  # path -> how many requests still fail with 503
        server_state = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def end_headers(self):
                self.send_header("Accept-Ranges", "bytes")
                super().end_headers()

            def do_GET(self):
                server_state.requests.append(self.path)
                if server_state.flaky.get(self.path, 0) > 0:
                    server_state.flaky[self.path] -= 1
                    self.send_error(503, "try again")
                    return
                if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_error(401, "gated")
                    return
                ranged = self.headers.get("Range")
                path = self.translate_path(self.path)
                if not ranged or not os.path.isfile(path):
                    return super().do_GET()
                start_text, _, end_text = ranged.removeprefix("bytes=").partition("-")
                size = os.path.getsize(path)
                start = int(start_text)
                end = min(int(end_text) if end_text else size - 1, size - 1)
                with open(path, "rb") as handle:
                    handle.seek(start)
                    body = handle.read(end - start + 1)
                self.send_response(206)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                server_state.bytes_sent[self.path] = server_state.bytes_sent.get(self.path, 0) + len(body)

            def do_POST(self):
                server_state.requests.append("POST " + self.path)
                if self.path.rstrip("/") != "/search" or stac_items is None:
                    self.send_error(404)
                    return
                query = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                features = [item for item in stac_items if _stac_match(item, query)]
                body = json.dumps({"type": "FeatureCollection", "features": features, "links": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/geo+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        handler = functools.partial(Handler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _stac_match(item: dict, query: dict) -> bool:
    """The bbox and collections filters of a STAC API search, as a real API applies them."""
    bbox = query.get("bbox")
    if bbox:
        w, s, e, n = item["bbox"]
        if not (w < bbox[2] and bbox[0] < e and s < bbox[3] and bbox[1] < n):
            return False
    collections = query.get("collections")
    return not collections or item.get("collection") in collections


@pytest.fixture
def local_server():
    """Start LocalServer instances on 127.0.0.1 for the test and stop them after it."""
    servers = []

    def start(directory, stac_items=None, flaky=None, token=None) -> LocalServer:
        server = LocalServer(directory, stac_items, flaky, token)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def serve_directory(local_server):
    """Serve a directory over HTTP on 127.0.0.1; returns a function taking the directory and giving the base URL."""
    return lambda directory: local_server(directory).url


@pytest.fixture(autouse=True)
def outputs_are_valid_cogs(tmp_path):
    """After each test, every height map canopy wrote under the test's tmp_path must be a valid COG."""
    yield
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    for path in tmp_path.rglob("*.tif"):
        if ".partial" in str(path):
            continue
        try:
            with rasterio.open(path) as src:
                ours = "canopy_model" in src.tags()
        except rasterio.errors.RasterioIOError:
            continue
        if ours:
            assert cog_validate(path, strict=True) == (True, [], []), f"{path} is not a valid COG"
