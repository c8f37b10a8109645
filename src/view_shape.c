/*-------------------------------------------------------------------------
 *
 * view_shape.c
 *	  What a view query may contain, and what it means for incremental
 *	  maintenance: its "shape".
 *
 * A view query is a SELECT over exactly one stream or one ordinary table
 * (a view over a table, maintained from the table's changes:
 * table_capture.c), the first relation of its FROM clause, optionally
 * joined to other tables, with aggregates that have combine functions.  Everything
 * that cannot be maintained from per-batch partial states is refused here
 * with its own SQLSTATE (kappa_errcodes.h), a message naming the construct
 * and a hint with the alternative.
 *
 * KappaBuildViewShape is used both at creation (view_define.c) and whenever
 * a backend loads a view (view_plan.c), from the text of the view's
 * definition, so the two cannot disagree.  GROUPING SETS, ROLLUP and CUBE
 * are expanded into their distinct sets, whose id (GROUPING() of every key)
 * becomes key 0; grouping() in outputs is computed from it
 * (shape_grouping_sets, shape_map_grouping).  The shape's first aggregate is
 * always count(*): it gives the rows applied to each group (column s_1 of
 * the materialization).  See view.h for the storage layout.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_aggregate.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parse_agg.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteManip.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "pg_kappa.h"
#include "kappa_errcodes.h"
#include "util.h"
#include "view.h"

/*
 * The most group keys a view with grouping sets may have: the id of a set
 * is GROUPING() of every key, an int4 (PostgreSQL's own limit for
 * GROUPING() arguments).
 */
#define KAPPA_MAX_GROUPING_KEYS 31

typedef struct CheckContext
{
	ParseState *pstate;			/* for error positions in the query text */
	int			streams;		/* stream references anywhere */
} CheckContext;

typedef struct MapContext
{
	KappaViewShape *shape;
	ParseState *pstate;
} MapContext;

/*
 * Error context of view queries: report positions inside the query text
 * (as an internal query) rather than inside the calling statement.
 */
static void
shape_error_callback(void *arg)
{
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery((const char *) arg);
	}
}

/*
 * KappaParseViewQuery parses and analyzes a view query given as text.  It
 * must be exactly one SELECT.  With 'rewrite', views it reads are expanded
 * (what planning needs); locks are taken on every relation it reads.
 */
Query *
KappaParseViewQuery(const char *sql, bool rewrite)
{
	List	   *raw;
	RawStmt    *rawstmt;
	List	   *queries;
	ErrorContextCallback errcallback;

	errcallback.callback = shape_error_callback;
	errcallback.arg = (void *) sql;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NOT_SELECT),
				 errmsg("a continuous view must be defined by exactly one SELECT statement"),
				 errdetail("The query text contains %d statements.", list_length(raw)),
				 list_length(raw) == 0 ?
				 errhint("Give the SELECT statement that defines the view.") :
				 errhint("Create one continuous view per query.")));
	rawstmt = linitial_node(RawStmt, raw);
	if (!IsA(rawstmt->stmt, SelectStmt) ||
		((SelectStmt *) rawstmt->stmt)->intoClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NOT_SELECT),
				 errmsg("a continuous view must be defined by a SELECT statement"),
				 errhint("Write the query as SELECT ... FROM stream ... GROUP BY ...")));

	PG_TRY();
	{
		if (rewrite)
			queries = pg_analyze_and_rewrite_fixedparams(rawstmt, sql, NULL, 0, NULL);
		else
			queries = list_make1(parse_analyze_fixedparams(rawstmt, sql, NULL, 0, NULL));
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		MemoryContext ecxt = MemoryContextSwitchTo(ErrorContext);

		/* a stream that does not exist (yet): say how to make one */
		edata = CopyErrorData();
		MemoryContextSwitchTo(ecxt);
		if (edata->sqlerrcode != ERRCODE_UNDEFINED_TABLE || edata->hint != NULL)
			PG_RE_THROW();
		FlushErrorState();
		edata->hint = pstrdup("A continuous view reads a stream: create it first with kappa.create_stream(), or check the name and the search_path.");
		ReThrowError(edata);
	}
	PG_END_TRY();
	if (list_length(queries) != 1)
		elog(ERROR, "view query rewrote to %d queries", list_length(queries));
	error_context_stack = errcallback.previous;
	return linitial_node(Query, queries);
}

