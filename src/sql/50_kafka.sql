-- Part 50: Kafka clusters, sources, their offsets, status and dead letters.
--
-- Kafka clusters are foreign servers of the kappa_kafka wrapper and
-- credentials are user mappings, as with postgres_fdw: USAGE on a server is
-- what lets a role ingest from that cluster.  The wrapper's validator
-- decides, property by property, who may set what where (src/kafka_options.c,
-- docs/security.md).
--
-- The tables are written only by pg_kappa's functions and workers (which
-- act as the extension's owner for that), never directly by users: PUBLIC
-- has no privilege on them.  Users read them through kappa.sources,
-- kappa.source_partitions and kappa.errors, which mask secrets and show dead
-- letters only to the source's owner.  The database owner may read them
-- (pg_database_owner), so that its pg_dump of the database succeeds; no
-- secret is stored in them (secrets belong in user mappings).

CREATE FUNCTION kappa.kafka_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_kafka_fdw_validator'
LANGUAGE C STRICT;

-- No handler: a kappa_kafka server has no foreign tables.
CREATE FOREIGN DATA WRAPPER kappa_kafka VALIDATOR kappa.kafka_fdw_validator;

-- Every librdkafka property, with who may set it where.
CREATE FUNCTION kappa.kafka_properties(
    OUT property text, OUT class text, OUT secret boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_kafka_properties'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION kappa.kafka_properties() IS
  'librdkafka properties by class: safe, secret (user mappings only), network (servers only), file, program, superuser, reserved';

CREATE FUNCTION kappa.option_is_secret(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'kappa_option_is_secret'
LANGUAGE C STRICT IMMUTABLE;

CREATE TABLE kappa.source_catalog (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    owner       regrole NOT NULL,           -- the role the workers run as
    target      regclass NOT NULL,          -- a stream or an ordinary table
    topic       text NOT NULL,
    server      text,                       -- a kappa_kafka server ...
    brokers     text,                       -- ... or brokers (superusers)
    format      text NOT NULL,
    start       text NOT NULL,              -- earliest | latest | a timestamptz
    on_data_loss text NOT NULL DEFAULT 'fail'
                CHECK (on_data_loss IN ('fail', 'record')),
    parallelism integer NOT NULL CHECK (parallelism BETWEEN 1 AND 64),
    options     jsonb NOT NULL DEFAULT '{}',
    paused      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((server IS NULL) <> (brokers IS NULL)),
    -- keyed changelogs (docs/cdc.md): none appends, upsert and debezium apply
    -- changes to the target's primary key
    envelope    text NOT NULL DEFAULT 'none'
                CHECK (envelope IN ('none', 'upsert', 'debezium')),
    key_format  text NOT NULL DEFAULT 'json',
    order_by    text                        -- the ordering guard's path
);

-- The next offset to consume per partition.  A worker updates its rows in the
-- same transaction as the rows (and dead letters) they cover, and only if
-- they still hold the offset it started the batch from.
CREATE TABLE kappa.source_offsets (
    source_id       integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    high_watermark  bigint,                 -- last one seen by a worker
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, partition),
    -- where the source began reading the partition: a rebuild replays from
    -- here (NULL for partitions stored before version 0.3: from offset 0)
    first_offset    bigint
);

-- Worker status, one row per source and parallelism slot (not dumped).
CREATE TABLE kappa.source_status (
    source_id       integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    slot            integer NOT NULL,
    pid             integer,
    state           text NOT NULL,
    partitions      integer[],              -- assigned to this worker
    partitions_in_topic integer,            -- as the worker last saw the topic
    messages        bigint NOT NULL DEFAULT 0,
    bytes           bigint NOT NULL DEFAULT 0,
    dead_letters    bigint NOT NULL DEFAULT 0,
    batches         bigint NOT NULL DEFAULT 0,
    messages_per_sec double precision NOT NULL DEFAULT 0,
    bytes_per_sec   double precision NOT NULL DEFAULT 0,
    dead_letters_per_sec double precision NOT NULL DEFAULT 0,
    dead_letter_share double precision,     -- over the last minute
    last_batch_at   timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, slot),
    -- changes the ordering guard (order_by) dropped as older than the one
    -- applied for their key
    out_of_order    bigint NOT NULL DEFAULT 0,
    -- format avro: the writer schema ids seen, and the last message's
    schema_ids      integer[],
    last_schema_id  integer,
    -- messages applied that had fields naming no column (schema drift)
    drift           bigint NOT NULL DEFAULT 0
);

