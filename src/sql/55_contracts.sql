
-- Part 55: data contracts -- named expectations on streams and tables
-- (src/contracts.c, docs/contracts.md).

-- One row per expectation.  'rule' is the check as given; 'definition' is
-- the same expression deparsed with every name outside pg_catalog
-- qualified, which each backend parses again (as the relation's owner,
-- search_path pinned) when it loads the relation's expectations.  Text, not
-- a node tree: the rows are dumped (pg_extension_config_dump) and a node
-- tree's OIDs would not survive a restore.  'id' keys the counters in
-- shared memory (kappa.expectation_stats).
CREATE TABLE kappa.expectation_catalog (
    id            serial NOT NULL UNIQUE,
    relation      regclass NOT NULL,
    name          text NOT NULL,
    rule          text NOT NULL,
    definition    text NOT NULL,
    on_violation  text NOT NULL
                  CHECK (on_violation IN ('warn', 'dead_letter', 'fail')),
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (relation, name)
);

SELECT pg_catalog.pg_extension_config_dump('kappa.expectation_catalog', '');
SELECT pg_catalog.pg_extension_config_dump('kappa.expectation_catalog_id_seq', '');
REVOKE ALL ON kappa.expectation_catalog FROM PUBLIC;
GRANT SELECT ON kappa.expectation_catalog TO PUBLIC;
GRANT SELECT ON SEQUENCE kappa.expectation_catalog_id_seq TO pg_database_owner;

CREATE FUNCTION kappa.add_expectation(relation regclass, name text, "check" text,
                                      on_violation text DEFAULT 'warn')
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_add_expectation'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kappa.add_expectation(regclass, text, text, text) IS
  'add a named expectation (a boolean expression over the row) to a stream or table: warn, dead_letter or fail on violation';

CREATE FUNCTION kappa.drop_expectation(relation regclass, name text)
RETURNS void
AS 'MODULE_PATHNAME', 'kappa_drop_expectation'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kappa.drop_expectation(regclass, text) IS
  'drop a named expectation of a stream or table';

-- Counters in shared memory since server start (NULL when the library is
-- not preloaded).
CREATE FUNCTION kappa.expectation_stats(id integer,
    OUT rows_checked bigint, OUT rows_violating bigint,
    OUT last_violation_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'kappa_expectation_stats'
LANGUAGE C STRICT STABLE;

-- The triggers add_expectation creates on an ordinary table (and
-- drop_expectation drops with its last expectation): the row check, BEFORE
-- INSERT OR UPDATE FOR EACH ROW, named to fire after the table's other
-- BEFORE row triggers; and the statement's summary of skipped rows.
CREATE FUNCTION kappa.check_expectations()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_check_expectations'
LANGUAGE C;

CREATE FUNCTION kappa.expectations_summary()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kappa_expectations_summary'
LANGUAGE C;

-- The quality monitor.
CREATE VIEW kappa.expectations AS
SELECT e.relation,
       e.name,
       e.rule,
       e.on_violation AS action,
       s.rows_checked,
       s.rows_violating,
       s.last_violation_at,
       e.created_at
  FROM kappa.expectation_catalog e,
       LATERAL kappa.expectation_stats(e.id) s;

GRANT SELECT ON kappa.expectations TO PUBLIC;

-- A relation's expectations go with it; the triggers that check them go
-- only with the relation or its last expectation.
CREATE FUNCTION kappa.on_sql_drop_expectations()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dropped oid[];
    t record;
    rel regclass;
BEGIN
    IF to_regclass('kappa.expectation_catalog') IS NULL THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(o.objid), '{}') INTO dropped
      FROM pg_event_trigger_dropped_objects() o
     WHERE o.classid OPERATOR(pg_catalog.=) 'pg_class'::regclass
       AND o.objsubid OPERATOR(pg_catalog.=) 0;
    FOR t IN SELECT o.address_names
               FROM pg_event_trigger_dropped_objects() o
              WHERE o.object_type OPERATOR(pg_catalog.=) 'trigger'
                AND o.address_names[3] OPERATOR(pg_catalog.=)
                    ANY ('{zzz_kappa_expectations,zzz_kappa_expectations_summary}'::text[])
    LOOP
        rel := to_regclass(quote_ident(t.address_names[1]) || '.' ||
                           quote_ident(t.address_names[2]));
        IF rel IS NOT NULL AND NOT rel::oid OPERATOR(pg_catalog.=) ANY (dropped)
           AND EXISTS (SELECT FROM kappa.expectation_catalog e
                        WHERE e.relation OPERATOR(pg_catalog.=) rel::oid) THEN
            RAISE EXCEPTION 'cannot drop trigger % of table %', t.address_names[3], rel
                  USING ERRCODE = 'dependent_objects_still_exist',
                        DETAIL = 'The trigger checks the expectations of the table.',
                        HINT = 'Drop the expectations with kappa.drop_expectation(); the triggers go with the last one.';
        END IF;
    END LOOP;
    IF dropped OPERATOR(pg_catalog.<>) '{}' THEN
        DELETE FROM kappa.expectation_catalog e
         WHERE e.relation::oid OPERATOR(pg_catalog.=) ANY (dropped);
    END IF;
END;
$$;

CREATE EVENT TRIGGER kappa_sql_drop_expectations ON sql_drop
  EXECUTE FUNCTION kappa.on_sql_drop_expectations();
