/*-------------------------------------------------------------------------
 *
 * view_plan.c
 *	  Loading a continuous view into a backend: its delta query planned, its
 *	  materialization's layout looked up, its push path compiled.
 *
 * For each view a backend keeps a planned "delta query": the view's SELECT
 * reduced to its group keys and aggregates, planned once, with the Agg node
 * switched to partial mode (AGGSPLIT_INITIAL_SERIAL, what a parallel worker
 * runs) and the output sorted by the group keys.  Executed over a batch of
 * stream rows (view_apply.c hands them to the stream's scan), it yields one
 * row per touched group: the keys and a partial state per aggregate.  It is
 * planned twice, for a few rows and for many.  With grouping sets the Agg
 * node computes every set at once, and the set's id leads the keys.
 *
 * A view over the stream alone (no joins, no subqueries, plain aggregate
 * calls) also gets a push path (KappaPushInfo): its WHERE, keys and
 * aggregate inputs compiled over the stream row, so that rows go straight
 * into an accumulator (view_accum.c) without a delta query.
 *
 * A view over an ordinary table also gets the queries that recompute one
 * group from the tables (its delta query restricted to the group's keys;
 * with grouping sets, one pair per set, grouped by the set's keys alone)
 * and, if it has no push path (it joins other tables), a "changes plan":
 * its delta query with the table's range table entry turned into the
 * ephemeral named relation KAPPA_CHANGES_ENR, which view_apply.c fills with
 * the table's changed rows -- the way PL/pgSQL reads a transition table.
 *
 * Everything is parsed, checked (view_shape.c) and planned as the view's
 * owner, in a security-restricted operation: the planner may run the
 * view's immutable functions.  The result lives in the cache of the
 * stream's views (stream_views.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_relation.h"
#include "parser/parsetree.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "pg_kappa.h"
#include "kappa_errcodes.h"
#include "util.h"
#include "view.h"

/*
 * Each delta query is planned for batches of KAPPA_SMALL_BATCH_ROWS rows and
 * for batches of KAPPA_LARGE_BATCH_ROWS rows; view_apply.c runs the first
 * plan for batches of at most KAPPA_SMALL_BATCH_LIMIT rows (view.h).
 */
#define KAPPA_SMALL_BATCH_ROWS 10
#define KAPPA_LARGE_BATCH_ROWS 100000

static PlannedStmt *plan_delta_query_over(KappaViewShape *shape, Query *query,
										  const char *sql, Node *groupQual);

/* Set partial-aggregation mode on an Aggref of the delta plan. */
static bool
plan_mark_partial_walker(Node *node, void *context)
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
	return expression_tree_walker(node, plan_mark_partial_walker, context);
}

/*
 * Switch the top Agg node of a delta plan to partial aggregation, and fix
 * the types of the nodes above it (a Sort), which pass its output through.
 */
static void
plan_make_partial(Plan *plan)
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
	(void) plan_mark_partial_walker((Node *) node->targetlist, NULL);
	(void) plan_mark_partial_walker((Node *) node->qual, NULL);

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

/*
 * Build and plan the delta query of a view; with 'groupQual', restricted to
 * one group (a view over a table recomputing a group, see
 * plan_group_qual).
 */
static PlannedStmt *
plan_delta_query(KappaViewShape *shape, const char *sql, Node *groupQual)
{
	return plan_delta_query_over(shape, shape->query, sql, groupQual);
}

/*
 * The view's query with its table read from changed rows instead (a view
 * over a table without a push path): the fact relation's range table entry
 * becomes the ephemeral named relation KAPPA_CHANGES_ENR, of the table's
 * row type and estimated at 'rows' rows, as a trigger's transition table
 * is in PL/pgSQL.  Vars keep their attribute numbers: dropped columns keep
 * their places.  Allocates in the current memory context.
 */
