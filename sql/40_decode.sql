--
-- Message decoding (src/decode.c), through kappa.decode_preview(): what a
-- Kafka source with this target, format and options would store for one
-- message.  Each case shows the row, or the error a worker would put in the
-- dead letters.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

CREATE TABLE clicks (
    user_id     integer NOT NULL,
    url         text,
    amount      numeric(10,2),
    ok          boolean,
    ts          timestamptz,
    tags        jsonb,
    raw         json,
    country     text DEFAULT 'unknown',
    seen_at     timestamptz DEFAULT '2000-01-01 00:00:00+00',
    n           bigint DEFAULT 40 + 2
);

-- JSON: keys map to columns by name; strings, numbers and booleans go
-- through the column type's input function.
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  '{"user_id": 7, "url": "/home", "amount": 12.5, "ok": true,
    "ts": "2024-01-01T00:00:00Z", "country": "FR", "n": 1}', 'UTF8'));

-- Missing keys give the column default, or NULL; JSON null gives NULL even
-- where there is a default.
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "country": null}', 'UTF8'));

-- Keys with no column are ignored ...
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "extra": [1, 2], "more": "x"}', 'UTF8'));
-- ... unless strict
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "extra": [1, 2]}', 'UTF8'),
                            '{"strict": true}');

-- Nested objects and arrays go to json and jsonb columns as JSON; a string
-- stays a JSON string there.
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  '{"user_id": 2, "tags": {"a": [1, {"b": null}], "c": "d"}, "raw": [ 1, "two" ,3 ]}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 2, "tags": "plain", "raw": 12.50}', 'UTF8'));
-- but not to scalar columns
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 2, "url": {"path": "/"}}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": [2]}', 'UTF8'));

-- Numbers into text keep their text; booleans too.  Escapes are decoded.
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  '{"user_id": 3, "url": 1.50e3, "country": true}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  '{"user_id": 3, "url": "caf\u00e9 \"quoted\"\n"}', 'UTF8'));
-- Nested keys do not map to columns; the last of duplicate keys wins.
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  '{"tags": {"user_id": 99}, "user_id": 4, "user_id": 5}', 'UTF8'));

-- Messages are read by a fast path over the JSON lexer's tokens and, where
-- it stops, by PostgreSQL's JSON parser from the start: both give the same
-- rows and the same errors.  Escaped keys; escapes in values, also in
-- fields with no column; whitespace everywhere; an empty object.
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  '{"user\u005fid": 6, "u\u0072l": "\/a\tb", "other": "\ud83d\ude00 \""}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  E' \n{ "user_id" :6 , "ok":false , "url" : null,"raw":"\\"q\\"" }\t', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{}', 'UTF8'));
-- A lone surrogate or \u0000 is refused, even in a field with no column or
-- inside a nested value; so is invalid JSON inside a nested value.
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 6, "other": "\ud800"}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 6, "other": {"x": ["\u0000"]}}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 6, "raw": "\u0000"}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 6, "other": {"x" 1}}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 6, "other": [1}, "url": "x"}', 'UTF8'));
-- A trailing comma, a missing colon, a missing value.
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 6,}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id" 6}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": }', 'UTF8'));
-- Fields are converted in order, so a bad value before a syntax error is
-- the error reported.
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": "x", "url": ', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"url": , "user_id": "x"}', 'UTF8'));

-- A value of the wrong type: the type's own error, with the field.
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": "seven"}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "amount": 123456789012}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "ts": "yesterday-ish"}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to(
  '{"user_id": 1, "url": "x", "ok": "' || repeat('long value ', 20) || '"}', 'UTF8'));

