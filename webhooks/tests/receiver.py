"""A local webhook receiver (a stand-in for a customer's endpoint): answers each POST as scripted."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """``script`` is what the first requests get, in turn: a status code, or ("hang", seconds) to
    answer only after that long (a receiver slower than the webhook timeout); then ``then``."""

    def __init__(self, script: list[Any] | None = None, then: int = 200) -> None:
        self.script, self.then = list(script or []), then
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.then
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body.decode(),
                            "answer": answer,
                        }
                    )
                if isinstance(answer, tuple):  # the receiver is slow: it answers late
                    time.sleep(answer[1])
                    answer = 200
                self.send_response(answer)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
