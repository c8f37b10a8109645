/*-------------------------------------------------------------------------
 *
 * view_accum.c
 *	  A view's groups combined in memory (an accumulator), so that each group
 *	  is written once per statement or Kafka batch.
 *
 * Rows reach an accumulator in one of two ways (view_apply.c decides):
 *
 *	 - pushed: a view over the stream alone takes each stream row as it
 *	   arrives (KappaAccumPushRow): its WHERE, keys and aggregate inputs,
 *	   compiled by view_plan.c, are evaluated and each aggregate's
 *	   transition function advances the group's state in memory; no delta
 *	   query runs; with grouping sets, the row goes into its group of each
 *	   set (key 0 the set's id, the keys it rolls up NULL).  Groups whose
 *	   keys all compare by their bytes are found by hashing those bytes
 *	   (accum_image_hash), skipping function calls.
 *	 - combined: a statement that streams more rows than
 *	   kappa.stream_batch_memory holds is applied in chunks.  Each chunk's
 *	   delta rows (group keys and partial states, as the delta plan produces
 *	   them) are sent to KappaAccumReceiver and combined, in a hash table
 *	   keyed by the group keys, with the aggregates' combine functions.
 *
 * KappaAccumFlush sends the combined states, once per group and in key
 * order, to the receiver that merges a single delta (view_merge.c), and
 * empties the accumulator.  Views whose group keys cannot be hashed get no
 * accumulator: they are merged chunk by chunk.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/makefuncs.h"
#include "common/hashfn.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/sortsupport.h"

#include "pg_kappa.h"
#include "view.h"

struct KappaViewAccum
{
	KappaViewInfo *view;
	MemoryContext cxt;			/* the accumulator itself */
	MemoryContext tablecxt;		/* group keys in the hash table */
	MemoryContext statecxt;		/* entries and combined states */
	MemoryContext tempcxt;		/* hashing and comparing, per row */
	TupleHashTable table;
	TupleDesc	keyDesc;
	TupleDesc	deltaDesc;		/* keys, then stored-form states */
	TupleTableSlot *keySlot;	/* keys of an incoming delta row */
	TupleTableSlot *readSlot;	/* keys of an accumulated group */
	ExprContext *aggExprContext;	/* its per-tuple memory is statecxt */
	AggState   *aggContext;
	int64		ngroups;
	TupleHashEntry globalEntry; /* the one group of a view without GROUP BY */
	/* pushed rows with keys compared by their bytes (see accum_image_keys) */
	struct keygroups_hash *groups;	/* NULL: the TupleHashTable is used */
	struct AccumEntry *probe;	/* keys of the row being looked up */
	int16	   *keyLens;
	bool	   *keyByVals;
	/* the keys of a pushed row, and of its group in one grouping set */
	Datum	   *rowKeys;
	bool	   *rowNulls;
	Datum	   *setKeys;
	bool	   *setNulls;
	int			nsets;			/* groups a pushed row goes into: one per
								 * grouping set, or 1 */
	/* retracted rows (views over tables) */
	TupleTableSlot *retractSlot;	/* a retracted row being evaluated */
	struct AccumEntry *current; /* the group KappaAccumFlush is handing on */
};

/* Combined states of one group, in memory (deserialized) form. */
typedef struct AccumEntry
{
	Datum	   *states;
	bool	   *nulls;
	bool	   *noTrans;		/* pushed rows: no input yet for a strict
								 * transition function without initial value */
	Datum	   *keys;			/* filled when sorting for a flush */
	bool	   *keynulls;
	/* changes of a table (KappaAccumRetractRow) */
	bool		hasAdded;		/* some row was pushed into the states */
	bool		hasRetracted;	/* some row was retracted from the group */
	MinimalTuple *retracted;	/* those rows, kept for invertible views */
	int			nretracted;
	int			maxretracted;
} AccumEntry;

/*
 * Groups of pushed rows, when every key is of a type whose equality is
 * equality of bytes (integers, timestamps, text in a deterministic
 * collation...): hashed and compared by their images, which skips the
 * function calls of a TupleHashTable on every row.
 */
typedef struct KeyGroup
{
	AccumEntry *entry;			/* its keys and keynulls are the key */
	uint32		hash;
	char		status;
} KeyGroup;

static uint32 accum_image_hash(KappaViewAccum *acc, AccumEntry *key);
static void accum_retract_from(KappaViewAccum *acc, AccumEntry *ae,
							   TupleTableSlot *row);
static bool accum_image_equal(KappaViewAccum *acc, AccumEntry *a, AccumEntry *b);

#define SH_PREFIX keygroups
#define SH_ELEMENT_TYPE KeyGroup
#define SH_KEY_TYPE AccumEntry *
#define SH_KEY entry
#define SH_HASH_KEY(tb, key) accum_image_hash((KappaViewAccum *) (tb)->private_data, key)
#define SH_EQUAL(tb, a, b) accum_image_equal((KappaViewAccum *) (tb)->private_data, a, b)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) (a)->hash
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

