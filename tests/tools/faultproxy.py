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

With --object-lock, the proxy emulates S3 Object Lock for a bucket whose server (s3rver) has
none. It records the object-lock headers of every write (x-amz-object-lock-mode,
x-amz-object-lock-retain-until-date, Content-MD5, x-amz-checksum-*) and, like S3:
  - refuses a PUT or CreateMultipartUpload with lock headers but no Content-MD5 or
    x-amz-checksum-* header (400 InvalidRequest), with a mode other than GOVERNANCE or
    COMPLIANCE or a retain-until date that is not in the future (400 InvalidArgument), and
    an UploadPart of such an upload without Content-MD5 or x-amz-checksum-*;
  - refuses DELETE and overwriting PUT of an object under retention until its retain-until
    date, with 403 AccessDenied (GOVERNANCE: unless x-amz-bypass-governance-retention: true).
This is S3's answer to a DELETE or PUT naming a locked object *version*. A DELETE or PUT
without a version id on a real (versioned) Object Lock bucket instead succeeds and adds a
delete marker or a new version, while the locked version stays until its date: that
behaviour is not emulated. Retention is enforced only for objects written through the proxy
since it started. GET /__faultproxy/objectlock returns JSON: "writes" (one entry per write
request: method, path, kind put|create|part|complete, mode, until, content_md5, checksum,
status) and "objects" (path -> mode, until). GET /__faultproxy/objectlock/expire?prefix=P ends
the retention of every recorded object whose path starts with P (all by default): it stands
in for the passing of the retention period, for the objects written so far only.

--only REGEX restricts faults to requests whose "METHOD /path?query" matches.

