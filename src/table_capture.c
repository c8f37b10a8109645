/*-------------------------------------------------------------------------
 *
 * table_capture.c
 *	  Changes of ordinary tables that continuous views aggregate: the
 *	  triggers that capture them, and when they are applied.
 *
 * A continuous view may aggregate an ordinary table instead of a stream
 * (docs/views.md).  When the first such view is created, the table gets
 * statement-level triggers, all calling kappa.capture_table_change():
 *
 *	 kappa_capture_before	BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE
 *	 kappa_capture_insert	AFTER INSERT, REFERENCING NEW TABLE
 *	 kappa_capture_update	AFTER UPDATE, REFERENCING OLD TABLE and NEW TABLE
 *	 kappa_capture_delete	AFTER DELETE, REFERENCING OLD TABLE
 *	 kappa_capture_truncate AFTER TRUNCATE
 *
 * They are created and dropped as the table's owner, and dropped when the
 * table's last view goes.  INSERT, COPY, MERGE and INSERT ... ON CONFLICT
 * fire them too (PostgreSQL fires the statement triggers of every action a
 * MERGE or ON CONFLICT may take, with their transition tables).  The rows
 * of the transition tables become signed rows for the view runtime: old
 * rows leave (-1), new rows enter (+1) (KappaViewFeedChanges).  Everything
 * runs in the writer's transaction, so rollbacks and savepoints take the
 * view changes with the rows.
 *
 * Change logs.  While a new version of a view over the table is built from
 * the table (view_rebuild.c), writers do not feed it: they append their
 * changes to its change log, kappa_data.<materialization>_log (sign
 * smallint, r the table's row type): a row per changed row, sign +1 or -1,
 * and for a TRUNCATE a row of sign 0 without r.  A log row commits or
 * aborts with the change it records, so a snapshot sees in the log exactly
 * the changes it sees in the table: the build reads the table with one
 * snapshot and deletes what that snapshot sees of the log; the rest is
 * applied later (KappaTableChangeLogTake).
 *
 * When to apply.  A group whose rows cannot be retracted in place is
 * recomputed from the table as it is when the changes are applied; so by
 * then every change the table shows must be among the changes applied, or
 * it would count twice.  One statement can fire several AFTER triggers (a
 * MERGE: its DELETE, UPDATE and INSERT triggers, one after the other, all
 * after every row was changed), and a statement on the table can run
 * another one from a row trigger.  So the BEFORE trigger counts the
 * statements on a table that are open, the AFTER triggers count them down,
 * and the changes are applied when the last open statement on the table
 * ends; changes of statements that end earlier are copied and kept until
 * then (capture_pending).  Both lists follow subtransactions: what a
 * rolled-back subtransaction opened or captured is forgotten.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "pg_kappa.h"
#include "util.h"

PG_FUNCTION_INFO_V1(kappa_capture_table_change);

/* A statement on a table whose BEFORE trigger has fired. */
typedef struct CaptureOpen
{
	Oid			relid;
	SubTransactionId subid;		/* where it began */
} CaptureOpen;

/* Changes of an ended statement, kept until the table's last one ends. */
typedef struct CapturePending
{
	Oid			relid;
	SubTransactionId subid;		/* where they were captured */
	KappaTableChanges changes;	/* copies of the rows */
} CapturePending;

/* both in TopTransactionContext, reset at the end of every transaction */
static List *capture_open = NIL;
static List *capture_pending = NIL;

/* The triggers on a table with views, in the order they are created. */
static const char *const capture_trigger_names[] = {
	"kappa_capture_before",
	"kappa_capture_insert",
	"kappa_capture_update",
	"kappa_capture_delete",
	"kappa_capture_truncate"
};

static void capture_at_xact_end(XactEvent event, void *arg);
static void capture_at_subxact_end(SubXactEvent event, SubTransactionId mySubid,
								   SubTransactionId parentSubid, void *arg);

/*
 * KappaTableCaptureInit registers the end-of-(sub)transaction callbacks of
 * the captured changes; called once per backend from _PG_init.
 */
