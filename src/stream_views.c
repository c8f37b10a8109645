/*-------------------------------------------------------------------------
 *
 * stream_views.c
 *	  The per-backend cache of each stream's views: what a writer of the
 *	  stream feeds, each view loaded and planned (view_plan.c).
 *
 * KappaStreamViewsGet returns, for a stream, its retention and the views to
 * feed.  Entries are rebuilt lazily after an invalidation: creating or
 * dropping a view sends a relcache invalidation for its stream
 * (KappaStreamViewsInvalidate), and every relation an entry depends on (the
 * stream, the views' relations, the relations their delta plans read)
 * invalidates the entry when it changes; so does any change to a function
 * or a foreign server.  An entry in use while it is invalidated is retired,
 * and freed once its last use ends.
 *
 * Exactness under concurrent DDL.  Callers hold a lock on the stream
 * (RowExclusiveLock to write, AccessShareLock to read) before they ask for
 * its entry, and kappa.create_view and kappa.drop_view take a SHARE lock on
 * the stream; so the set of views cannot change while an entry is in use.
 * The catalog rows are read with a snapshot taken after that lock -- not the
 * transaction's snapshot, which may predate a view committed while the
 * writer waited for the lock (or, in REPEATABLE READ, long before).  A view
 * whose relations are dropped by plain DDL while the entry is loaded (DROP
 * VIEW, which locks no stream) is skipped once its locks show it gone.
 * Invalidations that arrive while an entry is being loaded mark it stale at
 * once.
 *
 * The cache owns its callbacks: stream_views_relation_changed and
 * stream_views_function_or_server_changed (invalidation), and
 * stream_views_at_xact_end, which forgets the uses an error cut short.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/lmgr.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "pg_kappa.h"
#include "view.h"

typedef struct StreamViewsEntry
{
	Oid			relid;			/* hash key */
	KappaStreamViews *views;	/* NULL until loaded */
} StreamViewsEntry;

static HTAB *stream_views_cache = NULL;
static MemoryContext stream_views_cxt = NULL;
static List *stream_views_retired = NIL;	/* invalidated, still in use */
static int	stream_views_uses = 0;	/* entries handed out, not released */

/* some entry was loaded for this transaction only (a rebuild it registered) */
static bool stream_views_this_xact_only = false;

/* invalidations seen while an entry is being loaded */
static bool stream_views_loading = false;
static bool stream_views_loading_reset_all = false;
static List *stream_views_loading_relids = NIL;

static void stream_views_relation_changed(Datum arg, Oid relid);
static void stream_views_function_or_server_changed(Datum arg, int cacheid,
													uint32 hashvalue);
static void stream_views_at_xact_end(XactEvent event, void *arg);

/*
 * KappaStreamViewsInit registers the cache's invalidation and
 * end-of-transaction callbacks; called once per backend from _PG_init.
 */
void
KappaStreamViewsInit(void)
{
	CacheRegisterRelcacheCallback(stream_views_relation_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID,
								  stream_views_function_or_server_changed,
								  (Datum) 0);
	CacheRegisterSyscacheCallback(FOREIGNSERVEROID,
								  stream_views_function_or_server_changed,
								  (Datum) 0);
	RegisterXactCallback(stream_views_at_xact_end, NULL);
}

/* Does 'entry' depend on relation 'relid'? */
static bool
stream_views_depend_on(KappaStreamViews *entry, Oid relid)
{
	ListCell   *lc;

	if (entry->relid == relid || entry->backingRelid == relid ||
		list_member_oid(entry->logs, relid))
		return true;
	foreach(lc, entry->views)
	{
		KappaViewInfo *view = lfirst(lc);

		if (view->viewRelid == relid || view->matRelid == relid ||
			view->defRelid == relid ||
			list_member_oid(view->relationOids, relid))
			return true;
	}
	return false;
}

/*
 * Load a stream's catalog rows and its views (see the file header).  The
 * caller holds a lock on the stream.
 */
