/*-------------------------------------------------------------------------
 *
 * view_engine.c
 *	  Applying a batch of stream rows to one continuous view.
 *
 * For each view a backend keeps a planned "delta query": the view's SELECT
 * reduced to its group keys and aggregates, planned once, with the Agg node
 * switched to partial mode (AGGSPLIT_INITIAL_SERIAL, what a parallel worker
 * runs) and the output sorted by the group keys.  Executing it while the
 * batch is active (the stream's scan then returns the batch's rows) yields
 * one row per touched group: the keys and a partial state per aggregate.
 *
 * Each such row is merged into the materialization (see view.h for its
 * layout): the group is probed in the unique index with a dirty snapshot;
 * if present, the stored states are combined with the delta's (agg_state.c),
 * the outputs recomputed and the row updated; if absent, the row is inserted
 * with speculative insertion, as INSERT ... ON CONFLICT does.  A concurrent
 * writer of the same group is waited for and the merge retried, so no update
 * is lost; groups are touched in key order, so writers do not deadlock.
 *
 * The delta runs with the view owner's rights (as a view would) and in a
 * security-restricted operation, as REFRESH MATERIALIZED VIEW does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_clause.h"
#include "parser/parse_relation.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "util.h"
#include "view.h"

/*
 * Each delta query is planned for batches of KAPPA_SMALL_BATCH_ROWS rows and
 * for batches of KAPPA_LARGE_BATCH_ROWS rows; a batch of at most
 * KAPPA_SMALL_BATCH_LIMIT rows runs the first plan.
 */
#define KAPPA_SMALL_BATCH_ROWS 10
#define KAPPA_LARGE_BATCH_ROWS 100000
#define KAPPA_SMALL_BATCH_LIMIT 1000

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
} MergeReceiver;

/* Set partial-aggregation mode on an Aggref of the delta plan. */
static bool
mark_partial_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Aggref))
	{
		Aggref	   *agg = (Aggref *) node;

		agg->aggsplit = AGGSPLIT_INITIAL_SERIAL;
		agg->aggtype = (agg->aggtranstype == INTERNALOID) ? BYTEAOID : agg->aggtranstype;
		return false;
	}
	return expression_tree_walker(node, mark_partial_walker, context);
}

/*
 * Switch the top Agg node of a delta plan to partial aggregation, and fix
 * the types of the nodes above it (a Sort), which pass its output through.
 */
static void
make_plan_partial(Plan *plan)
{
	List	   *above = NIL;
	Plan	   *node = plan;
	ListCell   *lc;

	while (node != NULL && !IsA(node, Agg))
	{
		above = lcons(node, above);
		node = node->lefttree;
	}
	if (node == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot maintain this continuous view: its plan has no aggregation step"),
				 errhint("Simplify the query: aggregate the stream directly in its FROM clause.")));

	((Agg *) node)->aggsplit = AGGSPLIT_INITIAL_SERIAL;
	(void) mark_partial_walker((Node *) node->targetlist, NULL);
	(void) mark_partial_walker((Node *) node->qual, NULL);

	/* 'above' runs from the node right above the Agg up to the top */
	foreach(lc, above)
	{
		Plan	   *parent = lfirst(lc);
		Plan	   *child = parent->lefttree;
		ListCell   *lc2;

		if (parent->qual != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot maintain this continuous view: its plan filters after aggregating"),
					 errhint("Simplify the query: aggregate the stream directly in its FROM clause.")));
		foreach(lc2, parent->targetlist)
		{
			TargetEntry *tle = lfirst(lc2);
			Var		   *var = (Var *) tle->expr;
			TargetEntry *childTle;

			if (!IsA(var, Var) || var->varno != OUTER_VAR)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot maintain this continuous view: its plan computes after aggregating"),
						 errhint("Simplify the query: aggregate the stream directly in its FROM clause.")));
			childTle = list_nth(child->targetlist, var->varattno - 1);
			var->vartype = exprType((Node *) childTle->expr);
			var->vartypmod = exprTypmod((Node *) childTle->expr);
			var->varcollid = exprCollation((Node *) childTle->expr);
		}
	}
}

