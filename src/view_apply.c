/*-------------------------------------------------------------------------
 *
 * view_apply.c
 *	  The view runtime: how each continuous view of a stream takes the rows
 *	  of a statement or Kafka batch, and its backfill at creation.
 *
 * This file decides, once per view, how the view takes rows (its feed
 * strategy) and is the only place that does:
 *
 *	 - FEED_PUSH: a view over the stream alone (view_plan.c compiled a push
 *	   path for it) whose group keys can be hashed.  Rows go straight into its
 *	   accumulator (view_accum.c) as they arrive, in chunks, with no delta
 *	   query; the accumulator is merged into the materialization at the end
 *	   of the statement.
 *	 - FEED_ACCUMULATE: the view's delta query runs over each chunk of rows
 *	   and its output is combined in the view's accumulator, merged at the
 *	   end of the statement.  Used once a statement is applied in more than
 *	   one chunk (or some view of the stream is pushed), so that each group
 *	   is written once per statement.
 *	 - FEED_DELTA: the delta query's output is merged into the
 *	   materialization at once (view_merge.c).  Used for a statement applied
 *	   in one chunk, and for views whose keys cannot be hashed.
 *
 * An accumulator is bounded like a hash aggregate, by work_mem *
 * hash_mem_multiplier: past that it is merged early (apply_check_memory, the
 * one place that checks).
 *
 * A view over an ordinary table takes the table's changes as signed rows
 * (KappaViewFeedChanges, called by table_capture.c).  A view over the table
 * alone pushes entering rows and retracts leaving ones (view_accum.c); a
 * view that joins other tables runs its changes plan (view_plan.c) over
 * each set of changed rows, handed to it as an ephemeral named relation of
 * the query's environment (no SQL-callable function returns them):
 * entering rows' partial states are combined, leaving rows mark the groups
 * they fall in, which are recomputed.  Each touched group is merged once
 * (view_merge.c); TRUNCATE empties the views (KappaViewTruncate).
 *
 * The rows a delta query scans are handed to the stream's scan explicitly
 * (KappaScanSourcePush, stream_scan.c) and popped in PG_FINALLY.  Every
 * piece of a view's code -- the delta query, the push path's expressions
 * and transition functions, the merge's combine and final functions and
 * output expressions -- runs as the view's owner, in a security-restricted
 * operation (KappaBecomeUser), as REFRESH MATERIALIZED VIEW does.
 *
 * A view being rebuilt from Kafka (view_rebuild.c) has a second, building
 * version that live batches feed after the live one.  Its code runs in a
 * subtransaction of its own (apply_guarded): if the new definition fails on
 * a row, the rebuild is marked failed and live batches stop feeding it,
 * while the live version and the batch go on untouched.  A rebuild's replay
 * feeds the building version alone (onlyMat).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/queryenvironment.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "pg_kappa.h"
#include "util.h"
#include "view.h"

/* How a view takes rows (see the file header). */
typedef enum FeedStrategy
{
	FEED_PUSH,
	FEED_ACCUMULATE,
	FEED_DELTA
} FeedStrategy;

/* One view of a feed. */
typedef struct FeedView
{
	Oid			matRelid;		/* identifies the version (a view being
								 * rebuilt has two) */
	KappaViewInfo *view;		/* the view as loaded when first fed */
	KappaViewAccum *acc;		/* NULL for FEED_DELTA */
	FeedStrategy strategy;
} FeedView;

/*
 * The views of one stream being fed by one statement (or Kafka batch).  The
 * views are those of the cache entry held by the caller, KappaStreamViews,
 * as locked for each apply.
 */
struct KappaViewFeed
{
	Oid			streamRelid;
	Oid			onlyMat;		/* a rebuild's replay feeds only this version */
	MemoryContext cxt;			/* the feed and its accumulators */
	List	   *views;			/* FeedView *: views that have been fed */
	bool		accumulating;	/* views accumulate until KappaViewFeedFlush */
	bool		pushes;			/* some view is FEED_PUSH */
	bool		needsRows;		/* some view runs its delta query */
	TupleTableSlot *pushSlot;	/* a row being pushed */
	List	   *failedMats;		/* building versions that failed in this feed */
};

