-- Part 50: Kafka sources, their offsets, status and dead letters.
--
-- The tables are written only by pg_kappa's functions and workers (which
-- switch to the catalog owner for that), never directly by users: PUBLIC has
-- no privilege on them.  Users read them through kappa.sources,
-- kappa.source_partitions and kappa.errors, which mask secrets and show dead
-- letters only to the source's owner.

CREATE TABLE kappa.source_catalog (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    owner       regrole NOT NULL,           -- the role the workers run as
    target      regclass NOT NULL,          -- a stream or an ordinary table
    topic       text NOT NULL,
    brokers     text NOT NULL,
    format      text NOT NULL,
    start       text NOT NULL,              -- earliest | latest | a timestamptz
    parallelism integer NOT NULL CHECK (parallelism BETWEEN 1 AND 64),
    options     jsonb NOT NULL DEFAULT '{}',
    paused      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The next offset to consume per partition.  A worker updates its rows in the
-- same transaction as the rows (and dead letters) they cover, and only if
-- they still hold the offset it started the batch from.
CREATE TABLE kappa.source_offsets (
    source_id       integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL,
    high_watermark  bigint,                 -- last one seen by the worker
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, partition)
);

-- Worker status, one row per source and parallelism slot (not dumped).
CREATE TABLE kappa.source_status (
    source_id       integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    slot            integer NOT NULL,
    pid             integer,
    state           text NOT NULL,
    partitions      integer[],
    messages        bigint NOT NULL DEFAULT 0,
    bytes           bigint NOT NULL DEFAULT 0,
    dead_letters    bigint NOT NULL DEFAULT 0,
    batches         bigint NOT NULL DEFAULT 0,
    messages_per_sec double precision NOT NULL DEFAULT 0,
    bytes_per_sec   double precision NOT NULL DEFAULT 0,
    last_batch_at   timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, slot)
);

-- Dead letters: messages that could not be decoded or stored, with their raw
-- bytes and coordinates.  Nothing is silently dropped.
CREATE TABLE kappa.dead_letters (
    id          bigserial PRIMARY KEY,
    source_id   integer NOT NULL REFERENCES kappa.source_catalog (id) ON DELETE CASCADE,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    key         bytea,
    payload     bytea,
    error       text NOT NULL,
    sqlstate    text,
    "when"      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON kappa.dead_letters (source_id, partition, "offset");

SELECT pg_catalog.pg_extension_config_dump('kappa.source_catalog', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.source_catalog_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.source_offsets', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.dead_letters_id_seq', '');

REVOKE ALL ON kappa.source_catalog, kappa.source_offsets, kappa.source_status,
              kappa.dead_letters FROM PUBLIC;

-- Source functions (C; they check privileges as the caller and write the
-- catalog as its owner).
CREATE FUNCTION kappa.create_kafka_source(name text,
                                          target text,
                                          topic text,
                                          brokers text,
                                          format text DEFAULT 'json',
                                          start text DEFAULT 'earliest',
                                          parallelism integer DEFAULT 1,
                                          options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_create_kafka_source'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION kappa.create_kafka_source(text, text, text, text, text, text, integer, jsonb) IS
  'create a Kafka source: background workers consume a topic into a stream or table, exactly once';

CREATE FUNCTION kappa.pause_source(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_pause_source'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION kappa.resume_source(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_resume_source'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION kappa.drop_source(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_drop_source'
LANGUAGE C STRICT VOLATILE;

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
                                 CASE WHEN k ~* '(password|secret)'
                                        OR k ILIKE 'sasl.oauthbearer.%'
                                      THEN '"********"'::jsonb ELSE v END)
                          FROM jsonb_each(options) AS e(k, v)), '{}'::jsonb)
       END
$$;

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
         ELSE st.state
       END AS state,
       s.owner::regrole AS owner,
       s.target,
       s.topic,
       s.brokers,
       s.format,
       s.start,
       s.parallelism,
       st.live AS workers,
       o.partitions,
       o.committed_offsets,
       o.high_watermarks,
       o.lag,
       st.messages,
       st.bytes,
       st.messages_per_sec,
       st.bytes_per_sec,
       st.dead_letters,
       st.last_batch_at,
       st.last_error,
       st.last_error_at,
       kappa.mask_options(s.options, s.owner) AS options,
       s.created_at
  FROM kappa.source_catalog s
  LEFT JOIN LATERAL (
    SELECT count(*)::integer AS partitions,
           array_agg(next_offset ORDER BY partition) AS committed_offsets,
           array_agg(high_watermark ORDER BY partition) AS high_watermarks,
           sum(greatest(high_watermark - next_offset, 0))::bigint AS lag
      FROM kappa.source_offsets WHERE source_id = s.id) o ON true
  LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE a.pid IS NOT NULL)::integer AS live,
           -- the worst state among live workers
           (array_agg(ss.state ORDER BY
                        CASE ss.state WHEN 'running' THEN 2 WHEN 'idle' THEN 3
                                      WHEN 'starting' THEN 1 ELSE 0 END)
              FILTER (WHERE a.pid IS NOT NULL))[1] AS state,
           (array_agg(ss.state ORDER BY ss.updated_at DESC))[1] AS last_state,
           coalesce(sum(ss.messages), 0)::bigint AS messages,
           coalesce(sum(ss.bytes), 0)::bigint AS bytes,
           coalesce(sum(ss.messages_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0) AS messages_per_sec,
           coalesce(sum(ss.bytes_per_sec) FILTER (WHERE a.pid IS NOT NULL), 0) AS bytes_per_sec,
           (SELECT count(*) FROM kappa.dead_letters d WHERE d.source_id = s.id) AS dead_letters,
           max(ss.last_batch_at) AS last_batch_at,
           (array_agg(ss.last_error ORDER BY ss.last_error_at DESC NULLS LAST))[1] AS last_error,
           max(ss.last_error_at) AS last_error_at
      FROM kappa.source_status ss
      -- by pid only: other roles see no backend_type of the owner's workers
      LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = ss.pid
     WHERE ss.source_id = s.id) st ON true;

-- Dead letters, visible to the owner of their source (and superusers).
CREATE VIEW kappa.errors WITH (security_barrier) AS
SELECT s.name AS source,
       d.topic,
       d.partition,
       d."offset",
       d.key,
       d.payload,
       d.error,
       d."when",
       d.sqlstate,
       d.id
  FROM kappa.dead_letters d
  JOIN kappa.source_catalog s ON s.id = d.source_id
 WHERE pg_catalog.pg_has_role(s.owner, 'USAGE');

GRANT SELECT ON kappa.sources, kappa.source_partitions, kappa.errors TO PUBLIC;

-- A source whose target is dropped goes with it.
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
