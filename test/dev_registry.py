#!/usr/bin/env python3
"""A dev Schema Registry for pg_kappa's tests and demo (docs/dev-registry.md).

Serves the few endpoints of the Confluent Schema Registry REST API that an
Avro consumer and producer need, with Confluent's wire behaviour (content
type, error bodies and codes, global ids shared across subjects, versions,
compatibility levels), in memory, on 127.0.0.1 only.  Standard library only.

    test/dev_registry.py [--port N] [--port-file PATH] [--exit-on-eof]
                         [--basic-auth USER:PASSWORD]

Prints "REGISTRY http://127.0.0.1:PORT" on stdout when it accepts requests.
Stops on SIGTERM or SIGINT, and with --exit-on-eof when stdin reaches EOF.
"""

import argparse
import base64
import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit, parse_qs

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
LEVELS = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
          "FULL", "FULL_TRANSITIVE", "NONE")
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes",
              "string")
# writer type -> reader types that can read it (Avro schema resolution)
PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---------------------------------------------------------------- Avro schemas

def _fullname(name, namespace):
    if "." in name or not namespace:
        return name
    return namespace + "." + name


def parse_schema(text):
    """Parse and validate an Avro schema; return (parsed json, names dict)."""
    try:
        schema = json.loads(text)
    except (ValueError, TypeError) as e:
        raise ApiError(422, 42201, "Invalid schema: not JSON: %s" % e)
    names = {}
    _validate(schema, None, names)
    if isinstance(schema, dict) and list(schema) == ["type"] \
            and schema["type"] in PRIMITIVES:
        schema = schema["type"]       # as Avro prints it: {"type":"int"} is "int"
    return schema, names


def _invalid(msg):
    raise ApiError(422, 42201, "Invalid schema: " + msg)


