/*-------------------------------------------------------------------------
 *
 * agg_state.c
 *	  Aggregate transition states: merging a batch's partial state into the
 *	  stored one with the aggregate's combine function, and finalizing.
 *
 * Any aggregate with a combine function is supported, through the catalog
 * (pg_aggregate) and never through a list of names.  The delta plan produces
 * partial states exactly as a parallel worker would (AGGSPLIT_INITIAL_SERIAL:
 * transition function, no final function, serialized if the state type is
 * internal).  Here we do what the Gather-side Agg node does: deserialize,
 * combine, and finalize, plus serialize again for storage.
 *
 * Combine, (de)serialize and final functions may insist on being called by an
 * Agg node (AggCheckCallContext) and allocate their result in its aggregate
 * memory context.  KappaMakeAggContext builds a minimal AggState whose
 * aggregate context is the caller's per-group ExprContext, so that every
 * state built while merging one group is freed when that context is reset.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "parser/parse_agg.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "view.h"

/*
 * KappaAggStateType returns the type of the stored state of an aggregate
 * call: its transition type with polymorphism resolved, or bytea for an
 * internal state (stored serialized).
 */
Oid
KappaAggStateType(Aggref *aggref)
{
	HeapTuple	tuple;
	Form_pg_aggregate aggform;
	Oid			transtype;
	Oid			inputTypes[FUNC_MAX_ARGS];
	int			numArgs;

	tuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggref->aggfnoid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for aggregate %u", aggref->aggfnoid);
	aggform = (Form_pg_aggregate) GETSTRUCT(tuple);
	numArgs = get_aggregate_argtypes(aggref, inputTypes);
	transtype = resolve_aggregate_transtype(aggref->aggfnoid,
											aggform->aggtranstype,
											inputTypes, numArgs);
	ReleaseSysCache(tuple);
	return transtype == INTERNALOID ? BYTEAOID : transtype;
}

/*
 * Build the expression a combine function sees as its call (for
 * get_fn_expr_argtype): combinefn(state, state).
 */
static Expr *
agg_combinefn_expr(Oid transtype, Oid collation, Oid combinefn)
{
	Param	   *arg = makeNode(Param);

	arg->paramkind = PARAM_EXEC;
	arg->paramid = -1;
	arg->paramtype = transtype;
	arg->paramtypmod = -1;
	arg->paramcollid = collation;
	arg->location = -1;
	return (Expr *) makeFuncExpr(combinefn, transtype,
								 list_make2(arg, copyObject(arg)),
								 InvalidOid, collation, COERCE_EXPLICIT_CALL);
}

/*
 * Can a row be retracted from this aggregate's (plain) transition state in
 * place?  Only if its moving-aggregate support (CREATE AGGREGATE's MSFUNC,
 * MINVFUNC, MSTYPE, MINITCOND) has an inverse transition function and
 * moves the very state the plain aggregate keeps: same transition
 * function, type and initial value.  PostgreSQL's catalog decides; there is
 * no list of aggregate names.
 */
static bool
agg_has_same_inverse(HeapTuple tuple, Form_pg_aggregate aggform)
{
	Datum		init;
	Datum		minit;
	bool		initNull;
	bool		minitNull;

	if (!OidIsValid(aggform->aggminvtransfn) ||
		aggform->aggmtransfn != aggform->aggtransfn ||
		aggform->aggmtranstype != aggform->aggtranstype)
		return false;
	init = SysCacheGetAttr(AGGFNOID, tuple, Anum_pg_aggregate_agginitval, &initNull);
	minit = SysCacheGetAttr(AGGFNOID, tuple, Anum_pg_aggregate_aggminitval, &minitNull);
	if (initNull || minitNull)
		return initNull == minitNull;
	return strcmp(TextDatumGetCString(init), TextDatumGetCString(minit)) == 0;
}

/*
 * KappaAggMergeInit fills 'merge' for one aggregate call: the function
 * lookups needed to combine and finalize its states.  FmgrInfo's extra
 * memory goes to CurrentMemoryContext, which must live as long as 'merge'.
 * The caller has already refused aggregates without a combine function.
 */
