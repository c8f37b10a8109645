-- Mutation fuzzing of the message decoders (src/decode*.c) through
-- kappa.decode_preview().  Not part of the pg_regress suite (the output is a
-- summary, not a fixed expected file).  Run against a database that has
-- pg_kappa:
--
--   psql -X -v ON_ERROR_STOP=1 -d DB -f test/decode_fuzz/fuzz.sql
--
-- Each case mutates a valid JSON or CSV message (byte flips, deletions,
-- duplicated slices, truncation) and decodes it.  A case passes if it either
-- decodes or raises an ordinary data error; the script fails if the server
-- crashes or an error has an SQLSTATE outside the expected data-error
-- classes (22 data exception, 42 undefined/duplicate column or datatype
-- mismatch).  The seed is fixed, so a failure can be replayed.

\set cases 20000

BEGIN;
CREATE TEMP TABLE kappa_fuzz_target (
    a integer, b text, c numeric, d jsonb, e json, f timestamptz, g bytea,
    kafka_key text, kafka_headers jsonb);

CREATE FUNCTION pg_temp.kappa_fuzz(fmt text, n integer, opts jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    seeds text[] := ARRAY[
        '{"a": 1, "b": "x\"y\u00e9", "c": 1.5e3, "d": {"k": [1, {"z": null}]}, '
        '"e": [true, false], "f": "2024-01-01T00:00:00Z", "g": "\\x00ff"}',
        '1,"two, ""quoted""",3.5,"{""x"": 1}",[],2024-01-01,\x00',
        'a,b,c' || chr(10) || '1,"x' || chr(10) || 'y",2'];
    ok integer := 0;
    failed integer := 0;
    p bytea;
    s bytea;
    pos integer;
    state text;
    states text[] := '{}';
BEGIN
    PERFORM setseed(0.42);
    FOR i IN 1..n LOOP
        s := convert_to(seeds[1 + (i % 3)], 'UTF8');
        p := s;
        FOR j IN 1..(1 + floor(random() * 4))::integer LOOP
            pos := floor(random() * length(p))::integer;
            CASE floor(random() * 4)::integer
                WHEN 0 THEN
                    p := overlay(p PLACING decode(lpad(to_hex(floor(random() * 256)::integer), 2, '0'), 'hex')
                                 FROM pos + 1 FOR 1);
                WHEN 1 THEN
                    p := substring(p FROM 1 FOR pos) || substring(p FROM pos + 2);
                WHEN 2 THEN
                    p := substring(p FROM 1 FOR pos)
                         || substring(s FROM floor(random() * length(s))::integer + 1
                                      FOR floor(random() * 10)::integer)
                         || substring(p FROM pos + 1);
                ELSE
                    p := substring(p FROM 1 FOR pos);
            END CASE;
        END LOOP;
        BEGIN
            PERFORM kappa.decode_preview('kappa_fuzz_target', fmt, p, opts,
                                         kafka_key => substring(p FROM 1 FOR 4),
                                         kafka_headers => '{"h": "v", "n": null}');
            ok := ok + 1;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            IF left(state, 2) NOT IN ('22', '42') THEN
                RAISE EXCEPTION 'case % (%): unexpected SQLSTATE % for payload %',
                    i, fmt, state, p;
            END IF;
            failed := failed + 1;
            IF NOT state = ANY (states) THEN
                states := states || state;
            END IF;
        END;
    END LOOP;
    RETURN format('%s %s: %s decoded, %s refused (SQLSTATEs %s)',
                  fmt, opts, ok, failed, array_to_string(states, ' '));
END;
$$;

SELECT pg_temp.kappa_fuzz('json', :cases, '{}');
SELECT pg_temp.kappa_fuzz('json', :cases, '{"strict": true, "time_format": "epoch_ms"}');
SELECT pg_temp.kappa_fuzz('csv', :cases, '{}');
SELECT pg_temp.kappa_fuzz('csv', :cases, '{"header": true, "strict": true}');
SELECT pg_temp.kappa_fuzz('csv', :cases, '{"delimiter": ";", "quote": "''", "escape": "\\"}');
SELECT pg_temp.kappa_fuzz('text', :cases, '{"columns": "e"}');
SELECT pg_temp.kappa_fuzz('bytea', :cases, '{}');
ROLLBACK;