/* One step of feeding a view, for apply_guarded. */
typedef void (*FeedStep) (KappaViewFeed *feed, KappaViewInfo *view, FeedView *fv,
						  void *arg);

/*
 * Set up what a view's delta or merge runs in: a command counter that sees
 * the previous merges, the snapshot 'snapshot' with that command id, and
 * the view owner's rights in a security-restricted operation.
 */
static void
apply_begin_view_work(KappaViewInfo *view, Snapshot snapshot,
					  KappaSavedUser *saved)
{
	CommandCounterIncrement();
	PushActiveSnapshot(snapshot);
	UpdateActiveSnapshotCommandId();
	KappaBecomeUser(view->ownerId, saved);
}

static void
apply_end_view_work(KappaSavedUser *saved)
{
	KappaRestoreUser(saved);
	PopActiveSnapshot();
}

/*
 * Run the view's delta query over the rows of 'source' into 'dest'; the
 * source is what scans of the stream return meanwhile.
 */
static void
apply_run_delta(KappaViewInfo *view, KappaScanSource *source,
				DestReceiver *dest)
{
	QueryDesc  *qd;
	PlannedStmt *plan;

	plan = !source->retained && source->nrows <= KAPPA_SMALL_BATCH_LIMIT ?
		view->smallDeltaPlan : view->deltaPlan;
	KappaScanSourcePush(source);
	PG_TRY();
	{
		qd = CreateQueryDesc(plan, view->sql, GetActiveSnapshot(),
							 InvalidSnapshot, dest, NULL, NULL, 0);
		ExecutorStart(qd, 0);
		ExecutorRun(qd, ForwardScanDirection, 0, true);
		ExecutorFinish(qd);
		ExecutorEnd(qd);
		FreeQueryDesc(qd);
	}
	PG_FINALLY();
	{
		KappaScanSourcePop(source);
	}
	PG_END_TRY();
}

/*
 * Run the view's delta query over 'source' and merge its rows into the
 * materialization, or with 'acc' combine them there, in the current
 * transaction.
 */
static void
apply_delta(KappaViewInfo *view, KappaScanSource *source, KappaViewAccum *acc,
			Snapshot snapshot)
{
	DestReceiver *dest;
	KappaSavedUser saved;

	apply_begin_view_work(view, snapshot, &saved);
	dest = acc != NULL ? KappaAccumReceiver(acc) : KappaMergeReceiver(view);
	apply_run_delta(view, source, dest);
	dest->rDestroy(dest);
	apply_end_view_work(&saved);
}

/*
 * Merge every group accumulated in 'acc' into the view's materialization,
 * once per group and in key order, and empty it.  'changes': what a view
 * over a table accumulated from the table's changes, whose groups with
 * retracted rows go through the retraction merge (view_merge.c).
 */
static void
apply_flush(KappaViewInfo *view, KappaViewAccum *acc, bool changes)
{
	DestReceiver *merge;
	KappaSavedUser saved;

	if (KappaAccumGroups(acc) == 0)
		return;
	apply_begin_view_work(view, GetTransactionSnapshot(), &saved);
	merge = changes ? KappaMergeChangesReceiver(view, acc) : KappaMergeReceiver(view);
	merge->rStartup(merge, CMD_SELECT, NULL);
	KappaAccumFlush(acc, merge);
	merge->rShutdown(merge);
	merge->rDestroy(merge);
	apply_end_view_work(&saved);
}

/* Merge a view's accumulator early once it is over the memory cap. */
static void
apply_check_memory(FeedView *fv)
{
	if (KappaAccumMemory(fv->acc) > get_hash_memory_limit())
		apply_flush(fv->view, fv->acc, false);
}

/*
 * The entry of 'view' in the feed, made on first use: with an accumulator
 * if the feed accumulates and the view's keys can be hashed.
 */
