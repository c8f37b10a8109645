--
-- Keyed changelogs (src/decode_change.c), through
-- kappa.decode_change_preview(): what a Kafka source with envelope 'upsert'
-- or 'debezium' would do to its target for one message.
--
-- The Debezium fixtures are Debezium's own documented change events and
-- connector test resources, as published; where a fixture is adapted (a
-- documentation callout "// <n>" removed, a trailing comma dropped so that
-- the JSON is valid, one field changed to exercise a case), the comment
-- above it says so.  Expected values are computed independently in SQL.
--
SET timezone = 'America/New_York';	-- results must not depend on it
SET datestyle = 'SQL, DMY';			-- nor on this

-- try(sql) runs a statement and reports its error as SQLSTATE: message
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- The example table of Debezium's PostgreSQL connector documentation
-- (https://github.com/debezium/debezium/blob/main/documentation/modules/ROOT/pages/connectors/postgresql.adoc,
-- "Change event keys"), plus a metadata column.
CREATE TABLE customers (
  id SERIAL,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL,
  kafka_partition integer,
  PRIMARY KEY(id)
);

CREATE TABLE fixtures (name text PRIMARY KEY, doc text NOT NULL);

-- postgresql.adoc, "Change event keys": the key of the customers table,
-- with the JsonConverter's schema (trailing comma after "payload" removed).
INSERT INTO fixtures VALUES ('pg_key', $j$
  {
    "schema": {
      "type": "struct",
      "name": "PostgreSQL_server.public.customers.Key",
      "optional": false,
      "fields": [
            {
                "name": "id",
                "index": "0",
                "schema": {
                    "type": "INT32",
                    "optional": "false"
                }
            }
        ]
    },
    "payload": {
        "id": "1"
    }
  }
$j$);

