/*-------------------------------------------------------------------------
 *
 * contracts.c
 *	  Data contracts: named expectations on streams and tables, checked
 *	  once per row on every ingest path, and what happens to a row that
 *	  violates one.
 *
 * An expectation is a boolean expression over a relation's row with an
 * action: 'warn' keeps the row and counts it; 'dead_letter' skips it (SQL
 * writers, with one WARNING per statement; kappa.expectation_errors makes
 * it an error instead) or raises check_violation, which a Kafka source
 * turns into a dead letter; 'fail' raises check_violation for SQL writers
 * and, for a Kafka source, ERRCODE_KAPPA_EXPECTATION_FAILED, which is not a
 * message's fault, so the source stops (kafka_worker.c).  A NULL result
 * passes, as in a CHECK constraint.  See docs/contracts.md.
 *
 * Where rows are checked.  Streams: in KappaBatchAdd (batch.c), which every
 * INSERT, COPY and Kafka row of a stream goes through before any view sees
 * it, and by the stream FDW itself when nothing consumes the rows.  Tables:
 * by the trigger zzz_kappa_expectations (BEFORE INSERT OR UPDATE FOR EACH
 * ROW, named to fire after the table's other BEFORE row triggers), which
 * ExecSimpleRelationInsert/Update, planned INSERTs, COPY and the keyed
 * changes of a Kafka source all fire; a statement trigger
 * zzz_kappa_expectations_summary ends the statement's run.  Both are
 * created by add_expectation and dropped with the table's last
 * expectation.
 *
 * Compiled once per backend.  The catalog keeps each rule deparsed with
 * every name outside pg_catalog qualified; a backend parses the rules of a
 * relation once, as the relation's owner with search_path pinned, plans
 * them and keeps their ExprStates in a cache keyed by relation, which a
 * relcache invalidation of the relation (add_expectation and
 * drop_expectation send one; so does ALTER TABLE) or any change to pg_proc
 * marks stale.  A run (KappaContractBegin .. KappaContractEnd) is one
 * statement's or one Kafka range's use of the cache entry, which it pins.
 *
 * As whom.  Each row is checked as the relation's owner inside a
 * security-restricted operation.  When the rules call only built-in
 * functions (OIDs below FirstNormalObjectId; none of them reads SQL by
 * name, volatile ones are refused) only the user id is switched per row;
 * when they call user-defined code, which could look names up, each row
 * also gets a GUC nesting level with search_path pinned (KappaBecomeUser),
 * which costs about a microsecond.
 *
 * Counting.  A run counts rows checked and violations per expectation in
 * local memory and adds them to the counters in shared memory (stats.c)
 * when it ends: one lock per statement or Kafka range, never per row, and
 * no write to any table.  A run that does not end (its statement or
 * subtransaction failed) counts nothing, so a Kafka range that is retried
 * after a bad message is not counted twice; the row that raises a
 * violation is counted at once, before the error.  Trigger runs follow
 * subtransactions: what a rolled-back subtransaction checked is forgotten.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/skey.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_func.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kappa_errcodes.h"
#include "stats.h"
#include "util.h"

PG_FUNCTION_INFO_V1(kappa_add_expectation);
PG_FUNCTION_INFO_V1(kappa_drop_expectation);
PG_FUNCTION_INFO_V1(kappa_check_expectations);
PG_FUNCTION_INFO_V1(kappa_expectations_summary);

#define CT_ROW_TRIGGER		"zzz_kappa_expectations"
#define CT_SUMMARY_TRIGGER	"zzz_kappa_expectations_summary"

/* What a violation does; ordered by severity. */
typedef enum CtAction
{
	CT_WARN,
	CT_DEAD_LETTER,
	CT_FAIL
} CtAction;

static const char *const ct_action_names[] = {"warn", "dead_letter", "fail"};

/* One expectation, compiled. */
typedef struct CtExpectation
{
	int32		id;				/* kappa.expectation_catalog.id */
	char	   *name;
	char	   *rule;			/* as given */
	CtAction	action;
	ExprState  *check;
} CtExpectation;

/* A relation's expectations as this backend has them loaded. */
typedef struct CtContract
{
	Oid			relid;
	Oid			owner;
	char	   *relname;
	char	   *nspname;
	bool		isStream;
	bool		pinSearchPath;	/* the rules call user-defined code */
	int			nexpect;		/* 0: the relation has none */
	CtExpectation *expect;		/* by name */
	int32	   *ids;			/* expect[i].id, for stats.c */
	bool		valid;			/* false once invalidated */
	int			refcount;		/* runs using it */
	MemoryContext cxt;			/* holds this and its ExprStates */
} CtContract;

