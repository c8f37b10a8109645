/*-------------------------------------------------------------------------
 *
 * kafka_target.c
 *	  Writing into the table a Kafka source feeds: rows through the
 *	  executor's simple path or through statements checked as the source's
 *	  owner, and keyed changes (envelopes 'upsert' and 'debezium') applied
 *	  to the table's primary key.
 *
 * Two ways to write.  A plain table without statement-level triggers,
 * transition tables, rules, row-level security or identity columns is
 * written through ExecSimpleRelationInsert/Update/Delete, as logical
 * replication's apply worker does: constraints, indexes and row triggers,
 * nothing else to plan.  Every other table (partitioned, with policies, or
 * with the triggers continuous views put on the tables they aggregate) is
 * written by planned statements whose result relation is checked as the
 * source's owner, so that its privileges and policies apply and statement
 * triggers fire.
 *
 * Keyed changes.  A KappaChangeSet gathers the changes of a range of
 * messages, then applies them in one go: sorted by primary key (the order
 * concurrent writers take row locks in), each key's changes folded in offset
 * order into one final change -- the last one wins, and Debezium's
 * unchanged-TOAST placeholder takes the value set earlier in the batch, or
 * the one the row has -- so the batch writes each key once.  A 't'
 * (truncate) discards the changes before it and deletes every row first.
 * Deletes of absent keys do nothing; upserts of present keys update them.
 * With an ordering guard (the source's order_by), a change whose position
 * is older than the one applied last for its key (kept in
 * kappa.source_key_positions, also after a delete) is dropped and counted.
 * Applying the same messages again therefore leaves the table as it is,
 * which is what makes a replay after a crash harmless (the offsets commit
 * with the rows anyway).
 *
 * Errors.  On the simple path an error while applying a key's change is
 * that change's last message's (KappaChangeSetApply says which), so the
 * caller makes it a dead letter and applies the range again without it,
 * which lets the key's earlier changes apply.  The planned statements write
 * many keys at once: an error there belongs to no single message, and the
 * caller bisects the range.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/params.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/sortsupport.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "common/hashfn.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "util.h"

/*
 * KappaTargetIsSimple tells whether rows can go into the table through
 * ExecSimpleRelationInsert/Update/Delete (constraints, indexes, row
 * triggers, generated columns -- what logical replication's apply uses)
 * instead of planned statements, about twice as fast.  Only for a plain
 * table without what that path leaves out: row-level security, rules,
 * statement-level or transition-table triggers of the commands it runs
 * ('changes': also UPDATE, DELETE and TRUNCATE; the statement trigger of
 * expectations does not count, see contracts.c), identity columns (the
 * executor fills those), partitions (routing).
 */
bool
KappaTargetIsSimple(Relation rel, bool changes)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *trig = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relrowsecurity || rel->rd_rel->relhasrules)
		return false;
	for (int i = 0; trig != NULL && i < trig->numtriggers; i++)
	{
		Trigger    *t = &trig->triggers[i];
		bool		insert = TRIGGER_FOR_INSERT(t->tgtype);
		bool		other;

		other = TRIGGER_FOR_UPDATE(t->tgtype) || TRIGGER_FOR_DELETE(t->tgtype) ||
			TRIGGER_FOR_TRUNCATE(t->tgtype);
		if (!insert && !(changes && other))
			continue;
		/* the summary of skipped rows: a source never skips (contracts.c) */
		if (KappaIsExpectationTrigger(t))
			continue;
		if (!TRIGGER_FOR_ROW(t->tgtype) || TRIGGER_FOR_INSTEAD(t->tgtype) ||
			t->tgnewtable != NULL || t->tgoldtable != NULL)
			return false;
	}
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped && TupleDescAttr(desc, i)->attidentity)
			return false;
	return true;
}

/*
 * KappaSimpleTargetOpen gets 'rel' ready for ExecSimpleRelation* writes in
 * the current command: an executor state with the table as its result
 * relation, its indexes open, a slot of its row type, and an after-trigger
 * query level (KappaSimpleTargetClose fires the queued AFTER triggers).
 */
void
KappaSimpleTargetOpen(KappaSimpleTarget *target, Relation rel)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	EState	   *estate = CreateExecutorState();

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	target->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(target->rri, rel, 1, NULL, 0);
	estate->es_opened_result_relations =
		lappend(estate->es_opened_result_relations, target->rri);
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(target->rri, false);
	target->slot = table_slot_create(rel, &estate->es_tupleTable);
	target->found = table_slot_create(rel, &estate->es_tupleTable);
	target->estate = estate;
	EvalPlanQualInit(&target->epq, estate, NULL, NIL, -1);
	AfterTriggerBeginQuery();
}

/*
 * KappaSimpleTargetClose fires the immediate AFTER triggers of the writes
 * (deferred constraints are made immediate by the caller) and frees the
 * executor state.
 */
void
KappaSimpleTargetClose(KappaSimpleTarget *target)
{
	AfterTriggerEndQuery(target->estate);
	EvalPlanQualEnd(&target->epq);
	ExecCloseIndices(target->rri);
	ExecResetTupleTable(target->estate->es_tupleTable, false);
	FreeExecutorState(target->estate);
	target->estate = NULL;
}

/*
 * KappaTargetPlan plans a statement on the target with parameters of
 * 'argtypes', in the current memory context: the privileges and row-level
 * security policies that apply to its result relation are those of
 * 'checkAsUser' (the source's owner: checked as that role, as a view checks
 * as its owner), while the statement runs as the current user, the
 * target's owner.  Plan per batch, so that policies, rules and triggers
 * added meanwhile apply.
 */