static KappaStreamViews *
stream_views_load(Oid relid)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	KappaStreamViews *entry;
	List	   *rows = NIL;
	ListCell   *lc;
	volatile bool skippedOwn = false;

	cxt = AllocSetContextCreate(stream_views_cxt, "pg_kappa stream views",
								ALLOCSET_SMALL_SIZES);
	entry = MemoryContextAllocZero(cxt, sizeof(KappaStreamViews));
	entry->relid = relid;
	entry->cxt = cxt;

	stream_views_loading = true;
	stream_views_loading_reset_all = false;
	stream_views_loading_relids = NIL;
	PG_TRY();
	{
		/* the catalog as committed now, not as of the transaction's start */
		Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());

		KappaReadStreamRow(relid, snapshot, &entry->backingRelid);
		(void) KappaCatalogSkippedOwnRebuild();
		rows = KappaReadViewRows(relid, snapshot);
		skippedOwn = KappaCatalogSkippedOwnRebuild();
		UnregisterSnapshot(snapshot);

		foreach(lc, rows)
		{
			KappaViewRow *row = lfirst(lc);
			KappaViewInfo *view;

			/* a version built from the table: its change log, if not gone */
			if (OidIsValid(row->log))
			{
				LockRelationOid(row->log, AccessShareLock);
				if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(row->log)))
				{
					oldcxt = MemoryContextSwitchTo(cxt);
					entry->logs = lappend_oid(entry->logs, row->log);
					MemoryContextSwitchTo(oldcxt);
				}
				continue;
			}

			/*
			 * Plain DROP VIEW or DROP TABLE of a view's pieces locks no
			 * stream: after waiting for their locks, skip a view that is
			 * gone.
			 */
			LockRelationOid(row->mat, RowExclusiveLock);
			LockRelationOid(row->def, AccessShareLock);
			if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(row->view)) ||
				!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(row->mat)) ||
				!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(row->def)))
				continue;

			view = KappaViewInfoLoad(row->view, row->mat, row->def, cxt);
			view->building = row->building;
			oldcxt = MemoryContextSwitchTo(cxt);
			entry->views = lappend(entry->views, view);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	PG_FINALLY();
	{
		stream_views_loading = false;
	}
	PG_END_TRY();

	entry->valid = !stream_views_loading_reset_all;
	/* loaded for the transaction that registered a rebuild: for it alone */
	if (skippedOwn)
		stream_views_this_xact_only = true;
	foreach(lc, stream_views_loading_relids)
	{
		if (stream_views_depend_on(entry, lfirst_oid(lc)))
			entry->valid = false;
	}
	list_free(stream_views_loading_relids);
	stream_views_loading_relids = NIL;
	list_free_deep(rows);
	return entry;
}

static void
stream_views_free(KappaStreamViews *entry)
{
	ListCell   *lc;

	foreach(lc, entry->views)
		KappaViewInfoFree(lfirst(lc));
	MemoryContextDelete(entry->cxt);
}

/*
 * KappaStreamViewsGet returns the cached views of a stream, loading them if
 * needed.  The caller holds a lock on the stream.  The result stays
 * allocated until KappaStreamViewsRelease, even if an invalidation arrives
 * meanwhile (its 'valid' then turns false).
 */
