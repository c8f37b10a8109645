/*-------------------------------------------------------------------------
 *
 * stream_fdw.c
 *	  The foreign-data wrapper behind streams.
 *
 * A stream is a foreign table of server kappa_streams.  INSERT (single-row,
 * multi-row, INSERT ... SELECT, prepared) and COPY FROM reach the insert
 * callbacks here: rows are checked against the stream's constraints (core
 * does not check them for foreign tables), gathered into a KappaBatch and
 * applied with KappaBatchApply whenever they fill kappa.stream_batch_memory
 * and at the
 * end of the statement.  A stream nobody reads (no views, no retention)
 * writes nothing at all.
 *
 * Scans serve two purposes.  While a view's delta query runs, the scan
 * returns the active batch's rows.  Otherwise a stream with retention is
 * read from its backing heap table; a stream without retention refuses to be
 * read, since it has no rows to show.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_foreign_table.h"
#include "commands/defrem.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "pg_kappa.h"
#include "kappa_errcodes.h"
#include "stats.h"

/*
 * Rows a scan of a stream is assumed to return when planning: view_engine.c
 * plans each delta query twice, for small and for large batches.
 */
double		kappa_planned_batch_rows = 1000;

/* rows the executor hands us per ExecForeignBatchInsert call */
#define KAPPA_INSERT_BATCH_SIZE 1000

typedef struct StreamScanState
{
	KappaBatch *batch;			/* active batch being applied, or NULL */
	int			next;			/* next row of the batch */
	Relation	backing;		/* retained rows, when not reading a batch */
	TableScanDesc scan;
	TupleTableSlot *backingSlot;
	AttrNumber *map;			/* stream attno -> backing attno */
} StreamScanState;

typedef struct StreamModifyState
{
	KappaStreamInfo *info;		/* held until the end of the statement */
	KappaBatch *batch;			/* NULL when nothing consumes the rows */
	EState	   *estate;
	bool		checkConstraints;
	uint64		unconsumedRows;
} StreamModifyState;

PG_FUNCTION_INFO_V1(kappa_stream_fdw_handler);
PG_FUNCTION_INFO_V1(kappa_stream_fdw_validator);

/* Planning: a stream is a cheap sequential source. */
static void
stream_get_rel_size(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	baserel->rows = kappa_planned_batch_rows;
}

static void
stream_get_paths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	Cost		total = baserel->rows * cpu_tuple_cost;

	add_path(baserel, (Path *)
			 create_foreignscan_path(root, baserel, NULL, baserel->rows,
									 0, total, NIL, NULL, NULL, NIL));
}

static ForeignScan *
stream_get_plan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
				ForeignPath *best_path, List *tlist, List *scan_clauses,
				Plan *outer_plan)
{
	scan_clauses = extract_actual_clauses(scan_clauses, false);
	return make_foreignscan(tlist, scan_clauses, baserel->relid,
							NIL, NIL, NIL, NIL, outer_plan);
}

static void
stream_begin_scan(ForeignScanState *node, int eflags)
{
	Relation	rel = node->ss.ss_currentRelation;
	Oid			relid = RelationGetRelid(rel);
	StreamScanState *st;
	Oid			backingRelid;
	TupleDesc	sdesc = RelationGetDescr(rel);

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;

	st = palloc0(sizeof(StreamScanState));
	node->fdw_state = st;
	st->batch = KappaActiveBatch(relid);
	if (st->batch != NULL)
		return;

	backingRelid = KappaStreamBackingRelid(relid);
	if (!OidIsValid(backingRelid))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NO_STREAM_ROWS),
				 errmsg("cannot read from stream \"%s\"", RelationGetRelationName(rel)),
				 errdetail("The stream keeps no rows (retain => NULL); its rows only feed continuous views."),
				 errhint("Query a continuous view over the stream, or create the stream with retain => 'infinity' or an interval to keep its rows.")));

	st->backing = table_open(backingRelid, AccessShareLock);
	st->map = KappaRetainedColumnMap(sdesc, st->backing);
	st->backingSlot = table_slot_create(st->backing, NULL);
	st->scan = table_beginscan(st->backing, node->ss.ps.state->es_snapshot,
							   0, NULL);
}

static TupleTableSlot *
stream_iterate_scan(ForeignScanState *node)
{
	StreamScanState *st = node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	int			natts = slot->tts_tupleDescriptor->natts;
	int			i;

	ExecClearTuple(slot);
	if (st->batch != NULL)
	{
		if (st->next < st->batch->nrows)
			ExecStoreHeapTuple(st->batch->rows[st->next++], slot, false);
		return slot;
	}

	if (!table_scan_getnextslot(st->scan, ForwardScanDirection, st->backingSlot))
		return slot;
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
stream_rescan(ForeignScanState *node)
{
	StreamScanState *st = node->fdw_state;

	if (st->batch != NULL)
		st->next = 0;
	else
		table_rescan(st->scan, NULL);
}

static void
stream_end_scan(ForeignScanState *node)
{
	StreamScanState *st = node->fdw_state;

	if (st == NULL || st->batch != NULL)
		return;
	table_endscan(st->scan);
	ExecDropSingleTupleTableSlot(st->backingSlot);
	table_close(st->backing, NoLock);
}

/* Inserting. */
static int
stream_is_updatable(Relation rel)
{
	return (1 << CMD_INSERT);
}

static void
stream_begin_insert_common(ResultRelInfo *rinfo, EState *estate)
{
	Relation	rel = rinfo->ri_RelationDesc;
	StreamModifyState *st;

	st = MemoryContextAllocZero(estate->es_query_cxt, sizeof(StreamModifyState));
	st->estate = estate;
	st->info = KappaGetStreamInfo(RelationGetRelid(rel));
	st->checkConstraints = (RelationGetDescr(rel)->constr != NULL);
	if (st->info->views != NIL || st->info->retained)
		st->batch = KappaBatchCreate(rel, estate->es_query_cxt);
	rinfo->ri_FdwState = st;
}

static void
stream_begin_modify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
					List *fdw_private, int subplan_index, int eflags)
{
	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	stream_begin_insert_common(rinfo, mtstate->ps.state);
}