/* Count references to streams anywhere in a query tree. */
static bool
shape_count_streams_walker(Node *node, CheckContext *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		if (rte->rtekind == RTE_RELATION && KappaIsStream(rte->relid))
			ctx->streams++;
		return false;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, shape_count_streams_walker, ctx,
								 QTW_EXAMINE_RTES_BEFORE);
	return expression_tree_walker(node, shape_count_streams_walker, ctx);
}

/* Is range table entry 'rtindex' on the nullable side of an outer join? */
static bool
shape_rte_is_nullable(Node *jtnode, int rtindex, bool nullable)
{
	if (jtnode == NULL)
		return false;
	if (IsA(jtnode, RangeTblRef))
		return ((RangeTblRef *) jtnode)->rtindex == rtindex && nullable;
	if (IsA(jtnode, FromExpr))
	{
		ListCell   *lc;

		foreach(lc, ((FromExpr *) jtnode)->fromlist)
		{
			if (shape_rte_is_nullable(lfirst(lc), rtindex, nullable))
				return true;
		}
		return false;
	}
	if (IsA(jtnode, JoinExpr))
	{
		JoinExpr   *j = (JoinExpr *) jtnode;
		bool		lnull = nullable || j->jointype == JOIN_RIGHT || j->jointype == JOIN_FULL;
		bool		rnull = nullable || j->jointype == JOIN_LEFT || j->jointype == JOIN_FULL;

		return shape_rte_is_nullable(j->larg, rtindex, lnull) ||
			shape_rte_is_nullable(j->rarg, rtindex, rnull);
	}
	return false;
}

static bool
shape_volatile_func_checker(Oid func_id, void *context)
{
	if (func_volatile(func_id) == PROVOLATILE_VOLATILE)
	{
		*(Oid *) context = func_id;
		return true;
	}
	return false;
}

/* Find a volatile function anywhere in a query tree; sets *funcid. */
static bool
shape_volatile_walker(Node *node, Oid *funcid)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, shape_volatile_func_checker, funcid))
		return true;
	if (IsA(node, NextValueExpr))
	{
		*funcid = F_NEXTVAL;
		return true;
	}
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, shape_volatile_walker, funcid, 0);
	return expression_tree_walker(node, shape_volatile_walker, funcid);
}

static bool
shape_collect_aggrefs_walker(Node *node, List **aggrefs)
{
	if (node == NULL)
		return false;
	if (IsA(node, Aggref))
	{
		ListCell   *lc;

		foreach(lc, *aggrefs)
		{
			if (equal(lfirst(lc), node))
				return false;
		}
		*aggrefs = lappend(*aggrefs, node);
		return false;			/* the parser forbids nested aggregates */
	}
	if (IsA(node, Query))
		return false;
	return expression_tree_walker(node, shape_collect_aggrefs_walker, aggrefs);
}

/* Refuse an aggregate call that cannot be maintained from partial states. */
static void
shape_check_aggref(Aggref *aggref, ParseState *pstate)
{
	HeapTuple	tuple;
	Form_pg_aggregate aggform;
	char	   *name = get_func_name(aggref->aggfnoid);

	if (aggref->agglevelsup != 0)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_OUTER_AGGREGATE),
				 errmsg("outer-level aggregate %s is not supported in a continuous view", name),
				 parser_errposition(pstate, aggref->location)));
	if (AGGKIND_IS_ORDERED_SET(aggref->aggkind))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_ORDERED_SET_AGGREGATE),
				 errmsg("ordered-set aggregate %s is not supported in a continuous view", name),
				 errdetail("Ordered-set aggregates (WITHIN GROUP) need every input row at once."),
				 errhint("Keep a mergeable sketch instead, such as a tdigest (tdigest extension), and compute percentiles from it when reading."),
				 parser_errposition(pstate, aggref->location)));
	if (aggref->aggdistinct != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_DISTINCT_AGGREGATE),
				 errmsg("DISTINCT inside aggregate %s is not supported in a continuous view", name),
				 errdetail("Distinct values cannot be merged from per-batch partial results."),
				 errhint("For distinct counts use a HyperLogLog sketch, e.g. hll_cardinality(hll_add_agg(hll_hash_text(x))) from the hll extension, or GROUP BY the value.")),
				parser_errposition(pstate, aggref->location));
	if (aggref->aggorder != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_ORDERED_AGGREGATE),
				 errmsg("ORDER BY inside aggregate %s is not supported in a continuous view", name),
				 errdetail("Input order cannot be kept across batches."),
				 errhint("Remove the ORDER BY from the aggregate call."),
				 parser_errposition(pstate, aggref->location)));

	tuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggref->aggfnoid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for aggregate %u", aggref->aggfnoid);
	aggform = (Form_pg_aggregate) GETSTRUCT(tuple);
	if (!OidIsValid(aggform->aggcombinefn))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NO_COMBINE_FUNCTION),
				 errmsg("aggregate %s is not supported in a continuous view", name),
				 errdetail("The aggregate has no combine function, so results of separate batches cannot be merged."),
				 errhint("Use an aggregate that has a combine function (see pg_aggregate.aggcombinefn), or keep the raw rows in a retained stream and aggregate them when reading."),
				 parser_errposition(pstate, aggref->location)));
	if (aggform->aggtranstype == INTERNALOID &&
		(!OidIsValid(aggform->aggserialfn) || !OidIsValid(aggform->aggdeserialfn)))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NO_COMBINE_FUNCTION),
				 errmsg("aggregate %s is not supported in a continuous view", name),
				 errdetail("Its transition state has type internal and no serialization functions, so it cannot be stored."),
				 errhint("Use an aggregate with serialization functions (pg_aggregate.aggserialfn)."),
				 parser_errposition(pstate, aggref->location)));
	ReleaseSysCache(tuple);
}