/* Build and plan the delta query of a view. */
static PlannedStmt *
plan_delta_query(KappaViewShape *shape, const char *sql)
{
	Query	   *query = shape->query;
	Query	   *delta = copyObject(query);
	List	   *tlist = NIL;
	AttrNumber	resno = 0;
	ListCell   *lc;
	PlannedStmt *pstmt;

	foreach(lc, query->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, query->targetList);
		TargetEntry *ntle;

		resno++;
		ntle = makeTargetEntry(copyObject(tle->expr), resno,
							   psprintf("k_%d", resno), false);
		ntle->ressortgroupref = tle->ressortgroupref;
		tlist = lappend(tlist, ntle);
	}
	foreach(lc, shape->aggrefs)
	{
		resno++;
		tlist = lappend(tlist, makeTargetEntry(copyObject(lfirst(lc)), resno,
											   psprintf("s_%d", resno), false));
	}
	delta->targetList = tlist;
	delta->hasAggs = true;
	delta->havingQual = NULL;
	delta->sortClause = copyObject(query->groupClause);
	delta->limitCount = NULL;
	delta->limitOffset = NULL;
	delta->limitOption = LIMIT_OPTION_DEFAULT;

	pstmt = pg_plan_query(delta, sql, 0, NULL);
	make_plan_partial(pstmt->planTree);
	return pstmt;
}

/*
 * Plan a delta query for batches of about 'rows' rows: the planner then
 * picks, e.g., index lookups into joined tables for a single-row INSERT and
 * hash joins for a large COPY.
 */
static PlannedStmt *
plan_delta_query_for(KappaViewShape *shape, const char *sql, double rows)
{
	double		saved = kappa_planned_batch_rows;
	PlannedStmt *pstmt;

	kappa_planned_batch_rows = rows;
	PG_TRY();
	{
		pstmt = plan_delta_query(shape, sql);
	}
	PG_FINALLY();
	{
		kappa_planned_batch_rows = saved;
	}
	PG_END_TRY();
	return pstmt;
}

static AttrNumber
mat_attno(Relation mat, const char *name)
{
	AttrNumber	attno = attnameAttNum(mat, name, false);

	if (attno == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("materialization \"%s\" has lost its column \"%s\"",
						RelationGetRelationName(mat), name),
				 errhint("Drop the continuous view and create it again.")));
	return attno;
}

/* Plan and compile an expression over the stream row. */
static ExprState *
init_row_expr(Node *expr)
{
	return ExecInitExpr(expression_planner((Expr *) copyObject(expr)), NULL);
}

/*
 * Prepare an input over the stream row: a plain column is read straight
 * from the row (*attno set, NULL returned), anything else compiled.
 */
static ExprState *
init_row_input(Node *expr, AttrNumber *attno, AttrNumber *maxAttno)
{
	Expr	   *planned = expression_planner((Expr *) copyObject(expr));

	if (IsA(planned, Var) && ((Var *) planned)->varattno > 0)
	{
		*attno = ((Var *) planned)->varattno;
		*maxAttno = Max(*maxAttno, *attno);
		return NULL;
	}
	*attno = 0;
	return ExecInitExpr(planned, NULL);
}

/*
 * Prepare pushing rows straight into the view's accumulator, if the view
 * reads the stream alone: no joins, no subqueries, plain aggregate calls.
 * Returns NULL otherwise; such views run their delta query.  Allocates in
 * the current memory context (the view's).
 */
