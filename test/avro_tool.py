#!/usr/bin/python3
"""Avro test messages in the Confluent wire format (docs/dev-registry.md).

    /usr/bin/python3 test/avro_tool.py produce --registry URL --broker HOST:PORT
        --topic T --input FILE.jsonl [--value-schema F.avsc [--value-subject S]]
        [--key-schema F.avsc [--key-subject S]] [--partition N] [-X PROP=VAL]
    /usr/bin/python3 test/avro_tool.py encode --registry URL --input FILE.jsonl
        [--value-schema ...] [--key-schema ...]   (hex, one line per message)
    /usr/bin/python3 test/avro_tool.py register --registry URL --subject S
        --schema F.avsc
    /usr/bin/python3 test/avro_tool.py decode --registry URL --hex HEX [--hex ...]
        [--schema-id N]

The Avro binary encoding is done by Debian's python3-avro (avro.io's
DatumWriter and BinaryEncoder), never here: this file only turns JSON into
the Python values python3-avro expects, frames the result (magic byte 0 and
the 4-byte big-endian schema id), and hands the messages to kcat.  Standard
library and python3-avro only; it must run with Debian's /usr/bin/python3.

Where python3-avro 1.11.1 would write wrong bytes or cannot express a value,
the conversion works around it (see to_datum): decimals are quantized to the
schema's scale and -0 made 0, union branches are chosen here (first branch
that accepts the JSON value) rather than by python3-avro (which takes the
last branch that validates), and the local-timestamp types, which it does not
know, are given to it as their underlying long.
"""

import argparse
import datetime
import decimal
import io
import json
import secrets
import struct
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings

try:
    import avro.constants
    import avro.errors
    import avro.io
    import avro.schema
except ImportError as e:
    sys.exit("avro_tool: cannot import python3-avro (%s): run me with Debian's "
             "/usr/bin/python3 and install python3-avro" % e)

# Logical types python3-avro ignores (unknown ones, or invalid decimal
# parameters) make it warn on every schema parse; the spec says to use the
# underlying type then, which is what it does.  Raw ints given for the
# date/time logical types also warn (and are written as the underlying type,
# as intended).
warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1
EPOCH = datetime.datetime(1970, 1, 1)
LINE_KEYS = {"key", "value", "value_raw_hex", "key_raw_hex", "truncate",
             "schema_id", "no_magic"}
FLOAT_WORDS = {"NaN": float("nan"), "Infinity": float("inf"),
               "-Infinity": float("-inf")}


class Fail(Exception):
    """An error for the user: printed as "avro_tool: MESSAGE", exit 1."""


class ConvError(Exception):
    def __init__(self, path, msg):
        super().__init__("%s: %s" % (path or "(top)", msg))
        self.path, self.msg = path, msg


class Branch:
    """A union value with its branch: python3-avro's own union resolution
    takes the *last* branch that validates (so 5 in ["int","long"] would be
    a long), so the branch is chosen in to_datum and written as is."""
    __slots__ = ("index", "datum")

    def __init__(self, index, datum):
        self.index, self.datum = index, datum

    def __repr__(self):
        return "Branch(%d, %r)" % (self.index, self.datum)


class Writer(avro.io.DatumWriter):
    def write(self, datum, encoder):
        # avro.io.validate knows no Branch; to_datum has checked the datum
        # against the schema, and write_data checks every value's type again.
        self.write_data(self.writers_schema, datum, encoder)

    def write_union(self, writers_schema, datum, encoder):
        if not isinstance(datum, Branch):
            raise Fail("internal error: union value without a branch: %r" % (datum,))
        encoder.write_long(datum.index)
        self.write_data(writers_schema.schemas[datum.index], datum.datum, encoder)