typedef struct CtCacheEntry
{
	Oid			relid;			/* hash key */
	CtContract *contract;
} CtCacheEntry;

/* One statement's (or Kafka range's) use of a contract. */
struct KappaContractRun
{
	CtContract *contract;
	MemoryContext cxt;
	ExprContext *econtext;
	uint64		rows;			/* rows checked (and not raised) */
	uint64	   *violating;		/* per expectation */
	uint64	   *skipped;		/* per expectation: rows skipped */
	uint64		skippedRows;
	bool	   *rowViolated;	/* the row being checked */
	TimestampTz lastViolation;
	bool		quiet;			/* a rebuild's replay: counts nothing, the
								 * live run counted these rows */
};

/* An open run of a table's row trigger, ended by the statement trigger. */
typedef struct CtTriggerRun
{
	Oid			relid;
	SubTransactionId subid;		/* where it began */
	KappaContractRun *run;
} CtTriggerRun;

static HTAB *ct_cache = NULL;
static List *ct_retired = NIL;	/* invalidated while in use, in
								 * TopMemoryContext */
static uint64 ct_invalidations = 0;
static List *ct_trigger_runs = NIL; /* in TopTransactionContext */
static bool ct_kafka = false;

static void ct_relation_changed(Datum arg, Oid relid);
static void ct_function_changed(Datum arg, int cacheid, uint32 hashvalue);
static void ct_at_xact_end(XactEvent event, void *arg);
static void ct_at_subxact_end(SubXactEvent event, SubTransactionId mySubid,
							  SubTransactionId parentSubid, void *arg);

/*
 * KappaContractsInit registers the cache's invalidation and transaction
 * callbacks; called once per backend from _PG_init.
 */
void
KappaContractsInit(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(CtCacheEntry);
	ct_cache = hash_create("pg_kappa expectations", 64, &ctl,
						   HASH_ELEM | HASH_BLOBS);
	CacheRegisterRelcacheCallback(ct_relation_changed, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, ct_function_changed, (Datum) 0);
	RegisterXactCallback(ct_at_xact_end, NULL);
	RegisterSubXactCallback(ct_at_subxact_end, NULL);
}

/*
 * KappaContractsForKafka tells this process that it applies Kafka messages:
 * violations of 'dead_letter' expectations raise check_violation (the
 * message becomes a dead letter) and those of 'fail' ones
 * ERRCODE_KAPPA_EXPECTATION_FAILED (the source stops).
 */
void
KappaContractsForKafka(void)
{
	ct_kafka = true;
}

/* ---------------------------------------------------------------- cooking */

/* What ct_cook_error_callback needs. */
typedef struct CtCookContext
{
	const char *name;
	const char *text;			/* the rule, as parsed inside "SELECT (...)" */
} CtCookContext;

#define CT_COOK_PREFIX "SELECT ("

/*
 * Errors while a rule is parsed: a context line naming the expectation,
 * and the error's position shown in the rule, not in the calling statement.
 */
static void
ct_cook_error_callback(void *arg)
{
	CtCookContext *cook = (CtCookContext *) arg;
	int			pos = geterrposition();

	if (pos > (int) strlen(CT_COOK_PREFIX))
	{
		errposition(0);
		internalerrposition(pos - strlen(CT_COOK_PREFIX));
		internalerrquery(cook->text);
	}
	errcontext("expectation \"%s\"", cook->name);
}

/*
 * ct_cook parses 'text' as a boolean expression over the row of 'rel', as a
 * CHECK constraint's expression is parsed (no subqueries, aggregates,
 * window functions, set-returning functions or system columns), with the
 * current user and search_path, and refuses volatile functions.  Returns
 * the expression, not yet planned.
 */