static Query *
plan_changes_query(KappaViewShape *shape, double rows)
{
	Query	   *query = copyObject(shape->query);
	RangeTblEntry *rte = rt_fetch(shape->factIndex, query->rtable);
	Relation	rel = table_open(rte->relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	int			i;

	rte->rtekind = RTE_NAMEDTUPLESTORE;
	rte->relid = InvalidOid;
	rte->relkind = 0;
	rte->rellockmode = NoLock;
	rte->tablesample = NULL;
	rte->inh = false;
	rte->enrname = pstrdup(KAPPA_CHANGES_ENR);
	rte->enrtuples = rows;
	rte->coltypes = NIL;
	rte->coltypmods = NIL;
	rte->colcollations = NIL;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		rte->coltypes = lappend_oid(rte->coltypes,
									att->attisdropped ? InvalidOid : att->atttypid);
		rte->coltypmods = lappend_int(rte->coltypmods,
									  att->attisdropped ? 0 : att->atttypmod);
		rte->colcollations = lappend_oid(rte->colcollations,
										 att->attisdropped ? InvalidOid : att->attcollation);
	}
	/* the owner's right to read the table was checked at creation */
	rte->requiredPerms = 0;
	rte->checkAsUser = InvalidOid;
	rte->selectedCols = NULL;
	rte->insertedCols = NULL;
	rte->updatedCols = NULL;
	rte->extraUpdatedCols = NULL;
	table_close(rel, AccessShareLock);
	return query;
}

/*
 * Build and plan the delta query of a view over 'query' (the view's query,
 * or its changes query); with 'groupQual', restricted to one group (a view
 * over a table recomputing a group, see plan_group_qual).
 */
static PlannedStmt *
plan_delta_query_over(KappaViewShape *shape, Query *query, const char *sql,
					  Node *groupQual)
{
	Query	   *delta = copyObject(query);
	List	   *tlist = NIL;
	AttrNumber	resno = 0;
	ListCell   *lc;
	PlannedStmt *pstmt;
	List	   *sortClause = NIL;

	if (shape->groupingSets)
	{
		/*
		 * key 0, the grouping set's id, sorted first as in the unique index;
		 * each distinct set once (GROUP BY DISTINCT), as the view stores it
		 */
		TargetEntry *ntle = makeTargetEntry(copyObject(linitial(shape->keyExprs)),
											++resno, "k_0", false);
		SortGroupClause *sgc = makeNode(SortGroupClause);

		foreach(lc, query->targetList)
			ntle->ressortgroupref = Max(ntle->ressortgroupref,
										((TargetEntry *) lfirst(lc))->ressortgroupref);
		ntle->ressortgroupref++;
		sgc->tleSortGroupRef = ntle->ressortgroupref;
		sgc->eqop = Int4EqualOperator;
		sgc->sortop = Int4LessOperator;
		sgc->nulls_first = false;
		sgc->hashable = true;
		sortClause = list_make1(sgc);
		tlist = lappend(tlist, ntle);
		delta->groupDistinct = true;
	}
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
	delta->sortClause = list_concat(sortClause, copyObject(query->groupClause));
	delta->limitCount = NULL;
	delta->limitOffset = NULL;
	delta->limitOption = LIMIT_OPTION_DEFAULT;
	if (groupQual != NULL)
		delta->jointree->quals = make_and_qual(delta->jointree->quals, groupQual);

	pstmt = pg_plan_query(delta, sql, 0, NULL);
	plan_make_partial(pstmt->planTree);
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
	double		saved = KappaScanSetPlannedRows(rows);
	PlannedStmt *volatile pstmt = NULL;

	PG_TRY();
	{
		pstmt = plan_delta_query(shape, sql, NULL);
	}
	PG_FINALLY();
	{
		KappaScanSetPlannedRows(saved);
	}
	PG_END_TRY();
	return pstmt;
}

/*
 * Group key 'key' (of 'sgc') compared with parameter $paramid by the key's
 * equality operator, or, with 'nullSafe', by IS NOT DISTINCT FROM (which
 * finds NULL keys but no index).
 */