static FeedView *
apply_feed_view(KappaViewFeed *feed, KappaViewInfo *view)
{
	ListCell   *lc;
	FeedView   *fv;
	MemoryContext oldcxt;

	foreach(lc, feed->views)
	{
		fv = lfirst(lc);
		if (fv->matRelid == view->matRelid)
			return fv;
	}
	oldcxt = MemoryContextSwitchTo(feed->cxt);
	fv = palloc0(sizeof(FeedView));
	fv->matRelid = view->matRelid;
	fv->view = view;
	fv->strategy = FEED_DELTA;
	if (feed->accumulating)
	{
		fv->acc = KappaAccumCreate(view, feed->cxt);
		if (fv->acc != NULL)
			fv->strategy = FEED_ACCUMULATE;
	}
	feed->views = lappend(feed->views, fv);
	MemoryContextSwitchTo(oldcxt);
	return fv;
}

/*
 * Does the feed skip 'view' (a replay feeds one building version only; a
 * building version that failed is fed no more)?
 */
static inline bool
apply_skips(KappaViewFeed *feed, KappaViewInfo *view)
{
	return (OidIsValid(feed->onlyMat) && view->matRelid != feed->onlyMat) ||
		list_member_oid(feed->failedMats, view->matRelid);
}

/*
 * The rebuild whose building version 'view' is failed with 'edata': its row
 * in kappa.view_rebuilds says so, and live batches stop feeding it (the
 * stream's views are reloaded).  Written in the caller's transaction.
 */
static void
apply_fail_building(KappaViewFeed *feed, Oid streamRelid, KappaViewInfo *view,
					ErrorData *edata)
{
	Oid			types[2] = {OIDOID, TEXTOID};
	Datum		values[2];
	MemoryContext oldcxt;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = ObjectIdGetDatum(view->matRelid);
	values[1] = CStringGetTextDatum(edata->message);
	KappaExecCatalogSql("UPDATE kappa.view_rebuilds SET state = 'failed', "
						"last_error = 'the new version failed on live rows: ' "
						"OPERATOR(pg_catalog.||) $2, updated_at = pg_catalog.now() "
						"WHERE mat::oid OPERATOR(pg_catalog.=) $1",
						2, types, values, NULL);
	SPI_finish();
	CacheInvalidateRelcacheByRelid(streamRelid);
	if (feed != NULL)
	{
		oldcxt = MemoryContextSwitchTo(feed->cxt);
		feed->failedMats = lappend_oid(feed->failedMats, view->matRelid);
		MemoryContextSwitchTo(oldcxt);
	}
	ereport(LOG,
			(errmsg("the rebuild of continuous view \"%s\" failed on live rows; the live version goes on",
					get_rel_name(view->viewRelid)),
			 errdetail("%s", edata->message)));
}

/*
 * Run 'step' for 'view' of the relation 'streamRelid', fed by 'feed' (NULL:
 * a table's changes).  For a building version fed by live rows, in a
 * subtransaction: an error in its code fails the rebuild (see the file
 * header) instead of the batch or statement -- but for errors that are not
 * the view's (cancel, shutdown, lack of resources, serialization
 * failures), which are raised.
 */