List *
KappaTargetPlan(const char *sql, Oid *argtypes, int nargs, Oid checkAsUser)
{
	RawStmt    *raw = linitial_node(RawStmt, raw_parser(sql, RAW_PARSE_DEFAULT));
	Query	   *query;
	List	   *rewritten;

	query = parse_analyze_fixedparams(raw, sql, argtypes, nargs, NULL);
	rt_fetch(query->resultRelation, query->rtable)->checkAsUser = checkAsUser;
	rewritten = QueryRewrite(query);
	return pg_plan_queries(rewritten, sql, 0, NULL);
}

/*
 * KappaTargetExec runs plans made by KappaTargetPlan with 'params', as SPI
 * would: each a new command, with a snapshot that sees what was written
 * before.
 */
void
KappaTargetExec(List *plans, const char *sql, ParamListInfo params)
{
	ListCell   *lc;

	foreach(lc, plans)
	{
		PlannedStmt *pstmt = lfirst_node(PlannedStmt, lc);
		QueryDesc  *qd;

		CommandCounterIncrement();
		if (pstmt->commandType == CMD_UTILITY)
		{
			/* a rule's NOTIFY, say */
			ProcessUtility(pstmt, sql, false, PROCESS_UTILITY_QUERY,
						   params, NULL, None_Receiver, NULL);
			continue;
		}
		PushCopiedSnapshot(GetActiveSnapshot());
		UpdateActiveSnapshotCommandId();
		qd = CreateQueryDesc(pstmt, sql, GetActiveSnapshot(),
							 InvalidSnapshot, None_Receiver, params, NULL, 0);
		ExecutorStart(qd, 0);
		ExecutorRun(qd, ForwardScanDirection, 0, true);
		ExecutorFinish(qd);
		ExecutorEnd(qd);
		FreeQueryDesc(qd);
		PopActiveSnapshot();
	}
	CommandCounterIncrement();
}

/* ---------------------------------------------------------------- changes */

/* One change of a KappaChangeSet. */
typedef struct KtChange
{
	int			msg;			/* the message it came from */
	int			seq;			/* order of arrival */
	KappaChangeKind kind;		/* UPSERT or DELETE */
	HeapTuple	row;			/* the new row, or the key (DELETE) */
	bool	   *unavailable;	/* columns to keep as they are, or NULL */
	Datum	   *key;			/* the key columns' values, in row */
	bool		has_position;	/* ordering guard: the change's position */
	Datum		position;		/* (numeric) */
	char	   *keytext;		/* the key as kappa.source_key_positions has
								 * it */
	bool		chained;		/* an earlier change of the key is kept too */
} KtChange;

/*
 * The latest change of each key gathered so far (an index into the set's
 * changes), so that a change that decides its row alone replaces the one
 * before it as it arrives (see kt_add).
 */
typedef struct KtKeyEntry
{
	uint32		index;
	uint32		hash;
	char		status;
} KtKeyEntry;

struct KappaChangeSet
{
	Relation	rel;
	TupleDesc	desc;
	Oid			checkAsUser;
	int32		ordered_source; /* the source, if it has an ordering guard */
	MemoryContext cxt;
	bool		simple_path;	/* ExecSimpleRelation*, else statements */
	FmgrInfo	keyout[INDEX_MAX_KEYS]; /* output functions (ordering guard) */

	/* the primary key */
	Oid			pkoid;
	int			nkeys;
	AttrNumber	keyattnos[INDEX_MAX_KEYS];
	SortSupportData keysort[INDEX_MAX_KEYS];	/* the index's order */
	Oid			keyeqop[INDEX_MAX_KEYS];	/* equality, for statements */

	/* checking new rows against NOT NULL and CHECK constraints, if any */
	EState	   *check_estate;
	ResultRelInfo *check_rri;
	TupleTableSlot *check_slot;

	FmgrInfo	keyhash[INDEX_MAX_KEYS];	/* hash functions of the key */
	struct kt_keys_hash *keys;	/* latest change per key, or NULL */

	bool		truncate;		/* delete every row first */
	KtChange   *changes;
	int			nchanges;
	int			maxchanges;
	int			seq;
};

static uint32 kt_hash_change(KappaChangeSet *set, uint32 index);
static bool kt_same_key_index(KappaChangeSet *set, uint32 a, uint32 b);
static bool kt_same_key(KappaChangeSet *set, const KtChange *a, const KtChange *b);

#define SH_PREFIX kt_keys
#define SH_ELEMENT_TYPE KtKeyEntry
#define SH_KEY_TYPE uint32
#define SH_KEY index
#define SH_HASH_KEY(tb, key) kt_hash_change((KappaChangeSet *) (tb)->private_data, key)
#define SH_EQUAL(tb, a, b) kt_same_key_index((KappaChangeSet *) (tb)->private_data, a, b)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) a->hash
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/*
 * kt_needs_row_check tells whether new rows must be checked when they
 * arrive (kt_check_row): the table has a CHECK constraint, or a NOT NULL
 * column outside the primary key (whose columns kt_add checks itself).
 */
static bool
kt_needs_row_check(KappaChangeSet *set)
{
	TupleConstr *constr = set->desc->constr;

	if (constr == NULL)
		return false;
	if (constr->num_check > 0)
		return true;
	for (int a = 0; a < set->desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(set->desc, a);
		bool		iskey = false;

		if (!att->attnotnull || att->attisdropped)
			continue;
		for (int i = 0; i < set->nkeys; i++)
			iskey |= (set->keyattnos[i] == a + 1);
		if (!iskey)
			return true;
	}
	return false;
}

