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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_foreign_table.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
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

static void kappa_relcache_callback(Datum arg, Oid relid);
static void kappa_syscache_callback(Datum arg, int cacheid, uint32 hashvalue);
static void free_stream_info(KappaStreamInfo *info);

/*
 * KappaCatalogInit registers the invalidation callbacks; called once per
 * backend from _PG_init.
 */
void
KappaCatalogInit(void)
{
	CacheRegisterRelcacheCallback(kappa_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, kappa_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(FOREIGNSERVEROID, kappa_syscache_callback,
								  (Datum) 0);
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

/* Load a stream's catalog rows and its views. */
static KappaStreamInfo *
load_stream_info(Oid relid)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	KappaStreamInfo *info;
	Datum		arg[1];
	Oid			argtypes[1] = {OIDOID};
	int			rc;
	uint64		i;
	bool		pushed = false;

	cxt = AllocSetContextCreate(kappa_cache_cxt, "pg_kappa stream",
								ALLOCSET_SMALL_SIZES);
	info = MemoryContextAllocZero(cxt, sizeof(KappaStreamInfo));
	info->relid = relid;
	info->cxt = cxt;

	/* callers outside a query (background workers) may have no snapshot */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	arg[0] = ObjectIdGetDatum(relid);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args("SELECT backing FROM kappa.stream_catalog WHERE stream = $1",
							   1, argtypes, arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read kappa.stream_catalog: %s",
			 SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		info->backingRelid = isnull ? InvalidOid : DatumGetObjectId(d);
		info->retained = !isnull;
	}

	rc = SPI_execute_with_args("SELECT view, mat, def FROM kappa.view_catalog "
							   "WHERE stream = $1 ORDER BY view::oid",
							   1, argtypes, arg, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read kappa.view_catalog: %s",
			 SPI_result_code_string(rc));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Oid			view = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		Oid			mat = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		Oid			def = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		KappaViewInfo *vinfo;

		vinfo = KappaViewInfoLoad(view, mat, def, cxt);
		oldcxt = MemoryContextSwitchTo(cxt);
		info->views = lappend(info->views, vinfo);
		MemoryContextSwitchTo(oldcxt);
	}
	SPI_finish();
	if (pushed)
		PopActiveSnapshot();
	info->valid = true;
	return info;
}

/*
 * KappaGetStreamInfo returns the cached description of a stream, loading it
 * if needed.  The result stays valid until KappaReleaseStreamInfo, even if
 * an invalidation arrives meanwhile.
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
 * KappaResetAfterAbort forgets uses of stream entries that an error cut
 * short, and frees retired entries; called when a transaction aborts.
 */
void
KappaResetAfterAbort(void)
{
	kappa_apply_depth = 1;
	KappaReleaseStreamInfo(NULL);
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

static void
kappa_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	StreamCacheEntry *entry;

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

static void
kappa_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	kappa_relcache_callback((Datum) 0, InvalidOid);
	if (cacheid == FOREIGNSERVEROID)
		kappa_server_oid = InvalidOid;
}
