"""A small HTTP proxy on 127.0.0.1 in front of the moto S3 server that injects storage faults.

    proxy = FaultProxy(moto_url).start()
    proxy.add("GET", "/bucket/exports/", "slowdown", times=1)   # 503 SlowDown once
    store = S3Store("bucket", endpoint_url=proxy.url, ...)

Faults: `slowdown` (503 SlowDown), `internal` (500 InternalError), `deny` (403 AccessDenied),
`reset` (the connection is closed with a TCP reset, no response), `stall` (no answer for
`stall_s`: the client's read timeout), `delete` (the object is deleted upstream, then the
request is forwarded: deleted between the listing and the get), `replace` (the object is
overwritten upstream with `replacement`, then the request is forwarded: replaced between the
listing and the get), `outage` (this request
starts an outage of `outage_s`). During an outage (`outage(seconds)`) every request is
reset. Requests are matched by method and path prefix (`query` and `suffix` too, e.g.
`list-type=2` for ListObjectsV2); `times` bounds how often a rule fires.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    "<Error><Code>{code}</Code><Message>{msg}</Message></Error>"
)
_ANSWERS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "deny": (403, "AccessDenied", "Access Denied"),
}


@dataclass
class Rule:
    method: str
    path_prefix: str
    fault: str
    times: int
    query: str = ""
    suffix: str = ""
    fired: int = 0

    def matches(self, method: str, path: str, query: str) -> bool:
        return (
            self.fired < self.times
            and method == self.method
            and path.startswith(self.path_prefix)
            and path.endswith(self.suffix)
            and self.query in query
        )


class FaultProxy:
    """The proxy: rules, an outage window, counts of the faults it injected."""

    def __init__(self, upstream: str, *, stall_s: float = 3.0, outage_s: float = 3.0) -> None:
        self.upstream = urlsplit(upstream)
        self.stall_s, self.outage_s = stall_s, outage_s
        self.rules: list[Rule] = []
        self.outage_until = 0.0
        self.injected: dict[str, int] = {}
        self.replacement = b""
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(
        self,
        method: str,
        path_prefix: str,
        fault: str,
        *,
        times: int = 1,
        query: str = "",
        suffix: str = "",
    ) -> Rule:
        rule = Rule(method, path_prefix, fault, times, query, suffix)
        with self._lock:
            self.rules.append(rule)
        return rule

    def outage(self, seconds: float) -> None:
        self.outage_until = time.monotonic() + seconds

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
        self.outage_until = 0.0

    def fault_for(self, method: str, path: str, query: str) -> str | None:
        if time.monotonic() < self.outage_until:
            fault: str | None = "reset"
        else:
            fault = None
            with self._lock:
                for rule in self.rules:
                    if rule.matches(method, path, query):
                        rule.fired += 1
                        fault = rule.fault
                        break
        if fault == "outage":  # this request starts an outage of `outage_s`
            self.outage(self.outage_s)
            fault = "reset"
        if fault is not None:
            with self._lock:
                self.injected[fault] = self.injected.get(fault, 0) + 1
        return fault

    def change_upstream(self, path: str, fault: str) -> None:
        """Delete `/<bucket>/<key>` on the upstream server, or overwrite it with
        `replacement` (a boto3 client of its own)."""
        from urllib.parse import unquote

        import boto3

        bucket, key = unquote(path).lstrip("/").split("/", 1)
        client = boto3.client("s3", endpoint_url=self.upstream.geturl(), region_name="us-east-1")
        if fault == "delete":
            client.delete_object(Bucket=bucket, Key=key)
        else:
            client.put_object(Bucket=bucket, Key=key, Body=self.replacement)

    def forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            conn.request(method, target, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            body = self._body()
            split = urlsplit(self.path)
            fault = proxy.fault_for(self.command, split.path, split.query)
            if fault == "reset":
                self._reset()
                return
            if fault == "stall":
                time.sleep(proxy.stall_s)
                self._reset()
                return
            if fault in _ANSWERS:
                status, code, msg = _ANSWERS[fault]
                xml = _XML.format(code=code, msg=msg).encode()
                self._answer(status, [("Content-Type", "application/xml")], xml)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
            if body:
                headers["Content-Length"] = str(len(body))
            if fault in ("delete", "replace"):
                proxy.change_upstream(split.path, fault)
            status, resp_headers, resp_body = proxy.forward(self.command, self.path, headers, body)
            if self.command == "HEAD":
                self.send_response(status)
                for name, value in resp_headers:
                    if name.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.end_headers()
                return
            self._answer(status, resp_headers, resp_body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

    return Handler