typedef struct AccumReceiver
{
	DestReceiver pub;
	KappaViewAccum *acc;
} AccumReceiver;

/*
 * Can the view's group keys be compared by their bytes?  True for types
 * whose equality operator is equality of images: integers, dates and times
 * and text in a deterministic collation.  (Not numeric, float or bpchar,
 * where different images can be equal.)
 */
static bool
accum_image_keys(TupleDesc keyDesc, KappaViewInfo *view)
{
	int			i;

	if (view->nkeys == 0)
		return false;
	for (i = 0; i < view->nkeys; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(keyDesc, i);

		switch (attr->atttypid)
		{
			case INT2OID:
			case INT4OID:
			case INT8OID:
			case BOOLOID:
			case DATEOID:
			case TIMEOID:
			case TIMESTAMPOID:
			case TIMESTAMPTZOID:
			case OIDOID:
			case CHAROID:
				break;
			case TEXTOID:
			case VARCHAROID:
			case BYTEAOID:
				if (OidIsValid(view->keyCollations[i]) &&
					!get_collation_isdeterministic(view->keyCollations[i]))
					return false;
				break;
			default:
				return false;
		}
	}
	return true;
}

static uint32
accum_image_hash(KappaViewAccum *acc, AccumEntry *key)
{
	uint32		h = 0;
	int			i;

	for (i = 0; i < acc->view->nkeys; i++)
		h = hash_combine(h, key->keynulls[i] ? 0x9e3779b9 :
						 datum_image_hash(key->keys[i], acc->keyByVals[i],
										  acc->keyLens[i]));
	return h;
}

static bool
accum_image_equal(KappaViewAccum *acc, AccumEntry *a, AccumEntry *b)
{
	int			i;

	for (i = 0; i < acc->view->nkeys; i++)
	{
		if (a->keynulls[i] != b->keynulls[i])
			return false;
		if (!a->keynulls[i] &&
			!datum_image_eq(a->keys[i], b->keys[i], acc->keyByVals[i], acc->keyLens[i]))
			return false;
	}
	return true;
}

/*
 * KappaAccumCreate returns an empty accumulator for 'view' under 'parent',
 * or NULL if the view's group keys cannot be hashed.
 */
