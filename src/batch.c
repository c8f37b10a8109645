/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The one entry point that applies new stream rows: KappaBatchApply.
 *
 * INSERT and COPY into a stream (stream_fdw.c) and the Kafka worker both
 * gather rows into a KappaBatch and call KappaBatchApply, which, inside the
 * caller's transaction, appends the rows to the stream's retained storage
 * (if any) and applies them to every continuous view on the stream.  A view
 * therefore cannot tell where its rows came from, and a rolled-back
 * transaction or savepoint takes the view changes with it.
 *
 * While a view's delta query runs, the batch is "active": the stream's
 * foreign scan (stream_fdw.c) reads the batch's rows instead of storage.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "nodes/makefuncs.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "stats.h"
#include "view.h"

static KappaBatch *kappa_active_batch = NULL;

/* A view's accumulator in a batch; acc is NULL if the view cannot have one. */
typedef struct BatchAccum
{
	Oid			viewRelid;
	KappaViewInfo *view;		/* the view the accumulator was made for */
	KappaViewAccum *acc;
	bool		pushed;			/* rows go straight in (KappaAccumPushRow) */
} BatchAccum;

static BatchAccum *batch_accum(KappaBatch *batch, KappaViewInfo *view);

/*
 * Rows are formed directly into blocks of this size that the batch keeps
 * across applies, so a long COPY neither fragments memory nor faults pages
 * in again for every chunk.  Larger rows get their own allocation.
 */
#define KAPPA_BATCH_BLOCK_SIZE (1024 * 1024)
#define KAPPA_BATCH_LARGE_ROW (KAPPA_BATCH_BLOCK_SIZE / 8)

/* Allocate 'len' bytes for a row of the batch. */
static void *
batch_alloc(KappaBatch *batch, Size len)
{
	char	   *p;

	len = MAXALIGN(len);
	batch->bytes += len;
	if (len > KAPPA_BATCH_LARGE_ROW)
		return MemoryContextAlloc(batch->cxt, len);
	if (batch->curBlock < 0 || batch->blockUsed + len > KAPPA_BATCH_BLOCK_SIZE)
	{
		batch->curBlock++;
		if (batch->curBlock == batch->nblocks)
		{
			if (batch->nblocks == batch->maxblocks)
			{
				batch->maxblocks = Max(8, batch->maxblocks * 2);
				batch->blocks = batch->blocks == NULL ?
					MemoryContextAlloc(batch->blockcxt, sizeof(char *) * batch->maxblocks) :
					repalloc(batch->blocks, sizeof(char *) * batch->maxblocks);
			}
			batch->blocks[batch->nblocks++] =
				MemoryContextAlloc(batch->blockcxt, KAPPA_BATCH_BLOCK_SIZE);
		}
		batch->blockUsed = 0;
	}
	p = batch->blocks[batch->curBlock] + batch->blockUsed;
	batch->blockUsed += len;
	return p;
}

/*
 * Form the row in 'slot' as a heap tuple in the batch's blocks; the same
 * tuple heap_form_tuple would build, except that alignment padding is not
 * zeroed (the tuple never reaches disk).
 */
static HeapTuple
batch_form_tuple(KappaBatch *batch, TupleTableSlot *slot)
{
	TupleDesc	desc = batch->tupdesc;
	int			natts = desc->natts;
	Datum	   *values;
	bool	   *isnull;
	bool		hasnull = false;
	Size		len;
	Size		hoff;
	Size		dataLen;
	HeapTuple	tuple;
	HeapTupleHeader td;
	int			i;

	slot_getallattrs(slot);
	values = slot->tts_values;
	isnull = slot->tts_isnull;
	for (i = 0; i < natts; i++)
	{
		if (isnull[i])
		{
			hasnull = true;
			break;
		}
	}
	len = offsetof(HeapTupleHeaderData, t_bits);
	if (hasnull)
		len += BITMAPLEN(natts);
	hoff = len = MAXALIGN(len);
	dataLen = heap_compute_data_size(desc, values, isnull);
	len += dataLen;

	tuple = batch_alloc(batch, HEAPTUPLESIZE + len);
	td = (HeapTupleHeader) ((char *) tuple + HEAPTUPLESIZE);
	tuple->t_len = len;
	ItemPointerSetInvalid(&(tuple->t_self));
	tuple->t_tableOid = InvalidOid;
	tuple->t_data = td;
	memset(td, 0, hoff);
	HeapTupleHeaderSetDatumLength(td, len);
	HeapTupleHeaderSetTypeId(td, desc->tdtypeid);
	HeapTupleHeaderSetTypMod(td, desc->tdtypmod);
	HeapTupleHeaderSetNatts(td, natts);
	td->t_hoff = hoff;
	heap_fill_tuple(desc, values, isnull, (char *) td + hoff, dataLen,
					&td->t_infomask, (hasnull ? td->t_bits : NULL));
	return tuple;
}