static Node *
ct_cook(Relation rel, const char *text, const char *name)
{
	char	   *sql = psprintf("%s%s)", CT_COOK_PREFIX, text);
	CtCookContext cook;
	List	   *raw;
	RawStmt    *rawstmt;
	SelectStmt *select;
	ResTarget  *target;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;
	ErrorContextCallback errcb;

	cook.name = name;
	cook.text = text;

	errcb.callback = ct_cook_error_callback;
	errcb.arg = (void *) &cook;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	rawstmt = list_length(raw) == 1 ? linitial_node(RawStmt, raw) : NULL;
	select = (rawstmt && IsA(rawstmt->stmt, SelectStmt)) ?
		(SelectStmt *) rawstmt->stmt : NULL;
	if (select == NULL || list_length(select->targetList) != 1 ||
		select->fromClause != NIL || select->whereClause != NULL ||
		select->groupClause != NIL || select->havingClause != NULL ||
		select->windowClause != NIL || select->sortClause != NIL ||
		select->limitCount != NULL || select->limitOffset != NULL ||
		select->lockingClause != NIL || select->withClause != NULL ||
		select->distinctClause != NIL || select->intoClause != NULL ||
		select->valuesLists != NIL || select->op != SETOP_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("the check of an expectation must be one expression"),
				 errdetail("Got: %s", text),
				 errhint("Write a boolean expression over the relation's columns, such as 'amount > 0'.")));
	target = linitial_node(ResTarget, select->targetList);

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = sql;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										   NULL, false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);
	expr = transformExpr(pstate, target->val, EXPR_KIND_CHECK_CONSTRAINT);
	expr = coerce_to_boolean(pstate, expr, "an expectation");
	assign_expr_collations(pstate, expr);
	free_parsestate(pstate);

	if (contain_volatile_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_VOLATILE_FUNCTION),
				 errmsg("an expectation cannot call volatile functions"),
				 errdetail("An expectation must give the same answer whenever the same row is checked again (a Kafka batch can be retried)."),
				 errhint("Mark the function STABLE or IMMUTABLE if it is.")));

	error_context_stack = errcb.previous;
	return expr;
}

/* check_functions_in_node callback: a function that is not built in */
static bool
ct_user_function(Oid funcid, void *context)
{
	return funcid >= FirstNormalObjectId;
}

/*
 * ct_calls_user_code tells whether an expression calls code that is not
 * built in: a user-defined function, operator, type I/O function or domain
 * (whose constraints may call anything).
 */
static bool
ct_calls_user_code(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, ct_user_function, NULL))
		return true;
	if (IsA(node, CoerceToDomain) &&
		((CoerceToDomain *) node)->resulttype >= FirstNormalObjectId)
		return true;
	return expression_tree_walker(node, ct_calls_user_code, context);
}

/*
 * ct_deparse returns 'expr' (over the row of 'rel') as text with every name
 * outside pg_catalog qualified: deparsed with search_path pinned.
 */
static char *
ct_deparse(Relation rel, Node *expr)
{
	int			level = NewGUCNestLevel();
	char	   *text;

	(void) set_config_option("search_path", KAPPA_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	text = deparse_expression(expr,
							  deparse_context_for(RelationGetRelationName(rel),
												  RelationGetRelid(rel)),
							  false, false);

	AtEOXact_GUC(true, level);
	return text;
}

/* ---------------------------------------------------------------- the cache */

/* A catalog row, read by ct_read_catalog. */
typedef struct CtRow
{
	int32		id;
	char	   *name;
	char	   *rule;
	char	   *definition;
	CtAction	action;
} CtRow;

static CtAction
ct_parse_action(const char *name)
{
	for (int i = 0; i < lengthof(ct_action_names); i++)
		if (strcmp(name, ct_action_names[i]) == 0)
			return (CtAction) i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid on_violation \"%s\"", name),
			 errhint("on_violation is one of 'warn', 'dead_letter' or 'fail'.")));
	return CT_WARN;				/* keep compiler quiet */
}

static int
ct_row_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(((CtRow *) lfirst(a))->name, ((CtRow *) lfirst(b))->name);
}

/*
 * ct_read_catalog returns the catalog rows of 'relid' (of CtRow *, sorted
 * by name), as committed now; NIL if pg_kappa's catalog has no
 * expectations table (an extension not yet updated to 0.3).
 */
static List *
ct_read_catalog(Oid relid)
{
	Oid			nspid = get_namespace_oid(KAPPA_SCHEMA, true);
	Relation	rel;
	Snapshot	snapshot;
	ScanKeyData skey;
	TableScanDesc scan;
	TupleTableSlot *slot;
	List	   *rows = NIL;
	AttrNumber	a_id,
				a_name,
				a_rule,
				a_def,
				a_action;

	if (!OidIsValid(nspid) ||
		!OidIsValid(get_relname_relid("expectation_catalog", nspid)))
		return NIL;
	rel = KappaCatalogTable("expectation_catalog");
	a_id = KappaCatalogAttnum(rel, "id");
	a_name = KappaCatalogAttnum(rel, "name");
	a_rule = KappaCatalogAttnum(rel, "rule");
	a_def = KappaCatalogAttnum(rel, "definition");
	a_action = KappaCatalogAttnum(rel, "on_violation");
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&skey, KappaCatalogAttnum(rel, "relation"), BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	scan = table_beginscan(rel, snapshot, 1, &skey);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		CtRow	   *row = palloc(sizeof(CtRow));
		bool		isnull;

		row->id = DatumGetInt32(slot_getattr(slot, a_id, &isnull));
		row->name = TextDatumGetCString(slot_getattr(slot, a_name, &isnull));
		row->rule = TextDatumGetCString(slot_getattr(slot, a_rule, &isnull));
		row->definition = TextDatumGetCString(slot_getattr(slot, a_def, &isnull));
		row->action = ct_parse_action(TextDatumGetCString(slot_getattr(slot, a_action,
																	   &isnull)));
		rows = lappend(rows, row);
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	list_sort(rows, ct_row_cmp);
	return rows;
}