-- Not an object, malformed JSON, invalid UTF-8, empty messages.
SELECT kappa.decode_preview('clicks', 'json', convert_to('[{"user_id": 1}]', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('42', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1,', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1} {"user_id": 2}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', convert_to('{user_id: 1}', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'json', '\x7b2275726c223a2022c328227d'::bytea);
SELECT kappa.decode_preview('clicks', 'json', '\x7b7d00'::bytea);
SELECT kappa.decode_preview('clicks', 'json', ''::bytea);
SELECT kappa.decode_preview('clicks', 'json', NULL);

-- Option encoding: messages in another encoding are converted.
SELECT kappa.decode_preview('clicks', 'json', '\x7b2275726c223a2022636166e9227d'::bytea,
                            '{"encoding": "LATIN1"}') ->> 'url' AS latin1_url;

-- Option time_format: numbers into timestamp columns as epoch seconds,
-- milliseconds or microseconds; text still goes through the input function.
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "ts": 1704067200123}', 'UTF8'),
                            '{"time_format": "epoch_ms"}') ->> 'ts' AS epoch_ms;
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "ts": 1704067200.5}', 'UTF8'),
                            '{"time_format": "epoch_s"}') ->> 'ts' AS epoch_s;
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "ts": "2024-01-01 10:00:00+02"}', 'UTF8'),
                            '{"time_format": "epoch_ms"}') ->> 'ts' AS text_ts;
SELECT kappa.decode_preview('clicks', 'json', convert_to('{"user_id": 1, "ts": 1e30}', 'UTF8'),
                            '{"time_format": "epoch_ms"}');

-- Metadata columns: filled from the message's coordinates, never from the
-- payload.
CREATE TABLE events (
    kafka_key       text,
    kafka_partition integer,
    kafka_offset    bigint,
    kafka_timestamp timestamptz,
    kafka_headers   jsonb,
    body            jsonb
);
SELECT kappa.decode_preview('events', 'json',
         convert_to('{"body": {"x": 1}, "kafka_offset": 999, "kafka_key": "no"}', 'UTF8'),
         kafka_key => convert_to('user-7', 'UTF8'), kafka_partition => 3,
         kafka_offset => 123456789012, kafka_timestamp => '2024-05-06 07:08:09.123+00',
         kafka_headers => '{"trace": "abc", "empty": null, "n": 5}');
-- without key, timestamp or headers
SELECT kappa.decode_preview('events', 'json', convert_to('{"body": 1}', 'UTF8'));
-- a metadata column is not an unknown key for strict
SELECT kappa.decode_preview('events', 'json', convert_to('{"body": 1, "kafka_partition": 5}', 'UTF8'),
                            '{"strict": true}', kafka_partition => 2) ->> 'kafka_partition' AS part;
-- a key that is not valid UTF-8 cannot go to a text column
SELECT kappa.decode_preview('events', 'json', convert_to('{"body": 1}', 'UTF8'), kafka_key => '\xff00'::bytea);

CREATE TABLE events_bin (kafka_key bytea, kafka_partition bigint, body text);
SELECT kappa.decode_preview('events_bin', 'json', convert_to('{"body": "b"}', 'UTF8'),
                            kafka_key => '\xff00'::bytea, kafka_partition => 1);

-- Metadata columns of the wrong type are refused when the decoder is made.
CREATE TABLE bad_meta (kafka_offset integer, body text);
SELECT kappa.decode_preview('bad_meta', 'json', convert_to('{"body": 1}', 'UTF8'));
CREATE TABLE bad_meta2 (kafka_timestamp timestamp, body text);
SELECT kappa.decode_preview('bad_meta2', 'json', convert_to('{"body": 1}', 'UTF8'));
CREATE TABLE bad_meta3 (kafka_headers text, body text);
SELECT kappa.decode_preview('bad_meta3', 'json', convert_to('{"body": 1}', 'UTF8'));

-- Defaults are evaluated per message; generated and identity columns are
-- left to the executor (NULL here, even when the message has a value);
-- domains check NULLs.
CREATE DOMAIN positive AS integer NOT NULL CHECK (VALUE > 0);
CREATE SEQUENCE seq;
CREATE TABLE dflt (
    id      bigint DEFAULT nextval('seq'),
    p       positive,
    q       integer GENERATED ALWAYS AS (p * 2) STORED,
    label   text DEFAULT upper('x' || 'y'),
    ident   integer GENERATED BY DEFAULT AS IDENTITY
);
SELECT kappa.decode_preview('dflt', 'json', convert_to('{"p": 5, "q": 100}', 'UTF8'));
SELECT kappa.decode_preview('dflt', 'json', convert_to('{"p": 6}', 'UTF8'));
SELECT kappa.decode_preview('dflt', 'json', convert_to('{"p": 7, "ident": 70}', 'UTF8'));
-- (and they are not among the CSV fields)
SELECT kappa.decode_preview('dflt', 'csv', convert_to('4,9,lbl', 'UTF8'));
SELECT kappa.decode_preview('dflt', 'json', convert_to('{"p": -1}', 'UTF8'));
SELECT kappa.decode_preview('dflt', 'json', convert_to('{"p": null}', 'UTF8'));
SELECT kappa.decode_preview('dflt', 'json', convert_to('{"label": "no p"}', 'UTF8'));

