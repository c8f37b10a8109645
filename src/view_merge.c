/*-------------------------------------------------------------------------
 *
 * view_merge.c
 *	  Merging a view's delta rows (group keys and partial states) into its
 *	  materialization.
 *
 * KappaMergeReceiver returns a DestReceiver: the delta query's rows, or the
 * groups an accumulator flushes, are sent to it.  Each row is merged into
 * the materialization (see view.h for its layout): the group is probed in
 * the unique index with a dirty snapshot; if present, the stored states are
 * combined with the delta's (agg_state.c), the outputs recomputed and the
 * row updated; if absent, the row is inserted with speculative insertion,
 * as INSERT ... ON CONFLICT does.  A concurrent writer of the same group is
 * waited for and the merge retried, so no update is lost; groups arrive in
 * key order, so writers do not deadlock.
 *
 * The caller runs the receiver as the view's owner, in a
 * security-restricted operation (view_apply.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "util.h"
#include "view.h"

typedef struct MergeReceiver
{
	DestReceiver pub;
	KappaViewInfo *view;
	Relation	mat;
	Relation	index;
	EState	   *estate;
	ResultRelInfo *rri;
	List	   *arbiterIndexes;
	IndexScanDesc scan;
	SnapshotData dirty;
	ScanKey		skeys;
	int			nscankeys;
	TupleTableSlot *oldslot;
	TupleTableSlot *newslot;
	TupleTableSlot *finalsSlot;
	CommandId	cid;
	TimestampTz now;
	uint64		groups;
	MemoryContext scancxt;		/* lives as long as the index scan */
} MergeReceiver;

/*
 * Find the stored row of a group and wait out concurrent writers of it.
 * Returns true with the row in receiver->oldslot (copied out of the buffer).
 */
static bool
merge_lookup_group(MergeReceiver *r, Datum *keys, bool *keynulls)
{
	KappaViewInfo *view = r->view;
	int			i;

	for (i = 0; i < r->nscankeys; i++)
	{
		if (keynulls[i])
			ScanKeyEntryInitialize(&r->skeys[i], SK_ISNULL | SK_SEARCHNULL,
								   i + 1, InvalidStrategy, InvalidOid,
								   InvalidOid, InvalidOid, (Datum) 0);
		else
			ScanKeyEntryInitialize(&r->skeys[i], 0, i + 1, BTEqualStrategyNumber,
								   InvalidOid, view->keyCollations[i],
								   view->keyEqProcs[i], keys[i]);
	}

	for (;;)
	{
		TransactionId xwait = InvalidTransactionId;
		MemoryContext oldcxt;
		bool		found;

		/* the scan keeps state (killed items) across lookups */
		oldcxt = MemoryContextSwitchTo(r->scancxt);
		index_rescan(r->scan, r->skeys, r->nscankeys, NULL, 0);
		found = index_getnext_slot(r->scan, ForwardScanDirection, r->oldslot);
		if (found)
			ExecMaterializeSlot(r->oldslot);
		MemoryContextSwitchTo(oldcxt);
		if (!found)
			return false;
		if (TransactionIdIsValid(r->dirty.xmin))
			xwait = r->dirty.xmin;
		else if (TransactionIdIsValid(r->dirty.xmax))
			xwait = r->dirty.xmax;
		if (!TransactionIdIsValid(xwait))
			return true;
		XactLockTableWait(xwait, r->mat, &r->oldslot->tts_tid, XLTW_Lock);
	}
}

/*
 * Merge one delta row (keys + partial states) into the materialization.
 * Runs in the view's per-group memory context, reset at the end.
 */