class Reader(avro.io.DatumReader):
    """python3-avro's reader, keeping the union branch (for the schema-driven
    JSON output) and answering the raw int/long for a date or time value
    Python cannot represent (e.g. year 10000, or a time past 24:00)."""

    def read_union(self, writers_schema, readers_schema, decoder):
        index = decoder.read_long()
        if not 0 <= index < len(writers_schema.schemas):
            raise avro.errors.SchemaResolutionException(
                "union branch %d of %d" % (index, len(writers_schema.schemas)))
        branch = writers_schema.schemas[index]
        return Branch(index, self.read_data(branch, branch, decoder))

    def read_data(self, writers_schema, readers_schema, decoder):
        if getattr(writers_schema, "logical_type", None) in (
                avro.constants.DATE, avro.constants.TIME_MILLIS,
                avro.constants.TIME_MICROS, avro.constants.TIMESTAMP_MILLIS,
                avro.constants.TIMESTAMP_MICROS):
            pos = decoder.reader.tell()
            try:
                return super().read_data(writers_schema, readers_schema, decoder)
            except (OverflowError, ValueError):
                decoder.reader.seek(pos)
                return decoder.read_long()
        return super().read_data(writers_schema, readers_schema, decoder)


# ---------------------------------------------------------------- JSON -> datum

def _short(v):
    s = str(v) if isinstance(v, decimal.Decimal) else json.dumps(v, default=str)
    return s if len(s) <= 60 else s[:57] + "..."


def _join(path, part):
    return "%s.%s" % (path, part) if path else str(part)


def _type_name(schema):
    lt = getattr(schema, "logical_type", None) or schema.get_prop("logicalType")
    name = getattr(schema, "fullname", None) if schema.type in ("record", "enum", "fixed", "error") else None
    base = name or schema.type
    return "%s(%s)" % (base, lt) if lt else base


def _int(v, path, lo, hi, what):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConvError(path, "expected %s (a JSON integer), got %s" % (what, _short(v)))
    if not lo <= v <= hi:
        raise ConvError(path, "%d is out of range for %s" % (v, what))
    return v


def _hex_bytes(v, path, default):
    if default:
        # a field default: Avro writes bytes as a string of code points 0-255
        if not isinstance(v, str):
            raise ConvError(path, "default for bytes must be a string")
        try:
            return v.encode("latin-1")
        except UnicodeEncodeError:
            raise ConvError(path, "default for bytes has a character above U+00FF")
    if not isinstance(v, str) or not v.startswith("\\x"):
        raise ConvError(path, 'expected bytes as a "\\\\x0a0b..." string, got %s' % _short(v))
    try:
        return bytes.fromhex(v[2:])
    except ValueError:
        raise ConvError(path, "bad hex in %s" % _short(v))


def _decimal(schema, v, path):
    """A decimal.Decimal python3-avro 1.11.1 writes correctly: its encoder
    writes the digits of the Decimal as the unscaled value, ignoring the
    exponent (Decimal("12.3") with scale 2 would become 1.23), and writes
    Decimal("-0.00") as -0.02; so quantize to the scale and drop the sign of
    zero.  The value must fit the schema's scale and precision."""
    if isinstance(v, bool) or not isinstance(v, (str, int, decimal.Decimal)):
        raise ConvError(path, "expected a decimal as a JSON string or number, got %s" % _short(v))
    try:
        d = decimal.Decimal(v.strip() if isinstance(v, str) else v)
    except decimal.InvalidOperation:
        raise ConvError(path, "not a decimal number: %s" % _short(v))
    if not d.is_finite():
        raise ConvError(path, "Avro decimals are finite: %s" % _short(v))
    scale, precision = schema.scale, schema.precision
    ctx = decimal.Context(prec=len(d.as_tuple().digits) + max(d.as_tuple().exponent, 0) + scale + 2)
    q = d.quantize(decimal.Decimal(1).scaleb(-scale), context=ctx)
    if q != d:
        raise ConvError(path, "%s has more than %d digits after the point (the scale)" % (v, scale))
    if q.is_zero():
        q = q.copy_abs()
    unscaled = abs(int(q.scaleb(scale, context=ctx)))
    if len(str(unscaled)) > precision:
        raise ConvError(path, "%s has more than %d digits (the precision)" % (v, precision))
    return q


