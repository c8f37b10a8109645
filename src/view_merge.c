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
 * Views over an ordinary table also get rows that left the table
 * (KappaMergeChangesReceiver; the accumulator that flushes into it tells
 * which groups lost rows).  Such a group's row is locked first.  If the
 * view reads the table alone and every aggregate of the view has an
 * inverse transition function over its plain state (agg_state.c), the
 * leaving rows are taken out of the stored states
 * (KappaAccumRetractInto) and the new rows' states combined in; otherwise,
 * or if an inverse function cannot undo a row, the group is recomputed from
 * the table with the view's delta query restricted to the group's keys,
 * run with a snapshot taken after the lock: in READ COMMITTED it sees every
 * change committed before, and changes still in flight are merged by their
 * writers after we commit.  With a transaction snapshot, a group row our
 * snapshot does not see is a serialization failure.  A group whose count(*)
 * reaches zero is deleted (the one row of a view without GROUP BY stays).
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
	/* changes of a table: retracted rows and recomputed groups */
	KappaViewAccum *changes;	/* NULL when merging deltas of a stream */
	TupleTableSlot *recomputed; /* a group's states read from the table */
	bool		haveRecomputed;
} MergeReceiver;

/* Receives the one row of a group's recompute query (merge_recompute). */
typedef struct RecomputeReceiver
{
	DestReceiver pub;
	MergeReceiver *merge;
} RecomputeReceiver;

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
 * Fill r->newslot with a group's row: its keys, its new states -- 'delta'
 * combined into 'base' if 'haveBase', else 'delta' itself (both arrays of
 * stored-form states, one per aggregate) -- and the outputs computed from
 * the final values.  Allocates in the current (per-group) memory context.
 */
static void
merge_build_row(MergeReceiver *r, Datum *keys, bool *keynulls, bool haveBase,
				Datum *base, bool *baseNulls, Datum *delta, bool *deltaNulls)
{
	KappaViewInfo *view = r->view;
	ExprContext *econtext = view->econtext;
	TupleTableSlot *finals = r->finalsSlot;
	TupleTableSlot *newslot = r->newslot;
	Datum	   *values;
	bool	   *nulls;
	int			i;

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

		KappaAggCombineAndFinalize(&view->aggs[i], view->aggContext, haveBase,
								   haveBase ? base[i] : (Datum) 0,
								   haveBase ? baseNulls[i] : true,
								   delta[i], deltaNulls[i],
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
}

/*
 * Write r->newslot over the stored row r->oldslot.  Returns false if a
 * concurrent writer updated or deleted the row first (merge into its
 * version then).
 */
static bool
merge_update_row(MergeReceiver *r)
{
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	bool		updateIndexes;
	TM_Result	result;

	result = table_tuple_update(r->mat, &r->oldslot->tts_tid, r->newslot,
								r->cid, r->estate->es_snapshot,
								InvalidSnapshot, true, &tmfd,
								&lockmode, &updateIndexes);
	if (result == TM_Ok)
	{
		if (updateIndexes)
			ExecInsertIndexTuples(r->rri, r->newslot, r->estate, true, false,
								  NULL, NIL);
		return true;
	}
	if (result != TM_Updated && result != TM_Deleted)
		elog(ERROR, "unexpected result %d updating continuous view \"%s\"",
			 (int) result, get_rel_name(r->view->viewRelid));
	return false;
}

/*
 * Insert r->newslot as a new group, speculatively as INSERT ... ON CONFLICT
 * does.  Returns false if another writer inserted the group meanwhile.
 */
static bool
merge_insert_row(MergeReceiver *r)
{
	ItemPointerData conflictTid;
	uint32		specToken;
	bool		specConflict = false;

	if (!ExecCheckIndexConstraints(r->rri, r->newslot, r->estate, &conflictTid,
								   r->arbiterIndexes))
		return false;
	specToken = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
	table_tuple_insert_speculative(r->mat, r->newslot, r->cid, 0, NULL, specToken);
	ExecInsertIndexTuples(r->rri, r->newslot, r->estate, false, true,
						  &specConflict, r->arbiterIndexes);
	table_tuple_complete_speculative(r->mat, r->newslot, specToken, !specConflict);
	SpeculativeInsertionLockRelease(GetCurrentTransactionId());
	return !specConflict;
}

/*
 * Lock the stored row of a group found by merge_lookup_group, so that no
 * other writer changes the group until we commit.  In READ COMMITTED the
 * latest version is locked (r->oldslot then holds it); with a transaction
 * snapshot (REPEATABLE READ, SERIALIZABLE), a newer version means a
 * concurrent change to the group: a serialization failure (the caller also
 * checks that the version it locked is the one its snapshot sees).  Returns
 * false if the row was deleted meanwhile (look it up again).
 */
static bool
merge_lock_group(MergeReceiver *r)
{
	bool		xactSnapshot = IsolationUsesXactSnapshot();
	TM_FailureData tmfd;
	TM_Result	result;

	result = table_tuple_lock(r->mat, &r->oldslot->tts_tid, r->estate->es_snapshot,
							  r->oldslot, r->cid, LockTupleExclusive, LockWaitBlock,
							  xactSnapshot ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							  &tmfd);
	if (result == TM_Updated || result == TM_Deleted)
	{
		if (xactSnapshot)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent update"),
					 errdetail("A concurrent transaction changed a group of continuous view \"%s\".",
							   get_rel_name(r->view->viewRelid))));
		return false;
	}
	if (result != TM_Ok)
		elog(ERROR, "unexpected result %d locking a group of continuous view \"%s\"",
			 (int) result, get_rel_name(r->view->viewRelid));
	ExecMaterializeSlot(r->oldslot);
	return true;
}

