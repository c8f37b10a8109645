/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  The rows of one statement or Kafka batch on their way into a stream:
 *	  collected in memory, appended to retained storage, handed to the views.
 *
 * INSERT and COPY into a stream (stream_fdw.c) and the Kafka worker
 * (kafka_apply.c) both gather rows into a KappaBatch and call
 * KappaBatchApply, which, inside the caller's transaction, appends the rows
 * to the stream's retained storage (if any) and hands them to the view
 * runtime (view_apply.c), which applies them to every continuous view on the
 * stream.  A view therefore cannot tell where its rows came from, and a
 * rolled-back transaction or savepoint takes the view changes with it.
 *
 * Rows are kept only as long as something needs them: views that take
 * pushed rows get them every KAPPA_PUSH_CHUNK_ROWS rows (KappaBatchPush);
 * retained storage and the views that run a delta query get them at each
 * apply.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "stats.h"

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
	return KappaBatchCreateForRebuild(stream, InvalidOid, parent);
}

/*
 * KappaBatchCreateForRebuild returns an empty batch for 'stream' that, with
 * 'buildingMat' valid, feeds only the version of a view being rebuilt whose
 * materialization that is (view_rebuild.c replays the stream's Kafka
 * history into it): the rows are checked as any batch's, but not retained
 * and not counted -- the live batches did both when they first arrived.
 */
KappaBatch *
KappaBatchCreateForRebuild(Relation stream, Oid buildingMat, MemoryContext parent)
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

	/*
	 * Views over the stream alone take the rows as they come (in chunks,
	 * KappaBatchPush); the rows themselves are kept to the end only for
	 * retained storage and the other views.
	 */
	batch->onlyMat = buildingMat;
	batch->views = KappaStreamViewsGet(batch->streamRelid);
	batch->feed = KappaViewFeedCreate(batch->views, batch->tupdesc, buildingMat,
									  parent);
	batch->pushesRows = KappaViewFeedPushes(batch->feed);
	batch->keepRows = (OidIsValid(batch->views->backingRelid) &&
					   !OidIsValid(buildingMat)) ||
		KappaViewFeedNeedsRows(batch->feed);

	/* the stream's expectations, checked on every row after its constraints */
	batch->contract = KappaContractBegin(batch->streamRelid, parent);
	if (batch->contract != NULL && OidIsValid(buildingMat))
		KappaContractQuiet(batch->contract);

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
 * (raising the executor's error for a violation) and its expectations
 * (KappaContractCheck: a violation may skip the row or raise an error), and
 * copies it into the batch.  batch->bytes tells callers how much memory the
 * batch's rows take; KappaBatchPushDue when to call KappaBatchPush.
 */
void
KappaBatchAdd(KappaBatch *batch, TupleTableSlot *slot)
{
	if (batch->checkRelInfo != NULL)
	{
		ExecConstraints(batch->checkRelInfo, slot, batch->checkEstate);
		ResetPerTupleExprContext(batch->checkEstate);
	}
	if (batch->contract != NULL && !KappaContractCheck(batch->contract, slot))
		return;
	batch->rowsAdded++;
	if (!batch->keepRows && !batch->pushesRows)
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
 * that takes pushed rows (KappaViewFeedPush).  Rows that nothing else needs
 * are forgotten.
 */
void
KappaBatchPush(KappaBatch *batch)
{
	int			first = batch->pushedRows;

	if (!batch->pushesRows || batch->nrows == first)
		return;
	KappaViewFeedPush(batch->feed, batch->rows + first, batch->nrows - first);
	batch->pushedRows = batch->nrows;
	if (!batch->keepRows)
		batch_forget_rows(batch);
}

/* Append the batch's rows to the stream's retained storage. */
static void
batch_append_to_storage(KappaBatch *batch, Oid backingRelid)
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

/* Count the batch's rows once they are applied, and forget them. */
static void
batch_rows_done(KappaBatch *batch)
{
	if (!OidIsValid(batch->onlyMat))
		KappaStatsCountStream(batch->streamRelid, batch->rowsAdded - batch->rowsCounted);
	batch->rowsCounted = batch->rowsAdded;
	batch_forget_rows(batch);
}

/*
 * Apply the batch's rows: retained storage takes them, then the views
 * (KappaViewFeedApply; with 'accumulate', views that can combine their
 * deltas in memory until KappaBatchApply ends the statement).
 */
static void
batch_apply_rows(KappaBatch *batch, bool accumulate)
{
	KappaStreamViews *locked;

	/* rows not yet pushed into the views that take them */
	KappaBatchPush(batch);
	locked = KappaStreamViewsGetLocked(batch->streamRelid);
	PG_TRY();
	{
		if (OidIsValid(locked->backingRelid) && batch->nrows > 0 &&
			!OidIsValid(batch->onlyMat))
			batch_append_to_storage(batch, locked->backingRelid);
		KappaViewFeedApply(batch->feed, locked, batch->rows, batch->nrows,
						   accumulate);
	}
	PG_FINALLY();
	{
		KappaStreamViewsRelease(locked);
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
	batch_apply_rows(batch, true);
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
	KappaStreamViews *locked;

	if (!KappaViewFeedAccumulating(batch->feed))
	{
		batch_apply_rows(batch, false);
		return;
	}
	/* also when no row was kept: retained storage, the other views, stats */
	batch_apply_rows(batch, true);

	locked = KappaStreamViewsGetLocked(batch->streamRelid);
	PG_TRY();
	{
		KappaViewFeedFlush(batch->feed, locked);
	}
	PG_FINALLY();
	{
		KappaStreamViewsRelease(locked);
	}
	PG_END_TRY();
}

/*
 * KappaBatchPending tells whether KappaBatchApply has anything to do: rows
 * not yet applied, or views holding rows in memory.
 */
bool
KappaBatchPending(KappaBatch *batch)
{
	return batch->nrows > 0 || KappaViewFeedAccumulating(batch->feed);
}

/*
 * KappaBatchDestroy frees a batch (its rows need not be applied).  Called
 * when the statement or Kafka range succeeded, it also ends the batch's
 * expectation run: its counts are recorded, and a WARNING tells an SQL
 * writer about the rows that were skipped.
 */
void
KappaBatchDestroy(KappaBatch *batch)
{
	if (batch->contract != NULL)
		KappaContractEnd(batch->contract);
	if (batch->checkEstate != NULL)
		FreeExecutorState(batch->checkEstate);
	KappaViewFeedDestroy(batch->feed);
	KappaStreamViewsRelease(batch->views);
	MemoryContextDelete(batch->cxt);
	MemoryContextDelete(batch->blockcxt);
	pfree(batch->rows);
	FreeTupleDesc(batch->tupdesc);
	pfree(batch);
}
