/*-------------------------------------------------------------------------
 *
 * view_rebuild.c
 *	  Kappa reprocessing: a new version of a continuous view built from its
 *	  history beside the live one and swapped in atomically when complete
 *	  (kappa.replace_view, kappa.rebuild_view, kappa.cancel_rebuild, and the
 *	  rebuild worker).
 *
 * Registering.  replace_view and rebuild_view check the new definition
 * (same relation, the view's columns kept in order, new ones only at the
 * end, as CREATE OR REPLACE VIEW wants), create the new version's
 * definition and materialization in kappa_data (view_define.c), record it
 * in kappa.view_rebuilds and return; a rebuild worker does the rest.  Where
 * the history comes from, in this order:
 *
 *	 - 'table': a view over an ordinary table is recomputed from the table;
 *	 - 'retained': a stream whose retained rows are its whole history
 *	   (retain 'infinity', or an interval longer than the stream's age):
 *	   registration records the snapshot it took holding a SHARE lock on
 *	   the stream (the cut); live batches feed the new version from then on,
 *	   and the build reads the retained rows inside the cut (retained rows
 *	   are only appended, so those are the rows of before);
 *	 - 'kafka': the Kafka sources whose target is the stream, replayed from
 *	   where each began reading (or from the broker's first offset, or the
 *	   first at "from") up to the offsets they had committed when the
 *	   rebuild was registered (kappa.rebuild_offsets).  Registration reads
 *	   those offsets holding a SHARE lock on the stream, so no live batch is
 *	   in flight; every later live batch feeds the building version too
 *	   (catalog.c lists it right after its live version), so the replay and
 *	   the live batches together give the new version every message once.
 *
 * Building and swapping.  For 'table' the table's writers go on: from the
 * registration they append their changes to the rebuild's change log
 * (table_capture.c); the worker computes the new version with one snapshot,
 * then applies the logged changes that snapshot did not see, in rounds,
 * and the last few holding the writers out for a moment; from then on live
 * writers feed the new version too ('fed'; rb_build_from_table).  For
 * 'retained' it computes it in one transaction from the rows inside the
 * cut, writers going on.  For 'kafka' a replay worker per source replays
 * it (kafka_replay.c), all at once, each batch in a transaction with its
 * offsets, so it resumes after a crash without counting a message twice;
 * the rebuild worker keeps them running until every range is read.
 * Then the state is 'swapping': the worker waits, as CREATE INDEX
 * CONCURRENTLY does, until every transaction whose snapshot predates the
 * end of the build has ended -- no reader may read the new version with a
 * snapshot that misses part of it -- and swaps, in one transaction that
 * takes the view without queueing for it (a queued lock would hold up new
 * readers behind an open one) and keeps the relation's writers out for a
 * moment.  The swap redefines the user-facing view over the new
 * materialization (CREATE OR REPLACE VIEW: name, grants, comments and
 * dependents stay), points kappa.view_catalog at the new version and drops
 * the old one: a reader sees the old version or the new one, never both or
 * neither.
 *
 * Failures.  A rebuild that cannot be completed (the log lost messages
 * under on_data_loss 'fail', the new definition fails, the swap is refused)
 * shows state 'failed' with the reason until kappa.cancel_rebuild drops it;
 * the live version is never touched.  Other errors (a crash, a shutdown, a
 * serialization failure) restart the worker, which resumes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "kappa_errcodes.h"
#include "util.h"
#include "view.h"

PG_FUNCTION_INFO_V1(kappa_replace_view);
PG_FUNCTION_INFO_V1(kappa_rebuild_view);
PG_FUNCTION_INFO_V1(kappa_cancel_rebuild);
PG_FUNCTION_INFO_V1(kappa_rebuild_swapping);

/* One row of kappa.view_rebuilds. */
typedef struct RbRow
{
	int32		id;
	Oid			view;
	Oid			stream;
	Oid			mat;
	Oid			def;
	char		history[16];
	char		state[16];
	int32		pid;			/* 0 if none recorded */
	bool		fed;			/* live batches feed the new version */
	bool		built;			/* table or retained rows: built */
	Oid			log;			/* table: the change log writers append to
								 * until the build has caught up with them, or
								 * InvalidOid */
} RbRow;

/* One partition's range of a Kafka history. */
typedef struct RbRange
{
	int32		source_id;
	int32		partition;
	int64		start;
	int64		end;
} RbRange;

/* the view whose user-facing view rb_swap is redefining, or InvalidOid */
static Oid	rb_swapping_view = InvalidOid;

/* how often a swap tries again to take the view */
#define RB_SWAP_RETRY_MS	10


/* ---------------------------------------------------------------- catalog */

/*
 * rb_query_latest runs a catalog query as the extension's owner with a
 * snapshot taken now (not the transaction's, which in REPEATABLE READ may
 * predate what the caller waited for); SPI must be connected.  Results in
 * SPI_tuptable.
 */
static void
rb_query_latest(const char *sql, int nargs, Oid *argtypes, Datum *values)
{
	KappaSavedUser saved;
	SPIPlanPtr	plan;
	int			rc;

	KappaBecomeExtensionOwner(&saved);
	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							  false, false, 0);
	KappaRestoreUser(&saved);
	if (rc < 0)
		elog(ERROR, "pg_kappa catalog statement failed: %s", SPI_result_code_string(rc));
}

/* rb_row_from_tuple fills *row from a SELECT of RB_ROW_COLUMNS. */
#define RB_ROW_COLUMNS "id, view::oid, stream::oid, mat::oid, def::oid, history, state, pid, fed, built, log::oid"

static void
rb_row_from_tuple(HeapTuple tup, TupleDesc desc, RbRow *row)
{
	bool		isnull;
	char	   *str;
	Datum		d;

	memset(row, 0, sizeof(*row));
	row->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	row->view = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	row->stream = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	row->mat = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	row->def = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
	str = TextDatumGetCString(SPI_getbinval(tup, desc, 6, &isnull));
	strlcpy(row->history, str, sizeof(row->history));
	str = TextDatumGetCString(SPI_getbinval(tup, desc, 7, &isnull));
	strlcpy(row->state, str, sizeof(row->state));
	d = SPI_getbinval(tup, desc, 8, &isnull);
	row->pid = isnull ? 0 : DatumGetInt32(d);
	row->fed = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
	row->built = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
	d = SPI_getbinval(tup, desc, 11, &isnull);
	row->log = isnull ? InvalidOid : DatumGetObjectId(d);
}

/*
 * rb_read_row reads the rebuild row whose column 'column' ("id" or "view")
 * is 'key', with a snapshot taken now, locking it FOR UPDATE with
 * 'for_update'; returns false if there is none.  SPI must be connected.
 */