def _validate(s, ns, names):
    if isinstance(s, str):
        if s in PRIMITIVES:
            return
        if _fullname(s, ns) in names or s in names:
            return
        _invalid("unknown type %r" % s)
    if isinstance(s, list):
        if not s:
            _invalid("empty union")
        for b in s:
            if isinstance(b, list):
                _invalid("union directly inside a union")
            _validate(b, ns, names)
        return
    if not isinstance(s, dict) or "type" not in s:
        _invalid("a schema is a type name, a union or an object with \"type\"")
    t = s["type"]
    if t in ("record", "error", "enum", "fixed"):
        name = s.get("name")
        if not isinstance(name, str) or not re.fullmatch(
                r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
            _invalid("%s without a valid \"name\"" % t)
        space = s.get("namespace", ns)
        full = _fullname(name, space)
        if full in names:
            _invalid("type %s defined twice" % full)
        names[full] = s
        inner_ns = full.rpartition(".")[0] or None
        if t == "enum":
            syms = s.get("symbols")
            if not isinstance(syms, list) or not all(isinstance(x, str) for x in syms):
                _invalid("enum %s without a list of \"symbols\"" % full)
        elif t == "fixed":
            if not isinstance(s.get("size"), int):
                _invalid("fixed %s without an integer \"size\"" % full)
        else:
            fields = s.get("fields")
            if not isinstance(fields, list):
                _invalid("record %s without a list of \"fields\"" % full)
            seen = set()
            for f in fields:
                if not isinstance(f, dict) or not isinstance(f.get("name"), str) \
                        or "type" not in f:
                    _invalid("record %s: a field needs \"name\" and \"type\"" % full)
                if f["name"] in seen:
                    _invalid("record %s: field %s twice" % (full, f["name"]))
                seen.add(f["name"])
                _validate(f["type"], inner_ns, names)
    elif t == "array":
        if "items" not in s:
            _invalid("array without \"items\"")
        _validate(s["items"], ns, names)
    elif t == "map":
        if "values" not in s:
            _invalid("map without \"values\"")
        _validate(s["values"], ns, names)
    elif isinstance(t, str) and t in PRIMITIVES:
        return
    elif isinstance(t, (dict, list)):
        _validate(t, ns, names)
    else:
        _invalid("unknown type %r" % (t,))


def _resolve(s, names, ns=None):
    """(kind, schema, namespace): named references looked up, {"type": p} unwrapped."""
    while True:
        if isinstance(s, str):
            if s in PRIMITIVES:
                return s, s, ns
            full = _fullname(s, ns)
            s = names.get(full, names.get(s))
            if s is None:
                return "unknown", None, ns
            continue
        if isinstance(s, list):
            return "union", s, ns
        t = s["type"]
        if isinstance(t, (dict, list)):
            s = t
            continue
        if t in PRIMITIVES:
            return t, s, ns
        if t == "error":
            t = "record"
        if t in ("record", "enum", "fixed"):
            ns = _fullname(s["name"], s.get("namespace", ns)).rpartition(".")[0] or None
        return t, s, ns


def can_read(reader, rnames, writer, wnames, rns=None, wns=None, seen=None):
    """Can data written with `writer` be read with `reader`? (Avro resolution)"""
    seen = set() if seen is None else seen
    rk, r, rns = _resolve(reader, rnames, rns)
    wk, w, wns = _resolve(writer, wnames, wns)
    if wk == "union":
        return all(can_read(r, rnames, b, wnames, rns, wns, seen) for b in w)
    if rk == "union":
        return any(can_read(b, rnames, w, wnames, rns, wns, seen) for b in r)
    if wk in PRIMITIVES:
        return rk == wk or rk in PROMOTIONS.get(wk, ())
    if rk != wk:
        return False
    if rk == "array":
        return can_read(r["items"], rnames, w["items"], wnames, rns, wns, seen)
    if rk == "map":
        return can_read(r["values"], rnames, w["values"], wnames, rns, wns, seen)
    if r["name"].rpartition(".")[2] != w["name"].rpartition(".")[2]:
        return False
    if rk == "fixed":
        return r["size"] == w["size"]
    if rk == "enum":
        return "default" in r or set(w["symbols"]) <= set(r["symbols"])
    key = (id(r), id(w))
    if key in seen:            # recursive type already being compared
        return True
    seen.add(key)
    wfields = {f["name"]: f for f in w["fields"]}
    for f in w["fields"]:
        for a in f.get("aliases", ()):
            wfields.setdefault(a, f)
    for rf in r["fields"]:
        wf = None
        for n in [rf["name"]] + list(rf.get("aliases", ())):
            if n in wfields:
                wf = wfields[n]
                break
        if wf is None:
            if "default" not in rf:
                return False
        elif not can_read(rf["type"], rnames, wf["type"], wnames, rns, wns, seen):
            return False
    return True


def compatible(level, new, olds):
    """Is parsed schema `new` compatible with `olds` (oldest first) under level?"""
    if level == "NONE" or not olds:
        return True
    against = olds if level.endswith("_TRANSITIVE") else olds[-1:]
    base = level.split("_")[0]
    for old in against:
        if base in ("BACKWARD", "FULL") and not can_read(new[0], new[1], old[0], old[1]):
            return False
        if base in ("FORWARD", "FULL") and not can_read(old[0], old[1], new[0], new[1]):
            return False
    return True


# ---------------------------------------------------------------- the registry

class Registry:
    def __init__(self):
        self.lock = threading.Lock()
        self.schemas = []          # id - 1 -> canonical text
        self.by_text = {}          # canonical text -> id
        self.parsed = {}           # id -> (schema, names)
        self.subjects = {}         # subject -> [id of version 1, 2, ...]
        self.config = "BACKWARD"
        self.subject_config = {}
        self.fail_status = 0
        self.fail_count = 0
        self.counts = {}

    def register(self, subject, text, check=True):
        parsed = parse_schema(text)
        canon = json.dumps(parsed[0], separators=(",", ":"))
        versions = self.subjects.get(subject, [])
        sid = self.by_text.get(canon)
        if sid is not None and sid in versions:
            return sid
        level = self.subject_config.get(subject, self.config)
        if check and not compatible(level, parsed,
                                    [self.parsed[i] for i in versions]):
            raise ApiError(409, 409,
                           "Schema being registered is incompatible with an "
                           "earlier schema for subject \"%s\" (compatibility "
                           "%s)" % (subject, level))
        if sid is None:
            self.schemas.append(canon)
            sid = len(self.schemas)
            self.by_text[canon] = sid
            self.parsed[sid] = parsed
        self.subjects.setdefault(subject, []).append(sid)
        return sid

    def versions(self, subject):
        v = self.subjects.get(subject)
        if not v:
            raise ApiError(404, 40401, "Subject '%s' not found." % subject)
        return v

    def version(self, subject, ver):
        v = self.versions(subject)
        if ver in ("latest", "-1"):
            n = len(v)
        else:
            if not re.fullmatch(r"[0-9]+", ver) or int(ver) < 1 or int(ver) > 2**31 - 1:
                raise ApiError(422, 42202,
                               "The specified version '%s' is not a valid version "
                               "id. Allowed values are between [1, 2^31-1] and the "
                               "string \"latest\"" % ver)
            n = int(ver)
            if n > len(v):
                raise ApiError(404, 40402, "Version %s not found." % ver)
        sid = v[n - 1]
        return {"subject": subject, "version": n, "id": sid,
                "schema": self.schemas[sid - 1]}


def body_json(raw):
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, 400, "Unrecognized request body: not JSON")
    if not isinstance(data, dict):
        raise ApiError(400, 400, "Unrecognized request body: not an object")
    return data


