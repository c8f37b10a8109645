/*-------------------------------------------------------------------------
 *
 * view_define.c
 *	  Creating and dropping continuous views, and the relations that store
 *	  them: kappa.create_view, kappa.drop_view, kappa.view_stats.
 *
 * What a view query may contain is decided by view_shape.c; this file
 * creates the definition, the materialization and the user-facing view
 * (see view.h for their layout), records the view in kappa.view_catalog and
 * has the view runtime backfill it (KappaViewBackfill).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "commands/defrem.h"
#include "commands/sequence.h"
#include "commands/tablecmds.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parse_relation.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kappa_errcodes.h"
#include "util.h"
#include "view.h"

/* Column definition text "name type [COLLATE x]". */
static void
define_append_column(StringInfo buf, const char *name, Oid type, int32 typmod, Oid collation)
{
	appendStringInfo(buf, "%s %s", quote_identifier(name),
					 format_type_with_typemod(type, typmod));
	if (OidIsValid(collation) && collation != get_typcollation(type))
		appendStringInfo(buf, " COLLATE %s", generate_collation_name(collation));
}

/* Create the materialization table; returns its OID. */
static Oid
define_mat_table(KappaViewShape *shape, const char *matname)
{
	StringInfoData buf;
	ListCell   *lc;
	int			i;
	const char *qname = quote_qualified_identifier(KAPPA_DATA_SCHEMA, matname);

	initStringInfo(&buf);
	appendStringInfo(&buf, "CREATE TABLE %s (", qname);
	if (shape->nkeys == 0)
		appendStringInfoString(&buf, "k_0 integer NOT NULL DEFAULT 0, ");
	i = 0;
	foreach(lc, shape->keyExprs)
	{
		Node	   *key = lfirst(lc);

		define_append_column(&buf, psprintf("k_%d", KAPPA_KEY_COLUMN(shape->groupingSets, i)),
							 exprType(key), exprTypmod(key), exprCollation(key));
		appendStringInfoString(&buf, i == 0 && shape->groupingSets ? " NOT NULL, " : ", ");
		i++;
	}
	i = 0;
	foreach(lc, shape->aggrefs)
	{
		define_append_column(&buf, psprintf("s_%d", ++i),
							 KappaAggStateType(lfirst(lc)), -1, InvalidOid);
		appendStringInfoString(&buf, ", ");
	}
	i = 0;
	foreach(lc, shape->outExprs)
	{
		Node	   *out = lfirst(lc);

		define_append_column(&buf, psprintf("c_%d", ++i), exprType(out),
							 exprTypmod(out), exprCollation(out));
		appendStringInfoString(&buf, ", ");
	}
	if (shape->having)
		appendStringInfoString(&buf, "h boolean, ");
	i = 0;
	foreach(lc, shape->sortExprs)
	{
		Node	   *sortexpr = lfirst(lc);

		define_append_column(&buf, psprintf("o_%d", ++i), exprType(sortexpr),
							 exprTypmod(sortexpr), exprCollation(sortexpr));
		appendStringInfoString(&buf, ", ");
	}
	appendStringInfoString(&buf, "updated_at timestamptz NOT NULL) WITH (fillfactor = 70)");
	KappaExecSql(buf.data);

	resetStringInfo(&buf);
	appendStringInfo(&buf, "CREATE UNIQUE INDEX ON %s (", qname);
	if (shape->nkeys == 0)
		appendStringInfoString(&buf, "k_0");
	for (i = 0; i < shape->nkeys; i++)
		appendStringInfo(&buf, "%sk_%d", i > 0 ? ", " : "",
						 KAPPA_KEY_COLUMN(shape->groupingSets, i));
	appendStringInfoString(&buf, ") NULLS NOT DISTINCT");
	KappaExecSql(buf.data);

	/* only pg_kappa's engine writes it (it bypasses triggers) */
	KappaExecSql(psprintf("CREATE TRIGGER kappa_engine_only "
						  "BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s "
						  "FOR EACH STATEMENT EXECUTE FUNCTION kappa.refuse_materialization_change()",
						  qname));

	return get_relname_relid(matname, get_namespace_oid(KAPPA_DATA_SCHEMA, false));
}