/*
 * KappaChangeSetCreate starts gathering keyed changes for 'rel' (a table
 * with a primary key, open), to be applied as the current user with
 * statements checked as 'checkAsUser'.  'ordered_source' is the id of the
 * source if it has an ordering guard (order_by), else 0: then a change
 * older than the one applied last for its key is dropped.  Everything
 * lives in a memory context under 'parent' that KappaChangeSetApply
 * deletes.
 */
KappaChangeSet *
KappaChangeSetCreate(Relation rel, Oid checkAsUser, int32 ordered_source,
					 MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "pg_kappa changes",
											  ALLOCSET_DEFAULT_SIZES);
	KappaChangeSet *set = MemoryContextAllocZero(cxt, sizeof(KappaChangeSet));
	Relation	pkrel;

	set->rel = rel;
	set->desc = RelationGetDescr(rel);
	set->checkAsUser = checkAsUser;
	set->ordered_source = ordered_source;
	set->cxt = cxt;
	set->simple_path = KappaTargetIsSimple(rel, true);
	set->nkeys = KappaTablePrimaryKey(rel, set->keyattnos);
	set->pkoid = RelationGetPrimaryKeyIndex(rel);
	pkrel = index_open(set->pkoid, AccessShareLock);
	for (int i = 0; i < set->nkeys; i++)
	{
		Oid			opfamily = pkrel->rd_opfamily[i];
		Oid			opcintype = pkrel->rd_opcintype[i];
		SortSupport ssup = &set->keysort[i];

		if (ordered_source)
		{
			Oid			outfunc;
			bool		isvarlena;

			getTypeOutputInfo(TupleDescAttr(set->desc, set->keyattnos[i] - 1)->atttypid,
							  &outfunc, &isvarlena);
			fmgr_info_cxt(outfunc, &set->keyout[i], cxt);
		}
		/* sort support: int4's comparator is inlined, not called by fmgr */
		ssup->ssup_cxt = cxt;
		ssup->ssup_collation = pkrel->rd_indcollation[i];
		ssup->ssup_nulls_first = false;
		ssup->ssup_attno = i + 1;
		PrepareSortSupportFromIndexRel(pkrel, BTLessStrategyNumber, ssup);
		set->keyeqop[i] = get_opfamily_member(opfamily, opcintype, opcintype,
											  BTEqualStrategyNumber);
		if (!OidIsValid(set->keyeqop[i]))
			elog(ERROR, "no equality operator for key column %d of \"%s\"",
				 set->keyattnos[i], RelationGetRelationName(rel));
	}
	index_close(pkrel, AccessShareLock);

	/*
	 * Changes are folded as they arrive when every key column's type can be
	 * hashed (and no ordering guard needs every change's position).
	 */
	if (!ordered_source)
	{
		bool		hashable = true;

		for (int i = 0; i < set->nkeys; i++)
		{
			TypeCacheEntry *tce =
			lookup_type_cache(TupleDescAttr(set->desc, set->keyattnos[i] - 1)->atttypid,
							  TYPECACHE_HASH_PROC_FINFO);

			if (!OidIsValid(tce->hash_proc_finfo.fn_oid))
				hashable = false;
			else
				fmgr_info_copy(&set->keyhash[i], &tce->hash_proc_finfo, cxt);
		}
		if (hashable)
			set->keys = kt_keys_create(cxt, 1024, set);
	}

	if (kt_needs_row_check(set))
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		set->check_estate = CreateExecutorState();
		set->check_rri = makeNode(ResultRelInfo);
		InitResultRelInfo(set->check_rri, rel, 0, NULL, 0);
		set->check_slot = MakeSingleTupleTableSlot(set->desc, &TTSOpsVirtual);
		MemoryContextSwitchTo(old);
	}
	return set;
}

/*
 * kt_check_row raises the executor's error if the new row of an upsert
 * violates a NOT NULL or CHECK constraint -- when the message arrives, so
 * that such a message is a dead letter even if a later change of its key
 * in the same batch replaces it.  A row with unavailable columns is
 * checked when it is written.
 */
static void
kt_check_row(KappaChangeSet *set, Datum *values, bool *nulls)
{
	TupleTableSlot *slot = set->check_slot;

	ExecClearTuple(slot);
	memcpy(slot->tts_values, values, sizeof(Datum) * set->desc->natts);
	memcpy(slot->tts_isnull, nulls, sizeof(bool) * set->desc->natts);
	ExecStoreVirtualTuple(slot);
	ExecConstraints(set->check_rri, slot, set->check_estate);
	ResetPerTupleExprContext(set->check_estate);
	ExecClearTuple(slot);
}

/*
 * kt_add stores one UPSERT or DELETE of 'values'/'nulls' (in the target's
 * row type) coming from message 'msg'.
 */