static Expr *
plan_key_qual(SortGroupClause *sgc, Node *key, int paramid, bool nullSafe)
{
	Param	   *param = makeNode(Param);
	Expr	   *cmp;

	param->paramkind = PARAM_EXTERN;
	param->paramid = paramid;
	param->paramtype = exprType(key);
	param->paramtypmod = exprTypmod(key);
	param->paramcollid = exprCollation(key);
	param->location = -1;
	cmp = make_opclause(sgc->eqop, BOOLOID, false, (Expr *) copyObject(key),
						(Expr *) param, InvalidOid, exprCollation(key));
	if (nullSafe)
	{
		NodeSetTag(cmp, T_DistinctExpr);
		cmp = makeBoolExpr(NOT_EXPR, list_make1(cmp), -1);
	}
	return cmp;
}

/*
 * The condition that restricts a view over a table to one group: each group
 * key compared with parameter $i (plan_key_qual).
 */
static Node *
plan_group_qual(KappaViewShape *shape, bool nullSafe)
{
	List	   *quals = NIL;
	ListCell   *lc;
	int			i = 0;

	foreach(lc, shape->query->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, shape->query->targetList);

		quals = lappend(quals, plan_key_qual(sgc, (Node *) tle->expr, ++i, nullSafe));
	}
	if (quals == NIL)
		return NULL;
	return (Node *) make_ands_explicit(quals);
}

/*
 * The query that recomputes one group of grouping set 'setId' of a view
 * over a table with grouping sets: the view's query grouped by that set's
 * keys alone, restricted to the group (its keys compared with $2 .. as
 * plan_key_qual does; $1 is the set's id), with the delta query's columns
 * -- the set's id, every key (NULL where the set rolls it up), the partial
 * states.  The empty set's is a global aggregate: one row even over no rows,
 * as plain SQL gives that set's group.
 */
static PlannedStmt *
plan_gset_recompute(KappaViewShape *shape, const char *sql, int32 setId,
					bool nullSafe)
{
	Query	   *query = shape->query;
	Query	   *recompute = copyObject(query);
	int			nkeys = list_length(query->groupClause);
	List	   *tlist = NIL;
	List	   *groupClause = NIL;
	List	   *quals = NIL;
	AttrNumber	resno = 0;
	int			pos = 0;
	ListCell   *lc;
	PlannedStmt *pstmt;

	tlist = lappend(tlist, makeTargetEntry((Expr *) makeConst(INT4OID, -1, InvalidOid,
															  sizeof(int32),
															  Int32GetDatum(setId),
															  false, true),
										   ++resno, "k_0", false));
	foreach(lc, query->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, query->targetList);
		Node	   *key = (Node *) tle->expr;
		TargetEntry *ntle;

		resno++;
		if ((setId & (1 << (nkeys - 1 - pos))) == 0)
		{
			ntle = makeTargetEntry(copyObject(tle->expr), resno,
								   psprintf("k_%d", pos + 1), false);
			ntle->ressortgroupref = tle->ressortgroupref;
			groupClause = lappend(groupClause, copyObject(sgc));
			quals = lappend(quals, plan_key_qual(sgc, key, pos + 2, nullSafe));
		}
		else
			ntle = makeTargetEntry((Expr *) makeNullConst(exprType(key), exprTypmod(key),
														  exprCollation(key)),
								   resno, psprintf("k_%d", pos + 1), false);
		tlist = lappend(tlist, ntle);
		pos++;
	}
	foreach(lc, shape->aggrefs)
	{
		resno++;
		tlist = lappend(tlist, makeTargetEntry(copyObject(lfirst(lc)), resno,
											   psprintf("s_%d", resno), false));
	}
	recompute->targetList = tlist;
	recompute->hasAggs = true;
	recompute->groupingSets = NIL;
	recompute->groupDistinct = false;
	recompute->groupClause = groupClause;
	recompute->havingQual = NULL;
	recompute->sortClause = NIL;
	recompute->limitCount = NULL;
	recompute->limitOffset = NULL;
	recompute->limitOption = LIMIT_OPTION_DEFAULT;
	if (quals != NIL)
		recompute->jointree->quals = make_and_qual(recompute->jointree->quals,
												   (Node *) make_ands_explicit(quals));
	pstmt = pg_plan_query(recompute, sql, 0, NULL);
	plan_make_partial(pstmt->planTree);
	return pstmt;
}