void
KappaAggMergeInit(KappaAggMerge *merge, Aggref *aggref)
{
	HeapTuple	tuple;
	Form_pg_aggregate aggform;
	Oid			inputTypes[FUNC_MAX_ARGS];
	int			numArgs;
	Expr	   *combinefnexpr;
	Expr	   *serialfnexpr;
	Expr	   *deserialfnexpr;
	Expr	   *finalfnexpr;

	memset(merge, 0, sizeof(KappaAggMerge));
	tuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggref->aggfnoid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for aggregate %u", aggref->aggfnoid);
	aggform = (Form_pg_aggregate) GETSTRUCT(tuple);

	numArgs = get_aggregate_argtypes(aggref, inputTypes);
	merge->aggfnoid = aggref->aggfnoid;
	merge->transtype = resolve_aggregate_transtype(aggref->aggfnoid,
												   aggform->aggtranstype,
												   inputTypes, numArgs);
	get_typlenbyval(merge->transtype, &merge->transtypLen, &merge->transtypByVal);
	merge->internalState = (merge->transtype == INTERNALOID);
	merge->inputCollid = aggref->inputcollid;
	merge->resultType = aggref->aggtype;
	get_typlenbyval(merge->resultType, &merge->resultTypLen, &merge->resultTypByVal);

	if (!OidIsValid(aggform->aggcombinefn))
		elog(ERROR, "aggregate %u has no combine function", aggref->aggfnoid);

	combinefnexpr = agg_combinefn_expr(merge->transtype, aggref->inputcollid,
									   aggform->aggcombinefn);
	fmgr_info(aggform->aggcombinefn, &merge->combinefn);
	fmgr_info_set_expr((Node *) combinefnexpr, &merge->combinefn);

	if (merge->internalState)
	{
		if (!OidIsValid(aggform->aggserialfn) || !OidIsValid(aggform->aggdeserialfn))
			elog(ERROR, "aggregate %u has no serialization functions",
				 aggref->aggfnoid);
		build_aggregate_serialfn_expr(aggform->aggserialfn, &serialfnexpr);
		fmgr_info(aggform->aggserialfn, &merge->serialfn);
		fmgr_info_set_expr((Node *) serialfnexpr, &merge->serialfn);
		build_aggregate_deserialfn_expr(aggform->aggdeserialfn, &deserialfnexpr);
		fmgr_info(aggform->aggdeserialfn, &merge->deserialfn);
		fmgr_info_set_expr((Node *) deserialfnexpr, &merge->deserialfn);
	}

	merge->invertible = agg_has_same_inverse(tuple, aggform);

	if (OidIsValid(aggform->aggfinalfn))
	{
		merge->hasFinalfn = true;
		merge->numFinalArgs = aggform->aggfinalextra ? numArgs + 1 : 1;
		build_aggregate_finalfn_expr(inputTypes, merge->numFinalArgs,
									 merge->transtype, aggref->aggtype,
									 aggref->inputcollid, aggform->aggfinalfn,
									 &finalfnexpr);
		fmgr_info(aggform->aggfinalfn, &merge->finalfn);
		fmgr_info_set_expr((Node *) finalfnexpr, &merge->finalfn);
	}
	ReleaseSysCache(tuple);
}

/*
 * KappaMakeAggContext returns an AggState that combine and final functions
 * accept as their calling Agg node; its aggregate memory context is the
 * per-tuple memory of 'econtext'.
 */
AggState *
KappaMakeAggContext(ExprContext *econtext)
{
	AggState   *aggstate = makeNode(AggState);

	aggstate->curaggcontext = econtext;
	aggstate->tmpcontext = econtext;
	aggstate->curperagg = NULL;
	aggstate->curpertrans = NULL;
	return aggstate;
}