void
KappaTableCaptureInit(void)
{
	RegisterXactCallback(capture_at_xact_end, NULL);
	RegisterSubXactCallback(capture_at_subxact_end, NULL);
}

/* A transaction ends: nothing of it is kept (the memory goes with it). */
static void
capture_at_xact_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
	{
		capture_open = NIL;
		capture_pending = NIL;
	}
}

/*
 * A subtransaction ends: on commit its statements and changes become its
 * parent's; on abort they are forgotten, as its rows are.
 */
static void
capture_at_subxact_end(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, capture_open)
		{
			CaptureOpen *co = lfirst(lc);

			if (co->subid == mySubid)
				co->subid = parentSubid;
		}
		foreach(lc, capture_pending)
		{
			CapturePending *cp = lfirst(lc);

			if (cp->subid == mySubid)
				cp->subid = parentSubid;
		}
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, capture_open)
		{
			if (((CaptureOpen *) lfirst(lc))->subid == mySubid)
				capture_open = foreach_delete_current(capture_open, lc);
		}
		foreach(lc, capture_pending)
		{
			if (((CapturePending *) lfirst(lc))->subid == mySubid)
				capture_pending = foreach_delete_current(capture_pending, lc);
		}
	}
}

/* A statement on 'relid' begins (its BEFORE trigger fired). */
static void
capture_open_statement(Oid relid)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	CaptureOpen *co = palloc(sizeof(CaptureOpen));

	co->relid = relid;
	co->subid = GetCurrentSubTransactionId();
	capture_open = lappend(capture_open, co);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * A statement on 'relid' ends (an AFTER trigger fired).  Returns whether
 * another statement on the table is still open.
 */
static bool
capture_close_statement(Oid relid)
{
	ListCell   *lc;
	bool		stillOpen = false;
	int			i;

	/* the most recent one is the one ending (none if it began unseen) */
	for (i = list_length(capture_open) - 1; i >= 0; i--)
	{
		CaptureOpen *co = list_nth(capture_open, i);

		if (co->relid == relid)
		{
			capture_open = list_delete_nth_cell(capture_open, i);
			break;
		}
	}
	foreach(lc, capture_open)
	{
		if (((CaptureOpen *) lfirst(lc))->relid == relid)
			stillOpen = true;
	}
	return stillOpen;
}

/* Keep a copy of the rows of a transition table until the changes apply. */
static void
capture_keep(Oid relid, TupleDesc desc, Tuplestorestate *store, int sign)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	CapturePending *cp = palloc0(sizeof(CapturePending));
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	int			maxrows = Max(16, (int) tuplestore_tuple_count(store));

	cp->relid = relid;
	cp->subid = GetCurrentSubTransactionId();
	cp->changes.sign = sign;
	cp->changes.rows = palloc(sizeof(MinimalTuple) * maxrows);
	tuplestore_rescan(store);
	while (tuplestore_gettupleslot(store, true, false, slot))
	{
		if (cp->changes.nrows == maxrows)
		{
			maxrows *= 2;
			cp->changes.rows = repalloc_huge(cp->changes.rows,
											 sizeof(MinimalTuple) * maxrows);
		}
		cp->changes.rows[cp->changes.nrows++] = ExecCopySlotMinimalTuple(slot);
	}
	ExecDropSingleTupleTableSlot(slot);
	capture_pending = lappend(capture_pending, cp);
	MemoryContextSwitchTo(oldcxt);
}

/* Take the kept changes of 'relid' out of capture_pending, oldest first. */
static List *
capture_take_pending(Oid relid)
{
	List	   *changes = NIL;
	ListCell   *lc;

	foreach(lc, capture_pending)
	{
		CapturePending *cp = lfirst(lc);

		if (cp->relid != relid)
			continue;
		changes = lappend(changes, &cp->changes);
		capture_pending = foreach_delete_current(capture_pending, lc);
	}
	return changes;
}

