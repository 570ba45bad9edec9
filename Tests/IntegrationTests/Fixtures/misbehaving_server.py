#!/usr/bin/env python3
"""An HTTP server that breaks connections on purpose, for Switchyard's poison-job tests.
Python 3 standard library only.

Usage:
    misbehaving_server.py [--port-file PATH] [--parent-pid PID]

Writes the port it listens on to --port-file (atomically) once ready; with --parent-pid it exits
when that process is gone. Every request is read whole, then answered by the first path segment:
    /reset/...     the connection is reset (TCP RST, SO_LINGER 0): "connection reset by peer"
    /close/...     the connection is closed without a byte of answer
    /partial/...   a 200 head promising 1000 bytes, a few bytes of body, then close
    /endless/...   a 200 head with a chunked body that never ends: 64 KiB pieces, one a
                   millisecond, until the client hangs up
    /huge/...      a 200 head promising 1 GiB (Content-Length), then the body, the same way
    /keepalive-drop/...  the first request of a connection is answered 200 (kept alive) with
                   {"body_bytes": N, "framing": "length" or "chunked"}, the bytes of body that
                   arrived and whether a Transfer-Encoding header came; the next request on that
                   connection is read and the connection closed without a reply, as a server
                   closing an idle connection just as the client reuses it does. A request whose
                   body never arrives (a client that sent only its head) waits for it
    /keepalive-drop-late/...  the same, closing the reused connection 1.5 s after reading the
                   request (a proxy's idle timeout during a long answer: the request may have
                   been worked on)
GET /count answers how many requests were broken so far, GET /sent how many bytes of body the
endless and huge answers sent in all.
"""

import argparse
import socket
import struct
import threading
import time

from fixture_process import announce

COUNT = 0
SENT = 0
LOCK = threading.Lock()
GIB = 1 << 30


def stream(connection, chunked):
    """Sends 64 KiB pieces, one a millisecond, until the client hangs up, counting into SENT."""
    global SENT
    piece = b" " * 65536
    try:
        while True:
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            with LOCK:
                SENT += len(piece)
            time.sleep(0.001)
    except OSError:
        pass


def read_request(connection):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    framing = b"chunked" if b"\r\ntransfer-encoding:" in head.lower() else b"length"
    return head.split(b"\r\n")[0].decode("latin-1"), body, framing


def serve(connection):
    global COUNT
    try:
        request = read_request(connection)
        if request is None:
            return
        request_line, body, framing = request
        path = request_line.split(" ")[1] if " " in request_line else "/"
        if path in ("/count", "/sent"):
            with LOCK:
                body = str(COUNT if path == "/count" else SENT).encode()
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            return
        with LOCK:
            COUNT += 1
        if path.startswith("/reset/"):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif path.startswith("/partial/"):
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"choi")
            time.sleep(0.05)
        elif path.startswith("/endless/"):
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            stream(connection, chunked=True)
        elif path.startswith("/keepalive-drop/") or path.startswith("/keepalive-drop-late/"):
            answer = b'{"body_bytes": %d, "framing": "%s"}' % (len(body), framing)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            read_request(connection)
            if path.startswith("/keepalive-drop-late/"):
                time.sleep(1.5)
        elif path.startswith("/huge/"):
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % GIB)
            stream(connection, chunked=False)
    except OSError:
        pass
    finally:
        connection.close()




def main():
    parser = argparse.ArgumentParser(description="An HTTP server that breaks connections on purpose.")
    parser.add_argument("--port-file")
    parser.add_argument("--parent-pid", type=int)
    arguments = parser.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    announce(listener.getsockname()[1], arguments.port_file, arguments.parent_pid)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection,), daemon=True).start()


if __name__ == "__main__":
    main()
