/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The per-backend cache of streams and their continuous views, built from
 *	  kappa.stream_catalog and kappa.view_catalog.
 *
 * KappaGetStreamInfo returns, for a stream, its retention and the views to
 * feed, each with a planned delta query.  Entries are rebuilt lazily after an
 * invalidation: creating or dropping a view sends a relcache invalidation for
 * its stream, and every relation an entry depends on (the stream, the views'
 * relations, the relations their delta plans read) invalidates the entry
 * when it changes.  An entry that is in use while it is invalidated is
 * retired and freed once no batch is being applied.
 *
 * Exactness under concurrent DDL.  Callers hold a lock on the stream
 * (RowExclusiveLock to write, AccessShareLock to read) before they ask for
 * its entry, and kappa.create_view and kappa.drop_view take a SHARE lock on
 * the stream; so the set of views cannot change while an entry is in use.
 * The catalog rows are read with a snapshot taken after that lock -- not the
 * transaction's snapshot, which may predate a view committed while the
 * writer waited for the lock (or, in REPEATABLE READ, long before) -- and
 * read directly from the tables, without SQL, so nothing on the search_path
 * takes part.  A view whose relations are dropped by plain DDL while the
 * entry is loaded (DROP VIEW, which locks no stream) is skipped once its
 * locks show it gone.  Invalidations that arrive while an entry is being
 * loaded mark it stale at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "parser/parse_relation.h"
#include "access/skey.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_foreign_table.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "pg_kappa.h"
#include "view.h"

typedef struct StreamCacheEntry
{
	Oid			relid;			/* hash key */
	KappaStreamInfo *info;		/* NULL until loaded */
} StreamCacheEntry;

static HTAB *kappa_stream_cache = NULL;
static MemoryContext kappa_cache_cxt = NULL;
static List *kappa_retired = NIL;	/* invalidated infos still in use */
static int	kappa_apply_depth = 0;
static Oid	kappa_server_oid = InvalidOid;

/* invalidations seen while an entry is being loaded */
static bool kappa_loading = false;
static bool kappa_loading_reset_all = false;
static List *kappa_loading_relids = NIL;

static void kappa_relcache_callback(Datum arg, Oid relid);
static void kappa_syscache_callback(Datum arg, int cacheid, uint32 hashvalue);
static void kappa_cache_xact_callback(XactEvent event, void *arg);
static void free_stream_info(KappaStreamInfo *info);
static bool stream_info_depends_on(KappaStreamInfo *info, Oid relid);

/*
 * KappaCatalogInit registers the cache's invalidation and end-of-transaction
 * callbacks; called once per backend from _PG_init.
 */
void
KappaCatalogInit(void)
{
	CacheRegisterRelcacheCallback(kappa_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, kappa_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(FOREIGNSERVEROID, kappa_syscache_callback,
								  (Datum) 0);
	RegisterXactCallback(kappa_cache_xact_callback, NULL);
}

/*
 * KappaStreamServerOid returns the OID of the server all streams belong to,
 * or InvalidOid if pg_kappa is not installed in this database and
 * missing_ok.
 */
Oid
KappaStreamServerOid(bool missing_ok)
{
	if (!OidIsValid(kappa_server_oid))
	{
		ForeignServer *server = GetForeignServerByName(KAPPA_SERVER_NAME, true);

		if (server == NULL)
		{
			if (!missing_ok)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("pg_kappa is not installed in this database"),
						 errhint("Run CREATE EXTENSION pg_kappa.")));
			return InvalidOid;
		}
		kappa_server_oid = server->serverid;
	}
	return kappa_server_oid;
}