/* ORDER BY item text for the user-facing view. */
static void
define_append_order_item(StringInfo buf, int i, SortGroupClause *sgc, Oid type)
{
	Oid			opfamily;
	Oid			opcintype;
	int16		strategy;
	Oid			defaultOpclass = GetDefaultOpClass(type, BTREE_AM_OID);

	appendStringInfo(buf, "o_%d", i);
	if (get_ordering_op_properties(sgc->sortop, &opfamily, &opcintype, &strategy) &&
		OidIsValid(defaultOpclass) &&
		opfamily == get_opclass_family(defaultOpclass))
		appendStringInfoString(buf, strategy == BTGreaterStrategyNumber ? " DESC" : " ASC");
	else
	{
		HeapTuple	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(sgc->sortop));
		Form_pg_operator oper;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for operator %u", sgc->sortop);
		oper = (Form_pg_operator) GETSTRUCT(tup);
		appendStringInfo(buf, " USING OPERATOR(%s.%s)",
						 quote_identifier(get_namespace_name(oper->oprnamespace)),
						 NameStr(oper->oprname));
		ReleaseSysCache(tup);
	}
	appendStringInfoString(buf, sgc->nulls_first ? " NULLS FIRST" : " NULLS LAST");
}

/*
 * KappaDefineUserView creates the user-facing view 'qualifiedName' over the
 * materialization 'matRelid' of a view of shape 'shape', as the current
 * user; with 'replace', redefines it (CREATE OR REPLACE VIEW: its grants,
 * comments and dependents stay).
 */
void
KappaDefineUserView(KappaViewShape *shape, const char *qualifiedName, Oid matRelid,
					bool replace)
{
	StringInfoData buf;
	ListCell   *lc;
	ListCell   *lc2;
	int			i;

	initStringInfo(&buf);
	appendStringInfo(&buf, "CREATE %sVIEW %s AS SELECT ", replace ? "OR REPLACE " : "",
					 qualifiedName);
	i = 0;
	foreach(lc, shape->outNames)
	{
		appendStringInfo(&buf, "%sc_%d AS %s", i > 0 ? ", " : "", i + 1,
						 quote_identifier(lfirst(lc)));
		i++;
	}
	appendStringInfo(&buf, " FROM %s",
					 quote_qualified_identifier(KAPPA_DATA_SCHEMA,
												get_rel_name(matRelid)));
	if (shape->groupingSets)
	{
		/*
		 * a grouping set listed n times gives its groups n times in plain
		 * SQL; the view stores them once
		 */
		bool		repeated = false;
		ListCell   *lc3;

		forboth(lc, shape->gsetIds, lc3, shape->gsetCopies)
		{
			if (lfirst_int(lc3) == 1)
				continue;
			appendStringInfoString(&buf, repeated ? " " :
								   " CROSS JOIN LATERAL pg_catalog.generate_series(1, CASE");
			appendStringInfo(&buf, " WHEN k_0 OPERATOR(pg_catalog.=) %d THEN %d",
							 lfirst_int(lc), lfirst_int(lc3));
			repeated = true;
		}
		if (repeated)
			appendStringInfoString(&buf, " ELSE 1 END) AS kappa_copies(copy)");
	}
	if (shape->having)
		appendStringInfoString(&buf, " WHERE h");
	i = 0;
	forboth(lc, shape->sortClauses, lc2, shape->sortExprs)
	{
		appendStringInfoString(&buf, i == 0 ? " ORDER BY " : ", ");
		define_append_order_item(&buf, ++i, lfirst(lc), exprType(lfirst(lc2)));
	}
	if (shape->limitCount && !((Const *) shape->limitCount)->constisnull)
		appendStringInfo(&buf, " LIMIT " INT64_FORMAT,
						 DatumGetInt64(((Const *) shape->limitCount)->constvalue));
	if (shape->limitOffset && !((Const *) shape->limitOffset)->constisnull)
		appendStringInfo(&buf, " OFFSET " INT64_FORMAT,
						 DatumGetInt64(((Const *) shape->limitOffset)->constvalue));
	KappaExecSql(buf.data);
}