static bool
recompute_receive(TupleTableSlot *slot, DestReceiver *self)
{
	MergeReceiver *r = ((RecomputeReceiver *) self)->merge;

	ExecCopySlot(r->recomputed, slot);
	r->haveRecomputed = true;
	return true;
}

static void
recompute_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
recompute_shutdown(DestReceiver *self)
{
}

static void
recompute_destroy(DestReceiver *self)
{
}

/*
 * Recompute one group of a view over a table from the table itself: the
 * view's delta query restricted to the group's keys (with grouping sets,
 * the query of the group's set, view_plan.c), run with 'snapshot' (taken
 * after the group's row was locked).  Returns true with the keys
 * and states in r->recomputed, false if no row of the table is in the group.
 */
static bool
merge_recompute(MergeReceiver *r, Datum *keys, bool *keynulls, Snapshot snapshot)
{
	KappaViewInfo *view = r->view;
	PlannedStmt *plan = view->recomputePlan;
	ParamListInfo params = NULL;
	RecomputeReceiver dest;
	QueryDesc  *qd;
	int			i;
	int			set = -1;		/* the group's grouping set, if any */

	if (view->groupingSets)
	{
		/* the plans of the group's set (key 0) */
		for (set = 0; set < view->ngsets; set++)
		{
			if (view->gsetIds[set] == DatumGetInt32(keys[0]))
				break;
		}
		if (set == view->ngsets)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("materialization of continuous view \"%s\" holds a group of an unknown grouping set %d",
							get_rel_name(view->viewRelid), DatumGetInt32(keys[0])),
					 errhint("Rebuild the view with kappa.rebuild_view().")));
		plan = view->gsetRecompute[set];
	}
	if (view->nkeys > 0)
	{
		params = makeParamList(view->nkeys);
		for (i = 0; i < view->nkeys; i++)
		{
			params->params[i].value = keys[i];
			params->params[i].isnull = keynulls[i];
			params->params[i].pflags = PARAM_FLAG_CONST;
			params->params[i].ptype = TupleDescAttr(view->finalsDesc, i)->atttypid;
			if (!keynulls[i])
				continue;
			if (set < 0)
				plan = view->recomputeNullPlan;
			else if (i > 0 &&
					 ((DatumGetInt32(keys[0]) >> (view->nkeys - 1 - i)) & 1) == 0)
				plan = view->gsetRecomputeNull[set];	/* a grouped NULL key */
		}
	}
	memset(&dest, 0, sizeof(dest));
	dest.pub.receiveSlot = recompute_receive;
	dest.pub.rStartup = recompute_startup;
	dest.pub.rShutdown = recompute_shutdown;
	dest.pub.rDestroy = recompute_destroy;
	dest.pub.mydest = DestNone;
	dest.merge = r;

	ExecClearTuple(r->recomputed);
	r->haveRecomputed = false;
	qd = CreateQueryDesc(plan, view->sql, snapshot, InvalidSnapshot,
						 (DestReceiver *) &dest, params, NULL, 0);
	ExecutorStart(qd, 0);
	ExecutorRun(qd, ForwardScanDirection, 0, true);
	ExecutorFinish(qd);
	ExecutorEnd(qd);
	FreeQueryDesc(qd);
	if (r->haveRecomputed)
		slot_getallattrs(r->recomputed);
	return r->haveRecomputed;
}