def _time(v, path, millis):
    if not isinstance(v, str):
        raise ConvError(path, 'expected a time "HH:MM:SS[.ffffff]" or the raw integer, got %s' % _short(v))
    try:
        t = datetime.time.fromisoformat(v)
    except ValueError:
        raise ConvError(path, "not a time HH:MM:SS[.ffffff]: %s" % _short(v))
    if t.tzinfo is not None:
        raise ConvError(path, "a time-of-day has no offset: %s" % _short(v))
    if millis and t.microsecond % 1000:
        raise ConvError(path, "time-millis holds milliseconds, not %s" % _short(v))
    return t


def _timestamp(v, path, millis, local):
    if not isinstance(v, str):
        raise ConvError(path, "expected an ISO 8601 timestamp or the raw integer, got %s" % _short(v))
    try:
        ts = datetime.datetime.fromisoformat(v)
    except ValueError:
        raise ConvError(path, "not an ISO 8601 timestamp: %s" % _short(v))
    if local and ts.tzinfo is not None:
        raise ConvError(path, "a local timestamp has no offset: %s" % _short(v))
    if not local and ts.tzinfo is None:
        raise ConvError(path, "a timestamp needs an offset (e.g. +00:00 or Z): %s" % _short(v))
    if millis and ts.microsecond % 1000:
        raise ConvError(path, "%s holds milliseconds, not %s"
                        % ("local-timestamp-millis" if local else "timestamp-millis", _short(v)))
    if not local:
        return ts
    # python3-avro 1.11.1 does not know local-timestamp-millis/-micros (it
    # parses them as a plain long, per the spec's rule for unknown logical
    # types), so give it the long: the ms or us since 1970-01-01T00:00 of the
    # naive value read as UTC.  python3-avro still does the encoding.
    us = (ts - EPOCH) // datetime.timedelta(microseconds=1)
    return us // 1000 if millis else us


def _float(v, path, single):
    if isinstance(v, str) and v in FLOAT_WORDS:
        x = FLOAT_WORDS[v]
    elif isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool):
        x = float(v)
    else:
        raise ConvError(path, 'expected a number (or "NaN", "Infinity", "-Infinity"), got %s' % _short(v))
    if x in (float("inf"), float("-inf")) and not isinstance(v, str):
        raise ConvError(path, "%s is out of range for %s" % (_short(v), "float" if single else "double"))
    if single:
        # the value a float holds (python3-avro packs it with struct "<f")
        try:
            x = struct.unpack("<f", struct.pack("<f", x))[0]
        except OverflowError:
            raise ConvError(path, "%s is out of range for float" % _short(v))
    return x