static bool
rb_read_row(const char *column, Datum key, bool for_update, RbRow *row)
{
	Oid			type = strcmp(column, "id") == 0 ? INT4OID : OIDOID;
	char	   *sql = psprintf("SELECT " RB_ROW_COLUMNS " FROM kappa.view_rebuilds "
							   "WHERE %s OPERATOR(pg_catalog.=) $1%s",
							   strcmp(column, "id") == 0 ? "id" : "view::oid",
							   for_update ? " FOR UPDATE" : "");

	if (for_update)
		KappaExecCatalogSql(sql, 1, &type, &key, NULL);
	else
		rb_query_latest(sql, 1, &type, &key);
	if (SPI_processed == 0)
		return false;
	rb_row_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, row);
	return true;
}

/* ---------------------------------------------------------------- checks */

/* rb_reltuples returns the planner's estimate of a relation's rows (0 if none). */
static int64
rb_reltuples(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	float4		reltuples;

	if (!HeapTupleIsValid(tup))
		return 0;
	reltuples = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
	ReleaseSysCache(tup);
	return reltuples > 0 ? (int64) reltuples : 0;
}

/*
 * rb_lookup_view returns the continuous view 'name' (its catalog row in
 * *live), which the current user must own.
 */
static Oid
rb_lookup_view(const char *name, KappaViewRow *live)
{
	RangeVar   *rv = KappaMakeRangeVar(name);
	Oid			relid = RangeVarGetRelid(rv, AccessShareLock, false);

	if (!KappaFindView("view", relid, live))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a continuous view", name),
				 errhint("Only views made by kappa.create_view() can be rebuilt.")));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_VIEW, get_rel_name(relid));
	return relid;
}

/*
 * rb_check_columns refuses a new definition that does not keep the view's
 * columns -- names, types, typmods and collations, in order -- as CREATE OR
 * REPLACE VIEW would (new columns may follow them).
 */
static void
rb_check_columns(Oid viewRelid, KappaViewShape *shape)
{
	Relation	rel = relation_open(viewRelid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	const char *viewname = RelationGetRelationName(rel);
	int			nnew = list_length(shape->outNames);

	if (nnew < desc->natts)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("cannot drop columns from continuous view \"%s\"", viewname),
				 errdetail("The view has %d columns; the new definition has %d.",
						   desc->natts, nnew),
				 errhint("Keep the view's columns, in order, with their names and types, and add new ones at the end; or drop the view and create it again.")));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *newname = list_nth(shape->outNames, i);
		Node	   *expr = list_nth(shape->outExprs, i);

		if (strcmp(NameStr(att->attname), newname) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("cannot change name of column \"%s\" of continuous view \"%s\" to \"%s\"",
							NameStr(att->attname), viewname, newname),
					 errhint("Keep the view's columns, in order, with their names and types, and add new ones at the end; or drop the view and create it again.")));
		if (att->atttypid != exprType(expr) || att->atttypmod != exprTypmod(expr) ||
			att->attcollation != exprCollation(expr))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("cannot change data type of column \"%s\" of continuous view \"%s\" from %s to %s",
							NameStr(att->attname), viewname,
							format_type_with_typemod(att->atttypid, att->atttypmod),
							format_type_with_typemod(exprType(expr), exprTypmod(expr))),
					 errhint("Cast the new expression to the column's type, or drop the view and create it again.")));
	}
	relation_close(rel, AccessShareLock);
}

/*
 * rb_retained_is_complete tells whether stream 'stream' keeps its whole
 * history: it retains rows forever, or for longer than it has existed (so
 * that no row can have expired yet).  Sets *detail to why not.  SPI must be
 * connected.
 */
static bool
rb_retained_is_complete(Oid stream, char **detail)
{
	Oid			type = OIDOID;
	Datum		key = ObjectIdGetDatum(stream);
	bool		isnull;
	bool		complete;
	HeapTuple	tup;
	TupleDesc	desc;

	rb_query_latest("SELECT backing IS NOT NULL, retain_all, "
					"retain::text, "
					"retain_all OR created_at OPERATOR(pg_catalog.+) retain "
					"OPERATOR(pg_catalog.>) pg_catalog.now() "
					"FROM kappa.stream_catalog WHERE stream::oid OPERATOR(pg_catalog.=) $1",
					1, &type, &key);
	if (SPI_processed == 0)
	{
		*detail = pstrdup("It is not a stream.");
		return false;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (!DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull)))
	{
		*detail = psprintf("Stream \"%s\" keeps no rows.", get_rel_name(stream));
		return false;
	}
	complete = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)) && !isnull;
	if (!complete)
		*detail = psprintf("Stream \"%s\" keeps rows for %s and is older than that.",
						   get_rel_name(stream),
						   TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull)));
	return complete;
}

/*
 * rb_plan_kafka finds the Kafka history of stream 'stream': for every
 * source whose target it is and every partition it has committed, the range
 * to replay (RbRange, in the current memory context), which it returns;
 * adds the messages to replay to *to_replay and those the log no longer
 * holds to *gaps (under on_data_loss 'record'; under 'fail' it refuses,
 * naming them).  The broker is asked first; the committed offsets are read
 * after the caller locked the stream, by rb_plan_kafka_ranges.  Returns NIL
 * with *nsources 0 if no source feeds the stream.
 */
typedef struct RbSourceBounds
{
	KappaSource *source;
	int			n;				/* partitions the broker told of */
	int64	   *starts;			/* its first offsets, or those at "from" */
} RbSourceBounds;

static List *
rb_kafka_bounds(Oid stream, bool haveFrom, TimestampTz from)
{
	Oid			type = OIDOID;
	Datum		key = ObjectIdGetDatum(stream);
	List	   *ids = NIL;
	List	   *bounds = NIL;
	ListCell   *lc;

	rb_query_latest("SELECT id FROM kappa.source_catalog "
					"WHERE target::oid OPERATOR(pg_catalog.=) $1 ORDER BY id",
					1, &type, &key);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		ids = lappend_int(ids, DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1, &isnull)));
	}
	foreach(lc, ids)
	{
		RbSourceBounds *b = palloc0(sizeof(RbSourceBounds));
		int64	   *ends;

		b->source = KappaSourceLoad(lfirst_int(lc), false);
		KappaKafkaLogBounds(b->source, haveFrom, from, &b->n, &b->starts, &ends);
		bounds = lappend(bounds, b);
	}
	return bounds;
}

