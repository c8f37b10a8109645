/*-------------------------------------------------------------------------
 *
 * util.h
 *	  Helpers shared by pg_kappa's modules (util.c): name resolution, running
 *	  generated SQL, acting as another role, writing pg_kappa's catalog and
 *	  the transactions of background workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_UTIL_H
#define KAPPA_UTIL_H

#include "executor/spi.h"
#include "nodes/primnodes.h"

/*
 * What KappaBecomeUser saved, for KappaRestoreUser.  Lives on the caller's
 * stack; nothing of a role switch is kept in static variables.
 */
typedef struct KappaSavedUser
{
	Oid			userid;
	int			secContext;
	int			gucNestLevel;
} KappaSavedUser;

/* The search_path of every internal statement and of all user code we run. */
#define KAPPA_SAFE_SEARCH_PATH	"pg_catalog, pg_temp"

extern RangeVar *KappaMakeRangeVar(const char *name);
extern void KappaExecSql(const char *sql);
extern void KappaBecomeUser(Oid role, KappaSavedUser *saved);
extern void KappaBecomeExtensionOwner(KappaSavedUser *saved);
extern void KappaRestoreUser(KappaSavedUser *saved);
extern char *KappaDataRelName(const char *base, const char *suffix);
extern Oid	KappaRelationOwner(Oid relid);

/* pg_kappa's catalog, written as the extension's owner (SPI connected) */
extern void KappaExecCatalogSql(const char *sql, int nargs, Oid *argtypes,
								Datum *values, const char *nulls);
extern SPIPlanPtr KappaPrepareCatalogSql(const char *sql, int nargs,
										 Oid *argtypes);
extern uint64 KappaExecCatalogPlan(SPIPlanPtr plan, Datum *values,
								   const char *nulls, int expected_rc);

/* What KappaBeginTransaction found of pg_kappa in the current database. */
typedef enum KappaExtensionState
{
	KAPPA_EXTENSION_UNCHECKED,	/* not looked for */
	KAPPA_EXTENSION_MISSING,	/* not installed */
	KAPPA_EXTENSION_OUTDATED,	/* older than the library: ALTER EXTENSION
								 * pg_kappa UPDATE is pending */
	KAPPA_EXTENSION_CURRENT
} KappaExtensionState;

/* the transactions of background workers */
extern KappaExtensionState KappaBeginTransaction(bool check_extension);
extern void KappaCommitTransaction(void);

#endif							/* KAPPA_UTIL_H */