def to_datum(schema, v, path="", default=False):
    """The Python value python3-avro expects for JSON value v under schema.
    default: v is a field's default (Avro JSON: bytes as code points, union
    defaults for the first branch)."""
    t = schema.type
    lt = getattr(schema, "logical_type", None)   # as python3-avro parsed it
    if isinstance(schema, avro.schema.UnionSchema):
        branches = schema.schemas[:1] if default else schema.schemas
        why = []
        for i, b in enumerate(branches):
            try:
                return Branch(i, to_datum(b, v, path, default))
            except ConvError as e:
                why.append("%s: %s" % (_type_name(b), e.msg))
        raise ConvError(path, "no branch of the union takes %s (%s)" % (_short(v), "; ".join(why)))
    if t == "null":
        if v is not None:
            raise ConvError(path, "expected null, got %s" % _short(v))
        return None
    if t == "boolean":
        if not isinstance(v, bool):
            raise ConvError(path, "expected true or false, got %s" % _short(v))
        return v
    if t == "int":
        if lt == avro.constants.DATE and isinstance(v, str):
            try:
                return datetime.date.fromisoformat(v)
            except ValueError:
                raise ConvError(path, "not a date YYYY-MM-DD: %s" % _short(v))
        if lt == avro.constants.TIME_MILLIS and isinstance(v, str):
            return _time(v, path, True)
        return _int(v, path, INT_MIN, INT_MAX, _type_name(schema))
    if t == "long":
        plt = schema.get_prop("logicalType")
        if isinstance(v, str):
            if lt == avro.constants.TIME_MICROS:
                return _time(v, path, False)
            if lt in (avro.constants.TIMESTAMP_MILLIS, avro.constants.TIMESTAMP_MICROS):
                return _timestamp(v, path, lt == avro.constants.TIMESTAMP_MILLIS, False)
            if lt is None and plt in ("local-timestamp-millis", "local-timestamp-micros"):
                us = _timestamp(v, path, plt == "local-timestamp-millis", True)
                return _int(us, path, LONG_MIN, LONG_MAX, _type_name(schema))
        return _int(v, path, LONG_MIN, LONG_MAX, _type_name(schema))
    if t in ("float", "double"):
        return _float(v, path, t == "float")
    if t == "string":
        if not isinstance(v, str):
            raise ConvError(path, "expected a string, got %s" % _short(v))
        return v      # uuid too: not checked, so that tests can send bad ones
    if t == "bytes":
        if lt == "decimal":
            if default:
                raise ConvError(path, "a decimal field's default is not supported: give the field")
            return _decimal(schema, v, path)
        return _hex_bytes(v, path, default)
    if t == "fixed":
        if lt == "decimal":
            if default:
                raise ConvError(path, "a decimal field's default is not supported: give the field")
            return _decimal(schema, v, path)
        b = _hex_bytes(v, path, default)
        if len(b) != schema.size:
            raise ConvError(path, "fixed %s has %d bytes, not %d" % (schema.fullname, schema.size, len(b)))
        return b
    if t == "enum":
        if not isinstance(v, str) or v not in schema.symbols:
            raise ConvError(path, "expected a symbol of enum %s %s, got %s"
                            % (schema.fullname, list(schema.symbols), _short(v)))
        return v
    if t == "array":
        if not isinstance(v, list):
            raise ConvError(path, "expected a JSON array, got %s" % _short(v))
        return [to_datum(schema.items, x, _join(path, i), default) for i, x in enumerate(v)]
    if t == "map":
        if not isinstance(v, dict):
            raise ConvError(path, "expected a JSON object (map), got %s" % _short(v))
        return {k: to_datum(schema.values, x, _join(path, k), default) for k, x in v.items()}
    if t in ("record", "error"):
        if not isinstance(v, dict):
            raise ConvError(path, "expected a JSON object (record %s), got %s" % (schema.fullname, _short(v)))
        names = [f.name for f in schema.fields]
        extra = [k for k in v if k not in names]
        if extra:
            raise ConvError(path, "record %s has no field %s" % (schema.fullname, ", ".join(extra)))
        out = {}
        for f in schema.fields:
            if f.name in v:
                out[f.name] = to_datum(f.type, v[f.name], _join(path, f.name), default)
            elif f.has_default:
                out[f.name] = to_datum(f.type, f.default, _join(path, f.name), True)
            else:
                raise ConvError(path, "record %s: field %s is missing (and has no default)"
                                % (schema.fullname, f.name))
        return out
    raise ConvError(path, "unsupported schema type %s" % t)


# ---------------------------------------------------------------- datum -> JSON

def _float32_text(x):
    """The shortest decimal that reads back as the same float32."""
    for p in range(1, 10):
        s = "%.*g" % (p, x)
        if struct.unpack("<f", struct.pack("<f", float(s)))[0] == x:
            return float(s)
    return x


def _time_text(t, digits):
    s = t.strftime("%H:%M:%S")
    if t.microsecond:
        s += (".%06d" % t.microsecond)[:digits + 1]
    return s


