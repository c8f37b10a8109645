/*-------------------------------------------------------------------------
 *
 * util.h
 *	  Helpers shared by pg_kappa's modules (util.c): name resolution, running
 *	  generated SQL, and acting as another role.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_UTIL_H
#define KAPPA_UTIL_H

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
extern Oid	KappaExtensionOwner(void);
extern void KappaBecomeUser(Oid role, KappaSavedUser *saved);
extern void KappaBecomeExtensionOwner(KappaSavedUser *saved);
extern void KappaRestoreUser(KappaSavedUser *saved);
extern char *KappaDataRelName(const char *base, const char *suffix);

#endif							/* KAPPA_UTIL_H */
