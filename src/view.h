/*-------------------------------------------------------------------------
 *
 * view.h
 *	  Continuous views: the shape of a view query, the per-backend state used
 *	  to apply batches to a view, and the externs of the view machinery
 *	  (layers 5 and 6 of pg_kappa.h).
 *
 * A continuous view is stored as three relations:
 *
 *	 - the definition ("def"): a plain view in kappa_data holding the user's
 *	   query, so that PostgreSQL tracks its dependencies, renames and dumps;
 *	 - the materialization ("mat"): a heap table in kappa_data with one row
 *	   per group: key columns k_1..k_n (unique index, NULLS NOT DISTINCT;
 *	   with grouping sets, k_0 first, the set's id: see KappaViewShape),
 *	   aggregate transition states s_1..s_m, the output columns c_1..c_p
 *	   computed from the finalized states, h (HAVING) and o_1..o_q (ORDER BY
 *	   keys) when the query has them, and updated_at;
 *	 - the user-facing view, in the user's schema: SELECT c_1 AS ..., ... FROM
 *	   mat [WHERE h] [ORDER BY o_1, ...] [LIMIT ...].
 *
 * The first aggregate (s_1) is always count(*): it gives the rows applied
 * to each group (kappa.view_stats).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_VIEW_H
#define KAPPA_VIEW_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "tcop/dest.h"

#include "pg_kappa.h"

/*
 * What a view query means for incremental maintenance, derived from the
 * analyzed and rewritten query.  Expressions in outExprs, having and
 * sortExprs refer to a "finals" tuple: Var(1, i) is the i-th group key for
 * i <= nkeys, then the finalized value of each aggregate in 'aggrefs'.
 */
typedef struct KappaViewShape
{
	Query	   *query;			/* analyzed and rewritten view query */
	Oid			streamRelid;	/* the relation aggregated: a stream, or an
								 * ordinary table (factIsTable) */
	bool		factIsTable;
	Index		factIndex;		/* its range table index */
	int			nkeys;
	List	   *keyExprs;		/* GROUP BY expressions, groupClause order */
	List	   *aggrefs;		/* distinct Aggrefs; the first is count(*) */
	List	   *outExprs;		/* non-junk target expressions, mapped */
	List	   *outNames;		/* their column names (char *) */
	Expr	   *having;			/* mapped HAVING, or NULL */
	List	   *sortExprs;		/* mapped ORDER BY expressions */
	List	   *sortClauses;	/* SortGroupClause of each ORDER BY item */
	Node	   *limitCount;		/* Const or NULL */
	Node	   *limitOffset;	/* Const or NULL */

	/*
	 * GROUPING SETS, ROLLUP, CUBE: key 0 (column k_0) is the grouping set's
	 * id, GROUPING() of every other key (a bit set for each key the set rolls
	 * up), so a rolled-up NULL never meets a real NULL key; keys 1..n are the
	 * GROUP BY expressions, NULL where the set rolls them up.  Every row goes
	 * into one group of each distinct set.
	 */
	bool		groupingSets;
	List	   *gsetIds;		/* int: id of each distinct set, in order */
	List	   *gsetCopies;		/* int: how often each appears in the expanded
								 * list (plain SQL repeats its groups) */
} KappaViewShape;

/*
 * The name of group key column i (0-based in keyExprs) of a materialization:
 * k_1 .. k_n, or with grouping sets k_0 (the set's id), k_1 .. k_n.
 */
#define KAPPA_KEY_COLUMN(groupingSets, i) ((groupingSets) ? (i) : (i) + 1)

/* How to merge, finalize and store one aggregate's transition state. */
typedef struct KappaAggMerge
{
	Oid			aggfnoid;
	Oid			transtype;
	int16		transtypLen;
	bool		transtypByVal;
	bool		internalState;	/* stored serialized, as bytea */
	Oid			inputCollid;
	FmgrInfo	combinefn;
	FmgrInfo	serialfn;		/* internal states only */
	FmgrInfo	deserialfn;		/* internal states only */
	FmgrInfo	finalfn;
	bool		hasFinalfn;
	int			numFinalArgs;
	Oid			resultType;
	int16		resultTypLen;
	bool		resultTypByVal;

	/*
	 * Retraction in place: the aggregate's moving-aggregate support has an
	 * inverse transition function over the same transition as the plain one
	 * (pg_aggregate.aggminvtransfn with aggmtransfn = aggtransfn,
	 * aggmtranstype = aggtranstype and the same initial value).
	 */
	bool		invertible;
} KappaAggMerge;