KappaViewAccum *
KappaAccumCreate(KappaViewInfo *view, MemoryContext parent)
{
	KappaViewAccum *acc;
	MemoryContext oldcxt;
	int			nkeys = view->nkeys;
	Oid		   *eqFuncOids;
	FmgrInfo   *hashFunctions;
	AttrNumber *keyColIdx;
	int			i;

	for (i = 0; i < nkeys; i++)
	{
		if (!view->keyHashable[i])
			return NULL;
	}

	acc = MemoryContextAllocZero(parent, sizeof(KappaViewAccum));
	acc->view = view;
	acc->cxt = AllocSetContextCreate(parent, "pg_kappa view accumulator",
									 ALLOCSET_SMALL_SIZES);
	acc->tablecxt = AllocSetContextCreate(acc->cxt, "pg_kappa accumulated keys",
										  ALLOCSET_DEFAULT_SIZES);
	acc->statecxt = AllocSetContextCreate(acc->cxt, "pg_kappa accumulated states",
										  ALLOCSET_DEFAULT_SIZES);
	acc->tempcxt = AllocSetContextCreate(acc->cxt, "pg_kappa accumulator temp",
										 ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(acc->cxt);

	acc->deltaDesc = ExecTypeFromTL(view->deltaPlan->planTree->targetlist);
	acc->keyDesc = CreateTemplateTupleDesc(Max(nkeys, 1));
	if (nkeys == 0)
		TupleDescInitEntry(acc->keyDesc, 1, NULL, INT4OID, -1, 0);
	for (i = 0; i < nkeys; i++)
		TupleDescCopyEntry(acc->keyDesc, i + 1, acc->deltaDesc, i + 1);
	acc->keySlot = MakeSingleTupleTableSlot(acc->keyDesc, &TTSOpsVirtual);
	acc->readSlot = MakeSingleTupleTableSlot(acc->keyDesc, &TTSOpsMinimalTuple);

	keyColIdx = palloc(sizeof(AttrNumber) * Max(nkeys, 1));
	for (i = 0; i < Max(nkeys, 1); i++)
		keyColIdx[i] = i + 1;
	if (nkeys == 0)
	{
		/* a global view has one group: hash a constant */
		Oid			eqop = Int4EqualOperator;
		Oid			collations[1] = {InvalidOid};

		execTuplesHashPrepare(1, &eqop, &eqFuncOids, &hashFunctions);
		acc->table = BuildTupleHashTableExt(NULL, acc->keyDesc, 1, keyColIdx,
											eqFuncOids, hashFunctions,
											collations, 16, 0, acc->cxt,
											acc->tablecxt, acc->tempcxt, false);
	}
	else
	{
		execTuplesHashPrepare(nkeys, view->keyEqOps, &eqFuncOids, &hashFunctions);
		acc->table = BuildTupleHashTableExt(NULL, acc->keyDesc, nkeys, keyColIdx,
											eqFuncOids, hashFunctions,
											view->keyCollations, 1024, 0,
											acc->cxt, acc->tablecxt,
											acc->tempcxt, false);
	}

	if (view->push != NULL && accum_image_keys(acc->keyDesc, view))
	{
		acc->keyLens = palloc(sizeof(int16) * nkeys);
		acc->keyByVals = palloc(sizeof(bool) * nkeys);
		for (i = 0; i < nkeys; i++)
		{
			acc->keyLens[i] = TupleDescAttr(acc->keyDesc, i)->attlen;
			acc->keyByVals[i] = TupleDescAttr(acc->keyDesc, i)->attbyval;
		}
		acc->groups = keygroups_create(acc->cxt, 1024, acc);
		acc->probe = palloc0(sizeof(AccumEntry));
		acc->probe->keys = palloc(sizeof(Datum) * nkeys);
		acc->probe->keynulls = palloc(sizeof(bool) * nkeys);
	}

	acc->nsets = view->groupingSets ? view->ngsets : 1;
	acc->rowKeys = palloc0(sizeof(Datum) * Max(nkeys, 1));
	acc->rowNulls = palloc0(sizeof(bool) * Max(nkeys, 1));
	acc->setKeys = palloc0(sizeof(Datum) * Max(nkeys, 1));
	acc->setNulls = palloc0(sizeof(bool) * Max(nkeys, 1));

	acc->aggExprContext = makeNode(ExprContext);
	acc->aggExprContext->ecxt_per_tuple_memory = acc->statecxt;
	acc->aggContext = KappaMakeAggContext(acc->aggExprContext);
	MemoryContextSwitchTo(oldcxt);
	return acc;
}

/* Copy a transition value of 'merge''s type into 'cxt'. */
static Datum
accum_datum_copy_into(Datum value, KappaAggMerge *merge, MemoryContext cxt)
{
	MemoryContext oldcxt;
	Datum		copy;

	if (merge->transtypByVal)
		return value;
	oldcxt = MemoryContextSwitchTo(cxt);
	copy = datumCopy(value, false, merge->transtypLen);
	MemoryContextSwitchTo(oldcxt);
	return copy;
}

/*
 * A new group's entry, with its state arrays in the same allocation so that
 * advancing a group touches as few cache lines as possible.
 */
static AccumEntry *
accum_new_entry(KappaViewAccum *acc, bool withNoTrans)
{
	int			naggs = acc->view->naggs;
	char	   *mem;
	AccumEntry *ae;

	mem = MemoryContextAllocZero(acc->statecxt,
								 MAXALIGN(sizeof(AccumEntry)) +
								 sizeof(Datum) * naggs + 2 * sizeof(bool) * naggs);
	ae = (AccumEntry *) mem;

	ae->states = (Datum *) (mem +MAXALIGN(sizeof(AccumEntry)));
	ae->nulls = (bool *) (ae->states + naggs);
	if (withNoTrans)
		ae->noTrans = ae->nulls + naggs;
	return ae;
}

/* KappaAccumMemory tells how much memory the accumulated groups take. */
Size
KappaAccumMemory(KappaViewAccum *acc)
{
	return MemoryContextMemAllocated(acc->cxt, true);
}

/* KappaAccumGroups tells how many groups are accumulated. */
int64
KappaAccumGroups(KappaViewAccum *acc)
{
	return acc->ngroups;
}

/*
 * The entry of the group of a delta row (keys, then states; its attributes
 * fetched), made if new: with no states yet (all NULL, hasAdded false).
 */
static AccumEntry *
accum_delta_group(KappaViewAccum *acc, TupleTableSlot *slot)
{
	KappaViewInfo *view = acc->view;
	TupleHashEntry entry;
	AccumEntry *ae;
	bool		isnew;
	int			i;

	ExecClearTuple(acc->keySlot);
	if (view->nkeys == 0)
	{
		acc->keySlot->tts_values[0] = Int32GetDatum(0);
		acc->keySlot->tts_isnull[0] = false;
	}
	for (i = 0; i < view->nkeys; i++)
	{
		acc->keySlot->tts_values[i] = slot->tts_values[i];
		acc->keySlot->tts_isnull[i] = slot->tts_isnull[i];
	}
	ExecStoreVirtualTuple(acc->keySlot);

	entry = LookupTupleHashEntry(acc->table, acc->keySlot, &isnew, NULL);
	if (isnew)
	{
		ae = accum_new_entry(acc, false);
		memset(ae->nulls, true, sizeof(bool) * view->naggs);
		entry->additional = ae;
		acc->ngroups++;
	}
	else
		ae = entry->additional;
	return ae;
}

/* Combine one delta row into its group's entry. */
static bool
accum_receive(TupleTableSlot *slot, DestReceiver *self)
{
	KappaViewAccum *acc = ((AccumReceiver *) self)->acc;
	KappaViewInfo *view = acc->view;
	AccumEntry *ae;
	MemoryContext oldcxt;
	int			i;

	slot_getallattrs(slot);
	ae = accum_delta_group(acc, slot);

	/* scratch memory of the combine step, reset per row */
	oldcxt = MemoryContextSwitchTo(acc->tempcxt);
	for (i = 0; i < view->naggs; i++)
		KappaAggCombineInMemory(&view->aggs[i], acc->aggContext, ae->hasAdded,
								&ae->states[i], &ae->nulls[i],
								slot->tts_values[view->nkeys + i],
								slot->tts_isnull[view->nkeys + i]);
	ae->hasAdded = true;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(acc->tempcxt);
	return true;
}

/*
 * Mark the group of one delta row as one rows left (a view over a table
 * without a push path: the delta query ran over the leaving rows).  Its
 * states are not touched: KappaAccumCurrentGroup tells the merge to
 * recompute the group.
 */
static bool
accum_retract_receive(TupleTableSlot *slot, DestReceiver *self)
{
	KappaViewAccum *acc = ((AccumReceiver *) self)->acc;

	slot_getallattrs(slot);
	accum_delta_group(acc, slot)->hasRetracted = true;
	return true;
}

static void
accum_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
accum_shutdown(DestReceiver *self)
{
}

static void
accum_destroy(DestReceiver *self)
{
	pfree(self);
}

/*
 * KappaAccumRetractReceiver returns a receiver that takes delta rows of rows
 * that left a view over a table (its delta query run over them) and marks
 * their groups in 'acc' as losing rows, for KappaAccumCurrentGroup.
 */
DestReceiver *
KappaAccumRetractReceiver(KappaViewAccum *acc)
{
	DestReceiver *r = KappaAccumReceiver(acc);

	r->receiveSlot = accum_retract_receive;
	return r;
}

/* KappaAccumReceiver returns a receiver that combines delta rows into 'acc'. */
DestReceiver *
KappaAccumReceiver(KappaViewAccum *acc)
{
	AccumReceiver *r = palloc0(sizeof(AccumReceiver));

	r->pub.receiveSlot = accum_receive;
	r->pub.rStartup = accum_startup;
	r->pub.rShutdown = accum_shutdown;
	r->pub.rDestroy = accum_destroy;
	r->pub.mydest = DestNone;
	r->acc = acc;
	return (DestReceiver *) r;
}

/* Comparators of the group keys, for sorting accumulated groups. */
typedef struct AccumSortKeys
{
	SortSupport keys;
	int			nkeys;
} AccumSortKeys;

/* qsort_arg comparator of two groups' keys; 'arg' is an AccumSortKeys. */
static int
accum_compare_entries(const void *a, const void *b, void *arg)
{
	AccumEntry *ea = *(AccumEntry *const *) a;
	AccumEntry *eb = *(AccumEntry *const *) b;
	AccumSortKeys *sort = arg;
	int			i;

	for (i = 0; i < sort->nkeys; i++)
	{
		int			cmp = ApplySortComparator(ea->keys[i], ea->keynulls[i],
											  eb->keys[i], eb->keynulls[i],
											  &sort->keys[i]);

		if (cmp != 0)
			return cmp;
	}
	return 0;
}

/*
 * KappaAccumFlush hands every accumulated group, in key order and in the
 * form of a delta row (keys, then stored-form states), to 'merge', and
 * empties the accumulator.  The caller has started 'merge' and shuts it down.
 */
void
KappaAccumFlush(KappaViewAccum *acc, DestReceiver *merge)
{
	KappaViewInfo *view = acc->view;
	TupleHashIterator iter;
	TupleHashEntry entry;
	AccumEntry **entries;
	int64		n = 0;
	int64		i;
	TupleTableSlot *slot;
	MemoryContext tmpcxt;
	MemoryContext oldcxt;

	if (acc->ngroups == 0)
		return;

	/* the groups, with their keys extracted */
	entries = MemoryContextAlloc(acc->statecxt, sizeof(AccumEntry *) * acc->ngroups);
	if (acc->groups != NULL)
	{
		keygroups_iterator it;
		KeyGroup   *group;

		keygroups_start_iterate(acc->groups, &it);
		while ((group = keygroups_iterate(acc->groups, &it)) != NULL)
			entries[n++] = group->entry;
	}
	else
	{
		InitTupleHashIterator(acc->table, &iter);
		while ((entry = ScanTupleHashTable(acc->table, &iter)) != NULL)
		{
			AccumEntry *ae = entry->additional;

			ExecStoreMinimalTuple(entry->firstTuple, acc->readSlot, false);
			slot_getallattrs(acc->readSlot);
			ae->keys = MemoryContextAlloc(acc->statecxt, sizeof(Datum) * acc->keyDesc->natts);
			ae->keynulls = MemoryContextAlloc(acc->statecxt, sizeof(bool) * acc->keyDesc->natts);
			memcpy(ae->keys, acc->readSlot->tts_values, sizeof(Datum) * acc->keyDesc->natts);
			memcpy(ae->keynulls, acc->readSlot->tts_isnull, sizeof(bool) * acc->keyDesc->natts);
			entries[n++] = ae;
		}
		TermTupleHashIterator(&iter);
	}

	/* in key order, like a delta, so that writers do not deadlock */
	if (view->nkeys > 0 && n > 1)
	{
		SortSupport sortKeys = MemoryContextAllocZero(acc->statecxt,
													  sizeof(SortSupportData) * view->nkeys);
		AccumSortKeys sort;

		for (i = 0; i < view->nkeys; i++)
		{
			sortKeys[i].ssup_cxt = acc->statecxt;
			sortKeys[i].ssup_collation = view->keyCollations[i];
			sortKeys[i].ssup_nulls_first = view->keyNullsFirst[i];
			sortKeys[i].ssup_attno = i + 1;
			PrepareSortSupportFromOrderingOp(view->keySortOps[i], &sortKeys[i]);
		}
		sort.keys = sortKeys;
		sort.nkeys = view->nkeys;
		qsort_arg(entries, n, sizeof(AccumEntry *), accum_compare_entries, &sort);
	}

	slot = MakeSingleTupleTableSlot(acc->deltaDesc, &TTSOpsVirtual);
	tmpcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_kappa accumulator flush",
								   ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < n; i++)
	{
		AccumEntry *ae = entries[i];
		int			k;

		oldcxt = MemoryContextSwitchTo(tmpcxt);
		ExecClearTuple(slot);
		for (k = 0; k < view->nkeys; k++)
		{
			slot->tts_values[k] = ae->keys[k];
			slot->tts_isnull[k] = ae->keynulls[k];
		}
		for (k = 0; k < view->naggs; k++)
			slot->tts_values[view->nkeys + k] =
				KappaAggStoredForm(&view->aggs[k], acc->aggContext,
								   ae->states[k], ae->nulls[k],
								   &slot->tts_isnull[view->nkeys + k]);
		ExecStoreVirtualTuple(slot);
		MemoryContextSwitchTo(oldcxt);
		acc->current = ae;
		merge->receiveSlot(slot, merge);
		acc->current = NULL;
		MemoryContextReset(tmpcxt);
	}
	ExecDropSingleTupleTableSlot(slot);
	MemoryContextDelete(tmpcxt);

	/* start over empty */
	acc->globalEntry = NULL;
	if (acc->groups != NULL)
		keygroups_reset(acc->groups);
	ResetTupleHashTable(acc->table);
	MemoryContextReset(acc->tablecxt);
	MemoryContextReset(acc->statecxt);
	acc->ngroups = 0;
}