/* Looks for a system column of the fact table of a view over a table. */
typedef struct SystemColumnContext
{
	Index		factIndex;
	Var		   *var;			/* the first one found */
} SystemColumnContext;

static bool
shape_system_column_walker(Node *node, SystemColumnContext *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varlevelsup == 0 && var->varno == ctx->factIndex &&
			var->varattno < 0)
		{
			ctx->var = var;
			return true;
		}
		return false;
	}
	if (IsA(node, Query))
		return false;			/* subqueries are refused anyway */
	return expression_tree_walker(node, shape_system_column_walker, ctx);
}

/*
 * Check the FROM clause of a view over table 'relname' (range table index
 * 'factIndex', the first relation of FROM): the other relations are
 * dimensions, read as of each change, whose own changes do not reach the
 * view.  Refuses the fact table read twice (a self-join, which would need
 * the changes of both sides), subqueries, plain views and WITH queries in
 * FROM, and TABLESAMPLE.
 */
static void
shape_check_table_from(Query *query, Index factIndex, const char *relname)
{
	Oid			factRelid = rt_fetch(factIndex, query->rtable)->relid;
	ListCell   *lc;
	Index		rti = 0;

	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		rti++;
		if (rte->tablesample != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
					 errmsg("TABLESAMPLE is not supported in a continuous view over a table"),
					 errdetail("A sample can differ each time a group is recomputed."),
					 errhint("Remove the TABLESAMPLE clause.")));
		switch (rte->rtekind)
		{
			case RTE_RELATION:
				if (rti != factIndex && rte->relid == factRelid)
					ereport(ERROR,
							(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
							 errmsg("table \"%s\" appears more than once in a continuous view over it", relname),
							 errdetail("A continuous view over a table follows the changes of the first relation of its FROM clause only; a self-join would also need the changes of its other occurrences."),
							 errhint("Aggregate the table once, and join the continuous view to the table when reading it.")));
				break;
			case RTE_JOIN:
			case RTE_FUNCTION:
			case RTE_TABLEFUNC:
			case RTE_VALUES:
				break;
			case RTE_SUBQUERY:
				ereport(ERROR,
						(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
						 errmsg("subqueries and views in FROM are not supported in a continuous view over a table"),
						 errdetail("The view aggregates table \"%s\"; the other relations of its FROM clause must be tables, read as of each change.", relname),
						 errhint("Join the tables the subquery or view reads directly, or apply it when reading the continuous view.")));
				break;
			case RTE_CTE:
				ereport(ERROR,
						(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
						 errmsg("WITH queries are not supported in a continuous view over a table"),
						 errdetail("The view aggregates table \"%s\"; the other relations of its FROM clause must be tables, read as of each change.", relname),
						 errhint("Join the tables the WITH query reads directly, or apply it when reading the continuous view.")));
				break;
			default:
				ereport(ERROR,
						(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
						 errmsg("this kind of FROM item is not supported in a continuous view over a table"),
						 errhint("Join ordinary tables to table \"%s\".", relname)));
		}
	}
}