KappaStreamViews *
KappaStreamViewsGet(Oid relid)
{
	StreamViewsEntry *slot;
	bool		found;

	if (stream_views_cache == NULL)
	{
		HASHCTL		ctl;

		stream_views_cxt = AllocSetContextCreate(CacheMemoryContext,
												 "pg_kappa stream views cache",
												 ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(StreamViewsEntry);
		ctl.hcxt = stream_views_cxt;
		stream_views_cache = hash_create("pg_kappa stream views", 16, &ctl,
										 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	slot = hash_search(stream_views_cache, &relid, HASH_ENTER, &found);
	if (!found)
		slot->views = NULL;
	if (slot->views != NULL && !slot->views->valid)
	{
		if (stream_views_uses > 0)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(stream_views_cxt);

			stream_views_retired = lappend(stream_views_retired, slot->views);
			MemoryContextSwitchTo(oldcxt);
		}
		else
			stream_views_free(slot->views);
		slot->views = NULL;
	}
	if (slot->views == NULL)
	{
		KappaStreamViews *entry = stream_views_load(relid);

		/* the load may have processed invalidations; look the slot up again */
		slot = hash_search(stream_views_cache, &relid, HASH_ENTER, &found);
		if (found && slot->views != NULL && slot->views != entry)
			stream_views_free(slot->views);
		slot->views = entry;
	}
	stream_views_uses++;
	return slot->views;
}

/*
 * KappaStreamViewsGetLocked returns the cached views of a stream with every
 * relation they read locked, as the plan cache locks a cached plan's
 * relations before running it; if taking a lock let in an invalidation, the
 * views are loaded again.  Released with KappaStreamViewsRelease.
 */
KappaStreamViews *
KappaStreamViewsGetLocked(Oid relid)
{
	for (;;)
	{
		KappaStreamViews *entry = KappaStreamViewsGet(relid);
		ListCell   *lc;

		foreach(lc, entry->views)
			KappaViewLockRelations(lfirst(lc));
		foreach(lc, entry->logs)
			LockRelationOid(lfirst_oid(lc), AccessShareLock);
		if (entry->valid)
			return entry;
		KappaStreamViewsRelease(entry);
	}
}

/*
 * KappaStreamViewsRelease ends a use of KappaStreamViewsGet's result;
 * entries retired meanwhile are freed when the last use ends.
 */
void
KappaStreamViewsRelease(KappaStreamViews *entry)
{
	if (stream_views_uses > 0)
		stream_views_uses--;
	if (stream_views_uses == 0 && stream_views_retired != NIL)
	{
		ListCell   *lc;

		foreach(lc, stream_views_retired)
			stream_views_free(lfirst(lc));
		list_free(stream_views_retired);
		stream_views_retired = NIL;
	}
}

/*
 * KappaStreamViewsInvalidate makes every backend, this one included, load a
 * stream's views again at their next use.
 */
void
KappaStreamViewsInvalidate(Oid relid)
{
	CacheInvalidateRelcacheByRelid(relid);
}

/*
 * At the end of a transaction (commit or abort) no entry is in use: forget
 * the uses that an error cut short, and free the entries retired meanwhile.
 */
static void
stream_views_at_xact_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		/* entries that left out a rebuild this transaction registered */
		if (stream_views_this_xact_only)
			stream_views_relation_changed((Datum) 0, InvalidOid);
		stream_views_this_xact_only = false;
		stream_views_uses = 1;
		KappaStreamViewsRelease(NULL);
		stream_views_loading = false;
		stream_views_loading_relids = NIL;	/* was in TopTransactionContext */
	}
}

/*
 * A relation changed: mark stale every entry that depends on it (all
 * entries for InvalidOid), and remember it for an entry being loaded.
 */
static void
stream_views_relation_changed(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	StreamViewsEntry *slot;

	if (stream_views_loading)
	{
		if (!OidIsValid(relid))
			stream_views_loading_reset_all = true;
		else
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);

			stream_views_loading_relids = lappend_oid(stream_views_loading_relids,
													  relid);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	if (stream_views_cache == NULL)
		return;
	hash_seq_init(&status, stream_views_cache);
	while ((slot = hash_seq_search(&status)) != NULL)
	{
		if (slot->views == NULL)
			continue;
		if (!OidIsValid(relid) || stream_views_depend_on(slot->views, relid))
			slot->views->valid = false;
	}
}

/*
 * A function or a foreign server changed: every entry may hold a plan or a
 * check that no longer holds.
 */
static void
stream_views_function_or_server_changed(Datum arg, int cacheid,
										uint32 hashvalue)
{
	stream_views_relation_changed((Datum) 0, InvalidOid);
}
