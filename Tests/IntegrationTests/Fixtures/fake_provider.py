#!/usr/bin/env python3
"""A fake LLM provider for Switchyard's tests and demo: OpenAI Chat Completions and Anthropic
Messages, with scripted failures. Python 3 standard library only.

Usage:
    fake_provider.py [--host 127.0.0.1] [--port 0] [--port-file PATH] [--parent-pid PID]
                     [--script FILE.json] [--verbose]

Prints the port it listens on (one line on stdout) and writes it to --port-file (atomically) once
ready. With --parent-pid it exits when that process is gone, so a crashed test leaves nothing.

Endpoints:
    POST .../chat/completions   OpenAI-compatible (any prefix, e.g. /v1/chat/completions)
    POST .../messages           Anthropic Messages (e.g. /v1/messages)
    GET  /stats                 {"counts": {model: n}, "requests": {model: [{path, headers, body}]},
                                 "max_in_flight": the most chat requests answered at once}
    POST /script                {model: step | [step, ...]}: what the next calls to a model do
    POST /reset                 forgets scripts and stats
    GET  /health                200 "ok"

A step is an object; every field is optional (the default is a normal answer):
    kind          shorthand: ok, server_error (500), overloaded (529), rate_limited (429
                  rate_limit_exceeded), quota (429 insufficient_quota), unauthorized (401),
                  forbidden (403), bad_request (400), context_length (400 context_length_exceeded),
                  not_found (404), malformed (200 with a body that is not JSON), slow (5 s delay)
    status        HTTP status (overrides kind's)
    code, type, message   error body fields (overrides kind's)
    retry_after, retry_after_ms   headers to send (as given)
    delay_ms      wait this long before answering
    headers       extra response headers, e.g. {"x-ratelimit-remaining-requests": "7"}
    body          a raw body to send as is
    content       the answer's text (default "echo: " + the last user message)
    finish_reason OpenAI finish_reason; stop_reason: Anthropic stop_reason
    content_blocks  Anthropic content blocks to answer with (e.g. a tool_use block)
    anthropic_type  the Anthropic error type (default: by status, e.g. 529 → overloaded_error)
    usage         usage object to answer with (provider's own shape)
    refuse_keys   API keys (Bearer or x-api-key) answered 401 unauthorized; other keys get the step
A model's steps are used in order; the last one repeats. A request header `x-fake-script` holding
a step as JSON overrides the model's script for that request.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fixture_process import announce

KINDS = {
    "ok": {},
    "server_error": {"status": 500, "type": "server_error", "code": None, "message": "The server had an error"},
    "overloaded": {"status": 529, "type": "overloaded_error", "code": None, "message": "Overloaded"},
    "rate_limited": {"status": 429, "type": "requests", "code": "rate_limit_exceeded",
                     "message": "Rate limit reached for requests"},
    "quota": {"status": 429, "type": "insufficient_quota", "code": "insufficient_quota",
              "message": "You exceeded your current quota, please check your plan and billing details."},
    "unauthorized": {"status": 401, "type": "invalid_request_error", "code": "invalid_api_key",
                     "message": "Incorrect API key provided."},
    "forbidden": {"status": 403, "type": "permission_error", "code": None, "message": "Forbidden"},
    "not_found": {"status": 404, "type": "invalid_request_error", "code": "model_not_found",
                  "message": "The model does not exist"},
    "bad_request": {"status": 400, "type": "invalid_request_error", "code": None,
                    "message": "Invalid value for 'temperature': expected a number."},
    "context_length": {"status": 400, "type": "invalid_request_error", "code": "context_length_exceeded",
                       "message": "This model's maximum context length is 4096 tokens. However, you requested "
                                  "5000 tokens."},
    "malformed": {"status": 200, "body": "{\"choices\": [ this is not json"},
    "slow": {"delay_ms": 5000},
}

ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                   500: "api_error", 529: "overloaded_error"}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.scripts = {}
        self.cursors = {}
        self.counts = {}
        self.requests = {}
        self.in_flight = 0
        self.max_in_flight = 0

    def next_step(self, model):
        steps = self.scripts.get(model)
        if not steps:
            return {}
        index = min(self.cursors.get(model, 0), len(steps) - 1)
        self.cursors[model] = self.cursors.get(model, 0) + 1
        return steps[index]


STATE = State()


def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def resolve(step):
    merged = dict(KINDS.get(step.get("kind", "ok"), {}))
    merged.update(step)
    return merged


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    verbose = False

    def log_message(self, format, *args):
        if Handler.verbose:
            sys.stderr.write("fake_provider: " + (format % args) + "\n")

    def send(self, status, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def do_GET(self):
        if self.path == "/health":
            self.send(200, b"ok")
        elif self.path == "/stats":
            with STATE.lock:
                self.send(200, {"counts": STATE.counts, "requests": STATE.requests,
                                "max_in_flight": STATE.max_in_flight})
        else:
            self.send(404, {"error": {"message": "no such path " + self.path, "type": "not_found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if self.path == "/script":
            with STATE.lock:
                for model, steps in (body or {}).items():
                    STATE.scripts[model] = steps if isinstance(steps, list) else [steps]
                    STATE.cursors[model] = 0
            return self.send(200, {"ok": True})
        if self.path == "/reset":
            with STATE.lock:
                STATE.reset()
            return self.send(200, {"ok": True})
        anthropic = self.path.endswith("/messages")
        if not anthropic and not self.path.endswith("/chat/completions"):
            return self.send(404, {"error": {"message": "no such path " + self.path, "type": "not_found"}})
        model = body.get("model", "unknown") if isinstance(body, dict) else "unknown"
        with STATE.lock:
            STATE.in_flight += 1
            STATE.max_in_flight = max(STATE.max_in_flight, STATE.in_flight)
        try:
            self.chat(body, model, anthropic)
        finally:
            with STATE.lock:
                STATE.in_flight -= 1

    def chat(self, body, model, anthropic):
        with STATE.lock:
            STATE.counts[model] = STATE.counts.get(model, 0) + 1
            STATE.requests.setdefault(model, []).append(
                {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            step = STATE.next_step(model)
        if self.headers.get("x-fake-script"):
            step = json.loads(self.headers["x-fake-script"])
        refused = step.get("refuse_keys")
        if refused is not None:
            auth = self.headers.get("Authorization") or ""
            key = auth[len("Bearer "):] if auth.startswith("Bearer ") else (self.headers.get("x-api-key") or "")
            step = {"kind": "unauthorized"} if key in refused else {k: v for k, v in step.items() if k != "refuse_keys"}
        step = resolve(step)
        if step.get("delay_ms"):
            time.sleep(step["delay_ms"] / 1000.0)
        if body is None:
            return self.send(400, {"error": {"message": "request body is not JSON", "type": "invalid_request_error"}})
        self.answer(step, body, model, anthropic)

    def answer(self, step, body, model, anthropic):
        headers = dict(step.get("headers") or {})
        for name in ("retry_after", "retry_after_ms"):
            if name in step:
                headers[name.replace("_", "-")] = step[name]
        status = step.get("status", 200)
        if "body" in step:
            return self.send(status, step["body"].encode(), headers)
        if status >= 400:
            return self.send(status, self.error_body(step, status, anthropic), headers)
        messages = body.get("messages") or []
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        content = step.get("content", "echo: " + (text_of(users[-1].get("content")) if users else ""))
        prompt = sum(len(text_of(m.get("content"))) for m in messages if isinstance(m, dict)) // 4 + len(messages)
        prompt += len(body.get("system", "")) // 4 if isinstance(body.get("system"), str) else 0
        completion = len(content.split())
        if anthropic:
            return self.send(status, {
                "id": "msg_fake_%d" % STATE.counts.get(model, 0), "type": "message", "role": "assistant",
                "model": model, "content": step.get("content_blocks", [{"type": "text", "text": content}]),
                "stop_reason": step.get("stop_reason", "end_turn"), "stop_sequence": None,
                "usage": step.get("usage", {"input_tokens": prompt, "output_tokens": completion}),
            }, headers)
        self.send(status, {
            "id": "chatcmpl-fake-%d" % STATE.counts.get(model, 0), "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": step.get("finish_reason", "stop")}],
            "usage": step.get("usage", {"prompt_tokens": prompt, "completion_tokens": completion,
                                        "total_tokens": prompt + completion}),
        }, headers)

    @staticmethod
    def error_body(step, status, anthropic):
        message = step.get("message", "HTTP %d" % status)
        if anthropic:
            kind = step.get("anthropic_type") or ANTHROPIC_TYPES.get(status, "api_error")
            if step.get("code") == "context_length_exceeded":
                message = "prompt is too long: 250000 tokens > 200000 maximum"
            return {"type": "error", "error": {"type": kind, "message": message}}
        return {"error": {"message": message, "type": step.get("type", "error"), "param": None,
                          "code": step.get("code")}}




def main():
    parser = argparse.ArgumentParser(description="A scripted fake OpenAI/Anthropic provider for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--script", help="a JSON file of {model: step | [steps]} to start with")
    parser.add_argument("--verbose", action="store_true")
    arguments = parser.parse_args()
    Handler.verbose = arguments.verbose
    if arguments.script:
        with open(arguments.script) as file:
            for model, steps in json.load(file).items():
                STATE.scripts[model] = steps if isinstance(steps, list) else [steps]
    ThreadingHTTPServer.request_queue_size = 128  # concurrency tests open many connections at once
    server = ThreadingHTTPServer((arguments.host, arguments.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    announce(port, arguments.port_file, arguments.parent_pid)
    print(port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