/*
 * A query that reads no stream aggregates an ordinary table: the first
 * relation of its FROM clause (its "fact" relation), possibly joined to
 * other tables (dimensions, see shape_check_table_from).  Returns its range
 * table index, or refuses what a view over a table cannot maintain: other
 * kinds of relations, subqueries, system columns of the table.
 */
static Index
shape_check_table_fact(Query *query, ParseState *pstate)
{
	Node	   *first;
	RangeTblEntry *rte;
	Form_pg_class classForm;
	HeapTuple	tuple;
	char		relkind;
	char		persistence;
	bool		rls;
	char	   *relname;
	Index		factIndex;
	SystemColumnContext sysctx;

	if (query->jointree == NULL || query->jointree->fromlist == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NO_STREAM),
				 errmsg("the query of a continuous view must read from a stream or a table"),
				 errhint("Name a stream (kappa.create_stream()) or an ordinary table in the FROM clause.")));
	first = linitial(query->jointree->fromlist);
	while (IsA(first, JoinExpr))
		first = ((JoinExpr *) first)->larg;
	rte = IsA(first, RangeTblRef) ?
		rt_fetch(((RangeTblRef *) first)->rtindex, query->rtable) : NULL;
	if (rte == NULL || rte->rtekind != RTE_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NO_STREAM),
				 errmsg("the query of a continuous view must read from a stream or a table"),
				 errdetail("The first item of its FROM clause is a subquery, a view, a function or a join."),
				 errhint("Name a stream or an ordinary table first in the FROM clause; a plain view cannot be maintained incrementally.")));

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(rte->relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", rte->relid);
	classForm = (Form_pg_class) GETSTRUCT(tuple);
	relkind = classForm->relkind;
	persistence = classForm->relpersistence;
	rls = classForm->relrowsecurity;
	ReleaseSysCache(tuple);
	relname = get_rel_name(rte->relid);

	if (relkind == RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_UNSUPPORTED_RELATION),
				 errmsg("a continuous view over partitioned table \"%s\" is not supported", relname),
				 errdetail("Changes made directly to its partitions would not reach the view."),
				 errhint("Create one continuous view per partition and combine them in a plain view, or aggregate an ordinary table.")));
	if (relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_UNSUPPORTED_RELATION),
				 errmsg("\"%s\" is neither a stream nor an ordinary table", relname),
				 errdetail("A continuous view aggregates a stream or an ordinary table, whose changes pg_kappa can capture."),
				 errhint("Create a stream with kappa.create_stream(), or aggregate an ordinary table.")));
	if (persistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_UNSUPPORTED_RELATION),
				 errmsg("a continuous view over temporary table \"%s\" is not supported", relname),
				 errhint("Use a plain view, or aggregate a permanent or unlogged table.")));
	if (rls)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_UNSUPPORTED_RELATION),
				 errmsg("a continuous view over table \"%s\" with row-level security is not supported", relname),
				 errdetail("The view would aggregate every row, including rows its readers may not see."),
				 errhint("Disable row-level security on the table, or use a plain view.")));

	if (has_superclass(rte->relid) || has_subclass(rte->relid))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_UNSUPPORTED_RELATION),
				 errmsg("a continuous view over table \"%s\" in an inheritance hierarchy is not supported", relname),
				 errdetail("Changes made through its parent or to its children would not reach the view."),
				 errhint("Aggregate a table without inheritance.")));

	factIndex = ((RangeTblRef *) first)->rtindex;
	shape_check_table_from(query, factIndex, relname);
	if (query->hasSubLinks)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
				 errmsg("subqueries are not supported in a continuous view over a table"),
				 errdetail("Changes to the relations a subquery reads would not reach the view."),
				 errhint("Express the filter over the table's own columns or as a join to the other table, or apply it when reading the view.")));
	sysctx.factIndex = factIndex;
	sysctx.var = NULL;
	if (query_tree_walker(query, shape_system_column_walker, &sysctx, 0))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_TABLE_VIEW_CONSTRUCT),
				 errmsg("system column %s of table \"%s\" is not supported in a continuous view over a table",
						get_rte_attribute_name(rte, sysctx.var->varattno), relname),
				 errdetail("The changed rows a view over a table takes have no system columns."),
				 errhint("Use the table's own columns."),
				 parser_errposition(pstate, sysctx.var->location)));
	return factIndex;
}

