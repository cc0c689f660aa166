"""The local S3 API: moto's server, made durable.

moto keeps state in memory. Its recorder can append every request to a file and replay it; we
record only requests that change state (not GET/HEAD, which would bloat the log) and replay the
log into a private port before the public one opens, so artifacts survive ``local down``/``up``
and a crash, and clients never see a half-restored store. The log keeps every write (deleted
objects too), so it grows with use: ``local down --purge`` starts it afresh.

Run as ``python -m mlflow_platform.local.s3_server --port 9100 --recording FILE``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

_READ_ONLY_METHODS = {"GET", "HEAD", "OPTIONS"}


def _install_recorder(recording: Path) -> Any:
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
    os.environ["MOTO_ENABLE_RECORDING"] = "true"
    from moto.moto_api import recorder
    from moto.moto_api._internal.recorder.models import Recorder

    original = Recorder._record_request

    def record_writes_only(self: Recorder, request: Any, body: bytes | None = None) -> None:
        if getattr(request, "method", "GET") in _READ_ONLY_METHODS:
            return
        original(self, request, body)

    Recorder._record_request = record_writes_only  # type: ignore[method-assign]
    recorder._location = str(recording)
    recorder._os_enabled = recorder._user_enabled = True
    return recorder


def _replay(recording: Path, app: Any, handler: Any) -> int:
    """Replay the write log through a throwaway loopback port; returns requests replayed.

    Multipart upload ids are random, so the id a replayed CreateMultipartUpload returns replaces
    the recorded one in the requests that follow for the same object.
    """
    import requests
    from werkzeug.serving import make_server

    if not recording.exists() or recording.stat().st_size == 0:
        return 0
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    new_upload_ids: dict[str, str] = {}  # object path -> id of its replayed multipart upload
    replayed = 0
    try:
        with requests.Session() as session, recording.open() as log:
            for line in log:
                entry = json.loads(line)
                body = entry.get("body") or b""
                if entry.get("body_encoded"):
                    body = base64.b64decode(body)
                url = urlsplit(entry["url"])
                query = parse_qsl(url.query, keep_blank_values=True)
                upload_id = dict(query).get("uploadId")
                if upload_id and url.path in new_upload_ids:
                    query = [(k, new_upload_ids[url.path] if k == "uploadId" else v) for k, v in query]
                headers = {k: v for k, v in entry["headers"].items() if k.lower() != "transfer-encoding"}
                response = session.request(
                    entry["method"], f"{base}{url.path}?{urlencode(query)}" if query else f"{base}{url.path}",
                    headers=headers, data=body,
                )
                replayed += 1
                if entry["method"] == "POST" and "uploads" in dict(query) and response.ok:
                    match = re.search(r"<UploadId>([^<]+)</UploadId>", response.text)
                    if match:
                        new_upload_ids[url.path] = match.group(1)
    finally:
        server.shutdown()
    return replayed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--recording", type=Path, required=True)
    args = parser.parse_args(argv)

    recorder = _install_recorder(args.recording)
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    recorder.stop_recording()  # the replay must not record itself
    replayed = _replay(args.recording, app, MotoRequestHandler)
    recorder.start_recording()
    print(f"restored {replayed} recorded write request(s) from {args.recording}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