/* KappaIsStream tells whether a relation is a stream. */
bool
KappaIsStream(Oid relid)
{
	HeapTuple	tuple;
	Oid			serverid;
	Oid			ours;

	if (get_rel_relkind(relid) != RELKIND_FOREIGN_TABLE)
		return false;
	ours = KappaStreamServerOid(true);
	if (!OidIsValid(ours))
		return false;
	tuple = SearchSysCache1(FOREIGNTABLEREL, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		return false;
	serverid = ((Form_pg_foreign_table) GETSTRUCT(tuple))->ftserver;
	ReleaseSysCache(tuple);
	return serverid == ours;
}

/*
 * KappaCatalogTable opens one of pg_kappa's catalog tables (kappa.<name>)
 * with AccessShareLock; the caller closes it.
 */
Relation
KappaCatalogTable(const char *name)
{
	Oid			nspid = get_namespace_oid(KAPPA_SCHEMA, false);
	Oid			relid = get_relname_relid(name, nspid);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_kappa's catalog table kappa.%s is missing", name),
				 errhint("Reinstall the extension: DROP EXTENSION pg_kappa CASCADE; CREATE EXTENSION pg_kappa.")));
	return table_open(relid, AccessShareLock);
}

/*
 * KappaCatalogAttnum returns the number of column 'name' of a catalog table,
 * raising an error if it has none.
 */
AttrNumber
KappaCatalogAttnum(Relation rel, const char *name)
{
	AttrNumber	attno = attnameAttNum(rel, name, false);

	if (attno == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_kappa's catalog table %s has no column \"%s\"",
						RelationGetRelationName(rel), name),
				 errhint("Run ALTER EXTENSION pg_kappa UPDATE.")));
	return attno;
}

/*
 * Read the rows of a catalog table whose oid-like column 'keycol' equals
 * 'key', with 'snapshot', calling 'fn' for each with its values.
 */
static void
scan_catalog_rows(const char *table, const char *keycol, Oid key,
				  Snapshot snapshot,
				  void (*fn) (Relation rel, Datum *values, bool *nulls, void *arg),
				  void *arg)
{
	Relation	rel = KappaCatalogTable(table);
	TupleDesc	desc = RelationGetDescr(rel);
	ScanKeyData skey;
	TableScanDesc scan;
	TupleTableSlot *slot;
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);

	ScanKeyInit(&skey, KappaCatalogAttnum(rel, keycol), BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(key));
	scan = table_beginscan(rel, snapshot, 1, &skey);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		slot_getallattrs(slot);
		memcpy(values, slot->tts_values, sizeof(Datum) * desc->natts);
		memcpy(nulls, slot->tts_isnull, sizeof(bool) * desc->natts);
		fn(rel, values, nulls, arg);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	pfree(values);
	pfree(nulls);
}

static void
read_stream_row(Relation rel, Datum *values, bool *nulls, void *arg)
{
	KappaStreamInfo *info = arg;
	AttrNumber	backing = KappaCatalogAttnum(rel, "backing");

	info->retained = !nulls[backing - 1];
	info->backingRelid = info->retained ?
		DatumGetObjectId(values[backing - 1]) : InvalidOid;
}

static void
read_view_row(Relation rel, Datum *values, bool *nulls, void *arg)
{
	List	  **rows = arg;
	KappaViewRow *row = palloc(sizeof(KappaViewRow));

	row->view = DatumGetObjectId(values[KappaCatalogAttnum(rel, "view") - 1]);
	row->stream = DatumGetObjectId(values[KappaCatalogAttnum(rel, "stream") - 1]);
	row->mat = DatumGetObjectId(values[KappaCatalogAttnum(rel, "mat") - 1]);
	row->def = DatumGetObjectId(values[KappaCatalogAttnum(rel, "def") - 1]);
	*rows = lappend(*rows, row);
}

static int
view_row_cmp(const ListCell *a, const ListCell *b)
{
	Oid			va = ((KappaViewRow *) lfirst(a))->view;
	Oid			vb = ((KappaViewRow *) lfirst(b))->view;

	return va < vb ? -1 : (va > vb ? 1 : 0);
}

/*
 * Load a stream's catalog rows and its views (see the file header).  The
 * caller holds a lock on the stream.
 */