/*
 * Refuse everything that cannot be maintained incrementally; returns the
 * range table index of the stream.
 */
static Index
shape_check_query(Query *query, ParseState *pstate, bool *isTable)
{
	CheckContext ctx = {pstate, 0};
	int			direct = 0;
	Index		streamIndex = 0;
	ListCell   *lc;
	Index		rti = 0;
	Oid			volatileFunc = InvalidOid;

	if (query->commandType != CMD_SELECT || query->utilityStmt != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NOT_SELECT),
				 errmsg("a continuous view must be defined by a SELECT statement")));
	if (query->setOperations != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_SET_OPERATION),
				 errmsg("set operations (UNION, INTERSECT, EXCEPT) are not supported in a continuous view"),
				 errhint("Create one continuous view per branch and combine them in a plain view that reads both.")));

	(void) shape_count_streams_walker((Node *) query, &ctx);
	foreach(lc, query->rtable)
	{
		RangeTblEntry *rte = lfirst(lc);

		rti++;
		if (rte->rtekind == RTE_RELATION && KappaIsStream(rte->relid))
		{
			direct++;
			streamIndex = rti;
		}
	}
	if (ctx.streams > direct)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_SUBQUERY_STREAM),
				 errmsg("a subquery, common table expression or view that reads a stream is not supported in a continuous view"),
				 errdetail("A continuous view reads its stream directly in its FROM clause."),
				 errhint("Move the stream into the main FROM clause and express the subquery's filter in WHERE, or define a continuous view over the stream and query that.")));
	if (direct == 0)
	{
		streamIndex = shape_check_table_fact(query, pstate);
		*isTable = true;
	}
	if (direct > 1)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_MULTIPLE_STREAMS),
				 errmsg("a continuous view can read only one stream"),
				 errdetail("The query reads streams %d times.", direct),
				 errhint("Create one continuous view per stream; join streams upstream before they reach PostgreSQL.")));
	if (*isTable && shape_rte_is_nullable((Node *) query->jointree, streamIndex, false))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_OUTER_JOIN_STREAM),
				 errmsg("the aggregated table on the nullable side of an outer join is not supported in a continuous view"),
				 errdetail("The view aggregates the first relation of its FROM clause, and follows its changes only."),
				 errhint("Join the table with an inner join or as the left side of a LEFT JOIN, with the table first in FROM.")));
	if (shape_rte_is_nullable((Node *) query->jointree, streamIndex, false))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_OUTER_JOIN_STREAM),
				 errmsg("a stream on the nullable side of an outer join is not supported in a continuous view"),
				 errdetail("Rows of the other side without a match would depend on which batch is applied."),
				 errhint("Join the stream with an inner join or as the left side of a LEFT JOIN.")));
	if (query->hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_WINDOW_FUNCTION),
				 errmsg("window functions are not supported in a continuous view"),
				 errdetail("A window function needs all rows of its partition at once."),
				 errhint("Apply the window function when reading: SELECT ..., rank() OVER (...) FROM the continuous view.")));
	if (query->groupingSets != NIL && list_length(query->groupClause) > KAPPA_MAX_GROUPING_KEYS)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_GROUPING_SETS),
				 errmsg("GROUPING SETS, ROLLUP and CUBE over more than %d group keys are not supported in a continuous view",
						KAPPA_MAX_GROUPING_KEYS),
				 errdetail("Each group is stored with the id of its grouping set, one bit per group key (what GROUPING() of every key returns), which takes at most %d keys.",
						   KAPPA_MAX_GROUPING_KEYS),
				 errhint("Group by fewer expressions, or create one continuous view per grouping.")));
	if (query->hasTargetSRFs)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_SET_RETURNING),
				 errmsg("set-returning functions in the select list are not supported in a continuous view"),
				 errhint("Expand the set before inserting into the stream, or join a table that holds it.")));
	if (query->distinctClause != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_SELECT_DISTINCT),
				 errmsg("SELECT DISTINCT is not supported in a continuous view"),
				 errhint("GROUP BY the columns instead, or apply DISTINCT when reading the view.")));
	if (query->rowMarks != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_LOCKING_CLAUSE),
				 errmsg("FOR UPDATE and FOR SHARE are not supported in a continuous view")));
	if (!query->hasAggs && query->groupClause == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NOT_AGGREGATE),
				 errmsg("a continuous view needs an aggregate or a GROUP BY clause"),
				 errdetail("Without aggregation the view would be a copy of every row."),
				 errhint("Keep the rows with kappa.create_stream(..., retain => 'infinity') and query the stream, or feed an ordinary table.")));
	if (shape_volatile_walker((Node *) query, &volatileFunc))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_VOLATILE_FUNCTION),
				 errmsg("volatile function %s is not supported in a continuous view",
						format_procedure(volatileFunc)),
				 errdetail("A volatile function could give a different result each time a batch is applied."),
				 errhint("Compute the value before inserting it into the stream, or use an immutable or stable expression.")));
	query->limitCount = eval_const_expressions(NULL, query->limitCount);
	query->limitOffset = eval_const_expressions(NULL, query->limitOffset);
	if (query->limitOption == LIMIT_OPTION_WITH_TIES ||
		(query->limitCount && !IsA(query->limitCount, Const)) ||
		(query->limitOffset && !IsA(query->limitOffset, Const)))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_NONCONSTANT_LIMIT),
				 errmsg("LIMIT and OFFSET of a continuous view must be constants"),
				 errhint("Apply other limits when reading the view.")));

	foreach(lc, query->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, query->targetList);
		Oid			type = exprType((Node *) tle->expr);

		if (!OidIsValid(sgc->sortop) ||
			!OidIsValid(GetDefaultOpClass(type, BTREE_AM_OID)))
			ereport(ERROR,
					(errcode(ERRCODE_KAPPA_UNORDERED_KEY),
					 errmsg("cannot group by type %s in a continuous view",
							format_type_be(type)),
					 errdetail("Group keys are stored in a unique btree index, which needs a default btree operator class."),
					 errhint("Group by an expression of a sortable type, such as a cast to text."),
					 parser_errposition(pstate, exprLocation((Node *) tle->expr))));
	}

	/* outputs, HAVING and ORDER BY are evaluated per group at merge time */
	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst(lc);

		if (checkExprHasSubLink((Node *) tle->expr))
			ereport(ERROR,
					(errcode(ERRCODE_KAPPA_SUBQUERY_OUTPUT),
					 errmsg("subqueries in the select list or ORDER BY are not supported in a continuous view"),
					 errhint("Join the table in the FROM clause instead, or use the subquery when reading the view."),
					 parser_errposition(pstate, exprLocation((Node *) tle->expr))));
	}
	if (checkExprHasSubLink(query->havingQual))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_SUBQUERY_OUTPUT),
				 errmsg("subqueries in HAVING are not supported in a continuous view"),
				 errhint("Filter when reading the view instead.")));
	return streamIndex;
}

