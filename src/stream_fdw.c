/*-------------------------------------------------------------------------
 *
 * stream_fdw.c
 *	  The foreign-data wrapper behind streams, and the INSERT/COPY path into
 *	  a stream.
 *
 * A stream is a foreign table of server kappa_streams.  INSERT (single-row,
 * multi-row, INSERT ... SELECT, prepared) and COPY FROM reach the insert
 * callbacks here: rows are checked against the stream's constraints (core
 * does not check them for foreign tables) and expectations (contracts.c),
 * gathered into a KappaBatch and
 * applied with KappaBatchApply whenever they fill kappa.stream_batch_memory
 * and at the
 * end of the statement.  A stream nobody reads (no views, no retention)
 * writes nothing at all.
 *
 * Scans of a stream (planning and reading) are in stream_scan.c; the
 * handler here hands out both.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "commands/defrem.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "foreign/fdwapi.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "pg_kappa.h"
#include "stats.h"

/* rows the executor hands us per ExecForeignBatchInsert call */
#define KAPPA_INSERT_BATCH_SIZE 1000

typedef struct StreamModifyState
{
	KappaStreamViews *views;	/* held until the end of the statement */
	KappaBatch *batch;			/* NULL when nothing consumes the rows */
	KappaContractRun *contract; /* the stream's expectations, when batch is
								 * NULL (else the batch checks them) */
	EState	   *estate;
	bool		checkConstraints;
	uint64		unconsumedRows;
} StreamModifyState;

PG_FUNCTION_INFO_V1(kappa_stream_fdw_handler);
PG_FUNCTION_INFO_V1(kappa_stream_fdw_validator);

static int
fdw_is_updatable(Relation rel)
{
	return (1 << CMD_INSERT);
}

static void
fdw_begin_insert_common(ResultRelInfo *rinfo, EState *estate)
{
	Relation	rel = rinfo->ri_RelationDesc;
	StreamModifyState *st;

	st = MemoryContextAllocZero(estate->es_query_cxt, sizeof(StreamModifyState));
	st->estate = estate;
	st->views = KappaStreamViewsGet(RelationGetRelid(rel));
	st->checkConstraints = (RelationGetDescr(rel)->constr != NULL);
	if (st->views->views != NIL || OidIsValid(st->views->backingRelid))
		st->batch = KappaBatchCreate(rel, estate->es_query_cxt);
	else
		st->contract = KappaContractBegin(RelationGetRelid(rel), estate->es_query_cxt);
	rinfo->ri_FdwState = st;
}

static void
fdw_begin_modify(ModifyTableState *mtstate, ResultRelInfo *rinfo,
				 List *fdw_private, int subplan_index, int eflags)
{
	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;
	fdw_begin_insert_common(rinfo, mtstate->ps.state);
}

static void
fdw_begin_insert(ModifyTableState *mtstate, ResultRelInfo *rinfo)
{
	fdw_begin_insert_common(rinfo, mtstate->ps.state);
}

static inline void
fdw_add_row(StreamModifyState *st, ResultRelInfo *rinfo, TupleTableSlot *slot)
{
	if (st->batch == NULL)
	{
		/* nothing keeps the row, but it must still be a valid row */
		if (st->checkConstraints)
			ExecConstraints(rinfo, slot, st->estate);
		if (st->contract != NULL && !KappaContractCheck(st->contract, slot))
			return;
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
fdw_exec_insert(EState *estate, ResultRelInfo *rinfo, TupleTableSlot *slot,
				TupleTableSlot *planSlot)
{
	fdw_add_row(rinfo->ri_FdwState, rinfo, slot);
	return slot;
}

static TupleTableSlot **
fdw_exec_batch_insert(EState *estate, ResultRelInfo *rinfo,
					  TupleTableSlot **slots, TupleTableSlot **planSlots,
					  int *numSlots)
{
	StreamModifyState *st = rinfo->ri_FdwState;
	int			i;

	for (i = 0; i < *numSlots; i++)
		fdw_add_row(st, rinfo, slots[i]);
	return slots;
}

/*
 * The executor hands us rows in batches, except when it needs each row back
 * at once: RETURNING, WITH CHECK OPTION, or row triggers on the stream.
 */
static int
fdw_batch_size(ResultRelInfo *rinfo)
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
fdw_end_insert_common(ResultRelInfo *rinfo)
{
	StreamModifyState *st = rinfo->ri_FdwState;

	if (st == NULL)
		return;
	if (st->batch != NULL)
	{
		/* the rows left, and what earlier chunks combined in memory */
		if (KappaBatchPending(st->batch))
			KappaBatchApply(st->batch);
		KappaBatchDestroy(st->batch);
	}
	else
	{
		if (st->contract != NULL)
			KappaContractEnd(st->contract);
		KappaStatsCountStream(st->views->relid, st->unconsumedRows);
	}
	KappaStreamViewsRelease(st->views);
	rinfo->ri_FdwState = NULL;
}

static void
fdw_end_modify(EState *estate, ResultRelInfo *rinfo)
{
	fdw_end_insert_common(rinfo);
}

static void
fdw_end_insert(EState *estate, ResultRelInfo *rinfo)
{
	fdw_end_insert_common(rinfo);
}

/*
 * kappa_stream_fdw_handler returns the FdwRoutine of streams.
 */
Datum
kappa_stream_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	KappaStreamScanRoutine(routine);

	routine->IsForeignRelUpdatable = fdw_is_updatable;
	routine->BeginForeignModify = fdw_begin_modify;
	routine->ExecForeignInsert = fdw_exec_insert;
	routine->ExecForeignBatchInsert = fdw_exec_batch_insert;
	routine->GetForeignModifyBatchSize = fdw_batch_size;
	routine->EndForeignModify = fdw_end_modify;
	routine->BeginForeignInsert = fdw_begin_insert;
	routine->EndForeignInsert = fdw_end_insert;

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