def _ts_text(ts, digits, offset):
    s = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.year < 1000:
        s = "%04d%s" % (ts.year, s[s.index("-"):])
    if ts.microsecond:
        s += (".%06d" % ts.microsecond)[:digits + 1]
    return s + ("+00:00" if offset else "")


def to_json(schema, d):
    """The JSON form (the input conventions) of a datum python3-avro read."""
    if isinstance(schema, avro.schema.UnionSchema):
        return to_json(schema.schemas[d.index], d.datum)
    t = schema.type
    lt = getattr(schema, "logical_type", None)
    if t in ("float", "double"):
        if d != d:
            return "NaN"
        if d in (float("inf"), float("-inf")):
            return "Infinity" if d > 0 else "-Infinity"
        return _float32_text(d) if t == "float" else d
    if isinstance(d, decimal.Decimal):
        return format(d, "f")
    if isinstance(d, bytes):
        return "\\x" + d.hex()
    if isinstance(d, datetime.datetime):
        return _ts_text(d.astimezone(datetime.timezone.utc), 3 if lt == avro.constants.TIMESTAMP_MILLIS else 6, True)
    if isinstance(d, datetime.date):
        return d.isoformat()
    if isinstance(d, datetime.time):
        return _time_text(d, 3 if lt == avro.constants.TIME_MILLIS else 6)
    if t == "long" and isinstance(d, int):
        plt = schema.get_prop("logicalType")
        if lt is None and plt in ("local-timestamp-millis", "local-timestamp-micros"):
            millis = plt == "local-timestamp-millis"
            try:
                ts = EPOCH + datetime.timedelta(microseconds=d * 1000 if millis else d)
            except OverflowError:
                return d
            return _ts_text(ts, 3 if millis else 6, False)
        return d
    if t == "array":
        return [to_json(schema.items, x) for x in d]
    if t == "map":
        return {k: to_json(schema.values, x) for k, x in d.items()}
    if t in ("record", "error"):
        return {f.name: to_json(f.type, d[f.name]) for f in schema.fields}
    return d


def _same(a, b):
    """a (written) and b (read back) are the same datum."""
    if isinstance(a, Branch):
        return isinstance(b, Branch) and a.index == b.index and _same(a.datum, b.datum)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    if isinstance(a, int) and not isinstance(a, bool) and isinstance(b, (datetime.date, datetime.time)):
        return True     # the raw int of a date/time logical type: not compared
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------- encoding

