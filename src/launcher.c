/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher background worker: finds every database with pg_kappa and
 *	  keeps one worker per Kafka source (per parallelism slot) running.
 *
 * The launcher connects to no database (like the logical replication
 * launcher) and reads pg_database.  It cannot read another database's
 * catalog, so for each database it starts a short-lived *scanner* worker
 * connected to it, which looks up pg_extension and kappa.source_catalog and
 * leaves the list of active sources in shared memory (and expires the rows
 * of interval-retained streams there).  The launcher then
 * starts a dynamic worker for every (database, source, slot) that has none,
 * restarts workers that died (with a backoff when they die young), and stops
 * workers of sources that were paused, dropped or shrunk.
 *
 * Databases are scanned every KAPPA_SCAN_INTERVAL_MS, and at once when
 * create/pause/resume/drop_source commits or a worker stops (both wake the
 * launcher through KappaLauncherWake).  Worker handles live in the
 * launcher's local memory; after a crash the postmaster forgets every worker
 * (they are registered with BGW_NEVER_RESTART) and the launcher starts over.
 * A second worker for a slot (say, the launcher restarted while the old one
 * still runs) finds the slot's session lock taken and exits.
 *
 * Without shared_preload_libraries there is no launcher: the source
 * functions start workers directly (KappaStartWorker), which the postmaster
 * restarts on failure until the server stops.
 *
 * Rebuilds of continuous views (view_rebuild.c) are kept running the same
 * way: a scanner also lists the rows of kappa.view_rebuilds still building,
 * and the launcher keeps one rebuild worker per row, restarting it after a
 * crash until the rebuild is swapped in, cancelled or has failed.
 *
 * A paused source keeps one worker (slot 0), which reads nothing but keeps
 * the source's lag current in kappa.sources.  When a worker cannot be
 * started (no free background worker slot), the launcher says why in
 * shared memory; kappa.sources shows it (kappa.launcher_problems()).
 *
 * Locking.  The shared state (KappaLauncherShared, kl_shared) has two
 * locks, each named in the struct above the fields it protects:
 *	 - 'mutex', a spinlock, protects the launcher's latch and the rescan
 *	   flag: a few instructions each (KappaLauncherWake may run anywhere);
 *	 - 'lock', an LWLock, protects the lists of active sources and of
 *	   problems, which are looped over and copied: scanners replace their
 *	   database's sources and the launcher forgets those of dropped
 *	   databases and writes problems in exclusive mode; the launcher copies
 *	   the sources and backends read the problems in shared mode.
 * No code holds both.  The launcher's list of the workers it started
 * (kl_workers) is its local memory, under no lock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_database.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "util.h"

#define KAPPA_MAX_ACTIVE_SOURCES	1024
#define KAPPA_MAX_PROBLEMS			256

/* Timings */
#define KAPPA_SCAN_INTERVAL_MS		10000	/* scan every database */
#define KAPPA_RESTART_MIN_MS		500 /* restart a stopped worker after */
#define KAPPA_RESTART_MAX_MS		30000	/* ... doubling up to this */
#define KAPPA_DIED_YOUNG_MS			10000	/* while it stops sooner than this */
#define KAPPA_NO_SLOT_RETRY_MS		5000	/* no free worker slot: retry */
#define KAPPA_LAUNCHER_TICK_MS		1000	/* longest wait of the launcher */
#define KAPPA_LAUNCHER_MIN_WAIT_MS	10	/* shortest */
#define KAPPA_LAUNCHER_RESTART_S	5	/* the postmaster restarts it after */
#define KAPPA_WORKER_RESTART_S		5	/* a worker without the launcher */

/*
 * One active (not paused) source, or one rebuild (rebuild_id > 0,
 * source_id 0, parallelism 1), as found by a scanner.
 */
typedef struct KappaActiveSource
{
	Oid			dboid;
	Oid			owner;
	int32		source_id;
	int32		parallelism;
	int32		rebuild_id;
} KappaActiveSource;