/*
 * A view over a table: check that its changed rows can be grouped in a hash
 * table (view_accum.c), and plan the queries that recompute one group from
 * the table (*eqPlan, *nullPlan) and, for a view without a push path (one
 * with joins), the delta query over changed rows (*changesPlan for many,
 * *smallChangesPlan for a few; NULL otherwise).  In the current memory
 * context, as the owner.
 */
static void
plan_table_view(KappaViewInfo *view, KappaViewShape *shape, const char *sql,
				PlannedStmt **eqPlan, PlannedStmt **nullPlan,
				PlannedStmt **changesPlan, PlannedStmt **smallChangesPlan)
{
	int			i;

	for (i = 0; i < view->nkeys; i++)
	{
		if (!view->keyHashable[i])
			ereport(ERROR,
					(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
					 errmsg("group key %d of a continuous view over a table cannot be hashed", i + 1),
					 errdetail("A continuous view over a table groups changed rows in a hash table."),
					 errhint("Group by an expression of a type with a hash operator class, such as a cast to text.")));
	}
	if (view->groupingSets)
	{
		/* one pair of plans per grouping set; the first stands for all */
		view->gsetRecompute = palloc(sizeof(PlannedStmt *) * view->ngsets);
		view->gsetRecomputeNull = palloc(sizeof(PlannedStmt *) * view->ngsets);
		for (i = 0; i < view->ngsets; i++)
		{
			view->gsetRecompute[i] = plan_gset_recompute(shape, sql, view->gsetIds[i], false);
			view->gsetRecomputeNull[i] = plan_gset_recompute(shape, sql, view->gsetIds[i], true);
		}
		*eqPlan = view->gsetRecompute[0];
		*nullPlan = view->gsetRecomputeNull[0];
	}
	else
	{
		*eqPlan = plan_delta_query(shape, sql, plan_group_qual(shape, false));
		*nullPlan = view->nkeys == 0 ? *eqPlan :
			plan_delta_query(shape, sql, plan_group_qual(shape, true));
	}
	*changesPlan = NULL;
	*smallChangesPlan = NULL;
	if (view->push == NULL)
	{
		/*
		 * Rows leaving such a view mark the groups the delta query puts them
		 * in, which are recomputed: a partial state cannot be subtracted.
		 */
		view->invertible = false;
		*changesPlan = plan_delta_query_over(shape,
											 plan_changes_query(shape, KAPPA_LARGE_BATCH_ROWS),
											 sql, NULL);
		*smallChangesPlan = plan_delta_query_over(shape,
												  plan_changes_query(shape, KAPPA_SMALL_BATCH_ROWS),
												  sql, NULL);
		return;
	}
	view->invertible = true;
	for (i = 0; i < view->naggs; i++)
		view->invertible &= view->aggs[i].invertible;
}

static AttrNumber
plan_mat_attno(Relation mat, const char *name)
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
plan_row_expr(Node *expr)
{
	return ExecInitExpr(expression_planner((Expr *) copyObject(expr)), NULL);
}

/*
 * Prepare an input over the stream row: a plain column is read straight
 * from the row (*attno set, NULL returned), anything else compiled.
 */
