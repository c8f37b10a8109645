/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small helpers shared by pg_kappa's modules: name resolution, running
 *	  generated SQL, acting as another role, writing pg_kappa's catalog and
 *	  the transactions of background workers.
 *
 * Relation names given to pg_kappa's functions are SQL identifiers, parsed
 * like regclass input: 'clicks', 'app.clicks' and '"Click Stream"' all work,
 * and unquoted names are folded to lower case.
 *
 * Acting as another role.  Everything pg_kappa runs on behalf of someone
 * else goes through KappaBecomeUser: the code of a continuous view (its
 * expressions, aggregate support functions, the operators of its keys) runs
 * as the view's owner; triggers, defaults and constraints of a Kafka
 * source's target run as the target's owner; expiry of retained rows runs
 * as the owner of the rows' table; and pg_kappa's own catalog statements
 * run as the extension's owner.  Each switch is a security-restricted
 * operation (as REFRESH MATERIALIZED VIEW is) with its own GUC nesting
 * level, so that nothing the code sets survives it, and search_path pinned
 * to "pg_catalog, pg_temp", so that no object planted in a schema on the
 * caller's search_path can be picked up by name.  Errors between a switch
 * and its KappaRestoreUser need no cleanup: (sub)transaction abort restores
 * the user and the GUC nesting level.  See docs/security.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "pg_kappa.h"
#include "util.h"

/*
 * KappaMakeRangeVar parses a possibly qualified, possibly quoted relation
 * name given as text.
 */
RangeVar *
KappaMakeRangeVar(const char *name)
{
	List	   *names;

	names = stringToQualifiedNameList(name);
	return makeRangeVarFromNameList(names);
}

/*
 * KappaExecSql runs one generated SQL command through SPI, with search_path
 * pinned to pg_catalog, pg_temp for its duration, and raises an error if it
 * fails.  The caller has made the text safe: identifiers quoted, every name
 * outside pg_catalog qualified.
 */