static List *
rb_kafka_ranges(List *bounds, bool haveFrom, int64 *to_replay, int64 *gaps)
{
	List	   *ranges = NIL;
	ListCell   *lc;
	Oid			type = INT4OID;

	foreach(lc, bounds)
	{
		RbSourceBounds *b = lfirst(lc);
		Datum		key = Int32GetDatum(b->source->id);
		StringInfoData missing;
		int64		nmissing = 0;

		initStringInfo(&missing);
		rb_query_latest("SELECT partition, next_offset, coalesce(first_offset, 0) "
						"FROM kappa.source_offsets "
						"WHERE source_id OPERATOR(pg_catalog.=) $1 ORDER BY partition",
						1, &type, &key);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int32		p = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			int64		committed = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			int64		began = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			int64		low = (p < b->n && b->starts[p] >= 0) ? b->starts[p] : committed;
			RbRange    *r = palloc(sizeof(RbRange));

			r->source_id = b->source->id;
			r->partition = p;
			r->end = committed;
			/* "from" narrows the history, never widens it */
			if (haveFrom)
				r->start = Min(Max(began, low), committed);
			else
			{
				r->start = Min(Max(began, low), committed);
				if (r->start > began)
				{
					nmissing += r->start - began;
					appendStringInfo(&missing, "%spartition %d: offsets " INT64_FORMAT " to " INT64_FORMAT,
									 missing.len > 0 ? ", " : "", p, began, r->start - 1);
				}
			}
			*to_replay += r->end - r->start;
			ranges = lappend(ranges, r);
		}
		if (nmissing > 0 && b->source->onDataLoss == KAPPA_DATA_LOSS_FAIL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the log of kafka source \"%s\" no longer holds the whole history of its stream",
							b->source->name),
					 errdetail("Missing from topic \"%s\": %s (" INT64_FORMAT " messages).",
							   b->source->topic, missing.data, nmissing),
					 errhint("The source's on_data_loss is 'fail'. To rebuild from what the log still holds, set it to 'record' (kappa.resume_source(..., on_data_loss => 'record')), or give \"from\".")));
		*gaps += nmissing;
	}
	return ranges;
}

/* ---------------------------------------------------------------- workers */

/* rb_start_after_commit has the worker of rebuild 'id' started at commit. */
static void
rb_start_after_commit(int32 id, Oid owner)
{
	KappaWorkerArgs wa;

	if (!KappaLauncherActive())
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_kappa is not in shared_preload_libraries: the rebuild will not resume after a server restart"),
				 errhint("Add pg_kappa to shared_preload_libraries and restart the server.")));
	memset(&wa, 0, sizeof(wa));
	wa.dboid = MyDatabaseId;
	wa.owner = owner;
	wa.rebuild_id = id;
	wa.managed = false;
	KappaStartWorkerAtCommit(&wa);
}

/* ---------------------------------------------------------------- register */

/*
 * rb_current_query returns the definition of a view's version 'def' as
 * text in which every name is qualified.
 */
static char *
rb_current_query(Oid def)
{
	KappaSavedUser saved;
	char	   *sql;

	KappaBecomeExtensionOwner(&saved);
	sql = TextDatumGetCString(DirectFunctionCall1(pg_get_viewdef, ObjectIdGetDatum(def)));
	KappaRestoreUser(&saved);
	return sql;
}

/*
 * rb_register registers a new version of continuous view 'name': the query
 * 'sql', or its current one if NULL; from 'from' if haveFrom (Kafka
 * history only).  See the file header.
 */
static void
rb_register(const char *name, const char *sql, bool haveFrom, TimestampTz from)
{
	KappaViewRow live;
	Oid			viewRelid;
	Oid			owner;
	Query	   *query;
	KappaViewShape *shape;
	char	   *deftext;
	const char *history;
	List	   *bounds = NIL;
	List	   *ranges = NIL;
	int64		to_replay = 0;
	int64		gaps = 0;
	Relation	factRel;
	Oid			defRelid;
	Oid			matRelid;
	Oid			logRelid = InvalidOid;
	RbRow		existing;
	int32		id;
	ListCell   *lc;
	char	   *why = NULL;
	bool		isnull;
	Snapshot	cut;

	KappaStreamServerOid(false);
	viewRelid = rb_lookup_view(name, &live);
	owner = KappaRelationOwner(viewRelid);
	/* one registration or cancel of a view's rebuild at a time */
	LockRelationOid(viewRelid, ShareUpdateExclusiveLock);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (rb_read_row("view", ObjectIdGetDatum(viewRelid), false, &existing))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("continuous view \"%s\" is already being rebuilt", name),
				 errdetail("Its new version is %s.", existing.state),
				 errhint("Wait for it, or drop it with kappa.cancel_rebuild('%s').", name)));

	/* the new definition, as its author means it */
	if (sql == NULL)
	{
		KappaSavedUser saved;

		sql = rb_current_query(live.def);
		KappaBecomeUser(GetUserId(), &saved);
		query = KappaParseViewQuery(sql, true);
		shape = KappaBuildViewShape(query, sql);
		deftext = KappaDeparseQualified(KappaParseViewQuery(sql, false));
		KappaRestoreUser(&saved);
	}
	else
	{
		query = KappaParseViewQuery(sql, true);
		shape = KappaBuildViewShape(query, sql);
		deftext = KappaDeparseQualified(KappaParseViewQuery(sql, false));
	}
	if (shape->streamRelid != live.stream)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the new definition of continuous view \"%s\" aggregates %s, not %s",
						name, get_rel_name(shape->streamRelid), get_rel_name(live.stream)),
				 errhint("Create a new continuous view over %s, then drop this one.",
						 get_rel_name(shape->streamRelid))));
	KappaCheckViewReadPermissions(query, owner);
	rb_check_columns(viewRelid, shape);

	/* where the history comes from */
	if (shape->factIsTable)
		history = "table";
	else if (rb_retained_is_complete(live.stream, &why))
		history = "retained";
	else
	{
		bounds = rb_kafka_bounds(live.stream, haveFrom, from);
		if (bounds == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the history of continuous view \"%s\" is not available", name),
					 errdetail("%s No Kafka source feeds it.", why),
					 errhint("Streams keep their history with retain => 'infinity'; or drop the view and create it again, to start from now.")));
		history = "kafka";
	}
	if (haveFrom && bounds == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"from\" applies only to a rebuild from Kafka"),
				 errdetail("Continuous view \"%s\" is rebuilt from its %s.", name,
						   strcmp(history, "table") == 0 ? "table" : "stream's retained rows"),
				 errhint("Leave \"from\" out.")));

	/*
	 * No writer of a stream in flight from here to commit: the Kafka history
	 * ends at the offsets committed now, and later batches see the new
	 * version.  A table's writers go on: the worker waits for those that may
	 * not log their changes (rb_build_from_table).
	 */
	factRel = table_open(live.stream, shape->factIsTable ? AccessShareLock : ShareLock);
	cut = GetLatestSnapshot();
	if (bounds != NIL)
		ranges = rb_kafka_ranges(bounds, haveFrom, &to_replay, &gaps);
	else
	{
		Oid			relid = live.stream;

		if (strcmp(history, "retained") == 0)
			relid = KappaStreamBackingRelid(live.stream);
		to_replay = rb_reltuples(relid);
	}

	/* the new version, owned by the view's owner */
	(void) KappaDefineVersion(get_rel_name(viewRelid), shape, deftext, owner,
							  &defRelid, &matRelid);
	if (shape->factIsTable)
		logRelid = KappaTableChangeLogCreate(live.stream, matRelid);
	{
		Oid			types[13] = {OIDOID, OIDOID, OIDOID, OIDOID, TEXTOID, INT8OID, INT8OID,
		BOOLOID, XIDOID, XIDOID, XIDARRAYOID, XIDARRAYOID, OIDOID};
		Datum		v[13];
		char		n[14] = "             ";
		bool		retained = strcmp(history, "retained") == 0;
		Datum	   *xip = palloc(sizeof(Datum) * Max(cut->xcnt, 1));
		TransactionId *children;
		int			nchildren = xactGetCommittedChildren(&children);
		Datum	   *own = palloc(sizeof(Datum) * (nchildren + 2));
		int			nown = 0;

		v[0] = ObjectIdGetDatum(viewRelid);
		v[1] = ObjectIdGetDatum(live.stream);
		v[2] = ObjectIdGetDatum(matRelid);
		v[3] = ObjectIdGetDatum(defRelid);
		v[4] = CStringGetTextDatum(history);
		v[5] = Int64GetDatum(to_replay);
		v[6] = Int64GetDatum(gaps);
		/* Kafka and retained rows: fed from now on, the rest is history */
		v[7] = BoolGetDatum(bounds != NIL || retained);
		for (uint32 i = 0; i < cut->xcnt; i++)
			xip[i] = TransactionIdGetDatum(cut->xip[i]);
		v[8] = TransactionIdGetDatum(cut->xmin);
		v[9] = TransactionIdGetDatum(cut->xmax);
		v[10] = PointerGetDatum(construct_array(xip, cut->xcnt, XIDOID, sizeof(TransactionId),
												true, TYPALIGN_INT));
		/* this transaction's rows are inside the cut: it does not feed them */
		if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
			own[nown++] = TransactionIdGetDatum(GetTopTransactionIdIfAny());
		if (TransactionIdIsValid(GetCurrentTransactionIdIfAny()))
			own[nown++] = TransactionIdGetDatum(GetCurrentTransactionIdIfAny());
		for (int i = 0; i < nchildren; i++)
			own[nown++] = TransactionIdGetDatum(children[i]);
		v[11] = PointerGetDatum(construct_array(own, nown, XIDOID, sizeof(TransactionId),
												true, TYPALIGN_INT));
		if (!retained)
			n[8] = n[9] = n[10] = n[11] = 'n';
		v[12] = ObjectIdGetDatum(logRelid);
		if (!OidIsValid(logRelid))
			n[12] = 'n';
		KappaExecCatalogSql("INSERT INTO kappa.view_rebuilds "
							"(view, stream, mat, def, history, to_replay, gaps, fed, "
							"cut_xmin, cut_xmax, cut_xip, cut_own, log) "
							"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
							"RETURNING id",
							13, types, v, n);
		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										 &isnull));
	}
	foreach(lc, ranges)
	{
		RbRange    *r = lfirst(lc);
		Oid			types[5] = {INT4OID, INT4OID, INT4OID, INT8OID, INT8OID};
		Datum		v[5];

		v[0] = Int32GetDatum(id);
		v[1] = Int32GetDatum(r->source_id);
		v[2] = Int32GetDatum(r->partition);
		v[3] = Int64GetDatum(r->start);
		v[4] = Int64GetDatum(r->end);
		KappaExecCatalogSql("INSERT INTO kappa.rebuild_offsets "
							"(rebuild_id, source_id, partition, start_offset, next_offset, end_offset) "
							"VALUES ($1, $2, $3, $4, $4, $5)", 5, types, v, NULL);
	}
	SPI_finish();

	/*
	 * Live batches feed a version built from Kafka or retained rows from now
	 * on, and a table's writers log their changes for it -- but this
	 * transaction's own: the cut counts them as before it, and the build from
	 * a table reads them in the table.
	 */
	KappaCatalogRebuildRegistered(matRelid);
	KappaStreamViewsInvalidate(live.stream);
	table_close(factRel, NoLock);
	rb_start_after_commit(id, owner);
}