-- postgresql.adoc, "create events": the value of a create event, with its
-- schema (callouts removed; {debezium-version} is the page's attribute).
INSERT INTO fixtures VALUES ('pg_create', $j$
{
    "schema": {
        "type": "struct",
        "fields": [
            {
                "type": "struct",
                "fields": [
                    {"type": "int32", "optional": false, "field": "id"},
                    {"type": "string", "optional": false, "field": "first_name"},
                    {"type": "string", "optional": false, "field": "last_name"},
                    {"type": "string", "optional": false, "field": "email"}
                ],
                "optional": true,
                "name": "PostgreSQL_server.inventory.customers.Value",
                "field": "before"
            },
            {
                "type": "struct",
                "fields": [
                    {"type": "int32", "optional": false, "field": "id"},
                    {"type": "string", "optional": false, "field": "first_name"},
                    {"type": "string", "optional": false, "field": "last_name"},
                    {"type": "string", "optional": false, "field": "email"}
                ],
                "optional": true,
                "name": "PostgreSQL_server.inventory.customers.Value",
                "field": "after"
            },
            {
                "type": "struct",
                "fields": [
                    {"type": "string", "optional": false, "field": "version"},
                    {"type": "string", "optional": false, "field": "connector"},
                    {"type": "string", "optional": false, "field": "name"},
                    {"type": "int64", "optional": false, "field": "ts_ms"},
                    {"type": "int64", "optional": false, "field": "ts_us"},
                    {"type": "int64", "optional": false, "field": "ts_ns"},
                    {"type": "boolean", "optional": true, "default": false, "field": "snapshot"},
                    {"type": "string", "optional": false, "field": "db"},
                    {"type": "string", "optional": false, "field": "schema"},
                    {"type": "string", "optional": false, "field": "table"},
                    {"type": "int64", "optional": true, "field": "txId"},
                    {"type": "int64", "optional": true, "field": "lsn"},
                    {"type": "int64", "optional": true, "field": "xmin"}
                ],
                "optional": false,
                "name": "io.debezium.connector.postgresql.Source",
                "field": "source"
            },
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"},
            {"type": "int64", "optional": true, "field": "ts_us"},
            {"type": "int64", "optional": true, "field": "ts_ns"}
        ],
        "optional": false,
        "name": "PostgreSQL_server.inventory.customers.Envelope"
    },
    "payload": {
        "before": null,
        "after": {
            "id": 1,
            "first_name": "Anne",
            "last_name": "Kretchmar",
            "email": "annek@noanswer.org"
        },
        "source": {
            "version": "{debezium-version}",
            "connector": "postgresql",
            "name": "PostgreSQL_server",
            "ts_ms": 1559033904863,
            "ts_us": 1559033904863123,
            "ts_ns": 1559033904863123000,
            "snapshot": true,
            "db": "postgres",
            "sequence": "[\"24023119\",\"24023128\"]",
            "schema": "public",
            "table": "customers",
            "txId": 555,
            "lsn": 24023128,
            "xmin": null
        },
        "op": "c",
        "ts_ms": 1559033904863,
        "ts_us": 1559033904863841,
        "ts_ns": 1559033904863841257
    }
}
$j$);

-- postgresql.adoc, "update events": the payload of an update event
-- (callouts and the trailing comma removed; the page elides the schema as
-- "{ ... }", so the wrapper is left out: the event without a schema).
INSERT INTO fixtures VALUES ('pg_update', $j$
    {
        "before": {
            "id": 1
        },
        "after": {
            "id": 1,
            "first_name": "Anne Marie",
            "last_name": "Kretchmar",
            "email": "annek@noanswer.org"
        },
        "source": {
            "version": "{debezium-version}",
            "connector": "postgresql",
            "name": "PostgreSQL_server",
            "ts_ms": 1559033904863,
            "ts_us": 1559033904863769,
            "ts_ns": 1559033904863769000,
            "snapshot": false,
            "db": "postgres",
            "schema": "public",
            "table": "customers",
            "txId": 556,
            "lsn": 24023128,
            "xmin": null
        },
        "op": "u",
        "ts_ms": 1465584025523,
        "ts_us": 1465584025523514,
        "ts_ns": 1465584025523514964
    }
$j$);

-- postgresql.adoc, "delete events" (callouts and trailing comma removed).
INSERT INTO fixtures VALUES ('pg_delete', $j$
    {
        "before": {
            "id": 1
        },
        "after": null,
        "source": {
            "version": "{debezium-version}",
            "connector": "postgresql",
            "name": "PostgreSQL_server",
            "ts_ms": 1559033904863,
            "ts_us": 1559033904863852,
            "ts_ns": 1559033904863852000,
            "snapshot": false,
            "db": "postgres",
            "schema": "public",
            "table": "customers",
            "txId": 556,
            "lsn": 46523128,
            "xmin": null
        },
        "op": "d",
        "ts_ms": 1465581902461,
        "ts_us": 1465581902461496,
        "ts_ns": 1465581902461496187
    }
$j$);

-- postgresql.adoc, "truncate events" (callouts removed).
INSERT INTO fixtures VALUES ('pg_truncate', $j$
    {
        "source": {
            "version": "{debezium-version}",
            "connector": "postgresql",
            "name": "PostgreSQL_server",
            "ts_ms": 1559033904863,
            "ts_us": 1559033904863112,
            "ts_ns": 1559033904863112000,
            "snapshot": false,
            "db": "postgres",
            "schema": "public",
            "table": "customers",
            "txId": 556,
            "lsn": 46523128,
            "xmin": null
        },
        "op": "t",
        "ts_ms": 1559033904961,
        "ts_us": 1559033904961654,
        "ts_ns": 1559033904961654789
    }
$j$);

-- postgresql.adoc, "message events": a logical decoding message (op "m"),
-- which is no change of a table (callouts removed).
INSERT INTO fixtures VALUES ('pg_message', $j$
    {
        "source": {
            "version": "{debezium-version}",
            "connector": "postgresql",
            "name": "PostgreSQL_server",
            "ts_ms": 1559033904863,
            "snapshot": false,
            "db": "postgres",
            "schema": "",
            "table": "",
            "txId": 556,
            "lsn": 46523128,
            "xmin": null
        },
        "op": "m",
        "ts_ms": 1559033904961,
        "message": {
            "prefix": "foo",
            "content": "Ymfy"
        }
    }
$j$);

-- Debezium's connector test resources: a MySQL create event without the
-- schema wrapper
-- (https://github.com/debezium/debezium/blob/main/debezium-connector-common/src/test/resources/json/serde-without-schema.json).
INSERT INTO fixtures VALUES ('mysql_create', $j$
{
    "op": "c",
    "ts_ms": 1465491411815,
    "before": null,
    "after": {
      "id": 1004,
      "first_name": "Anne",
      "last_name": "Kretchmar",
      "email": "annek@noanswer.org"
    },
    "source": {
      "version": "0.10.0.Final",
      "connector": "mysql",
      "name": "mysql-server-1",
      "ts_ms": 0,
      "snapshot": false,
      "db": "inventory",
      "table": "customers",
      "server_id": 0,
      "gtid": null,
      "file": "mysql-bin.000003",
      "pos": 154,
      "row": 0,
      "thread": 7,
      "query": "INSERT INTO customers (first_name, last_name, email) VALUES ('Anne', 'Kretchmar', 'annek@noanswer.org')"
    }
}
$j$);

-- dc(name, ...) previews fixture 'name' for customers
CREATE FUNCTION dc(fixture text, key text DEFAULT NULL, order_by text DEFAULT NULL,
                   target regclass DEFAULT 'customers', envelope text DEFAULT 'debezium',
                   doc_override text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT kappa.decode_change_preview(target, envelope,
               convert_to(coalesce(doc_override, (SELECT doc FROM fixtures WHERE name = fixture)), 'UTF8'),
               convert_to(key, 'UTF8'), order_by => order_by)
$$;

-- create, with the schema wrapper: an upsert of the whole row; the key is
-- not needed when 'after' has the key columns
SELECT dc('pg_create');
-- with the documented key (its own schema wrapper, "id" as a string)
SELECT dc('pg_create', (SELECT doc FROM fixtures WHERE name = 'pg_key'));
-- without the wrapper (Debezium's test resource), mapped by name
SELECT dc('mysql_create');
-- snapshot read: op "r" (the documented create event, op changed to "r")
SELECT dc('pg_create', doc_override => replace((SELECT doc FROM fixtures WHERE name = 'pg_create'),
                                              '"op": "c"', '"op": "r"'));
-- update: 'before' has only the key (REPLICA IDENTITY DEFAULT), the same
-- key: not moved
SELECT dc('pg_update');
-- update that moves the row to another key (the documented update, with
-- "id": 2 after): old_key is the key of 'before'
SELECT dc('pg_update', doc_override => replace((SELECT doc FROM fixtures WHERE name = 'pg_update'),
                                              '"id": 1,', '"id": 2,'));
-- delete: the key of the message wins, else the key columns of 'before'
SELECT dc('pg_delete', '{"schema": {"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "id"}], "optional": false, "name": "PostgreSQL_server.public.customers.Key"}, "payload": {"id": 7}}');
SELECT dc('pg_delete');
-- truncate (the message key is null)
SELECT dc('pg_truncate');
-- the tombstone after a delete: nothing to do
SELECT kappa.decode_change_preview('customers', 'debezium', NULL,
       convert_to((SELECT doc FROM fixtures WHERE name = 'pg_key'), 'UTF8'));

-- order_by: a number at a path into the payload is the position
SELECT dc('pg_update', order_by => 'source.lsn')->'position' AS lsn,
       dc('pg_create', order_by => 'source.ts_ms')->'position' AS source_ts_ms,
       dc('pg_update', order_by => 'ts_ns')->'position' AS ts_ns,
       dc('pg_update', order_by => 'source.nothere') ? 'position' AS absent_has_position,
       dc('pg_update', order_by => 'source.xmin') ? 'position' AS null_has_position;
SELECT try($$SELECT dc('pg_update', order_by => 'source.connector')$$);
SELECT try($$SELECT dc('pg_update', order_by => 'source..lsn')$$);

-- The unchanged-TOAST placeholder: postgresql.adoc, "Toasted values"
-- (REPLICA IDENTITY DEFAULT, an unchanged TOAST column gets the value of
-- unavailable.value.placeholder, by default __debezium_unavailable_value);
-- the documented update with email unchanged and TOASTed.
SELECT dc('pg_update', doc_override => replace((SELECT doc FROM fixtures WHERE name = 'pg_update'),
                                              '"annek@noanswer.org"', '"__debezium_unavailable_value"'));

-- Value encodings.  Kafka Connect's JsonConverter tests give the wire form
-- of its logical types
-- (https://github.com/apache/kafka/blob/trunk/connect/json/src/test/java/org/apache/kafka/connect/json/JsonConverterTest.java:
-- decimalToConnect "AJw=" with scale 2 is 1.56, dateToConnect 10000 days,
-- timeToConnect 14400000 ms, timestampToConnect 4000000000 ms); Debezium's
-- PostgreSQL documentation the MicroTimestamp of "2018-06-20
-- 15:13:16.945104" (postgresql.adoc, "TIMESTAMP type": 1529507596945104)
-- and the shapes of VariableScaleDecimal ({"scale", "value"}) and
-- ZonedTimestamp (a string in GMT, here one a Debezium 0.9.5 PostgreSQL
-- connector sent: https://gist.github.com/sachnk/a82a729c82fe3c3b77204f7f61d28d24).
-- They are put in the documented envelope of a create event.
CREATE TABLE typed (
    id      integer PRIMARY KEY,
    price   numeric(10,2),
    amount  numeric,
    d       date,
    t       time,
    t_us    time,
    ts      timestamp,
    tstz    timestamptz,
    created timestamptz,
    blob    bytea,
    note    text DEFAULT 'a default'
);
INSERT INTO fixtures VALUES ('typed', $j$
{
    "schema": {
        "type": "struct",
        "fields": [
            {
                "type": "struct",
                "fields": [
                    {"type": "int32", "optional": false, "field": "id"},
                    {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "parameters": {"scale": "2"}, "field": "price"},
                    {"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "scale"}, {"type": "bytes", "optional": false, "field": "value"}], "optional": true, "name": "io.debezium.data.VariableScaleDecimal", "version": 1, "doc": "Variable scaled decimal", "field": "amount"},
                    {"type": "int32", "optional": true, "name": "org.apache.kafka.connect.data.Date", "version": 1, "field": "d"},
                    {"type": "int32", "optional": true, "name": "org.apache.kafka.connect.data.Time", "version": 1, "field": "t"},
                    {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTime", "version": 1, "field": "t_us"},
                    {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "version": 1, "field": "ts"},
                    {"type": "int64", "optional": true, "name": "org.apache.kafka.connect.data.Timestamp", "version": 1, "field": "tstz"},
                    {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "version": 1, "field": "created"},
                    {"type": "bytes", "optional": true, "field": "blob"}
                ],
                "optional": true,
                "name": "server.public.typed.Value",
                "field": "after"
            },
            {"type": "string", "optional": false, "field": "op"}
        ],
        "optional": false,
        "name": "server.public.typed.Envelope"
    },
    "payload": {
        "before": null,
        "after": {
            "id": 1,
            "price": "AJw=",
            "amount": {"scale": 2, "value": "AJw="},
            "d": 10000,
            "t": 14400000,
            "t_us": 14400000000,
            "ts": 1529507596945104,
            "tstz": 4000000000,
            "created": "2020-09-27T13:37:24.058468Z",
            "blob": "dGVzdC1zdHJpbmc="
        },
        "op": "c"
    }
}
$j$);
WITH c AS (SELECT dc('typed', target => 'typed') AS r)
SELECT (r->'row'->>'price')::numeric = 1.56 AS price,
       (r->'row'->>'amount')::numeric = 1.56 AS amount,
       (r->'row'->>'d')::date = date '1970-01-01' + 10000 AS d,
       (r->'row'->>'t')::time = time '04:00' AS t,
       (r->'row'->>'t_us')::time = time '04:00' AS t_us,
       (r->'row'->>'ts')::timestamp = timestamp '2018-06-20 15:13:16.945104' AS ts,
       (r->'row'->>'tstz')::timestamptz = to_timestamp(4000000) AS tstz,
       (r->'row'->>'created')::timestamptz = timestamptz '2020-09-27 13:37:24.058468+00' AS created,
       decode(substr(r->'row'->>'blob', 3), 'hex') = convert_to('test-string', 'UTF8') AS blob,
       r->'row'->'note' AS absent_is_null
  FROM c;

-- Without the wrapper the column type decides: an integer is epoch
-- microseconds for timestamps, epoch days for dates, microseconds since
-- midnight for times; a {"scale", "value"} object is a VariableScaleDecimal
-- (the same documented values as above).
WITH c AS (SELECT kappa.decode_change_preview('typed', 'debezium', convert_to(
    '{"op": "c", "before": null, "after": {"id": 2, "price": "1.56", "amount": {"scale": 2, "value": "AJw="},
      "d": 10000, "t": 14400000000, "ts": 1529507596945104, "tstz": 1529507596945104}}', 'UTF8')) AS r)
SELECT (r->'row'->>'price')::numeric = 1.56 AS price,
       (r->'row'->>'amount')::numeric = 1.56 AS amount,
       (r->'row'->>'d')::date = date '1970-01-01' + 10000 AS d,
       (r->'row'->>'t')::time = time '04:00' AS t,
       (r->'row'->>'ts')::timestamp = timestamp '2018-06-20 15:13:16.945104' AS ts,
       (r->'row'->>'tstz')::timestamptz = timestamptz '2018-06-20 15:13:16.945104+00' AS tstz
  FROM c;
-- negative unscaled bytes (two's complement): the byte 0x9c alone is -100
SELECT (kappa.decode_change_preview('typed', 'debezium', convert_to(
    '{"op": "c", "after": {"id": 3, "amount": {"scale": 2, "value": "nA=="}}}', 'UTF8'))->'row'->>'amount')::numeric = -1.00 AS negative;

-- Identity primary keys are read from the message, like any key.
CREATE TABLE ident (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
SELECT kappa.decode_change_preview('ident', 'debezium', convert_to('{"op": "c", "after": {"id": 41, "v": "x"}}', 'UTF8'));

-- Envelope 'upsert': the key gives the key columns, the value the row;
-- value columns that are absent are NULL, not their default.
CREATE TABLE kv (id integer PRIMARY KEY, note text DEFAULT 'a default', n integer);
-- the documented key with its schema wrapper, and the documented 'after'
-- as a value
SELECT kappa.decode_change_preview('customers', 'upsert',
       convert_to('{"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}', 'UTF8'),
       convert_to((SELECT doc FROM fixtures WHERE name = 'pg_key'), 'UTF8'));
-- the key supplies (and overrides) the key columns
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"n": 5}', 'UTF8'), convert_to('{"id": 9}', 'UTF8'));
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"id": 1, "n": 5}', 'UTF8'), convert_to('9', 'UTF8'));
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"n": 5}', 'UTF8'), convert_to('9', 'UTF8'),
                                   key_format => 'text');
-- a tombstone deletes the key
SELECT kappa.decode_change_preview('kv', 'upsert', NULL, convert_to('{"id": 9}', 'UTF8'));
-- csv values, with order_by refused for them
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('0,hello,3', 'UTF8'), convert_to('4', 'UTF8'),
                                   format => 'csv');
SELECT try($$SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('0,hello,3', 'UTF8'), convert_to('4', 'UTF8'),
                                   format => 'csv', order_by => 'n')$$);
-- order_by into the value
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"n": 5, "v": {"seq": 12.5}}', 'UTF8'),
                                   convert_to('1', 'UTF8'), order_by => 'v.seq');
-- a value in the JsonConverter's schema wrapper (detected per message): the
-- payload is the row, and order_by looks into it; a wrapped null is Kafka
-- Connect's rendering of a tombstone when schemas are enabled
SELECT kappa.decode_change_preview('kv', 'upsert',
       convert_to('{"schema": {"type": "struct", "fields": [{"type": "int32", "optional": true, "field": "n"}], "optional": false}, "payload": {"n": 5, "seq": 3}}', 'UTF8'),
       convert_to('1', 'UTF8'), order_by => 'seq');
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"schema": null, "payload": null}', 'UTF8'),
                                   convert_to('1', 'UTF8'));