static KappaPushInfo *
build_push_info(KappaViewInfo *view, KappaViewShape *shape)
{
	Query	   *query = shape->query;
	KappaPushInfo *push;
	ListCell   *lc;
	int			i;

	if (list_length(query->rtable) != 1 || query->hasSubLinks)
		return NULL;
	foreach(lc, shape->aggrefs)
	{
		Aggref	   *agg = lfirst(lc);

		if (agg->aggkind != AGGKIND_NORMAL || agg->aggvariadic ||
			agg->aggdirectargs != NIL)
			return NULL;
	}

	push = palloc0(sizeof(KappaPushInfo));
	if (query->jointree->quals != NULL)
		push->qual = ExecInitQual(make_ands_implicit(expression_planner((Expr *) copyObject(query->jointree->quals))),
								  NULL);
	push->keyStates = palloc(sizeof(ExprState *) * Max(view->nkeys, 1));
	push->keyAttnos = palloc(sizeof(AttrNumber) * Max(view->nkeys, 1));
	i = 0;
	foreach(lc, shape->keyExprs)
	{
		push->keyStates[i] = init_row_input(lfirst(lc), &push->keyAttnos[i],
											&push->maxAttno);
		i++;
	}
	push->aggs = palloc0(sizeof(KappaPushAgg) * view->naggs);
	i = 0;
	foreach(lc, shape->aggrefs)
	{
		Aggref	   *agg = lfirst(lc);
		KappaPushAgg *pa = &push->aggs[i];
		ListCell   *lc2;
		int			k = 0;

		KappaPushAggInit(pa, &view->aggs[i], agg);
		pa->fcinfo = palloc0(SizeForFunctionCallInfo(pa->numInputs + 1));
		InitFunctionCallInfoData(*pa->fcinfo, &pa->transfn, pa->numInputs + 1,
								 view->aggs[i].inputCollid, NULL, NULL);

		/*
		 * Like nodeAgg.c, let aggregates with the same transition (sum and
		 * avg of the same numeric) share one state.
		 */
		pa->shareWith = -1;
		for (k = 0; k < i; k++)
		{
			Aggref	   *other = list_nth(shape->aggrefs, k);
			KappaPushAgg *po = &push->aggs[k];

			if (po->shareWith < 0 &&
				po->transfn.fn_oid == pa->transfn.fn_oid &&
				view->aggs[k].transtype == view->aggs[i].transtype &&
				other->inputcollid == agg->inputcollid &&
				equal(other->args, agg->args) &&
				equal(other->aggfilter, agg->aggfilter) &&
				po->initValueIsNull == pa->initValueIsNull &&
				(pa->initValueIsNull ||
				 datumIsEqual(po->initValue, pa->initValue,
							  view->aggs[i].transtypByVal, view->aggs[i].transtypLen)))
			{
				pa->shareWith = k;
				break;
			}
		}
		k = 0;
		pa->inputStates = palloc(sizeof(ExprState *) * Max(pa->numInputs, 1));
		pa->inputAttnos = palloc(sizeof(AttrNumber) * Max(pa->numInputs, 1));
		foreach(lc2, agg->args)
		{
			pa->inputStates[k] = init_row_input((Node *) ((TargetEntry *) lfirst(lc2))->expr,
												&pa->inputAttnos[k], &push->maxAttno);
			k++;
		}
		pa->filterState = agg->aggfilter ? init_row_expr((Node *) agg->aggfilter) : NULL;
		i++;
	}
	push->econtext = CreateStandaloneExprContext();
	return push;
}

/*
 * KappaViewInfoLoad builds the per-backend state of a continuous view from
 * its catalog entry: its query is read back from the definition view, so it
 * follows renames.  The result lives in a new context under 'parent'.
 */
