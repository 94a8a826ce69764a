"""A local server speaking OpenAI's streaming chat-completions protocol, standing in for the paid API.

Each request takes the next scripted behaviour from ``script`` (the last one repeats):
``"ok"`` streams a completion, ``429``/``500``/``400`` answer with that status, ``"malformed"``
sends a broken event, ``"truncated"`` ends the stream without ``[DONE]``, ``"slow"`` stalls.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = (
    "Headline: Bottles that keep up\nTagline: Cold drinks all day for every commute\n"
    "Call to action: Order yours today\nPalette: #0f766e #14b8a6 #f0fdfa\n"
    "Stay refreshed on the go with a bottle made for the daily commute."
)


class FakeOpenAI:
    def __init__(self, script: list[object] | None = None) -> None:
        self.script = list(script or ["ok"])
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_behaviour(self) -> object:
        with self.lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    fake.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    return self._json(404, {"error": {"message": "no such route"}})
                behaviour = fake.next_behaviour()
                if isinstance(behaviour, int):
                    message = "Rate limit reached" if behaviour == 429 else "Invalid model or request"
                    return self._json(behaviour, {"error": {"message": message, "type": "invalid_request_error"}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if behaviour == "malformed":
                    self._event('{"choices": [{"delta": {"content": "Hel')
                    return
                if behaviour == "slow":
                    time.sleep(5)
                words = REPLY.split(" ")
                for index, word in enumerate(words):
                    piece = word if index == len(words) - 1 else word + " "
                    self._event(json.dumps({"choices": [{"index": 0, "delta": {"content": piece}}]}))
                if behaviour == "truncated":
                    return
                self._event(
                    json.dumps({"choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": len(words)}})
                )
                self._event("[DONE]")

            def _event(self, data: str) -> None:
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            def _json(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler
