"""A stand-in HTTP API for offline tests: one function answers each GET with JSON (or None for 404)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: (path, query parameters, request headers) -> (the JSON body or None, its content type)
Answer = Callable[[str, dict, dict], "tuple[object | None, str]"]


@contextmanager
def json_api(answer: Answer) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving ``answer`` until the block ends."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            body, content_type = answer(path, dict(urllib.parse.parse_qsl(query)), dict(self.headers))
            if body is None:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
