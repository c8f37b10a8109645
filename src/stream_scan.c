/*-------------------------------------------------------------------------
 *
 * stream_scan.c
 *	  Reading a stream: the foreign scan of the streams' FDW, and the rows it
 *	  returns while a view's delta query runs.
 *
 * A scan of a stream returns one of two things.  While a view's delta query
 * runs (view_apply.c), the rows being applied: the caller pushes them as a
 * *scan source* (KappaScanSourcePush), runs the query and pops the source
 * again in PG_FINALLY, so a scan never sees rows of a query that is not
 * running.  Otherwise a stream with retention returns its retained rows
 * from its backing heap table, and a stream without retention refuses to be
 * read, since it has no rows to show.
 *
 * When planning, a scan is assumed to return KappaScanSetPlannedRows rows:
 * view_plan.c plans each delta query twice, for small and for large
 * batches.
 *
 * This file calls nothing above it: the sources are handed to it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "utils/builtins.h"
#include "utils/rel.h"

#include "pg_kappa.h"
#include "kappa_errcodes.h"

/* the innermost scan source, or NULL when no delta query runs */
static KappaScanSource *scan_sources = NULL;

/* rows a scan of a stream is assumed to return when planning */
static double scan_planned_rows = 1000;

typedef struct StreamScanState
{
	KappaScanSource *source;	/* rows being applied, or NULL */
	int			next;			/* next row of the source */
	Relation	backing;		/* retained rows, when not reading a source */
	TableScanDesc scan;
	TupleTableSlot *backingSlot;
	AttrNumber *map;			/* stream attno -> backing attno */
	const KappaScanCut *cut;	/* retained rows inside it only, or NULL */
} StreamScanState;

/*
 * Is a retained row inserted by 'xid' inside 'cut' (see KappaScanCut)?  A
 * frozen row keeps its raw xmin; one so old that it reads as later than the
 * cut is taken as inside.
 */
static bool
scan_in_cut(TransactionId xid, const KappaScanCut *cut)
{
	if (!TransactionIdIsNormal(xid) || TransactionIdPrecedes(xid, cut->xmin))
		return true;
	for (int i = 0; i < cut->nown; i++)
	{
		if (TransactionIdEquals(xid, cut->own[i]))
			return true;
	}
	if (TransactionIdFollowsOrEquals(xid, cut->xmax))
		return false;
	for (int i = 0; i < cut->nxip; i++)
	{
		if (TransactionIdEquals(xid, cut->xip[i]))
			return false;
	}
	return true;
}

/*
 * KappaScanSourcePush makes 'source' (filled in by the caller, who keeps it
 * allocated) what scans of source->streamRelid return, until the matching
 * KappaScanSourcePop.  With source->retained, scans read the retained rows
 * even inside an outer source of the same stream.  The caller pops it in
 * PG_FINALLY.
 */
void
KappaScanSourcePush(KappaScanSource *source)
{
	source->outer = scan_sources;
	scan_sources = source;
}

/* KappaScanSourcePop undoes the KappaScanSourcePush of 'source'. */
void
KappaScanSourcePop(KappaScanSource *source)
{
	Assert(scan_sources == source);
	scan_sources = source->outer;
}

/*
 * KappaScanSetPlannedRows sets the rows a scan of a stream is assumed to
 * return in plans made from now on, and returns the previous value.
 */
double
KappaScanSetPlannedRows(double rows)
{
	double		prev = scan_planned_rows;

	scan_planned_rows = rows;
	return prev;
}

/*
 * KappaRetainedColumnMap maps each column of a stream (row type 'stream') to
 * the column of its retained-rows table 'backing' with the same name, or 0
 * for a dropped column.  Raises an error if the two no longer match (the
 * stream was altered after its retained-rows table was made).
 */
AttrNumber *
KappaRetainedColumnMap(TupleDesc stream, Relation backing)
{
	TupleDesc	bdesc = RelationGetDescr(backing);
	AttrNumber *map = palloc0(sizeof(AttrNumber) * stream->natts);
	int			i;

	for (i = 0; i < stream->natts; i++)
	{
		Form_pg_attribute sattr = TupleDescAttr(stream, i);
		int			j;

		if (sattr->attisdropped)
			continue;
		for (j = 0; j < bdesc->natts; j++)
		{
			Form_pg_attribute battr = TupleDescAttr(bdesc, j);

			if (!battr->attisdropped &&
				strcmp(NameStr(sattr->attname), NameStr(battr->attname)) == 0)
			{
				if (battr->atttypid == sattr->atttypid &&
					battr->atttypmod == sattr->atttypmod)
					map[i] = j + 1;
				break;
			}
		}
		if (map[i] == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("retained rows of a stream do not match its column \"%s\"",
							NameStr(sattr->attname)),
					 errdetail("The stream was altered after it was created; its retained rows are in \"%s\".",
							   RelationGetRelationName(backing)),
					 errhint("Streams with retention cannot be altered: create a new stream, or alter %s the same way.",
							 quote_qualified_identifier(KAPPA_DATA_SCHEMA,
														RelationGetRelationName(backing)))));
	}
	return map;
}