static void
apply_guarded_for(KappaViewFeed *feed, Oid streamRelid, KappaViewInfo *view,
				  FeedView *fv, FeedStep step, void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	if (!view->building || (feed != NULL && OidIsValid(feed->onlyMat)))
	{
		step(feed, view, fv, arg);
		return;
	}
	if (feed != NULL && list_member_oid(feed->failedMats, view->matRelid))
		return;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		step(feed, view, fv, arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			class;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		if (class == ERRCODE_TRANSACTION_ROLLBACK ||
			class == ERRCODE_INSUFFICIENT_RESOURCES ||
			class == ERRCODE_OPERATOR_INTERVENTION ||
			class == ERRCODE_SYSTEM_ERROR)
			ReThrowError(edata);
		apply_fail_building(feed, streamRelid, view, edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
}

/* apply_guarded_for a view of a feed. */
static void
apply_guarded(KappaViewFeed *feed, KappaViewInfo *view, FeedView *fv, FeedStep step,
			  void *arg)
{
	apply_guarded_for(feed, feed->streamRelid, view, fv, step, arg);
}

/*
 * KappaViewFeedCreate prepares feeding the views of 'views' (a stream's
 * cache entry, which the caller holds until KappaViewFeedDestroy) with rows
 * of row type 'rowtype', allocating under 'parent'; with 'onlyMat' valid
 * (a rebuild's replay) only the version with that materialization.  Views
 * that can take pushed rows are set up for it now.
 */
KappaViewFeed *
KappaViewFeedCreate(KappaStreamViews *views, TupleDesc rowtype, Oid onlyMat,
					MemoryContext parent)
{
	KappaViewFeed *feed = MemoryContextAllocZero(parent, sizeof(KappaViewFeed));
	ListCell   *lc;

	feed->streamRelid = views->relid;
	feed->onlyMat = onlyMat;
	feed->cxt = parent;
	foreach(lc, views->views)
	{
		KappaViewInfo *view = lfirst(lc);

		if (apply_skips(feed, view))
			continue;
		if (view->push != NULL)
		{
			feed->accumulating = true;
			if (apply_feed_view(feed, view)->acc != NULL)
			{
				((FeedView *) llast(feed->views))->strategy = FEED_PUSH;
				feed->pushes = true;
				continue;
			}
		}
		feed->needsRows = true;
	}
	if (feed->pushes)
		feed->pushSlot = MakeSingleTupleTableSlot(rowtype, &TTSOpsHeapTuple);
	return feed;
}

/*
 * KappaViewFeedNeedsRows tells whether some view runs its delta query over
 * the rows, which must then be kept until KappaViewFeedApply.
 */
bool
KappaViewFeedNeedsRows(KappaViewFeed *feed)
{
	return feed->needsRows;
}

/* KappaViewFeedPushes tells whether some view takes pushed rows. */
bool
KappaViewFeedPushes(KappaViewFeed *feed)
{
	return feed->pushes;
}

/*
 * KappaViewFeedAccumulating tells whether views hold rows in memory that
 * only KappaViewFeedFlush writes.
 */
bool
KappaViewFeedAccumulating(KappaViewFeed *feed)
{
	return feed->accumulating;
}

/* Rows pushed into a view at once. */
typedef struct PushChunk
{
	HeapTuple  *rows;
	int			nrows;
} PushChunk;

/* Push a chunk of rows into one view's accumulator, as the view's owner. */
static void
apply_push_step(KappaViewFeed *feed, KappaViewInfo *view, FeedView *fv, void *arg)
{
	PushChunk  *chunk = arg;
	KappaSavedUser saved;

	KappaBecomeUser(view->ownerId, &saved);
	for (int i = 0; i < chunk->nrows; i++)
	{
		ExecStoreHeapTuple(chunk->rows[i], feed->pushSlot, false);
		KappaAccumPushRow(fv->acc, feed->pushSlot);
	}
	ExecClearTuple(feed->pushSlot);
	KappaRestoreUser(&saved);
}

/*
 * KappaViewFeedPush advances the views that take pushed rows by 'nrows'
 * stream rows: each view's WHERE, keys and transition functions run as the
 * view's owner, once per view for the whole chunk.
 */
void
KappaViewFeedPush(KappaViewFeed *feed, HeapTuple *rows, int nrows)
{
	ListCell   *lc;

	PushChunk	chunk;

	chunk.rows = rows;
	chunk.nrows = nrows;
	foreach(lc, feed->views)
	{
		FeedView   *fv = lfirst(lc);

		if (fv->strategy != FEED_PUSH)
			continue;
		apply_guarded(feed, fv->view, fv, apply_push_step, &chunk);
	}
}

/* Apply a batch's rows ('arg', their scan source) to one view. */
static void
apply_rows_step(KappaViewFeed *feed, KappaViewInfo *view, FeedView *fv, void *arg)
{
	KappaScanSource *source = arg;

	if (fv == NULL || fv->strategy == FEED_DELTA)
		apply_delta(view, source, NULL, GetTransactionSnapshot());
	else if (fv->strategy == FEED_ACCUMULATE)
	{
		apply_delta(view, source, fv->acc, GetTransactionSnapshot());
		apply_check_memory(fv);
	}
	else
		apply_check_memory(fv); /* its rows went straight in */
}

/* Merge what one view accumulated. */
static void
apply_flush_step(KappaViewFeed *feed, KappaViewInfo *view, FeedView *fv, void *arg)
{
	apply_flush(fv->view, fv->acc, false);
}

/*
 * KappaViewFeedApply applies 'nrows' rows (already pushed into the views
 * that take pushed rows) to every view of 'locked' -- the stream's views as
 * they are now, with their relations locked (KappaStreamViewsGetLocked) --
 * in view-OID order.  With 'accumulate' (a chunk of a longer statement),
 * views that can combine their deltas in memory do, until
 * KappaViewFeedFlush; the others merge now.
 */
void
KappaViewFeedApply(KappaViewFeed *feed, KappaStreamViews *locked,
				   HeapTuple *rows, int nrows, bool accumulate)
{
	KappaScanSource source;
	ListCell   *lc;

	if (accumulate)
		feed->accumulating = true;
	memset(&source, 0, sizeof(source));
	source.streamRelid = feed->streamRelid;
	source.rows = rows;
	source.nrows = nrows;
	foreach(lc, locked->views)
	{
		KappaViewInfo *view = lfirst(lc);
		FeedView   *fv;

		if (apply_skips(feed, view))
			continue;
		fv = feed->accumulating ? apply_feed_view(feed, view) : NULL;
		apply_guarded(feed, view, fv, apply_rows_step, &source);
	}
}

/*
 * KappaViewFeedFlush writes what the views combined in memory -- only for
 * views still in 'locked' (the stream's views now, locked): plain DROP VIEW
 * takes no lock on the stream, so a view may have gone while the statement
 * ran, and its rows then go with it.
 */
void
KappaViewFeedFlush(KappaViewFeed *feed, KappaStreamViews *locked)
{
	ListCell   *lc;

	foreach(lc, feed->views)
	{
		FeedView   *fv = lfirst(lc);
		ListCell   *lc2;

		if (fv->acc == NULL)
			continue;
		foreach(lc2, locked->views)
		{
			if (((KappaViewInfo *) lfirst(lc2))->matRelid == fv->matRelid)
			{
				apply_guarded(feed, fv->view, fv, apply_flush_step, NULL);
				break;
			}
		}
	}
}

/* KappaViewFeedDestroy frees what the feed holds besides its memory. */
void
KappaViewFeedDestroy(KappaViewFeed *feed)
{
	if (feed->pushSlot != NULL)
		ExecDropSingleTupleTableSlot(feed->pushSlot);
}

/*
 * KappaViewBackfill gives a new view what its stream already holds: the
 * aggregate of every retained row (with 'retained'), or, for a stream that
 * keeps no rows, the aggregate of no rows (the one row of a global view,
 * as plain SQL returns it; nothing for a grouped view).  The caller holds a
 * SHARE lock on the stream, so no writer runs meanwhile; the retained rows
 * are read with a snapshot taken now, so that rows committed while the
 * caller waited for that lock are counted (in any isolation level).
 */
void
KappaViewBackfill(KappaViewInfo *view, bool retained, const KappaScanCut *cut)
{
	KappaScanSource source;

	memset(&source, 0, sizeof(source));
	source.streamRelid = view->shape->streamRelid;
	source.retained = retained;
	source.cut = cut;
	apply_delta(view, &source, NULL, GetLatestSnapshot());
}

/*
 * KappaViewRecompute replaces what the materialization of 'view' (a view
 * over an ordinary table) holds with its query over the table as
 * 'snapshot' sees it, as the view's owner.
 */
void
KappaViewRecompute(KappaViewInfo *view, Snapshot snapshot)
{
	KappaScanSource source;
	KappaSavedUser saved;

	/* (a copy: the caller's may be GetLatestSnapshot's, which is reused) */
	snapshot = RegisterSnapshot(snapshot);
	apply_begin_view_work(view, snapshot, &saved);
	KappaMergeEmpty(view);
	apply_end_view_work(&saved);
	memset(&source, 0, sizeof(source));
	source.streamRelid = view->shape->streamRelid;
	apply_delta(view, &source, NULL, snapshot);
	UnregisterSnapshot(snapshot);
}

/*
 * Run the changes plan of 'view' (a view over a table without a push path)
 * over 'nrows' changed rows of its table in 'store', of row type 'rowtype',
 * into 'dest': the rows are the ephemeral named relation KAPPA_CHANGES_ENR
 * of a query environment made for this run, which only this plan sees.
 * Runs with the active snapshot, as the current user (the view's owner).
 */
static void
apply_run_changes(KappaViewInfo *view, TupleDesc rowtype,
				  Tuplestorestate *store, int64 nrows, DestReceiver *dest)
{
	QueryEnvironment *env = create_queryEnv();
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));
	PlannedStmt *plan = view->changesPlan;
	QueryDesc  *qd;

	if (nrows <= KAPPA_SMALL_BATCH_LIMIT)
		plan = view->smallChangesPlan;

	enr->md.name = pstrdup(KAPPA_CHANGES_ENR);
	enr->md.reliddesc = InvalidOid;
	enr->md.tupdesc = rowtype;
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = (double) nrows;
	enr->reldata = store;
	register_ENR(env, enr);

	qd = CreateQueryDesc(plan, view->sql, GetActiveSnapshot(), InvalidSnapshot,
						 dest, NULL, env, 0);
	ExecutorStart(qd, 0);
	ExecutorRun(qd, ForwardScanDirection, 0, true);
	ExecutorFinish(qd);
	ExecutorEnd(qd);
	FreeQueryDesc(qd);
}

