/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  Creating and dropping streams (kappa.create_stream, kappa.drop_stream).
 *
 * A stream is created as a foreign table of server kappa_streams from a
 * column list given as text.  The list is parsed as the element list of a
 * CREATE TABLE and must contain only column definitions and CHECK
 * constraints, so no other SQL can ride along.  A stream with retention
 * also gets a heap table in kappa_data holding its rows plus the time each
 * arrived (kappa_arrived_at), owned by the stream's owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/skey.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/tablecmds.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"
#include "utils/rel.h"
#include "utils/lsyscache.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "util.h"

#define COLUMNS_PREFIX "CREATE TABLE kappa_columns ("

/* Report syntax errors at their position in the column list itself. */
static void
stream_columns_error_callback(void *arg)
{
	int			pos = geterrposition();
	int			prefix = strlen(COLUMNS_PREFIX);

	if (pos > prefix)
	{
		errposition(0);
		internalerrposition(pos - prefix);
		internalerrquery((const char *) arg);
	}
}

/* Parse the column list of create_stream into table elements. */
static List *
stream_parse_columns(const char *columns)
{
	char	   *sql = psprintf(COLUMNS_PREFIX "%s)", columns);
	List	   *raw;
	CreateStmt *stmt;
	ListCell   *lc;
	ErrorContextCallback errcallback;

	errcallback.callback = stream_columns_error_callback;
	errcallback.arg = (void *) columns;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	error_context_stack = errcallback.previous;

	if (list_length(raw) != 1 ||
		!IsA(linitial_node(RawStmt, raw)->stmt, CreateStmt))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid column list for a stream: %s", columns),
				 errhint("Give columns as in CREATE TABLE, e.g. 'user_id int, url text, ts timestamptz'.")));
	stmt = (CreateStmt *) linitial_node(RawStmt, raw)->stmt;
	if (stmt->inhRelations != NIL || stmt->partspec != NULL ||
		stmt->partbound != NULL || stmt->ofTypename != NULL ||
		stmt->options != NIL || stmt->oncommit != ONCOMMIT_NOOP ||
		stmt->tablespacename != NULL || stmt->accessMethod != NULL ||
		stmt->relation->relpersistence != RELPERSISTENCE_PERMANENT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid column list for a stream: %s", columns),
				 errdetail("The text continues past the column list with clauses of CREATE TABLE."),
				 errhint("Give only columns, e.g. 'user_id int, url text, ts timestamptz'.")));
	if (stmt->tableElts == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a stream needs at least one column")));
	foreach(lc, stmt->tableElts)
	{
		Node	   *elt = lfirst(lc);

		if (IsA(elt, ColumnDef))
		{
			ColumnDef  *col = (ColumnDef *) elt;
			ListCell   *lc2;

			foreach(lc2, col->constraints)
			{
				Constraint *con = lfirst(lc2);

				if (con->contype != CONSTR_NOTNULL && con->contype != CONSTR_NULL &&
					con->contype != CONSTR_DEFAULT && con->contype != CONSTR_CHECK)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("column constraint on \"%s\" is not supported on a stream",
									col->colname),
							 errdetail("Streams accept NOT NULL, DEFAULT and CHECK; they have no indexes, keys or generated columns."),
							 errhint("Enforce keys on the ordinary tables or views that consume the stream.")));
			}
			if (strncmp(col->colname, "kappa_arrived_at", NAMEDATALEN) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_RESERVED_NAME),
						 errmsg("column name \"%s\" is reserved by pg_kappa", col->colname)));
		}
		else if (IsA(elt, Constraint) && ((Constraint *) elt)->contype == CONSTR_CHECK)
			continue;
		else
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("only column definitions and CHECK constraints are allowed in the column list of a stream"),
					 errhint("Streams have no indexes, keys or inherited columns.")));
	}
	return stmt->tableElts;
}

PG_FUNCTION_INFO_V1(kappa_create_stream);

/*
 * kappa.create_stream(name, columns, retain) creates a stream and returns
 * it.  retain NULL keeps no rows; an interval such as '7 days' keeps rows
 * that long (expired by the background worker); 'infinity' keeps them all.
 * retain is text because PostgreSQL 15 has no infinite interval.
 */