KappaViewInfo *
KappaViewInfoLoad(Oid viewRelid, Oid matRelid, Oid defRelid, MemoryContext parent)
{
	MemoryContext cxt;
	MemoryContext tmpcxt;
	MemoryContext oldcxt;
	KappaViewInfo *view;
	KappaViewShape *shape;
	PlannedStmt *pstmt;
	PlannedStmt *smallPstmt;
	char	   *sql;
	Relation	mat;
	Relation	index;
	List	   *indexes;
	ListCell   *lc;
	int			i;
	HeapTuple	tuple;
	Oid			ownerId;
	KappaSavedUser saved;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(viewRelid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", viewRelid);
	ownerId = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	cxt = AllocSetContextCreate(parent, "pg_kappa view", ALLOCSET_DEFAULT_SIZES);
	tmpcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_kappa view load",
								   ALLOCSET_DEFAULT_SIZES);

	/*
	 * Parse, check and plan in a scratch context, as the view's owner: the
	 * planner may run the view's immutable functions.  With search_path
	 * pinned, the definition comes back with every name qualified.
	 */
	oldcxt = MemoryContextSwitchTo(tmpcxt);
	KappaBecomeUser(ownerId, &saved);
	/* the definition as committed now, or created earlier in this command */
	PushActiveSnapshot(GetLatestSnapshot());
	sql = TextDatumGetCString(DirectFunctionCall1(pg_get_viewdef,
												  ObjectIdGetDatum(defRelid)));
	PopActiveSnapshot();
	shape = KappaBuildViewShape(KappaParseViewQuery(sql, true), sql);
	pstmt = plan_delta_query_for(shape, sql, KAPPA_LARGE_BATCH_ROWS);
	smallPstmt = plan_delta_query_for(shape, sql, KAPPA_SMALL_BATCH_ROWS);

	MemoryContextSwitchTo(cxt);
	view = palloc0(sizeof(KappaViewInfo));
	view->cxt = cxt;
	view->viewRelid = viewRelid;
	view->matRelid = matRelid;
	view->defRelid = defRelid;
	view->sql = pstrdup(sql);
	view->deltaPlan = copyObject(pstmt);
	view->smallDeltaPlan = copyObject(smallPstmt);
	view->relationOids = list_concat(list_copy(pstmt->relationOids),
									 smallPstmt->relationOids);
	view->shape = palloc0(sizeof(KappaViewShape));
	view->shape->nkeys = shape->nkeys;
	view->shape->aggrefs = copyObject(shape->aggrefs);
	view->shape->outExprs = copyObject(shape->outExprs);
	view->shape->having = copyObject(shape->having);
	view->shape->sortExprs = copyObject(shape->sortExprs);
	view->shape->streamRelid = shape->streamRelid;

	view->ownerId = ownerId;

	view->nkeys = shape->nkeys;
	view->globalView = (shape->nkeys == 0);
	view->naggs = list_length(shape->aggrefs);
	view->aggs = palloc0(sizeof(KappaAggMerge) * view->naggs);
	i = 0;
	foreach(lc, view->shape->aggrefs)
		KappaAggMergeInit(&view->aggs[i++], lfirst(lc));

	/* where things are in the materialization */
	mat = table_open(matRelid, AccessShareLock);
	view->matNatts = RelationGetDescr(mat)->natts;
	view->keyAttnos = palloc(sizeof(AttrNumber) * Max(view->nkeys, 1));
	if (view->globalView)
		view->keyAttnos[0] = mat_attno(mat, "k_0");
	for (i = 0; i < view->nkeys; i++)
		view->keyAttnos[i] = mat_attno(mat, psprintf("k_%d", i + 1));
	view->stateAttnos = palloc(sizeof(AttrNumber) * view->naggs);
	for (i = 0; i < view->naggs; i++)
		view->stateAttnos[i] = mat_attno(mat, psprintf("s_%d", i + 1));
	view->outAttnos = palloc(sizeof(AttrNumber) * Max(list_length(shape->outExprs), 1));
	for (i = 0; i < list_length(shape->outExprs); i++)
		view->outAttnos[i] = mat_attno(mat, psprintf("c_%d", i + 1));
	view->havingAttno = shape->having ? mat_attno(mat, "h") : InvalidAttrNumber;
	view->sortAttnos = palloc(sizeof(AttrNumber) * Max(list_length(shape->sortExprs), 1));
	for (i = 0; i < list_length(shape->sortExprs); i++)
		view->sortAttnos[i] = mat_attno(mat, psprintf("o_%d", i + 1));
	view->updatedAttno = mat_attno(mat, "updated_at");

	/* the unique index on the key columns */
	indexes = RelationGetIndexList(mat);
	index = NULL;
	foreach(lc, indexes)
	{
		Relation	candidate = index_open(lfirst_oid(lc), AccessShareLock);
		int			nkeycols = Max(view->nkeys, 1);
		bool		match;

		match = candidate->rd_index->indisunique &&
			candidate->rd_index->indnkeyatts == nkeycols &&
			candidate->rd_indexprs == NIL && candidate->rd_indpred == NIL;

		for (i = 0; match && i < nkeycols; i++)
			match = candidate->rd_index->indkey.values[i] == view->keyAttnos[i];
		if (match)
		{
			index = candidate;
			break;
		}
		index_close(candidate, AccessShareLock);
	}
	if (index == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("materialization \"%s\" of continuous view \"%s\" has lost its unique index",
						RelationGetRelationName(mat), get_rel_name(viewRelid)),
				 errhint("Drop the view and create it again.")));
	view->indexRelid = RelationGetRelid(index);
	view->keyEqProcs = palloc(sizeof(RegProcedure) * Max(view->nkeys, 1));
	view->keyCollations = palloc(sizeof(Oid) * Max(view->nkeys, 1));
	for (i = 0; i < Max(view->nkeys, 1); i++)
	{
		Oid			eqop = get_opfamily_member(index->rd_opfamily[i],
											   index->rd_opcintype[i],
											   index->rd_opcintype[i],
											   BTEqualStrategyNumber);

		if (!OidIsValid(eqop))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no equality operator for key %d of materialization \"%s\"",
							i + 1, RelationGetRelationName(mat)),
					 errhint("Drop the continuous view and create it again.")));
		view->keyEqProcs[i] = get_opcode(eqop);
		view->keyCollations[i] = index->rd_indcollation[i];
	}
	index_close(index, NoLock);
	table_close(mat, NoLock);

	view->keyEqOps = palloc(sizeof(Oid) * Max(view->nkeys, 1));
	view->keySortOps = palloc(sizeof(Oid) * Max(view->nkeys, 1));
	view->keyNullsFirst = palloc(sizeof(bool) * Max(view->nkeys, 1));
	view->keyHashable = palloc(sizeof(bool) * Max(view->nkeys, 1));
	i = 0;
	foreach(lc, shape->query->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);

		view->keyEqOps[i] = sgc->eqop;
		view->keySortOps[i] = sgc->sortop;
		view->keyNullsFirst[i] = sgc->nulls_first;
		view->keyHashable[i] = sgc->hashable;
		i++;
	}

	/* the finals tuple: keys, then one final value per aggregate */
	view->finalsDesc = CreateTemplateTupleDesc(view->nkeys + view->naggs);
	i = 0;
	foreach(lc, shape->keyExprs)
	{
		Node	   *key = lfirst(lc);

		i++;
		TupleDescInitEntry(view->finalsDesc, i, NULL, exprType(key), exprTypmod(key), 0);
	}
	foreach(lc, view->shape->aggrefs)
	{
		Aggref	   *agg = lfirst(lc);

		i++;
		TupleDescInitEntry(view->finalsDesc, i, NULL, agg->aggtype, -1, 0);
	}

	/* per-group expressions get what the planner does to expressions */
	view->shape->outExprs = (List *) expression_planner((Expr *) view->shape->outExprs);
	if (view->shape->having)
		view->shape->having = expression_planner(view->shape->having);
	view->shape->sortExprs = (List *) expression_planner((Expr *) view->shape->sortExprs);

	view->outStates = palloc(sizeof(ExprState *) * Max(list_length(shape->outExprs), 1));
	i = 0;
	foreach(lc, view->shape->outExprs)
		view->outStates[i++] = ExecInitExpr(lfirst(lc), NULL);
	view->havingState = view->shape->having ? ExecInitExpr(view->shape->having, NULL) : NULL;
	view->sortStates = palloc(sizeof(ExprState *) * Max(list_length(shape->sortExprs), 1));
	i = 0;
	foreach(lc, view->shape->sortExprs)
		view->sortStates[i++] = ExecInitExpr(lfirst(lc), NULL);

	view->econtext = CreateStandaloneExprContext();
	view->aggContext = KappaMakeAggContext(view->econtext);
	view->push = build_push_info(view, shape);

	KappaRestoreUser(&saved);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(tmpcxt);
	return view;
}