Control (answered by the proxy, never faulted): GET /__faultproxy/set?rate=R&delay_all=S sets
the fault rate and a delay added to every request; GET /__faultproxy/stats returns JSON counts.
Upstream unreachable: 502 with an S3-style XML error. Prints "listening 127.0.0.1 PORT" when
ready; logs one line per fault on stderr. Standard library only.
"""
import argparse
import datetime
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
        self.counts["lock_refused"] = 0
        self.lock_writes = []      # one dict per write request
        self.lock_objects = {}     # path -> {"mode", "until" (epoch seconds), "until_text"}
        self.lock_uploads = {}     # upload id -> lock dict of its CreateMultipartUpload

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


def parse_until(text):
    """An ISO 8601 retain-until date as epoch seconds, or None."""
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            d = datetime.datetime.strptime(text, fmt)
            return d.replace(tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            pass
    return None


def has_integrity(hmap):
    return "content-md5" in hmap or any(k.startswith("x-amz-checksum-") and
                                        k != "x-amz-checksum-algorithm" for k in hmap)


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

    def lock_control(self, target):
        u = urllib.parse.urlparse(target)
        q = urllib.parse.parse_qs(u.query)
        with STATE.lock:
            if u.path.endswith("/expire"):
                prefix = q.get("prefix", [""])[0]
                n = 0
                for path, o in STATE.lock_objects.items():
                    if path.startswith(prefix):
                        o["until"] = 0.0
                        n += 1
                body = json.dumps({"expired": n}).encode() + b"\n"
            else:
                body = json.dumps({"writes": STATE.lock_writes,
                                   "objects": STATE.lock_objects}).encode() + b"\n"
        self.send_simple(200, "OK", body, "application/json")
        return True

    def lock_check(self, method, target, hmap):
        """Object Lock emulation before forwarding: None to forward, or (record, refusal)
        where refusal is None or (status, reason, code, message)."""
        u = urllib.parse.urlparse(target)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        path = u.path
        if method == "DELETE" and "uploadId" not in q:
            kind = "delete"
        elif method == "PUT" and "partNumber" in q:
            kind = "part"
        elif method == "PUT":
            kind = "put"
        elif method == "POST" and "uploads" in q:
            kind = "create"
        elif method == "POST" and "uploadId" in q:
            kind = "complete"
        else:
            return None
        if path.count("/") < 2:
            return None  # bucket-level requests
        rec = {"method": method, "path": path, "kind": kind,
               "mode": hmap.get("x-amz-object-lock-mode"),
               "until": hmap.get("x-amz-object-lock-retain-until-date"),
               "content_md5": "content-md5" in hmap,
               "checksum": sorted(k for k in hmap if k.startswith("x-amz-checksum-")),
               "upload_id": q.get("uploadId", [None])[0]}
        now = time.time()
        denied = (403, "Forbidden", "AccessDenied", "Access Denied")
        with STATE.lock:
            held = STATE.lock_objects.get(path)
            locked = held is not None and held["until"] > now
            bypass = hmap.get("x-amz-bypass-governance-retention", "").lower() == "true"
            # a conditional write of an existing key is answered 412 first
            conditional = hmap.get("if-none-match", "") == "*"
            if kind in ("delete", "put", "complete") and locked and not conditional and not (
                    held["mode"] == "GOVERNANCE" and bypass):
                return rec, denied
            if kind in ("put", "create") and (rec["mode"] or rec["until"]):
                if not rec["mode"] or not rec["until"]:
                    return rec, (400, "Bad Request", "InvalidArgument",
                                 "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode "
                                 "must both be supplied")
                if rec["mode"] not in ("GOVERNANCE", "COMPLIANCE"):
                    return rec, (400, "Bad Request", "InvalidArgument",
                                 "Unknown wormMode directive.")
                t = parse_until(rec["until"])
                if t is None or t <= now:
                    return rec, (400, "Bad Request", "InvalidArgument",
                                 "The retain until date must be in the future!")
                if kind == "put" and not has_integrity(hmap):
                    return rec, (400, "Bad Request", "InvalidRequest",
                                 "Content-MD5 OR x-amz-checksum- HTTP header is required for Put "
                                 "Object requests with Object Lock parameters")
            if kind == "part":
                up = STATE.lock_uploads.get(rec["upload_id"])
                if up and not has_integrity(hmap):
                    return rec, (400, "Bad Request", "InvalidRequest",
                                 "Content-MD5 OR x-amz-checksum- HTTP header is required for Put "
                                 "Part requests with Object Lock parameters")
        return rec, None

    def lock_after(self, rec, status, data):
        """Record a forwarded write and the retention it sets."""
        with STATE.lock:
            rec["status"] = status
            STATE.lock_writes.append(rec)
            if status // 100 != 2:
                return
            lock = None
            if rec["mode"] and rec["until"]:
                lock = {"mode": rec["mode"], "until": parse_until(rec["until"]),
                        "until_text": rec["until"]}
            if rec["kind"] == "put" and lock:
                STATE.lock_objects[rec["path"]] = lock
            elif rec["kind"] == "create" and lock:
                m = re.search(rb"<UploadId>([^<]+)</UploadId>", data or b"")
                if m:
                    STATE.lock_uploads[m.group(1).decode()] = (rec["path"], lock)
            elif rec["kind"] == "complete":
                up = STATE.lock_uploads.pop(rec["upload_id"], None)
                if up:
                    STATE.lock_objects[up[0]] = up[1]
            elif rec["kind"] == "delete":
                STATE.lock_objects.pop(rec["path"], None)

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
        if target.startswith("/__faultproxy/objectlock"):
            return self.lock_control(target)
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

        lock = self.lock_check(method, target, hmap) if STATE.args.object_lock else None
        if lock and lock[1]:
            rec, (status, reason, code, message) = lock
            rec["status"] = status
            with STATE.lock:
                STATE.lock_writes.append(rec)
                STATE.counts["lock_refused"] += 1
            sys.stderr.write("object-lock %d %s %s %s\n" % (status, code, method, target[:160]))
            sys.stderr.flush()
            self.send_simple(status, reason, xml_error(code, message,
                                                       urllib.parse.urlparse(target).path))
            return True
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
        if lock:
            self.lock_after(lock[0], status, data)
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
    ap.add_argument("--object-lock", action="store_true",
                    help="emulate S3 Object Lock: record lock headers, refuse early deletes")
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
