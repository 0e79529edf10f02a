#!/usr/bin/env python3
"""faultproxy.py - an HTTP/1.1 proxy on 127.0.0.1 that forwards to an S3-compatible server
and injects faults at a given rate, with a seeded random generator.

Faults (one chosen uniformly per faulty request among the enabled kinds):
  drop         close the connection without answering; the request is not forwarded
  drop-after   forward the request (so it takes effect), then close without answering
  delay        wait a random 0.1..--delay-max seconds, then forward normally
  error        answer 500 InternalError, 503 SlowDown or 429 SlowDown (S3-style XML body)
               without forwarding
  error-after  forward the request (it takes effect), then answer 500 InternalError
  truncate     forward, then send the headers and only part of the body, then close
  stall        forward, send the headers, wait --stall seconds before the body (use with a
               client low-speed timeout shorter than that); enabled by --stall > 0
  deny         answer 403 AccessDenied without forwarding, with a careless server's message
               that echoes the request target (query included: an Azure SAS signature) and
               the x-amz-security-token and x-ms-* credential headers; only with --kinds, for
               tests that credentials a server sends back are not printed

With --emulate-conditional, PUT and CompleteMultipartUpload requests carrying
"If-None-Match: *" are answered 412 PreconditionFailed when the key exists (checked with HEAD
upstream under a lock), so servers without conditional writes (s3rver) behave like AWS for
clients going through the proxy.

--only REGEX restricts faults to requests whose "METHOD /path?query" matches.

Control (answered by the proxy, never faulted): GET /__faultproxy/set?rate=R&delay_all=S sets
the fault rate and a delay added to every request; GET /__faultproxy/stats returns JSON counts.
Upstream unreachable: 502 with an S3-style XML error. Prints "listening 127.0.0.1 PORT" when
ready; logs one line per fault on stderr. Standard library only.
"""
import argparse
import http.client
import json
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect",
       "transfer-encoding"}

ERRORS = [
    (500, "InternalError", "We encountered an internal error. Please try again."),
    (503, "SlowDown", "Please reduce your request rate."),
    (429, "SlowDown", "Please reduce your request rate."),
]


class State:
    def __init__(self, args):
        self.args = args
        self.rate = args.rate
        self.delay_all = 0.0
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.cond_lock = threading.Lock()
        self.kinds = ["drop", "drop-after", "delay", "error", "error-after", "truncate"]
        if args.stall > 0:
            self.kinds.append("stall")
        if args.kinds:
            self.kinds = [k for k in args.kinds.split(",") if k]
        self.only = re.compile(args.only) if args.only else None
        self.counts = {k: 0 for k in self.kinds}
        self.counts["requests"] = 0
        self.counts["conditional_refused"] = 0
        self.counts["upstream_down"] = 0

    def pick(self, what):
        with self.lock:
            self.counts["requests"] += 1
            if self.only and not self.only.search(what):
                return None, 0.0
            if self.rng.random() >= self.rate:
                return None, 0.0
            kind = self.rng.choice(self.kinds)
            self.counts[kind] += 1
            return kind, self.rng.random()

    def note(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1


STATE = None


def xml_error(code, message, resource=""):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
            '<Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>'
            % (code, message, resource)).encode()