/*
 * GROUPING(args) over the finals tuple: 0 without grouping sets (every key
 * is grouped); with them, a CASE over the set's id (key 0) giving, for each
 * distinct set, a bit per argument that the set rolls up, the first
 * argument the most significant, as PostgreSQL computes it.
 */
static Node *
shape_map_grouping(KappaViewShape *shape, GroupingFunc *gf)
{
	List	   *groupClause = shape->query->groupClause;
	int			nkeys = list_length(groupClause);
	CaseExpr   *result;
	ListCell   *lc;

	if (!shape->groupingSets)
		return (Node *) makeConst(INT4OID, -1, InvalidOid, sizeof(int32),
								  Int32GetDatum(0), false, true);
	result = makeNode(CaseExpr);
	result->casetype = INT4OID;
	result->casecollid = InvalidOid;
	result->arg = NULL;
	result->location = -1;
	foreach(lc, shape->gsetIds)
	{
		int32		id = lfirst_int(lc);
		int32		value = 0;
		CaseWhen   *when = makeNode(CaseWhen);
		ListCell   *lc2;

		foreach(lc2, gf->refs)
		{
			Index		ref = lfirst_int(lc2);
			int			pos = 0;
			ListCell   *lc3;

			foreach(lc3, groupClause)
			{
				if (((SortGroupClause *) lfirst(lc3))->tleSortGroupRef == ref)
					break;
				pos++;
			}
			if (pos == nkeys)
				elog(ERROR, "argument of GROUPING() is not a group key");
			value = (value << 1) | ((id >> (nkeys - 1 - pos)) & 1);
		}
		when->expr = make_opclause(Int4EqualOperator, BOOLOID, false,
								   (Expr *) makeVar(1, 1, INT4OID, -1, InvalidOid, 0),
								   (Expr *) makeConst(INT4OID, -1, InvalidOid, sizeof(int32),
													  Int32GetDatum(id), false, true),
								   InvalidOid, InvalidOid);
		when->result = (Expr *) makeConst(INT4OID, -1, InvalidOid, sizeof(int32),
										  Int32GetDatum(value), false, true);
		when->location = -1;
		result->args = lappend(result->args, when);
	}
	result->defresult = (Expr *) makeConst(INT4OID, -1, InvalidOid, sizeof(int32),
										   Int32GetDatum(0), false, true);
	return (Node *) result;
}