-- The ordering guard of sources with order_by: per key (its columns' values
-- as a JSON array of their text), the position of the change applied last
-- -- also after a delete, so that an older change cannot bring the row
-- back.  Written in the same transaction as the changes.
CREATE TABLE kappa.source_key_positions (
    source_id   integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    key         text NOT NULL,
    position    numeric NOT NULL,
    PRIMARY KEY (source_id, key)
);

-- Dead letters and recorded gaps.  A dead letter is a message that could not
-- be decoded or stored, with its raw bytes and coordinates; a gap is a range
-- of offsets the broker no longer held when the source came to read them
-- (on_data_loss => 'record'), from "offset" to last_offset.  Nothing is
-- silently dropped: messages produced = rows applied + dead letters +
-- messages in gaps.
CREATE TABLE kappa.dead_letters (
    id          bigserial PRIMARY KEY,
    source_id   integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    kind        text NOT NULL DEFAULT 'dead_letter' CHECK (kind IN ('dead_letter', 'gap')),
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    last_offset bigint,                     -- gaps: the last missing offset
    key         bytea,
    payload     bytea,
    error       text NOT NULL,
    sqlstate    text,
    "when"      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'gap') = (last_offset IS NOT NULL))
);
CREATE INDEX ON kappa.dead_letters (source_id, partition, "offset");

-- A source restored from a dump (a row not inserted by create_kafka_source)
-- arrives paused: a restore loads the catalog, offsets, views and rows in
-- separate transactions, and a copy of a database should not start reading
-- its original's topics by itself.  kappa.resume_source() starts it.
CREATE FUNCTION kappa.source_arrives_paused()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_source_arrives_paused'
LANGUAGE C;
CREATE TRIGGER restored_sources_arrive_paused
  BEFORE INSERT ON kappa.source_catalog
  FOR EACH ROW EXECUTE FUNCTION kappa.source_arrives_paused();

