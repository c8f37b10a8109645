/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Cumulative statistics of streams (rows applied, batches, last batch
 *	  time), shown by kappa.streams, and of expectations (rows checked, rows
 *	  violating, last violation), shown by kappa.expectations.
 *
 * Like pg_stat counters these are not transactional: rows of a batch that
 * is later rolled back are counted.  They live in a small shared hash table
 * keyed by (database, stream), which exists only when pg_kappa is in
 * shared_preload_libraries; otherwise kappa.stream_stats returns NULLs.
 * Counters start from zero at server start.  Expectations have a second
 * table keyed by (database, expectation id), guarded by the same lock;
 * writers add a statement's counts at once (contracts.c), so the lock is
 * taken once per statement or Kafka batch, never per row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "stats.h"

#define KAPPA_MAX_STREAM_STATS 4096
#define KAPPA_MAX_EXPECTATION_STATS 4096

typedef struct StreamStatsKey
{
	Oid			dbid;
	Oid			relid;
} StreamStatsKey;

typedef struct StreamStatsEntry
{
	StreamStatsKey key;
	uint64		rows;
	uint64		batches;
	TimestampTz lastBatch;
} StreamStatsEntry;

typedef struct ExpectationStatsKey
{
	Oid			dbid;
	int32		id;				/* kappa.expectation_catalog.id */
} ExpectationStatsKey;

typedef struct ExpectationStatsEntry
{
	ExpectationStatsKey key;
	uint64		checked;
	uint64		violating;
	TimestampTz lastViolation;	/* 0: none yet */
} ExpectationStatsEntry;

typedef struct StreamStatsShared
{
	LWLock	   *lock;			/* protects both hash tables */
} StreamStatsShared;

static StreamStatsShared *stats_shared = NULL;
static HTAB *stats_hash = NULL;
static HTAB *stats_expectations = NULL;
static shmem_request_hook_type stats_prev_shmem_request_hook = NULL;
static shmem_startup_hook_type stats_prev_shmem_startup_hook = NULL;

static void
stats_shmem_request(void)
{
	if (stats_prev_shmem_request_hook)
		stats_prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(StreamStatsShared)) +
						   hash_estimate_size(KAPPA_MAX_STREAM_STATS,
											  sizeof(StreamStatsEntry)) +
						   hash_estimate_size(KAPPA_MAX_EXPECTATION_STATS,
											  sizeof(ExpectationStatsEntry)));
	RequestNamedLWLockTranche("pg_kappa stats", 1);
}