/* Call a one- or two-argument aggregate support function in agg context. */
static Datum
agg_call_support(FmgrInfo *flinfo, AggState *aggcontext, Oid collation, int nargs,
				 Datum arg1, bool null1, Datum arg2, bool null2, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, FUNC_MAX_ARGS);
	Datum		result;
	int			i;

	InitFunctionCallInfoData(*fcinfo, flinfo, nargs, collation,
							 (Node *) aggcontext, NULL);
	fcinfo->args[0].value = arg1;
	fcinfo->args[0].isnull = null1;
	if (nargs > 1)
	{
		fcinfo->args[1].value = arg2;
		fcinfo->args[1].isnull = null2;
	}
	for (i = 2; i < nargs; i++)
	{
		fcinfo->args[i].value = (Datum) 0;
		fcinfo->args[i].isnull = true;
	}
	if (flinfo->fn_strict)
	{
		for (i = 0; i < nargs; i++)
		{
			if (fcinfo->args[i].isnull)
			{
				*isnull = true;
				return (Datum) 0;
			}
		}
	}
	result = FunctionCallInvoke(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/*
 * KappaAggStateFromStored turns a stored (or delta) state into the in-memory
 * transition value, allocated in the current memory context: deserialized
 * for internal states, a copy otherwise (functions may modify it in place).
 */
Datum
KappaAggStateFromStored(KappaAggMerge *merge, AggState *aggcontext,
						Datum stored, bool storedNull, bool *isnull)
{
	if (storedNull)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (merge->internalState)
		return agg_call_support(&merge->deserialfn, aggcontext, InvalidOid, 2,
								stored, false, (Datum) 0, false, isnull);
	*isnull = false;
	/* combine functions may modify their first argument in place */
	return datumCopy(stored, merge->transtypByVal, merge->transtypLen);
}

/*
 * KappaAggCombineAndFinalize merges the delta state of one group into its
 * stored state (if 'haveStored') and computes both the state to store and
 * the aggregate's final value.  Stored and delta states are in storage form
 * (serialized bytea for internal states); so is *newState.  All results are
 * allocated in the aggregate context's per-tuple memory, which the caller
 * resets after storing them.
 */
void
KappaAggCombineAndFinalize(KappaAggMerge *merge, AggState *aggcontext,
						   bool haveStored, Datum stored, bool storedNull,
						   Datum delta, bool deltaNull,
						   Datum *newState, bool *newStateNull,
						   Datum *final, bool *finalNull)
{
	Datum		trans;
	bool		transNull;

	if (!haveStored)
	{
		trans = KappaAggStateFromStored(merge, aggcontext, delta, deltaNull, &transNull);
		*newState = delta;
		*newStateNull = deltaNull;
	}
	else
	{
		Datum		a,
					b;
		bool		aNull,
					bNull;

		a = KappaAggStateFromStored(merge, aggcontext, stored, storedNull, &aNull);
		b = KappaAggStateFromStored(merge, aggcontext, delta, deltaNull, &bNull);
		if (merge->combinefn.fn_strict && (aNull || bNull))
		{
			/* as the executor does: a null state takes the other one */
			trans = aNull ? b : a;
			transNull = aNull ? bNull : aNull;
		}
		else
			trans = agg_call_support(&merge->combinefn, aggcontext,
									 merge->inputCollid, 2,
									 a, aNull, b, bNull, &transNull);

		if (transNull)
		{
			*newState = (Datum) 0;
			*newStateNull = true;
		}
		else if (merge->internalState)
			*newState = agg_call_support(&merge->serialfn, aggcontext, InvalidOid, 1,
										 trans, false, (Datum) 0, false,
										 newStateNull);
		else
		{
			*newState = trans;
			*newStateNull = false;
		}
	}

	if (merge->hasFinalfn)
	{
		if (!merge->internalState && !transNull)
		{
			/* a final function may scribble on a pass-by-reference state */
			trans = datumCopy(trans, merge->transtypByVal, merge->transtypLen);
		}
		*final = agg_call_support(&merge->finalfn, aggcontext, merge->inputCollid,
								  merge->numFinalArgs, trans, transNull,
								  (Datum) 0, true, finalNull);
	}
	else
	{
		*final = trans;
		*finalNull = transNull;
	}
}

/*
 * KappaAggCombineInMemory combines the delta state 'delta' (storage form)
 * into an in-memory transition value (*state, *isnull) that lives in the
 * aggregate context's per-tuple memory; with !haveState the delta becomes
 * the value.  Scratch work (deserializing the delta) goes to the current
 * memory context, which the caller resets; like the executor, we copy a
 * pass-by-reference result into the aggregate context when it is not the
 * old value.
 */
void
KappaAggCombineInMemory(KappaAggMerge *merge, AggState *aggcontext,
						bool haveState, Datum *state, bool *isnull,
						Datum delta, bool deltaNull)
{
	MemoryContext statecxt = aggcontext->curaggcontext->ecxt_per_tuple_memory;
	MemoryContext oldcxt;
	Datum		b;
	bool		bNull;
	Datum		result;

	if (!haveState || (*isnull && merge->combinefn.fn_strict))
	{
		/* the delta becomes the value: build it where the value lives */
		oldcxt = MemoryContextSwitchTo(statecxt);
		*state = KappaAggStateFromStored(merge, aggcontext, delta, deltaNull, isnull);
		MemoryContextSwitchTo(oldcxt);
		return;
	}
	if (deltaNull && merge->combinefn.fn_strict)
		return;

	b = KappaAggStateFromStored(merge, aggcontext, delta, deltaNull, &bNull);
	result = agg_call_support(&merge->combinefn, aggcontext, merge->inputCollid, 2,
							  *state, *isnull, b, bNull, isnull);
	if (!*isnull && !merge->transtypByVal &&
		DatumGetPointer(result) != DatumGetPointer(*state))
	{
		oldcxt = MemoryContextSwitchTo(statecxt);
		if (!merge->internalState)
			result = datumCopy(result, false, merge->transtypLen);
		else if (DatumGetPointer(result) == DatumGetPointer(b))
		{
			bool		dummy;
			Datum		ser = agg_call_support(&merge->serialfn, aggcontext, InvalidOid, 1,
											   result, false, (Datum) 0, false, &dummy);

			result = agg_call_support(&merge->deserialfn, aggcontext, InvalidOid, 2,
									  ser, false, (Datum) 0, false, &dummy);
		}
		MemoryContextSwitchTo(oldcxt);
	}
	*state = result;
}

/*
 * KappaAggStoredForm returns the storage form of an in-memory transition
 * value: serialized for internal states, the value itself otherwise.
 */
Datum
KappaAggStoredForm(KappaAggMerge *merge, AggState *aggcontext,
				   Datum state, bool isnull, bool *resultNull)
{
	if (isnull)
	{
		*resultNull = true;
		return (Datum) 0;
	}
	if (merge->internalState)
		return agg_call_support(&merge->serialfn, aggcontext, InvalidOid, 1,
								state, false, (Datum) 0, false, resultNull);
	*resultNull = false;
	return state;
}

/*
 * KappaPushAggInit prepares advancing an aggregate call row by row: its
 * transition function (with the call expression polymorphic functions look
 * at) and its initial value, as nodeAgg.c sets them up.  The caller builds
 * the input and FILTER expressions.
 */
void
KappaPushAggInit(KappaPushAgg *push, KappaAggMerge *merge, Aggref *aggref)
{
	HeapTuple	tuple;
	Form_pg_aggregate aggform;
	Oid			inputTypes[FUNC_MAX_ARGS];
	int			numArgs;
	Expr	   *transfnexpr;
	Datum		textInitVal;
	bool		initValueIsNull;

	tuple = SearchSysCache1(AGGFNOID, ObjectIdGetDatum(aggref->aggfnoid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for aggregate %u", aggref->aggfnoid);
	aggform = (Form_pg_aggregate) GETSTRUCT(tuple);
	numArgs = get_aggregate_argtypes(aggref, inputTypes);
	push->numInputs = list_length(aggref->args);

	build_aggregate_transfn_expr(inputTypes, numArgs, 0, aggref->aggvariadic,
								 merge->transtype, aggref->inputcollid,
								 aggform->aggtransfn, InvalidOid,
								 &transfnexpr, NULL);
	fmgr_info(aggform->aggtransfn, &push->transfn);
	fmgr_info_set_expr((Node *) transfnexpr, &push->transfn);
	if (merge->invertible)
	{
		Expr	   *invtransfnexpr;

		build_aggregate_transfn_expr(inputTypes, numArgs, 0, aggref->aggvariadic,
									 merge->transtype, aggref->inputcollid,
									 aggform->aggtransfn, aggform->aggminvtransfn,
									 &transfnexpr, &invtransfnexpr);
		fmgr_info(aggform->aggminvtransfn, &push->invtransfn);
		fmgr_info_set_expr((Node *) invtransfnexpr, &push->invtransfn);
	}

	textInitVal = SysCacheGetAttr(AGGFNOID, tuple, Anum_pg_aggregate_agginitval,
								  &initValueIsNull);
	push->initValueIsNull = initValueIsNull;
	if (initValueIsNull)
		push->initValue = (Datum) 0;
	else
	{
		Oid			typinput;
		Oid			typioparam;
		char	   *strInitVal = TextDatumGetCString(textInitVal);

		getTypeInputInfo(merge->transtype, &typinput, &typioparam);
		push->initValue = OidInputFunctionCall(typinput, strInitVal, typioparam, -1);
	}
	ReleaseSysCache(tuple);
}