/* Copy a key datum into 'cxt'. */
static Datum
accum_datum_copy_key(Datum value, bool byval, int16 len, MemoryContext cxt)
{
	MemoryContext oldcxt;
	Datum		copy;

	if (byval)
		return value;
	oldcxt = MemoryContextSwitchTo(cxt);
	copy = datumCopy(value, false, len);
	MemoryContextSwitchTo(oldcxt);
	return copy;
}

/*
 * accum_row_inputs evaluates an aggregate's FILTER over the row in 'row'
 * (econtext's scan tuple) and, if the row passes, its inputs into
 * fcinfo->args[1 ..] (for its transition or inverse transition function),
 * setting *anynull if one is null.  Returns false if FILTER rejects the row.
 */
static bool
accum_row_inputs(KappaPushAgg *pa, FunctionCallInfo fcinfo, TupleTableSlot *row,
				 ExprContext *econtext, bool *anynull)
{
	if (pa->filterState != NULL)
	{
		bool		fnull;
		Datum		pass = ExecEvalExpr(pa->filterState, econtext, &fnull);

		if (fnull || !DatumGetBool(pass))
			return false;
	}
	for (int k = 0; k < pa->numInputs; k++)
	{
		if (pa->inputStates[k] == NULL)
		{
			fcinfo->args[k + 1].value = row->tts_values[pa->inputAttnos[k] - 1];
			fcinfo->args[k + 1].isnull = row->tts_isnull[pa->inputAttnos[k] - 1];
		}
		else
			fcinfo->args[k + 1].value = ExecEvalExpr(pa->inputStates[k], econtext,
													 &fcinfo->args[k + 1].isnull);
		*anynull |= fcinfo->args[k + 1].isnull;
	}
	return true;
}