/*
 * Merge a group of a view over a table from which rows were retracted (see
 * the file header): lock its row, then either take the rows out of the
 * stored states with the aggregates' inverse transition functions and add
 * the new rows' states, or recompute the group from the table with a
 * snapshot taken after the lock.  A group left without rows is deleted
 * (the one row of a view without GROUP BY stays).  'delta' holds the added
 * rows' states if 'hasAdded'.
 */
static void
merge_changed_group(MergeReceiver *r, TupleTableSlot *delta, Datum *keys,
					bool *keynulls, bool hasAdded)
{
	KappaViewInfo *view = r->view;
	int			naggs = view->naggs;
	Datum	   *states = palloc(sizeof(Datum) * naggs);
	bool	   *snulls = palloc(sizeof(bool) * naggs);
	int			i;

	for (;;)
	{
		bool		found = merge_lookup_group(r, keys, keynulls);
		bool		recompute;
		bool		empty;
		bool		done;
		Snapshot	snapshot;
		TupleTableSlot *newslot = r->newslot;
		AttrNumber	countAttno = view->stateAttnos[0];

		if (found && !merge_lock_group(r))
			continue;

		/*
		 * what a recompute reads the table with: a snapshot taken after the
		 * lock
		 */
		PushActiveSnapshot(IsolationUsesXactSnapshot() ?
						   GetTransactionSnapshot() : GetLatestSnapshot());
		UpdateActiveSnapshotCommandId();
		snapshot = GetActiveSnapshot();
		if (found && IsolationUsesXactSnapshot() &&
			!table_tuple_satisfies_snapshot(r->mat, r->oldslot, snapshot))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent update"),
					 errdetail("A concurrent transaction changed a group of continuous view \"%s\".",
							   get_rel_name(view->viewRelid))));
		if (found)
			slot_getallattrs(r->oldslot);

		recompute = !found || !view->invertible;
		if (!recompute)
		{
			for (i = 0; i < naggs; i++)
				states[i] = KappaAggStateFromStored(&view->aggs[i], view->aggContext,
													r->oldslot->tts_values[view->stateAttnos[i] - 1],
													r->oldslot->tts_isnull[view->stateAttnos[i] - 1],
													&snulls[i]);
			recompute = !KappaAccumRetractInto(r->changes, view->aggContext,
											   states, snulls);
		}
		if (recompute)
		{
			if (merge_recompute(r, keys, keynulls, snapshot))
				merge_build_row(r, keys, keynulls, false, NULL, NULL,
								r->recomputed->tts_values + view->nkeys,
								r->recomputed->tts_isnull + view->nkeys);
			else
			{
				/* no row left in the group */
				ExecClearTuple(newslot);
				memset(newslot->tts_isnull, true, sizeof(bool) * view->matNatts);
				newslot->tts_values[countAttno - 1] = Int64GetDatum(0);
				newslot->tts_isnull[countAttno - 1] = false;
			}
		}
		else
		{
			for (i = 0; i < naggs; i++)
				states[i] = KappaAggStoredForm(&view->aggs[i], view->aggContext,
											   states[i], snulls[i], &snulls[i]);
			if (hasAdded)
				merge_build_row(r, keys, keynulls, true, states, snulls,
								delta->tts_values + view->nkeys,
								delta->tts_isnull + view->nkeys);
			else
				merge_build_row(r, keys, keynulls, false, NULL, NULL,
								states, snulls);
		}
		PopActiveSnapshot();

		/* the group of a view without GROUP BY, or of (), always exists */
		empty = !view->globalView &&
			!(view->groupingSets &&
			  DatumGetInt32(keys[0]) == view->emptyGsetId) &&
			!newslot->tts_isnull[countAttno - 1] &&
			DatumGetInt64(newslot->tts_values[countAttno - 1]) == 0;
		if (empty)
		{
			if (found)
			{
				TM_FailureData tmfd;
				TM_Result	result;

				result = table_tuple_delete(r->mat, &r->oldslot->tts_tid, r->cid,
											r->estate->es_snapshot, InvalidSnapshot,
											true, &tmfd, false);
				if (result != TM_Ok)
					elog(ERROR, "unexpected result %d deleting a group of continuous view \"%s\"",
						 (int) result, get_rel_name(view->viewRelid));
			}
			done = true;
		}
		else if (found)
			done = merge_update_row(r);
		else
			done = merge_insert_row(r);
		if (done)
			break;
		CHECK_FOR_INTERRUPTS();
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
	bool		hasAdded = true;
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

	if (r->changes != NULL && KappaAccumCurrentGroup(r->changes, &hasAdded))
		merge_changed_group(r, slot, keys, keynulls, hasAdded);
	else
	{
		for (;;)
		{
			bool		found = merge_lookup_group(r, keys, keynulls);
			Datum	   *stored = NULL;
			bool	   *storedNulls = NULL;

			if (found)
			{
				slot_getallattrs(r->oldslot);
				stored = palloc(sizeof(Datum) * view->naggs);
				storedNulls = palloc(sizeof(bool) * view->naggs);
				for (i = 0; i < view->naggs; i++)
				{
					stored[i] = r->oldslot->tts_values[view->stateAttnos[i] - 1];
					storedNulls[i] = r->oldslot->tts_isnull[view->stateAttnos[i] - 1];
				}
			}
			merge_build_row(r, keys, keynulls, found, stored, storedNulls,
							slot->tts_values + view->nkeys,
							slot->tts_isnull + view->nkeys);
			if (found ? merge_update_row(r) : merge_insert_row(r))
				break;
			/* a concurrent writer got there first: merge into its version */
			CHECK_FOR_INTERRUPTS();
		}
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
	if (r->changes != NULL)
		r->recomputed = MakeSingleTupleTableSlot(ExecTypeFromTL(view->recomputePlan->planTree->targetlist),
												 &TTSOpsMinimalTuple);
}