def parse_schema(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Fail("cannot read schema %s: %s" % (path, e.strerror))
    try:
        return text, avro.schema.parse(text)
    except (avro.errors.AvroException, ValueError) as e:
        raise Fail("%s is not a valid Avro schema: %s" % (path, e))


def encode_body(schema, datum):
    """python3-avro's binary encoding of datum; read back to check it."""
    buf = io.BytesIO()
    try:
        Writer(schema).write(datum, avro.io.BinaryEncoder(buf))
    except (avro.errors.AvroException, TypeError, ValueError, struct.error) as e:
        raise Fail("python3-avro cannot encode %r: %s" % (datum, e))
    body = buf.getvalue()
    back = decode_body(schema, body)
    if not _same(datum, back):
        raise Fail("internal error: python3-avro reads back %r, not %r" % (back, datum))
    return body


def decode_body(schema, body):
    buf = io.BytesIO(body)
    try:
        d = Reader(schema).read(avro.io.BinaryDecoder(buf))
    except Exception as e:      # garbage can fail anywhere in python3-avro
        raise Fail("the Avro body does not decode with the schema: %s: %s" % (type(e).__name__, e))
    left = len(body) - buf.tell()
    if left:
        raise Fail("%d byte(s) left after the datum: the body does not match the schema" % left)
    return d


def header(schema_id):
    if isinstance(schema_id, bool) or not isinstance(schema_id, int) or not INT_MIN <= schema_id <= 0xFFFFFFFF:
        raise Fail("schema id %r is not a 32-bit integer" % (schema_id,))
    return b"\x00" + struct.pack(">I", schema_id & 0xFFFFFFFF)


# ---------------------------------------------------------------- registry

def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": CONTENT_TYPE,
                                          "Accept": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        raise Fail("registry %s %s: HTTP %d: %s"
                   % (method, url, e.code, e.read().decode("utf-8", "replace").strip()))
    except (urllib.error.URLError, OSError) as e:
        raise Fail("registry %s %s: %s" % (method, url, getattr(e, "reason", e)))
    try:
        return json.loads(raw)
    except ValueError:
        raise Fail("registry %s %s: not JSON: %r" % (method, url, raw[:200]))


def register(registry, subject, text):
    url = "%s/subjects/%s/versions" % (registry.rstrip("/"), urllib.parse.quote(subject, safe=""))
    ans = http("POST", url, {"schema": text})
    if not isinstance(ans, dict) or not isinstance(ans.get("id"), int):
        raise Fail("registry POST %s: no id in %s" % (url, json.dumps(ans)))
    return ans["id"]


_fetched = {}


def fetch_schema(registry, schema_id):
    if schema_id not in _fetched:
        ans = http("GET", "%s/schemas/ids/%d" % (registry.rstrip("/"), schema_id))
        try:
            _fetched[schema_id] = avro.schema.parse(ans["schema"])
        except (KeyError, TypeError, avro.errors.AvroException, ValueError) as e:
            raise Fail("schema %d from the registry does not parse: %s" % (schema_id, e))
    return _fetched[schema_id]


# ---------------------------------------------------------------- messages

def read_lines(path):
    try:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8")
        with f:
            lines = f.read().split("\n")
    except OSError as e:
        raise Fail("cannot read %s: %s" % (path, e.strerror))
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_float=decimal.Decimal)
        except ValueError as e:
            raise Fail("%s line %d: not JSON: %s" % (path, n, e))
        if not isinstance(obj, dict):
            raise Fail("%s line %d: not a JSON object" % (path, n))
        bad = sorted(set(obj) - LINE_KEYS)
        if bad:
            raise Fail("%s line %d: unknown key(s) %s (known: %s)"
                       % (path, n, ", ".join(bad), ", ".join(sorted(LINE_KEYS))))
        out.append((n, obj))
    return out


def raw_hex(v, what):
    if not isinstance(v, str):
        raise Fail("%s must be a hex string" % what)
    try:
        return bytes.fromhex(v[2:] if v.startswith("\\x") else v)
    except ValueError:
        raise Fail("%s is not hex: %s" % (what, _short(v)))