/*
 * kappa.replace_view(name, query, "from") builds 'query' as the new version
 * of continuous view 'name' and swaps it in when complete.
 */
Datum
kappa_replace_view(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name and query of kappa.replace_view must not be NULL")));
	rb_register(text_to_cstring(PG_GETARG_TEXT_PP(0)), text_to_cstring(PG_GETARG_TEXT_PP(1)),
				!PG_ARGISNULL(2), PG_ARGISNULL(2) ? 0 : PG_GETARG_TIMESTAMPTZ(2));
	PG_RETURN_VOID();
}

/*
 * kappa.rebuild_view(name, "from") rebuilds continuous view 'name' with its
 * current definition (and the current bodies of the functions it calls).
 */
Datum
kappa_rebuild_view(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the name given to kappa.rebuild_view must not be NULL")));
	rb_register(text_to_cstring(PG_GETARG_TEXT_PP(0)), NULL,
				!PG_ARGISNULL(1), PG_ARGISNULL(1) ? 0 : PG_GETARG_TIMESTAMPTZ(1));
	PG_RETURN_VOID();
}

/*
 * rb_drop_version drops a version's materialization and definition (no
 * permission check, no event trigger: pg_kappa's own objects).
 */
static void
rb_drop_version(Oid mat, Oid def)
{
	ObjectAddress obj;

	ObjectAddressSet(obj, RelationRelationId, mat);
	performDeletion(&obj, DROP_RESTRICT, PERFORM_DELETION_INTERNAL);
	ObjectAddressSet(obj, RelationRelationId, def);
	performDeletion(&obj, DROP_RESTRICT, PERFORM_DELETION_INTERNAL);
}

/*
 * kappa.cancel_rebuild(name) drops the version of continuous view 'name'
 * being built, stopping its worker; the live version is untouched.
 * Returns false, with a notice, if there was none.
 */
Datum
kappa_cancel_rebuild(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KappaViewRow live;
	Oid			viewRelid = rb_lookup_view(name, &live);
	RbRow		row;
	Oid			type = INT4OID;
	Datum		key;

	LockRelationOid(viewRelid, ShareUpdateExclusiveLock);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!rb_read_row("view", ObjectIdGetDatum(viewRelid), false, &row))
	{
		SPI_finish();
		ereport(NOTICE,
				(errmsg("continuous view \"%s\" is not being rebuilt", name)));
		PG_RETURN_BOOL(false);
	}

	/*
	 * Stop the worker first: it may hold the row for the length of a whole
	 * build.  It is the view owner's, whom the caller acts for.
	 */
	if (row.pid > 0)
	{
		PGPROC	   *proc = BackendPidGetProc(row.pid);

		if (proc != NULL && proc->isBackgroundWorker &&
			proc->databaseId == MyDatabaseId)
			(void) kill(row.pid, SIGTERM);
	}

	/*
	 * Wait for the batches writing the building version (the worker's, and
	 * live ones) and keep new ones out, before taking the row that they
	 * update: the other order could deadlock with them.
	 */
	LockRelationOid(row.mat, AccessExclusiveLock);
	key = Int32GetDatum(row.id);
	KappaExecCatalogSql("DELETE FROM kappa.view_rebuilds WHERE id OPERATOR(pg_catalog.=) $1 "
						"RETURNING mat::oid, def::oid",
						1, &type, &key, NULL);
	if (SPI_processed == 0)
	{
		SPI_finish();
		ereport(NOTICE,
				(errmsg("the rebuild of continuous view \"%s\" ended before it could be cancelled",
						name)));
		PG_RETURN_BOOL(false);
	}
	SPI_finish();
	rb_drop_version(row.mat, row.def);
	KappaStreamViewsInvalidate(row.stream);
	PG_RETURN_BOOL(true);
}