static bool
merge_receive(TupleTableSlot *slot, DestReceiver *self)
{
	MergeReceiver *r = (MergeReceiver *) self;
	KappaViewInfo *view = r->view;
	ExprContext *econtext = view->econtext;
	MemoryContext oldcxt;
	Datum		keys[INDEX_MAX_KEYS];
	bool		keynulls[INDEX_MAX_KEYS];
	Datum	   *values;
	bool	   *nulls;
	int			i;

	slot_getallattrs(slot);
	oldcxt = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	if (view->globalView)
	{
		keys[0] = Int32GetDatum(0);
		keynulls[0] = false;
	}
	for (i = 0; i < view->nkeys; i++)
	{
		keys[i] = slot->tts_values[i];
		keynulls[i] = slot->tts_isnull[i];
	}

	for (;;)
	{
		bool		found = merge_lookup_group(r, keys, keynulls);
		TupleTableSlot *finals = r->finalsSlot;
		TupleTableSlot *newslot = r->newslot;

		if (found)
			slot_getallattrs(r->oldslot);

		ExecClearTuple(newslot);
		values = newslot->tts_values;
		nulls = newslot->tts_isnull;
		memset(nulls, true, sizeof(bool) * view->matNatts);

		ExecClearTuple(finals);
		for (i = 0; i < view->nkeys; i++)
		{
			finals->tts_values[i] = keys[i];
			finals->tts_isnull[i] = keynulls[i];
		}
		for (i = 0; i < Max(view->nkeys, 1); i++)
		{
			if (view->globalView && i == 0)
			{
				values[view->keyAttnos[0] - 1] = keys[0];
				nulls[view->keyAttnos[0] - 1] = false;
				break;
			}
			values[view->keyAttnos[i] - 1] = keys[i];
			nulls[view->keyAttnos[i] - 1] = keynulls[i];
		}
		for (i = 0; i < view->naggs; i++)
		{
			AttrNumber	sattno = view->stateAttnos[i];

			KappaAggCombineAndFinalize(&view->aggs[i], view->aggContext, found,
									   found ? r->oldslot->tts_values[sattno - 1] : (Datum) 0,
									   found ? r->oldslot->tts_isnull[sattno - 1] : true,
									   slot->tts_values[view->nkeys + i],
									   slot->tts_isnull[view->nkeys + i],
									   &values[sattno - 1], &nulls[sattno - 1],
									   &finals->tts_values[view->nkeys + i],
									   &finals->tts_isnull[view->nkeys + i]);
		}
		ExecStoreVirtualTuple(finals);

		econtext->ecxt_scantuple = finals;
		for (i = 0; i < list_length(view->shape->outExprs); i++)
			values[view->outAttnos[i] - 1] =
				ExecEvalExpr(view->outStates[i], econtext, &nulls[view->outAttnos[i] - 1]);
		if (view->havingState)
			values[view->havingAttno - 1] =
				ExecEvalExpr(view->havingState, econtext, &nulls[view->havingAttno - 1]);
		for (i = 0; i < list_length(view->shape->sortExprs); i++)
			values[view->sortAttnos[i] - 1] =
				ExecEvalExpr(view->sortStates[i], econtext, &nulls[view->sortAttnos[i] - 1]);
		values[view->updatedAttno - 1] = TimestampTzGetDatum(r->now);
		nulls[view->updatedAttno - 1] = false;
		ExecStoreVirtualTuple(newslot);

		if (found)
		{
			TM_FailureData tmfd;
			LockTupleMode lockmode;
			bool		updateIndexes;
			TM_Result	result;

			result = table_tuple_update(r->mat, &r->oldslot->tts_tid, newslot,
										r->cid, r->estate->es_snapshot,
										InvalidSnapshot, true, &tmfd,
										&lockmode, &updateIndexes);
			if (result == TM_Ok)
			{
				if (updateIndexes)
					ExecInsertIndexTuples(r->rri, newslot, r->estate, true, false,
										  NULL, NIL);
				break;
			}
			if (result != TM_Updated && result != TM_Deleted)
				elog(ERROR, "unexpected result %d updating continuous view \"%s\"",
					 (int) result, get_rel_name(view->viewRelid));
			/* a concurrent writer got there first: merge into its version */
		}
		else
		{
			ItemPointerData conflictTid;
			uint32		specToken;
			bool		specConflict = false;

			if (ExecCheckIndexConstraints(r->rri, newslot, r->estate, &conflictTid,
										  r->arbiterIndexes))
			{
				specToken = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
				table_tuple_insert_speculative(r->mat, newslot, r->cid, 0, NULL, specToken);
				ExecInsertIndexTuples(r->rri, newslot, r->estate, false, true,
									  &specConflict, r->arbiterIndexes);
				table_tuple_complete_speculative(r->mat, newslot, specToken, !specConflict);
				SpeculativeInsertionLockRelease(GetCurrentTransactionId());
				if (!specConflict)
					break;
			}
			/* someone inserted the group meanwhile: merge into theirs */
		}
		CHECK_FOR_INTERRUPTS();
	}

	r->groups++;
	MemoryContextSwitchTo(oldcxt);
	ResetExprContext(econtext);
	return true;
}