static void
kt_add(KappaChangeSet *set, KappaChangeKind kind, Datum *values, bool *nulls,
	   const bool *unavailable, const KappaChange *change, int msg)
{
	MemoryContext old = MemoryContextSwitchTo(set->cxt);
	KtChange   *c;
	bool		isnull;

	for (int i = 0; i < set->nkeys; i++)
		if (nulls[set->keyattnos[i] - 1])
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("the message has no value for key column \"%s\"",
							NameStr(TupleDescAttr(set->desc, set->keyattnos[i] - 1)->attname)),
					 errdetail("A change is applied to the row with the message's primary key.")));
	if (set->nchanges == set->maxchanges)
	{
		set->maxchanges = Max(64, set->maxchanges * 2);
		set->changes = set->changes ?
			repalloc(set->changes, sizeof(KtChange) * set->maxchanges) :
			palloc(sizeof(KtChange) * set->maxchanges);
	}
	c = &set->changes[set->nchanges++];
	c->msg = msg;
	c->seq = set->seq++;
	c->kind = kind;
	c->row = heap_form_tuple(set->desc, values, nulls);
	c->unavailable = NULL;
	if (unavailable)
	{
		c->unavailable = palloc(sizeof(bool) * set->desc->natts);
		memcpy(c->unavailable, unavailable, sizeof(bool) * set->desc->natts);
	}
	c->key = palloc(sizeof(Datum) * set->nkeys);
	for (int i = 0; i < set->nkeys; i++)
		c->key[i] = heap_getattr(c->row, set->keyattnos[i], set->desc, &isnull);
	c->has_position = set->ordered_source != 0 && change->has_position;
	c->position = c->has_position ? datumCopy(change->position, false, -1) : (Datum) 0;
	c->keytext = NULL;
	c->chained = false;

	/*
	 * A change that decides its row alone (a delete, or an upsert without
	 * unavailable columns) replaces the key's change before it, if that one
	 * is the key's only one: the batch keeps one change per key, as kt_fold
	 * would make of them.  Otherwise the key's changes are kept in a chain
	 * for kt_fold.
	 */
	if (set->keys != NULL)
	{
		bool		found;
		uint32		n = set->nchanges - 1;
		KtKeyEntry *e = kt_keys_insert(set->keys, n, &found);

		if (found)
		{
			KtChange   *prev = &set->changes[e->index];

			if (c->unavailable == NULL && !prev->chained)
			{
				heap_freetuple(prev->row);
				pfree(prev->key);
				if (prev->unavailable)
					pfree(prev->unavailable);
				*prev = *c;
				set->nchanges--;
			}
			else
			{
				c->chained = true;
				e->index = n;
			}
		}
	}
	MemoryContextSwitchTo(old);
}

/* kt_hash_change hashes the key of change 'index' (kt_keys). */
static uint32
kt_hash_change(KappaChangeSet *set, uint32 index)
{
	KtChange   *c = &set->changes[index];
	uint32		h = 0;

	for (int i = 0; i < set->nkeys; i++)
		h = hash_combine(h, DatumGetUInt32(FunctionCall1Coll(&set->keyhash[i],
															 set->keysort[i].ssup_collation,
															 c->key[i])));
	return h;
}

/* kt_same_key_index: the changes 'a' and 'b' have the same key (kt_keys). */
static bool
kt_same_key_index(KappaChangeSet *set, uint32 a, uint32 b)
{
	return kt_same_key(set, &set->changes[a], &set->changes[b]);
}

/*
 * KappaChangeSetAdd adds the decoded change of message 'msg' (see
 * KappaChange in kafka.h).  Raises an error, which is the message's, if a
 * key column is null.
 */
void
KappaChangeSetAdd(KappaChangeSet *set, const KappaChange *change, int msg)
{
	switch (change->kind)
	{
		case KAPPA_CHANGE_NONE:
			break;
		case KAPPA_CHANGE_TRUNCATE:
			/* what came before is deleted anyway */
			set->truncate = true;
			set->nchanges = 0;
			if (set->keys != NULL)
				kt_keys_reset(set->keys);
			break;
		case KAPPA_CHANGE_DELETE:
			kt_add(set, KAPPA_CHANGE_DELETE, change->values, change->nulls, NULL, change, msg);
			break;
		case KAPPA_CHANGE_UPSERT:
			if (change->moved)
			{
				Datum	   *values = palloc0(sizeof(Datum) * set->desc->natts);
				bool	   *nulls = palloc(sizeof(bool) * set->desc->natts);

				memset(nulls, true, sizeof(bool) * set->desc->natts);
				for (int i = 0; i < set->nkeys; i++)
				{
					int			a = set->keyattnos[i] - 1;

					values[a] = change->old_values[a];
					nulls[a] = change->old_nulls[a];
				}
				kt_add(set, KAPPA_CHANGE_DELETE, values, nulls, NULL, change, msg);
			}
			if (set->check_rri && change->unavailable == NULL)
				kt_check_row(set, change->values, change->nulls);
			kt_add(set, KAPPA_CHANGE_UPSERT, change->values, change->nulls,
				   change->unavailable, change, msg);
			break;
	}
}

/* kt_compare_keys orders changes by key, then by arrival. */
static int
kt_compare_keys(const void *a, const void *b, void *arg)
{
	const KtChange *ca = a;
	const KtChange *cb = b;
	KappaChangeSet *set = arg;

	for (int i = 0; i < set->nkeys; i++)
	{
		int			r = ApplySortComparator(ca->key[i], false, cb->key[i], false,
											&set->keysort[i]);

		if (r != 0)
			return r;
	}
	return ca->seq < cb->seq ? -1 : ca->seq > cb->seq ? 1 : 0;
}

/* kt_same_key tells whether two changes have the same key. */
static bool
kt_same_key(KappaChangeSet *set, const KtChange *a, const KtChange *b)
{
	for (int i = 0; i < set->nkeys; i++)
		if (ApplySortComparator(a->key[i], false, b->key[i], false,
								&set->keysort[i]) != 0)
			return false;
	return true;
}

/*
 * kt_fold folds changes [lo, hi) of one key, in arrival order, into the
 * last one (returned): an UPSERT with unavailable columns takes their
 * values from the UPSERT before it, or NULL after a DELETE; only what no
 * earlier change of the batch decides stays unavailable.  Changes the
 * ordering guard dropped (kind NONE) do not count; NULL if all were.
 */
