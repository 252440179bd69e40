"""Shared fixtures: an isolated weights cache and online/offline switches for every test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point the weights cache at a fresh temporary directory and clear offline mode."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CANOPY_CACHE_DIR", str(cache))
    monkeypatch.delenv("CANOPY_OFFLINE", raising=False)
    return cache


@pytest.fixture
def serve_directory():
    """Serve a directory over HTTP on 127.0.0.1 for the test, and stop the server after it.

    Returns a function taking the directory and returning the base URL.
    """
    import functools
    import http.server
    import threading

    servers = []

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    def start(directory) -> str:
        handler = functools.partial(QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