-- an object that only looks like a wrapper is a row
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"payload": null, "n": 2}', 'UTF8'),
                                   convert_to('1', 'UTF8'));
-- in the wrapper, Kafka Connect's logical types are decoded as the schema
-- says, as for 'debezium' (the JsonConverter test values: Decimal "AJw="
-- with scale 2 is 1.56, Date 10000 is 10000 days after 1970-01-01)
CREATE TABLE kvd (id integer PRIMARY KEY, amount numeric, day date);
SELECT (r->'row'->>'amount')::numeric = 1.56 AS decimal_ok,
       (r->'row'->>'day')::date = date '1970-01-01' + 10000 AS date_ok,
       r->>'change' AS change
  FROM kappa.decode_change_preview('kvd', 'upsert',
       convert_to('{"schema": {"type": "struct", "fields": [{"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1, "parameters": {"scale": "2"}, "field": "amount"}, {"type": "int32", "optional": true, "name": "org.apache.kafka.connect.data.Date", "version": 1, "field": "day"}], "optional": false}, "payload": {"amount": "AJw=", "day": 10000}}', 'UTF8'),
       convert_to('{"id": 7}', 'UTF8')) AS r;

-- Messages that cannot be applied: each is a dead letter, with its error.
-- no key (upsert), and a key without the key column
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"n": 5}', 'UTF8'));
SELECT kappa.decode_change_preview('kv', 'upsert', convert_to('{"n": 5}', 'UTF8'), convert_to('{"key": 5}', 'UTF8'));
SELECT kappa.decode_change_preview('kv', 'upsert', NULL, convert_to('null', 'UTF8'));
-- a delete without key nor 'before'
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('{"op": "d", "before": null, "after": null}', 'UTF8'));
-- unknown op: the documented message event (op "m"); no op at all
SELECT dc('pg_message');
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('{"before": null, "after": {"id": 1}}', 'UTF8'));
-- a create without 'after'
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('{"op": "c", "after": null}', 'UTF8'));
-- bad base64 under a Decimal schema
SELECT dc('typed', target => 'typed', doc_override => replace((SELECT doc FROM fixtures WHERE name = 'typed'),
                                                              '"price": "AJw="', '"price": "A*w="'));