def build(obj, vschema, vid, kschema, kid):
    """(key bytes or None, value bytes or None) of one input line."""
    if "key_raw_hex" in obj and obj.get("key") is not None:
        raise Fail('give "key" or "key_raw_hex", not both')
    if "key_raw_hex" in obj:
        key = raw_hex(obj["key_raw_hex"], "key_raw_hex")
    elif obj.get("key") is None:
        key = None
    elif kschema is not None:
        try:
            key = header(kid) + encode_body(kschema, to_datum(kschema, obj["key"], "key"))
        except ConvError as e:
            raise Fail(str(e))
    elif isinstance(obj["key"], str):
        key = obj["key"].encode("utf-8")
    else:
        raise Fail("without --key-schema, a key is a JSON string (sent as UTF-8), not %s"
                   % _short(obj["key"]))
    if key == b"":
        key = None      # kcat -Z sends an empty key as none

    if obj.get("no_magic") not in (None, False, True):
        raise Fail("no_magic is true or false")
    if obj.get("no_magic") and obj.get("schema_id") is not None:
        raise Fail("schema_id and no_magic together: there is no header to put the id in")
    for opt in ("schema_id", "no_magic"):
        if obj.get(opt) not in (None, False) and "value_raw_hex" in obj:
            raise Fail("%s is for an encoded value, not value_raw_hex" % opt)
    if "value_raw_hex" in obj:
        if obj.get("value") is not None:
            raise Fail('give "value" or "value_raw_hex", not both')
        value = raw_hex(obj["value_raw_hex"], "value_raw_hex")
        if not value:
            raise Fail("value_raw_hex is empty: kcat sends an empty value as a tombstone (use \"value\": null)")
    elif "value" not in obj:
        raise Fail('no "value" (null for a tombstone) and no "value_raw_hex"')
    elif obj["value"] is None:
        value = None
    else:
        if vschema is None:
            raise Fail("a value needs --value-schema")
        try:
            body = encode_body(vschema, to_datum(vschema, obj["value"], "value"))
        except ConvError as e:
            raise Fail(str(e))
        if obj.get("no_magic"):
            value = body
        else:
            value = header(obj["schema_id"] if obj.get("schema_id") is not None else vid) + body
    for opt in ("truncate", "schema_id", "no_magic"):
        if obj.get(opt) not in (None, False) and value is None:
            raise Fail("%s needs a value" % opt)
    n = obj.get("truncate")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise Fail("truncate is a number of bytes (>= 0)")
        if n >= len(value):
            raise Fail("truncate %d would leave no value (it has %d bytes)" % (n, len(value)))
        value = value[:len(value) - n]
    return key, value


def build_all(args):
    lines = read_lines(args.input)
    vtext = vschema = vid = ktext = kschema = kid = None
    if args.value_schema:
        vtext, vschema = parse_schema(args.value_schema)
    if args.key_schema:
        ktext, kschema = parse_schema(args.key_schema)
    if args.value_subject and not args.value_schema:
        raise Fail("--value-subject needs --value-schema")
    if args.key_subject and not args.key_schema:
        raise Fail("--key-subject needs --key-schema")
    default_topic = getattr(args, "topic", None)
    for which, schema, given in (("value", vschema, args.value_subject), ("key", kschema, args.key_subject)):
        if schema is not None and not given and not default_topic:
            raise Fail("--%s-subject is needed (without --topic there is no TOPIC-%s default)" % (which, which))
    # every line is checked before anything is registered
    for n, obj in lines:
        try:
            build(obj, vschema, 0, kschema, 0)
        except Fail as e:
            raise Fail("%s line %d: %s" % (args.input, n, e))
    if vschema is not None:
        vid = register(args.registry, args.value_subject or "%s-value" % default_topic, vtext)
    if kschema is not None:
        kid = register(args.registry, args.key_subject or "%s-key" % default_topic, ktext)
    msgs = []
    for n, obj in lines:
        try:
            msgs.append(build(obj, vschema, vid, kschema, kid))
        except Fail as e:
            raise Fail("%s line %d: %s" % (args.input, n, e))
    return msgs, vid, kid


def delimiters(msgs):
    """A key and a message delimiter for kcat -K/-D that split the stream
    back into exactly these messages."""
    for _ in range(1000):
        kd = ("<K%s>" % secrets.token_hex(8)).encode()
        md = ("<M%s>" % secrets.token_hex(8)).encode()
        ok = True
        for key, value in msgs:
            rec = (key or b"") + kd + (value or b"")
            # kcat cuts at the first md, then at the first kd
            if (rec + md).find(md) != len(rec) or rec.find(kd) != len(key or b""):
                ok = False
                break
        if ok:
            return kd, md
    raise Fail("found no delimiters that appear in no message")