static void
merge_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	MergeReceiver *r = (MergeReceiver *) self;
	KappaViewInfo *view = r->view;

	r->scancxt = CurrentMemoryContext;
	r->mat = table_open(view->matRelid, RowExclusiveLock);
	r->estate = CreateExecutorState();
	r->estate->es_output_cid = r->cid;
	r->estate->es_snapshot = GetActiveSnapshot();
	r->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(r->rri, r->mat, 0, NULL, 0);
	ExecOpenIndices(r->rri, true);
	r->index = NULL;
	for (int i = 0; i < r->rri->ri_NumIndices; i++)
	{
		if (RelationGetRelid(r->rri->ri_IndexRelationDescs[i]) == view->indexRelid)
			r->index = r->rri->ri_IndexRelationDescs[i];
	}
	if (r->index == NULL)
		elog(ERROR, "unique index of continuous view \"%s\" is missing",
			 get_rel_name(view->viewRelid));
	r->arbiterIndexes = list_make1_oid(view->indexRelid);
	r->nscankeys = Max(view->nkeys, 1);
	r->skeys = palloc(sizeof(ScanKeyData) * r->nscankeys);
	InitDirtySnapshot(r->dirty);
	r->scan = index_beginscan(r->mat, r->index, &r->dirty, r->nscankeys, 0);
	r->oldslot = table_slot_create(r->mat, NULL);
	r->newslot = MakeSingleTupleTableSlot(RelationGetDescr(r->mat), &TTSOpsVirtual);
	r->finalsSlot = MakeSingleTupleTableSlot(view->finalsDesc, &TTSOpsVirtual);
}

static void
merge_shutdown(DestReceiver *self)
{
	MergeReceiver *r = (MergeReceiver *) self;

	index_endscan(r->scan);
	ExecDropSingleTupleTableSlot(r->oldslot);
	ExecDropSingleTupleTableSlot(r->newslot);
	ExecDropSingleTupleTableSlot(r->finalsSlot);
	ExecCloseIndices(r->rri);
	FreeExecutorState(r->estate);
	table_close(r->mat, NoLock);
}

static void
merge_destroy(DestReceiver *self)
{
	pfree(self);
}

/*
 * KappaMergeReceiver returns a receiver that merges delta rows into the
 * view's materialization, with the current command id and time.  Its
 * rDestroy frees it.
 */
DestReceiver *
KappaMergeReceiver(KappaViewInfo *view)
{
	MergeReceiver *receiver = palloc0(sizeof(MergeReceiver));

	receiver->pub.receiveSlot = merge_receive;
	receiver->pub.rStartup = merge_startup;
	receiver->pub.rShutdown = merge_shutdown;
	receiver->pub.rDestroy = merge_destroy;
	receiver->pub.mydest = DestNone;
	receiver->view = view;
	receiver->cid = GetCurrentCommandId(true);
	receiver->now = GetCurrentTimestamp();
	return (DestReceiver *) receiver;
}