/* A new group for pushed rows, its states at the initial values. */
static AccumEntry *
accum_new_pushed_entry(KappaViewAccum *acc)
{
	KappaViewInfo *view = acc->view;
	AccumEntry *ae = accum_new_entry(acc, true);
	int			i;

	for (i = 0; i < view->naggs; i++)
	{
		KappaPushAgg *pa = &view->push->aggs[i];

		ae->noTrans[i] = ae->nulls[i] = pa->initValueIsNull;
		ae->states[i] = pa->initValueIsNull || pa->shareWith >= 0 ? (Datum) 0 :
			accum_datum_copy_into(pa->initValue, &view->aggs[i], acc->statecxt);
	}
	acc->ngroups++;
	return ae;
}

/*
 * Evaluate a pushed row's WHERE and group keys (in the push path's per-row
 * memory, which the caller resets) into acc->rowKeys / acc->rowNulls.
 * Returns false if the row fails the view's WHERE.  With grouping sets, key
 * 0 (the set's id) is left for accum_set_group.
 */
static bool
accum_row_keys(KappaViewAccum *acc, TupleTableSlot *row)
{
	KappaViewInfo *view = acc->view;
	KappaPushInfo *push = view->push;
	ExprContext *econtext = push->econtext;
	int			i;

	econtext->ecxt_scantuple = row;
	if (push->qual != NULL && !ExecQual(push->qual, econtext))
		return false;

	if (push->maxAttno > 0)
		slot_getsomeattrs(row, push->maxAttno);
	for (i = view->groupingSets ? 1 : 0; i < view->nkeys; i++)
	{
		if (push->keyStates[i] == NULL)
		{
			acc->rowKeys[i] = row->tts_values[push->keyAttnos[i] - 1];
			acc->rowNulls[i] = row->tts_isnull[push->keyAttnos[i] - 1];
		}
		else
			acc->rowKeys[i] = ExecEvalExpr(push->keyStates[i], econtext,
										   &acc->rowNulls[i]);
	}
	return true;
}