/*
 * kappa.rebuild_swapping(view) tells the DDL event trigger whether this
 * session is swapping in a new version of 'view' (rb_swap), the one time
 * its user-facing view may be redefined.
 */
Datum
kappa_rebuild_swapping(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(OidIsValid(rb_swapping_view) &&
				   rb_swapping_view == PG_GETARG_OID(0));
}

/* ---------------------------------------------------------------- worker */

/*
 * rb_swap makes the built version of 'row' the live one (see the file
 * header).  The caller holds a lock on the view's relation that keeps
 * writers out, and the rebuild row FOR UPDATE.
 */
static void
rb_swap(RbRow *row)
{
	KappaViewRow live;
	Relation	vrel;
	Oid			owner;
	char	   *qualified;
	char	   *sql;
	KappaViewShape *shape;
	KappaSavedUser saved;
	Oid			types[4] = {OIDOID, OIDOID, OIDOID, INT4OID};
	Datum		v[4];

	if (!KappaFindView("view", row->view, &live))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_REBUILD_FAILED),
				 errmsg("continuous view %u of rebuild %d no longer exists", row->view, row->id)));
	vrel = relation_open(row->view, AccessExclusiveLock);
	owner = vrel->rd_rel->relowner;
	qualified = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(vrel)),
										   RelationGetRelationName(vrel));
	relation_close(vrel, NoLock);

	/* the user-facing view over the new materialization, as its owner */
	sql = rb_current_query(row->def);
	KappaBecomeUser(owner, &saved);
	shape = KappaBuildViewShape(KappaParseViewQuery(sql, true), sql);
	rb_swapping_view = row->view;
	PG_TRY();
	{
		KappaDefineUserView(shape, qualified, row->mat, true);
	}
	PG_FINALLY();
	{
		rb_swapping_view = InvalidOid;
	}
	PG_END_TRY();
	KappaRestoreUser(&saved);

	v[0] = ObjectIdGetDatum(row->view);
	v[1] = ObjectIdGetDatum(row->mat);
	v[2] = ObjectIdGetDatum(row->def);
	v[3] = Int32GetDatum(row->id);
	KappaExecCatalogSql("UPDATE kappa.view_catalog SET mat = $2, def = $3, "
						"history_gaps = (SELECT b.gaps FROM kappa.view_rebuilds b "
						"WHERE b.id OPERATOR(pg_catalog.=) $4) "
						"WHERE view::oid OPERATOR(pg_catalog.=) $1", 4, types, v, NULL);
	KappaExecCatalogSql("DELETE FROM kappa.view_rebuilds WHERE id OPERATOR(pg_catalog.=) $1",
						1, &types[3], &v[3], NULL);
	CommandCounterIncrement();
	rb_drop_version(live.mat, live.def);
	KappaStreamViewsInvalidate(row->stream);
	ereport(LOG,
			(errmsg("continuous view %s: the rebuilt version is live", qualified)));
}

/*
 * rb_read_cut reads the cut of a rebuild from retained rows (the snapshot
 * taken at its registration) into *cut, in the current memory context.
 * SPI must be connected.
 */
static void
rb_read_cut(int32 id, KappaScanCut *cut)
{
	Oid			type = INT4OID;
	Datum		key = Int32GetDatum(id);
	bool		isnull;
	Datum	   *elems;
	int			n;
	HeapTuple	tup;
	TupleDesc	desc;

	KappaExecCatalogSql("SELECT cut_xmin, cut_xmax, cut_xip, cut_own FROM kappa.view_rebuilds "
						"WHERE id OPERATOR(pg_catalog.=) $1 AND cut_xip IS NOT NULL",
						1, &type, &key, NULL);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_REBUILD_FAILED),
				 errmsg("rebuild %d from retained rows has no cut", id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	cut->xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 1, &isnull));
	cut->xmax = DatumGetTransactionId(SPI_getbinval(tup, desc, 2, &isnull));
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 3, &isnull)),
					  XIDOID, sizeof(TransactionId), true, TYPALIGN_INT,
					  &elems, NULL, &n);
	cut->nxip = n;
	cut->xip = palloc(sizeof(TransactionId) * Max(n, 1));
	for (int i = 0; i < n; i++)
		cut->xip[i] = DatumGetTransactionId(elems[i]);
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 4, &isnull)),
					  XIDOID, sizeof(TransactionId), true, TYPALIGN_INT,
					  &elems, NULL, &n);
	cut->nown = n;
	cut->own = palloc(sizeof(TransactionId) * Max(n, 1));
	for (int i = 0; i < n; i++)
		cut->own[i] = DatumGetTransactionId(elems[i]);
}

/*
 * rb_build_from_retained builds a version from its stream's retained rows,
 * in one transaction, writers going on (they have fed the new version since
 * its registration): the build reads the rows inside the cut taken then.
 * Returns false if the rebuild is gone.
 */
static bool
rb_build_from_retained(int32 id)
{
	RbRow		row;
	Relation	rel;
	KappaViewInfo *info;
	KappaScanCut cut;
	Datum		key = Int32GetDatum(id);
	Oid			type = INT4OID;
	char	   *why;

	(void) KappaBeginTransaction(false);
	SPI_connect();
	if (!rb_read_row("id", key, false, &row))
	{
		SPI_finish();
		KappaCommitTransaction();
		return false;
	}
	rel = table_open(row.stream, AccessShareLock);
	if (!rb_read_row("id", key, true, &row))
	{
		table_close(rel, NoLock);
		SPI_finish();
		KappaCommitTransaction();
		return false;
	}
	if (!rb_retained_is_complete(row.stream, &why))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_REBUILD_FAILED),
				 errmsg("the retained rows of stream \"%s\" are no longer its whole history",
						get_rel_name(row.stream)),
				 errdetail("%s", why),
				 errhint("Cancel the rebuild with kappa.cancel_rebuild().")));
	rb_read_cut(id, &cut);
	pgstat_report_activity(STATE_RUNNING, "pg_kappa: rebuilding a view");
	info = KappaViewInfoLoad(row.view, row.mat, row.def, CurrentMemoryContext);
	KappaViewBackfill(info, true, &cut);
	KappaViewInfoFree(info);
	KappaExecCatalogSql("UPDATE kappa.view_rebuilds SET built = true, "
						"replayed = to_replay, updated_at = pg_catalog.now() "
						"WHERE id OPERATOR(pg_catalog.=) $1", 1, &type, &key, NULL);
	table_close(rel, NoLock);
	SPI_finish();
	KappaCommitTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
	return true;
}