/*
 * ct_load builds the contract of 'relid' from the catalog: each rule parsed
 * and planned as the relation's owner with search_path pinned.
 */
static CtContract *
ct_load(Oid relid)
{
	List	   *rows = ct_read_catalog(relid);
	MemoryContext cxt;
	MemoryContext old;
	CtContract *c;
	Relation	rel;
	KappaSavedUser saved;
	int			i = 0;
	ListCell   *lc;

	cxt = AllocSetContextCreate(TopMemoryContext, "pg_kappa contract",
								ALLOCSET_SMALL_SIZES);
	c = MemoryContextAllocZero(cxt, sizeof(CtContract));
	c->cxt = cxt;
	c->relid = relid;
	c->valid = true;
	if (rows == NIL)
		return c;

	rel = relation_open(relid, AccessShareLock);
	old = MemoryContextSwitchTo(cxt);
	c->owner = rel->rd_rel->relowner;
	c->relname = pstrdup(RelationGetRelationName(rel));
	c->nspname = get_namespace_name(RelationGetNamespace(rel));
	c->isStream = rel->rd_rel->relkind == RELKIND_FOREIGN_TABLE;
	c->nexpect = list_length(rows);
	c->expect = palloc0(sizeof(CtExpectation) * c->nexpect);
	c->ids = palloc0(sizeof(int32) * c->nexpect);
	MemoryContextSwitchTo(old);

	PG_TRY();
	{
		KappaBecomeUser(c->owner, &saved);
		foreach(lc, rows)
		{
			CtRow	   *row = lfirst(lc);
			CtExpectation *e = &c->expect[i];
			Node	   *expr = ct_cook(rel, row->definition, row->name);
			Expr	   *planned = expression_planner((Expr *) expr);

			if (ct_calls_user_code((Node *) planned, NULL))
				c->pinSearchPath = true;
			old = MemoryContextSwitchTo(cxt);
			e->id = row->id;
			e->name = pstrdup(row->name);
			e->rule = pstrdup(row->rule);
			e->action = row->action;
			e->check = ExecInitExpr(copyObject(planned), NULL);
			c->ids[i] = row->id;
			MemoryContextSwitchTo(old);
			i++;
		}
		KappaRestoreUser(&saved);
	}
	PG_CATCH();
	{
		/* say, a column a rule uses was renamed: the error says which rule */
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	relation_close(rel, NoLock);
	return c;
}

/* Free a contract nobody uses. */
static void
ct_free(CtContract *c)
{
	MemoryContextDelete(c->cxt);
}

/*
 * ct_get returns the contract of 'relid', loading it if this backend has
 * none that is valid.  The caller holds a lock on the relation.
 */
static CtContract *
ct_get(Oid relid)
{
	CtCacheEntry *entry;
	bool		found;
	uint64		invalidations;
	CtContract *c;

	entry = hash_search(ct_cache, &relid, HASH_FIND, NULL);
	if (entry != NULL && entry->contract->valid)
		return entry->contract;
	if (entry != NULL)
	{
		CtContract *old = entry->contract;

		(void) hash_search(ct_cache, &relid, HASH_REMOVE, NULL);
		if (old->refcount == 0)
			ct_free(old);
		else
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

			ct_retired = lappend(ct_retired, old);
			MemoryContextSwitchTo(oldcxt);
		}
	}
	invalidations = ct_invalidations;
	c = ct_load(relid);
	/* an invalidation that arrived while loading: use it once, then reload */
	if (invalidations != ct_invalidations)
		c->valid = false;
	entry = hash_search(ct_cache, &relid, HASH_ENTER, &found);
	entry->contract = c;
	return c;
}

/* Let go of a contract a run used. */
static void
ct_release(CtContract *c)
{
	c->refcount--;
	if (c->refcount == 0 && list_member_ptr(ct_retired, c))
	{
		ct_retired = list_delete_ptr(ct_retired, c);
		ct_free(c);
	}
}

/* A relation changed (InvalidOid: all of them). */
static void
ct_relation_changed(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	CtCacheEntry *entry;

	ct_invalidations++;
	if (ct_cache == NULL)
		return;
	if (OidIsValid(relid))
	{
		entry = hash_search(ct_cache, &relid, HASH_FIND, NULL);
		if (entry != NULL)
			entry->contract->valid = false;
		return;
	}
	hash_seq_init(&status, ct_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		entry->contract->valid = false;
}

/* A function changed: the rules may call it. */
static void
ct_function_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	ct_relation_changed(arg, InvalidOid);
}