/* The group of keys keys[] / keynulls[] (copied if new), made if new. */
static AccumEntry *
accum_keys_group(KappaViewAccum *acc, Datum *keys, bool *keynulls)
{
	KappaViewInfo *view = acc->view;
	TupleHashEntry entry;
	AccumEntry *ae;
	bool		isnew;
	int			i;

	if (acc->groups != NULL)
	{
		/* keys compared by their bytes */
		AccumEntry *probe = acc->probe;
		KeyGroup   *group;
		bool		found;

		memcpy(probe->keys, keys, sizeof(Datum) * view->nkeys);
		memcpy(probe->keynulls, keynulls, sizeof(bool) * view->nkeys);
		group = keygroups_insert(acc->groups, probe, &found);
		if (found)
			return group->entry;
		ae = accum_new_pushed_entry(acc);
		ae->keys = MemoryContextAlloc(acc->statecxt, sizeof(Datum) * view->nkeys);
		ae->keynulls = MemoryContextAlloc(acc->statecxt, sizeof(bool) * view->nkeys);
		for (i = 0; i < view->nkeys; i++)
		{
			ae->keynulls[i] = probe->keynulls[i];
			ae->keys[i] = probe->keynulls[i] ? (Datum) 0 :
				accum_datum_copy_key(probe->keys[i], acc->keyByVals[i],
									 acc->keyLens[i], acc->statecxt);
		}
		group->entry = ae;
		return ae;
	}

	/* a view without GROUP BY has one group: find it once */
	if (view->nkeys == 0 && acc->globalEntry != NULL)
		return acc->globalEntry->additional;
	ExecClearTuple(acc->keySlot);
	if (view->nkeys == 0)
	{
		acc->keySlot->tts_values[0] = Int32GetDatum(0);
		acc->keySlot->tts_isnull[0] = false;
	}
	for (i = 0; i < view->nkeys; i++)
	{
		acc->keySlot->tts_values[i] = keys[i];
		acc->keySlot->tts_isnull[i] = keynulls[i];
	}
	ExecStoreVirtualTuple(acc->keySlot);
	entry = LookupTupleHashEntry(acc->table, acc->keySlot, &isnew, NULL);
	if (view->nkeys == 0)
		acc->globalEntry = entry;
	if (isnew)
	{
		ae = accum_new_pushed_entry(acc);
		entry->additional = ae;
	}
	else
		ae = entry->additional;
	return ae;
}