/*
 * How one aggregate advances its transition state row by row, for views
 * whose rows can be pushed straight into their accumulator (view_accum.c):
 * the aggregate's transition function, its initial value, and its inputs
 * and FILTER evaluated over a stream row.
 */
typedef struct KappaPushAgg
{
	FmgrInfo	transfn;
	FunctionCallInfo fcinfo;	/* for calling transfn, set up once */
	int			shareWith;		/* index of an earlier aggregate with the same
								 * transition (state shared), or -1 */
	int			numInputs;
	ExprState **inputStates;	/* NULL where the input is a plain column */
	AttrNumber *inputAttnos;	/* that column, or 0 */
	ExprState  *filterState;	/* NULL without FILTER */
	Datum		initValue;
	bool		initValueIsNull;
	/* views over tables, invertible aggregates: retracting a row */
	FmgrInfo	invtransfn;
	FunctionCallInfo invFcinfo; /* for calling invtransfn, set up once */
} KappaPushAgg;

/*
 * A view over the stream alone (no joins, no subqueries) needs no delta
 * query: each row is filtered, its group key computed and its aggregates
 * advanced as it arrives.  Expressions are over the stream row (Var 1, n).
 */
typedef struct KappaPushInfo
{
	ExprState  *qual;			/* WHERE, or NULL */
	ExprState **keyStates;		/* NULL where the key is a plain column */
	AttrNumber *keyAttnos;		/* that column, or 0 */
	AttrNumber	maxAttno;		/* columns to deform for plain columns */
	KappaPushAgg *aggs;			/* one per aggregate in shape->aggrefs */
	ExprContext *econtext;		/* per-row memory */
} KappaPushInfo;

/* Per-backend state of one continuous view, cached per stream. */
struct KappaViewInfo
{
	Oid			viewRelid;		/* user-facing view */
	Oid			matRelid;
	Oid			defRelid;
	Oid			indexRelid;		/* unique index on the keys of mat */
	Oid			ownerId;		/* deltas run with the owner's rights */
	bool		building;		/* a new version being rebuilt from Kafka
								 * (view_rebuild.c): live batches feed it
								 * after the live version */
	MemoryContext cxt;			/* everything below lives here */
	KappaViewShape *shape;
	char	   *sql;			/* the definition, for error context */
	PlannedStmt *deltaPlan;		/* batch -> (keys, partial states) sorted,
								 * planned for large batches */
	PlannedStmt *smallDeltaPlan;	/* the same, planned for a few rows */
	List	   *relationOids;	/* relations the plan depends on */
	int			nkeys;
	int			naggs;
	KappaAggMerge *aggs;
	bool		globalView;		/* no GROUP BY: one row, dummy key k_0 */
	/* attribute numbers in mat */
	int			matNatts;
	AttrNumber *keyAttnos;
	AttrNumber *stateAttnos;
	AttrNumber *outAttnos;
	AttrNumber	havingAttno;
	AttrNumber *sortAttnos;
	AttrNumber	updatedAttno;
	RegProcedure *keyEqProcs;	/* btree equality of each key, for probes */
	Oid		   *keyCollations;
	/* grouping operators of each key, for accumulating (view_accum.c) */
	Oid		   *keyEqOps;
	Oid		   *keySortOps;
	bool	   *keyNullsFirst;
	bool	   *keyHashable;
	KappaPushInfo *push;		/* NULL if rows must go through the delta */
	/* views over an ordinary table (view_merge.c, retraction) */
	bool		factIsTable;
	bool		invertible;		/* every aggregate retracts in place */
	PlannedStmt *recomputePlan; /* one group's states from the table, keys as
								 * parameters $1..$n compared with = */
	PlannedStmt *recomputeNullPlan; /* the same with IS NOT DISTINCT FROM, for
									 * groups with a NULL key */
	PlannedStmt *changesPlan;	/* views without a push path (joins): the
								 * delta query over changed rows, the table
								 * read from the tuplestore KAPPA_CHANGES_ENR
								 * of the query environment */
	PlannedStmt *smallChangesPlan;	/* the same, planned for a few rows */
	/* grouping sets (see KappaViewShape): key 0 is the set's id */
	bool		groupingSets;
	int			ngsets;			/* distinct sets */
	int32	   *gsetIds;		/* id of each */
	int32		emptyGsetId;	/* id of the empty set (), whose one group
								 * always exists, or -1 */
	PlannedStmt **gsetRecompute;	/* views over tables: recomputePlan and */
	PlannedStmt **gsetRecomputeNull;	/* recomputeNullPlan of each set */
	/* evaluation of outputs from the finals tuple */
	TupleDesc	finalsDesc;
	ExprState **outStates;
	ExprState  *havingState;
	ExprState **sortStates;
	AggState   *aggContext;		/* stands in for the Agg node when calling
								 * combine/final functions */
	ExprContext *econtext;		/* per-group memory, reset after each group */
};