/* A transition table's rows as changes, unless it is empty. */
static List *
capture_add_store(List *changes, Tuplestorestate *store, int sign)
{
	KappaTableChanges *ch;

	if (store == NULL || tuplestore_tuple_count(store) == 0)
		return changes;
	ch = palloc0(sizeof(KappaTableChanges));
	ch->sign = sign;
	ch->store = store;
	return lappend(changes, ch);
}

/*
 * Append changes of a table -- rows of row type 'rowtype', or with
 * 'truncate' its truncation -- to the change log 'log' of a version being
 * built from the table (see "Change logs" in the file header).
 */
static void
capture_log(Oid log, TupleDesc rowtype, List *changes, bool truncate)
{
	Relation	logrel = table_open(log, RowExclusiveLock);
	TupleDesc	logdesc = RelationGetDescr(logrel);
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	TupleTableSlot *slot;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	ListCell   *lc;

	if (truncate)
	{
		values[0] = Int16GetDatum(0);
		values[1] = (Datum) 0;
		nulls[1] = true;
		simple_heap_insert(logrel, heap_form_tuple(logdesc, values, nulls));
		table_close(logrel, NoLock);
		return;
	}
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_kappa change log row",
								   ALLOCSET_SMALL_SIZES);
	slot = MakeSingleTupleTableSlot(rowtype, &TTSOpsMinimalTuple);
	foreach(lc, changes)
	{
		KappaTableChanges *ch = lfirst(lc);
		int			i = 0;

		values[0] = Int16GetDatum(ch->sign);
		if (ch->store != NULL)
			tuplestore_rescan(ch->store);
		for (;;)
		{
			if (ch->store != NULL)
			{
				if (!tuplestore_gettupleslot(ch->store, true, false, slot))
					break;
			}
			else if (i < ch->nrows)
				ExecStoreMinimalTuple(ch->rows[i++], slot, false);
			else
				break;
			oldcxt = MemoryContextSwitchTo(rowcxt);
			values[1] = ExecFetchSlotHeapTupleDatum(slot);
			simple_heap_insert(logrel, heap_form_tuple(logdesc, values, nulls));
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(rowcxt);
		}
		ExecClearTuple(slot);
	}
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(rowcxt);
	table_close(logrel, NoLock);
}

/*
 * Apply changes of table 'rel' to its views (or, with 'truncate', empty
 * them), with the views' relations locked.
 */
static void
capture_apply(Relation rel, List *changes, bool truncate)
{
	KappaStreamViews *locked;

	locked = KappaStreamViewsGetLocked(RelationGetRelid(rel));
	PG_TRY();
	{
		ListCell   *lc;

		if (truncate)
			KappaViewTruncate(locked);
		else
			KappaViewFeedChanges(locked, RelationGetDescr(rel), changes);
		foreach(lc, locked->logs)
			capture_log(lfirst_oid(lc), RelationGetDescr(rel), changes, truncate);
	}
	PG_FINALLY();
	{
		KappaStreamViewsRelease(locked);
	}
	PG_END_TRY();
}

/*
 * kappa.capture_table_change() is the trigger of a table with continuous
 * views (see the file header): BEFORE a statement it notes the statement
 * open; AFTER, it applies the statement's changes to the views, or keeps
 * them if another statement on the table is still open.
 */
Datum
kappa_capture_table_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	Oid			relid;
	List	   *changes;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kappa.capture_table_change() must be called as a statement-level trigger")));
	rel = trigdata->tg_relation;
	relid = RelationGetRelid(rel);

	if (TRIGGER_FIRED_BEFORE(trigdata->tg_event))
	{
		capture_open_statement(relid);
		PG_RETURN_POINTER(NULL);
	}

	if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
	{
		(void) capture_close_statement(relid);
		(void) capture_take_pending(relid); /* older than the truncation */
		capture_apply(rel, NIL, true);
		PG_RETURN_POINTER(NULL);
	}

	if (capture_close_statement(relid))
	{
		/* a statement on the table is still open: apply when it ends */
		if (trigdata->tg_oldtable != NULL &&
			tuplestore_tuple_count(trigdata->tg_oldtable) > 0)
			capture_keep(relid, RelationGetDescr(rel), trigdata->tg_oldtable, -1);
		if (trigdata->tg_newtable != NULL &&
			tuplestore_tuple_count(trigdata->tg_newtable) > 0)
			capture_keep(relid, RelationGetDescr(rel), trigdata->tg_newtable, 1);
		PG_RETURN_POINTER(NULL);
	}

	changes = capture_take_pending(relid);
	changes = capture_add_store(changes, trigdata->tg_oldtable, -1);
	changes = capture_add_store(changes, trigdata->tg_newtable, 1);
	if (changes != NIL)
		capture_apply(rel, changes, false);
	PG_RETURN_POINTER(NULL);
}