static KtChange *
kt_fold(KappaChangeSet *set, int lo, int hi)
{
	KtChange   *prev = NULL;
	int			natts = set->desc->natts;

	for (int i = lo; i < hi; i++)
	{
		KtChange   *c = &set->changes[i];

		if (c->kind == KAPPA_CHANGE_NONE)
			continue;

		if (c->kind == KAPPA_CHANGE_UPSERT && c->unavailable && prev)
		{
			Datum	   *values = palloc(sizeof(Datum) * natts);
			bool	   *nulls = palloc(sizeof(bool) * natts);
			Datum	   *pvalues = palloc(sizeof(Datum) * natts);
			bool	   *pnulls = palloc(sizeof(bool) * natts);

			heap_deform_tuple(c->row, set->desc, values, nulls);
			heap_deform_tuple(prev->row, set->desc, pvalues, pnulls);
			for (int a = 0; a < natts; a++)
			{
				if (!c->unavailable[a])
					continue;
				if (prev->kind == KAPPA_CHANGE_UPSERT &&
					!(prev->unavailable && prev->unavailable[a]))
				{
					values[a] = pvalues[a];
					nulls[a] = pnulls[a];
					c->unavailable[a] = false;
				}
				else if (prev->kind == KAPPA_CHANGE_DELETE)
				{
					nulls[a] = true;
					c->unavailable[a] = false;
				}
				/* else still unknown: the row's value decides */
			}
			c->row = heap_form_tuple(set->desc, values, nulls);
		}
		prev = c;
	}
	return prev;
}

/*
 * Finding the rows of the keys a batch changes: one index scan of the
 * primary key for the whole batch, rescanned per key (what
 * RelationFindReplTupleByIndex does per call, without opening and
 * closing the index and the scan every time).
 */
typedef struct KtLookup
{
	Relation	idxrel;
	IndexScanDesc scan;
	SnapshotData dirty;			/* sees uncommitted rows, to wait for them */
	ScanKeyData skey[INDEX_MAX_KEYS];
} KtLookup;

static void
kt_lookup_begin(KappaChangeSet *set, KtLookup *lk)
{
	lk->idxrel = index_open(set->pkoid, RowExclusiveLock);
	InitDirtySnapshot(lk->dirty);
	lk->scan = index_beginscan(set->rel, lk->idxrel, &lk->dirty, set->nkeys, 0);
	for (int i = 0; i < set->nkeys; i++)
	{
		ScanKeyInit(&lk->skey[i], i + 1, BTEqualStrategyNumber,
					get_opcode(set->keyeqop[i]), (Datum) 0);
		lk->skey[i].sk_collation = lk->idxrel->rd_indcollation[i];
	}
}

static void
kt_lookup_end(KtLookup *lk)
{
	index_endscan(lk->scan);
	index_close(lk->idxrel, NoLock);
}

/*
 * kt_lookup finds the row with the key of 'slot' (a row of the table) and
 * locks it, into 'found'.  As logical replication's apply does: a row
 * another transaction is writing is waited for, and one updated or deleted
 * concurrently is looked up again.
 */
static bool
kt_lookup(KappaChangeSet *set, KtLookup *lk, TupleTableSlot *slot, TupleTableSlot *found)
{
	for (int i = 0; i < set->nkeys; i++)
		lk->skey[i].sk_argument = slot->tts_values[set->keyattnos[i] - 1];
	for (;;)
	{
		TransactionId xwait;
		TM_FailureData tmfd;
		TM_Result	res;

		index_rescan(lk->scan, lk->skey, set->nkeys, NULL, 0);
		if (!index_getnext_slot(lk->scan, ForwardScanDirection, found))
			return false;
		ExecMaterializeSlot(found);
		xwait = TransactionIdIsValid(lk->dirty.xmin) ? lk->dirty.xmin : lk->dirty.xmax;
		if (TransactionIdIsValid(xwait))
		{
			XactLockTableWait(xwait, NULL, NULL, XLTW_None);
			continue;
		}
		PushActiveSnapshot(GetLatestSnapshot());
		res = table_tuple_lock(set->rel, &found->tts_tid, GetLatestSnapshot(), found,
							   GetCurrentCommandId(false), LockTupleExclusive,
							   LockWaitBlock, 0, &tmfd);
		PopActiveSnapshot();
		if (res == TM_Ok)
			return true;
		if (res != TM_Updated && res != TM_Deleted)
			elog(ERROR, "unexpected table_tuple_lock status: %u", res);
		/* changed since we looked: look again */
	}
}

/*
 * kt_apply_simple applies the final change of every key through
 * ExecSimpleRelation*.  Sets *failed to the message of a change that is
 * being applied, for the caller's error handling.
 */
static void
kt_apply_simple(KappaChangeSet *set, KtChange **finals, int nfinals, int *failed)
{
	KappaSimpleTarget target;
	int			natts = set->desc->natts;
	KtLookup	lookup;

	KappaSimpleTargetOpen(&target, set->rel);
	kt_lookup_begin(set, &lookup);
	for (int f = 0; f < nfinals; f++)
	{
		KtChange   *c = finals[f];
		TupleTableSlot *slot = target.slot;
		bool		found;

		*failed = c->msg;
		ExecClearTuple(slot);
		heap_deform_tuple(c->row, set->desc, slot->tts_values, slot->tts_isnull);
		ExecStoreVirtualTuple(slot);
		found = kt_lookup(set, &lookup, slot, target.found);
		if (c->kind == KAPPA_CHANGE_DELETE)
		{
			if (found)
				ExecSimpleRelationDelete(target.rri, target.estate, &target.epq,
										 target.found);
		}
		else
		{
			if (c->unavailable)
			{
				if (found)
					slot_getallattrs(target.found);
				for (int a = 0; a < natts; a++)
				{
					if (!c->unavailable[a])
						continue;
					slot->tts_values[a] = found ? target.found->tts_values[a] : (Datum) 0;
					slot->tts_isnull[a] = found ? target.found->tts_isnull[a] : true;
				}
			}
			if (found)
				ExecSimpleRelationUpdate(target.rri, target.estate, &target.epq,
										 target.found, slot);
			else
				ExecSimpleRelationInsert(target.rri, target.estate, slot);
		}
		ResetPerTupleExprContext(target.estate);
	}
	*failed = -1;
	kt_lookup_end(&lookup);
	KappaSimpleTargetClose(&target);
}