/*
 * A delta query runs its plan for small batches (view_plan.c plans one) for
 * batches of at most this many rows, its plan for large batches otherwise.
 */
#define KAPPA_SMALL_BATCH_LIMIT 1000

/*
 * The name under which a view over a table without a push path (a join)
 * finds the changed rows of its table: an ephemeral named relation of the
 * query environment its changes plan runs in (view_apply.c).  No user query
 * runs in that environment, so the name cannot clash.
 */
#define KAPPA_CHANGES_ENR "pg_kappa changed rows"

/* in view_plan.c */
extern KappaViewInfo *KappaViewInfoLoad(Oid viewRelid, Oid matRelid,
										Oid defRelid, MemoryContext parent);
extern void KappaViewInfoFree(KappaViewInfo *view);
extern void KappaViewLockRelations(KappaViewInfo *view);

typedef struct KappaViewAccum KappaViewAccum;

/* in view_merge.c */
extern DestReceiver *KappaMergeReceiver(KappaViewInfo *view);
extern DestReceiver *KappaMergeChangesReceiver(KappaViewInfo *view,
											   KappaViewAccum *changes);
extern void KappaMergeEmpty(KappaViewInfo *view);

/* in view_accum.c */

extern KappaViewAccum *KappaAccumCreate(KappaViewInfo *view, MemoryContext parent);
extern DestReceiver *KappaAccumReceiver(KappaViewAccum *acc);
extern DestReceiver *KappaAccumRetractReceiver(KappaViewAccum *acc);
extern Size KappaAccumMemory(KappaViewAccum *acc);
extern int64 KappaAccumGroups(KappaViewAccum *acc);
extern void KappaAccumFlush(KappaViewAccum *acc, DestReceiver *merge);
extern void KappaAccumPushRow(KappaViewAccum *acc, TupleTableSlot *row);
extern void KappaAccumRetractRow(KappaViewAccum *acc, TupleTableSlot *row);
extern bool KappaAccumCurrentGroup(KappaViewAccum *acc, bool *hasAdded);
extern bool KappaAccumRetractInto(KappaViewAccum *acc, AggState *aggcontext,
								  Datum *states, bool *nulls);

/* in view_define.c */
extern void KappaDefineUserView(KappaViewShape *shape, const char *qualifiedName,
								Oid matRelid, bool replace);
extern void KappaCheckViewReadPermissions(Query *query, Oid role);
extern char *KappaDeparseQualified(Query *query);
extern int64 KappaDefineVersion(const char *name, KappaViewShape *shape,
								const char *deftext, Oid owner,
								Oid *defRelid, Oid *matRelid);

/* in view_rebuild.c */
extern PGDLLEXPORT void KappaRebuildWorkerMain(Datum main_arg);
extern PGDLLEXPORT void KappaReplayWorkerMain(Datum main_arg);

/* in view_shape.c */
extern KappaViewShape *KappaBuildViewShape(Query *query, const char *sql);
extern Query *KappaParseViewQuery(const char *sql, bool rewrite);

/* in agg_state.c */
extern void KappaAggMergeInit(KappaAggMerge *merge, Aggref *aggref);
extern void KappaPushAggInit(KappaPushAgg *push, KappaAggMerge *merge, Aggref *aggref);
extern Oid	KappaAggStateType(Aggref *aggref);
extern AggState *KappaMakeAggContext(ExprContext *econtext);
extern void KappaAggCombineAndFinalize(KappaAggMerge *merge, AggState *aggcontext,
									   bool haveStored, Datum stored, bool storedNull,
									   Datum delta, bool deltaNull,
									   Datum *newState, bool *newStateNull,
									   Datum *final, bool *finalNull);

extern void KappaAggCombineInMemory(KappaAggMerge *merge, AggState *aggcontext,
									bool haveState, Datum *state, bool *isnull,
									Datum delta, bool deltaNull);
extern Datum KappaAggStoredForm(KappaAggMerge *merge, AggState *aggcontext,
								Datum state, bool isnull, bool *resultNull);
extern Datum KappaAggStateFromStored(KappaAggMerge *merge, AggState *aggcontext,
									 Datum stored, bool storedNull, bool *isnull);

#endif							/* KAPPA_VIEW_H */