/* ---------------------------------------------------------------- runs */

/*
 * KappaContractBegin starts checking rows of 'relid' for one statement or
 * Kafka range, with memory under 'parent'; returns NULL when the relation
 * has no expectations.  The caller holds a lock on the relation.
 */
KappaContractRun *
KappaContractBegin(Oid relid, MemoryContext parent)
{
	CtContract *c = ct_get(relid);
	KappaContractRun *run;
	MemoryContext cxt;
	MemoryContext old;

	if (c->nexpect == 0)
		return NULL;
	cxt = AllocSetContextCreate(parent, "pg_kappa expectations run",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	run = palloc0(sizeof(KappaContractRun));
	run->cxt = cxt;
	run->contract = c;
	run->econtext = CreateStandaloneExprContext();
	run->violating = palloc0(sizeof(uint64) * c->nexpect);
	run->skipped = palloc0(sizeof(uint64) * c->nexpect);
	run->rowViolated = palloc0(sizeof(bool) * c->nexpect);
	MemoryContextSwitchTo(old);
	c->refcount++;
	return run;
}

/*
 * ct_raise counts the row that violated expectations and raises the error
 * of the first violated expectation whose action is 'action'.
 */
static void
ct_raise(KappaContractRun *run, CtAction action, TimestampTz now)
{
	CtContract *c = run->contract;
	uint64	   *violated = palloc0(sizeof(uint64) * c->nexpect);
	CtExpectation *e = NULL;
	bool		stops = (action == CT_FAIL && ct_kafka);

	for (int i = 0; i < c->nexpect; i++)
	{
		violated[i] = run->rowViolated[i] ? 1 : 0;
		if (e == NULL && run->rowViolated[i] && c->expect[i].action == action)
			e = &c->expect[i];
	}
	Assert(e != NULL);
	if (!run->quiet)
		KappaStatsCountExpectations(c->nexpect, c->ids, 1, violated, now);
	ereport(ERROR,
			(errcode(stops ? ERRCODE_KAPPA_EXPECTATION_FAILED : ERRCODE_CHECK_VIOLATION),
			 errmsg("row violates expectation \"%s\" of %s \"%s\"",
					e->name, c->isStream ? "stream" : "table", c->relname),
			 errdetail("The row does not satisfy %s (on_violation '%s').",
					   e->rule, ct_action_names[action]),
			 stops ? errhint("The source stops here. To let it go on, drop the expectation or add it again with on_violation 'dead_letter' or 'warn'.") : 0,
			 err_generic_string(PG_DIAG_SCHEMA_NAME, c->nspname),
			 err_generic_string(PG_DIAG_TABLE_NAME, c->relname),
			 err_generic_string(PG_DIAG_CONSTRAINT_NAME, e->name)));
}

/*
 * KappaContractCheck checks the row in 'slot' against every expectation of
 * the run's relation, as the relation's owner.  Returns true to keep the
 * row, false to skip it (a 'dead_letter' expectation, SQL writers); raises
 * check_violation (or, for a Kafka source's 'fail', the error that stops
 * it) otherwise.
 */
bool
KappaContractCheck(KappaContractRun *run, TupleTableSlot *slot)
{
	CtContract *c = run->contract;
	ExprContext *econtext = run->econtext;
	KappaSavedUser saved;
	Oid			saveUserId = InvalidOid;
	int			saveSecContext = 0;
	int			nviolated = 0;
	CtAction	worst = CT_WARN;
	TimestampTz now;

	econtext->ecxt_scantuple = slot;
	if (c->pinSearchPath)
		KappaBecomeUser(c->owner, &saved);
	else
	{
		GetUserIdAndSecContext(&saveUserId, &saveSecContext);
		SetUserIdAndSecContext(c->owner, saveSecContext |
							   SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
	}
	for (int i = 0; i < c->nexpect; i++)
	{
		bool		isnull;
		Datum		ok = ExecEvalExprSwitchContext(c->expect[i].check, econtext,
												   &isnull);

		run->rowViolated[i] = (!isnull && !DatumGetBool(ok));
		if (run->rowViolated[i])
		{
			nviolated++;
			if (c->expect[i].action > worst)
				worst = c->expect[i].action;
		}
	}
	if (c->pinSearchPath)
		KappaRestoreUser(&saved);
	else
		SetUserIdAndSecContext(saveUserId, saveSecContext);
	ResetExprContext(econtext);

	if (nviolated == 0)
	{
		run->rows++;
		return true;
	}
	now = GetCurrentTimestamp();
	if (worst == CT_FAIL ||
		(worst == CT_DEAD_LETTER && (ct_kafka || kappa_expectation_errors)))
		ct_raise(run, worst, now);

	run->rows++;
	run->lastViolation = now;
	for (int i = 0; i < c->nexpect; i++)
	{
		if (!run->rowViolated[i])
			continue;
		run->violating[i]++;
		if (worst == CT_DEAD_LETTER && c->expect[i].action == CT_DEAD_LETTER)
			run->skipped[i]++;
	}
	if (worst == CT_DEAD_LETTER)
	{
		run->skippedRows++;
		return false;
	}
	return true;
}

/*
 * KappaContractQuiet makes a run check rows as usual but count nothing: a
 * rebuild replays messages whose checks the live run already counted.
 */
void
KappaContractQuiet(KappaContractRun *run)
{
	run->quiet = true;
}

/* Free a run: with isCommit false, without counting it (it failed). */
static void
ct_run_free(KappaContractRun *run, bool isCommit)
{
	FreeExprContext(run->econtext, isCommit);
	ct_release(run->contract);
	MemoryContextDelete(run->cxt);
}

/*
 * KappaContractEnd ends a run: its counts go to the shared counters, and if
 * it skipped rows, one WARNING says how many and for which expectations.
 */
void
KappaContractEnd(KappaContractRun *run)
{
	CtContract *c = run->contract;

	if (run->quiet)
	{
		ct_run_free(run, true);
		return;
	}
	KappaStatsCountExpectations(c->nexpect, c->ids, run->rows, run->violating,
								run->lastViolation);
	if (run->skippedRows > 0)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		for (int i = 0; i < c->nexpect; i++)
		{
			if (run->skipped[i] == 0)
				continue;
			appendStringInfo(&buf, "%s\"%s\" (%s): " UINT64_FORMAT,
							 buf.len > 0 ? ", " : "", c->expect[i].name,
							 c->expect[i].rule, run->skipped[i]);
		}
		ereport(WARNING,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg_plural("skipped " UINT64_FORMAT " row of %s \"%s\" that violates expectations",
							   "skipped " UINT64_FORMAT " rows of %s \"%s\" that violate expectations",
							   run->skippedRows, run->skippedRows,
							   c->isStream ? "stream" : "table", c->relname),
				 errdetail("Rows skipped per expectation: %s.", buf.data),
				 errhint("kappa.expectations counts the violations; set kappa.expectation_errors to on to get an error instead.")));
	}
	ct_run_free(run, true);
}