static void
stream_begin_insert(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
	stream_begin_insert_common(rinfo, mtstate->ps.state);
}

static inline void
stream_add_row(StreamModifyState *st, ResultRelInfo *rinfo, TupleTableSlot *slot)
{
	if (st->batch == NULL)
	{
		/* nothing keeps the row, but it must still be a valid row */
		if (st->checkConstraints)
			ExecConstraints(rinfo, slot, st->estate);
		st->unconsumedRows++;
		return;
	}
	KappaBatchAdd(st->batch, slot);
	if (KappaBatchPushDue(st->batch))
		KappaBatchPush(st->batch);
	if (st->batch->bytes >= (Size) kappa_stream_batch_memory_kb * 1024)
		KappaBatchAccumulate(st->batch);
}

static TupleTableSlot *
stream_exec_insert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
				   TupleTableSlot *planSlot)
{
	stream_add_row(rinfo->ri_FdwState, rinfo, slot);
	return slot;
}

static TupleTableSlot **
stream_exec_batch_insert(EState *estate, ResultRelInfo *rinfo,
						 TupleTableSlot **slots, TupleTableSlot **planSlots,
						 int *numSlots)
{
	StreamModifyState *st = rinfo->ri_FdwState;
	int			i;

	for (i = 0; i < *numSlots; i++)
		stream_add_row(st, rinfo, slots[i]);
	return slots;
}

/*
 * The executor hands us rows in batches, except when it needs each row back
 * at once: RETURNING, WITH CHECK OPTION, or row triggers on the stream.
 */
static int
stream_batch_size(ResultRelInfo *rinfo)
{
	TriggerDesc *trigdesc = rinfo->ri_TrigDesc;

	if (rinfo->ri_projectReturning != NULL ||
		rinfo->ri_WithCheckOptions != NIL ||
		(trigdesc != NULL &&
		 (trigdesc->trig_insert_before_row || trigdesc->trig_insert_after_row)))
		return 1;
	return KAPPA_INSERT_BATCH_SIZE;
}

static void
stream_end_insert_common(ResultRelInfo *rinfo)
{
	StreamModifyState *st = rinfo->ri_FdwState;

	if (st == NULL)
		return;
	if (st->batch != NULL)
	{
		/* the rows left, and what earlier chunks combined in memory */
		if (st->batch->nrows > 0 || st->batch->accums != NIL)
			KappaBatchApply(st->batch);
		KappaBatchDestroy(st->batch);
	}
	else
		KappaStatsCountStream(st->info->relid, st->unconsumedRows);
	KappaReleaseStreamInfo(st->info);
	rinfo->ri_FdwState = NULL;
}

static void
stream_end_modify(EState *estate, ResultRelInfo *rinfo)
{
	stream_end_insert_common(rinfo);
}

static void
stream_end_insert(EState *estate, ResultRelInfo *rinfo)
{
	stream_end_insert_common(rinfo);
}

/*
 * kappa_stream_fdw_handler returns the FdwRoutine of streams.
 */
Datum
kappa_stream_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->GetForeignRelSize = stream_get_rel_size;
	routine->GetForeignPaths = stream_get_paths;
	routine->GetForeignPlan = stream_get_plan;
	routine->BeginForeignScan = stream_begin_scan;
	routine->IterateForeignScan = stream_iterate_scan;
	routine->ReScanForeignScan = stream_rescan;
	routine->EndForeignScan = stream_end_scan;

	routine->IsForeignRelUpdatable = stream_is_updatable;
	routine->BeginForeignModify = stream_begin_modify;
	routine->ExecForeignInsert = stream_exec_insert;
	routine->ExecForeignBatchInsert = stream_exec_batch_insert;
	routine->GetForeignModifyBatchSize = stream_batch_size;
	routine->EndForeignModify = stream_end_modify;
	routine->BeginForeignInsert = stream_begin_insert;
	routine->EndForeignInsert = stream_end_insert;

	PG_RETURN_POINTER(routine);
}

/*
 * kappa_stream_fdw_validator refuses every option: streams are configured
 * through kappa.create_stream.
 */
Datum
kappa_stream_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));

	if (options != NIL)
	{
		DefElem    *def = linitial(options);

		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", def->defname),
				 errhint("Streams take no options; use kappa.create_stream().")));
	}
	PG_RETURN_VOID();
}