/*
 * kt_key_condition appends "l.k1 OPERATOR(s.=) r.k1 AND ..." for the
 * primary key, with every operator schema-qualified (as the foreign-key
 * triggers write theirs).
 */
static void
kt_key_condition(KappaChangeSet *set, StringInfo sql, const char *left,
				 const char *right)
{
	for (int i = 0; i < set->nkeys; i++)
	{
		Form_pg_attribute att = TupleDescAttr(set->desc, set->keyattnos[i] - 1);
		const char *col = quote_identifier(NameStr(att->attname));
		char	   *l = psprintf("%s.%s", left, col);
		char	   *r = psprintf("%s.%s", right, col);

		if (i > 0)
			appendStringInfoString(sql, " AND ");
		generate_operator_clause(sql, l, att->atttypid, set->keyeqop[i],
								 r, att->atttypid);
	}
}

/*
 * kt_rows_param makes a parameter of the rows of 'changes' as an array of
 * the table's row type.
 */
static void
kt_rows_param(KappaChangeSet *set, KtChange **changes, int n, ParamExternData *param)
{
	Oid			rowtype = RelationGetForm(set->rel)->reltype;
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int16		typlen;
	bool		typbyval;
	char		typalign;

	for (int i = 0; i < n; i++)
		elems[i] = heap_copy_tuple_as_datum(changes[i]->row, set->desc);
	get_typlenbyvalalign(rowtype, &typlen, &typbyval, &typalign);
	param->value = PointerGetDatum(construct_array(elems, n, rowtype, typlen,
												   typbyval, typalign));
	param->isnull = false;
	param->pflags = PARAM_FLAG_CONST;
	param->ptype = get_array_type(rowtype);
}

/* kt_table_name is the table's schema-qualified, quoted name. */
static char *
kt_table_name(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

/*
 * kt_exec_rows plans 'sql' (whose $1 is an array of the table's row type)
 * as the source's owner and runs it for 'changes'.
 */
static void
kt_exec_rows(KappaChangeSet *set, const char *sql, KtChange **changes, int n)
{
	ParamListInfo params = makeParamList(1);
	Oid			argtype = get_array_type(RelationGetForm(set->rel)->reltype);

	kt_rows_param(set, changes, n, &params->params[0]);
	KappaTargetExec(KappaTargetPlan(sql, &argtype, 1, set->checkAsUser), sql, params);
}

/*
 * kt_resolve_unavailable fills the columns of upserts that are still
 * unavailable (TOAST placeholders no earlier change of the batch decides)
 * from the rows the table has, or NULL where it has none.  Reads as the
 * current user, the target's owner.
 */
static void
kt_resolve_unavailable(KappaChangeSet *set, KtChange **finals, int nfinals)
{
	KtChange  **pending = palloc(sizeof(KtChange *) * Max(nfinals, 1));
	int			npending = 0;
	int			natts = set->desc->natts;
	StringInfoData sql;
	ParamListInfo params;
	Oid			argtype = get_array_type(RelationGetForm(set->rel)->reltype);
	Portal		portal;
	SPIPlanPtr	plan;
	MemoryContext cxt = CurrentMemoryContext;

	for (int f = 0; f < nfinals; f++)
		if (finals[f]->kind == KAPPA_CHANGE_UPSERT && finals[f]->unavailable)
			pending[npending++] = finals[f];
	if (npending == 0)
		return;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT t.* FROM %s AS t, pg_catalog.unnest($1) AS d WHERE ",
					 kt_table_name(set->rel));
	kt_key_condition(set, &sql, "t", "d");
	params = makeParamList(1);
	kt_rows_param(set, pending, npending, &params->params[0]);

	plan = SPI_prepare(sql.data, 1, &argtype);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql.data,
			 SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open_with_paramlist(NULL, plan, params, true);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			HeapTuple	cur = SPI_tuptable->vals[r];
			Datum	   *cvalues = palloc(sizeof(Datum) * natts);
			bool	   *cnulls = palloc(sizeof(bool) * natts);
			KtChange	probe;
			bool		isnull;

			probe.key = palloc(sizeof(Datum) * set->nkeys);
			for (int i = 0; i < set->nkeys; i++)
				probe.key[i] = SPI_getbinval(cur, SPI_tuptable->tupdesc,
											 set->keyattnos[i], &isnull);
			heap_deform_tuple(cur, SPI_tuptable->tupdesc, cvalues, cnulls);
			for (int p = 0; p < npending; p++)
			{
				KtChange   *c = pending[p];
				Datum	   *values;
				bool	   *nulls;
				MemoryContext old;

				if (c->unavailable == NULL || !kt_same_key(set, c, &probe))
					continue;
				old = MemoryContextSwitchTo(cxt);
				values = palloc(sizeof(Datum) * natts);
				nulls = palloc(sizeof(bool) * natts);
				heap_deform_tuple(c->row, set->desc, values, nulls);
				for (int a = 0; a < natts; a++)
					if (c->unavailable[a])
					{
						values[a] = cvalues[a];
						nulls[a] = cnulls[a];
					}
				c->row = heap_form_tuple(set->desc, values, nulls);
				c->unavailable = NULL;
				MemoryContextSwitchTo(old);
				break;
			}
		}
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);

	/* no row: the columns are NULL (the row's form already says so) */
	for (int p = 0; p < npending; p++)
		pending[p]->unavailable = NULL;
}