/* ---------------------------------------------------------------- tables */

/*
 * ct_trigger_run returns the open run of 'relid' begun in the current
 * subtransaction, beginning one if there is none; NULL when the table has
 * no expectations.
 */
static KappaContractRun *
ct_trigger_run(Oid relid, bool create)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	ListCell   *lc;
	CtTriggerRun *tr;
	KappaContractRun *run;
	MemoryContext old;

	foreach(lc, ct_trigger_runs)
	{
		tr = lfirst(lc);
		if (tr->relid == relid && tr->subid == subid)
			return tr->run;
	}
	if (!create)
		return NULL;
	run = KappaContractBegin(relid, TopTransactionContext);
	if (run == NULL)
		return NULL;
	old = MemoryContextSwitchTo(TopTransactionContext);
	tr = palloc(sizeof(CtTriggerRun));
	tr->relid = relid;
	tr->subid = subid;
	tr->run = run;
	ct_trigger_runs = lappend(ct_trigger_runs, tr);
	MemoryContextSwitchTo(old);
	return run;
}

/*
 * kappa.check_expectations() is the BEFORE INSERT OR UPDATE row trigger
 * zzz_kappa_expectations: the new row is checked; NULL skips it.
 */
Datum
kappa_check_expectations(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	KappaContractRun *run;
	bool		update;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		  TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kappa.check_expectations() must be a BEFORE INSERT OR UPDATE row trigger")));
	update = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event);
	run = ct_trigger_run(RelationGetRelid(trigdata->tg_relation), true);
	if (run != NULL &&
		!KappaContractCheck(run, update ? trigdata->tg_newslot : trigdata->tg_trigslot))
		return PointerGetDatum(NULL);
	return PointerGetDatum(update ? trigdata->tg_newtuple : trigdata->tg_trigtuple);
}

/*
 * kappa.expectations_summary() is the AFTER INSERT OR UPDATE statement
 * trigger zzz_kappa_expectations_summary: it ends the statement's run.  Not
 * in a Kafka source's worker, which never skips a row: there the run ends
 * with the subtransaction of its range (ct_at_subxact_end), so that a
 * range that is tried again after a bad message is counted once.
 */
