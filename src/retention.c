/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Expiry of the rows kept by streams created with an interval retention.
 *
 * A stream created with retain => '7 days' keeps its rows in a heap table
 * in kappa_data with a kappa_arrived_at column (indexed with BRIN, since
 * rows arrive in time order).  kappa.expire_retained_rows() deletes the
 * rows older than each stream's retention; the background workers of the
 * Kafka launcher call it periodically in every database with pg_kappa, and
 * it can be called by hand or from a scheduler.  Views are not affected:
 * they hold aggregates of every row ever applied.
 *
 * The rows' table belongs to the stream's owner, who may put triggers or
 * policies on it; so each table's expiry runs as that owner, in a
 * security-restricted operation with search_path pinned (KappaBecomeUser),
 * never as the superuser the background worker connects as.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "util.h"

/* A stream whose rows expire: its rows' table and their maximum age. */
typedef struct ExpiringStream
{
	Oid			backing;
	Interval	retain;
} ExpiringStream;

/*
 * KappaExpireRetainedRows deletes expired rows of every stream of the
 * current database that has an interval retention, and returns how many
 * rows it deleted.  Call it inside a transaction.
 */
int64
KappaExpireRetainedRows(void)
{
	Relation	catalog = KappaCatalogTable("stream_catalog");
	AttrNumber	backingAttno = KappaCatalogAttnum(catalog, "backing");
	AttrNumber	retainAttno = KappaCatalogAttnum(catalog, "retain");
	TableScanDesc scan;
	TupleTableSlot *slot;
	List	   *streams = NIL;
	ListCell   *lc;
	int64		deleted = 0;

	scan = table_beginscan(catalog, GetActiveSnapshot(), 0, NULL);
	slot = table_slot_create(catalog, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		backingNull;
		bool		retainNull;
		Datum		backing = slot_getattr(slot, backingAttno, &backingNull);
		Datum		retain = slot_getattr(slot, retainAttno, &retainNull);
		ExpiringStream *es;

		if (backingNull || retainNull)
			continue;
		es = palloc(sizeof(ExpiringStream));
		es->backing = DatumGetObjectId(backing);
		es->retain = *DatumGetIntervalP(retain);
		streams = lappend(streams, es);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	table_close(catalog, AccessShareLock);

	foreach(lc, streams)
	{
		ExpiringStream *es = lfirst(lc);
		HeapTuple	tuple;
		Oid			owner;
		char	   *table;
		KappaSavedUser saved;
		Oid			argtypes[1] = {INTERVALOID};
		Datum		args[1];

		/* the table may have gone since the catalog was read */
		LockRelationOid(es->backing, RowExclusiveLock);
		tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(es->backing));
		if (!HeapTupleIsValid(tuple))
			continue;
		owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
		ReleaseSysCache(tuple);
		table = quote_qualified_identifier(get_namespace_name(get_rel_namespace(es->backing)),
										   get_rel_name(es->backing));

		args[0] = IntervalPGetDatum(&es->retain);
		KappaBecomeUser(owner, &saved);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args(psprintf("DELETE FROM %s WHERE kappa_arrived_at "
										   "OPERATOR(pg_catalog.<) "
										   "(pg_catalog.now() OPERATOR(pg_catalog.-) $1)",
										   table),
								  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not expire rows of %s", table);
		deleted += SPI_processed;
		SPI_finish();
		KappaRestoreUser(&saved);
	}
	return deleted;
}

PG_FUNCTION_INFO_V1(kappa_expire_retained_rows);

/*
 * kappa.expire_retained_rows() deletes the rows that streams keep past their
 * retention and returns how many were deleted.
 */
Datum
kappa_expire_retained_rows(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(KappaExpireRetainedRows());
}