/*
 * KappaBatchCreate returns an empty batch for 'stream', allocated under
 * 'parent'.  The stream's row type is copied, so the batch does not depend
 * on the relation staying open.
 */
KappaBatch *
KappaBatchCreate(Relation stream, MemoryContext parent)
{
	KappaBatch *batch;

	batch = MemoryContextAllocZero(parent, sizeof(KappaBatch));
	batch->streamRelid = RelationGetRelid(stream);
	batch->tupdesc = CreateTupleDescCopy(RelationGetDescr(stream));
	batch->cxt = AllocSetContextCreate(parent, "pg_kappa batch rows",
									   ALLOCSET_DEFAULT_SIZES);
	batch->blockcxt = AllocSetContextCreate(parent, "pg_kappa batch blocks",
											ALLOCSET_DEFAULT_SIZES);
	batch->curBlock = -1;
	batch->maxrows = 1024;
	batch->rows = MemoryContextAlloc(parent, sizeof(HeapTuple) * batch->maxrows);
	batch->parentcxt = parent;

	/*
	 * Views over the stream alone take the rows as they come (in chunks,
	 * KappaBatchPush); the rows themselves are kept to the end only for
	 * retained storage and the other views.
	 */
	batch->info = KappaGetStreamInfo(batch->streamRelid);
	batch->keepRows = batch->info->retained;
	{
		ListCell   *lc;

		foreach(lc, batch->info->views)
		{
			KappaViewInfo *view = lfirst(lc);
			BatchAccum *ba = view->push != NULL ? batch_accum(batch, view) : NULL;

			if (ba != NULL && ba->acc != NULL)
			{
				ba->pushed = true;
				batch->anyPushed = true;
			}
			else
				batch->keepRows = true;
		}
	}
	if (batch->anyPushed)
		batch->pushSlot = MakeSingleTupleTableSlot(batch->tupdesc, &TTSOpsHeapTuple);

	/* the stream's NOT NULL and CHECK constraints, checked on every row */
	if (RelationGetDescr(stream)->constr != NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(parent);

		batch->checkEstate = CreateExecutorState();
		batch->checkRelInfo = makeNode(ResultRelInfo);
		InitResultRelInfo(batch->checkRelInfo, stream, 0, NULL, 0);
		MemoryContextSwitchTo(oldcxt);
	}
	return batch;
}

/*
 * KappaBatchAdd checks the row in 'slot' against the stream's constraints
 * (raising the executor's error for a violation) and copies it into the
 * batch.  batch->bytes tells callers how much memory the batch's rows take;
 * KappaBatchPushDue when to call KappaBatchPush.
 */
void
KappaBatchAdd(KappaBatch *batch, TupleTableSlot *slot)
{
	if (batch->checkRelInfo != NULL)
	{
		ExecConstraints(batch->checkRelInfo, slot, batch->checkEstate);
		ResetPerTupleExprContext(batch->checkEstate);
	}
	batch->rowsAdded++;
	if (!batch->keepRows && !batch->anyPushed)
		return;
	if (batch->nrows >= batch->maxrows)
	{
		batch->maxrows *= 2;
		batch->rows = repalloc_huge(batch->rows,
									sizeof(HeapTuple) * batch->maxrows);
	}
	batch->rows[batch->nrows++] = batch_form_tuple(batch, slot);
}

/* Forget the batch's rows: nothing needs them any more. */
static void
batch_forget_rows(KappaBatch *batch)
{
	batch->nrows = 0;
	batch->pushedRows = 0;
	batch->bytes = 0;
	batch->curBlock = -1;
	MemoryContextReset(batch->cxt);
}

/*
 * KappaBatchPush hands the rows added since the last push to every view
 * that takes pushed rows, each view's code running as its owner
 * (KappaViewPushRows).  Rows that nothing else needs are forgotten.
 */