static KappaStreamInfo *
load_stream_info(Oid relid)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	KappaStreamInfo *info;
	Snapshot	snapshot;
	List	   *rows = NIL;
	ListCell   *lc;

	cxt = AllocSetContextCreate(kappa_cache_cxt, "pg_kappa stream",
								ALLOCSET_SMALL_SIZES);
	info = MemoryContextAllocZero(cxt, sizeof(KappaStreamInfo));
	info->relid = relid;
	info->cxt = cxt;

	kappa_loading = true;
	kappa_loading_reset_all = false;
	kappa_loading_relids = NIL;
	PG_TRY();
	{
		/* the catalog as committed now, not as of the transaction's start */
		snapshot = RegisterSnapshot(GetLatestSnapshot());
		scan_catalog_rows("stream_catalog", "stream", relid, snapshot,
						  read_stream_row, info);
		scan_catalog_rows("view_catalog", "stream", relid, snapshot,
						  read_view_row, &rows);
		UnregisterSnapshot(snapshot);
		list_sort(rows, view_row_cmp);

		foreach(lc, rows)
		{
			KappaViewRow *row = lfirst(lc);
			KappaViewInfo *vinfo;

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

			vinfo = KappaViewInfoLoad(row->view, row->mat, row->def, cxt);
			oldcxt = MemoryContextSwitchTo(cxt);
			info->views = lappend(info->views, vinfo);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	PG_FINALLY();
	{
		kappa_loading = false;
	}
	PG_END_TRY();

	info->valid = true;
	if (kappa_loading_reset_all)
		info->valid = false;
	foreach(lc, kappa_loading_relids)
	{
		if (stream_info_depends_on(info, lfirst_oid(lc)))
			info->valid = false;
	}
	list_free(kappa_loading_relids);
	kappa_loading_relids = NIL;
	list_free_deep(rows);
	return info;
}

/*
 * KappaFindView looks up the catalog row of the continuous view whose
 * column 'column' ("view", "mat" or "def") is 'relid', as committed now;
 * fills *row and returns true if there is one.
 */
bool
KappaFindView(const char *column, Oid relid, KappaViewRow *row)
{
	Relation	rel = KappaCatalogTable("view_catalog");
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData skey;
	TableScanDesc scan;
	TupleTableSlot *slot;
	bool		found;

	ScanKeyInit(&skey, KappaCatalogAttnum(rel, column), BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	scan = table_beginscan(rel, snapshot, 1, &skey);
	slot = table_slot_create(rel, NULL);
	found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
	if (found)
	{
		bool		isnull;

		row->view = DatumGetObjectId(slot_getattr(slot, KappaCatalogAttnum(rel, "view"), &isnull));
		row->stream = DatumGetObjectId(slot_getattr(slot, KappaCatalogAttnum(rel, "stream"), &isnull));
		row->mat = DatumGetObjectId(slot_getattr(slot, KappaCatalogAttnum(rel, "mat"), &isnull));
		row->def = DatumGetObjectId(slot_getattr(slot, KappaCatalogAttnum(rel, "def"), &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * KappaStreamBackingRelid returns the retained-rows table of a stream, or
 * InvalidOid if it keeps no rows; what a scan of the stream needs, without
 * loading (and locking) its views as KappaGetStreamInfo does.
 */
Oid
KappaStreamBackingRelid(Oid relid)
{
	KappaStreamInfo info;
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());

	memset(&info, 0, sizeof(info));
	scan_catalog_rows("stream_catalog", "stream", relid, snapshot,
					  read_stream_row, &info);
	UnregisterSnapshot(snapshot);
	return info.backingRelid;
}

/*
 * KappaGetStreamInfo returns the cached description of a stream, loading it
 * if needed.  The caller holds a lock on the stream.  The result stays
 * allocated until KappaReleaseStreamInfo, even if an invalidation arrives
 * meanwhile (info->valid then turns false).
 */
KappaStreamInfo *
KappaGetStreamInfo(Oid relid)
{
	StreamCacheEntry *entry;
	bool		found;

	if (kappa_stream_cache == NULL)
	{
		HASHCTL		ctl;

		kappa_cache_cxt = AllocSetContextCreate(CacheMemoryContext,
												"pg_kappa cache",
												ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(StreamCacheEntry);
		ctl.hcxt = kappa_cache_cxt;
		kappa_stream_cache = hash_create("pg_kappa streams", 16, &ctl,
										 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	entry = hash_search(kappa_stream_cache, &relid, HASH_ENTER, &found);
	if (!found)
		entry->info = NULL;
	if (entry->info != NULL && !entry->info->valid)
	{
		if (kappa_apply_depth > 0)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(kappa_cache_cxt);

			kappa_retired = lappend(kappa_retired, entry->info);
			MemoryContextSwitchTo(oldcxt);
		}
		else
			free_stream_info(entry->info);
		entry->info = NULL;
	}
	if (entry->info == NULL)
	{
		KappaStreamInfo *info = load_stream_info(relid);

		/* the load may have processed invalidations; look the entry up again */
		entry = hash_search(kappa_stream_cache, &relid, HASH_ENTER, &found);
		if (found && entry->info != NULL && entry->info != info)
			free_stream_info(entry->info);
		entry->info = info;
	}
	kappa_apply_depth++;
	return entry->info;
}

/*
 * KappaReleaseStreamInfo ends a use of KappaGetStreamInfo's result; entries
 * retired meanwhile are freed when the last use ends.
 */
void
KappaReleaseStreamInfo(KappaStreamInfo *info)
{
	if (kappa_apply_depth > 0)
		kappa_apply_depth--;
	if (kappa_apply_depth == 0 && kappa_retired != NIL)
	{
		ListCell   *lc;

		foreach(lc, kappa_retired)
			free_stream_info(lfirst(lc));
		list_free(kappa_retired);
		kappa_retired = NIL;
	}
}

static void
free_stream_info(KappaStreamInfo *info)
{
	ListCell   *lc;

	foreach(lc, info->views)
		KappaViewInfoFree(lfirst(lc));
	MemoryContextDelete(info->cxt);
}

/*
 * At the end of a transaction no entry is in use: forget the uses that an
 * error cut short, and free the entries retired meanwhile.
 */
static void
kappa_cache_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		kappa_apply_depth = 1;
		KappaReleaseStreamInfo(NULL);
		kappa_loading = false;
		kappa_loading_relids = NIL; /* was in TopTransactionContext */
	}
}

/* KappaInvalidateStream makes every backend reload a stream's entry. */
void
KappaInvalidateStream(Oid relid)
{
	CacheInvalidateRelcacheByRelid(relid);
}

/* Does 'info' depend on relation 'relid'? */
static bool
stream_info_depends_on(KappaStreamInfo *info, Oid relid)
{
	ListCell   *lc;

	if (info->relid == relid || info->backingRelid == relid)
		return true;
	foreach(lc, info->views)
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
 * Relcache invalidation: mark stale every entry that depends on the
 * relation (all entries for InvalidOid), and remember it for an entry being
 * loaded.
 */
static void
kappa_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	StreamCacheEntry *entry;

	if (kappa_loading)
	{
		if (!OidIsValid(relid))
			kappa_loading_reset_all = true;
		else
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);

			kappa_loading_relids = lappend_oid(kappa_loading_relids, relid);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	if (kappa_stream_cache == NULL)
		return;
	hash_seq_init(&status, kappa_stream_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->info == NULL)
			continue;
		if (!OidIsValid(relid) || stream_info_depends_on(entry->info, relid))
			entry->info->valid = false;
	}
}

/*
 * A function or a foreign server changed: every entry may hold a plan or a
 * check that no longer holds.
 */
static void
kappa_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	kappa_relcache_callback((Datum) 0, InvalidOid);
	if (cacheid == FOREIGNSERVEROID)
		kappa_server_oid = InvalidOid;
}