def kcat_produce(args, msgs):
    kd, md = delimiters(msgs)
    # Every message is KEY KD VALUE MD, with an empty KEY or VALUE for none
    # (-Z: kcat sends empty as null).  kcat skips an empty record (between
    # two MDs), so even a message with neither key nor value has its KD.
    stream = b"".join((key or b"") + kd + (value or b"") + md for key, value in msgs)
    cmd = ["kcat", "-P", "-b", args.broker, "-t", args.topic,
           "-K", kd.decode(), "-D", md.decode(), "-Z",
           "-X", "sticky.partitioning.linger.ms=0"]
    if args.partition is not None:
        cmd += ["-p", str(args.partition)]
    for x in args.X or []:
        cmd += ["-X", x]
    try:
        p = subprocess.run(cmd, input=stream, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise Fail("cannot run kcat: %s" % e)
    if p.returncode != 0:
        raise Fail("kcat failed (exit status %d): %s"
                   % (p.returncode, p.stderr.decode("utf-8", "replace").strip()))


# ---------------------------------------------------------------- commands

def cmd_produce(args):
    msgs, vid, kid = build_all(args)
    if msgs:
        kcat_produce(args, msgs)
    print(json.dumps({"messages": len(msgs), "value_schema_id": vid, "key_schema_id": kid}))


def cmd_encode(args):
    msgs, vid, kid = build_all(args)
    for key, value in msgs:
        print(json.dumps({"key": None if key is None else key.hex(),
                          "value": None if value is None else value.hex()}))


def cmd_register(args):
    text, _ = parse_schema(args.schema)
    print(json.dumps({"id": register(args.registry, args.subject, text)}))


def cmd_decode(args):
    for h in args.hex:
        msg = raw_hex(h, "--hex")
        if args.schema_id is not None:
            sid, body = args.schema_id, msg
        else:
            if len(msg) < 5:
                raise Fail("%s: %d bytes, shorter than the 5-byte header" % (h, len(msg)))
            if msg[0] != 0:
                raise Fail("%s: magic byte is %d, not 0" % (h, msg[0]))
            sid, body = struct.unpack(">I", msg[1:5])[0], msg[5:]
        schema = fetch_schema(args.registry, sid)
        print(json.dumps(to_json(schema, decode_body(schema, body)), ensure_ascii=False))


def main(argv):
    ap = argparse.ArgumentParser(prog="avro_tool.py",
                                 description="Avro test messages in the Confluent wire format "
                                             "(docs/dev-registry.md)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def schemas(p):
        p.add_argument("--registry", required=True, help="Schema Registry URL")
        p.add_argument("--input", required=True, help="JSON lines, one message each (- for stdin)")
        p.add_argument("--value-schema", help="Avro schema (.avsc) of the values")
        p.add_argument("--value-subject", help="subject of the value schema (default TOPIC-value)")
        p.add_argument("--key-schema", help="Avro schema of the keys (else keys are UTF-8 strings)")
        p.add_argument("--key-subject", help="subject of the key schema (default TOPIC-key)")

    p = sub.add_parser("produce", help="register the schemas, encode the input, produce with kcat")
    schemas(p)
    p.add_argument("--broker", required=True, help="bootstrap HOST:PORT")
    p.add_argument("--topic", required=True)
    p.add_argument("--partition", type=int, help="produce every message to this partition")
    p.add_argument("-X", action="append", metavar="PROP=VALUE", help="librdkafka property for kcat")
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("encode", help="like produce, but print the messages in hex")
    schemas(p)
    p.add_argument("--topic", help="only for the default subjects TOPIC-value and TOPIC-key")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("register", help="register a schema under a subject")
    p.add_argument("--registry", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--schema", required=True)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("decode", help="decode wire-format messages with their writer schema")
    p.add_argument("--registry", required=True)
    p.add_argument("--hex", required=True, action="append", help="a message in hex (repeatable)")
    p.add_argument("--schema-id", type=int,
                   help="the messages are bare Avro bodies (no header) written with this schema")
    p.set_defaults(func=cmd_decode)

    args = ap.parse_args(argv)
    try:
        args.func(args)
    except Fail as e:
        sys.stdout.flush()
        print("avro_tool: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