Datum
kappa_expectations_summary(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			relid;
	SubTransactionId subid = GetCurrentSubTransactionId();
	ListCell   *lc;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kappa.expectations_summary() must be an AFTER statement trigger")));
	if (ct_kafka)
		return PointerGetDatum(NULL);
	relid = RelationGetRelid(trigdata->tg_relation);
	foreach(lc, ct_trigger_runs)
	{
		CtTriggerRun *tr = lfirst(lc);

		if (tr->relid == relid && tr->subid == subid)
		{
			KappaContractRun *run = tr->run;

			ct_trigger_runs = foreach_delete_current(ct_trigger_runs, lc);
			KappaContractEnd(run);
			break;
		}
	}
	return PointerGetDatum(NULL);
}

/*
 * KappaIsExpectationTrigger tells whether 'trigger' is one of those
 * add_expectation creates (kafka_target.c lets the summary trigger, which
 * a Kafka source needs not fire, pass).
 */
bool
KappaIsExpectationTrigger(const Trigger *trigger)
{
	return (strcmp(trigger->tgname, CT_SUMMARY_TRIGGER) == 0 ||
			strcmp(trigger->tgname, CT_ROW_TRIGGER) == 0) &&
		get_func_namespace(trigger->tgfoid) == get_namespace_oid(KAPPA_SCHEMA, true);
}

/* Runs begun in a subtransaction that ends. */
static void
ct_at_subxact_end(SubXactEvent event, SubTransactionId mySubid,
				  SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	foreach(lc, ct_trigger_runs)
	{
		CtTriggerRun *tr = lfirst(lc);

		if (tr->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			tr->subid = parentSubid;
		else
		{
			ct_run_free(tr->run, false);
			ct_trigger_runs = foreach_delete_current(ct_trigger_runs, lc);
		}
	}
}

/*
 * At commit, runs no statement trigger ended (a Kafka source's writes into
 * a table fire none) are counted; at the end of any transaction nothing is
 * in use any more.
 */
static void
ct_at_xact_end(XactEvent event, void *arg)
{
	HASH_SEQ_STATUS status;
	CtCacheEntry *entry;
	ListCell   *lc;

	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE)
	{
		while (ct_trigger_runs != NIL)
		{
			CtTriggerRun *tr = linitial(ct_trigger_runs);

			ct_trigger_runs = list_delete_first(ct_trigger_runs);
			KappaContractEnd(tr->run);
		}
		return;
	}
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	/* in TopTransactionContext, gone with it */
	ct_trigger_runs = NIL;
	if (ct_cache != NULL)
	{
		hash_seq_init(&status, ct_cache);
		while ((entry = hash_seq_search(&status)) != NULL)
			entry->contract->refcount = 0;
	}
	foreach(lc, ct_retired)
		ct_free(lfirst(lc));
	list_free(ct_retired);
	ct_retired = NIL;
}

/* ---------------------------------------------------------------- SQL */

/*
 * ct_open_relation opens the relation of add/drop_expectation, locked
 * against concurrent writers (as CREATE TRIGGER locks it), and checks that
 * it is a stream or an ordinary table the caller owns.
 */
static Relation
ct_open_relation(Oid relid)
{
	Relation	rel = relation_open(relid, ShareRowExclusiveLock);
	Oid			nspid = RelationGetNamespace(rel);
	char	   *nspname = get_namespace_name(nspid);

	if (!(rel->rd_rel->relkind == RELKIND_RELATION || KappaIsStream(relid)) ||
		strcmp(nspname, KAPPA_SCHEMA) == 0 || strcmp(nspname, KAPPA_DATA_SCHEMA) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a stream or an ordinary table",
						RelationGetRelationName(rel)),
				 errdetail("Expectations check the rows written into a stream or an ordinary table of your own."),
				 errhint("For a partitioned table, add the expectation to its partitions.")));
	if (!pg_class_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER,
					   get_relkind_objtype(rel->rd_rel->relkind),
					   RelationGetRelationName(rel));
	return rel;
}

/* The relation's name, qualified and quoted, for generated SQL. */
static char *
ct_qualified_name(Relation rel)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
									  RelationGetRelationName(rel));
}

/*
 * kappa.add_expectation(relation, name, check, on_violation) adds a named
 * expectation to a stream or table the caller owns.  'check' is parsed as
 * a CHECK constraint's expression is, with the caller's search_path; the
 * catalog keeps it as given and, deparsed with names qualified, as what
 * backends parse again.  A table gets the triggers that check it.
 */