-- base64 Decimal bytes without the wrapper: the scale is unknown
SELECT kappa.decode_change_preview('typed', 'debezium', convert_to('{"op": "c", "after": {"id": 4, "price": "AJw="}}', 'UTF8'));
-- wrong types: text for an integer key, an object for a text column, a
-- string for a time since midnight
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('{"op": "c", "after": {"id": "seven"}}', 'UTF8'));
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('{"op": "c", "after": {"id": 1, "email": {"a": 1}}}', 'UTF8'));
SELECT dc('typed', target => 'typed', doc_override => replace((SELECT doc FROM fixtures WHERE name = 'typed'),
                                                              '"t": 14400000', '"t": "four"'));
SELECT dc('typed', target => 'typed', doc_override => replace((SELECT doc FROM fixtures WHERE name = 'typed'),
                                                              '"t": 14400000', '"t": 86400001'));
-- not JSON, not an object, an empty message
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('{"op": "c", "after": {"id": 1,}}', 'UTF8'));
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('[1, 2]', 'UTF8'));
SELECT kappa.decode_change_preview('customers', 'debezium', ''::bytea);

-- Combinations refused when the decoder is created (as create_kafka_source
-- will refuse them), by SQLSTATE.
CREATE TABLE two_keys (a integer, b integer, PRIMARY KEY (a, b));
CREATE TABLE no_pk (a integer);
SELECT try($$SELECT kappa.decode_change_preview('two_keys', 'upsert', NULL, convert_to('1', 'UTF8'), key_format => 'text')$$) AS text_key_two_columns,
       try($$SELECT kappa.decode_change_preview('no_pk', 'upsert', NULL, convert_to('1', 'UTF8'))$$) AS no_primary_key,
       try($$SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('1,2', 'UTF8'), format => 'csv')$$) AS debezium_csv;