/* The steps of a build from a table (rb_table_step). */
typedef enum RbTableStep
{
	RB_TABLE_BUILD,				/* compute from the table */
	RB_TABLE_CATCH_UP,			/* apply logged changes, writers going on */
	RB_TABLE_FINISH				/* apply the rest, writers held; then fed */
} RbTableStep;

/* catch-up rounds before the last step, at most */
#define RB_CATCH_UP_ROUNDS		20
/* a round that took fewer logged rows than this is the last one */
#define RB_CATCH_UP_ENOUGH		1000

/*
 * rb_table_step runs one step of the build of 'row' (history 'table') in
 * its own REPEATABLE READ transaction, whose snapshot is taken after the
 * table's lock ('finish': one that keeps writers out; else one that keeps
 * TRUNCATE out, which is not MVCC-safe).  Every step deletes from the
 * change log what the snapshot sees of it, so after each the new version
 * is its query over the table as of that snapshot:
 *
 *	 - build: computes it from the table (the changes the log shows are in
 *	   the table already);
 *	 - catch-up and finish: applies those logged changes
 *	   (KappaViewFeedChanges; a truncation among them: recompute);
 *	 - finish, with no writer in flight, also drops the log and lets live
 *	   writers feed the new version from then on (fed).
 *
 * Sets *taken to the number of logged rows taken.  Returns false if the
 * rebuild is gone or no longer building from its log.
 */
static bool
rb_table_step(const RbRow *row, RbTableStep step, int64 *taken)
{
	Relation	rel;
	RbRow		cur;
	KappaViewInfo *info;
	List	   *changes;
	bool		truncated;
	Datum		key = Int32GetDatum(row->id);
	Oid			type = INT4OID;

	*taken = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	rel = try_table_open(row->stream,
						 step == RB_TABLE_FINISH ? ShareRowExclusiveLock : AccessShareLock);
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	if (rel == NULL || !rb_read_row("id", key, true, &cur) ||
		strcmp(cur.state, "building") != 0 || !OidIsValid(cur.log))
	{
		if (rel != NULL)
			table_close(rel, NoLock);
		SPI_finish();
		KappaCommitTransaction();
		return false;
	}
	pgstat_report_activity(STATE_RUNNING, step == RB_TABLE_BUILD ?
						   "pg_kappa: rebuilding a view" :
						   "pg_kappa: applying the changes logged during a rebuild");
	info = KappaViewInfoLoad(cur.view, cur.mat, cur.def, CurrentMemoryContext);
	KappaViewLockRelations(info);
	changes = KappaTableChangeLogTake(cur.log, RelationGetDescr(rel), &truncated, taken);
	if (step == RB_TABLE_BUILD || truncated)
		KappaViewRecompute(info, GetActiveSnapshot());
	else if (changes != NIL)
	{
		KappaStreamViews one;

		memset(&one, 0, sizeof(one));
		one.relid = cur.stream;
		one.views = list_make1(info);
		one.valid = true;
		one.cxt = CurrentMemoryContext;
		KappaViewFeedChanges(&one, RelationGetDescr(rel), changes);
	}
	KappaViewInfoFree(info);
	if (step == RB_TABLE_BUILD)
		KappaExecCatalogSql("UPDATE kappa.view_rebuilds SET built = true, "
							"replayed = to_replay, updated_at = pg_catalog.now() "
							"WHERE id OPERATOR(pg_catalog.=) $1", 1, &type, &key, NULL);
	else if (step == RB_TABLE_FINISH)
	{
		ObjectAddress obj;

		KappaExecCatalogSql("UPDATE kappa.view_rebuilds SET fed = true, log = NULL, "
							"updated_at = pg_catalog.now() "
							"WHERE id OPERATOR(pg_catalog.=) $1", 1, &type, &key, NULL);
		ObjectAddressSet(obj, RelationRelationId, cur.log);
		performDeletion(&obj, DROP_RESTRICT, PERFORM_DELETION_INTERNAL);
		/* the writers waiting for the lock feed the new version now */
		KappaStreamViewsInvalidate(cur.stream);
	}
	table_close(rel, NoLock);
	SPI_finish();
	KappaCommitTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
	return true;
}

/*
 * rb_build_from_table builds a version from its table without holding up
 * the table's writers but for a moment at the end: they log their changes
 * meanwhile (table_capture.c, "Change logs"), and the build applies them in
 * rounds until few are left (rb_table_step).  Returns false if the rebuild
 * is gone.
 */
static bool
rb_build_from_table(int32 id)
{
	RbRow		row;
	bool		found;
	int64		taken;

	(void) KappaBeginTransaction(false);
	SPI_connect();
	found = rb_read_row("id", Int32GetDatum(id), false, &row);
	SPI_finish();
	KappaCommitTransaction();
	if (!found)
		return false;
	if (row.fed)
		return true;
	if (!row.built)
	{
		LOCKTAG		tag;

		/*
		 * A writer that began before the registration may not log its
		 * changes: wait for every one that writes now, as CREATE INDEX
		 * CONCURRENTLY waits for them; later ones log.
		 */
		StartTransactionCommand();
		pgstat_report_activity(STATE_RUNNING, "pg_kappa: waiting for the writers of a table");
		SET_LOCKTAG_RELATION(tag, MyDatabaseId, row.stream);
		WaitForLockers(tag, ShareLock, false);
		CommitTransactionCommand();
		if (!rb_table_step(&row, RB_TABLE_BUILD, &taken))
			return false;
	}
	for (int round = 0; round < RB_CATCH_UP_ROUNDS; round++)
	{
		if (!rb_table_step(&row, RB_TABLE_CATCH_UP, &taken))
			return false;
		if (taken < RB_CATCH_UP_ENOUGH)
			break;
	}
	return rb_table_step(&row, RB_TABLE_FINISH, &taken);
}

/* A replay worker of a rebuild from Kafka, as its rebuild worker keeps it. */
typedef struct RbReplayer
{
	int32		source_id;
	BackgroundWorkerHandle *handle; /* or NULL */
	TimestampTz started_at;
	TimestampTz next_start;
	int			backoff_ms;
} RbReplayer;

/* the replay workers this rebuild worker started (TopMemoryContext) */
static RbReplayer *rb_replayers = NULL;
static int	rb_nreplayers = 0;

/* this worker's arguments (what its replay workers are started with) */
static KappaWorkerArgs rb_args;

/* how often the rebuild worker looks at the replay's progress */
#define RB_REPLAY_POLL_MS			100
/* a replay worker that ended with ranges left starts again after this */
#define RB_REPLAY_RESTART_MIN_MS	1000
#define RB_REPLAY_RESTART_MAX_MS	30000