/*
 * A query with GROUPING SETS, ROLLUP or CUBE: the id of each distinct set of
 * its expanded list (expand_grouping_sets, as the planner expands it) and
 * how often each appears, and key 0, the set's id -- GROUPING() of every
 * group key, placed before the keys.
 */
static void
shape_grouping_sets(KappaViewShape *shape, Query *query)
{
	List	   *sets = expand_grouping_sets(query->groupingSets,
											query->groupDistinct, -1);
	GroupingFunc *id = makeNode(GroupingFunc);
	ListCell   *lc;

	if (query->groupClause == NIL)
	{
		/* GROUP BY (): a global aggregate, as plain SQL plans it */
		if (list_length(sets) == 1)
			return;
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_GROUPING_SETS),
				 errmsg("several empty grouping sets without group keys are not supported in a continuous view"),
				 errdetail("The query repeats the one row of a global aggregate %d times.",
						   list_length(sets)),
				 errhint("Use one empty grouping set, or no GROUP BY.")));
	}
	foreach(lc, sets)
	{
		List	   *set = lfirst(lc);
		int32		setId = 0;
		ListCell   *lc2;
		ListCell   *lc3;
		bool		seen = false;

		foreach(lc2, query->groupClause)
		{
			SortGroupClause *sgc = lfirst(lc2);

			setId = (setId << 1) |
				(list_member_int(set, (int) sgc->tleSortGroupRef) ? 0 : 1);
		}
		forboth(lc2, shape->gsetIds, lc3, shape->gsetCopies)
		{
			if (lfirst_int(lc2) == setId)
			{
				lfirst_int(lc3)++;
				seen = true;
				break;
			}
		}
		if (!seen)
		{
			shape->gsetIds = lappend_int(shape->gsetIds, setId);
			shape->gsetCopies = lappend_int(shape->gsetCopies, 1);
		}
	}
	foreach(lc, query->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, query->targetList);

		id->args = lappend(id->args, copyObject(tle->expr));
		id->refs = lappend_int(id->refs, (int) sgc->tleSortGroupRef);
	}
	id->agglevelsup = 0;
	id->location = -1;
	shape->keyExprs = lcons(id, shape->keyExprs);
	shape->nkeys++;
	shape->groupingSets = true;
}

/* Replace group keys and aggregates by Vars of the finals tuple. */
static Node *
shape_map_to_finals_mutator(Node *node, MapContext *ctx)
{
	KappaViewShape *shape = ctx->shape;
	ListCell   *lc;
	int			i;

	if (node == NULL)
		return NULL;
	i = 0;
	foreach(lc, shape->keyExprs)
	{
		Node	   *key = lfirst(lc);

		i++;
		if (equal(node, key))
			return (Node *) makeVar(1, i, exprType(key), exprTypmod(key),
									exprCollation(key), 0);
	}
	if (IsA(node, GroupingFunc))
		return shape_map_grouping(shape, (GroupingFunc *) node);
	if (IsA(node, Aggref))
	{
		i = 0;
		foreach(lc, shape->aggrefs)
		{
			Aggref	   *agg = lfirst(lc);

			i++;
			if (equal(node, agg))
				return (Node *) makeVar(1, shape->nkeys + i, agg->aggtype, -1,
										agg->aggcollid, 0);
		}
		elog(ERROR, "aggregate not found in view shape");
	}
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_UNGROUPED_COLUMN),
				 errmsg("column %s must appear in the GROUP BY clause or be used in an aggregate function in a continuous view",
						get_rte_attribute_name(rt_fetch(var->varno, shape->query->rtable),
											   var->varattno)),
				 errdetail("A continuous view stores only its group keys and aggregates."),
				 errhint("Add the column to GROUP BY."),
				 parser_errposition(ctx->pstate, var->location)));
	}
	return expression_tree_mutator(node, shape_map_to_finals_mutator, ctx);
}