SELECT pg_catalog.pg_extension_config_dump('kappa.source_catalog', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.source_catalog_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.source_offsets', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.source_key_positions', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.dead_letters_id_seq', '');

REVOKE ALL ON kappa.source_catalog, kappa.source_offsets, kappa.source_status,
              kappa.dead_letters, kappa.source_key_positions FROM PUBLIC;
-- pg_dump dumps these tables and sequences: the database owner may
GRANT SELECT ON kappa.source_catalog, kappa.source_offsets, kappa.dead_letters,
                kappa.source_key_positions
  TO pg_database_owner;
GRANT SELECT ON SEQUENCE kappa.source_catalog_id_seq, kappa.dead_letters_id_seq
  TO pg_database_owner;

-- Source functions (C; they check privileges as the caller and write the
-- catalog as the extension's owner).
CREATE FUNCTION kappa.create_kafka_source(name text,
                                          target text,
                                          topic text,
                                          server text DEFAULT NULL,
                                          brokers text DEFAULT NULL,
                                          format text DEFAULT 'json',
                                          start text DEFAULT 'earliest',
                                          on_data_loss text DEFAULT 'fail',
                                          parallelism integer DEFAULT 1,
                                          options jsonb DEFAULT '{}',
                                          envelope text DEFAULT 'none',
                                          key_format text DEFAULT 'json',
                                          order_by text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_create_kafka_source_0_3'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.create_kafka_source(text, text, text, text, text, text, text, text, integer, jsonb, text, text, text) IS
  'create a Kafka source: background workers consume a topic into a stream or table, exactly once';

CREATE FUNCTION kappa.pause_source(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_pause_source'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION kappa.resume_source(name text, on_data_loss text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_resume_source_0_2'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION kappa.drop_source(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_drop_source'
LANGUAGE C STRICT VOLATILE;

-- Rewinding a source into a table (src/kafka_rewind.c, docs/kafka.md
-- "Rewinding a source"): its offsets move to 'earliest', 'latest', a time
-- or explicit offsets {"partition": offset}, in the caller's transaction;
-- returns the new offsets.  POSITION is a keyword that PostgreSQL does not
-- take as an unquoted parameter name: call positionally, or "position" =>.
CREATE FUNCTION kappa.rewind_source(name text, "position" text,
                                    truncate_target boolean DEFAULT false)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_rewind_source'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION kappa.rewind_source(name text, "position" timestamptz,
                                    truncate_target boolean DEFAULT false)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_rewind_source'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

CREATE FUNCTION kappa.rewind_source(name text, "position" jsonb,
                                    truncate_target boolean DEFAULT false)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kappa_rewind_source'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.rewind_source(text, text, boolean) IS
  'move a Kafka source into a table to earliest, latest, a timestamptz or jsonb {"partition": offset}; truncate_target for envelope none';
COMMENT ON FUNCTION kappa.rewind_source(text, timestamptz, boolean) IS
  'move a Kafka source into a table to the first message at or after a time in each partition';
COMMENT ON FUNCTION kappa.rewind_source(text, jsonb, boolean) IS
  'move a Kafka source into a table to the offsets {"partition": offset} given';

-- Options with secrets replaced, unless the caller is the owner (or a member
-- of it) or a superuser.
CREATE FUNCTION kappa.mask_options(options jsonb, owner oid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE
         WHEN pg_has_role(owner, 'USAGE') THEN options
         ELSE coalesce((SELECT jsonb_object_agg(k,
                                 CASE WHEN kappa.option_is_secret(k)
                                      THEN '"********"'::jsonb ELSE v END)
                          FROM jsonb_each(options) AS e(k, v)), '{}'::jsonb)
       END
$$;

-- Why the launcher could not start a source's workers (shared memory).
CREATE FUNCTION kappa.launcher_problems(
    OUT source_id integer, OUT slot integer, OUT problem text, OUT since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kappa_launcher_problems'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION kappa.dead_letter_alert()
RETURNS double precision
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT coalesce(nullif(current_setting('kappa.dead_letter_alert', true), '')::float8, 0.5) $$;

CREATE VIEW kappa.source_partitions WITH (security_barrier) AS
SELECT s.name AS source,
       o.partition,
       o.next_offset AS committed_offset,
       o.high_watermark,
       greatest(o.high_watermark - o.next_offset, 0) AS lag,
       o.updated_at
  FROM kappa.source_catalog s
  JOIN kappa.source_offsets o ON o.source_id = s.id;

CREATE VIEW kappa.sources WITH (security_barrier) AS
SELECT s.name AS source,
       CASE
         WHEN s.paused THEN 'paused'
         WHEN st.live = 0 AND st.last_state = 'failed' THEN 'failed'
         WHEN st.live = 0 THEN 'stopped'
         WHEN st.state = 'failed' THEN 'failed'
         -- waiting for the broker or the schema registry: nothing flows
         WHEN st.state = 'retrying' THEN 'retrying'
         WHEN st.assigned < st.in_topic THEN 'degraded'
         WHEN st.dead_letter_share > kappa.dead_letter_alert() THEN 'degraded'
         ELSE st.state
       END AS state,
       s.owner::regrole AS owner,
       s.target,
       s.topic,
       s.server,
       s.brokers,
       s.format,
       s.start,
       s.on_data_loss,
       s.parallelism,
       st.live AS workers,
       st.assigned AS partitions,
       st.in_topic AS partitions_in_topic,
       o.committed_offsets,
       o.high_watermarks,
       o.lag,
       st.messages,
       st.bytes,
       st.messages_per_sec,
       st.bytes_per_sec,
       st.dead_letters,
       st.dead_letters_per_sec,
       st.dead_letter_share,
       st.recorded_gaps,
       st.lost_messages,
       st.last_batch_at,
       CASE
         WHEN NOT s.paused AND st.live > 0 AND st.state NOT IN ('failed', 'retrying')
              AND st.assigned < st.in_topic
           THEN format('%s of %s partitions of topic "%s" are not being read%s',
                       st.in_topic - st.assigned, st.in_topic, s.topic,
                       coalesce(': ' || lp.problem, ''))
         WHEN NOT s.paused AND st.live > 0 AND st.state NOT IN ('failed', 'retrying')
              AND st.dead_letter_share > kappa.dead_letter_alert()
           THEN format('%s%% of the messages of the last minute went to kappa.errors (kappa.dead_letter_alert is %s%%)%s',
                       round((100 * st.dead_letter_share)::numeric, 1),
                       round((100 * kappa.dead_letter_alert())::numeric, 1),
                       coalesce('; the last one: ' ||
                                (SELECT d.error FROM kappa.dead_letters d
                                  WHERE d.source_id = s.id AND d.kind = 'dead_letter'
                                  ORDER BY d.id DESC LIMIT 1), ''))
         WHEN NOT s.paused AND st.live = 0 AND lp.problem IS NOT NULL
           THEN lp.problem
         ELSE st.last_error
       END AS last_error,
       st.last_error_at,
       kappa.mask_options(s.options, s.owner) AS options,
       s.created_at,
       s.envelope,
       s.key_format,
       s.order_by,
       st.out_of_order,
       st.schema_ids,
       st.last_schema_id,
       st.drift
  FROM kappa.source_catalog s
  LEFT JOIN LATERAL (
    SELECT array_agg(next_offset ORDER BY partition) AS committed_offsets,
           array_agg(high_watermark ORDER BY partition) AS high_watermarks,
           sum(greatest(high_watermark - next_offset, 0))::bigint AS lag
      FROM kappa.source_offsets WHERE source_id = s.id) o ON true
  LEFT JOIN LATERAL (
    SELECT string_agg(format('worker %s: %s', l.slot, l.problem), '; ' ORDER BY l.slot) AS problem
      FROM kappa.launcher_problems() l WHERE l.source_id = s.id) lp ON true
  LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE a.pid IS NOT NULL)::integer AS live,
           -- the worst state among live workers
           (array_agg(ss.state ORDER BY
                        CASE ss.state WHEN 'running' THEN 3 WHEN 'idle' THEN 4
                                      WHEN 'starting' THEN 2 WHEN 'failed' THEN 0
                                      ELSE 1 END)
              FILTER (WHERE a.pid IS NOT NULL))[1] AS state,
           (array_agg(ss.state ORDER BY ss.updated_at DESC))[1] AS last_state,
           coalesce(sum(cardinality(ss.partitions)) FILTER (WHERE a.pid IS NOT NULL), 0)::integer
             AS assigned,
           max(ss.partitions_in_topic) FILTER (WHERE a.pid IS NOT NULL) AS in_topic,
           coalesce(sum(ss.messages), 0)::bigint AS messages,
           coalesce(sum(ss.bytes), 0)::bigint AS bytes,
           coalesce(sum(ss.messages_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0) AS messages_per_sec,
           coalesce(sum(ss.bytes_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0) AS bytes_per_sec,
           (SELECT count(*) FROM kappa.dead_letters d
             WHERE d.source_id = s.id AND d.kind = 'dead_letter') AS dead_letters,
           coalesce(sum(ss.dead_letters_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0)
             AS dead_letters_per_sec,
           max(ss.dead_letter_share) FILTER (WHERE a.pid IS NOT NULL) AS dead_letter_share,
           (SELECT count(*) FROM kappa.dead_letters d
             WHERE d.source_id = s.id AND d.kind = 'gap') AS recorded_gaps,
           (SELECT coalesce(sum(d.last_offset - d."offset" + 1), 0)::bigint FROM kappa.dead_letters d
             WHERE d.source_id = s.id AND d.kind = 'gap') AS lost_messages,
           max(ss.last_batch_at) AS last_batch_at,
           coalesce(sum(ss.out_of_order), 0)::bigint AS out_of_order,
           (array_agg(ss.last_error ORDER BY ss.last_error_at DESC NULLS LAST))[1] AS last_error,
           max(ss.last_error_at) AS last_error_at,
           (SELECT array_agg(DISTINCT i ORDER BY i)
              FROM kappa.source_status s2 CROSS JOIN LATERAL unnest(s2.schema_ids) AS i
             WHERE s2.source_id = s.id) AS schema_ids,
           (array_agg(ss.last_schema_id ORDER BY ss.last_batch_at DESC NULLS LAST)
              FILTER (WHERE ss.last_schema_id IS NOT NULL))[1] AS last_schema_id,
           coalesce(sum(ss.drift), 0)::bigint AS drift
      FROM kappa.source_status ss
      -- by pid only: other roles see no backend_type of the owner's workers
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = ss.pid
     WHERE ss.source_id = s.id) st ON true;

-- Dead letters and recorded gaps, visible to the owner of their source (and
-- superusers).
CREATE VIEW kappa.errors WITH (security_barrier) AS
SELECT s.name AS source,
       d.kind,
       d.topic,
       d.partition,
       d."offset",
       d.last_offset,
       CASE WHEN d.kind = 'gap' THEN d.last_offset - d."offset" + 1 ELSE 1 END AS messages,
       d.key,
       d.payload,
       d.error,
       d."when",
       d.sqlstate,
       d.id
  FROM kappa.dead_letters d
  JOIN kappa.source_catalog s ON s.id = d.source_id
 WHERE pg_catalog.pg_has_role(s.owner, 'USAGE');

-- Kafka servers, and whether the current role may use them.
CREATE VIEW kappa.kafka_servers AS
SELECT srv.srvname AS server,
       pg_catalog.pg_get_userbyid(srv.srvowner) AS owner,
       (SELECT o.option_value FROM pg_catalog.pg_options_to_table(srv.srvoptions) o
         WHERE o.option_name = 'brokers') AS brokers,
       pg_catalog.has_server_privilege(srv.oid, 'USAGE') AS usable
  FROM pg_catalog.pg_foreign_server srv
  JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = srv.srvfdw
 WHERE w.fdwname = 'kappa_kafka';

GRANT SELECT ON kappa.sources, kappa.source_partitions, kappa.errors, kappa.kafka_servers
  TO PUBLIC;

-- A source whose target is dropped goes with it; a server sources use
-- cannot be dropped or renamed from under them.
CREATE FUNCTION kappa.on_sql_drop_sources()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    IF to_regclass('kappa.source_catalog') IS NULL THEN
        RETURN;
    END IF;
    FOR s IN SELECT sc.name, o.object_name
               FROM pg_event_trigger_dropped_objects() o
               JOIN kappa.source_catalog sc ON sc.server = o.object_name
              WHERE o.object_type = 'server'
    LOOP
        RAISE EXCEPTION 'cannot drop server % because kafka source % uses it', s.object_name, s.name
              USING ERRCODE = 'dependent_objects_still_exist',
                    HINT = 'Drop the source first with kappa.drop_source().';
    END LOOP;
    FOR s IN DELETE FROM kappa.source_catalog
              WHERE target::oid IN (SELECT objid FROM pg_event_trigger_dropped_objects()
                                     WHERE classid = 'pg_class'::regclass AND objsubid = 0)
          RETURNING name
    LOOP
        RAISE NOTICE 'drop cascades to kafka source %', s.name;
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER kappa_sql_drop_sources ON sql_drop
  EXECUTE FUNCTION kappa.on_sql_drop_sources();

CREATE FUNCTION kappa.on_alter_server()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
BEGIN
    IF to_regclass('kappa.source_catalog') IS NULL THEN
        RETURN;
    END IF;
    FOR s IN SELECT sc.name, sc.server FROM kappa.source_catalog sc
              WHERE sc.server IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM pg_foreign_server f WHERE f.srvname = sc.server)
    LOOP
        RAISE EXCEPTION 'cannot rename server % because kafka source % uses it', s.server, s.name
              USING ERRCODE = 'dependent_objects_still_exist',
                    HINT = 'Drop the source first with kappa.drop_source().';
    END LOOP;
END;
$$;

CREATE EVENT TRIGGER kappa_alter_server ON ddl_command_end
  WHEN TAG IN ('ALTER SERVER')
  EXECUTE FUNCTION kappa.on_alter_server();
