"""Helpers the tests import (conftest modules are for fixtures only: two of
them share the module name `conftest`, so nothing may import from them)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "include" / "masking" / "rules.yaml"
KEY = "test-key-" + "k" * 40


def rows(dsn: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


class WebhookCapture:
    """A local HTTP endpoint standing in for Slack's incoming webhook: records what is posted."""

    def __init__(self):
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/XXX"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
