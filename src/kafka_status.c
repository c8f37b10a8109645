/*-------------------------------------------------------------------------
 *
 * kafka_status.c
 *	  What kappa.sources shows of a source worker: its state, its last error,
 *	  its rates and dead-letter share, and the rows of kappa.source_status
 *	  they are written to.
 *
 * A worker has one row in kappa.source_status per (source, slot).  It is
 * written three ways: when the worker starts (KappaStatusStarting), with
 * every batch, in the batch's own transaction (KappaStatusBatch: counters
 * and rates), and between batches, in a transaction of its own, whenever
 * the state changed, an error is waiting to be stored, or KS_FLUSH_MS have
 * passed (KappaStatusFlush: state, partitions, rates, the dead-letter
 * share of the last minute, the last error, and the high watermarks in
 * kappa.source_offsets).
 *
 * An error is logged once (until its text changes) and stored at the next
 * flush.  The rates are per second over windows of at least
 * KS_RATE_WINDOW_MS; the dead-letter share is over the last
 * KS_WINDOW_SECONDS seconds.
 *
 * This file calls no other part of the worker: the consumer's partitions
 * are handed to KappaStatusFlush.  It only lives in a source worker (the
 * state below is that process's).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "kafka.h"
#include "util.h"

/* Timings */
#define KS_FLUSH_MS			2000	/* write kappa.source_status at least so
									 * often */
#define KS_RATE_WINDOW_MS	1000	/* rates over at least this long */
#define KS_WINDOW_SECONDS	60	/* dead-letter share over the last minute */

/* Messages and dead letters per second over the last minute. */
typedef struct KsWindow
{
	int64		second[KS_WINDOW_SECONDS];
	int64		messages[KS_WINDOW_SECONDS];
	int64		dead[KS_WINDOW_SECONDS];
} KsWindow;

/* The status of this worker. */
typedef struct KsStatus
{
	KappaSource *source;
	int			slot;

	KappaWorkerState state;
	bool		reported;		/* some state was written... */
	KappaWorkerState reported_state;	/* ... this one */
	TimestampTz last_flush;

	char		last_error[1024];
	bool		error_pending;	/* last_error not yet stored */

	/* rates over the current window of at least KS_RATE_WINDOW_MS */
	TimestampTz rate_start;
	int64		rate_msgs;
	int64		rate_bytes;
	double		msgs_per_sec;	/* of the last window */
	double		bytes_per_sec;

	KsWindow	window;

	SPIPlanPtr	batch_plan;		/* KappaStatusBatch's update */

	/* format avro: the writer schemas, as last written */
	int			schemas_written;	/* how many ids */
	int32		last_schema_written;
} KsStatus;

static KsStatus ks_status = {.state = KAPPA_WORKER_STARTING};

/* The names of KappaWorkerState, as kappa.sources shows them. */
static const char *const ks_state_names[] = {
	[KAPPA_WORKER_STARTING] = "starting",
	[KAPPA_WORKER_RUNNING] = "running",
	[KAPPA_WORKER_PAUSED] = "paused",
	[KAPPA_WORKER_WAITING] = "waiting",
	[KAPPA_WORKER_RETRYING] = "retrying",
	[KAPPA_WORKER_FAILED] = "failed",
};

/*
 * KappaStatusInit tells the status whose it is: the worker of 'slot' of
 * 'source' (which must outlive the worker's use of this file).  The rates'
 * first window starts now.
 */
void
KappaStatusInit(KappaSource *source, int slot)
{
	ks_status.source = source;
	ks_status.slot = slot;
	ks_status.last_schema_written = -1;
	ks_status.rate_start = GetCurrentTimestamp();
}

/*
 * KappaStatusStarting records in kappa.source_status that this worker
 * starts: its pid, state 'starting', rates zero, no last error.  Runs in
 * the caller's transaction, SPI connected.
 */
