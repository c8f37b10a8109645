/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Reading pg_kappa's catalog: kappa.stream_catalog and kappa.view_catalog,
 *	  and whether a relation is a stream.
 *
 * The catalog tables are read directly (table scans with a scan key, no
 * SQL), so nothing on anyone's search_path takes part, and with the
 * snapshot the caller chooses: the per-backend cache of a stream's views
 * (stream_views.c) reads them with a snapshot taken after it holds the
 * stream's lock, the other callers with the latest snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/skey.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_foreign_table.h"
#include "foreign/foreign.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "pg_kappa.h"

/* the server all streams belong to, looked up once per backend */
static Oid	catalog_stream_server = InvalidOid;

/* building versions this transaction registered (KappaCatalogRebuildRegistered) */
static List *catalog_own_rebuilds = NIL;

/* KappaReadViewRows left one of them out since the last question */
static bool catalog_skipped_own = false;

static void catalog_at_xact_end(XactEvent event, void *arg);

/* A foreign server changed: look the streams' server up again. */
static void
catalog_server_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	catalog_stream_server = InvalidOid;
}

/*
 * KappaCatalogInit registers the invalidation callback of what this file
 * caches; called once per backend from _PG_init.
 */
void
KappaCatalogInit(void)
{
	CacheRegisterSyscacheCallback(FOREIGNSERVEROID, catalog_server_changed,
								  (Datum) 0);
	RegisterXactCallback(catalog_at_xact_end, NULL);
}

/* the list of KappaCatalogRebuildRegistered lives as long as its transaction */
static void
catalog_at_xact_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		catalog_own_rebuilds = NIL;
}

/*
 * KappaCatalogSkippedOwnRebuild tells whether KappaReadViewRows has left out
 * a version this transaction registered since the last call: what it
 * returned holds for this transaction only.
 */
bool
KappaCatalogSkippedOwnRebuild(void)
{
	bool		skipped = catalog_skipped_own;

	catalog_skipped_own = false;
	return skipped;
}

/*
 * KappaCatalogRebuildRegistered notes that this transaction registered the
 * building version whose materialization is 'mat' (view_rebuild.c): its own
 * writes are inside the rebuild's cut, so KappaReadViewRows does not list
 * that version for it.
 */
void
KappaCatalogRebuildRegistered(Oid mat)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	catalog_own_rebuilds = lappend_oid(catalog_own_rebuilds, mat);
	MemoryContextSwitchTo(old);
}

/*
 * KappaStreamServerOid returns the OID of the server all streams belong to,
 * or InvalidOid if pg_kappa is not installed in this database and
 * missing_ok.
 */
