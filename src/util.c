/*-------------------------------------------------------------------------
 *
 * util.c
 *	  Small helpers shared by the SQL-callable functions: name resolution,
 *	  running generated DDL, and acting as the owner of pg_kappa's schemas.
 *
 * Relation names given to pg_kappa's functions are SQL identifiers, parsed
 * like regclass input: 'clicks', 'app.clicks' and '"Click Stream"' all work,
 * and unquoted names are folded to lower case.
 *
 * Objects in kappa_data (materializations, definitions, retained rows) are
 * created while acting as the owner of that schema and then handed to the
 * calling role, so users need no privileges on kappa_data.  Errors inside
 * such a section need no cleanup: transaction and subtransaction abort
 * restore the user id.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
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
 * KappaExecSql runs one SQL command through SPI and raises an error if it
 * fails.  The caller has already made the text safe (quoted identifiers and
 * type names produced from the catalogs).
 */
void
KappaExecSql(const char *sql)
{
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(sql, false, 0);
	if (rc < 0)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
	SPI_finish();
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
 * KappaDataSchemaOwner returns the role owning kappa_data, as which the
 * objects there are created.
 */
Oid
KappaDataSchemaOwner(void)
{
	Oid			nspid = get_namespace_oid(KAPPA_DATA_SCHEMA, false);
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for namespace %u", nspid);
	owner = ((Form_pg_namespace) GETSTRUCT(tuple))->nspowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * KappaBecomeDataOwner switches to the owner of kappa_data and returns what
 * KappaRestoreUser needs to switch back.
 */
KappaSavedUser
KappaBecomeDataOwner(void)
{
	KappaSavedUser saved;

	GetUserIdAndSecContext(&saved.userid, &saved.secContext);
	SetUserIdAndSecContext(KappaDataSchemaOwner(),
						   saved.secContext | SECURITY_LOCAL_USERID_CHANGE);
	return saved;
}

/* KappaRestoreUser undoes KappaBecomeDataOwner. */
void
KappaRestoreUser(KappaSavedUser saved)
{
	SetUserIdAndSecContext(saved.userid, saved.secContext);
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