Datum
kappa_create_stream(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *columns;
	RangeVar   *rv;
	Oid			nspid;
	CreateForeignTableStmt *stmt;
	Oid			relid;
	Oid			backingRelid = InvalidOid;
	bool		retainAll = false;
	Interval   *retain = NULL;
	Oid			argtypes[4] = {OIDOID, OIDOID, BOOLOID, INTERVALOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	KappaSavedUser saved;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream name and columns must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	columns = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
	{
		char	   *retainText = text_to_cstring(PG_GETARG_TEXT_PP(2));

		if (pg_strcasecmp(retainText, "infinity") == 0)
			retainAll = true;
		else
		{
			retain = DatumGetIntervalP(DirectFunctionCall3(interval_in,
														   CStringGetDatum(retainText),
														   ObjectIdGetDatum(InvalidOid),
														   Int32GetDatum(-1)));
			if (retain->month < 0 || retain->day < 0 || retain->time < 0 ||
				(retain->month == 0 && retain->day == 0 && retain->time == 0))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid retention \"%s\" for a stream", retainText),
						 errhint("Give NULL to keep no rows, 'infinity' to keep all rows, or a positive interval such as '7 days'.")));
		}
	}

	KappaStreamServerOid(false);
	rv = KappaMakeRangeVar(name);
	nspid = RangeVarGetCreationNamespace(rv);
	if (OidIsValid(get_relname_relid(rv->relname, nspid)))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("relation \"%s\" already exists", rv->relname),
				 errhint("Choose another name, or drop the existing relation first.")));

	stmt = makeNode(CreateForeignTableStmt);
	stmt->base.relation = rv;
	stmt->base.tableElts = stream_parse_columns(columns);
	stmt->base.oncommit = ONCOMMIT_NOOP;
	stmt->base.if_not_exists = false;
	stmt->servername = KAPPA_SERVER_NAME;
	KappaExecUtility((Node *) stmt, "kappa.create_stream()");
	relid = get_relname_relid(rv->relname, nspid);

	if (retain != NULL || retainAll)
	{
		char	   *backing = KappaDataRelName(rv->relname,
											   psprintf("_rows_%u", relid));

		KappaBecomeExtensionOwner(&saved);
		KappaExecSql(psprintf("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS, "
							  "kappa_arrived_at timestamptz NOT NULL DEFAULT now())",
							  quote_qualified_identifier(KAPPA_DATA_SCHEMA, backing),
							  quote_qualified_identifier(get_namespace_name(nspid),
														 rv->relname)));
		KappaExecSql(psprintf("CREATE INDEX ON %s USING brin (kappa_arrived_at)",
							  quote_qualified_identifier(KAPPA_DATA_SCHEMA, backing)));
		backingRelid = get_relname_relid(backing,
										 get_namespace_oid(KAPPA_DATA_SCHEMA, false));
		ATExecChangeOwner(backingRelid, saved.userid, false, AccessExclusiveLock);
		KappaRestoreUser(&saved);
	}

	KappaBecomeExtensionOwner(&saved);
	args[0] = ObjectIdGetDatum(relid);
	args[1] = ObjectIdGetDatum(backingRelid);
	if (!OidIsValid(backingRelid))
		nulls[1] = 'n';
	args[2] = BoolGetDatum(retainAll);
	args[3] = retain ? IntervalPGetDatum(retain) : (Datum) 0;
	if (retain == NULL)
		nulls[3] = 'n';
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("INSERT INTO kappa.stream_catalog (stream, backing, retain_all, retain) "
							  "VALUES ($1, $2, $3, $4)",
							  4, argtypes, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into kappa.stream_catalog");
	SPI_finish();
	KappaRestoreUser(&saved);

	KappaStreamViewsInvalidate(relid);
	PG_RETURN_OID(relid);
}

/* Resolve a stream name, erroring if it is not a stream. */
static Oid
stream_lookup(const char *name, LOCKMODE lockmode)
{
	Oid			relid = RangeVarGetRelid(KappaMakeRangeVar(name), lockmode, false);

	if (!KappaIsStream(relid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a stream", name),
				 errhint("Create streams with kappa.create_stream().")));
	return relid;
}

/* list_sort comparator of C strings */
static int
stream_name_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp((const char *) lfirst(a), (const char *) lfirst(b));
}

PG_FUNCTION_INFO_V1(kappa_drop_stream);

/*
 * kappa.drop_stream(name, cascade) drops a stream; with cascade, also the
 * continuous views over it.  Without cascade a stream with views is refused.
 */
Datum
kappa_drop_stream(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		cascade = PG_GETARG_BOOL(1);
	Oid			relid = stream_lookup(name, AccessExclusiveLock);
	StringInfoData views;
	Relation	catalog = KappaCatalogTable("view_catalog");
	AttrNumber	viewAttno = KappaCatalogAttnum(catalog, "view");
	ScanKeyData skey;
	TableScanDesc scan;
	TupleTableSlot *slot;
	List	   *names = NIL;
	ListCell   *lc;

	/* the views on the stream (we hold its lock) */
	initStringInfo(&views);
	ScanKeyInit(&skey, KappaCatalogAttnum(catalog, "stream"), BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	scan = table_beginscan(catalog, GetActiveSnapshot(), 1, &skey);
	slot = table_slot_create(catalog, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Oid			view = DatumGetObjectId(slot_getattr(slot, viewAttno, &isnull));

		names = lappend(names,
						DatumGetCString(DirectFunctionCall1(regclassout,
															ObjectIdGetDatum(view))));
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(catalog, AccessShareLock);
	list_sort(names, stream_name_cmp);
	foreach(lc, names)
		appendStringInfo(&views, "%s%s", views.len > 0 ? ", " : "", (char *) lfirst(lc));

	if (views.len > 0 && !cascade)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot drop stream \"%s\" because continuous views depend on it",
						get_rel_name(relid)),
				 errdetail("Continuous views on the stream: %s.", views.data),
				 errhint("Drop the views first with kappa.drop_view(), or use kappa.drop_stream(name, cascade => true).")));

	KappaExecSql(psprintf("DROP FOREIGN TABLE %s%s",
						  quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
													 get_rel_name(relid)),
						  cascade ? " CASCADE" : ""));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(kappa_stream_changed);

/*
 * kappa.stream_changed(relation) makes every backend reload what it knows of
 * a stream, or of a table that continuous views aggregate; a table whose
 * last view went also loses its capturing triggers.  Used by the event
 * trigger after plain DDL.
 */
Datum
kappa_stream_changed(PG_FUNCTION_ARGS)
{
	KappaTableCaptureRemove(PG_GETARG_OID(0));
	KappaStreamViewsInvalidate(PG_GETARG_OID(0));
	PG_RETURN_VOID();
}