Oid
KappaStreamServerOid(bool missing_ok)
{
	if (!OidIsValid(catalog_stream_server))
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
		catalog_stream_server = server->serverid;
	}
	return catalog_stream_server;
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
catalog_scan_rows(const char *table, const char *keycol, Oid key,
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
catalog_read_stream_row(Relation rel, Datum *values, bool *nulls, void *arg)
{
	Oid		   *backingRelid = arg;
	AttrNumber	backing = KappaCatalogAttnum(rel, "backing");

	*backingRelid = nulls[backing - 1] ?
		InvalidOid : DatumGetObjectId(values[backing - 1]);
}

static void
catalog_read_view_row(Relation rel, Datum *values, bool *nulls, void *arg)
{
	List	  **rows = arg;
	KappaViewRow *row = palloc(sizeof(KappaViewRow));

	row->view = DatumGetObjectId(values[KappaCatalogAttnum(rel, "view") - 1]);
	row->stream = DatumGetObjectId(values[KappaCatalogAttnum(rel, "stream") - 1]);
	row->mat = DatumGetObjectId(values[KappaCatalogAttnum(rel, "mat") - 1]);
	row->def = DatumGetObjectId(values[KappaCatalogAttnum(rel, "def") - 1]);
	row->building = false;
	row->log = InvalidOid;
	*rows = lappend(*rows, row);
}

/*
 * A row of kappa.view_rebuilds; listed if live batches feed its version, or
 * if writers log their changes for it (KappaViewRow.log).
 */
static void
catalog_read_rebuild_row(Relation rel, Datum *values, bool *nulls, void *arg)
{
	List	  **rows = arg;
	KappaViewRow *row;

	/*
	 * fed from registration (Kafka, retained rows) or once built (table), but
	 * not by the transaction that registered it
	 */
	if (list_member_oid(catalog_own_rebuilds,
						DatumGetObjectId(values[KappaCatalogAttnum(rel, "mat") - 1])))
	{
		catalog_skipped_own = true;
		return;
	}
	if (strcmp(TextDatumGetCString(values[KappaCatalogAttnum(rel, "state") - 1]), "failed") == 0)
		return;
	row = palloc(sizeof(KappaViewRow));
	row->view = DatumGetObjectId(values[KappaCatalogAttnum(rel, "view") - 1]);
	row->stream = DatumGetObjectId(values[KappaCatalogAttnum(rel, "stream") - 1]);
	row->mat = DatumGetObjectId(values[KappaCatalogAttnum(rel, "mat") - 1]);
	row->def = DatumGetObjectId(values[KappaCatalogAttnum(rel, "def") - 1]);
	row->building = true;
	row->log = InvalidOid;
	if (!DatumGetBool(values[KappaCatalogAttnum(rel, "fed") - 1]))
	{
		/* not fed yet: being built from its table, writers log for it */
		AttrNumber	log = KappaCatalogAttnum(rel, "log");

		if (nulls[log - 1])
		{
			pfree(row);
			return;
		}
		row->log = DatumGetObjectId(values[log - 1]);
	}
	*rows = lappend(*rows, row);
}

static int
catalog_view_row_cmp(const ListCell *a, const ListCell *b)
{
	const KappaViewRow *ra = lfirst(a);
	const KappaViewRow *rb = lfirst(b);

	if (ra->view != rb->view)
		return ra->view < rb->view ? -1 : 1;
	return (int) ra->building - (int) rb->building;
}

/*
 * KappaReadStreamRow reads the catalog row of stream 'relid' with
 * 'snapshot': sets *backingRelid to its retained-rows table, or InvalidOid
 * if it keeps no rows (or has no row).
 */
void
KappaReadStreamRow(Oid relid, Snapshot snapshot, Oid *backingRelid)
{
	*backingRelid = InvalidOid;
	catalog_scan_rows("stream_catalog", "stream", relid, snapshot,
					  catalog_read_stream_row, backingRelid);
}

/*
 * KappaReadViewRows returns the catalog rows (KappaViewRow *) of the views
 * on stream 'relid' as 'snapshot' sees them, in view-OID order, each
 * followed by its version being rebuilt if it has one that live batches
 * feed too or that writers log their changes for (its 'log' is then
 * valid), in the current memory context.
 */
List *
KappaReadViewRows(Oid relid, Snapshot snapshot)
{
	List	   *rows = NIL;

	catalog_scan_rows("view_catalog", "stream", relid, snapshot,
					  catalog_read_view_row, &rows);
	/* (an extension not yet updated to 0.3 has no rebuilds) */
	if (OidIsValid(get_relname_relid("view_rebuilds",
									 get_namespace_oid(KAPPA_SCHEMA, false))))
		catalog_scan_rows("view_rebuilds", "stream", relid, snapshot,
						  catalog_read_rebuild_row, &rows);
	list_sort(rows, catalog_view_row_cmp);
	return rows;
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
		row->building = false;
		row->log = InvalidOid;
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
 * loading (and locking) its views as KappaStreamViewsGet does.
 */
Oid
KappaStreamBackingRelid(Oid relid)
{
	Snapshot	snapshot = RegisterSnapshot(GetLatestSnapshot());
	Oid			backingRelid;

	KappaReadStreamRow(relid, snapshot, &backingRelid);
	UnregisterSnapshot(snapshot);
	return backingRelid;
}