/* "schema.table" of a relation, quoted. */
static char *
capture_qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* Does the table have pg_kappa's triggers? */
static bool
capture_installed(Oid relid)
{
	return OidIsValid(get_trigger_oid(relid, capture_trigger_names[1], true));
}

/*
 * KappaTableCaptureInstall gives table 'relid' the triggers that capture its
 * changes (see the file header), created as the table's owner, unless it
 * has them.  The caller holds a lock on the table that keeps writers out.
 */
void
KappaTableCaptureInstall(Oid relid)
{
	char	   *qname;
	KappaSavedUser saved;

	if (capture_installed(relid))
		return;
	qname = capture_qualified_name(relid);
	KappaBecomeUser(KappaRelationOwner(relid), &saved);
	KappaExecSql(psprintf("CREATE TRIGGER %s BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s "
						  "FOR EACH STATEMENT EXECUTE FUNCTION kappa.capture_table_change()",
						  capture_trigger_names[0], qname));
	KappaExecSql(psprintf("CREATE TRIGGER %s AFTER INSERT ON %s "
						  "REFERENCING NEW TABLE AS kappa_new "
						  "FOR EACH STATEMENT EXECUTE FUNCTION kappa.capture_table_change()",
						  capture_trigger_names[1], qname));
	KappaExecSql(psprintf("CREATE TRIGGER %s AFTER UPDATE ON %s "
						  "REFERENCING OLD TABLE AS kappa_old NEW TABLE AS kappa_new "
						  "FOR EACH STATEMENT EXECUTE FUNCTION kappa.capture_table_change()",
						  capture_trigger_names[2], qname));
	KappaExecSql(psprintf("CREATE TRIGGER %s AFTER DELETE ON %s "
						  "REFERENCING OLD TABLE AS kappa_old "
						  "FOR EACH STATEMENT EXECUTE FUNCTION kappa.capture_table_change()",
						  capture_trigger_names[3], qname));
	KappaExecSql(psprintf("CREATE TRIGGER %s AFTER TRUNCATE ON %s "
						  "FOR EACH STATEMENT EXECUTE FUNCTION kappa.capture_table_change()",
						  capture_trigger_names[4], qname));
	KappaRestoreUser(&saved);
}

/*
 * KappaTableCaptureRemove drops the capturing triggers of table 'relid' if
 * no continuous view aggregates it any more (as committed now, or deleted
 * earlier in this transaction).  Does nothing for other relations.
 */
void
KappaTableCaptureRemove(Oid relid)
{
	char	   *qname;
	KappaSavedUser saved;
	List	   *rows;
	int			i;

	if (get_rel_relkind(relid) != RELKIND_RELATION || !capture_installed(relid))
		return;
	CommandCounterIncrement();
	rows = KappaReadViewRows(relid, GetLatestSnapshot());
	if (rows != NIL)
		return;
	qname = capture_qualified_name(relid);
	KappaBecomeUser(KappaRelationOwner(relid), &saved);
	for (i = 0; i < lengthof(capture_trigger_names); i++)
		KappaExecSql(psprintf("DROP TRIGGER IF EXISTS %s ON %s",
							  capture_trigger_names[i], qname));
	KappaRestoreUser(&saved);
}