void
KappaStatusStarting(void)
{
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		values[2];

	values[0] = Int32GetDatum(ks_status.source->id);
	values[1] = Int32GetDatum(ks_status.slot);
	KappaExecCatalogSql("INSERT INTO kappa.source_status (source_id, slot, pid, state, started_at) "
						"VALUES ($1, $2, pg_catalog.pg_backend_pid(), 'starting', pg_catalog.now()) "
						"ON CONFLICT (source_id, slot) DO UPDATE SET pid = pg_catalog.pg_backend_pid(), "
						"state = 'starting', started_at = pg_catalog.now(), messages_per_sec = 0, "
						"bytes_per_sec = 0, dead_letters_per_sec = 0, dead_letter_share = NULL, "
						"last_error = NULL, updated_at = pg_catalog.now()",
						2, argtypes, values, NULL);
}

/*
 * KappaStatusSetState sets the state shown from the next flush on.
 */
void
KappaStatusSetState(KappaWorkerState state)
{
	ks_status.state = state;
}

/*
 * KappaStatusSetError sets the state and records the last error for
 * kappa.sources (stored at the next flush).  A text other than the last
 * one is also logged, its text (often librdkafka's) in the detail.
 */
void
KappaStatusSetError(KappaWorkerState state, const char *fmt,...)
{
	char		buf[sizeof(ks_status.last_error)];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (strcmp(buf, ks_status.last_error) != 0)
		ereport(LOG,
				(errmsg("kafka source \"%s\" worker %d: %s", ks_status.source->name,
						ks_status.slot, ks_state_names[state]),
				 errdetail_internal("%s", buf)));
	strlcpy(ks_status.last_error, buf, sizeof(ks_status.last_error));
	ks_status.error_pending = true;
	ks_status.state = state;
}

/*
 * KappaStatusForgetError forgets the last error's text, so that the same
 * error is logged again when it comes back.  What kappa.sources shows is
 * not changed.
 */
void
KappaStatusForgetError(void)
{
	ks_status.last_error[0] = '\0';
}

/*
 * ks_update_rates folds the messages of a batch into the per-second rates,
 * over windows of at least KS_RATE_WINDOW_MS, and into the last minute's
 * window.
 */
static void
ks_update_rates(int64 msgs, int64 bytes, int64 dead)
{
	TimestampTz now = GetCurrentTimestamp();
	long		ms = TimestampDifferenceMilliseconds(ks_status.rate_start, now);
	int64		second = now / USECS_PER_SEC;
	int			i = second % KS_WINDOW_SECONDS;
	KsWindow   *w = &ks_status.window;

	ks_status.rate_msgs += msgs;
	ks_status.rate_bytes += bytes;
	if (ms >= KS_RATE_WINDOW_MS)
	{
		ks_status.msgs_per_sec = ks_status.rate_msgs * 1000.0 / ms;
		ks_status.bytes_per_sec = ks_status.rate_bytes * 1000.0 / ms;
		ks_status.rate_msgs = 0;
		ks_status.rate_bytes = 0;
		ks_status.rate_start = now;
	}
	if (w->second[i] != second)
	{
		w->second[i] = second;
		w->messages[i] = 0;
		w->dead[i] = 0;
	}
	w->messages[i] += msgs;
	w->dead[i] += dead;
}

/*
 * ks_window_totals sums messages and dead letters over the last minute.
 */
static void
ks_window_totals(int64 *messages, int64 *dead)
{
	int64		now = GetCurrentTimestamp() / USECS_PER_SEC;
	KsWindow   *w = &ks_status.window;

	*messages = 0;
	*dead = 0;
	for (int i = 0; i < KS_WINDOW_SECONDS; i++)
		if (w->second[i] > now - KS_WINDOW_SECONDS)
		{
			*messages += w->messages[i];
			*dead += w->dead[i];
		}
}

/*
 * KappaStatusBatch counts a batch of 'messages' messages (of 'bytes' bytes
 * of payload), 'dead' of which became dead letters, 'out_of_order' of
 * which were changes the ordering guard dropped and 'drift' of which had
 * fields that name no column of the target, into the rates and
 * into the worker's row of kappa.source_status, with state running.  Runs
 * in the batch's transaction, SPI connected.
 */
