#!/usr/bin/env python3
"""A minimal OpenAI-compatible endpoint over HTTPS with a self-signed certificate, for Switchyard's
TLS tests. Python 3 standard library only.

Usage:
    tls_provider.py --cert CERT.pem --key KEY.pem [--port-file PATH] [--parent-pid PID]

POST .../chat/completions answers a fixed completion; GET /count answers how many chat requests
got through (a client that refuses the certificate never gets that far).
"""

import argparse
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fixture_process import announce

COUNT = 0
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        with LOCK:
            self.send({"count": COUNT})

    def do_POST(self):
        global COUNT
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with LOCK:
            COUNT += 1
        self.send({"id": "chatcmpl-tls", "object": "chat.completion", "created": int(time.time()), "model": "tls",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "over TLS"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})




def main():
    parser = argparse.ArgumentParser(description="An OpenAI-compatible endpoint over HTTPS.")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port-file")
    parser.add_argument("--parent-pid", type=int)
    arguments = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(arguments.cert, arguments.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    announce(server.server_address[1], arguments.port_file, arguments.parent_pid)
    server.serve_forever()


if __name__ == "__main__":
    main()