SELECT try($$SELECT kappa.decode_change_preview('kv', 'upsert', NULL, convert_to('1', 'UTF8'), key_format => 'avro')$$) AS avro_key,
       try($$SELECT kappa.decode_change_preview('kv', 'upsert', NULL, convert_to('1', 'UTF8'), key_format => 'csv')$$) AS csv_key,
       try($$SELECT kappa.decode_change_preview('kv', 'sideways', NULL)$$) AS unknown_envelope,
       try($$SELECT kappa.decode_change_preview('kv', 'none', NULL)$$) AS envelope_none;
-- the errors in full
SELECT kappa.decode_change_preview('no_pk', 'upsert', NULL, convert_to('1', 'UTF8'));
SELECT kappa.decode_change_preview('two_keys', 'upsert', NULL, convert_to('1', 'UTF8'), key_format => 'text');
SELECT kappa.decode_change_preview('customers', 'debezium', convert_to('1,2', 'UTF8'), format => 'csv');
-- a two-column key needs an object
SELECT kappa.decode_change_preview('two_keys', 'upsert', NULL, convert_to('{"a": 1, "b": 2}', 'UTF8'));
SELECT kappa.decode_change_preview('two_keys', 'upsert', NULL, convert_to('1', 'UTF8'));

DROP FUNCTION dc, try;
DROP TABLE customers, fixtures, typed, ident, kv, two_keys, no_pk;