void
KappaExecSql(const char *sql)
{
	int			rc;
	int			level;

	level = NewGUCNestLevel();
	(void) set_config_option("search_path", KAPPA_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(sql, false, 0);
	if (rc < 0)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	SPI_finish();
	AtEOXact_GUC(false, level);
}

/*
 * KappaExecUtility runs a utility statement built as a parse tree, as if it
 * had been typed, so that event triggers and permission checks apply.
 */
void
KappaExecUtility(Node *stmt, const char *sourceText)
{
	PlannedStmt *wrapper = makeNode(PlannedStmt);

	wrapper->commandType = CMD_UTILITY;
	wrapper->canSetTag = false;
	wrapper->utilityStmt = stmt;
	wrapper->stmt_location = -1;
	wrapper->stmt_len = 0;

	ProcessUtility(wrapper, sourceText, false, PROCESS_UTILITY_SUBCOMMAND,
				   NULL, NULL, None_Receiver, NULL);
	CommandCounterIncrement();
}

/*
 * The role that owns pg_kappa's schemas and catalog tables (the role that
 * ran CREATE EXTENSION).  pg_kappa writes its catalog and creates the
 * objects in kappa_data as this role.
 */
static Oid
ut_extension_owner(void)
{
	Oid			nspid = get_namespace_oid(KAPPA_SCHEMA, true);
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(nspid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_kappa is not installed in this database"),
				 errhint("Run CREATE EXTENSION pg_kappa.")));
	tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for namespace %u", nspid);
	owner = ((Form_pg_namespace) GETSTRUCT(tuple))->nspowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* KappaRelationOwner returns the owner of relation 'relid'. */
Oid
KappaRelationOwner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * KappaBecomeUser makes 'role' the current user inside a security-restricted
 * operation with a GUC nesting level of its own and search_path pinned to
 * pg_catalog, pg_temp (see the file header), saving what KappaRestoreUser
 * needs in *saved.  Switches nest: each KappaBecomeUser is undone by one
 * KappaRestoreUser, innermost first.
 */
void
KappaBecomeUser(Oid role, KappaSavedUser *saved)
{
	GetUserIdAndSecContext(&saved->userid, &saved->secContext);
	SetUserIdAndSecContext(role, saved->secContext |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	saved->gucNestLevel = NewGUCNestLevel();
	(void) set_config_option("search_path", KAPPA_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

/*
 * KappaBecomeExtensionOwner is KappaBecomeUser for the extension's owner:
 * how pg_kappa writes its own catalog and creates objects in kappa_data.
 */
void
KappaBecomeExtensionOwner(KappaSavedUser *saved)
{
	KappaBecomeUser(ut_extension_owner(), saved);
}

/*
 * KappaRestoreUser undoes a KappaBecomeUser: every setting made since is
 * discarded, and the previous user and security context come back.
 */
void
KappaRestoreUser(KappaSavedUser *saved)
{
	AtEOXact_GUC(false, saved->gucNestLevel);
	SetUserIdAndSecContext(saved->userid, saved->secContext);
}

/*
 * KappaDataRelName builds the name of an object in kappa_data from a user's
 * object name and a suffix, clipped to fit NAMEDATALEN without splitting a
 * multibyte character.
 */
char *
KappaDataRelName(const char *base, const char *suffix)
{
	int			room = NAMEDATALEN - 1 - strlen(suffix);
	int			len = strlen(base);

	if (len > room)
		len = pg_mbcliplen(base, len, room);
	return psprintf("%.*s%s", len, base, suffix);
}

/*
 * KappaExecCatalogSql runs one statement on pg_kappa's catalog as the
 * extension's owner (see the file header); SPI must be connected.  The
 * result is in SPI_processed and SPI_tuptable.  Raises an error if the
 * statement fails.  Like the other catalog helpers below, it returns in the
 * caller's memory context (SPI itself returns in its procedure context,
 * which SPI_finish frees).
 */
void
KappaExecCatalogSql(const char *sql, int nargs, Oid *argtypes, Datum *values,
					const char *nulls)
{
	MemoryContext callercxt = CurrentMemoryContext;
	KappaSavedUser saved;
	int			rc;

	KappaBecomeExtensionOwner(&saved);
	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0);
	KappaRestoreUser(&saved);
	MemoryContextSwitchTo(callercxt);
	if (rc < 0)
		elog(ERROR, "pg_kappa catalog statement failed: %s", SPI_result_code_string(rc));
}

/*
 * KappaPrepareCatalogSql prepares a statement on pg_kappa's catalog as the
 * extension's owner and keeps the plan (SPI_keepplan) for
 * KappaExecCatalogPlan; SPI must be connected.
 */
SPIPlanPtr
KappaPrepareCatalogSql(const char *sql, int nargs, Oid *argtypes)
{
	MemoryContext callercxt = CurrentMemoryContext;
	KappaSavedUser saved;
	SPIPlanPtr	plan;

	KappaBecomeExtensionOwner(&saved);
	plan = SPI_prepare(sql, nargs, argtypes);
	KappaRestoreUser(&saved);
	MemoryContextSwitchTo(callercxt);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	MemoryContextSwitchTo(callercxt);
	return plan;
}

/*
 * KappaExecCatalogPlan runs a plan of KappaPrepareCatalogSql as the
 * extension's owner and returns SPI_processed; raises an error unless SPI
 * answers expected_rc.
 */
uint64
KappaExecCatalogPlan(SPIPlanPtr plan, Datum *values, const char *nulls,
					 int expected_rc)
{
	MemoryContext callercxt = CurrentMemoryContext;
	KappaSavedUser saved;
	int			rc;

	KappaBecomeExtensionOwner(&saved);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	KappaRestoreUser(&saved);
	MemoryContextSwitchTo(callercxt);
	if (rc != expected_rc)
		elog(ERROR, "pg_kappa catalog statement failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * ut_extension_is_current tells whether the SQL objects of pg_kappa
 * installed in this database are the version this library is built for
 * (after the library is upgraded and before ALTER EXTENSION pg_kappa
 * UPDATE, they are not).
 */
static bool
ut_extension_is_current(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		current = false;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("pg_kappa"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		version = heap_getattr(tuple, Anum_pg_extension_extversion,
										   RelationGetDescr(rel), &isnull);

		current = !isnull &&
			strcmp(TextDatumGetCString(version), KAPPA_EXTENSION_VERSION) == 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return current;
}

/*
 * KappaBeginTransaction starts a transaction in a background worker (the
 * launcher, a scanner, a source worker), with a statement start time and an
 * active snapshot.  With check_extension it also looks up pg_kappa in the
 * connected database: missing, older than this library, or current;
 * without, it answers KAPPA_EXTENSION_UNCHECKED.  KappaCommitTransaction
 * ends the transaction; an error in between is cleaned up by its abort.
 */
KappaExtensionState
KappaBeginTransaction(bool check_extension)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!check_extension)
		return KAPPA_EXTENSION_UNCHECKED;
	if (!OidIsValid(get_extension_oid("pg_kappa", true)))
		return KAPPA_EXTENSION_MISSING;
	return ut_extension_is_current() ? KAPPA_EXTENSION_CURRENT : KAPPA_EXTENSION_OUTDATED;
}

/*
 * KappaCommitTransaction commits a transaction of KappaBeginTransaction.
 */
void
KappaCommitTransaction(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
}