/*
 * Take a table's changes into the accumulator 'acc' of a view with a push
 * path (the table alone): entering rows advance their groups' states,
 * leaving rows mark their groups (view_accum.c), as the view's owner.
 */
static void
apply_push_changes(KappaViewInfo *view, KappaViewAccum *acc,
				   TupleTableSlot *slot, List *changes)
{
	KappaSavedUser saved;
	ListCell   *lc;

	KappaBecomeUser(view->ownerId, &saved);
	foreach(lc, changes)
	{
		KappaTableChanges *ch = lfirst(lc);
		int			i;

		if (ch->store != NULL)
		{
			tuplestore_rescan(ch->store);
			while (tuplestore_gettupleslot(ch->store, true, false, slot))
			{
				if (ch->sign > 0)
					KappaAccumPushRow(acc, slot);
				else
					KappaAccumRetractRow(acc, slot);
				CHECK_FOR_INTERRUPTS();
			}
		}
		for (i = 0; i < ch->nrows; i++)
		{
			ExecStoreMinimalTuple(ch->rows[i], slot, false);
			if (ch->sign > 0)
				KappaAccumPushRow(acc, slot);
			else
				KappaAccumRetractRow(acc, slot);
		}
		ExecClearTuple(slot);
	}
	KappaRestoreUser(&saved);
}