/* Why a source's worker could not be started. */
typedef struct KappaLauncherProblem
{
	Oid			dboid;
	int32		source_id;
	int32		slot;
	TimestampTz since;
	char		problem[128];
} KappaLauncherProblem;

typedef struct KappaLauncherShared
{
	slock_t		mutex;			/* protects the next two fields only */
	Latch	   *launcher_latch;
	bool		rescan;			/* scan all databases at once */

	LWLock	   *lock;			/* protects the fields below */
	int			nsources;
	KappaActiveSource sources[KAPPA_MAX_ACTIVE_SOURCES];
	int			nproblems;
	KappaLauncherProblem problems[KAPPA_MAX_PROBLEMS];
} KappaLauncherShared;

/* A worker the launcher started (launcher-local). */
typedef struct KlWorker
{
	Oid			dboid;
	int32		source_id;
	int32		slot;
	int32		rebuild_id;
	Oid			owner;
	bool		wanted;
	BackgroundWorkerHandle *handle;
	TimestampTz started_at;
	TimestampTz next_start;
	int			backoff_ms;
} KlWorker;

static KappaLauncherShared *kl_shared = NULL;
static shmem_request_hook_type kl_prev_shmem_request_hook = NULL;
static shmem_startup_hook_type kl_prev_shmem_startup_hook = NULL;

static KlWorker *kl_workers;
static int	kl_nworkers;
static int	kl_maxworkers;

static void
kl_shmem_request(void)
{
	if (kl_prev_shmem_request_hook)
		kl_prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(KappaLauncherShared)));
	RequestNamedLWLockTranche("pg_kappa launcher", 1);
}