/*
 * The group, made if new, of the row whose keys accum_row_keys evaluated in
 * grouping set number 'set' (with grouping sets: key 0 is the set's id and
 * the keys it rolls up are NULL; without, 'set' is 0).
 */
static AccumEntry *
accum_set_group(KappaViewAccum *acc, int set)
{
	KappaViewInfo *view = acc->view;
	int32		id;
	int			i;

	if (!view->groupingSets)
		return accum_keys_group(acc, acc->rowKeys, acc->rowNulls);
	id = view->gsetIds[set];
	acc->setKeys[0] = Int32GetDatum(id);
	acc->setNulls[0] = false;
	for (i = 1; i < view->nkeys; i++)
	{
		bool		rolledUp = ((id >> (view->nkeys - 1 - i)) & 1) != 0;

		acc->setKeys[i] = rolledUp ? (Datum) 0 : acc->rowKeys[i];
		acc->setNulls[i] = rolledUp || acc->rowNulls[i];
	}
	return accum_keys_group(acc, acc->setKeys, acc->setNulls);
}

/*
 * Advance the states of group 'ae' by pushed row 'row' (its keys evaluated
 * by accum_row_keys, in the per-row memory the caller resets).
 */
static void
accum_advance(KappaViewAccum *acc, AccumEntry *ae, TupleTableSlot *row)
{
	KappaViewInfo *view = acc->view;
	KappaPushInfo *push = view->push;
	ExprContext *econtext = push->econtext;
	MemoryContext oldcxt;
	int			i;

	ae->hasAdded = true;
	oldcxt = MemoryContextSwitchTo(acc->tempcxt);
	for (i = 0; i < view->naggs; i++)
	{
		KappaPushAgg *pa = &push->aggs[i];
		KappaAggMerge *m = &view->aggs[i];
		FunctionCallInfo fcinfo = pa->fcinfo;
		bool		anynull = false;
		Datum		newVal;

		if (pa->shareWith >= 0)
			continue;			/* advanced with the one it shares */
		if (!accum_row_inputs(pa, fcinfo, row, econtext, &anynull))
			continue;
		fcinfo->context = (Node *) acc->aggContext;
		fcinfo->isnull = false;
		if (pa->transfn.fn_strict)
		{
			if (anynull)
				continue;
			if (ae->noTrans[i])
			{
				/* the first input is the initial state */
				ae->states[i] = accum_datum_copy_into(fcinfo->args[1].value, m, acc->statecxt);
				ae->nulls[i] = false;
				ae->noTrans[i] = false;
				continue;
			}
			if (ae->nulls[i])
				continue;
		}
		fcinfo->args[0].value = ae->states[i];
		fcinfo->args[0].isnull = ae->nulls[i];
		newVal = FunctionCallInvoke(fcinfo);
		if (!m->transtypByVal && !fcinfo->isnull && !m->internalState &&
			DatumGetPointer(newVal) != DatumGetPointer(ae->states[i]))
			newVal = accum_datum_copy_into(newVal, m, acc->statecxt);
		ae->states[i] = newVal;
		ae->nulls[i] = fcinfo->isnull;
	}
	/* shared states follow the state they share */
	for (i = 0; i < view->naggs; i++)
	{
		int			j = push->aggs[i].shareWith;

		if (j >= 0)
		{
			ae->states[i] = ae->states[j];
			ae->nulls[i] = ae->nulls[j];
			ae->noTrans[i] = ae->noTrans[j];
		}
	}
	MemoryContextSwitchTo(oldcxt);
	/* most rows allocate nothing: skip the call then */
	if (!acc->tempcxt->isReset)
		MemoryContextReset(acc->tempcxt);
}

/*
 * KappaAccumPushRow applies one stream row to a view that reads the stream
 * alone, without a delta query: WHERE, group key, FILTER and the aggregates'
 * transition functions, as nodeAgg.c's advance_transition_function does,
 * into the group's in-memory state -- with grouping sets, into its group of
 * each set.  KappaAccumFlush writes the result.
 */
void
KappaAccumPushRow(KappaViewAccum *acc, TupleTableSlot *row)
{
	ExprContext *econtext = acc->view->push->econtext;
	int			set;

	if (accum_row_keys(acc, row))
	{
		for (set = 0; set < acc->nsets; set++)
			accum_advance(acc, accum_set_group(acc, set), row);
	}
	/* most rows allocate nothing: skip the call then */
	if (!econtext->ecxt_per_tuple_memory->isReset)
		ResetExprContext(econtext);
}

/*
 * KappaAccumRetractRow records that a row left a view over a table (a
 * deleted row, or the old version of an updated one): its group is marked,
 * and for a view whose aggregates all retract in place, a copy of the row is
 * kept for KappaAccumRetractInto.  A row that fails the view's WHERE is
 * ignored.
 */