/*
 * Take a table's changes into the accumulator 'acc' of a view without a
 * push path (joins): its changes plan runs over each set of changed rows
 * ('stores', one tuplestore per element of 'changes'), as the view's owner
 * with a snapshot of now, so the other tables are read as they are.
 * Entering rows' partial states are combined in; leaving rows mark the
 * groups they fall in now, which the merge recomputes from the tables.
 */
static void
apply_delta_changes(KappaViewInfo *view, KappaViewAccum *acc,
					TupleDesc rowtype, List *changes, Tuplestorestate **stores)
{
	KappaSavedUser saved;
	ListCell   *lc;
	int			n = 0;

	apply_begin_view_work(view, GetTransactionSnapshot(), &saved);
	foreach(lc, changes)
	{
		KappaTableChanges *ch = lfirst(lc);
		Tuplestorestate *store = stores[n++];
		DestReceiver *dest;

		dest = ch->sign > 0 ? KappaAccumReceiver(acc) :
			KappaAccumRetractReceiver(acc);
		apply_run_changes(view, rowtype, store, tuplestore_tuple_count(store),
						  dest);
		dest->rDestroy(dest);
	}
	apply_end_view_work(&saved);
}

/*
 * The changed rows of each element of 'changes' as a tuplestore: a
 * trigger's transition table itself, or the kept copies put into a new one
 * (in the current memory context; *made tells which to end).
 */