/*
 * kt_apply_statements applies the final changes with two statements
 * planned as the source's owner: one DELETE of the deleted keys, one
 * INSERT ... ON CONFLICT DO UPDATE of the others.
 */
static void
kt_apply_statements(KappaChangeSet *set, KtChange **finals, int nfinals)
{
	KtChange  **deletes = palloc(sizeof(KtChange *) * Max(nfinals, 1));
	KtChange  **upserts = palloc(sizeof(KtChange *) * Max(nfinals, 1));
	int			ndeletes = 0;
	int			nupserts = 0;
	StringInfoData sql;
	TupleDesc	desc = set->desc;
	bool		first;

	kt_resolve_unavailable(set, finals, nfinals);
	for (int f = 0; f < nfinals; f++)
	{
		if (finals[f]->kind == KAPPA_CHANGE_DELETE)
			deletes[ndeletes++] = finals[f];
		else
			upserts[nupserts++] = finals[f];
	}

	initStringInfo(&sql);
	if (ndeletes > 0)
	{
		appendStringInfo(&sql, "DELETE FROM %s AS t USING pg_catalog.unnest($1) AS d WHERE ",
						 kt_table_name(set->rel));
		kt_key_condition(set, &sql, "t", "d");
		kt_exec_rows(set, sql.data, deletes, ndeletes);
	}
	if (nupserts > 0)
	{
		StringInfoData cols;
		StringInfoData sets;

		initStringInfo(&cols);
		initStringInfo(&sets);
		first = true;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);
			const char *name = quote_identifier(NameStr(att->attname));
			bool		iskey = false;

			if (att->attisdropped || att->attgenerated)
				continue;
			appendStringInfo(&cols, "%s%s", first ? "" : ", ", name);
			for (int i = 0; i < set->nkeys; i++)
				iskey |= (set->keyattnos[i] == a + 1);
			/* (an identity column GENERATED ALWAYS cannot be updated) */
			if (!iskey && att->attidentity != ATTRIBUTE_IDENTITY_ALWAYS)
				appendStringInfo(&sets, "%s%s = EXCLUDED.%s", sets.len ? ", " : "",
								 name, name);
			first = false;
		}
		resetStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s AS t (%s) OVERRIDING SYSTEM VALUE SELECT ",
						 kt_table_name(set->rel), cols.data);
		first = true;
		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (att->attisdropped || att->attgenerated)
				continue;
			appendStringInfo(&sql, "%sd.%s", first ? "" : ", ",
							 quote_identifier(NameStr(att->attname)));
			first = false;
		}
		appendStringInfoString(&sql, " FROM pg_catalog.unnest($1) AS d ON CONFLICT (");
		for (int i = 0; i < set->nkeys; i++)
			appendStringInfo(&sql, "%s%s", i ? ", " : "",
							 quote_identifier(NameStr(TupleDescAttr(desc, set->keyattnos[i] - 1)->attname)));
		if (sets.len > 0)
			appendStringInfo(&sql, ") DO UPDATE SET %s", sets.data);
		else
			appendStringInfoString(&sql, ") DO NOTHING");
		kt_exec_rows(set, sql.data, upserts, nupserts);
	}
}

/*
 * kt_truncate deletes every row of the target (a Debezium 't'), as a
 * DELETE checked as the source's owner: readers are not blocked, and the
 * target's delete triggers (and the views over it) see the rows go.
 */
static void
kt_truncate(KappaChangeSet *set)
{
	char	   *sql = psprintf("DELETE FROM %s", kt_table_name(set->rel));

	KappaTargetExec(KappaTargetPlan(sql, NULL, 0, set->checkAsUser), sql, NULL);
}

/*
 * kt_key_text renders a change's key as kappa.source_key_positions keeps
 * it: a JSON array of its columns' text.
 */
static char *
kt_key_text(KappaChangeSet *set, KtChange *c)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (int i = 0; i < set->nkeys; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, OutputFunctionCall(&set->keyout[i], c->key[i]));
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

/* kt_guard's statements on kappa.source_key_positions, prepared once */
static SPIPlanPtr kt_positions_read = NULL;
static SPIPlanPtr kt_positions_write = NULL;

/* A key's stored position, for kt_guard's binary search. */
typedef struct KtStoredPosition
{
	char	   *key;
	Datum		position;
} KtStoredPosition;

static int
kt_compare_stored(const void *a, const void *b)
{
	return strcmp(((const KtStoredPosition *) a)->key,
				  ((const KtStoredPosition *) b)->key);
}

/*
 * kt_guard is the ordering guard, on changes sorted by key: each key's
 * changes with a position, in arrival order, are compared with the
 * position applied last for the key (stored, or earlier in the batch); one
 * older than that becomes kind NONE (dropped).  The keys' new positions
 * are stored.  Returns how many changes were dropped.  Reads and writes
 * kappa.source_key_positions as the extension's owner (SPI connected).
 */