/* A new count(*) aggregate call. */
static Aggref *
shape_count_star(void)
{
	Aggref	   *agg = makeNode(Aggref);

	agg->aggfnoid = F_COUNT_;
	agg->aggtype = INT8OID;
	agg->aggcollid = InvalidOid;
	agg->inputcollid = InvalidOid;
	agg->aggtranstype = InvalidOid;
	agg->aggstar = true;
	agg->aggkind = AGGKIND_NORMAL;
	agg->aggsplit = AGGSPLIT_SIMPLE;
	agg->aggno = -1;
	agg->aggtransno = -1;
	agg->location = -1;
	return agg;
}

/*
 * KappaBuildViewShape checks an analyzed, rewritten view query and derives
 * its shape.  'sql' is the query text, for error positions.
 */
KappaViewShape *
KappaBuildViewShape(Query *query, const char *sql)
{
	KappaViewShape *shape = palloc0(sizeof(KappaViewShape));
	ParseState *pstate = make_parsestate(NULL);
	MapContext	mctx;
	Index		streamIndex;
	ListCell   *lc;
	List	   *found = NIL;

	ErrorContextCallback errcallback;

	errcallback.callback = shape_error_callback;
	errcallback.arg = (void *) sql;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	pstate->p_sourcetext = sql;
	streamIndex = shape_check_query(query, pstate, &shape->factIsTable);

	/*
	 * Columns merged by JOIN ... USING refer to the join; compare keys and
	 * outputs in terms of the tables' own columns, as the parser's check of
	 * ungrouped columns does (GROUP BY t1.f1 groups the f1 of a LEFT JOIN
	 * USING (f1)).
	 */
	foreach(lc, query->rtable)
	{
		if (((RangeTblEntry *) lfirst(lc))->rtekind != RTE_JOIN)
			continue;
		query->targetList = (List *) flatten_join_alias_vars(query, (Node *) query->targetList);
		query->havingQual = flatten_join_alias_vars(query, query->havingQual);
		break;
	}
	shape->query = query;
	shape->streamRelid = rt_fetch(streamIndex, query->rtable)->relid;
	shape->factIndex = streamIndex;

	foreach(lc, query->groupClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, query->targetList);

		shape->keyExprs = lappend(shape->keyExprs, tle->expr);
	}
	shape->nkeys = list_length(shape->keyExprs);
	if (query->groupingSets != NIL)
		shape_grouping_sets(shape, query);

	/* count(*) comes first: it counts the rows applied to each group */
	shape->aggrefs = list_make1(shape_count_star());
	(void) shape_collect_aggrefs_walker((Node *) query->targetList, &found);
	(void) shape_collect_aggrefs_walker(query->havingQual, &found);
	foreach(lc, found)
	{
		Aggref	   *agg = lfirst(lc);

		shape_check_aggref(agg, pstate);
		if (!equal(agg, linitial(shape->aggrefs)))
			shape->aggrefs = lappend(shape->aggrefs, agg);
	}

	mctx.shape = shape;
	mctx.pstate = pstate;
	foreach(lc, query->targetList)
	{
		TargetEntry *tle = lfirst(lc);

		if (tle->resjunk)
			continue;
		shape->outExprs = lappend(shape->outExprs,
								  shape_map_to_finals_mutator((Node *) tle->expr, &mctx));
		shape->outNames = lappend(shape->outNames,
								  pstrdup(tle->resname ? tle->resname : "?column?"));
	}
	if (query->havingQual)
		shape->having = (Expr *) shape_map_to_finals_mutator(query->havingQual, &mctx);
	foreach(lc, query->sortClause)
	{
		SortGroupClause *sgc = lfirst(lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, query->targetList);

		shape->sortExprs = lappend(shape->sortExprs,
								   shape_map_to_finals_mutator((Node *) tle->expr, &mctx));
		shape->sortClauses = lappend(shape->sortClauses, sgc);
	}
	shape->limitCount = query->limitCount;
	shape->limitOffset = query->limitOffset;
	error_context_stack = errcallback.previous;
	return shape;
}