-- CSV: one record per message, fields in column order (metadata columns
-- skipped).  An unquoted empty field is NULL, a quoted one is empty;
-- missing trailing fields give defaults; extra ones are ignored unless strict.
CREATE TABLE rows3 (a integer, kafka_offset bigint, b text, c numeric DEFAULT 9.5);
SELECT kappa.decode_preview('rows3', 'csv', convert_to('1,hello,2.5', 'UTF8'), kafka_offset => 10);
SELECT kappa.decode_preview('rows3', 'csv', convert_to(E'2,"a, ""quoted"" value\nover two lines",3\r\n', 'UTF8'));
SELECT kappa.decode_preview('rows3', 'csv', convert_to('3,,', 'UTF8'));
SELECT kappa.decode_preview('rows3', 'csv', convert_to('4,""', 'UTF8'));
SELECT kappa.decode_preview('rows3', 'csv', convert_to('5,x,1,extra', 'UTF8'));
SELECT kappa.decode_preview('rows3', 'csv', convert_to('5,x,1,extra', 'UTF8'), '{"strict": true}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to('x,y,z', 'UTF8'));
SELECT kappa.decode_preview('rows3', 'csv', convert_to('6,"unterminated', 'UTF8'));
SELECT kappa.decode_preview('rows3', 'csv', convert_to(E'7,a,1\n8,b,2\n', 'UTF8'));
-- delimiter, quote, escape and null options
SELECT kappa.decode_preview('rows3', 'csv', convert_to('9;''x;y'';NULL', 'UTF8'),
                            '{"delimiter": ";", "quote": "''", "null": "NULL"}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to(E'10|"say \\"hi\\""|1', 'UTF8'),
                            '{"delimiter": "|", "escape": "\\"}');
-- option columns: the fields' columns, in order
SELECT kappa.decode_preview('rows3', 'csv', convert_to('hello,11', 'UTF8'), '{"columns": ["b", "a"]}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to('12,hello', 'UTF8'), '{"columns": "a, b"}');
-- header: each message is a header record naming the columns, then values
SELECT kappa.decode_preview('rows3', 'csv', convert_to(E'b,a,ignored\nhi,13,x\n', 'UTF8'), '{"header": true}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to(E'b,a,ignored\nhi,13,x', 'UTF8'),
                            '{"header": true, "strict": true}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to(E'a,a\n1,2', 'UTF8'), '{"header": true}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to(E'a,b\n', 'UTF8'), '{"header": true}');

-- text: the whole payload into the one text-like payload column; other
-- payload columns get their defaults.
CREATE TABLE lines (id bigint DEFAULT 1, line text, kafka_offset bigint);
SELECT kappa.decode_preview('lines', 'text', convert_to(E'any text, "even" {not json}\n', 'UTF8'), kafka_offset => 5);
SELECT kappa.decode_preview('lines', 'text', '\x80'::bytea);
CREATE TABLE docs (d jsonb);
SELECT kappa.decode_preview('docs', 'text', convert_to('{"whole": ["doc"]}', 'UTF8'));
SELECT kappa.decode_preview('docs', 'text', convert_to('{"whole": ', 'UTF8'));
CREATE TABLE short (s varchar(3));
SELECT kappa.decode_preview('short', 'text', convert_to('abcd', 'UTF8'));
CREATE TABLE two_texts (a text, b varchar);
SELECT kappa.decode_preview('two_texts', 'text', convert_to('to b', 'UTF8'), '{"columns": "b"}');
SELECT kappa.decode_preview('two_texts', 'text', convert_to('which?', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'text', convert_to('x', 'UTF8'), '{"columns": "user_id"}');
CREATE TABLE numbers_only (n integer, kafka_key text);
SELECT kappa.decode_preview('numbers_only', 'text', convert_to('1', 'UTF8'));

-- bytea: the whole payload, any bytes, into the one bytea payload column.
CREATE TABLE blobs (kafka_partition integer, data bytea, note text DEFAULT 'raw');
SELECT kappa.decode_preview('blobs', 'bytea', '\x00ff10'::bytea, kafka_partition => 4);
SELECT kappa.decode_preview('numbers_only', 'bytea', '\x00'::bytea);
SELECT kappa.decode_preview('blobs', 'bytea', ''::bytea);

-- Options and formats that do not exist or do not apply.
SELECT kappa.decode_preview('clicks', 'xml', convert_to('<a/>', 'UTF8'));
SELECT kappa.decode_preview('clicks', 'JSON', convert_to('{"user_id": 1}', 'UTF8')) ->> 'user_id' AS upper_case_format;
SELECT kappa.decode_preview('clicks', 'json', convert_to('{}', 'UTF8'), '{"delimiter": ";"}');
SELECT kappa.decode_preview('clicks', 'json', convert_to('{}', 'UTF8'), '{"bootstrap.servers": "x"}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to('1', 'UTF8'), '{"delimiter": ";;"}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to('1', 'UTF8'), '{"quote": ","}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to('1', 'UTF8'), '{"header": "maybe"}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to('1', 'UTF8'), '{"header": true, "columns": ["a"]}');
SELECT kappa.decode_preview('rows3', 'csv', convert_to('1', 'UTF8'), '{"columns": ["a", "kafka_offset"]}');
SELECT kappa.decode_preview('clicks', 'json', convert_to('{}', 'UTF8'), '{"encoding": "EBCDIC"}');
SELECT kappa.decode_preview('clicks', 'json', convert_to('{}', 'UTF8'), '{"time_format": "julian"}');
SELECT kappa.decode_preview('clicks', 'json', convert_to('{}', 'UTF8'), '[1]');
SELECT kappa.decode_preview('pg_class_oid_index', 'json', convert_to('{}', 'UTF8'));

-- Avro: a backend fetches no writer schema, so the message's schema comes
-- with option writer_schema.  The message was encoded by Debian's
-- python3-avro (test/avro_tool.py encode, schema id 1) from
-- {"user_id": 42, "url": "/home", "amount": "-12.34",
--  "ts": "2026-11-26T10:00:00.123Z", "tags": ["a", "b"]}
CREATE TABLE avro_clicks (user_id int, url text, amount numeric(6,2), ts timestamptz,
                          tags text[], missing int DEFAULT 7);
SELECT kappa.decode_preview('avro_clicks', 'avro',
  '\x0000000001540a2f686f6d6504fb2ef6d5e1f4c268040261026200',
  '{"writer_schema": {"type": "record", "name": "Click", "fields": [
      {"name": "user_id", "type": "int"}, {"name": "url", "type": "string"},
      {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2}},
      {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
      {"name": "tags", "type": {"type": "array", "items": "string"}}]}}');
-- the same body cut short, without the magic byte, and without a schema
SELECT kappa.decode_preview('avro_clicks', 'avro', '\x0000000001540a2f686f6d6504fb2e',
  '{"writer_schema": {"type": "record", "name": "Click", "fields": [
      {"name": "user_id", "type": "int"}, {"name": "url", "type": "string"},
      {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 8, "scale": 2}},
      {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
      {"name": "tags", "type": {"type": "array", "items": "string"}}]}}');
SELECT kappa.decode_preview('avro_clicks', 'avro', '\x540a2f686f6d65');
SELECT kappa.decode_preview('avro_clicks', 'avro', '\x0000000063540a2f686f6d6504fb2ef6d5e1f4c268040261026200');
SELECT kappa.decode_preview('avro_clicks', 'avro', '\x0000000064540a',
  '{"writer_schema": "{\"type\": \"record\", \"name\": \"R\", \"fields\": [{\"name\": \"x\", \"type\": \"nosuchtype\"}]}"}');
SELECT kappa.decode_preview('avro_clicks', 'avro', '\x0000000001', '{"columns": ["url"]}');

DROP TABLE clicks, events, events_bin, bad_meta, bad_meta2, bad_meta3, dflt, avro_clicks,
    rows3, lines, docs, short, two_texts, numbers_only, blobs;
DROP DOMAIN positive;
DROP SEQUENCE seq;