static void
kl_shmem_startup(void)
{
	bool		found;

	if (kl_prev_shmem_startup_hook)
		kl_prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	kl_shared = ShmemInitStruct("pg_kappa launcher",
								sizeof(KappaLauncherShared), &found);
	if (!found)
	{
		memset(kl_shared, 0, sizeof(KappaLauncherShared));
		SpinLockInit(&kl_shared->mutex);
		kl_shared->lock = &(GetNamedLWLockTranche("pg_kappa launcher"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * kl_register_worker registers one of pg_kappa's background workers, all of
 * which may connect to a database and start once recovery has finished:
 * with the postmaster while the library is being preloaded, else as a
 * dynamic worker.  'function' is its entry point, 'type' one of
 * KAPPA_*_TYPE, 'name' its process title, 'restart_time' its
 * bgw_restart_time; 'main_arg' and 'args' (copied to bgw_extra, if not
 * NULL) are its arguments.  With 'handle' (dynamic workers only) the
 * caller gets its handle and this process is notified when it starts and
 * stops.  Returns false when no worker slot is free.
 */
static bool
kl_register_worker(const char *function, const char *type, const char *name,
				   int restart_time, Datum main_arg, const KappaWorkerArgs *args,
				   BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = restart_time;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_kappa");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
	worker.bgw_main_arg = main_arg;
	StaticAssertStmt(sizeof(KappaWorkerArgs) <= BGW_EXTRALEN, "worker args too long");
	if (args)
		memcpy(worker.bgw_extra, args, sizeof(KappaWorkerArgs));
	worker.bgw_notify_pid = handle ? MyProcPid : 0;

	if (process_shared_preload_libraries_in_progress)
	{
		Assert(handle == NULL);
		RegisterBackgroundWorker(&worker);
		return true;
	}
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * KappaKafkaPreloadInit is called from _PG_init when the library is preloaded:
 * it requests shared memory and registers the launcher.
 */
void
KappaKafkaPreloadInit(void)
{
	kl_prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = kl_shmem_request;
	kl_prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = kl_shmem_startup;

	(void) kl_register_worker("KappaLauncherMain", KAPPA_LAUNCHER_TYPE,
							  "pg_kappa launcher", KAPPA_LAUNCHER_RESTART_S,
							  (Datum) 0, NULL, NULL);
}

/*
 * KappaLauncherActive tells whether a launcher manages the workers (the
 * library was preloaded).
 */
bool
KappaLauncherActive(void)
{
	return kappa_loaded_via_preload && kl_shared != NULL;
}

/*
 * KappaLauncherWake asks the launcher to scan the databases now.  Safe to
 * call anywhere (it only takes a spinlock); a no-op without the launcher.
 */
void
KappaLauncherWake(void)
{
	Latch	   *latch;

	if (kl_shared == NULL)
		return;
	SpinLockAcquire(&kl_shared->mutex);
	kl_shared->rescan = true;
	latch = kl_shared->launcher_latch;
	SpinLockRelease(&kl_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/*
 * KappaStartWorker registers a dynamic worker for one source slot, for a
 * rebuild (args->rebuild_id) or for a rebuild's replay of one source (both
 * rebuild_id and source_id).  With
 * 'handle' the caller (the launcher) gets its handle and is notified when it
 * stops; restart_on_exit makes the postmaster restart it after a failure
 * (for workers started without a launcher).  Returns false when no worker
 * slot is free.
 */
bool
KappaStartWorker(const KappaWorkerArgs *args, const char *source_name,
				 bool restart_on_exit, void **handle)
{
	BackgroundWorkerHandle *h = NULL;
	char		name[BGW_MAXLEN];
	const char *function;
	const char *type;

	if (args->rebuild_id > 0 && args->source_id > 0)
	{
		function = "KappaReplayWorkerMain";
		type = KAPPA_REPLAY_TYPE;
		snprintf(name, sizeof(name), "pg_kappa rebuild %d replay of source %d",
				 args->rebuild_id, args->source_id);
	}
	else if (args->rebuild_id > 0)
	{
		function = "KappaRebuildWorkerMain";
		type = KAPPA_REBUILD_TYPE;
		snprintf(name, sizeof(name), "pg_kappa rebuild %d", args->rebuild_id);
	}
	else
	{
		function = "KappaKafkaWorkerMain";
		type = KAPPA_WORKER_TYPE;
		if (source_name)
			snprintf(name, sizeof(name), "pg_kappa worker for source %s slot %d",
					 source_name, args->slot);
		else
			snprintf(name, sizeof(name), "pg_kappa worker for source %d slot %d",
					 args->source_id, args->slot);
	}
	if (!kl_register_worker(function, type, name,
							restart_on_exit ? KAPPA_WORKER_RESTART_S : BGW_NEVER_RESTART,
							(Datum) 0, args, handle ? &h : NULL))
		return false;
	if (handle)
		*handle = h;
	return true;
}

/* workers to start (no launcher) or a launcher to wake at commit */
static List *kl_pending_starts = NIL;
static bool kl_pending_wake = false;
static bool kl_xact_callback_registered = false;

/* kl_xact_callback does what KappaStartWorkerAtCommit arranged. */
static void
kl_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_COMMIT)
	{
		if (kl_pending_wake)
			KappaLauncherWake();
		foreach(lc, kl_pending_starts)
		{
			KappaWorkerArgs *wa = lfirst(lc);

			if (!KappaStartWorker(wa, NULL, true, NULL))
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 wa->rebuild_id > 0 ?
						 errmsg("could not start the worker of rebuild %d", wa->rebuild_id) :
						 errmsg("could not start a worker for kafka source %d", wa->source_id),
						 errhint("Raise max_worker_processes.")));
		}
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
	{
		/* the list lived in TopTransactionContext, gone with it */
		kl_pending_starts = NIL;
		kl_pending_wake = false;
	}
}

/*
 * KappaStartWorkerAtCommit arranges for what the current transaction did to
 * the workers' catalog to take effect once it commits, so that no worker
 * looks for a row it cannot see yet: with the launcher, it is woken (and
 * finds the rows); without it, a worker is started for 'args' if not NULL
 * (restarted by the postmaster on failure).  Nothing happens on abort.
 */
void
KappaStartWorkerAtCommit(const KappaWorkerArgs *args)
{
	if (!kl_xact_callback_registered)
	{
		RegisterXactCallback(kl_xact_callback, NULL);
		kl_xact_callback_registered = true;
	}
	if (KappaLauncherActive())
		kl_pending_wake = true;
	else if (args != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
		KappaWorkerArgs *wa = palloc(sizeof(KappaWorkerArgs));

		memcpy(wa, args, sizeof(KappaWorkerArgs));
		kl_pending_starts = lappend(kl_pending_starts, wa);
		MemoryContextSwitchTo(old);
	}
}

/*
 * kl_expire_retained_rows deletes the rows interval-retained streams keep
 * past their retention, in a transaction of its own; an error is logged and
 * retried at the next scan.
 */
static void
kl_expire_retained_rows(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (KappaBeginTransaction(true) == KAPPA_EXTENSION_MISSING)
	{
		KappaCommitTransaction();
		return;
	}
	PG_TRY();
	{
		int64		n = KappaExpireRetainedRows();

		if (n > 0)
			ereport(DEBUG1,
					(errmsg("pg_kappa: expired %lld retained stream rows", (long long) n)));
		KappaCommitTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}

/*
 * KappaScannerMain is a short-lived worker connected to one database
 * (main_arg): it leaves the database's active sources in shared memory.
 */
void
KappaScannerMain(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	KappaActiveSource *found = NULL;
	int			nfound = 0;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	if (KappaBeginTransaction(true) != KAPPA_EXTENSION_MISSING)
	{
		SPI_connect();
		/* a paused source keeps one worker, which keeps its lag current */
		if (SPI_execute("SELECT id, owner, CASE WHEN paused THEN 1 ELSE parallelism END "
						"FROM kappa.source_catalog ORDER BY id", true, 0) == SPI_OK_SELECT)
		{
			found = MemoryContextAlloc(TopMemoryContext,
									   sizeof(KappaActiveSource) * (SPI_processed + 1));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				TupleDesc	desc = SPI_tuptable->tupdesc;
				bool		isnull;

				found[nfound].dboid = dboid;
				found[nfound].source_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
				found[nfound].owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
				found[nfound].parallelism = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
				found[nfound].rebuild_id = 0;
				nfound++;
			}
		}

		/*
		 * rebuilds still to do, run as the view's owner (an extension not
		 * updated to 0.3 yet has none)
		 */
		if (OidIsValid(get_relname_relid("view_rebuilds",
										 get_namespace_oid(KAPPA_SCHEMA, false))) &&
			SPI_execute("SELECT r.id, c.relowner FROM kappa.view_rebuilds r "
						"JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.view "
						"WHERE r.state OPERATOR(pg_catalog.<>) 'failed' ORDER BY r.id",
						true, 0) == SPI_OK_SELECT && SPI_processed > 0)
		{
			found = found == NULL ?
				MemoryContextAlloc(TopMemoryContext,
								   sizeof(KappaActiveSource) * SPI_processed) :
				repalloc(found, sizeof(KappaActiveSource) * (nfound + SPI_processed));
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				TupleDesc	desc = SPI_tuptable->tupdesc;
				bool		isnull;

				found[nfound].dboid = dboid;
				found[nfound].source_id = 0;
				found[nfound].rebuild_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
				found[nfound].owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
				found[nfound].parallelism = 1;
				nfound++;
			}
		}
		SPI_finish();
	}
	KappaCommitTransaction();

	LWLockAcquire(kl_shared->lock, LW_EXCLUSIVE);
	{
		int			n = 0;

		for (int i = 0; i < kl_shared->nsources; i++)
			if (kl_shared->sources[i].dboid != dboid)
				kl_shared->sources[n++] = kl_shared->sources[i];
		for (int i = 0; i < nfound && n < KAPPA_MAX_ACTIVE_SOURCES; i++)
			kl_shared->sources[n++] = found[i];
		kl_shared->nsources = n;
	}
	LWLockRelease(kl_shared->lock);

	/* expire interval-retained stream rows of this database */
	kl_expire_retained_rows();
	proc_exit(0);
}

/*
 * kl_database_list returns the oids of the databases that accept
 * connections and are not templates.
 */
static List *
kl_database_list(void)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext caller = CurrentMemoryContext;

	(void) KappaBeginTransaction(false);
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		MemoryContext old;

		/* templates are skipped: a scanner there would delay CREATE DATABASE */
		if (!db->datallowconn || db->datistemplate ||
			db->datconnlimit == DATCONNLIMIT_INVALID_DB)
			continue;
		old = MemoryContextSwitchTo(caller);
		result = lappend_oid(result, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	KappaCommitTransaction();
	return result;
}

/*
 * kl_scan runs a scanner in every database, one after the other, and
 * forgets the sources of databases that are gone.
 */
static void
kl_scan(void)
{
	List	   *dbs = kl_database_list();
	ListCell   *lc;

	foreach(lc, dbs)
	{
		Oid			dboid = lfirst_oid(lc);
		BackgroundWorkerHandle *handle;
		pid_t		pid;
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "pg_kappa scanner for database %u", dboid);
		if (!kl_register_worker("KappaScannerMain", KAPPA_SCANNER_TYPE, name,
								BGW_NEVER_RESTART, ObjectIdGetDatum(dboid), NULL,
								&handle))
		{
			ereport(LOG,
					(errmsg("pg_kappa launcher: no free worker slot to scan database %u", dboid),
					 errhint("Raise max_worker_processes.")));
			continue;
		}
		if (WaitForBackgroundWorkerStartup(handle, &pid) == BGWH_STARTED)
			(void) WaitForBackgroundWorkerShutdown(handle);
		pfree(handle);
	}

	/* sources of databases that no longer exist */
	LWLockAcquire(kl_shared->lock, LW_EXCLUSIVE);
	{
		int			n = 0;

		for (int i = 0; i < kl_shared->nsources; i++)
			if (list_member_oid(dbs, kl_shared->sources[i].dboid))
				kl_shared->sources[n++] = kl_shared->sources[i];
		kl_shared->nsources = n;
	}
	LWLockRelease(kl_shared->lock);
	list_free(dbs);
}

static KlWorker *
kl_find_worker(Oid dboid, int32 source_id, int32 slot, int32 rebuild_id)
{
	for (int i = 0; i < kl_nworkers; i++)
		if (kl_workers[i].dboid == dboid && kl_workers[i].source_id == source_id &&
			kl_workers[i].slot == slot && kl_workers[i].rebuild_id == rebuild_id)
			return &kl_workers[i];
	if (kl_nworkers == kl_maxworkers)
	{
		kl_maxworkers = kl_maxworkers ? kl_maxworkers * 2 : 16;
		kl_workers = kl_workers ? repalloc(kl_workers, kl_maxworkers * sizeof(KlWorker))
			: MemoryContextAlloc(TopMemoryContext, kl_maxworkers * sizeof(KlWorker));
	}
	memset(&kl_workers[kl_nworkers], 0, sizeof(KlWorker));
	kl_workers[kl_nworkers].dboid = dboid;
	kl_workers[kl_nworkers].source_id = source_id;
	kl_workers[kl_nworkers].slot = slot;
	kl_workers[kl_nworkers].rebuild_id = rebuild_id;
	kl_workers[kl_nworkers].backoff_ms = KAPPA_RESTART_MIN_MS;
	return &kl_workers[kl_nworkers++];
}

/*
 * kl_set_problem records why a worker could not be started (problem NULL:
 * it could).  Returns true if the problem is new.
 */
static bool
kl_set_problem(KlWorker *w, const char *problem)
{
	bool		isnew = false;
	int			i;

	LWLockAcquire(kl_shared->lock, LW_EXCLUSIVE);
	for (i = 0; i < kl_shared->nproblems; i++)
	{
		KappaLauncherProblem *p = &kl_shared->problems[i];

		if (p->dboid == w->dboid && p->source_id == w->source_id && p->slot == w->slot)
			break;
	}
	if (problem == NULL)
	{
		if (i < kl_shared->nproblems)
			kl_shared->problems[i] =
				kl_shared->problems[--kl_shared->nproblems];
	}
	else if (i < kl_shared->nproblems)
	{
		isnew = strcmp(kl_shared->problems[i].problem, problem) != 0;
		strlcpy(kl_shared->problems[i].problem, problem,
				sizeof(kl_shared->problems[i].problem));
	}
	else if (i < KAPPA_MAX_PROBLEMS)
	{
		KappaLauncherProblem *p = &kl_shared->problems[i];

		p->dboid = w->dboid;
		p->source_id = w->source_id;
		p->slot = w->slot;
		p->since = GetCurrentTimestamp();
		strlcpy(p->problem, problem, sizeof(p->problem));
		kl_shared->nproblems++;
		isnew = true;
	}
	LWLockRelease(kl_shared->lock);
	return isnew;
}

PG_FUNCTION_INFO_V1(kappa_launcher_problems);

/*
 * kappa.launcher_problems() returns, for the current database, why the
 * launcher could not start workers: (source_id, slot, problem, since).
 * Nothing without the launcher (the library not preloaded).
 */
Datum
kappa_launcher_problems(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (!KappaLauncherActive())
		return (Datum) 0;
	LWLockAcquire(kl_shared->lock, LW_SHARED);
	for (int i = 0; i < kl_shared->nproblems; i++)
	{
		KappaLauncherProblem *p = &kl_shared->problems[i];
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		if (p->dboid != MyDatabaseId)
			continue;
		values[0] = Int32GetDatum(p->source_id);
		values[1] = Int32GetDatum(p->slot);
		values[2] = CStringGetTextDatum(p->problem);
		values[3] = TimestampTzGetDatum(p->since);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(kl_shared->lock);
	return (Datum) 0;
}

/*
 * kl_reconcile starts missing workers, restarts dead ones and stops
 * unwanted ones.  Returns the milliseconds until the next restart is due
 * (or -1).
 */
static long
kl_reconcile(void)
{
	KappaActiveSource *sources;
	int			nsources;
	TimestampTz now = GetCurrentTimestamp();
	long		next = -1;

	LWLockAcquire(kl_shared->lock, LW_SHARED);
	nsources = kl_shared->nsources;
	sources = palloc(sizeof(KappaActiveSource) * (nsources + 1));
	memcpy(sources, kl_shared->sources, sizeof(KappaActiveSource) * nsources);
	LWLockRelease(kl_shared->lock);

	for (int i = 0; i < kl_nworkers; i++)
		kl_workers[i].wanted = false;

	for (int i = 0; i < nsources; i++)
		for (int slot = 0; slot < sources[i].parallelism; slot++)
		{
			KlWorker   *w = kl_find_worker(sources[i].dboid, sources[i].source_id, slot,
										   sources[i].rebuild_id);

			w->wanted = true;
			w->owner = sources[i].owner;
		}

	for (int i = 0; i < kl_nworkers; i++)
	{
		KlWorker   *w = &kl_workers[i];
		pid_t		pid;

		if (w->handle && GetBackgroundWorkerPid(w->handle, &pid) == BGWH_STOPPED)
		{
			/* it stopped: restart soon, later if it died young */
			if (TimestampDifferenceExceeds(w->started_at, now, KAPPA_DIED_YOUNG_MS))
				w->backoff_ms = KAPPA_RESTART_MIN_MS;
			else
				w->backoff_ms = Min(w->backoff_ms * 2, KAPPA_RESTART_MAX_MS);
			w->next_start = TimestampTzPlusMilliseconds(now, w->backoff_ms);
			pfree(w->handle);
			w->handle = NULL;
		}

		if (w->wanted && w->handle == NULL)
		{
			if (now >= w->next_start)
			{
				KappaWorkerArgs args;

				memset(&args, 0, sizeof(args));
				args.dboid = w->dboid;
				args.owner = w->owner;
				args.source_id = w->source_id;
				args.slot = w->slot;
				args.rebuild_id = w->rebuild_id;
				args.managed = true;
				if (KappaStartWorker(&args, NULL, false, (void **) &w->handle))
				{
					w->started_at = now;
					kl_set_problem(w, NULL);
				}
				else
				{
					char		problem[128];

					snprintf(problem, sizeof(problem),
							 "no free background worker slot (max_worker_processes = %d)",
							 max_worker_processes);
					if (kl_set_problem(w, problem))
						ereport(LOG,
								(errmsg("pg_kappa launcher: no free worker slot for source %d slot %d",
										w->source_id, w->slot),
								 errhint("Raise max_worker_processes.")));
					w->next_start = TimestampTzPlusMilliseconds(now, KAPPA_NO_SLOT_RETRY_MS);
				}
			}
			if (w->handle == NULL)
			{
				long		ms = TimestampDifferenceMilliseconds(now, w->next_start);

				if (next < 0 || ms < next)
					next = ms;
			}
		}
		else if (!w->wanted && w->handle)
			TerminateBackgroundWorker(w->handle);
		if (!w->wanted)
			kl_set_problem(w, NULL);
	}

	/* forget entries with nothing left to do */
	{
		int			n = 0;

		for (int i = 0; i < kl_nworkers; i++)
			if (kl_workers[i].wanted || kl_workers[i].handle)
				kl_workers[n++] = kl_workers[i];
		kl_nworkers = n;
	}
	pfree(sources);
	return next;
}

/* kl_launcher_exit forgets the launcher's latch. */
static void
kl_launcher_exit(int code, Datum arg)
{
	SpinLockAcquire(&kl_shared->mutex);
	kl_shared->launcher_latch = NULL;
	SpinLockRelease(&kl_shared->mutex);
}

/*
 * KappaLauncherMain is the launcher's entry point.
 */
void
KappaLauncherMain(Datum main_arg)
{
	TimestampTz next_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SpinLockAcquire(&kl_shared->mutex);
	kl_shared->launcher_latch = &MyProc->procLatch;
	SpinLockRelease(&kl_shared->mutex);
	LWLockAcquire(kl_shared->lock, LW_EXCLUSIVE);
	kl_shared->nsources = 0;
	kl_shared->nproblems = 0;
	LWLockRelease(kl_shared->lock);
	before_shmem_exit(kl_launcher_exit, 0);

	ereport(LOG, (errmsg("pg_kappa launcher started")));

	for (;;)
	{
		bool		rescan;
		long		timeout;
		TimestampTz now = GetCurrentTimestamp();

		SpinLockAcquire(&kl_shared->mutex);
		rescan = kl_shared->rescan;
		kl_shared->rescan = false;
		SpinLockRelease(&kl_shared->mutex);

		if (rescan || now >= next_scan)
		{
			kl_scan();
			next_scan = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													KAPPA_SCAN_INTERVAL_MS);
		}
		timeout = kl_reconcile();
		if (timeout < 0 || timeout > KAPPA_LAUNCHER_TICK_MS)
			timeout = KAPPA_LAUNCHER_TICK_MS;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, KAPPA_LAUNCHER_MIN_WAIT_MS), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
