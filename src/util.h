/*-------------------------------------------------------------------------
 *
 * util.h
 *	  Helpers shared by pg_kappa's SQL-callable functions (util.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_UTIL_H
#define KAPPA_UTIL_H

#include "nodes/primnodes.h"

typedef struct KappaSavedUser
{
	Oid			userid;
	int			secContext;
} KappaSavedUser;

extern RangeVar *KappaMakeRangeVar(const char *name);
extern void KappaExecSql(const char *sql);
extern Oid	KappaDataSchemaOwner(void);
extern KappaSavedUser KappaBecomeDataOwner(void);
extern void KappaRestoreUser(KappaSavedUser saved);
extern char *KappaDataRelName(const char *base, const char *suffix);

#endif							/* KAPPA_UTIL_H */