Datum
kappa_add_expectation(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *check = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *action = text_to_cstring(PG_GETARG_TEXT_PP(3));
	Relation	rel;
	Node	   *expr;
	char	   *definition;
	bool		isTable;
	Oid			argtypes[5] = {REGCLASSOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];
	KappaSavedUser saved;

	rel = ct_open_relation(relid);
	isTable = rel->rd_rel->relkind == RELKIND_RELATION;
	if (name[0] == '\0' || strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid expectation name \"%s\"", name),
				 errdetail("The name of an expectation has 1 to %d bytes.", NAMEDATALEN - 1)));
	(void) ct_parse_action(action);
	if (check[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the check of expectation \"%s\" is empty", name),
				 errhint("Write a boolean expression over the relation's columns, such as 'amount > 0'.")));

	SPI_connect();
	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(name);
	KappaExecCatalogSql("SELECT 1 FROM kappa.expectation_catalog "
						"WHERE relation OPERATOR(pg_catalog.=) $1 "
						"AND name OPERATOR(pg_catalog.=) $2",
						2, argtypes, values, NULL);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("expectation \"%s\" of \"%s\" already exists",
						name, RelationGetRelationName(rel)),
				 errhint("Drop it first with kappa.drop_expectation().")));

	/* as a CHECK constraint: the caller's search_path, then names qualified */
	expr = ct_cook(rel, check, name);
	definition = ct_deparse(rel, expr);

	/* what backends will run: parsed again as the owner, search_path pinned */
	KappaBecomeUser(rel->rd_rel->relowner, &saved);
	(void) ExecInitExpr(expression_planner((Expr *) ct_cook(rel, definition, name)), NULL);
	KappaRestoreUser(&saved);

	values[2] = CStringGetTextDatum(check);
	values[3] = CStringGetTextDatum(definition);
	values[4] = CStringGetTextDatum(action);
	KappaExecCatalogSql("INSERT INTO kappa.expectation_catalog "
						"(relation, name, rule, definition, on_violation) "
						"VALUES ($1, $2, $3, $4, $5)",
						5, argtypes, values, NULL);
	if (isTable)
	{
		char	   *qname = ct_qualified_name(rel);

		KappaExecSql(psprintf("CREATE OR REPLACE TRIGGER " CT_ROW_TRIGGER
							  " BEFORE INSERT OR UPDATE ON %s FOR EACH ROW"
							  " EXECUTE FUNCTION kappa.check_expectations()", qname));
		KappaExecSql(psprintf("CREATE OR REPLACE TRIGGER " CT_SUMMARY_TRIGGER
							  " AFTER INSERT OR UPDATE ON %s FOR EACH STATEMENT"
							  " EXECUTE FUNCTION kappa.expectations_summary()", qname));
	}
	SPI_finish();
	CacheInvalidateRelcache(rel);
	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * kappa.drop_expectation(relation, name) drops an expectation of a stream
 * or table the caller owns; a table's triggers go with its last one.
 */
Datum
kappa_drop_expectation(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel;
	Oid			argtypes[2] = {REGCLASSOID, TEXTOID};
	Datum		values[2];
	bool		isnull;
	int32		id;

	rel = ct_open_relation(relid);
	SPI_connect();
	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetTextDatum(name);
	KappaExecCatalogSql("DELETE FROM kappa.expectation_catalog "
						"WHERE relation OPERATOR(pg_catalog.=) $1 "
						"AND name OPERATOR(pg_catalog.=) $2 RETURNING id",
						2, argtypes, values, NULL);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("expectation \"%s\" of \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errhint("kappa.expectations lists the expectations.")));
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									 1, &isnull));
	if (rel->rd_rel->relkind == RELKIND_RELATION)
	{
		KappaExecCatalogSql("SELECT 1 FROM kappa.expectation_catalog "
							"WHERE relation OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL);
		if (SPI_processed == 0)
		{
			char	   *qname = ct_qualified_name(rel);

			KappaExecSql(psprintf("DROP TRIGGER IF EXISTS " CT_SUMMARY_TRIGGER " ON %s", qname));
			KappaExecSql(psprintf("DROP TRIGGER IF EXISTS " CT_ROW_TRIGGER " ON %s", qname));
		}
	}
	SPI_finish();
	KappaStatsForgetExpectation(id);
	CacheInvalidateRelcache(rel);
	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * KappaExpectationStops tells whether relation 'relid' has, as committed
 * now, an expectation 'name' whose action is 'fail': a Kafka source that
 * it stopped stays stopped while it does.
 */
bool
KappaExpectationStops(Oid relid, const char *name)
{
	List	   *rows = ct_read_catalog(relid);
	ListCell   *lc;

	foreach(lc, rows)
	{
		CtRow	   *row = lfirst(lc);

		if (strcmp(row->name, name) == 0)
			return row->action == CT_FAIL;
	}
	return false;
}