/*
 * KappaCheckViewReadPermissions checks that 'role', who will own the view,
 * may read every relation the query reads.
 */
void
KappaCheckViewReadPermissions(Query *query, Oid role)
{
	ListCell   *lc;

	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		if (rte->rtekind != RTE_RELATION)
			continue;
		if (pg_class_aclcheck(rte->relid, role, ACL_SELECT) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, get_relkind_objtype(get_rel_relkind(rte->relid)),
						   get_rel_name(rte->relid));
	}
}

/*
 * KappaDefineVersion creates the definition (a plain view of 'deftext') and
 * the materialization of a version of the continuous view named 'name' of
 * shape 'shape' in kappa_data, owned by 'owner'; returns the number in
 * their names (kappa.view_catalog_id_seq) and sets *defRelid, *matRelid.
 */
int64
KappaDefineVersion(const char *name, KappaViewShape *shape, const char *deftext,
				   Oid owner, Oid *defRelid, Oid *matRelid)
{
	KappaSavedUser saved;
	int64		id;
	char	   *defname;
	char	   *matname;

	KappaBecomeExtensionOwner(&saved);
	id = nextval_internal(get_relname_relid("view_catalog_id_seq",
											get_namespace_oid(KAPPA_SCHEMA, false)),
						  false);
	defname = KappaDataRelName(name, psprintf("_def_" INT64_FORMAT, id));
	matname = KappaDataRelName(name, psprintf("_mat_" INT64_FORMAT, id));
	KappaExecSql(psprintf("CREATE VIEW %s AS %s",
						  quote_qualified_identifier(KAPPA_DATA_SCHEMA, defname),
						  deftext));
	*defRelid = get_relname_relid(defname, get_namespace_oid(KAPPA_DATA_SCHEMA, false));
	*matRelid = define_mat_table(shape, matname);

	/* the view's owner owns what stores it */
	ATExecChangeOwner(*defRelid, owner, false, AccessExclusiveLock);
	ATExecChangeOwner(*matRelid, owner, false, AccessExclusiveLock);
	KappaRestoreUser(&saved);
	CommandCounterIncrement();
	return id;
}

PG_FUNCTION_INFO_V1(kappa_create_view);

/*
 * KappaDeparseQualified returns the text of a query analyzed as its author
 * meant it, with every name qualified (deparsed with search_path pinned),
 * so that creating the definition view from it as another role reads the
 * same objects.
 */
char *
KappaDeparseQualified(Query *query)
{
	KappaSavedUser saved;
	char	   *querytext;

	KappaBecomeUser(GetUserId(), &saved);
	querytext = pg_get_querydef(query, false);
	KappaRestoreUser(&saved);
	return querytext;
}

/*
 * kappa.create_view(name, query) creates a continuous view and returns it.
 * Rows already retained by the stream are applied at once (backfill).
 */