static void
merge_shutdown(DestReceiver *self)
{
	MergeReceiver *r = (MergeReceiver *) self;

	index_endscan(r->scan);
	ExecDropSingleTupleTableSlot(r->oldslot);
	ExecDropSingleTupleTableSlot(r->newslot);
	ExecDropSingleTupleTableSlot(r->finalsSlot);
	if (r->recomputed != NULL)
		ExecDropSingleTupleTableSlot(r->recomputed);
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

/*
 * KappaMergeChangesReceiver is KappaMergeReceiver for the changes of a view
 * over a table: 'changes' is the accumulator whose flush feeds it, which
 * tells for each group whether rows were retracted from it (they are taken
 * out with the inverse transition functions, or the group is recomputed
 * from the table).
 */
DestReceiver *
KappaMergeChangesReceiver(KappaViewInfo *view, KappaViewAccum *changes)
{
	MergeReceiver *receiver = (MergeReceiver *) KappaMergeReceiver(view);

	receiver->changes = changes;
	return (DestReceiver *) receiver;
}

/*
 * KappaMergeEmpty deletes every group of the view's materialization (its
 * table was truncated), as of the active snapshot and command.  The caller
 * holds a lock that keeps other writers of the view out.
 */
void
KappaMergeEmpty(KappaViewInfo *view)
{
	Relation	mat = table_open(view->matRelid, RowExclusiveLock);
	Snapshot	snapshot = GetActiveSnapshot();
	CommandId	cid = GetCurrentCommandId(true);
	TableScanDesc scan = table_beginscan(mat, snapshot, 0, NULL);
	TupleTableSlot *slot = table_slot_create(mat, NULL);

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		TM_FailureData tmfd;
		TM_Result	result;

		result = table_tuple_delete(mat, &slot->tts_tid, cid, snapshot,
									InvalidSnapshot, true, &tmfd, false);
		if (result != TM_Ok)
			elog(ERROR, "unexpected result %d emptying continuous view \"%s\"",
				 (int) result, get_rel_name(view->viewRelid));
		CHECK_FOR_INTERRUPTS();
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(mat, NoLock);
}
