/*-------------------------------------------------------------------------
 *
 * protect.c
 *	  Keeping the storage of continuous views in pg_kappa's hands.
 *
 * A materialization (kappa_data.<view>_mat_<id>) must hold exactly what the
 * engine merged into it, or the view stops agreeing with its query.  The
 * engine writes it with the table AM directly, which fires no triggers; so
 * a statement trigger on every materialization (kappa_engine_only, created
 * with it) refuses INSERT, UPDATE, DELETE, TRUNCATE, COPY and MERGE by
 * anyone, superusers included, and the event triggers of src/sql/00_core.sql
 * refuse ALTER, new triggers, rules and policies on it, replacing its
 * definition view, and dropping kappa_engine_only.  Reading is untouched:
 * whoever may SELECT from the user-facing view reads it as before.
 *
 * The owner of a continuous view also owns its materialization and
 * definition (so that its privileges, not pg_kappa's, apply to what the
 * view reads); ALTER VIEW ... OWNER TO on the user-facing view carries the
 * new owner over to both (kappa.sync_view_owner, called by the event
 * trigger).
 *
 * What this cannot stop: a superuser who disables the event triggers or
 * sets session_replication_role = replica (docs/security.md).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/skey.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "commands/tablecmds.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "pg_kappa.h"

PG_FUNCTION_INFO_V1(kappa_refuse_materialization_change);
PG_FUNCTION_INFO_V1(kappa_sync_view_owner);

/* "schema.name" of a relation, for messages. */
static char *
protect_qualified_name(Oid relid)
{
	char	   *name = get_rel_name(relid);
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));

	if (name == NULL || nsp == NULL)
		return psprintf("%u", relid);
	return quote_qualified_identifier(nsp, name);
}

/*
 * kappa.refuse_materialization_change() is the statement trigger on every
 * materialization: it refuses any change not made by the engine (which
 * fires no triggers).
 */
Datum
kappa_refuse_materialization_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			matRelid;
	Oid			view = InvalidOid;
	KappaViewRow row;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kappa.refuse_materialization_change() must be called as a trigger")));
	matRelid = RelationGetRelid(trigdata->tg_relation);
	if (KappaFindView("mat", matRelid, &row))
		view = row.view;

	ereport(ERROR,
			(errcode(ERRCODE_WRONG_OBJECT_TYPE),
			 OidIsValid(view) ?
			 errmsg("cannot change the materialization of continuous view %s",
					protect_qualified_name(view)) :
			 errmsg("cannot change %s: only pg_kappa's engine writes it",
					protect_qualified_name(matRelid)),
			 errdetail("It holds the groups pg_kappa merged from the view's stream; a direct change would make the view disagree with its query."),
			 errhint("To recompute the view, drop it with kappa.drop_view() and create it again with kappa.create_view().")));
	PG_RETURN_NULL();
}

/*
 * kappa.sync_view_owner(view) gives the materialization and the definition
 * of a continuous view the owner of its user-facing view (after ALTER VIEW
 * ... OWNER TO, from the event trigger).  Does nothing for other relations
 * or when the owners already agree; anyone may call it, since it only
 * carries over an ownership the view's owner already has.
 */
Datum
kappa_sync_view_owner(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	KappaViewRow row;
	HeapTuple	tuple;
	Oid			owner;

	if (!KappaFindView("view", relid, &row))
		PG_RETURN_VOID();
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(row.view));
	if (!HeapTupleIsValid(tuple))
		PG_RETURN_VOID();
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	/* ATExecChangeOwner checks nothing and fires no event trigger */
	if (get_rel_relkind(row.mat) != '\0')
		ATExecChangeOwner(row.mat, owner, false, AccessExclusiveLock);
	if (get_rel_relkind(row.def) != '\0')
		ATExecChangeOwner(row.def, owner, false, AccessExclusiveLock);
	KappaStreamViewsInvalidate(row.view);
	PG_RETURN_VOID();
}