void
KappaStatusBatch(int64 messages, int64 bytes, int64 dead, int64 out_of_order,
				 int64 drift)
{
	Datum		values[10];

	if (ks_status.batch_plan == NULL)
	{
		Oid			argtypes[10] = {INT4OID, INT4OID, INT8OID, INT8OID, INT8OID,
		FLOAT8OID, FLOAT8OID, TEXTOID, INT8OID, INT8OID};

		ks_status.batch_plan =
			KappaPrepareCatalogSql("UPDATE kappa.source_status SET messages = messages + $3, "
								   "bytes = bytes + $4, dead_letters = dead_letters + $5, "
								   "batches = batches + 1, messages_per_sec = $6, bytes_per_sec = $7, "
								   "state = $8, last_batch_at = pg_catalog.clock_timestamp(), "
								   "out_of_order = out_of_order + $9, "
								   "drift = drift + $10, "
								   "updated_at = pg_catalog.now() "
								   "WHERE source_id = $1 AND slot = $2", 10, argtypes);
	}
	ks_update_rates(messages, bytes, dead);
	values[0] = Int32GetDatum(ks_status.source->id);
	values[1] = Int32GetDatum(ks_status.slot);
	values[2] = Int64GetDatum(messages - dead);
	values[3] = Int64GetDatum(bytes);
	values[4] = Int64GetDatum(dead);
	values[5] = Float8GetDatum(ks_status.msgs_per_sec);
	values[6] = Float8GetDatum(ks_status.bytes_per_sec);
	values[7] = CStringGetTextDatum(ks_state_names[KAPPA_WORKER_RUNNING]);
	values[8] = Int64GetDatum(out_of_order);
	values[9] = Int64GetDatum(drift);
	(void) KappaExecCatalogPlan(ks_status.batch_plan, values, NULL, SPI_OK_UPDATE);
}

/*
 * KappaStatusSchemas records the writer schema ids the worker has seen
 * (a list of integers, which only grows) and the id of the last message,
 * for kappa.sources; written in the batch's transaction when they changed.
 */
void
KappaStatusSchemas(List *schema_ids, int32 last_schema_id)
{
	Oid			argtypes[4] = {INT4OID, INT4OID, TEXTOID, INT4OID};
	Datum		values[4];
	char		nulls[4] = "    ";
	StringInfoData buf;
	ListCell   *lc;

	if (list_length(schema_ids) == ks_status.schemas_written &&
		last_schema_id == ks_status.last_schema_written)
		return;
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	foreach(lc, schema_ids)
		appendStringInfo(&buf, "%s%d", foreach_current_index(lc) > 0 ? "," : "",
						 lfirst_int(lc));
	appendStringInfoChar(&buf, '}');
	values[0] = Int32GetDatum(ks_status.source->id);
	values[1] = Int32GetDatum(ks_status.slot);
	values[2] = CStringGetTextDatum(buf.data);
	values[3] = Int32GetDatum(last_schema_id);
	if (last_schema_id < 0)
		nulls[3] = 'n';
	KappaExecCatalogSql("UPDATE kappa.source_status SET "
						"schema_ids = ARRAY(SELECT DISTINCT i FROM pg_catalog.unnest($3::pg_catalog.int4[]) AS i ORDER BY i), "
						"last_schema_id = $4 WHERE source_id = $1 AND slot = $2",
						4, argtypes, values, nulls);
	ks_status.schemas_written = list_length(schema_ids);
	ks_status.last_schema_written = last_schema_id;
}

/*
 * KappaStatusBatchCommitted notes that a batch committed: the worker runs,
 * and its row says so.
 */
void
KappaStatusBatchCommitted(void)
{
	ks_status.state = KAPPA_WORKER_RUNNING;
	ks_status.reported = true;
	ks_status.reported_state = KAPPA_WORKER_RUNNING;
}

/*
 * KappaStatusFlushDue tells whether KappaStatusFlush should run now: an
 * error waits to be stored, the state changed since it was last written,
 * or KS_FLUSH_MS have passed.
 */