static void
stats_shmem_startup(void)
{
	bool		found;
	HASHCTL		ctl;

	if (stats_prev_shmem_startup_hook)
		stats_prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_shared = ShmemInitStruct("pg_kappa stats", sizeof(StreamStatsShared),
								   &found);
	if (!found)
		stats_shared->lock = &(GetNamedLWLockTranche("pg_kappa stats"))->lock;
	ctl.keysize = sizeof(StreamStatsKey);
	ctl.entrysize = sizeof(StreamStatsEntry);
	stats_hash = ShmemInitHash("pg_kappa stream stats",
							   KAPPA_MAX_STREAM_STATS,
							   KAPPA_MAX_STREAM_STATS,
							   &ctl, HASH_ELEM | HASH_BLOBS);
	ctl.keysize = sizeof(ExpectationStatsKey);
	ctl.entrysize = sizeof(ExpectationStatsEntry);
	stats_expectations = ShmemInitHash("pg_kappa expectation stats",
									   KAPPA_MAX_EXPECTATION_STATS,
									   KAPPA_MAX_EXPECTATION_STATS,
									   &ctl, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/* KappaStatsPreloadInit installs the shared memory hooks (preload only). */
void
KappaStatsPreloadInit(void)
{
	stats_prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	stats_prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

/*
 * KappaStatsCountStream adds one applied batch of 'nrows' rows to the
 * stream's counters.  Does nothing without shared memory or when the table
 * is full (the counters are informational).
 */
void
KappaStatsCountStream(Oid streamRelid, uint64 nrows)
{
	StreamStatsKey key;
	StreamStatsEntry *entry;
	bool		found;

	if (stats_shared == NULL || nrows == 0)
		return;
	key.dbid = MyDatabaseId;
	key.relid = streamRelid;
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	entry = hash_search(stats_hash, &key, HASH_ENTER_NULL, &found);
	if (entry != NULL)
	{
		if (!found)
		{
			entry->rows = 0;
			entry->batches = 0;
		}
		entry->rows += nrows;
		entry->batches++;
		entry->lastBatch = GetCurrentTimestamp();
	}
	LWLockRelease(stats_shared->lock);
}

PG_FUNCTION_INFO_V1(kappa_stream_stats);

/*
 * kappa.stream_stats(stream) returns (rows_applied, batches, last_batch_at)
 * since server start, or NULLs when the library is not preloaded.
 */
Datum
kappa_stream_stats(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {true, true, true};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (stats_shared != NULL)
	{
		StreamStatsKey key;
		StreamStatsEntry *entry;

		key.dbid = MyDatabaseId;
		key.relid = relid;
		LWLockAcquire(stats_shared->lock, LW_SHARED);
		entry = hash_search(stats_hash, &key, HASH_FIND, NULL);
		values[0] = Int64GetDatum(entry ? entry->rows : 0);
		values[1] = Int64GetDatum(entry ? entry->batches : 0);
		nulls[0] = nulls[1] = false;
		if (entry)
		{
			values[2] = TimestampTzGetDatum(entry->lastBatch);
			nulls[2] = false;
		}
		LWLockRelease(stats_shared->lock);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * KappaStatsCountExpectations adds, for each of the 'n' expectations
 * ids[i], 'checked' rows checked, violating[i] rows violating it and, if it
 * is not 0, the time of the last violation.  One lock for all of them.
 * Does nothing without shared memory; an expectation that finds the table
 * full is not counted (the counters are informational).
 */
void
KappaStatsCountExpectations(int n, const int32 * ids, uint64 checked,
							const uint64 *violating, TimestampTz lastViolation)
{
	if (stats_shared == NULL || n == 0)
		return;
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < n; i++)
	{
		ExpectationStatsKey key;
		ExpectationStatsEntry *entry;
		bool		found;

		key.dbid = MyDatabaseId;
		key.id = ids[i];
		entry = hash_search(stats_expectations, &key, HASH_ENTER_NULL, &found);
		if (entry == NULL)
			continue;
		if (!found)
		{
			entry->checked = 0;
			entry->violating = 0;
			entry->lastViolation = 0;
		}
		entry->checked += checked;
		entry->violating += violating[i];
		if (violating[i] > 0 && lastViolation > entry->lastViolation)
			entry->lastViolation = lastViolation;
	}
	LWLockRelease(stats_shared->lock);
}

/*
 * KappaStatsForgetExpectation drops the counters of a dropped expectation.
 */
void
KappaStatsForgetExpectation(int32 id)
{
	ExpectationStatsKey key;

	if (stats_shared == NULL)
		return;
	key.dbid = MyDatabaseId;
	key.id = id;
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	(void) hash_search(stats_expectations, &key, HASH_REMOVE, NULL);
	LWLockRelease(stats_shared->lock);
}

PG_FUNCTION_INFO_V1(kappa_expectation_stats);

/*
 * kappa.expectation_stats(id) returns (rows_checked, rows_violating,
 * last_violation_at) of an expectation since server start, or NULLs when
 * the library is not preloaded.
 */
Datum
kappa_expectation_stats(PG_FUNCTION_ARGS)
{
	int32		id = PG_GETARG_INT32(0);
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {true, true, true};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	if (stats_shared != NULL)
	{
		ExpectationStatsKey key;
		ExpectationStatsEntry *entry;

		key.dbid = MyDatabaseId;
		key.id = id;
		LWLockAcquire(stats_shared->lock, LW_SHARED);
		entry = hash_search(stats_expectations, &key, HASH_FIND, NULL);
		values[0] = Int64GetDatum(entry ? entry->checked : 0);
		values[1] = Int64GetDatum(entry ? entry->violating : 0);
		nulls[0] = nulls[1] = false;
		if (entry && entry->lastViolation != 0)
		{
			values[2] = TimestampTzGetDatum(entry->lastViolation);
			nulls[2] = false;
		}
		LWLockRelease(stats_shared->lock);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