/* Planning: a stream is a cheap sequential source. */
static void
scan_get_rel_size(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	baserel->rows = scan_planned_rows;
}

static void
scan_get_paths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	Cost		total = baserel->rows * cpu_tuple_cost;

	add_path(baserel, (Path *)
			 create_foreignscan_path(root, baserel, NULL, baserel->rows,
									 0, total, NIL, NULL, NULL, NIL));
}

static ForeignScan *
scan_get_plan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
			  ForeignPath *best_path, List *tlist, List *scan_clauses,
			  Plan *outer_plan)
{
	scan_clauses = extract_actual_clauses(scan_clauses, false);
	return make_foreignscan(tlist, scan_clauses, baserel->relid,
							NIL, NIL, NIL, NIL, outer_plan);
}

/* The innermost scan source of stream 'relid', or NULL. */
static KappaScanSource *
scan_source_of(Oid relid)
{
	KappaScanSource *source;

	for (source = scan_sources; source != NULL; source = source->outer)
	{
		if (source->streamRelid == relid)
			return source;
	}
	return NULL;
}

static void
scan_begin(ForeignScanState *node, int eflags)
{
	Relation	rel = node->ss.ss_currentRelation;
	Oid			relid = RelationGetRelid(rel);
	StreamScanState *st;
	Oid			backingRelid;

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;

	st = palloc0(sizeof(StreamScanState));
	node->fdw_state = st;
	st->source = scan_source_of(relid);
	if (st->source != NULL && !st->source->retained)
		return;
	if (st->source != NULL)
		st->cut = st->source->cut;
	st->source = NULL;

	backingRelid = KappaStreamBackingRelid(relid);
	if (!OidIsValid(backingRelid))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NO_STREAM_ROWS),
				 errmsg("cannot read from stream \"%s\"", RelationGetRelationName(rel)),
				 errdetail("The stream keeps no rows (retain => NULL); its rows only feed continuous views."),
				 errhint("Query a continuous view over the stream, or create the stream with retain => 'infinity' or an interval to keep its rows.")));

	st->backing = table_open(backingRelid, AccessShareLock);
	st->map = KappaRetainedColumnMap(RelationGetDescr(rel), st->backing);
	st->backingSlot = table_slot_create(st->backing, NULL);
	st->scan = table_beginscan(st->backing, node->ss.ps.state->es_snapshot,
							   0, NULL);
}

static TupleTableSlot *
scan_next(ForeignScanState *node)
{
	StreamScanState *st = node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	int			natts = slot->tts_tupleDescriptor->natts;
	int			i;

	ExecClearTuple(slot);
	if (st->source != NULL)
	{
		if (st->next < st->source->nrows)
			ExecStoreHeapTuple(st->source->rows[st->next++], slot, false);
		return slot;
	}

	for (;;)
	{
		bool		shouldFree;
		HeapTuple	tuple;
		bool		inside;

		if (!table_scan_getnextslot(st->scan, ForwardScanDirection, st->backingSlot))
			return slot;
		if (st->cut == NULL)
			break;
		tuple = ExecFetchSlotHeapTuple(st->backingSlot, false, &shouldFree);
		inside = scan_in_cut(HeapTupleHeaderGetRawXmin(tuple->t_data), st->cut);
		if (shouldFree)
			heap_freetuple(tuple);
		if (inside)
			break;
	}
	slot_getallattrs(st->backingSlot);
	for (i = 0; i < natts; i++)
	{
		if (st->map[i] > 0)
		{
			slot->tts_values[i] = st->backingSlot->tts_values[st->map[i] - 1];
			slot->tts_isnull[i] = st->backingSlot->tts_isnull[st->map[i] - 1];
		}
		else
		{
			slot->tts_values[i] = (Datum) 0;
			slot->tts_isnull[i] = true;
		}
	}
	return ExecStoreVirtualTuple(slot);
}

static void
scan_rescan(ForeignScanState *node)
{
	StreamScanState *st = node->fdw_state;

	if (st->source != NULL)
		st->next = 0;
	else
		table_rescan(st->scan, NULL);
}

static void
scan_end(ForeignScanState *node)
{
	StreamScanState *st = node->fdw_state;

	if (st == NULL || st->source != NULL)
		return;
	table_endscan(st->scan);
	ExecDropSingleTupleTableSlot(st->backingSlot);
	table_close(st->backing, NoLock);
}

/* KappaStreamScanRoutine fills in the planning and scan callbacks. */
void
KappaStreamScanRoutine(FdwRoutine *routine)
{
	routine->GetForeignRelSize = scan_get_rel_size;
	routine->GetForeignPaths = scan_get_paths;
	routine->GetForeignPlan = scan_get_plan;
	routine->BeginForeignScan = scan_begin;
	routine->IterateForeignScan = scan_next;
	routine->ReScanForeignScan = scan_rescan;
	routine->EndForeignScan = scan_end;
}