void
KappaAccumRetractRow(KappaViewAccum *acc, TupleTableSlot *row)
{
	KappaViewInfo *view = acc->view;
	int			set;

	if (accum_row_keys(acc, row))
	{
		for (set = 0; set < acc->nsets; set++)
			accum_retract_from(acc, accum_set_group(acc, set), row);
	}
	ResetExprContext(view->push->econtext);
}

/*
 * Record that 'row' left group 'ae' (KappaAccumRetractRow): the group is
 * marked, and for a view whose aggregates all retract in place, a copy of
 * the row kept with it.
 */
static void
accum_retract_from(KappaViewAccum *acc, AccumEntry *ae, TupleTableSlot *row)
{
	KappaViewInfo *view = acc->view;

	ae->hasRetracted = true;
	if (!view->invertible)
		return;
	if (ae->nretracted == ae->maxretracted)
	{
		int			newmax = Max(4, ae->maxretracted * 2);

		ae->retracted = ae->retracted == NULL ?
			MemoryContextAlloc(acc->statecxt, sizeof(MinimalTuple) * newmax) :
			repalloc_huge(ae->retracted, sizeof(MinimalTuple) * newmax);
		ae->maxretracted = newmax;
	}
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(acc->statecxt);

		ae->retracted[ae->nretracted++] = ExecCopySlotMinimalTuple(row);
		MemoryContextSwitchTo(oldcxt);
	}
	if (acc->retractSlot == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(acc->cxt);

		acc->retractSlot = MakeSingleTupleTableSlot(CreateTupleDescCopy(row->tts_tupleDescriptor),
													&TTSOpsMinimalTuple);
		MemoryContextSwitchTo(oldcxt);
	}
}

/*
 * KappaAccumCurrentGroup tells, while KappaAccumFlush hands a group to its
 * receiver, whether rows were retracted from the group (the result) and
 * whether rows were added to it (*hasAdded; if not, the states handed on are
 * the initial ones and must not be combined).
 */
bool
KappaAccumCurrentGroup(KappaViewAccum *acc, bool *hasAdded)
{
	if (acc->current == NULL)
	{
		*hasAdded = true;
		return false;
	}
	*hasAdded = acc->current->hasAdded;
	return acc->current->hasRetracted;
}

/*
 * KappaAccumRetractInto removes the current group's retracted rows (see
 * KappaAccumCurrentGroup) from the in-memory transition values
 * states[]/nulls[] (one per aggregate, as KappaAggStateFromStored gives
 * them), calling each aggregate's inverse transition function as
 * nodeWindowAgg.c does for moving aggregates: FILTER and strict inputs
 * skip a row as they would have skipped it going in.  Returns false if some
 * inverse function could not undo a row (returned NULL, PostgreSQL's
 * moving-aggregate contract for "recompute"); the values are then
 * meaningless.  Runs in the caller's per-group memory; 'aggcontext' is the
 * Agg node the functions see.
 */
bool
KappaAccumRetractInto(KappaViewAccum *acc, AggState *aggcontext,
					  Datum *states, bool *nulls)
{
	KappaViewInfo *view = acc->view;
	KappaPushInfo *push = view->push;
	ExprContext *econtext = push->econtext;
	AccumEntry *ae = acc->current;
	bool		ok = true;
	int			r;

	if (ae == NULL || !view->invertible)
		return false;
	for (r = 0; ok && r < ae->nretracted; r++)
	{
		TupleTableSlot *row = acc->retractSlot;
		int			i;

		ExecStoreMinimalTuple(ae->retracted[r], row, false);
		slot_getallattrs(row);
		econtext->ecxt_scantuple = row;
		for (i = 0; ok && i < view->naggs; i++)
		{
			KappaPushAgg *pa = &push->aggs[i];
			FunctionCallInfo fcinfo = pa->invFcinfo;
			bool		anynull = false;
			Datum		newVal;

			if (!accum_row_inputs(pa, fcinfo, row, econtext, &anynull))
				continue;
			if (pa->transfn.fn_strict && anynull)
				continue;		/* the row never went in */
			if (nulls[i] && pa->invtransfn.fn_strict)
			{
				ok = false;		/* nothing to take the row out of */
				break;
			}
			fcinfo->context = (Node *) aggcontext;
			fcinfo->isnull = false;
			fcinfo->args[0].value = states[i];
			fcinfo->args[0].isnull = nulls[i];
			newVal = FunctionCallInvoke(fcinfo);
			if (fcinfo->isnull)
			{
				ok = false;		/* the function cannot undo this row */
				break;
			}
			states[i] = newVal;
			nulls[i] = false;
		}
		ExecClearTuple(row);
	}
	econtext->ecxt_scantuple = NULL;
	return ok;
}