/* before_shmem_exit: a rebuild worker that ends stops its replay workers */
static void
rb_stop_replayers(int code, Datum arg)
{
	for (int i = 0; i < rb_nreplayers; i++)
		if (rb_replayers[i].handle != NULL)
			TerminateBackgroundWorker(rb_replayers[i].handle);
}

/*
 * rb_keep_replayer keeps a replay worker running for source 'source_id' of
 * this rebuild, which still has ranges to read: it starts one unless one
 * runs, again after a back-off if the last one ended early.
 */
static void
rb_keep_replayer(int32 source_id, TimestampTz now)
{
	RbReplayer *r = NULL;
	pid_t		pid;

	for (int i = 0; i < rb_nreplayers; i++)
		if (rb_replayers[i].source_id == source_id)
			r = &rb_replayers[i];
	if (r == NULL)
	{
		if (rb_replayers == NULL)
		{
			rb_replayers = MemoryContextAlloc(TopMemoryContext, sizeof(RbReplayer));
			before_shmem_exit(rb_stop_replayers, (Datum) 0);
		}
		else
			rb_replayers = repalloc(rb_replayers, sizeof(RbReplayer) * (rb_nreplayers + 1));
		r = &rb_replayers[rb_nreplayers++];
		memset(r, 0, sizeof(*r));
		r->source_id = source_id;
	}
	if (r->handle != NULL && GetBackgroundWorkerPid(r->handle, &pid) == BGWH_STOPPED)
	{
		pfree(r->handle);
		r->handle = NULL;
		if (TimestampDifferenceExceeds(r->started_at, now, RB_REPLAY_RESTART_MAX_MS))
			r->backoff_ms = RB_REPLAY_RESTART_MIN_MS;
		else
			r->backoff_ms = Min(Max(r->backoff_ms * 2, RB_REPLAY_RESTART_MIN_MS),
								RB_REPLAY_RESTART_MAX_MS);
		r->next_start = TimestampTzPlusMilliseconds(now, r->backoff_ms);
	}
	if (r->handle == NULL && now >= r->next_start)
	{
		KappaWorkerArgs wa = rb_args;

		wa.source_id = source_id;
		wa.managed = false;
		r->started_at = now;
		if (!KappaStartWorker(&wa, NULL, false, (void **) &r->handle))
		{
			r->handle = NULL;
			r->next_start = TimestampTzPlusMilliseconds(now, RB_REPLAY_RESTART_MIN_MS);
			ereport(LOG,
					(errmsg("rebuild %d: no free background worker slot for the replay of kafka source %d",
							rb_args.rebuild_id, source_id),
					 errhint("Raise max_worker_processes.")));
		}
	}
}

/*
 * rb_build_from_kafka replays rebuild 'id' from Kafka: one replay worker per
 * source with ranges left to read (KappaReplayWorkerMain), all at once, kept
 * running until every range is read.  Returns true then, false if the
 * rebuild is gone or failed.
 */
static bool
rb_build_from_kafka(int32 id)
{
	Oid			type = INT4OID;
	Datum		key = Int32GetDatum(id);

	for (;;)
	{
		RbRow		row;
		bool		found;
		List	   *left = NIL;
		ListCell   *lc;
		int			rc;

		(void) KappaBeginTransaction(false);
		SPI_connect();
		found = rb_read_row("id", key, false, &row);
		if (found && strcmp(row.state, "building") == 0)
		{
			KappaExecCatalogSql("SELECT DISTINCT source_id FROM kappa.rebuild_offsets "
								"WHERE rebuild_id OPERATOR(pg_catalog.=) $1 "
								"AND next_offset OPERATOR(pg_catalog.<) end_offset ORDER BY 1",
								1, &type, &key, NULL);
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				bool		isnull;

				/* (the list outlives SPI and the transaction) */
				MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

				left = lappend_int(left,
								   DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1,
															   &isnull)));
				MemoryContextSwitchTo(old);
			}
		}
		SPI_finish();
		KappaCommitTransaction();
		if (!found || strcmp(row.state, "failed") == 0)
			return false;
		if (left == NIL)
			return true;

		pgstat_report_activity(STATE_RUNNING, "pg_kappa: replaying the sources of a rebuild");
		foreach(lc, left)
			rb_keep_replayer(lfirst_int(lc), GetCurrentTimestamp());
		list_free(left);
		/* a replay worker that ends sets the latch (bgw_notify_pid) */
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   RB_REPLAY_POLL_MS, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * rb_lock_view_for_swap takes the ACCESS EXCLUSIVE lock on a view that its
 * swap needs without queueing for it: a queued request would hold up every
 * new reader behind a reader's open transaction.  It tries again until no
 * transaction holds the view.
 */
static void
rb_lock_view_for_swap(Oid view)
{
	while (!ConditionalLockRelationOid(view, AccessExclusiveLock))
	{
		int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								   RB_SWAP_RETRY_MS, PG_WAIT_EXTENSION);

		if (rc & WL_LATCH_SET)
			ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * rb_swap_when_ready swaps in the built version of rebuild 'id' (state
 * swapping meanwhile): once every transaction whose snapshot predates the
 * end of the build has ended -- as CREATE INDEX CONCURRENTLY waits -- so
 * that no reader can read the new version with a snapshot that misses
 * part of it; then, holding the view for a moment and the relation's
 * writers out, in one transaction (rb_swap).
 */
static void
rb_swap_when_ready(int32 id)
{
	RbRow		row;
	Oid			type = INT4OID;
	Datum		key = Int32GetDatum(id);
	Relation	rel;

	(void) KappaBeginTransaction(false);
	SPI_connect();
	KappaExecCatalogSql("UPDATE kappa.view_rebuilds SET state = 'swapping', "
						"updated_at = pg_catalog.now() "
						"WHERE id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) 'building'",
						1, &type, &key, NULL);
	SPI_finish();
	KappaCommitTransaction();

	/* without a snapshot of our own, which others would wait for */
	StartTransactionCommand();
	InvalidateCatalogSnapshot();
	pgstat_report_activity(STATE_RUNNING, "pg_kappa: waiting for older snapshots to swap a view");
	WaitForOlderSnapshots(ReadNextTransactionId(), false);
	CommitTransactionCommand();

	(void) KappaBeginTransaction(false);
	SPI_connect();
	if (!rb_read_row("id", key, false, &row))
	{
		SPI_finish();
		KappaCommitTransaction();
		return;
	}
	pgstat_report_activity(STATE_RUNNING, "pg_kappa: swapping a view");
	rb_lock_view_for_swap(row.view);
	rel = table_open(row.stream, strcmp(row.history, "table") == 0 ?
					 ShareRowExclusiveLock : ShareLock);
	if (rb_read_row("id", key, true, &row))
		rb_swap(&row);
	table_close(rel, NoLock);
	SPI_finish();
	KappaCommitTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * rb_error_is_final tells whether an error means the rebuild cannot be
 * completed (it is then marked failed) rather than that its worker must
 * start over (a crash, a shutdown, a lost race, a lack of resources).
 */
static bool
rb_error_is_final(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return !(class == ERRCODE_TRANSACTION_ROLLBACK ||
			 class == ERRCODE_INSUFFICIENT_RESOURCES ||
			 class == ERRCODE_OPERATOR_INTERVENTION ||
			 class == ERRCODE_SYSTEM_ERROR ||
			 class == ERRCODE_CONNECTION_EXCEPTION ||
			 class == ERRCODE_INTERNAL_ERROR ||
			 edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
			 edata->sqlerrcode == ERRCODE_EXTERNAL_ROUTINE_EXCEPTION);
}

/*
 * rb_record_error shows a worker's error in the rebuild row: with 'final',
 * the rebuild is failed, and live batches stop feeding its version.
 */
static void
rb_record_error(int32 id, const char *message, bool final)
{
	Oid			types[3] = {INT4OID, TEXTOID, BOOLOID};
	Datum		v[3];

	(void) KappaBeginTransaction(false);
	SPI_connect();
	v[0] = Int32GetDatum(id);
	v[1] = CStringGetTextDatum(message);
	v[2] = BoolGetDatum(final);
	KappaExecCatalogSql("UPDATE kappa.view_rebuilds SET last_error = $2, "
						"state = CASE WHEN $3 THEN 'failed' ELSE state END, "
						"updated_at = pg_catalog.now() "
						"WHERE id OPERATOR(pg_catalog.=) $1 "
						"AND state OPERATOR(pg_catalog.<>) 'failed' RETURNING stream::oid",
						3, types, v, NULL);
	if (final && SPI_processed == 1)
	{
		bool		isnull;

		KappaStreamViewsInvalidate(DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
																  SPI_tuptable->tupdesc,
																  1, &isnull)));
	}
	SPI_finish();
	KappaCommitTransaction();
}