/*
 * KappaTableChangeLogCreate creates the change log of the version with
 * materialization 'matRelid' that is to be built from table 'relid' (see
 * "Change logs" in the file header), owned by the extension's owner and
 * dropped with the materialization; returns its OID.
 */
Oid
KappaTableChangeLogCreate(Oid relid, Oid matRelid)
{
	KappaSavedUser saved;
	char	   *logname = KappaDataRelName(get_rel_name(matRelid), "_log");
	ObjectAddress logaddr;
	ObjectAddress mataddr;
	Oid			log;

	KappaBecomeExtensionOwner(&saved);
	KappaExecSql(psprintf("CREATE TABLE %s (sign pg_catalog.int2 NOT NULL, r %s)",
						  quote_qualified_identifier(KAPPA_DATA_SCHEMA, logname),
						  format_type_be_qualified(get_rel_type_id(relid))));
	KappaRestoreUser(&saved);
	log = get_relname_relid(logname, get_namespace_oid(KAPPA_DATA_SCHEMA, false));
	ObjectAddressSet(logaddr, RelationRelationId, log);
	ObjectAddressSet(mataddr, RelationRelationId, matRelid);
	recordDependencyOn(&logaddr, &mataddr, DEPENDENCY_AUTO);
	CommandCounterIncrement();
	return log;
}

/*
 * KappaTableChangeLogTake deletes from change log 'log' every row the
 * active snapshot sees, and returns them as changes of a table of row type
 * 'rowtype': a KappaTableChanges of the rows that left (sign -1), then one
 * of those that entered (+1), each a tuplestore in the current memory
 * context; NIL if none.  Sets *nrows to the number of log rows taken, and
 * *truncated if a truncation was among them: the changes then do not say
 * what the table holds, the caller recomputes from the table.  The caller
 * holds a lock on the table that keeps TRUNCATE out (it is not MVCC-safe),
 * taken before the snapshot.
 */
List *
KappaTableChangeLogTake(Oid log, TupleDesc rowtype, bool *truncated, int64 *nrows)
{
	Relation	logrel = table_open(log, RowExclusiveLock);
	TupleDesc	logdesc = RelationGetDescr(logrel);
	TableScanDesc scan = table_beginscan(logrel, GetActiveSnapshot(), 0, NULL);
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext,
												 "pg_kappa change log row",
												 ALLOCSET_SMALL_SIZES);
	Tuplestorestate *stores[2] = {NULL, NULL};
	List	   *changes = NIL;
	HeapTuple	tup;

	*truncated = false;
	*nrows = 0;
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		int16		sign = DatumGetInt16(heap_getattr(tup, 1, logdesc, &isnull));
		Datum		r = heap_getattr(tup, 2, logdesc, &isnull);

		simple_heap_delete(logrel, &tup->t_self);
		(*nrows)++;
		if (sign == 0)
			*truncated = true;
		else if (!*truncated && !isnull)
		{
			int			i = sign > 0 ? 1 : 0;
			MemoryContext oldcxt = MemoryContextSwitchTo(rowcxt);
			HeapTupleHeader th = DatumGetHeapTupleHeader(r);
			HeapTupleData row;

			row.t_len = HeapTupleHeaderGetDatumLength(th);
			ItemPointerSetInvalid(&row.t_self);
			row.t_tableOid = InvalidOid;
			row.t_data = th;
			MemoryContextSwitchTo(oldcxt);
			if (stores[i] == NULL)
				stores[i] = tuplestore_begin_heap(false, false, work_mem);
			tuplestore_puttuple(stores[i], &row);
			MemoryContextReset(rowcxt);
		}
		CHECK_FOR_INTERRUPTS();
	}
	table_endscan(scan);
	table_close(logrel, NoLock);
	MemoryContextDelete(rowcxt);
	for (int i = 0; i < 2; i++)
	{
		if (stores[i] != NULL)
		{
			KappaTableChanges *ch = palloc0(sizeof(KappaTableChanges));

			ch->sign = i == 0 ? -1 : 1;
			ch->store = stores[i];
			changes = lappend(changes, ch);
		}
	}
	return changes;
}