def schema_text(data):
    st = data.get("schemaType", "AVRO")
    if st != "AVRO":
        raise ApiError(422, 42201, "Invalid schema: schemaType %r is not "
                       "supported by the dev registry (AVRO only)" % (st,))
    text = data.get("schema")
    if not isinstance(text, str):
        raise ApiError(422, 42201, "Invalid schema: \"schema\" must be a string")
    return text


def route(reg, method, parts, query, data):
    """Return (kind, handler) for a request; kind names the endpoint."""
    n = len(parts)
    if parts[:1] == ["schemas"] and n == 3 and parts[1] == "ids" and method == "GET":
        def h():
            if not re.fullmatch(r"[0-9]+", parts[2]) or not \
                    1 <= int(parts[2]) <= len(reg.schemas):
                raise ApiError(404, 40403, "Schema %s not found" % parts[2])
            return {"schema": reg.schemas[int(parts[2]) - 1]}
        return "GET /schemas/ids/{id}", h
    if parts == ["subjects"] and method == "GET":
        return "GET /subjects", lambda: sorted(reg.subjects)
    if parts[:1] == ["subjects"] and n == 2 and method == "POST":
        def h():
            v = reg.versions(parts[1])
            parsed = parse_schema(schema_text(data()))
            canon = json.dumps(parsed[0], separators=(",", ":"))
            for i, sid in enumerate(v):
                if reg.schemas[sid - 1] == canon:
                    return reg.version(parts[1], str(i + 1))
            raise ApiError(404, 40403, "Schema not found")
        return "POST /subjects/{subject}", h
    if parts[:1] == ["subjects"] and n == 3 and parts[2] == "versions":
        if method == "GET":
            return ("GET /subjects/{subject}/versions",
                    lambda: list(range(1, len(reg.versions(parts[1])) + 1)))
        if method == "POST":
            return ("POST /subjects/{subject}/versions",
                    lambda: {"id": reg.register(parts[1], schema_text(data()))})
    if parts[:1] == ["subjects"] and n == 4 and parts[2] == "versions" \
            and method == "GET":
        return ("GET /subjects/{subject}/versions/{version}",
                lambda: reg.version(parts[1], parts[3]))
    if parts[:2] == ["compatibility", "subjects"] and n == 5 \
            and parts[3] == "versions" and method == "POST":
        def h():
            parsed = parse_schema(schema_text(data()))
            if parts[2] not in reg.subjects:
                return {"is_compatible": True}
            old = reg.version(parts[2], parts[4])["id"]
            level = reg.subject_config.get(parts[2], reg.config)
            return {"is_compatible": compatible(level, parsed, [reg.parsed[old]])}
        return "POST /compatibility/subjects/{subject}/versions/{version}", h
    if parts[:1] == ["config"] and n in (1, 2):
        subject = parts[1] if n == 2 else None
        kind = "/config" + ("/{subject}" if subject else "")
        if method == "GET":
            def h():
                if subject is None:
                    return {"compatibilityLevel": reg.config}
                if subject in reg.subject_config:
                    return {"compatibilityLevel": reg.subject_config[subject]}
                if query.get("defaultToGlobal", [""])[0] == "true":
                    return {"compatibilityLevel": reg.config}
                raise ApiError(404, 40408, "Subject '%s' does not have "
                               "subject-level compatibility configured" % subject)
            return "GET " + kind, h
        if method == "PUT":
            def h():
                level = data().get("compatibility")
                if level not in LEVELS:
                    raise ApiError(422, 42203, "Invalid compatibility level. "
                                   "Valid values are none, backward, forward, "
                                   "full, and their _transitive variants")
                if subject is None:
                    reg.config = level
                else:
                    reg.subject_config[subject] = level
                return {"compatibility": level}
            return "PUT " + kind, h
    return None, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pg_kappa-dev-registry"
    disable_nagle_algorithm = True    # headers and body are two writes

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("dev_registry: %s\n" % (fmt % args))

    def send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        reg = self.server.registry
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        method = self.command
        with reg.lock:
            if parts[:1] == ["_dev"]:
                return self.dev(reg, method, parts, raw)
            if self.server.basic_auth is not None and \
                    self.headers.get("Authorization") != self.server.basic_auth:
                reg.counts["unauthorized"] = reg.counts.get("unauthorized", 0) + 1
                return self.send(401, {"error_code": 401, "message": "Unauthorized"})
            kind, handler = route(reg, method, parts, query, lambda: body_json(raw))
            kind = kind or "other"
            reg.counts[kind] = reg.counts.get(kind, 0) + 1
            if reg.fail_count > 0:
                reg.fail_count -= 1
                return self.send(reg.fail_status,
                                 {"error_code": reg.fail_status,
                                  "message": "injected failure (POST /_dev/fail)"})
            if handler is None:
                return self.send(404, {"error_code": 404,
                                       "message": "HTTP 404 Not Found"})
            try:
                return self.send(200, handler())
            except ApiError as e:
                return self.send(e.status, {"error_code": e.code,
                                            "message": e.message})

    def dev(self, reg, method, parts, raw):
        if parts == ["_dev", "fail"] and method == "POST":
            try:
                d = body_json(raw)
                status, count = int(d.get("status", 503)), int(d.get("count", 1))
                if not 100 <= status <= 599 or count < 0:
                    raise ValueError
            except (ApiError, ValueError, TypeError):
                return self.send(400, {"error_code": 400, "message":
                                       "usage: {\"status\": 5xx, \"count\": N}"})
            reg.fail_status, reg.fail_count = status, count
            return self.send(200, {"status": status, "count": count})
        if parts == ["_dev", "auth"] and method == "POST":
            try:
                d = body_json(raw)
                cred = d.get("basic")
                if cred is not None and (not isinstance(cred, str) or ":" not in cred):
                    raise ValueError
            except (ApiError, ValueError, TypeError, AttributeError):
                return self.send(400, {"error_code": 400, "message":
                                       "usage: {\"basic\": \"user:password\"} or {\"basic\": null}"})
            self.server.basic_auth = None if cred is None else \
                "Basic " + base64.b64encode(cred.encode()).decode()
            return self.send(200, {"basic": cred is not None})
        if parts == ["_dev", "requests"] and method == "GET":
            return self.send(200, dict(reg.counts))
        return self.send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    ap = argparse.ArgumentParser(description="dev Confluent-compatible Schema Registry")
    ap.add_argument("--port", type=int, default=0,
                    help="TCP port on 127.0.0.1 (default 0: a free port)")
    ap.add_argument("--port-file", help="also write the URL (one line) to this "
                    "file, atomically; removed at exit")
    ap.add_argument("--exit-on-eof", action="store_true",
                    help="stop when stdin reaches end of file")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    ap.add_argument("--basic-auth", metavar="USER:PASSWORD",
                    help="answer 401 to requests without these HTTP basic auth "
                    "credentials (the /_dev endpoints excepted)")
    args = ap.parse_args()

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as e:
        sys.stderr.write("dev_registry: could not bind 127.0.0.1:%d: %s\n"
                         % (args.port, e.strerror))
        return 1
    server.registry = Registry()
    server.verbose = args.verbose
    server.basic_auth = None
    if args.basic_auth is not None:
        server.basic_auth = "Basic " + base64.b64encode(args.basic_auth.encode()).decode()
    url = "http://127.0.0.1:%d" % server.server_address[1]

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    if args.exit_on_eof:
        def watch_stdin():
            while sys.stdin.buffer.read1(4096):
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(url + "\n")
        os.rename(tmp, args.port_file)
    sys.stdout.write("REGISTRY %s\n" % url)
    sys.stdout.flush()
    try:
        while not stop.wait(1):
            pass
    finally:
        server.shutdown()
        server.server_close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