bool
KappaStatusFlushDue(TimestampTz now)
{
	return ks_status.error_pending || !ks_status.reported ||
		ks_status.reported_state != ks_status.state ||
		TimestampDifferenceExceeds(ks_status.last_flush, now, KS_FLUSH_MS);
}

/*
 * ks_partitions_text renders the assigned partitions as an int[] literal.
 */
static char *
ks_partitions_text(const KappaPartition *parts, int nparts)
{
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int p = 0; p < nparts; p++)
		if (parts[p].assigned)
		{
			appendStringInfo(&buf, "%s%d", first ? "" : ",", p);
			first = false;
		}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * KappaStatusFlush writes state, assigned partitions, rates, the number of
 * partitions of the topic (-1: unknown), the dead-letter share and the
 * last error to kappa.source_status, and the high watermarks of the
 * partitions (the consumer's table, 'nparts' entries) to
 * kappa.source_offsets, in a transaction of its own: call it outside any
 * transaction.
 */
void
KappaStatusFlush(const KappaPartition *parts, int nparts, int topic_partitions)
{
	Oid			argtypes[9] = {INT4OID, INT4OID, TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID,
	INT4OID, FLOAT8OID, FLOAT8OID};
	Datum		values[9];
	char		nulls[9] = "         ";
	int64		window_msgs;
	int64		window_dead;

	ks_update_rates(0, 0, 0);
	ks_window_totals(&window_msgs, &window_dead);
	(void) KappaBeginTransaction(false);
	SPI_connect();

	values[0] = Int32GetDatum(ks_status.source->id);
	values[1] = Int32GetDatum(ks_status.slot);
	values[2] = CStringGetTextDatum(ks_state_names[ks_status.state]);
	values[3] = CStringGetTextDatum(ks_partitions_text(parts, nparts));
	values[4] = Float8GetDatum(ks_status.msgs_per_sec);
	values[5] = Float8GetDatum(ks_status.bytes_per_sec);
	values[6] = Int32GetDatum(topic_partitions);
	if (topic_partitions < 0)
		nulls[6] = 'n';
	values[7] = Float8GetDatum((double) window_dead / KS_WINDOW_SECONDS);
	values[8] = Float8GetDatum(window_msgs > 0 ? (double) window_dead / window_msgs : 0);
	if (window_msgs == 0)
		nulls[8] = 'n';
	KappaExecCatalogSql("UPDATE kappa.source_status SET state = $3, partitions = $4::pg_catalog.int4[], "
						"messages_per_sec = $5, bytes_per_sec = $6, partitions_in_topic = $7, "
						"dead_letters_per_sec = $8, dead_letter_share = $9, "
						"pid = pg_catalog.pg_backend_pid(), updated_at = pg_catalog.now() "
						"WHERE source_id = $1 AND slot = $2",
						9, argtypes, values, nulls);
	if (ks_status.error_pending)
	{
		values[2] = CStringGetTextDatum(ks_status.last_error);
		KappaExecCatalogSql("UPDATE kappa.source_status SET last_error = $3, "
							"last_error_at = pg_catalog.now() "
							"WHERE source_id = $1 AND slot = $2", 3, argtypes, values, nulls);
		ks_status.error_pending = false;
	}
	for (int p = 0; p < nparts; p++)
	{
		Oid			t[3] = {INT4OID, INT4OID, INT8OID};
		Datum		v[3];

		if (!parts[p].exists || parts[p].hwm < 0)
			continue;
		v[0] = Int32GetDatum(ks_status.source->id);
		v[1] = Int32GetDatum(p);
		v[2] = Int64GetDatum(parts[p].hwm);
		KappaExecCatalogSql("UPDATE kappa.source_offsets SET high_watermark = $3 "
							"WHERE source_id = $1 AND partition = $2 "
							"AND high_watermark IS DISTINCT FROM $3", 3, t, v, NULL);
	}

	SPI_finish();
	KappaCommitTransaction();
	ks_status.reported = true;
	ks_status.reported_state = ks_status.state;
	ks_status.last_flush = GetCurrentTimestamp();
}