static Tuplestorestate **
apply_change_stores(List *changes, TupleTableSlot *slot, bool **made)
{
	Tuplestorestate **stores = palloc(sizeof(Tuplestorestate *) * Max(list_length(changes), 1));
	ListCell   *lc;
	int			n = 0;

	*made = palloc0(sizeof(bool) * Max(list_length(changes), 1));
	foreach(lc, changes)
	{
		KappaTableChanges *ch = lfirst(lc);
		int			i;

		if (ch->store != NULL && ch->nrows == 0)
		{
			stores[n++] = ch->store;
			continue;
		}
		stores[n] = tuplestore_begin_heap(false, false, work_mem);
		(*made)[n] = true;
		if (ch->store != NULL)
		{
			tuplestore_rescan(ch->store);
			while (tuplestore_gettupleslot(ch->store, true, false, slot))
				tuplestore_puttupleslot(stores[n], slot);
		}
		for (i = 0; i < ch->nrows; i++)
		{
			ExecStoreMinimalTuple(ch->rows[i], slot, false);
			tuplestore_puttupleslot(stores[n], slot);
		}
		ExecClearTuple(slot);
		n++;
	}
	return stores;
}

/* What apply_changes_step needs: a table's changes, for every view. */
typedef struct ChangesStep
{
	MemoryContext cxt;
	TupleTableSlot *slot;
	TupleDesc	rowtype;
	List	   *changes;
	Tuplestorestate ***stores;	/* made on first use, shared by the views */
	bool	  **made;
} ChangesStep;

/* Apply a table's changes to one view. */
static void
apply_changes_step(KappaViewFeed *feed, KappaViewInfo *view, FeedView *fv, void *arg)
{
	ChangesStep *cs = arg;
	KappaViewAccum *acc = KappaAccumCreate(view, cs->cxt);

	if (acc == NULL || (view->push == NULL && view->changesPlan == NULL))
		elog(ERROR, "continuous view \"%s\" over a table cannot take changed rows",
			 get_rel_name(view->viewRelid));
	if (view->push != NULL)
		apply_push_changes(view, acc, cs->slot, cs->changes);
	else
	{
		if (*cs->stores == NULL)
			*cs->stores = apply_change_stores(cs->changes, cs->slot, cs->made);
		apply_delta_changes(view, acc, cs->rowtype, cs->changes, *cs->stores);
	}
	apply_flush(view, acc, true);
}

/* Empty one view and apply its table as it is now (KappaViewTruncate). */
static void
apply_truncate_step(KappaViewFeed *feed, KappaViewInfo *view, FeedView *fv, void *arg)
{
	KappaViewRecompute(view, GetLatestSnapshot());
}

/*
 * KappaViewFeedChanges applies the changes of an ordinary table -- a list
 * of KappaTableChanges, rows of row type 'rowtype' entering (+1) or leaving
 * (-1) the table -- to every view of 'locked' (the table's views, locked),
 * in view-OID order, in the current transaction.  Each view takes the rows
 * as its owner, through its push path (the table alone) or its changes
 * plan (joins): added rows advance its groups' states in memory, retracted
 * rows mark their groups; then each touched group is merged once, in key
 * order (KappaMergeChangesReceiver).  Every change of the table since the
 * views last saw it must be in 'changes': a group that is recomputed reads
 * the table as it is now.
 */
void
KappaViewFeedChanges(KappaStreamViews *locked, TupleDesc rowtype, List *changes)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	TupleTableSlot *slot;
	Tuplestorestate **stores = NULL;
	bool	   *made = NULL;
	ListCell   *lc;
	int			i;

	ChangesStep cs;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_kappa table changes",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	slot = MakeSingleTupleTableSlot(rowtype, &TTSOpsMinimalTuple);
	cs.cxt = cxt;
	cs.slot = slot;
	cs.rowtype = rowtype;
	cs.changes = changes;
	cs.stores = &stores;
	cs.made = &made;
	foreach(lc, locked->views)
		apply_guarded_for(NULL, locked->relid, lfirst(lc), NULL, apply_changes_step, &cs);
	for (i = 0; stores != NULL && i < list_length(changes); i++)
	{
		if (made[i])
			tuplestore_end(stores[i]);
	}
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
}

/*
 * KappaViewTruncate empties every view of 'locked' (its table was
 * truncated) and applies the table as it is now, which gives a view without
 * GROUP BY its one row.  The caller holds the table's ACCESS EXCLUSIVE lock.
 */
void
KappaViewTruncate(KappaStreamViews *locked)
{
	ListCell   *lc;

	foreach(lc, locked->views)
		apply_guarded_for(NULL, locked->relid, lfirst(lc), NULL, apply_truncate_step, NULL);
}