Datum
kappa_create_view(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(1));
	RangeVar   *rv = KappaMakeRangeVar(name);
	Oid			nspid;
	Query	   *query;
	KappaViewShape *shape;
	int64		id;
	char	   *deftext;
	Oid			defRelid;
	Oid			matRelid;
	Oid			viewRelid;
	Oid			creator = GetUserId();
	char	   *qualifiedName;
	KappaSavedUser saved;
	KappaStreamViews *sviews;
	ListCell   *lc;
	Oid			argtypes[5] = {INT4OID, OIDOID, OIDOID, OIDOID, OIDOID};
	Datum		args[5];
	Relation	streamRel;

	KappaStreamServerOid(false);
	nspid = RangeVarGetCreationNamespace(rv);
	if (OidIsValid(get_relname_relid(rv->relname, nspid)))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("relation \"%s\" already exists", rv->relname),
				 errhint("Choose another name, or drop the existing relation first.")));
	qualifiedName = quote_qualified_identifier(get_namespace_name(nspid), rv->relname);

	/* the query as the caller means it, with the caller's search_path */
	query = KappaParseViewQuery(sql, true);
	shape = KappaBuildViewShape(query, sql);
	KappaCheckViewReadPermissions(query, GetUserId());
	deftext = KappaDeparseQualified(KappaParseViewQuery(sql, false));

	/*
	 * A view over a table gives the table triggers, which needs its owner's
	 * consent as CREATE TRIGGER does: the TRIGGER privilege.
	 */
	if (shape->factIsTable &&
		pg_class_aclcheck(shape->streamRelid, GetUserId(), ACL_TRIGGER) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create a continuous view over table %s",
						get_rel_name(shape->streamRelid)),
				 errdetail("A continuous view over a table installs triggers on it that apply every change of the table to the view."),
				 errhint("The table's owner can grant the TRIGGER privilege on it, or create the view.")));

	/*
	 * Wait for running writers, and block new ones until we commit (a table's
	 * lock also serializes the creation of its triggers).
	 */
	streamRel = table_open(shape->streamRelid,
						   shape->factIsTable ? ShareRowExclusiveLock : ShareLock);

	/* definition and materialization live in kappa_data */
	id = KappaDefineVersion(rv->relname, shape, deftext, creator,
							&defRelid, &matRelid);

	KappaBecomeUser(creator, &saved);
	KappaDefineUserView(shape, qualifiedName, matRelid, false);
	KappaRestoreUser(&saved);
	viewRelid = get_relname_relid(rv->relname, nspid);

	args[0] = Int32GetDatum((int32) id);
	args[1] = ObjectIdGetDatum(viewRelid);
	args[2] = ObjectIdGetDatum(shape->streamRelid);
	args[3] = ObjectIdGetDatum(matRelid);
	args[4] = ObjectIdGetDatum(defRelid);
	KappaBecomeExtensionOwner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("INSERT INTO kappa.view_catalog (id, view, stream, mat, def) "
							  "VALUES ($1, $2, $3, $4, $5)",
							  5, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into kappa.view_catalog");
	SPI_finish();
	KappaRestoreUser(&saved);
	/* every backend, this one included at the next command, reloads */
	KappaStreamViewsInvalidate(shape->streamRelid);
	CommandCounterIncrement();
	if (shape->factIsTable)
	{
		KappaTableCaptureInstall(shape->streamRelid);
		CommandCounterIncrement();
	}

	/*
	 * backfill: retained rows, or the one row of a global aggregate; for a
	 * table, the delta query over the table is the whole table
	 */
	sviews = KappaStreamViewsGet(shape->streamRelid);
	foreach(lc, sviews->views)
	{
		KappaViewInfo *view = lfirst(lc);

		if (view->viewRelid == viewRelid)
			KappaViewBackfill(view, OidIsValid(sviews->backingRelid), NULL);
	}
	KappaStreamViewsRelease(sviews);

	table_close(streamRel, NoLock);
	PG_RETURN_OID(viewRelid);
}

/*
 * Look up a continuous view by name; errors if it is not one.  Sets
 * *streamRelid to its stream.
 */
static Oid
define_lookup_view(const char *name, Oid *streamRelid)
{
	RangeVar   *rv = KappaMakeRangeVar(name);
	Oid			relid = RangeVarGetRelid(rv, AccessShareLock, false);
	KappaViewRow row;

	if (!KappaFindView("view", relid, &row))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a continuous view", name),
				 errhint("Use DROP VIEW or DROP TABLE for other relations.")));
	*streamRelid = row.stream;
	return relid;
}

PG_FUNCTION_INFO_V1(kappa_drop_view);

/*
 * kappa.drop_view(name) drops a continuous view with its materialization
 * and definition (the event trigger removes the pieces and the catalog row).
 */