/*
 * rb_worker_begin connects a rebuild worker or one of its replay workers
 * (source_id set) to its database as the view's owner, takes the session
 * lock that keeps it the only one of its kind, names it and reads its
 * rebuild into *row.  Returns false if it has nothing to do.
 */
static bool
rb_worker_begin(KappaWorkerArgs *args, RbRow *row)
{
	LOCKTAG		tag;
	char		appname[2 * NAMEDATALEN + 64];
	bool		found;

	memcpy(args, MyBgworkerEntry->bgw_extra, sizeof(KappaWorkerArgs));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(args->dboid, args->owner, 0);
	SetConfigOption("search_path", KAPPA_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);

	if (KappaBeginTransaction(true) != KAPPA_EXTENSION_CURRENT)
	{
		KappaCommitTransaction();
		return false;
	}

	/*
	 * one worker per rebuild, and one replay worker per rebuild and source: a
	 * session lock nobody else uses (field4 = 4)
	 */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) args->rebuild_id,
						 (uint32) args->source_id, 4);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		KappaCommitTransaction();
		return false;
	}
	SPI_connect();
	found = rb_read_row("id", Int32GetDatum(args->rebuild_id), false, row);
	if (!found || strcmp(row->state, "failed") == 0)
	{
		SPI_finish();
		KappaCommitTransaction();
		return false;
	}
	if (args->source_id > 0)
	{
		Oid			type = INT4OID;
		Datum		key = Int32GetDatum(args->source_id);
		bool		isnull;

		KappaExecCatalogSql("SELECT name FROM kappa.source_catalog "
							"WHERE id OPERATOR(pg_catalog.=) $1", 1, &type, &key, NULL);
		snprintf(appname, sizeof(appname), "pg_kappa rebuild of %s: replay of %s",
				 get_rel_name(row->view),
				 SPI_processed == 1 ?
				 TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull)) :
				 "a dropped source");
	}
	else
	{
		Oid			types[2] = {INT4OID, INT4OID};
		Datum		v[2];

		snprintf(appname, sizeof(appname), "pg_kappa rebuild of %s", get_rel_name(row->view));
		v[0] = Int32GetDatum(row->id);
		v[1] = Int32GetDatum(MyProcPid);
		KappaExecCatalogSql("UPDATE kappa.view_rebuilds SET pid = $2 "
							"WHERE id OPERATOR(pg_catalog.=) $1", 2, types, v, NULL);
	}
	SetConfigOption("application_name", appname, PGC_USERSET, PGC_S_SESSION);
	SPI_finish();
	KappaCommitTransaction();
	return true;
}

/*
 * rb_worker_failed ends a rebuild or replay worker whose work raised an
 * error (being handled): shown in the rebuild row, which is failed if the
 * error is final (exit 0); else exit 1, to be started over.
 */
static void
rb_worker_failed(int32 rebuild_id, MemoryContext cxt)
{
	ErrorData  *edata;
	bool		final;
	char	   *message;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	EmitErrorReport();
	FlushErrorState();
	AbortOutOfAnyTransaction();
	final = rb_error_is_final(edata);
	message = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) :
		edata->message;
	/* a shutdown ends the worker; the next one resumes */
	if (edata->sqlerrcode != ERRCODE_ADMIN_SHUTDOWN)
		rb_record_error(rebuild_id, message, final);
	proc_exit(final ? 0 : 1);
}

/*
 * KappaRebuildWorkerMain is the entry point of the worker of one rebuild;
 * bgw_extra holds its KappaWorkerArgs.  It exits 0 when the rebuild is
 * swapped in, gone or failed, and 1 to be started over.
 */
void
KappaRebuildWorkerMain(Datum main_arg)
{
	RbRow		row;
	MemoryContext cxt;

	if (!rb_worker_begin(&rb_args, &row))
		proc_exit(0);
	cxt = AllocSetContextCreate(TopMemoryContext, "pg_kappa rebuild", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		bool		built;

		if (strcmp(row.history, "kafka") == 0)
			built = rb_build_from_kafka(row.id);
		else if (strcmp(row.history, "table") == 0)
			built = rb_build_from_table(row.id);
		else
			built = row.built || rb_build_from_retained(row.id);
		if (built)
			rb_swap_when_ready(row.id);
	}
	PG_CATCH();
	{
		rb_worker_failed(rb_args.rebuild_id, cxt);
	}
	PG_END_TRY();
	proc_exit(0);
}

/*
 * KappaReplayWorkerMain is the entry point of a replay worker: it replays
 * what its rebuild still has to read of its source (KappaReplaySource) and
 * exits 0, or 1 to be started again by its rebuild worker.
 */
void
KappaReplayWorkerMain(Datum main_arg)
{
	KappaWorkerArgs args;
	RbRow		row;
	MemoryContext cxt;

	if (!rb_worker_begin(&args, &row))
		proc_exit(0);
	cxt = AllocSetContextCreate(TopMemoryContext, "pg_kappa replay", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		KappaReplaySource(row.id, args.source_id, row.mat);
	}
	PG_CATCH();
	{
		rb_worker_failed(args.rebuild_id, cxt);
	}
	PG_END_TRY();
	proc_exit(0);
}