static ExprState *
plan_row_input(Node *expr, AttrNumber *attno, AttrNumber *maxAttno)
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
plan_push_info(KappaViewInfo *view, KappaViewShape *shape)
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
		/* the id of a grouping set is no expression over the row */
		if (i == 0 && shape->groupingSets)
		{
			push->keyStates[i] = NULL;
			push->keyAttnos[i] = 0;
		}
		else
			push->keyStates[i] = plan_row_input(lfirst(lc), &push->keyAttnos[i],
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
		if (view->aggs[i].invertible)
		{
			pa->invFcinfo = palloc0(SizeForFunctionCallInfo(pa->numInputs + 1));
			InitFunctionCallInfoData(*pa->invFcinfo, &pa->invtransfn,
									 pa->numInputs + 1,
									 view->aggs[i].inputCollid, NULL, NULL);
		}

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
			pa->inputStates[k] = plan_row_input((Node *) ((TargetEntry *) lfirst(lc2))->expr,
												&pa->inputAttnos[k], &push->maxAttno);
			k++;
		}
		pa->filterState = agg->aggfilter ? plan_row_expr((Node *) agg->aggfilter) : NULL;
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
	view->shape->groupingSets = shape->groupingSets;
	view->groupingSets = shape->groupingSets;
	view->emptyGsetId = -1;
	if (shape->groupingSets)
	{
		int32		emptyId = (int32) ((((int64) 1) << (shape->nkeys - 1)) - 1);

		view->ngsets = list_length(shape->gsetIds);
		view->gsetIds = palloc(sizeof(int32) * view->ngsets);
		i = 0;
		foreach(lc, shape->gsetIds)
		{
			view->gsetIds[i] = lfirst_int(lc);
			if (view->gsetIds[i] == emptyId)
				view->emptyGsetId = emptyId;
			i++;
		}
	}

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
		view->keyAttnos[0] = plan_mat_attno(mat, "k_0");
	for (i = 0; i < view->nkeys; i++)
		view->keyAttnos[i] = plan_mat_attno(mat, psprintf("k_%d",
														  KAPPA_KEY_COLUMN(view->groupingSets, i)));
	view->stateAttnos = palloc(sizeof(AttrNumber) * view->naggs);
	for (i = 0; i < view->naggs; i++)
		view->stateAttnos[i] = plan_mat_attno(mat, psprintf("s_%d", i + 1));
	view->outAttnos = palloc(sizeof(AttrNumber) * Max(list_length(shape->outExprs), 1));
	for (i = 0; i < list_length(shape->outExprs); i++)
		view->outAttnos[i] = plan_mat_attno(mat, psprintf("c_%d", i + 1));
	view->havingAttno = shape->having ? plan_mat_attno(mat, "h") : InvalidAttrNumber;
	view->sortAttnos = palloc(sizeof(AttrNumber) * Max(list_length(shape->sortExprs), 1));
	for (i = 0; i < list_length(shape->sortExprs); i++)
		view->sortAttnos[i] = plan_mat_attno(mat, psprintf("o_%d", i + 1));
	view->updatedAttno = plan_mat_attno(mat, "updated_at");

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
	if (view->groupingSets)
	{
		/* key 0, the grouping set's id: an int4 */
		view->keyEqOps[i] = Int4EqualOperator;
		view->keySortOps[i] = Int4LessOperator;
		view->keyNullsFirst[i] = false;
		view->keyHashable[i] = true;
		i++;
	}
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
	view->push = plan_push_info(view, shape);
	view->factIsTable = shape->factIsTable;
	if (view->factIsTable)
	{
		PlannedStmt *eqPlan;
		PlannedStmt *nullPlan;
		PlannedStmt *changesPlan;
		PlannedStmt *smallChangesPlan;

		MemoryContextSwitchTo(tmpcxt);
		plan_table_view(view, shape, sql, &eqPlan, &nullPlan, &changesPlan,
						&smallChangesPlan);
		MemoryContextSwitchTo(cxt);
		view->recomputePlan = copyObject(eqPlan);
		view->recomputeNullPlan = copyObject(nullPlan);
		if (view->groupingSets)
		{
			PlannedStmt **eqPlans = view->gsetRecompute;
			PlannedStmt **nullPlans = view->gsetRecomputeNull;

			view->gsetRecompute = palloc(sizeof(PlannedStmt *) * view->ngsets);
			view->gsetRecomputeNull = palloc(sizeof(PlannedStmt *) * view->ngsets);
			for (i = 0; i < view->ngsets; i++)
			{
				view->gsetRecompute[i] = copyObject(eqPlans[i]);
				view->gsetRecomputeNull[i] = copyObject(nullPlans[i]);
			}
		}
		view->changesPlan = copyObject(changesPlan);
		view->smallChangesPlan = copyObject(smallChangesPlan);
	}

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