static int64
kt_guard(KappaChangeSet *set)
{
	Datum	   *keys = palloc(sizeof(Datum) * Max(set->nchanges, 1));
	int			nkeys = 0;
	KtStoredPosition *stored;
	int			nstored;
	Datum	   *newkeys;
	Datum	   *newpositions;
	int			nnew = 0;
	int64		dropped = 0;
	Datum		args[3];
	Oid			argtypes[3] = {INT4OID, TEXTARRAYOID, NUMERICARRAYOID};
	uint64		nrows;

	/* the distinct keys, and their stored positions */
	for (int i = 0; i < set->nchanges; i++)
	{
		KtChange   *c = &set->changes[i];

		if (i > 0 && kt_same_key(set, c, &set->changes[i - 1]))
			c->keytext = set->changes[i - 1].keytext;
		else
		{
			c->keytext = kt_key_text(set, c);
			keys[nkeys++] = CStringGetTextDatum(c->keytext);
		}
	}
	args[0] = Int32GetDatum(set->ordered_source);
	args[1] = PointerGetDatum(construct_array(keys, nkeys, TEXTOID, -1, false, TYPALIGN_INT));
	if (kt_positions_read == NULL)
		kt_positions_read =
			KappaPrepareCatalogSql("SELECT key, position FROM kappa.source_key_positions "
								   "WHERE source_id OPERATOR(pg_catalog.=) $1 "
								   "AND key OPERATOR(pg_catalog.=) ANY ($2)",
								   2, argtypes);
	nrows = KappaExecCatalogPlan(kt_positions_read, args, NULL, SPI_OK_SELECT);
	stored = palloc(sizeof(KtStoredPosition) * Max(nrows, 1));
	nstored = (int) nrows;
	for (uint64 r = 0; r < nrows; r++)
	{
		bool		isnull;

		stored[r].key = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[r],
														  SPI_tuptable->tupdesc, 1, &isnull));
		stored[r].position = datumCopy(SPI_getbinval(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 2, &isnull),
									   false, -1);
	}
	qsort(stored, nstored, sizeof(KtStoredPosition), kt_compare_stored);

	/* each key's changes in arrival order (the sort's second key) */
	newkeys = palloc(sizeof(Datum) * Max(nkeys, 1));
	newpositions = palloc(sizeof(Datum) * Max(nkeys, 1));
	for (int lo = 0; lo < set->nchanges;)
	{
		int			hi = lo + 1;
		KtStoredPosition probe = {.key = set->changes[lo].keytext};
		KtStoredPosition *found;
		bool		have = false;
		bool		moved = false;
		Datum		cur = (Datum) 0;

		while (hi < set->nchanges && set->changes[hi].keytext == set->changes[lo].keytext)
			hi++;
		found = bsearch(&probe, stored, nstored, sizeof(KtStoredPosition), kt_compare_stored);
		if (found)
		{
			have = true;
			cur = found->position;
		}
		for (int i = lo; i < hi; i++)
		{
			KtChange   *c = &set->changes[i];

			if (!c->has_position)
				continue;
			if (have && DatumGetInt32(DirectFunctionCall2(numeric_cmp, c->position, cur)) < 0)
			{
				c->kind = KAPPA_CHANGE_NONE;
				dropped++;
				continue;
			}
			have = moved = true;
			cur = c->position;
		}
		if (moved)
		{
			newkeys[nnew] = CStringGetTextDatum(set->changes[lo].keytext);
			newpositions[nnew++] = cur;
		}
		lo = hi;
	}
	if (nnew > 0)
	{
		args[1] = PointerGetDatum(construct_array(newkeys, nnew, TEXTOID, -1, false, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_array(newpositions, nnew, NUMERICOID, -1, false,
												  TYPALIGN_INT));
		if (kt_positions_write == NULL)
			kt_positions_write =
				KappaPrepareCatalogSql("INSERT INTO kappa.source_key_positions AS p "
									   "(source_id, key, position) "
									   "SELECT $1, u.k, u.p FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(k, p) "
									   "ON CONFLICT (source_id, key) DO UPDATE "
									   "SET position = EXCLUDED.position",
									   3, argtypes);
		(void) KappaExecCatalogPlan(kt_positions_write, args, NULL, SPI_OK_INSERT);
	}
	return dropped;
}

/*
 * KappaChangeSetApply applies the changes gathered (see the file header)
 * and frees the set.  While the simple path applies a key's change,
 * *failed is the message the change came from; otherwise -1.  Returns how
 * many changes the ordering guard dropped.
 */
int64
KappaChangeSetApply(KappaChangeSet *set, int *failed)
{
	MemoryContext old = MemoryContextSwitchTo(set->cxt);
	KtChange  **finals;
	int			nfinals = 0;
	int64		dropped = 0;

	*failed = -1;
	if (set->truncate)
		kt_truncate(set);

	qsort_arg(set->changes, set->nchanges, sizeof(KtChange), kt_compare_keys, set);
	if (set->ordered_source)
		dropped = kt_guard(set);
	finals = palloc(sizeof(KtChange *) * Max(set->nchanges, 1));
	for (int lo = 0; lo < set->nchanges;)
	{
		int			hi = lo + 1;

		while (hi < set->nchanges &&
			   kt_same_key(set, &set->changes[lo], &set->changes[hi]))
			hi++;
		if ((finals[nfinals] = kt_fold(set, lo, hi)) != NULL)
			nfinals++;
		lo = hi;
	}
	if (nfinals > 0 && set->simple_path)
		kt_apply_simple(set, finals, nfinals, failed);
	else if (nfinals > 0)
		kt_apply_statements(set, finals, nfinals);
	MemoryContextSwitchTo(old);
	if (set->check_estate)
	{
		ExecDropSingleTupleTableSlot(set->check_slot);
		FreeExecutorState(set->check_estate);
	}
	MemoryContextDelete(set->cxt);
	return dropped;
}