void
KappaBatchPush(KappaBatch *batch)
{
	ListCell   *lc;
	int			first = batch->pushedRows;

	if (!batch->anyPushed || batch->nrows == first)
		return;
	foreach(lc, batch->accums)
	{
		BatchAccum *ba = lfirst(lc);

		if (ba->pushed)
			KappaViewPushRows(ba->view, ba->acc, batch->pushSlot,
							  batch->rows + first, batch->nrows - first);
	}
	batch->pushedRows = batch->nrows;
	if (!batch->keepRows)
		batch_forget_rows(batch);
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

/* Append the batch's rows to the stream's retained storage. */
static void
append_to_storage(KappaBatch *batch, Oid backingRelid)
{
	Relation	rel;
	TupleDesc	desc;
	TupleTableSlot **slots;
	int			nslots = 0;
	int			maxslots = 1000;
	BulkInsertState bistate;
	CommandId	cid = GetCurrentCommandId(true);
	TimestampTz now = GetCurrentTimestamp();
	int			i;
	AttrNumber *map;
	int			j;
	Datum	   *values;
	bool	   *nulls;

	rel = table_open(backingRelid, RowExclusiveLock);
	desc = RelationGetDescr(rel);

	/* backing column -> stream column */
	{
		AttrNumber *streamToBacking = KappaRetainedColumnMap(batch->tupdesc, rel);

		map = palloc0(sizeof(AttrNumber) * desc->natts);
		for (j = 0; j < batch->tupdesc->natts; j++)
		{
			if (streamToBacking[j] > 0)
				map[streamToBacking[j] - 1] = j + 1;
		}
	}

	slots = palloc(sizeof(TupleTableSlot *) * maxslots);
	for (i = 0; i < maxslots; i++)
		slots[i] = table_slot_create(rel, NULL);
	bistate = GetBulkInsertState();

	values = palloc(sizeof(Datum) * batch->tupdesc->natts);
	nulls = palloc(sizeof(bool) * batch->tupdesc->natts);
	for (i = 0; i < batch->nrows; i++)
	{
		TupleTableSlot *slot = slots[nslots];

		heap_deform_tuple(batch->rows[i], batch->tupdesc, values, nulls);
		ExecClearTuple(slot);
		for (j = 0; j < desc->natts; j++)
		{
			if (map[j] > 0)
			{
				slot->tts_values[j] = values[map[j] - 1];
				slot->tts_isnull[j] = nulls[map[j] - 1];
			}
			else if (strcmp(NameStr(TupleDescAttr(desc, j)->attname),
							"kappa_arrived_at") == 0)
			{
				slot->tts_values[j] = TimestampTzGetDatum(now);
				slot->tts_isnull[j] = false;
			}
			else
			{
				slot->tts_values[j] = (Datum) 0;
				slot->tts_isnull[j] = true;
			}
		}
		ExecStoreVirtualTuple(slot);
		if (++nslots == maxslots || i == batch->nrows - 1)
		{
			table_multi_insert(rel, slots, nslots, cid, 0, bistate);
			nslots = 0;
		}
	}

	FreeBulkInsertState(bistate);
	for (i = 0; i < maxslots; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	table_close(rel, NoLock);
}

/*
 * Get the stream's description with every relation its views read locked,
 * as the plan cache would lock them; if that let in an invalidation, load
 * the views again.
 */
static KappaStreamInfo *
get_locked_stream_info(Oid streamRelid)
{
	for (;;)
	{
		KappaStreamInfo *info = KappaGetStreamInfo(streamRelid);
		ListCell   *lc;

		foreach(lc, info->views)
			KappaViewLockRelations(lfirst(lc));
		if (info->valid)
			return info;
		KappaReleaseStreamInfo(info);
	}
}

/* Count the batch's rows once they are applied, and forget them. */
static void
batch_rows_done(KappaBatch *batch)
{
	KappaStatsCountStream(batch->streamRelid, batch->rowsAdded - batch->rowsCounted);
	batch->rowsCounted = batch->rowsAdded;
	batch_forget_rows(batch);
}

/* The accumulator of 'view' in the batch, created on first use. */
static BatchAccum *
batch_accum(KappaBatch *batch, KappaViewInfo *view)
{
	ListCell   *lc;
	BatchAccum *ba;
	MemoryContext oldcxt;

	foreach(lc, batch->accums)
	{
		ba = lfirst(lc);
		if (ba->viewRelid == view->viewRelid)
			return ba;
	}
	oldcxt = MemoryContextSwitchTo(batch->parentcxt);
	ba = palloc0(sizeof(BatchAccum));
	ba->viewRelid = view->viewRelid;
	ba->view = view;
	ba->acc = KappaAccumCreate(view, batch->parentcxt);
	batch->accums = lappend(batch->accums, ba);
	MemoryContextSwitchTo(oldcxt);
	return ba;
}

/*
 * Apply the batch's rows: retained storage takes them; each view merges
 * them into its materialization now or, with 'accumulate' and if it can,
 * combines their delta in memory for a later KappaViewFlushAccum.
 */
static void
apply_rows(KappaBatch *batch, bool accumulate)
{
	KappaStreamInfo *info;
	ListCell   *lc;

	/* rows not yet pushed into the views that take them */
	KappaBatchPush(batch);
	info = get_locked_stream_info(batch->streamRelid);
	PG_TRY();
	{
		if (info->retained && batch->nrows > 0)
			append_to_storage(batch, info->backingRelid);
		foreach(lc, info->views)
		{
			KappaViewInfo *view = lfirst(lc);
			BatchAccum *ba = accumulate ? batch_accum(batch, view) : NULL;

			if (ba != NULL && ba->pushed)
			{
				/* its rows went straight into its accumulator */
				if (KappaAccumMemory(ba->acc) > get_hash_memory_limit())
					KappaViewFlushAccum(ba->view, ba->acc);
			}
			else if (ba == NULL || ba->acc == NULL)
				KappaViewApplyBatch(view, batch);
			else
			{
				KappaViewAccumulateBatch(view, batch, ba->acc);

				/*
				 * bounded like a hash aggregate: work_mem *
				 * hash_mem_multiplier
				 */
				if (KappaAccumMemory(ba->acc) > get_hash_memory_limit())
					KappaViewFlushAccum(view, ba->acc);
			}
		}
	}
	PG_FINALLY();
	{
		kappa_active_batch = NULL;
		KappaReleaseStreamInfo(info);
	}
	PG_END_TRY();
	batch_rows_done(batch);
}

/*
 * KappaBatchAccumulate applies the batch's rows as one chunk of a longer
 * statement: retained storage takes them now; views combine their deltas in
 * memory (written by the KappaBatchApply that ends the statement) or, if
 * they cannot, are merged now.  The batch's rows are empty afterwards.
 */
void
KappaBatchAccumulate(KappaBatch *batch)
{
	apply_rows(batch, true);
}

/*
 * KappaBatchApply applies the batch's rows in the current transaction:
 * retained storage first, then every view on the stream in OID order, and
 * writes what earlier KappaBatchAccumulate calls combined.  The batch is
 * empty afterwards.  Errors propagate; the caller's (sub)transaction abort
 * undoes whatever was applied.
 */
void
KappaBatchApply(KappaBatch *batch)
{
	KappaStreamInfo *info;
	ListCell   *lc;

	if (batch->accums == NIL)
	{
		apply_rows(batch, false);
		return;
	}
	/* also when no row was kept: retained storage, the other views, stats */
	apply_rows(batch, true);

	/*
	 * Write what the views combined in memory -- only for views that still
	 * exist: plain DROP VIEW takes no lock on the stream, so a view may have
	 * gone while the statement ran (its rows then go with it).
	 */
	info = get_locked_stream_info(batch->streamRelid);
	PG_TRY();
	{
		foreach(lc, batch->accums)
		{
			BatchAccum *ba = lfirst(lc);
			ListCell   *lc2;

			if (ba->acc == NULL)
				continue;
			foreach(lc2, info->views)
			{
				if (((KappaViewInfo *) lfirst(lc2))->viewRelid == ba->viewRelid)
				{
					KappaViewFlushAccum(ba->view, ba->acc);
					break;
				}
			}
		}
	}
	PG_FINALLY();
	{
		KappaReleaseStreamInfo(info);
	}
	PG_END_TRY();
}

/* KappaBatchDestroy frees a batch (its rows need not be applied). */
void
KappaBatchDestroy(KappaBatch *batch)
{
	if (batch->checkEstate != NULL)
		FreeExecutorState(batch->checkEstate);
	if (batch->pushSlot != NULL)
		ExecDropSingleTupleTableSlot(batch->pushSlot);
	if (batch->info != NULL)
		KappaReleaseStreamInfo(batch->info);
	MemoryContextDelete(batch->cxt);
	MemoryContextDelete(batch->blockcxt);
	pfree(batch->rows);
	FreeTupleDesc(batch->tupdesc);
	pfree(batch);
}

/*
 * At the end of a transaction no batch is in use: forget the active batch
 * (an error may have left it set).
 */
static void
kappa_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		kappa_active_batch = NULL;
}

/* KappaBatchInit registers the transaction callback; once per backend. */
void
KappaBatchInit(void)
{
	RegisterXactCallback(kappa_xact_callback, NULL);
}

/*
 * KappaSetActiveBatch makes 'batch' (or nobody, with NULL) the source of
 * scans of its stream and returns the previously active batch.
 */
KappaBatch *
KappaSetActiveBatch(KappaBatch *batch)
{
	KappaBatch *prev = kappa_active_batch;

	kappa_active_batch = batch;
	return prev;
}

/* KappaActiveBatch returns the batch being applied to 'streamRelid', if any. */
KappaBatch *
KappaActiveBatch(Oid streamRelid)
{
	if (kappa_active_batch != NULL &&
		kappa_active_batch->streamRelid == streamRelid)
		return kappa_active_batch;
	return NULL;
}