Datum
kappa_drop_view(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			streamRelid = InvalidOid;
	Oid			relid = define_lookup_view(name, &streamRelid);
	Relation	streamRel;

	/* wait for running writers so that none applies to a dropped view */
	streamRel = table_open(streamRelid,
						   get_rel_relkind(streamRelid) == RELKIND_RELATION ?
						   ShareRowExclusiveLock : ShareLock);
	KappaExecSql(psprintf("DROP VIEW %s",
						  quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
													 get_rel_name(relid))));
	KappaStreamViewsInvalidate(streamRelid);
	table_close(streamRel, NoLock);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(kappa_view_query);

/*
 * kappa.view_query(view) returns the query of a continuous view's live
 * version as committed now -- a reader whose snapshot predates a rebuild's
 * swap would otherwise name a definition the swap dropped -- or NULL if it
 * is not a continuous view.
 */
Datum
kappa_view_query(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	KappaViewRow row;

	for (int tries = 0; tries < 100; tries++)
	{
		Datum		query;

		if (!KappaFindView("view", relid, &row))
			PG_RETURN_NULL();
		LockRelationOid(row.def, AccessShareLock);
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(row.def)))
		{
			/* swapped meanwhile: the new version's definition */
			UnlockRelationOid(row.def, AccessShareLock);
			continue;
		}
		query = DirectFunctionCall1(pg_get_viewdef, ObjectIdGetDatum(row.def));
		UnlockRelationOid(row.def, AccessShareLock);
		PG_RETURN_DATUM(query);
	}
	PG_RETURN_NULL();
}

PG_FUNCTION_INFO_V1(kappa_view_stats);

/*
 * kappa.view_stats(view) returns the number of groups, the rows applied and
 * the last update of a continuous view; NULLs if the caller may not read
 * it.  It reads the materialization directly (no SQL runs on anyone's
 * behalf), with the query's snapshot.
 */
Datum
kappa_view_stats(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {true, true, true};
	KappaViewRow row;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK &&
		KappaFindView("view", relid, &row))
	{
		Relation	rel = try_relation_open(row.mat, AccessShareLock);

		if (rel != NULL)
		{
			AttrNumber	rowsAttno = attnameAttNum(rel, "s_1", false);

			/*
			 * With grouping sets, each set's groups hold every row: count
			 * those of one set (k_0, the set's id; the one row of a view
			 * without GROUP BY has k_0 too)
			 */
			AttrNumber	setAttno = attnameAttNum(rel, "k_0", false);
			int32		set = 0;
			bool		haveSet = false;
			AttrNumber	updatedAttno = attnameAttNum(rel, "updated_at", false);
			TableScanDesc scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
			TupleTableSlot *slot = table_slot_create(rel, NULL);
			int64		groups = 0;
			int64		rows = 0;
			TimestampTz last = 0;
			bool		haveLast = false;

			while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
			{
				bool		isnull;
				Datum		d;

				groups++;
				isnull = true;
				d = (Datum) 0;
				if (setAttno > 0)
				{
					d = slot_getattr(slot, setAttno, &isnull);
					if (!isnull && !haveSet)
					{
						set = DatumGetInt32(d);
						haveSet = true;
					}
				}
				if (rowsAttno > 0 &&
					(setAttno <= 0 || (!isnull && DatumGetInt32(d) == set)))
				{
					d = slot_getattr(slot, rowsAttno, &isnull);
					if (!isnull && pg_add_s64_overflow(rows, DatumGetInt64(d), &rows))
						ereport(ERROR,
								(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
								 errmsg("bigint out of range")));
				}
				if (updatedAttno > 0)
				{
					d = slot_getattr(slot, updatedAttno, &isnull);
					if (!isnull && (!haveLast || DatumGetTimestampTz(d) > last))
					{
						last = DatumGetTimestampTz(d);
						haveLast = true;
					}
				}
				CHECK_FOR_INTERRUPTS();
			}
			ExecDropSingleTupleTableSlot(slot);
			table_endscan(scan);
			relation_close(rel, AccessShareLock);

			values[0] = Int64GetDatum(groups);
			nulls[0] = false;
			values[1] = Int64GetDatum(rows);
			nulls[1] = false;
			values[2] = TimestampTzGetDatum(last);
			nulls[2] = !haveLast;
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