class Handler(socketserver.StreamRequestHandler):
    timeout = 300

    def setup(self):
        super().setup()
        self.upstream = None

    def finish(self):
        try:
            if self.upstream:
                self.upstream.close()
        finally:
            super().finish()

    # -- plumbing --

    def send_raw(self, status, reason, headers, body, head=False, cut=None):
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head and body:
            self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()

    def send_simple(self, status, reason, body, ctype="application/xml", head=False):
        """A complete response; for HEAD requests the headers only, as HTTP requires."""
        self.send_raw(status, reason, [("Content-Type", ctype), ("Content-Length", str(len(body)))],
                      body, head=head)

    def read_request(self):
        line = self.rfile.readline(65537)
        if not line:
            return None
        line = line.decode("latin-1").rstrip("\r\n")
        if not line:
            return self.read_request()
        parts = line.split(" ")
        if len(parts) != 3:
            raise ValueError("bad request line")
        method, target, _ = parts
        headers = []
        while True:
            h = self.rfile.readline(65537)
            if not h:
                raise ValueError("eof in headers")
            h = h.decode("latin-1").rstrip("\r\n")
            if not h:
                break
            name, _, value = h.partition(":")
            headers.append((name.strip(), value.strip()))
        hmap = {k.lower(): v for k, v in headers}
        if "chunked" in hmap.get("transfer-encoding", "").lower():
            raise ValueError("chunked request bodies are not supported")
        if hmap.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        n = int(hmap.get("content-length", "0") or "0")
        body = self.rfile.read(n) if n else b""
        if len(body) != n:
            raise ValueError("short request body")
        return method, target, headers, hmap, body

    def forward(self, method, target, headers, body):
        """Send the request upstream; returns (status, reason, headers, body) or None."""
        for attempt in range(2):
            try:
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(
                        STATE.args.upstream_host, STATE.args.upstream_port, timeout=120)
                c = self.upstream
                c.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    if k.lower() not in HOP:
                        c.putheader(k, v)
                c.endheaders(body if body else None)
                r = c.getresponse()
                data = r.read()  # also for HEAD (b""): http.client needs it to reuse c
                hdrs = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP]
                if r.will_close:
                    c.close()
                    self.upstream = None
                return r.status, r.reason, hdrs, data
            except (OSError, http.client.HTTPException):
                if self.upstream:
                    self.upstream.close()
                self.upstream = None
                if attempt == 1:
                    return None
        return None

    def respond(self, method, status, reason, hdrs, data, cut=None):
        head = method == "HEAD"
        out = [(k, v) for k, v in hdrs if k.lower() != "content-length" or head]
        if not head and status not in (204, 304):
            out.append(("Content-Length", str(len(data))))
        self.send_raw(status, reason, out, data, head=head, cut=cut)

    # -- the loop --

    def handle(self):
        try:
            while True:
                req = self.read_request()
                if req is None:
                    return
                if not self.one(*req):
                    return
        except (OSError, ValueError) as e:
            sys.stderr.write("faultproxy: connection error: %s\n" % e)

    def control(self, target):
        u = urllib.parse.urlparse(target)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/__faultproxy/set":
            if "rate" in q:
                STATE.rate = float(q["rate"][0])
            if "delay_all" in q:
                STATE.delay_all = float(q["delay_all"][0])
            self.send_simple(200, "OK", b"ok\n", "text/plain")
        else:
            with STATE.lock:
                body = json.dumps(STATE.counts).encode() + b"\n"
            self.send_simple(200, "OK", body, "application/json")
        return True

    def conditional_exists(self, method, target, hmap):
        """For If-None-Match: * writes: does the key exist upstream?"""
        u = urllib.parse.urlparse(target)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        is_put = method == "PUT" and "partNumber" not in q
        is_complete = method == "POST" and "uploadId" in q
        if not (is_put or is_complete):
            return None
        # HEAD of the key, signed? s3rver accepts anonymous requests (see components.md).
        r = self.forward("HEAD", u.path, [("Host", hmap.get("host", ""))], b"")
        if r is None:
            return None
        return r[0] == 200

    def one(self, method, target, headers, hmap, body):
        if target.startswith("/__faultproxy/"):
            return self.control(target)
        if STATE.delay_all > 0:
            time.sleep(STATE.delay_all)
        kind, x = STATE.pick("%s %s" % (method, target))
        if kind:
            sys.stderr.write("fault %s %s %s\n" % (kind, method, target[:160]))
            sys.stderr.flush()
        if kind == "drop":
            return False
        if kind == "error":
            status, code, msg = ERRORS[int(x * len(ERRORS)) % len(ERRORS)]
            self.send_simple(status, "Error", xml_error(code, msg, urllib.parse.urlparse(target).path),
                             head=method == "HEAD")
            return True
        if kind == "deny":
            echo = " ".join("%s=%s" % (k, v) for k, v in headers
                            if k.lower() in ("x-amz-security-token", "authorization"))
            msg = "Access Denied for %s %s (%s)" % (method, target, echo)
            msg = msg.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            self.send_simple(403, "Forbidden", xml_error("AccessDenied", msg,
                                                         urllib.parse.urlparse(target).path),
                             head=method == "HEAD")
            return True
        if kind == "delay":
            time.sleep(0.1 + x * (STATE.args.delay_max - 0.1))

        cond = STATE.args.emulate_conditional and hmap.get("if-none-match", "") == "*"
        if cond:
            STATE.cond_lock.acquire()
        try:
            if cond:
                exists = self.conditional_exists(method, target, hmap)
                if exists:
                    STATE.note("conditional_refused")
                    self.send_simple(412, "Precondition Failed",
                                     xml_error("PreconditionFailed",
                                               "At least one of the pre-conditions you specified "
                                               "did not hold", urllib.parse.urlparse(target).path))
                    return True
                # forwarded as is: it is signed, and the server ignores it
            r = self.forward(method, target, headers, body)
        finally:
            if cond:
                STATE.cond_lock.release()
        if r is None:
            STATE.note("upstream_down")
            self.send_simple(502, "Bad Gateway",
                             xml_error("BadGateway", "The upstream server is unreachable."),
                             head=method == "HEAD")
            return True
        status, reason, hdrs, data = r
        if kind == "drop-after":
            return False
        if kind == "error-after":
            self.send_simple(500, "Internal Server Error",
                             xml_error("InternalError", "We encountered an internal error. "
                                       "Please try again."), head=method == "HEAD")
            return True
        if kind == "truncate" and method != "HEAD" and len(data) > 1:
            self.respond(method, status, reason, hdrs, data, cut=int(x * (len(data) - 1)))
            return False
        if kind == "truncate":
            return False  # nothing to cut: drop after forwarding
        if kind == "stall" and method != "HEAD" and data:
            head = [(k, v) for k, v in hdrs if k.lower() != "content-length"]
            head.append(("Content-Length", str(len(data))))
            self.send_raw(status, reason, head, b"")
            time.sleep(STATE.args.stall)
            self.wfile.write(data)
            self.wfile.flush()
            return True
        self.respond(method, status, reason, hdrs, data)
        return True


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global STATE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the S3 server")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    ap.add_argument("--rate", type=float, default=0.1, help="fraction of requests faulted")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--delay-max", type=float, default=1.5, help="longest delay fault, seconds")
    ap.add_argument("--stall", type=float, default=0.0, help="stall fault length, seconds")
    ap.add_argument("--kinds", default="", help="comma-separated fault kinds to use")
    ap.add_argument("--only", default="", help="fault only requests whose 'METHOD /target' "
                    "matches this regular expression")
    ap.add_argument("--emulate-conditional", action="store_true")
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    args.upstream_host, args.upstream_port = host or "127.0.0.1", int(port)
    STATE = State(args)
    srv = Server(("127.0.0.1", args.port), Handler)

    def stop(signum, frame):
        sys.stderr.write("faultproxy: stats %s\n" % json.dumps(STATE.counts))
        sys.stderr.flush()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("listening 127.0.0.1 %d" % srv.server_address[1], flush=True)
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()


if __name__ == "__main__":
    main()
