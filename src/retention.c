/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Expiry of the rows kept by streams created with an interval retention.
 *
 * A stream created with retain => '7 days' keeps its rows in a heap table
 * in kappa_data with a kappa_arrived_at column (indexed with BRIN, since
 * rows arrive in time order).  kappa.expire_retained_rows() deletes the
 * rows older than each stream's retention; the background workers of the
 * Kafka launcher call it periodically in every database with pg_kappa, and
 * it can be called by hand or from a scheduler.  Views are not affected:
 * they hold aggregates of every row ever applied.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "pg_kappa.h"
#include "util.h"

/*
 * KappaExpireRetainedRows deletes expired rows of every stream of the
 * current database that has an interval retention, and returns how many
 * rows it deleted.  Runs as the owner of kappa_data; call it inside a
 * transaction.
 */
int64
KappaExpireRetainedRows(void)
{
	KappaSavedUser saved = KappaBecomeDataOwner();
	int64		deleted = 0;
	uint64		i;
	uint64		nstreams;
	char	  **backings;
	char	  **retains;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT backing::text, retain::text FROM kappa.stream_catalog "
					"WHERE retain IS NOT NULL AND backing IS NOT NULL ORDER BY stream::oid",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read kappa.stream_catalog");
	nstreams = SPI_processed;
	backings = palloc(sizeof(char *) * Max(nstreams, 1));
	retains = palloc(sizeof(char *) * Max(nstreams, 1));
	for (i = 0; i < nstreams; i++)
	{
		backings[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		retains[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}
	for (i = 0; i < nstreams; i++)
	{
		char	   *sql = psprintf("DELETE FROM %s WHERE kappa_arrived_at < now() - %s::interval",
								   backings[i], quote_literal_cstr(retains[i]));

		if (SPI_execute(sql, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not expire rows of %s", backings[i]);
		deleted += SPI_processed;
	}
	SPI_finish();
	KappaRestoreUser(saved);
	return deleted;
}

PG_FUNCTION_INFO_V1(kappa_expire_retained_rows);

/*
 * kappa.expire_retained_rows() deletes the rows that streams keep past their
 * retention and returns how many were deleted.
 */
Datum
kappa_expire_retained_rows(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(KappaExpireRetainedRows());
}