/* KappaViewInfoFree releases what KappaViewInfoLoad built. */
void
KappaViewInfoFree(KappaViewInfo *view)
{
	if (view->push != NULL)
		FreeExprContext(view->push->econtext, true);
	FreeExprContext(view->econtext, true);
	MemoryContextDelete(view->cxt);
}

/*
 * Find the stored row of a group and wait out concurrent writers of it.
 * Returns true with the row in receiver->oldslot (copied out of the buffer).
 */
static bool
lookup_group(MergeReceiver *r, Datum *keys, bool *keynulls)
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
	Datum	   *values;
	bool	   *nulls;
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

	for (;;)
	{
		bool		found = lookup_group(r, keys, keynulls);
		TupleTableSlot *finals = r->finalsSlot;
		TupleTableSlot *newslot = r->newslot;

		if (found)
			slot_getallattrs(r->oldslot);

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

			KappaAggCombineAndFinalize(&view->aggs[i], view->aggContext, found,
									   found ? r->oldslot->tts_values[sattno - 1] : (Datum) 0,
									   found ? r->oldslot->tts_isnull[sattno - 1] : true,
									   slot->tts_values[view->nkeys + i],
									   slot->tts_isnull[view->nkeys + i],
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

		if (found)
		{
			TM_FailureData tmfd;
			LockTupleMode lockmode;
			bool		updateIndexes;
			TM_Result	result;

			result = table_tuple_update(r->mat, &r->oldslot->tts_tid, newslot,
										r->cid, r->estate->es_snapshot,
										InvalidSnapshot, true, &tmfd,
										&lockmode, &updateIndexes);
			if (result == TM_Ok)
			{
				if (updateIndexes)
					ExecInsertIndexTuples(r->rri, newslot, r->estate, true, false,
										  NULL, NIL);
				break;
			}
			if (result != TM_Updated && result != TM_Deleted)
				elog(ERROR, "unexpected result %d updating continuous view \"%s\"",
					 (int) result, get_rel_name(view->viewRelid));
			/* a concurrent writer got there first: merge into its version */
		}
		else
		{
			ItemPointerData conflictTid;
			uint32		specToken;
			bool		specConflict = false;

			if (ExecCheckIndexConstraints(r->rri, newslot, r->estate, &conflictTid,
										  r->arbiterIndexes))
			{
				specToken = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
				table_tuple_insert_speculative(r->mat, newslot, r->cid, 0, NULL, specToken);
				ExecInsertIndexTuples(r->rri, newslot, r->estate, false, true,
									  &specConflict, r->arbiterIndexes);
				table_tuple_complete_speculative(r->mat, newslot, specToken, !specConflict);
				SpeculativeInsertionLockRelease(GetCurrentTransactionId());
				if (!specConflict)
					break;
			}
			/* someone inserted the group meanwhile: merge into theirs */
		}
		CHECK_FOR_INTERRUPTS();
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
}

static void
merge_shutdown(DestReceiver *self)
{
	MergeReceiver *r = (MergeReceiver *) self;

	index_endscan(r->scan);
	ExecDropSingleTupleTableSlot(r->oldslot);
	ExecDropSingleTupleTableSlot(r->newslot);
	ExecDropSingleTupleTableSlot(r->finalsSlot);
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
 * KappaViewLockRelations locks every relation the view's delta plan reads
 * and its materialization, as the plan cache does before running a cached
 * plan.  Taking a lock may process invalidations that make the view stale.
 */
void
KappaViewLockRelations(KappaViewInfo *view)
{
	ListCell   *lc;

	foreach(lc, view->deltaPlan->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		if (rte->rtekind == RTE_RELATION)
			LockRelationOid(rte->relid, rte->rellockmode);
	}
	foreach(lc, view->smallDeltaPlan->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		if (rte->rtekind == RTE_RELATION)
			LockRelationOid(rte->relid, rte->rellockmode);
	}
	LockRelationOid(view->matRelid, RowExclusiveLock);
}

/* Make a receiver that merges delta rows into the view's materialization. */
static DestReceiver *
make_merge_receiver(KappaViewInfo *view)
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
 * Set up what a view's delta or merge runs in: a command counter that sees
 * the previous merges, a fresh snapshot (joined tables as of now), and the
 * view owner's rights in a security-restricted operation (KappaBecomeUser).
 */
static void
begin_view_work(KappaViewInfo *view, KappaSavedUser *saved)
{
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	KappaBecomeUser(view->ownerId, saved);
}

static void
end_view_work(KappaSavedUser *saved)
{
	KappaRestoreUser(saved);
	PopActiveSnapshot();
}

/* Run the view's delta query over 'batch' into 'dest'. */
static void
run_delta(KappaViewInfo *view, KappaBatch *batch, DestReceiver *dest)
{
	QueryDesc  *qd;
	KappaBatch *prevBatch;

	prevBatch = KappaSetActiveBatch(batch);
	PG_TRY();
	{
		qd = CreateQueryDesc(batch != NULL && batch->nrows <= KAPPA_SMALL_BATCH_LIMIT ?
							 view->smallDeltaPlan : view->deltaPlan,
							 view->sql, GetActiveSnapshot(),
							 InvalidSnapshot, dest, NULL, NULL, 0);
		ExecutorStart(qd, 0);
		ExecutorRun(qd, ForwardScanDirection, 0, true);
		ExecutorFinish(qd);
		ExecutorEnd(qd);
		FreeQueryDesc(qd);
	}
	PG_FINALLY();
	{
		KappaSetActiveBatch(prevBatch);
	}
	PG_END_TRY();
}

/*
 * KappaViewApplyBatch applies 'batch' to one view in the current
 * transaction.  With batch NULL the delta query reads the stream's retained
 * rows instead (backfill at creation).
 */
void
KappaViewApplyBatch(KappaViewInfo *view, KappaBatch *batch)
{
	DestReceiver *merge;
	KappaSavedUser saved;

	begin_view_work(view, &saved);
	merge = make_merge_receiver(view);
	run_delta(view, batch, merge);
	merge_destroy(merge);
	end_view_work(&saved);
}

/*
 * KappaViewAccumulateBatch combines the delta of 'batch' into 'acc' without
 * touching the materialization; KappaViewFlushAccum writes it.
 */
void
KappaViewAccumulateBatch(KappaViewInfo *view, KappaBatch *batch,
						 KappaViewAccum *acc)
{
	DestReceiver *dest;
	KappaSavedUser saved;

	begin_view_work(view, &saved);
	dest = KappaAccumReceiver(acc);
	run_delta(view, batch, dest);
	dest->rDestroy(dest);
	end_view_work(&saved);
}

/*
 * KappaViewFlushAccum merges every group accumulated in 'acc' into the
 * view's materialization, once per group and in key order, and empties it.
 */
void
KappaViewFlushAccum(KappaViewInfo *view, KappaViewAccum *acc)
{
	DestReceiver *merge;
	KappaSavedUser saved;

	if (KappaAccumGroups(acc) == 0)
		return;
	begin_view_work(view, &saved);
	merge = make_merge_receiver(view);
	merge->rStartup(merge, CMD_SELECT, NULL);
	KappaAccumFlush(acc, merge);
	merge->rShutdown(merge);
	merge_destroy(merge);
	end_view_work(&saved);
}

/*
 * KappaViewPushRows advances the in-memory groups of a view that takes
 * pushed rows ('acc') by 'nrows' stream rows, running the view's WHERE, keys
 * and transition functions as the view's owner (KappaBecomeUser).  'slot'
 * is a heap-tuple slot of the stream's row type.
 */
void
KappaViewPushRows(KappaViewInfo *view, KappaViewAccum *acc,
				  TupleTableSlot *slot, HeapTuple *rows, int nrows)
{
	KappaSavedUser saved;
	int			i;

	KappaBecomeUser(view->ownerId, &saved);
	for (i = 0; i < nrows; i++)
	{
		ExecStoreHeapTuple(rows[i], slot, false);
		KappaAccumPushRow(acc, slot);
	}
	ExecClearTuple(slot);
	KappaRestoreUser(&saved);
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
KappaViewBackfill(KappaViewInfo *view, Oid streamRelid, bool retained)
{
	KappaBatch	empty;
	KappaSavedUser saved;
	DestReceiver *merge;

	memset(&empty, 0, sizeof(empty));
	empty.streamRelid = streamRelid;

	CommandCounterIncrement();
	PushActiveSnapshot(GetLatestSnapshot());
	UpdateActiveSnapshotCommandId();
	KappaBecomeUser(view->ownerId, &saved);
	merge = make_merge_receiver(view);
	run_delta(view, retained ? NULL : &empty, merge);
	merge_destroy(merge);
	KappaRestoreUser(&saved);
	PopActiveSnapshot();
}
