"""A loopback server speaking the chat-completions protocol, whose answers a test scripts from
the note and the known transactions the request carries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.replay_servers import serving

# (note text, known transactions, how many requests came before) -> (status, headers, body)
Script = Callable[[str, list[dict[str, Any]], int], tuple[int, dict[str, str], Any]]


def completion(content: Any) -> dict[str, Any]:
    text = content if isinstance(content, str) else json.dumps(content)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
    }


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.requests: list[tuple[float, dict[str, Any]]] = []
        self.keys: set[str | None] = set()  # the Authorization headers seen
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            n = len(self.server.requests)
            self.server.requests.append((time.monotonic(), body))
            self.server.keys.add(self.headers.get("Authorization"))
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        data = json.loads(user)
        status, headers, answer = self.server.script(data["note"], data["known_transactions"], n)
        raw = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def chat_server(script: Script) -> Iterator[ChatServer]:
    with serving(ChatServer(script)) as server:
        yield server
