/*-------------------------------------------------------------------------
 *
 * kafka_worker.c
 *	  The worker of one Kafka source slot: consumes its partitions and applies
 *	  them to the target, one batch per transaction, exactly once.
 *
 * Exactly once.  The next offset of every partition lives in
 * kappa.source_offsets.  A batch's rows (or stream rows, with every view
 * delta), its dead letters and the new offsets are written in one
 * transaction, and the offset rows are updated only if they still hold the
 * offsets the batch started from -- so a crash at any instant neither loses
 * nor duplicates a message, and a second worker on the same partitions (which
 * the session advisory lock should already prevent) cannot commit a
 * duplicate either.  Partitions are assigned explicitly with the stored
 * offsets; nothing is committed to Kafka.
 *
 * Never a silent loss.  librdkafka is told to report a stored offset the
 * broker no longer holds (auto.offset.reset = error) instead of skipping
 * ahead.  The source's on_data_loss decides: 'fail' stops the worker with
 * state failed and the missing range in last_error; 'record' writes the gap
 * to kappa.errors and moves the offset past it in one transaction, so that
 * messages produced = rows applied + dead letters + messages in gaps.
 *
 * Bad messages.  A batch runs in a subtransaction.  When it fails in one
 * message (decoding, type or constraint), that message becomes a dead letter
 * and the messages before it are applied again; when it fails while
 * applying a stream batch to its views, the range is bisected until the
 * offending messages are alone.  Errors that do not belong to a message
 * (cancel, shutdown, lack of resources, serialization failures) abort the
 * whole transaction and the worker exits; it is restarted and starts over
 * from the stored offsets.
 *
 * Whose rights.  The worker connects as the source's owner, whose INSERT
 * privilege (and row-level security policies) apply to the target.  The
 * target's own code -- triggers, defaults, constraints, domains -- runs as
 * the target's owner in a security-restricted operation, and the code of
 * continuous views as their owners (KappaBecomeUser), as logical
 * replication's apply worker does; the catalog is written as the
 * extension's owner.
 *
 * Modes.  A worker consumes; or, for a paused source (slot 0 only), holds
 * no partition but keeps the lag current; or, when it cannot go on (data
 * loss under 'fail', USAGE on the server or an option's privilege lost),
 * holds no partition, shows state failed with the reason, and keeps the lag
 * current until the cause is gone.
 *
 * Threads.  librdkafka runs its own threads.  Its log lines and errors are
 * routed to the consumer queue (log.queue) and served by
 * rd_kafka_consumer_poll in this process's main thread; the callbacks only
 * copy text into static buffers, which the main loop reports with elog.
 * The queue's event fd (a pipe) wakes the latch wait when messages arrive.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/params.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "rewrite/rewriteHandler.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "util.h"

/* Timings */
#define KW_CATALOG_CHECK_MS		1000	/* re-read the source between batches */
#define KW_STATUS_FLUSH_MS		2000	/* write kappa.source_status */
#define KW_WATERMARKS_MS		5000	/* ends of all the topic's partitions */
#define KW_METADATA_MS			5000	/* partitions of the topic */
#define KW_METADATA_BACKOFF_MIN_MS	500
#define KW_METADATA_BACKOFF_MAX_MS	10000
#define KW_BROKER_TIMEOUT_MS	500 /* metadata and offset requests */
#define KW_IDLE_WAIT_MS			1000
#define KW_WINDOW_SECONDS		60	/* dead-letter share over the last minute */

/* What the worker does. */
typedef enum KwMode
{
	KW_MODE_CONSUMING,
	KW_MODE_PAUSED,				/* the source is paused: no partition held */
	KW_MODE_BLOCKED,			/* a privilege is missing: rechecked often */
	KW_MODE_FAILED				/* lost data under 'fail': until a restart */
} KwMode;

/* Per-partition state of this worker. */
typedef struct KwPartition
{
	bool		exists;			/* the topic has it */
	bool		mine;			/* partition % parallelism == slot */
	bool		assigned;		/* given to librdkafka */
	bool		lost;			/* the broker no longer holds its next offset */
	int64		committed;		/* next offset, as stored */
	int64		hwm;			/* high watermark, -1 if unknown */
	int64		batch_next;		/* next offset after this batch, or -1 */
	int64		polled_next;	/* next offset after the last one polled */
} KwPartition;

typedef struct KwDead
{
	ErrorData  *edata;
} KwDead;

/* Messages and dead letters per second over the last minute. */
typedef struct KwWindow
{
	int64		second[KW_WINDOW_SECONDS];
	int64		messages[KW_WINDOW_SECONDS];
	int64		dead[KW_WINDOW_SECONDS];
} KwWindow;

static KappaWorkerArgs kw_args;
static KappaSource *kw_source;
static char *kw_source_name;
static KwMode kw_mode = KW_MODE_CONSUMING;

static MemoryContext kw_long_cxt;	/* lives as long as the worker */
static MemoryContext kw_target_cxt; /* decoder, rebuilt on change */
static MemoryContext kw_batch_cxt;	/* reset after each batch */
static MemoryContext kw_row_cxt;	/* reset after each message */

static rd_kafka_t *kw_rk;
static rd_kafka_queue_t *kw_queue;
static int	kw_pipe[2] = {-1, -1};

static KwPartition *kw_parts;
static int	kw_nparts;			/* allocated entries of kw_parts */
static int	kw_topic_partitions = -1;	/* as last seen, -1 unknown */

/* Bytes taken from the consumer queue since kw_wake_fetcher last ran, and
 * how many make it run again (half of queued.max.messages.kbytes). */
static int64 kw_polled_bytes;
static int64 kw_wake_bytes;

/* The current batch. */
static rd_kafka_message_t **kw_msgs;
static int	kw_nmsgs;
static int64 kw_batch_bytes;
static KwDead *kw_dead;
static TimestampTz kw_batch_deadline;
static bool kw_after_full_batch;	/* the last batch applied was full */
static bool kw_any_lost;		/* some partition has 'lost' set */

/* The target, as of the last batch. */
static bool kw_is_stream;
static TupleDesc kw_tupdesc;
static KappaDecoder *kw_decoder;
static int *kw_colmap;			/* insert parameter i is attribute
								 * kw_colmap[i] */
static Oid *kw_coltypes;
static int	kw_ncols;
static Datum *kw_values;
static bool *kw_nulls;
static TupleTableSlot *kw_slot;
static bool kw_fast_insert;		/* ExecSimpleRelationInsert (see below) */
static bool kw_target_rls;		/* row-level security on the target */
static int	kw_max_message_bytes;
static int	kw_failed_index;	/* message being processed, -1 in apply */

/* The INSERT of the general path, planned per batch. */
static char *kw_insert_sql;
static List *kw_insert_plans;	/* of PlannedStmt, in kw_batch_cxt */

/* Catalog plans (executed as the extension's owner). */
static SPIPlanPtr kw_offsets_plan;
static SPIPlanPtr kw_dead_plan;
static SPIPlanPtr kw_status_plan;

/* Status and statistics. */
static const char *kw_state = "starting";
static const char *kw_reported_state = NULL;
static char kw_last_error[1024];
static bool kw_error_pending;	/* kw_last_error not yet stored */
static TimestampTz kw_last_status_flush;
static TimestampTz kw_rate_window_start;
static int64 kw_rate_msgs;
static int64 kw_rate_bytes;
static double kw_msgs_per_sec;
static double kw_bytes_per_sec;
static KwWindow kw_window;

/* librdkafka callbacks copy here; the main loop reports. */
#define KW_LOG_LINES 16
static char kw_log_lines[KW_LOG_LINES][512];
static int	kw_log_count;
static char kw_cb_error[512];
static bool kw_cb_error_set;
static int	kw_cb_error_code;

static TimestampTz kw_next_metadata;
static TimestampTz kw_next_catalog_check;
static TimestampTz kw_next_watermarks;
static int	kw_metadata_backoff_ms = KW_METADATA_BACKOFF_MIN_MS;

static void kw_apply_batch(void);
static void kw_unassign_all(void);

/*
 * Callbacks: run from rd_kafka_consumer_poll in this thread (log.queue), but
 * still never call elog (it could longjmp through librdkafka): copy only.
 */
static void
kw_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (kw_log_count < KW_LOG_LINES)
		snprintf(kw_log_lines[kw_log_count++], sizeof(kw_log_lines[0]),
				 "%s: %s", fac, buf);
}

static void
kw_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	snprintf(kw_cb_error, sizeof(kw_cb_error), "%s", reason);
	kw_cb_error_code = err;
	kw_cb_error_set = true;
}

/*
 * kw_set_error records the last error for kappa.sources (stored at the next
 * status flush) and logs it once; its text (often librdkafka's) goes to the
 * log line's detail.
 */
static void
kw_set_error(const char *state, const char *fmt,...)
{
	char		buf[sizeof(kw_last_error)];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (strcmp(buf, kw_last_error) != 0)
		ereport(LOG,
				(errmsg("kafka source \"%s\" worker %d: %s", kw_source_name,
						kw_args.slot, state),
				 errdetail_internal("%s", buf)));
	strlcpy(kw_last_error, buf, sizeof(kw_last_error));
	kw_error_pending = true;
	kw_state = state;
}

/* kw_report_callbacks logs what librdkafka's callbacks left behind. */
static void
kw_report_callbacks(void)
{
	for (int i = 0; i < kw_log_count; i++)
		ereport(LOG,
				(errmsg("kafka source \"%s\": librdkafka log line", kw_source_name),
				 errdetail_internal("%s", kw_log_lines[i])));
	kw_log_count = 0;
	if (kw_cb_error_set)
	{
		kw_cb_error_set = false;
		kw_set_error("retrying", "%s", kw_cb_error);
	}
}

/*
 * kw_exit_cb destroys the consumer without waiting for the broker, so that
 * no librdkafka thread runs while the process exits.
 */
static void
kw_exit_cb(int code, Datum arg)
{
	if (kw_rk)
	{
		rd_kafka_t *rk = kw_rk;

		/* librdkafka waits for every message we still hold */
		for (int i = 0; i < kw_nmsgs; i++)
			rd_kafka_message_destroy(kw_msgs[i]);
		kw_nmsgs = 0;
		kw_rk = NULL;
		if (kw_queue)
			rd_kafka_queue_destroy(kw_queue);
		rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	}
}

static int
kw_batch_size(void)
{
	return kw_source->batch_size > 0 ? kw_source->batch_size : kappa_batch_size;
}

static int
kw_max_latency(void)
{
	return kw_source->max_latency_ms > 0 ? kw_source->max_latency_ms : kappa_max_latency_ms;
}

static int64
kw_batch_bytes_limit(void)
{
	return kw_source->batch_bytes > 0 ? kw_source->batch_bytes :
		(int64) kappa_batch_bytes_kb * 1024;
}

/*
 * kw_catalog_exec runs a kept plan as the extension's owner.  Returns
 * SPI_processed.
 */
static uint64
kw_catalog_exec(SPIPlanPtr plan, Datum *values, const char *nulls, int expected_rc)
{
	KappaSavedUser saved;
	int			rc;

	KappaBecomeExtensionOwner(&saved);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	KappaRestoreUser(&saved);
	if (rc != expected_rc)
		elog(ERROR, "pg_kappa catalog statement failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * kw_catalog_sql runs one statement as the extension's owner (SPI
 * connected).
 */
static void
kw_catalog_sql(const char *sql, int nargs, Oid *argtypes, Datum *values,
			   const char *nulls)
{
	KappaSavedUser saved;
	int			rc;

	KappaBecomeExtensionOwner(&saved);
	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0);
	KappaRestoreUser(&saved);
	if (rc < 0)
		elog(ERROR, "pg_kappa catalog statement failed: %s", SPI_result_code_string(rc));
}

static SPIPlanPtr
kw_prepare(const char *sql, int nargs, Oid *argtypes)
{
	KappaSavedUser saved;
	SPIPlanPtr	plan;

	KappaBecomeExtensionOwner(&saved);
	plan = SPI_prepare(sql, nargs, argtypes);
	KappaRestoreUser(&saved);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

/* kw_partitions_text renders this worker's assigned partitions as int[]. */
static char *
kw_partitions_text(void)
{
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int p = 0; p < kw_nparts; p++)
		if (kw_parts[p].assigned)
		{
			appendStringInfo(&buf, "%s%d", first ? "" : ",", p);
			first = false;
		}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * kw_update_rates folds the messages of a batch into the per-second rates,
 * over windows of at least one second, and into the last minute's window.
 */
static void
kw_update_rates(int64 msgs, int64 bytes, int64 dead)
{
	TimestampTz now = GetCurrentTimestamp();
	long		ms = TimestampDifferenceMilliseconds(kw_rate_window_start, now);
	int64		second = now / USECS_PER_SEC;
	int			i = second % KW_WINDOW_SECONDS;

	kw_rate_msgs += msgs;
	kw_rate_bytes += bytes;
	if (ms >= 1000)
	{
		kw_msgs_per_sec = kw_rate_msgs * 1000.0 / ms;
		kw_bytes_per_sec = kw_rate_bytes * 1000.0 / ms;
		kw_rate_msgs = 0;
		kw_rate_bytes = 0;
		kw_rate_window_start = now;
	}
	if (kw_window.second[i] != second)
	{
		kw_window.second[i] = second;
		kw_window.messages[i] = 0;
		kw_window.dead[i] = 0;
	}
	kw_window.messages[i] += msgs;
	kw_window.dead[i] += dead;
}

/*
 * kw_window_totals sums messages and dead letters over the last minute.
 */
static void
kw_window_totals(int64 *messages, int64 *dead)
{
	int64		now = GetCurrentTimestamp() / USECS_PER_SEC;

	*messages = 0;
	*dead = 0;
	for (int i = 0; i < KW_WINDOW_SECONDS; i++)
		if (kw_window.second[i] > now - KW_WINDOW_SECONDS)
		{
			*messages += kw_window.messages[i];
			*dead += kw_window.dead[i];
		}
}

/*
 * kw_flush_status writes state, partitions, rates, high watermarks and the
 * last error in a transaction of its own (outside any batch).
 */
static void
kw_flush_status(void)
{
	Oid			argtypes[9] = {INT4OID, INT4OID, TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID,
	INT4OID, FLOAT8OID, FLOAT8OID};
	Datum		values[9];
	char		nulls[9] = "         ";
	int64		window_msgs;
	int64		window_dead;

	kw_update_rates(0, 0, 0);
	kw_window_totals(&window_msgs, &window_dead);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();

	values[0] = Int32GetDatum(kw_source->id);
	values[1] = Int32GetDatum(kw_args.slot);
	values[2] = CStringGetTextDatum(kw_state);
	values[3] = CStringGetTextDatum(kw_partitions_text());
	values[4] = Float8GetDatum(kw_msgs_per_sec);
	values[5] = Float8GetDatum(kw_bytes_per_sec);
	values[6] = Int32GetDatum(kw_topic_partitions);
	if (kw_topic_partitions < 0)
		nulls[6] = 'n';
	values[7] = Float8GetDatum((double) window_dead / KW_WINDOW_SECONDS);
	values[8] = Float8GetDatum(window_msgs > 0 ? (double) window_dead / window_msgs : 0);
	if (window_msgs == 0)
		nulls[8] = 'n';
	kw_catalog_sql("UPDATE kappa.source_status SET state = $3, partitions = $4::pg_catalog.int4[], "
				   "messages_per_sec = $5, bytes_per_sec = $6, partitions_in_topic = $7, "
				   "dead_letters_per_sec = $8, dead_letter_share = $9, "
				   "pid = pg_catalog.pg_backend_pid(), updated_at = pg_catalog.now() "
				   "WHERE source_id = $1 AND slot = $2",
				   9, argtypes, values, nulls);
	if (kw_error_pending)
	{
		values[2] = CStringGetTextDatum(kw_last_error);
		kw_catalog_sql("UPDATE kappa.source_status SET last_error = $3, "
					   "last_error_at = pg_catalog.now() "
					   "WHERE source_id = $1 AND slot = $2", 3, argtypes, values, nulls);
		kw_error_pending = false;
	}
	for (int p = 0; p < kw_nparts; p++)
	{
		Oid			t[3] = {INT4OID, INT4OID, INT8OID};
		Datum		v[3];

		if (!kw_parts[p].exists || kw_parts[p].hwm < 0)
			continue;
		v[0] = Int32GetDatum(kw_source->id);
		v[1] = Int32GetDatum(p);
		v[2] = Int64GetDatum(kw_parts[p].hwm);
		kw_catalog_sql("UPDATE kappa.source_offsets SET high_watermark = $3 "
					   "WHERE source_id = $1 AND partition = $2 "
					   "AND high_watermark IS DISTINCT FROM $3", 3, t, v, NULL);
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	kw_reported_state = kw_state;
	kw_last_status_flush = GetCurrentTimestamp();
}

/*
 * kw_refresh_watermarks reads the cached high watermarks of the assigned
 * partitions (no broker round trip).
 */
static void
kw_refresh_watermarks(void)
{
	for (int p = 0; p < kw_nparts; p++)
	{
		int64		lo,
					hi;

		if (!kw_parts[p].assigned)
			continue;
		if (rd_kafka_get_watermark_offsets(kw_rk, kw_source->topic, p, &lo, &hi) ==
			RD_KAFKA_RESP_ERR_NO_ERROR && hi >= 0)
			kw_parts[p].hwm = hi;
	}
}

/*
 * kw_wake_fetcher makes librdkafka resume fetching if the consumer queue
 * had filled up.
 *
 * librdkafka (2.0.2) stops fetching every partition once the consumer queue
 * holds queued.max.messages.kbytes, and decides to fetch again only when a
 * broker thread next wakes up, which nothing does when the application
 * drains the queue: up to a second later.  A worker catching up on a backlog
 * drains the queue in less than that and would then wait for the rest
 * (measured: a 20-30% loss of throughput on bench/kafka_bench.sh, far more
 * when a batch holds more bytes than the queue).  Any request to a broker
 * wakes its thread, which then sees the room in the queue and fetches.  So
 * whenever the worker has taken half of queued.max.messages.kbytes out of
 * the queue -- only then can the queue have filled up since the last time --
 * it sends each leader of its partitions a ListOffsets request for their
 * ends, with rd_kafka_offsets_for_times and no wait: the call returns at
 * once with RD_KAFKA_RESP_ERR__TIMED_OUT, and librdkafka drops the answers
 * when they come.
 */
static void
kw_wake_fetcher(void)
{
	rd_kafka_topic_partition_list_t *list;

	list = rd_kafka_topic_partition_list_new(kw_nparts);
	for (int p = 0; p < kw_nparts; p++)
	{
		if (kw_parts[p].assigned)
			rd_kafka_topic_partition_list_add(list, kw_source->topic, p)->offset =
				RD_KAFKA_OFFSET_END;
	}
	if (list->cnt > 0)
		(void) rd_kafka_offsets_for_times(kw_rk, list, 0);
	rd_kafka_topic_partition_list_destroy(list);
	kw_polled_bytes = 0;
}

/*
 * kw_source_changed tells whether the catalog row with our source's id now
 * describes another source (dropped and created again, say after the
 * extension was recreated), or one whose settings the worker was started
 * with have changed (on_data_loss, after kappa.resume_source).
 */
static bool
kw_source_changed(KappaSource *s)
{
	return strcmp(s->name, kw_source->name) != 0 ||
		s->target != kw_source->target ||
		s->owner != kw_source->owner ||
		strcmp(s->topic, kw_source->topic) != 0 ||
		(s->server == NULL) != (kw_source->server == NULL) ||
		(s->server && strcmp(s->server, kw_source->server) != 0) ||
		(s->brokers == NULL) != (kw_source->brokers == NULL) ||
		(s->brokers && strcmp(s->brokers, kw_source->brokers) != 0) ||
		strcmp(s->format, kw_source->format) != 0 ||
		strcmp(s->start, kw_source->start) != 0 ||
		s->onDataLoss != kw_source->onDataLoss ||
		VARSIZE(s->options) != VARSIZE(kw_source->options) ||
		memcmp(s->options, kw_source->options, VARSIZE(s->options)) != 0;
}

/*
 * kw_check_privileges returns why the source's owner may not run it now
 * (USAGE on its server, the right to each of its options), or NULL.  Runs
 * in a transaction.
 */
static char *
kw_check_privileges(KappaSource *s)
{
	MemoryContext cxt = CurrentMemoryContext;
	char	   *volatile why = NULL;

	PG_TRY();
	{
		if (s->server != NULL)
		{
			ForeignServer *server = KappaKafkaServer(s->server);

			if (pg_foreign_server_aclcheck(server->serverid, s->owner, ACL_USAGE) != ACLCHECK_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied for foreign server %s", server->servername)));
		}
		KappaCheckSourceOptions(s, s->owner);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		why = psprintf("%s%s%s", edata->message,
					   edata->detail ? ": " : "", edata->detail ? edata->detail : "");
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return why;
}

/*
 * kw_enter_mode changes what the worker does: every mode but consuming
 * holds no partition.
 */
static void
kw_enter_mode(KwMode mode)
{
	if (mode == kw_mode)
		return;
	if (mode != KW_MODE_CONSUMING)
		kw_unassign_all();
	else
		kw_next_metadata = 0;	/* assign at once */
	kw_mode = mode;
	if (mode == KW_MODE_PAUSED)
	{
		kw_state = "paused";
		strlcpy(kw_last_error, "", sizeof(kw_last_error));
	}
	else if (mode == KW_MODE_CONSUMING)
		kw_state = "starting";
}

/*
 * kw_check_source re-reads the source and exits cleanly when it is gone,
 * replaced, resized or (for slots other than 0) paused; slot 0 of a paused
 * source stays, holding no partition.  Also rechecks the owner's
 * privileges.  Runs outside any batch.
 */
static void
kw_check_source(void)
{
	KappaSource *s;
	const char *why = NULL;
	char	   *blocked = NULL;
	bool		paused = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!OidIsValid(get_extension_oid("pg_kappa", true)))
		s = NULL;
	else
		s = KappaSourceLoad(kw_source->id, true);
	if (s == NULL)
		why = "dropped";
	else if (kw_source_changed(s))
		why = "replaced";
	else if (s->paused && kw_args.slot > 0)
		why = "paused";
	else if (kw_args.slot >= s->parallelism)
		why = "resized";
	else if (!s->paused)
	{
		char	   *reason = kw_check_privileges(s);

		if (reason != NULL)
			blocked = MemoryContextStrdup(kw_long_cxt, reason);
	}
	if (s != NULL)
		paused = s->paused;
	PopActiveSnapshot();
	CommitTransactionCommand();

	if (why)
	{
		ereport(LOG,
				(errmsg("kafka source \"%s\" worker %d stopping: the source was %s",
						kw_source_name, kw_args.slot, why)));
		if (kw_args.managed)
			KappaLauncherWake();
		/* a replaced source starts over with a new worker */
		proc_exit(strcmp(why, "replaced") == 0 ? 1 : 0);
	}

	if (kw_mode == KW_MODE_FAILED)
		return;					/* only a restart ends it */
	if (paused)
		kw_enter_mode(KW_MODE_PAUSED);
	else if (blocked != NULL)
	{
		kw_enter_mode(KW_MODE_BLOCKED);
		kw_set_error("failed", "%s", blocked);
		pfree(blocked);
	}
	else if (kw_mode != KW_MODE_CONSUMING)
	{
		kw_enter_mode(KW_MODE_CONSUMING);
		strlcpy(kw_last_error, "", sizeof(kw_last_error));
	}
}

/*
 * kw_ensure_parts grows kw_parts to hold n partitions.
 */
static void
kw_ensure_parts(int n)
{
	if (n <= kw_nparts)
		return;
	if (kw_parts == NULL)
		kw_parts = MemoryContextAllocZero(kw_long_cxt, n * sizeof(KwPartition));
	else
	{
		kw_parts = repalloc(kw_parts, n * sizeof(KwPartition));
		memset(kw_parts + kw_nparts, 0, (n - kw_nparts) * sizeof(KwPartition));
	}
	for (int p = kw_nparts; p < n; p++)
	{
		kw_parts[p].hwm = -1;
		kw_parts[p].batch_next = -1;
	}
	kw_nparts = n;
}

/*
 * kw_list_offsets asks the leaders of the partitions p with want[p] for an
 * offset of each, by timestamp 'ts' (milliseconds since 1970, or
 * RD_KAFKA_OFFSET_BEGINNING / RD_KAFKA_OFFSET_END for the first and next
 * offsets), all in one round of requests.  Stores the answers in offsets[p]
 * and returns NULL, or returns librdkafka's error text.
 */
static const char *
kw_list_offsets(int npart, const bool *want, int64 ts, int64 *offsets)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(npart);
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (int p = 0; p < npart; p++)
	{
		if (want[p])
			rd_kafka_topic_partition_list_add(list, kw_source->topic, p)->offset = ts;
	}
	if (list->cnt > 0)
		err = rd_kafka_offsets_for_times(kw_rk, list, KW_BROKER_TIMEOUT_MS);
	for (int i = 0; i < list->cnt && err == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
	{
		err = list->elems[i].err;
		offsets[list->elems[i].partition] = list->elems[i].offset;
	}
	rd_kafka_topic_partition_list_destroy(list);
	return err ? rd_kafka_err2str(err) : NULL;
}

/*
 * kw_refresh_all_watermarks looks up the end of every partition of the
 * topic, held by this worker or not, in one round of requests: what makes
 * the lag of unassigned partitions, and of a paused or failed source, show.
 */
static void
kw_refresh_all_watermarks(void)
{
	bool	   *want;
	int64	   *ends;
	const char *error;

	if (kw_nparts == 0)
		return;
	want = palloc0(sizeof(bool) * kw_nparts);
	ends = palloc(sizeof(int64) * kw_nparts);
	for (int p = 0; p < kw_nparts; p++)
		want[p] = kw_parts[p].exists;
	error = kw_list_offsets(kw_nparts, want, RD_KAFKA_OFFSET_END, ends);
	if (error == NULL)
	{
		for (int p = 0; p < kw_nparts; p++)
			if (want[p] && ends[p] >= 0)
				kw_parts[p].hwm = ends[p];
	}
	pfree(want);
	pfree(ends);
}

/*
 * kw_resolve_starts finds the first offset of the partitions p with want[p]
 * (partitions without a stored offset yet) into starts[p], from the source's
 * start: earliest, latest or a timestamp (the first message at or after it;
 * where the broker has none -- or answers -1 as some do -- the partition's
 * end).  Returns false if the broker could not tell (the caller retries
 * later).
 */
static bool
kw_resolve_starts(int npart, const bool *want, int64 *starts)
{
	int64	   *ends = palloc(sizeof(int64) * npart);
	const char *error;
	const char *what = "offsets";

	error = kw_list_offsets(npart, want, RD_KAFKA_OFFSET_END, ends);
	if (error == NULL)
	{
		for (int p = 0; p < npart; p++)
		{
			if (want[p])
				kw_parts[p].hwm = ends[p];
		}
		if (strcmp(kw_source->start, "earliest") == 0)
			error = kw_list_offsets(npart, want, RD_KAFKA_OFFSET_BEGINNING, starts);
		else if (strcmp(kw_source->start, "latest") == 0)
			memcpy(starts, ends, sizeof(int64) * npart);
		else
		{
			TimestampTz ts = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																	 CStringGetDatum(kw_source->start),
																	 ObjectIdGetDatum(InvalidOid),
																	 Int32GetDatum(-1)));
			int64		ms = ts / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * 86400 * 1000;

			what = "offsets for times";
			error = kw_list_offsets(npart, want, ms, starts);
			for (int p = 0; p < npart && error == NULL; p++)
			{
				if (want[p] && starts[p] < 0)
					starts[p] = ends[p];
			}
		}
	}
	pfree(ends);
	if (error != NULL)
	{
		kw_set_error("retrying", "could not look up %s in topic \"%s\": %s",
					 what, kw_source->topic, error);
		return false;
	}
	return true;
}

/*
 * kw_assign gives partitions to librdkafka at the given offsets.
 */
static void
kw_assign(rd_kafka_topic_partition_list_t *add)
{
	rd_kafka_error_t *error;

	if (add->cnt == 0)
		return;
	error = rd_kafka_incremental_assign(kw_rk, add);
	if (error)
	{
		char	   *msg = pstrdup(rd_kafka_error_string(error));

		rd_kafka_error_destroy(error);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not assign partitions of topic \"%s\" to kafka source \"%s\"",
						kw_source->topic, kw_source_name),
				 errdetail_internal("%s", msg)));
	}
	for (int i = 0; i < add->cnt; i++)
		kw_parts[add->elems[i].partition].assigned = true;
}

/*
 * kw_unassign takes partition p away from librdkafka (messages of it still
 * in the queue are dropped by kw_poll).
 */
static void
kw_unassign(int p)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
	rd_kafka_error_t *error;

	rd_kafka_topic_partition_list_add(list, kw_source->topic, p);
	error = rd_kafka_incremental_unassign(kw_rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (error)
	{
		char	   *msg = pstrdup(rd_kafka_error_string(error));

		rd_kafka_error_destroy(error);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not unassign partition %d of topic \"%s\" from kafka source \"%s\"",
						p, kw_source->topic, kw_source_name),
				 errdetail_internal("%s", msg)));
	}
	kw_parts[p].assigned = false;
	kw_parts[p].lost = false;
}

static void
kw_unassign_all(void)
{
	for (int p = 0; p < kw_nparts; p++)
		if (kw_parts[p].assigned)
			kw_unassign(p);
	kw_any_lost = false;
}

/*
 * kw_refresh_assignment reads the topic's partitions from the broker,
 * stores a start offset for every partition that has none yet (whichever
 * slot reads it: the lag then counts partitions no worker reads), and
 * assigns those of this slot that are not assigned yet, at their stored
 * offsets.  On failure it records the error and backs off.
 */
static void
kw_refresh_assignment(void)
{
	rd_kafka_topic_t *rkt;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;
	int			npart;
	bool		missing = false;
	int			nnew = 0;
	int			nunknown = 0;
	int64	   *starts;
	bool	   *known;
	bool	   *want;

	rkt = rd_kafka_topic_new(kw_rk, kw_source->topic, NULL);
	err = rd_kafka_metadata(kw_rk, 0, rkt, &md, KW_BROKER_TIMEOUT_MS);
	rd_kafka_topic_destroy(rkt);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].err)
		err = md->topics[0].err;
	if (err)
	{
		if (md)
			rd_kafka_metadata_destroy(md);
		if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
			kw_set_error("waiting", "topic \"%s\" does not exist (yet)", kw_source->topic);
		else
			kw_set_error("retrying", "could not read metadata of topic \"%s\": %s",
						 kw_source->topic, rd_kafka_err2str(err));
		kw_next_metadata = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   kw_metadata_backoff_ms);
		kw_metadata_backoff_ms = Min(kw_metadata_backoff_ms * 2, KW_METADATA_BACKOFF_MAX_MS);
		return;
	}

	npart = md->topics[0].partition_cnt;
	kw_ensure_parts(npart);
	kw_topic_partitions = npart;
	for (int i = 0; i < npart; i++)
	{
		int32		p = md->topics[0].partitions[i].id;

		if (p >= 0 && p < npart)
		{
			kw_parts[p].exists = true;
			kw_parts[p].mine = (p % kw_source->parallelism) == kw_args.slot;
			if (kw_parts[p].mine && !kw_parts[p].assigned)
				nnew++;
		}
	}
	rd_kafka_metadata_destroy(md);

	starts = palloc(sizeof(int64) * npart);
	known = palloc0(sizeof(bool) * npart);
	want = palloc0(sizeof(bool) * npart);

	/* read the stored offsets */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	{
		Oid			t[1] = {INT4OID};
		Datum		v[1] = {Int32GetDatum(kw_source->id)};

		kw_catalog_sql("SELECT partition, next_offset FROM kappa.source_offsets "
					   "WHERE source_id = $1", 1, t, v, NULL);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 1, &isnull));
			int64		o = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 2, &isnull));

			if (p >= 0 && p < npart)
			{
				starts[p] = o;
				known[p] = true;
			}
		}
	}

	/*
	 * Resolve and store the start of partitions never seen, mine or not --
	 * only when consuming: a paused source may be one a restore has not
	 * finished loading (its offsets come later, see
	 * kappa_source_arrives_paused).
	 */
	for (int p = 0; p < npart; p++)
	{
		want[p] = kw_mode == KW_MODE_CONSUMING && kw_parts[p].exists && !known[p];
		if (want[p])
			nunknown++;
	}
	if (nunknown > 0)
	{
		if (!kw_resolve_starts(npart, want, starts))
			missing = true;
		else
		{
			for (int p = 0; p < npart; p++)
			{
				Oid			t[4] = {INT4OID, INT4OID, INT8OID, INT8OID};
				Datum		v[4];
				char		n[4] = "    ";

				if (!want[p])
					continue;
				v[0] = Int32GetDatum(kw_source->id);
				v[1] = Int32GetDatum(p);
				v[2] = Int64GetDatum(starts[p]);
				v[3] = Int64GetDatum(kw_parts[p].hwm);
				if (kw_parts[p].hwm < 0)
					n[3] = 'n';
				kw_catalog_sql("INSERT INTO kappa.source_offsets "
							   "(source_id, partition, next_offset, high_watermark) "
							   "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", 4, t, v, n);
				if (SPI_processed == 1)
					known[p] = true;
				else
				{
					/* another worker stored it first: take its offset */
					kw_catalog_sql("SELECT next_offset FROM kappa.source_offsets "
								   "WHERE source_id = $1 AND partition = $2", 2, t, v, NULL);
					if (SPI_processed == 1)
					{
						bool		isnull;

						starts[p] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
																SPI_tuptable->tupdesc, 1,
																&isnull));
						known[p] = true;
					}
				}
			}
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();

	/* assign mine, when consuming */
	if (nnew > 0 && kw_mode == KW_MODE_CONSUMING)
	{
		rd_kafka_topic_partition_list_t *add = rd_kafka_topic_partition_list_new(nnew);

		for (int p = 0; p < npart; p++)
		{
			if (!kw_parts[p].mine || kw_parts[p].assigned || !known[p])
				continue;
			rd_kafka_topic_partition_list_add(add, kw_source->topic, p)->offset = starts[p];
			kw_parts[p].committed = starts[p];
			kw_parts[p].polled_next = starts[p];
		}
		kw_assign(add);
		if (add->cnt > 0)
			ereport(LOG,
					(errmsg("kafka source \"%s\" worker %d: assigned %d partition(s) of topic \"%s\"",
							kw_source_name, kw_args.slot, add->cnt, kw_source->topic)));
		rd_kafka_topic_partition_list_destroy(add);
	}
	pfree(starts);
	pfree(known);
	pfree(want);

	if (missing)
	{
		kw_next_metadata = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   kw_metadata_backoff_ms);
		kw_metadata_backoff_ms = Min(kw_metadata_backoff_ms * 2, KW_METADATA_BACKOFF_MAX_MS);
		return;
	}
	kw_metadata_backoff_ms = KW_METADATA_BACKOFF_MIN_MS;
	kw_next_metadata = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KW_METADATA_MS);
	if (kw_mode == KW_MODE_CONSUMING && strcmp(kw_state, "running") != 0)
		kw_state = "running";
}

/*
 * kw_record_gap writes a gap (offsets first..last of partition p are gone
 * from the broker) to kappa.errors and moves the stored offset past it, in
 * one transaction; false if the stored offset was changed concurrently.
 */
static bool
kw_record_gap(int p, int64 first, int64 last, const char *error)
{
	Oid			dt[4] = {INT4OID, INT4OID, INT8OID, INT8OID};
	Datum		dv[4];
	uint64		updated;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_connect();
	dv[0] = Int32GetDatum(kw_source->id);
	dv[1] = Int32GetDatum(p);
	dv[2] = Int64GetDatum(last + 1);
	dv[3] = Int64GetDatum(first);
	kw_catalog_sql("UPDATE kappa.source_offsets SET next_offset = $3, updated_at = pg_catalog.now() "
				   "WHERE source_id = $1 AND partition = $2 AND next_offset = $4",
				   4, dt, dv, NULL);
	updated = SPI_processed;
	if (updated == 1)
	{
		Oid			gt[6] = {INT4OID, TEXTOID, INT4OID, INT8OID, INT8OID, TEXTOID};
		Datum		gv[6];

		gv[0] = Int32GetDatum(kw_source->id);
		gv[1] = CStringGetTextDatum(kw_source->topic);
		gv[2] = Int32GetDatum(p);
		gv[3] = Int64GetDatum(first);
		gv[4] = Int64GetDatum(last);
		gv[5] = CStringGetTextDatum(error);
		kw_catalog_sql("INSERT INTO kappa.dead_letters "
					   "(source_id, kind, topic, partition, \"offset\", last_offset, error) "
					   "VALUES ($1, 'gap', $2, $3, $4, $5, $6)", 6, gt, gv, NULL);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return updated == 1;
}

/*
 * kw_handle_data_loss deals with partitions whose next offset the broker no
 * longer holds (see the file header).  Runs between batches.
 */
static void
kw_handle_data_loss(void)
{
	kw_any_lost = false;
	for (int p = 0; p < kw_nparts; p++)
	{
		int64		lo,
					hi;
		int64		first = kw_parts[p].committed;
		rd_kafka_resp_err_t err;
		char	   *what;

		if (!kw_parts[p].lost)
			continue;
		err = rd_kafka_query_watermark_offsets(kw_rk, kw_source->topic, p, &lo, &hi,
											   KW_BROKER_TIMEOUT_MS * 4);
		if (err)
		{
			kw_set_error("retrying", "could not look up the offsets of partition %d of topic \"%s\": %s",
						 p, kw_source->topic, rd_kafka_err2str(err));
			kw_any_lost = true;
			continue;
		}
		kw_parts[p].hwm = hi;

		if (first > hi)
		{
			kw_enter_mode(KW_MODE_FAILED);
			kw_set_error("failed", "the next offset %lld of partition %d of topic \"%s\" is past its end (%lld): "
						 "the topic was deleted and created again, or the broker lost its log. "
						 "Drop the source and create it again to read the topic from its start.",
						 (long long) first, p, kw_source->topic, (long long) hi);
			return;
		}
		if (first >= lo)
		{
			/* nothing is missing (the log moved back?): read on from there */
			rd_kafka_topic_partition_list_t *add = rd_kafka_topic_partition_list_new(1);

			kw_unassign(p);
			rd_kafka_topic_partition_list_add(add, kw_source->topic, p)->offset = first;
			kw_assign(add);
			rd_kafka_topic_partition_list_destroy(add);
			continue;
		}

		what = psprintf("the broker no longer holds offsets %lld to %lld of partition %d of topic \"%s\" "
						"(%lld messages lost)",
						(long long) first, (long long) (lo - 1), p, kw_source->topic,
						(long long) (lo - first));
		if (kw_source->onDataLoss == KAPPA_DATA_LOSS_FAIL)
		{
			kw_enter_mode(KW_MODE_FAILED);
			kw_set_error("failed", "%s; on_data_loss is 'fail'. To record the gap in kappa.errors and go on: "
						 "SELECT kappa.resume_source('%s', on_data_loss => 'record'); or rewind the source.",
						 what, kw_source_name);
			return;
		}

		/* record it, then read on from the broker's first offset */
		if (!kw_record_gap(p, first, lo - 1, what))
		{
			ereport(LOG,
					(errmsg("kafka source \"%s\" worker %d stopping: the offsets of partition %d were changed concurrently",
							kw_source_name, kw_args.slot, p)));
			proc_exit(1);
		}
		ereport(LOG,
				(errmsg("kafka source \"%s\": recorded a gap in kappa.errors", kw_source_name),
				 errdetail_internal("%s", what)));
		kw_parts[p].committed = lo;
		kw_parts[p].polled_next = lo;
		{
			rd_kafka_topic_partition_list_t *add = rd_kafka_topic_partition_list_new(1);

			kw_unassign(p);
			rd_kafka_topic_partition_list_add(add, kw_source->topic, p)->offset = lo;
			kw_assign(add);
			rd_kafka_topic_partition_list_destroy(add);
		}
	}
}

/*
 * kw_can_insert_directly tells whether rows can go into the table through
 * ExecSimpleRelationInsert (constraints, indexes, row triggers, generated
 * columns -- what logical replication's apply uses) instead of a planned
 * INSERT, about twice as fast.  Only for a plain table without what that
 * path leaves out: row-level security, rules, statement-level or
 * transition-table triggers, identity columns (the executor fills those),
 * partitions (routing).  Everything else takes the planned INSERT.
 */
static bool
kw_can_insert_directly(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TriggerDesc *trig = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relrowsecurity || rel->rd_rel->relhasrules)
		return false;
	if (trig && (trig->trig_insert_before_statement ||
				 trig->trig_insert_after_statement ||
				 trig->trig_insert_new_table ||
				 trig->trig_insert_instead_row))
		return false;
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped && TupleDescAttr(desc, i)->attidentity)
			return false;
	return true;
}

/*
 * kw_prepare_target (re)builds the decoder and the shape of the INSERT or
 * the stream slot for the target's current row type.  Called in each batch
 * transaction with the target open, as the target's owner; cheap when
 * nothing changed.
 */
static void
kw_prepare_target(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;
	StringInfoData sql;

	/* cheap, and triggers, policies or rules may come and go: every batch */
	kw_fast_insert = !kw_is_stream && kw_can_insert_directly(rel);
	kw_target_rls = rel->rd_rel->relrowsecurity;

	if (kw_tupdesc && equalTupleDescs(kw_tupdesc, desc))
		return;

	if (kw_slot)
	{
		ExecDropSingleTupleTableSlot(kw_slot);
		kw_slot = NULL;
	}
	MemoryContextReset(kw_target_cxt);
	old = MemoryContextSwitchTo(kw_target_cxt);

	kw_tupdesc = CreateTupleDescCopyConstr(desc);
	kw_is_stream = KappaIsStream(RelationGetRelid(rel));
	kw_fast_insert = !kw_is_stream && kw_can_insert_directly(rel);
	kw_decoder = KappaDecoderCreate(KappaParseFormat(kw_source->format), kw_tupdesc,
									KappaFormatOptions(kw_source));
	kw_values = palloc0(sizeof(Datum) * desc->natts);
	kw_nulls = palloc0(sizeof(bool) * desc->natts);
	kw_colmap = palloc0(sizeof(int) * desc->natts);
	kw_coltypes = palloc0(sizeof(Oid) * desc->natts);
	kw_ncols = 0;
	kw_insert_sql = NULL;

	if (kw_is_stream)
	{
		MemoryContextSwitchTo(kw_long_cxt);
		kw_slot = MakeSingleTupleTableSlot(kw_tupdesc, &TTSOpsVirtual);
		MemoryContextSwitchTo(kw_target_cxt);
	}
	else
	{
		initStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s.%s (",
						 quote_identifier(get_namespace_name(RelationGetNamespace(rel))),
						 quote_identifier(RelationGetRelationName(rel)));
		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (att->attisdropped || att->attgenerated || att->attidentity)
				continue;
			appendStringInfo(&sql, "%s%s", kw_ncols ? ", " : "",
							 quote_identifier(NameStr(att->attname)));
			kw_coltypes[kw_ncols] = att->atttypid;
			kw_colmap[kw_ncols++] = i;
		}
		appendStringInfoString(&sql, ") VALUES (");
		for (int i = 0; i < kw_ncols; i++)
			appendStringInfo(&sql, "%s$%d", i ? ", " : "", i + 1);
		appendStringInfoChar(&sql, ')');
		kw_insert_sql = sql.data;
	}
	MemoryContextSwitchTo(old);
}

/*
 * kw_plan_insert plans the INSERT of the general path for this batch (in
 * kw_batch_cxt): the privileges and row-level security policies that apply
 * are the source owner's (the result relation is checked as that role, as
 * a view checks as its owner), while the INSERT runs as the current user,
 * the target's owner.  Planned per batch, so that policies, rules and
 * triggers added meanwhile apply.
 */
static void
kw_plan_insert(void)
{
	MemoryContext old = MemoryContextSwitchTo(kw_batch_cxt);
	RawStmt    *raw = linitial_node(RawStmt, raw_parser(kw_insert_sql, RAW_PARSE_DEFAULT));
	Query	   *query;
	List	   *rewritten;

	query = parse_analyze_fixedparams(raw, kw_insert_sql, kw_coltypes, kw_ncols, NULL);
	rt_fetch(query->resultRelation, query->rtable)->checkAsUser = kw_source->owner;
	rewritten = QueryRewrite(query);
	kw_insert_plans = pg_plan_queries(rewritten, kw_insert_sql, 0, NULL);
	MemoryContextSwitchTo(old);
}

/*
 * kw_exec_insert runs the planned INSERT for the current message's values
 * (kw_values, kw_nulls), as SPI would: a new command, with a snapshot that
 * sees the rows inserted before.
 */
static void
kw_exec_insert(void)
{
	ParamListInfo params = makeParamList(kw_ncols);
	ListCell   *lc;

	for (int c = 0; c < kw_ncols; c++)
	{
		params->params[c].value = kw_values[kw_colmap[c]];
		params->params[c].isnull = kw_nulls[kw_colmap[c]];
		params->params[c].pflags = PARAM_FLAG_CONST;
		params->params[c].ptype = kw_coltypes[c];
	}
	foreach(lc, kw_insert_plans)
	{
		PlannedStmt *pstmt = lfirst_node(PlannedStmt, lc);
		QueryDesc  *qd;

		CommandCounterIncrement();
		if (pstmt->commandType == CMD_UTILITY)
		{
			/* a rule's NOTIFY, say */
			ProcessUtility(pstmt, kw_insert_sql, false, PROCESS_UTILITY_QUERY,
						   params, NULL, None_Receiver, NULL);
			continue;
		}
		PushCopiedSnapshot(GetActiveSnapshot());
		UpdateActiveSnapshotCommandId();
		qd = CreateQueryDesc(pstmt, kw_insert_sql, GetActiveSnapshot(), InvalidSnapshot,
							 None_Receiver, params, NULL, 0);
		ExecutorStart(qd, 0);
		ExecutorRun(qd, ForwardScanDirection, 0, true);
		ExecutorFinish(qd);
		ExecutorEnd(qd);
		FreeQueryDesc(qd);
		PopActiveSnapshot();
	}
}

/*
 * kw_insert_range decodes and stores messages [lo, hi) that are not dead
 * letters yet; for a stream it then applies them.  Raises the first error;
 * kw_failed_index says which message raised it (-1: the stream apply).
 */
static void
kw_insert_range(Relation rel, int lo, int hi)
{
	KappaBatch *batch = NULL;
	MemoryContext old;
	bool		use_time_and_headers = KappaDecoderUsesTimeAndHeaders(kw_decoder);

	EState	   *estate = NULL;
	ResultRelInfo *rri = NULL;
	TupleTableSlot *tslot = NULL;

	kw_failed_index = -1;
	if (kw_is_stream)
		batch = KappaBatchCreate(rel, kw_batch_cxt);
	else if (kw_fast_insert)
	{
		RangeTblEntry *rte = makeNode(RangeTblEntry);

		estate = CreateExecutorState();
		rte->rtekind = RTE_RELATION;
		rte->relid = RelationGetRelid(rel);
		rte->relkind = rel->rd_rel->relkind;
		rte->rellockmode = RowExclusiveLock;
		ExecInitRangeTable(estate, list_make1(rte));
		rri = makeNode(ResultRelInfo);
		InitResultRelInfo(rri, rel, 1, NULL, 0);
		estate->es_opened_result_relations =
			lappend(estate->es_opened_result_relations, rri);
		estate->es_output_cid = GetCurrentCommandId(true);
		ExecOpenIndices(rri, false);
		tslot = table_slot_create(rel, &estate->es_tupleTable);
		AfterTriggerBeginQuery();
	}

	for (int i = lo; i < hi; i++)
	{
		rd_kafka_message_t *m = kw_msgs[i];
		KappaMessageMeta meta;
		rd_kafka_headers_t *hdrs = NULL;

		if (kw_dead[i].edata)
			continue;
		kw_failed_index = i;
		MemoryContextReset(kw_row_cxt);
		old = MemoryContextSwitchTo(kw_row_cxt);

		if (m->len > (size_t) kw_max_message_bytes)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("message of %zu bytes exceeds max_message_bytes (%d)",
							m->len, kw_max_message_bytes)));

		meta.key = m->key;
		meta.keylen = m->key_len;
		meta.partition = m->partition;
		meta.offset = m->offset;
		meta.timestamp_ms = -1;
		if (use_time_and_headers)
		{
			meta.timestamp_ms = rd_kafka_message_timestamp(m, NULL);
			if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
				hdrs = NULL;
		}
		meta.headers = hdrs;

		KappaDecode(kw_decoder, m->payload ? (const char *) m->payload : "",
					m->payload ? m->len : 0, &meta, kw_values, kw_nulls);

		if (kw_is_stream)
		{
			ExecClearTuple(kw_slot);
			memcpy(kw_slot->tts_values, kw_values, sizeof(Datum) * kw_tupdesc->natts);
			memcpy(kw_slot->tts_isnull, kw_nulls, sizeof(bool) * kw_tupdesc->natts);
			ExecStoreVirtualTuple(kw_slot);
			KappaBatchAdd(batch, kw_slot);
			if (KappaBatchPushDue(batch))
			{
				/* an error from here on is the views', not this message's */
				kw_failed_index = -1;
				KappaBatchPush(batch);
			}
		}
		else if (kw_fast_insert)
		{
			ExecClearTuple(tslot);
			memcpy(tslot->tts_values, kw_values, sizeof(Datum) * kw_tupdesc->natts);
			memcpy(tslot->tts_isnull, kw_nulls, sizeof(bool) * kw_tupdesc->natts);
			ExecStoreVirtualTuple(tslot);
			ExecSimpleRelationInsert(rri, estate, tslot);
			ResetPerTupleExprContext(estate);
		}
		else
			kw_exec_insert();
		MemoryContextSwitchTo(old);
	}

	kw_failed_index = -1;
	if (batch)
	{
		KappaBatchApply(batch);
		KappaBatchDestroy(batch);
	}
	if (estate)
	{
		/* immediate AFTER triggers (deferred constraints) fire here */
		AfterTriggerEndQuery(estate);
		ExecCloseIndices(rri);
		ExecResetTupleTable(estate->es_tupleTable, false);
		FreeExecutorState(estate);
	}
}

/*
 * kw_error_is_message_error tells whether an error belongs to the message
 * being processed (so it becomes a dead letter) rather than to the system
 * (then the transaction aborts and the worker starts over).
 */
static bool
kw_error_is_message_error(ErrorData *edata)
{
	int			class = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	if (edata->elevel > ERROR)
		return false;
	if (class == ERRCODE_TRANSACTION_ROLLBACK ||	/* 40: serialization,
													 * deadlock */
		class == ERRCODE_INSUFFICIENT_RESOURCES ||	/* 53 */
		class == ERRCODE_OPERATOR_INTERVENTION ||	/* 57: cancel, shutdown */
		class == ERRCODE_SYSTEM_ERROR ||	/* 58 */
		class == ERRCODE_INTERNAL_ERROR ||	/* XX */
		edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		(edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE && !kw_target_rls) ||
		edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE ||
		edata->sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		return false;
	/* class 54 (program limit: an oversize message or value) is the message's */
	return true;
}

/*
 * kw_try_range runs kw_insert_range in a subtransaction.  Returns NULL on
 * success; on failure rolls the subtransaction back and returns the error,
 * with *failed set to the failing message (or -1).  Errors that are not the
 * messages' fault are rethrown.
 */
static ErrorData *
kw_try_range(Relation rel, int lo, int hi, int *failed)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		kw_insert_range(rel, lo, hi);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(kw_batch_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (!kw_error_is_message_error(edata))
			ReThrowError(edata);
		*failed = kw_failed_index;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return edata;
}

/* kw_live_count counts messages in [lo, hi) that are not dead letters. */
static int
kw_live_count(int lo, int hi)
{
	int			n = 0;

	for (int i = lo; i < hi; i++)
		if (!kw_dead[i].edata)
			n++;
	return n;
}

/*
 * kw_process_range applies messages [lo, hi), isolating bad messages as
 * dead letters (see the file header).
 */
static void
kw_process_range(Relation rel, int lo, int hi)
{
	while (lo < hi)
	{
		int			failed = -1;
		ErrorData  *edata;
		int			live = kw_live_count(lo, hi);

		if (live == 0)
			return;
		edata = kw_try_range(rel, lo, hi, &failed);
		if (edata == NULL)
			return;
		if (failed >= lo && failed < hi)
		{
			/* the message at 'failed' is bad; those before it were fine */
			kw_dead[failed].edata = edata;
			if (failed > lo)
				kw_process_range(rel, lo, failed);
			lo = failed + 1;
			continue;
		}
		/* failed while applying to the views: bisect */
		if (live == 1)
		{
			for (int i = lo; i < hi; i++)
				if (!kw_dead[i].edata)
					kw_dead[i].edata = edata;
			return;
		}
		{
			int			mid = lo + (hi - lo) / 2;

			kw_process_range(rel, lo, mid);
			kw_process_range(rel, mid, hi);
			return;
		}
	}
}

/*
 * kw_dead_letter_text renders an error for kappa.errors on one line:
 * message, then detail, then the context lines in parentheses, separated by
 * "; " (e.g. the decoder's "kafka message at partition 0, offset 7, field
 * "id": "x"").
 */
static char *
kw_dead_letter_text(ErrorData *edata)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, edata->message ? edata->message : "error");
	if (edata->detail)
		appendStringInfo(&buf, ": %s", edata->detail);
	if (edata->context)
	{
		appendStringInfoString(&buf, " (");
		for (const char *c = edata->context; *c; c++)
		{
			if (*c == '\n')
				appendStringInfoString(&buf, "; ");
			else
				appendStringInfoChar(&buf, *c);
		}
		appendStringInfoChar(&buf, ')');
	}
	return buf.data;
}

static bytea *
kw_bytea(const void *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), data, len);
	return b;
}

/*
 * kw_check_insert_privilege raises an error unless the source's owner may
 * INSERT into the target (into all its columns, or the table): checked per
 * batch, since the direct path checks none and a lost privilege must stop
 * the source rather than turn every message into a dead letter.
 */
static void
kw_check_insert_privilege(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	AclResult	aclresult = pg_class_aclcheck(relid, kw_source->owner, ACL_INSERT);

	if (aclresult != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(relid, kw_source->owner, ACL_INSERT,
								  ACLMASK_ALL) != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, RelationGetRelationName(rel));
}

/*
 * kw_apply_batch applies the current batch in one transaction: rows, dead
 * letters, offsets and status.
 */
static void
kw_apply_batch(void)
{
	Relation	rel;
	int64		nbytes = 0;
	int64		ndead = 0;
	MemoryContext old;
	KappaSavedUser saved;

	if (kw_nmsgs == 0)
		return;

	old = MemoryContextSwitchTo(kw_batch_cxt);
	kw_dead = palloc0(sizeof(KwDead) * kw_nmsgs);
	MemoryContextSwitchTo(old);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "pg_kappa: applying a batch");
	SPI_connect();

	rel = try_relation_open(kw_source->target, RowExclusiveLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the target of kafka source \"%s\" was dropped", kw_source_name)));
	kw_check_insert_privilege(rel);

	/* the target's code runs as its owner (see the file header) */
	KappaBecomeUser(rel->rd_rel->relowner, &saved);
	kw_prepare_target(rel);
	kw_max_message_bytes = KappaSourceMaxMessageBytes(kw_source);
	if (!kw_is_stream && !kw_fast_insert)
		kw_plan_insert();

	/*
	 * Deferred constraints of the target would be checked at commit, where a
	 * bad message could no longer be isolated (and would fail the batch
	 * forever): check them at the end of each insert instead.
	 */
	if (!kw_is_stream &&
		SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not make constraints immediate");

	old = MemoryContextSwitchTo(kw_batch_cxt);
	kw_process_range(rel, 0, kw_nmsgs);
	KappaRestoreUser(&saved);

	/* dead letters */
	for (int i = 0; i < kw_nmsgs; i++)
	{
		rd_kafka_message_t *m = kw_msgs[i];
		Datum		v[8];
		char		n[8] = "        ";

		nbytes += m->len;
		if (!kw_dead[i].edata)
			continue;
		ndead++;
		v[0] = Int32GetDatum(kw_source->id);
		v[1] = CStringGetTextDatum(kw_source->topic);
		v[2] = Int32GetDatum(m->partition);
		v[3] = Int64GetDatum(m->offset);
		if (m->key)
			v[4] = PointerGetDatum(kw_bytea(m->key, m->key_len));
		else
			n[4] = 'n';
		if (m->payload)
			v[5] = PointerGetDatum(kw_bytea(m->payload, m->len));
		else
			n[5] = 'n';
		v[6] = CStringGetTextDatum(kw_dead_letter_text(kw_dead[i].edata));
		v[7] = CStringGetTextDatum(unpack_sql_state(kw_dead[i].edata->sqlerrcode));
		kw_catalog_exec(kw_dead_plan, v, n, SPI_OK_INSERT);
	}

	/* offsets, only where they still are what this batch started from */
	kw_refresh_watermarks();
	for (int i = 0; i < kw_nmsgs; i++)
	{
		int32		p = kw_msgs[i]->partition;

		if (kw_parts[p].batch_next < kw_msgs[i]->offset + 1)
			kw_parts[p].batch_next = kw_msgs[i]->offset + 1;
	}
	for (int p = 0; p < kw_nparts; p++)
	{
		Datum		v[5];
		char		n[5] = "     ";

		if (kw_parts[p].batch_next < 0)
			continue;
		v[0] = Int32GetDatum(kw_source->id);
		v[1] = Int32GetDatum(p);
		v[2] = Int64GetDatum(kw_parts[p].batch_next);
		v[3] = Int64GetDatum(kw_parts[p].hwm);
		if (kw_parts[p].hwm < 0)
			n[3] = 'n';
		v[4] = Int64GetDatum(kw_parts[p].committed);
		if (kw_catalog_exec(kw_offsets_plan, v, n, SPI_OK_UPDATE) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("offsets of partition %d of kafka source \"%s\" were changed concurrently",
							p, kw_source_name),
					 errdetail("The source was dropped or another worker consumed the partition; this batch is discarded.")));
	}

	/* status */
	kw_update_rates(kw_nmsgs, nbytes, ndead);
	{
		Datum		v[8];

		v[0] = Int32GetDatum(kw_source->id);
		v[1] = Int32GetDatum(kw_args.slot);
		v[2] = Int64GetDatum(kw_nmsgs - ndead);
		v[3] = Int64GetDatum(nbytes);
		v[4] = Int64GetDatum(ndead);
		v[5] = Float8GetDatum(kw_msgs_per_sec);
		v[6] = Float8GetDatum(kw_bytes_per_sec);
		v[7] = CStringGetTextDatum("running");
		kw_catalog_exec(kw_status_plan, v, NULL, SPI_OK_UPDATE);
	}
	MemoryContextSwitchTo(old);

	relation_close(rel, NoLock);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	/* committed: advance, and let the messages go */
	for (int p = 0; p < kw_nparts; p++)
		if (kw_parts[p].batch_next >= 0)
		{
			kw_parts[p].committed = kw_parts[p].batch_next;
			kw_parts[p].batch_next = -1;
		}
	for (int i = 0; i < kw_nmsgs; i++)
		rd_kafka_message_destroy(kw_msgs[i]);
	kw_nmsgs = 0;
	kw_batch_bytes = 0;
	kw_dead = NULL;
	kw_insert_plans = NIL;
	MemoryContextReset(kw_batch_cxt);
	kw_state = "running";
	kw_reported_state = "running";
}

/*
 * kw_fail_and_exit records an error that stops the worker in kappa.sources
 * (state failed, last_error) and exits, to be restarted from the stored
 * offsets with a backoff.  Call it from a PG_CATCH block, after
 * CopyErrorData.
 */
static void
kw_fail_and_exit(ErrorData *edata, const char *what)
{
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	strlcpy(kw_last_error, "", sizeof(kw_last_error));
	kw_set_error("failed", "%s: %s%s%s", what, edata->message,
				 edata->detail ? ": " : "", edata->detail ? edata->detail : "");
	PG_TRY();
	{
		if (kw_source != NULL && kw_status_plan != NULL)
			kw_flush_status();
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	proc_exit(1);
}

/*
 * kw_apply_batch_or_exit applies the batch; on an error that is not a
 * message's fault (the target is gone, the owner lost its privilege, a
 * serialization failure) it records the error in kappa.sources and exits,
 * to be restarted from the stored offsets with a backoff.
 */
static void
kw_apply_batch_or_exit(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		kw_apply_batch();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		/* the messages were not applied; the restart fetches them again */
		kw_fail_and_exit(edata, "batch failed, worker restarts");
	}
	PG_END_TRY();
}

/*
 * kw_prepare_catalog_plans prepares the statements each batch runs on the
 * catalog.
 */
static void
kw_prepare_catalog_plans(void)
{
	Oid			dt[8] = {INT4OID, TEXTOID, INT4OID, INT8OID, BYTEAOID, BYTEAOID, TEXTOID, TEXTOID};
	Oid			ot[5] = {INT4OID, INT4OID, INT8OID, INT8OID, INT8OID};
	Oid			st[8] = {INT4OID, INT4OID, INT8OID, INT8OID, INT8OID, FLOAT8OID, FLOAT8OID, TEXTOID};

	kw_dead_plan = kw_prepare("INSERT INTO kappa.dead_letters "
							  "(source_id, topic, partition, \"offset\", key, payload, error, sqlstate) "
							  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", 8, dt);
	kw_offsets_plan = kw_prepare("UPDATE kappa.source_offsets SET next_offset = $3, "
								 "high_watermark = coalesce($4, high_watermark), "
								 "updated_at = pg_catalog.now() "
								 "WHERE source_id = $1 AND partition = $2 AND next_offset = $5",
								 5, ot);
	kw_status_plan = kw_prepare("UPDATE kappa.source_status SET messages = messages + $3, "
								"bytes = bytes + $4, dead_letters = dead_letters + $5, "
								"batches = batches + 1, messages_per_sec = $6, bytes_per_sec = $7, "
								"state = $8, last_batch_at = pg_catalog.clock_timestamp(), "
								"updated_at = pg_catalog.now() "
								"WHERE source_id = $1 AND slot = $2", 8, st);
}

/*
 * kw_wait_for_update waits until the extension's SQL objects in this
 * database are the version of this library (after the library is upgraded,
 * the catalog is changed by ALTER EXTENSION pg_kappa UPDATE).  Returns false
 * if the extension is gone.
 */
static bool
kw_wait_for_update(void)
{
	bool		logged = false;

	for (;;)
	{
		bool		installed;
		bool		current = false;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		installed = OidIsValid(get_extension_oid("pg_kappa", true));
		if (installed)
			current = KappaExtensionUpToDate();
		CommitTransactionCommand();
		if (!installed)
			return false;
		if (current)
			return true;
		if (!logged)
			ereport(LOG,
					(errmsg("pg_kappa worker for source %d waits for ALTER EXTENSION pg_kappa UPDATE",
							kw_args.source_id),
					 errdetail("The library is version %s; the extension in this database is older.",
							   KAPPA_EXTENSION_VERSION)));
		logged = true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 KW_IDLE_WAIT_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * kw_start loads the source, takes the slot's lock and records the worker
 * in kappa.source_status.  Exits quietly when there is nothing to do.
 */
static void
kw_start(void)
{
	LOCKTAG		tag;
	char		appname[NAMEDATALEN + 32];
	char	   *blocked = NULL;

	/* the extension may have been dropped since this worker was registered */
	if (!kw_wait_for_update())
		proc_exit(0);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	{
		MemoryContext old = MemoryContextSwitchTo(kw_long_cxt);

		kw_source = KappaSourceLoad(kw_args.source_id, true);
		if (kw_source)
			kw_source_name = pstrdup(kw_source->name);
		MemoryContextSwitchTo(old);
	}
	if (kw_source == NULL || kw_args.slot >= kw_source->parallelism ||
		(kw_source->paused && kw_args.slot > 0))
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		proc_exit(0);
	}

	snprintf(appname, sizeof(appname), "pg_kappa source %s", kw_source_name);
	SetConfigOption("application_name", appname, PGC_USERSET, PGC_S_SESSION);

	/* one worker per slot: a session lock nobody else uses (field4 = 3) */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) kw_source->id,
						 (uint32) kw_args.slot, 3);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		ereport(LOG,
				(errmsg("kafka source \"%s\" worker %d is already running",
						kw_source_name, kw_args.slot)));
		PopActiveSnapshot();
		CommitTransactionCommand();
		proc_exit(0);
	}

	SPI_connect();
	{
		Oid			t[2] = {INT4OID, INT4OID};
		Datum		v[2] = {Int32GetDatum(kw_source->id), Int32GetDatum(kw_args.slot)};

		kw_catalog_sql("INSERT INTO kappa.source_status (source_id, slot, pid, state, started_at) "
					   "VALUES ($1, $2, pg_catalog.pg_backend_pid(), 'starting', pg_catalog.now()) "
					   "ON CONFLICT (source_id, slot) DO UPDATE SET pid = pg_catalog.pg_backend_pid(), "
					   "state = 'starting', started_at = pg_catalog.now(), messages_per_sec = 0, "
					   "bytes_per_sec = 0, dead_letters_per_sec = 0, dead_letter_share = NULL, "
					   "last_error = NULL, updated_at = pg_catalog.now()", 2, t, v, NULL);
	}
	kw_prepare_catalog_plans();
	SPI_finish();
	if (!kw_source->paused)
		blocked = kw_check_privileges(kw_source);
	PopActiveSnapshot();
	CommitTransactionCommand();

	if (kw_source->paused)
		kw_enter_mode(KW_MODE_PAUSED);
	else if (blocked != NULL)
	{
		kw_mode = KW_MODE_BLOCKED;
		kw_set_error("failed", "%s", blocked);
	}
}

/*
 * kw_create_consumer creates the librdkafka consumer and its event pipe.
 */
static void
kw_create_consumer(void)
{
	rd_kafka_conf_t *conf;
	char		errstr[512];

	StartTransactionCommand();
	conf = KappaKafkaConfBuild(kw_source);
	CommitTransactionCommand();
	rd_kafka_conf_set_log_cb(conf, kw_log_cb);
	rd_kafka_conf_set_error_cb(conf, kw_error_cb);

	kw_rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (kw_rk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not create a Kafka consumer for source \"%s\"", kw_source_name),
				 errdetail_internal("%s", errstr)));
	rd_kafka_set_log_queue(kw_rk, NULL);

	/* see kw_wake_fetcher */
	{
		char		value[64];
		size_t		size = sizeof(value);

		kw_wake_bytes = (int64) 65536 * 1024 / 2;
		if (rd_kafka_conf_get(rd_kafka_conf(kw_rk), "queued.max.messages.kbytes",
							  value, &size) == RD_KAFKA_CONF_OK)
			kw_wake_bytes = Max(strtol(value, NULL, 10), 1) * (int64) 1024 / 2;
		kw_polled_bytes = 0;
	}
	rd_kafka_poll_set_consumer(kw_rk);
	kw_queue = rd_kafka_queue_get_consumer(kw_rk);
	if (kw_queue == NULL)
		elog(ERROR, "librdkafka consumer of source \"%s\" has no consumer queue", kw_source_name);

	if (pipe(kw_pipe) != 0)
		elog(ERROR, "could not create pipe: %m");
	fcntl(kw_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(kw_pipe[1], F_SETFL, O_NONBLOCK);
	rd_kafka_queue_io_event_enable(kw_queue, kw_pipe[1], "1", 1);
}

/* kw_drain_pipe empties the event pipe. */
static void
kw_drain_pipe(void)
{
	char		buf[256];

	while (read(kw_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/*
 * kw_caught_up tells whether the worker has polled every message its
 * partitions held as of librdkafka's last fetch responses (their cached
 * high watermarks): the end of a backlog.
 */
static bool
kw_caught_up(void)
{
	kw_refresh_watermarks();
	for (int p = 0; p < kw_nparts; p++)
	{
		if (!kw_parts[p].assigned)
			continue;
		if (kw_parts[p].hwm < 0 || kw_parts[p].polled_next < kw_parts[p].hwm)
			return false;
	}
	return true;
}

/*
 * kw_poll moves available messages into the batch, up to the batch's size
 * and bytes.  Returns true if it stopped because the batch is full
 * (messages may be left in the queue, so the caller must not wait for the
 * event fd).  A partition whose next offset the broker no longer holds is
 * marked lost (kw_handle_data_loss deals with it after the batch).
 */
static bool
kw_poll(void)
{
	int			limit = kw_batch_size();
	int64		bytes_limit = kw_batch_bytes_limit();

	while (kw_nmsgs < limit && kw_batch_bytes < bytes_limit)
	{
		rd_kafka_message_t *m = rd_kafka_consumer_poll(kw_rk, 0);

		if (m == NULL)
			break;
		if (m->err)
		{
			if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET &&
				m->partition >= 0 && m->partition < kw_nparts &&
				kw_parts[m->partition].assigned)
			{
				kw_parts[m->partition].lost = true;
				kw_any_lost = true;
			}
			else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				kw_set_error("retrying", "%s", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		if (m->partition < 0 || m->partition >= kw_nparts ||
			!kw_parts[m->partition].assigned || kw_parts[m->partition].lost)
		{
			rd_kafka_message_destroy(m);
			continue;
		}
		if (kw_nmsgs == 0)
			kw_batch_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															kw_max_latency());
		kw_msgs[kw_nmsgs++] = m;
		kw_batch_bytes += m->len + m->key_len;
		kw_polled_bytes += m->len + m->key_len;
		if (kw_parts[m->partition].polled_next < m->offset + 1)
			kw_parts[m->partition].polled_next = m->offset + 1;
	}
	return kw_nmsgs >= limit || kw_batch_bytes >= bytes_limit;
}

/*
 * KappaKafkaWorkerMain is the entry point of a source worker; bgw_extra
 * holds its KappaWorkerArgs.
 */
void
KappaKafkaWorkerMain(Datum main_arg)
{
	int			msgs_cap = 0;

	memcpy(&kw_args, MyBgworkerEntry->bgw_extra, sizeof(KappaWorkerArgs));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(kw_args.dboid, kw_args.owner, 0);

	kw_long_cxt = AllocSetContextCreate(TopMemoryContext, "pg_kappa worker",
										ALLOCSET_DEFAULT_SIZES);
	kw_target_cxt = AllocSetContextCreate(kw_long_cxt, "pg_kappa target",
										  ALLOCSET_DEFAULT_SIZES);
	kw_batch_cxt = AllocSetContextCreate(kw_long_cxt, "pg_kappa batch",
										 ALLOCSET_DEFAULT_SIZES);
	kw_row_cxt = AllocSetContextCreate(kw_long_cxt, "pg_kappa message",
									   ALLOCSET_DEFAULT_SIZES);

	kw_start();
	on_proc_exit(kw_exit_cb, (Datum) 0);
	{
		MemoryContext cxt = CurrentMemoryContext;

		PG_TRY();
		{
			kw_create_consumer();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			kw_fail_and_exit(edata, "the consumer could not be created");
		}
		PG_END_TRY();
	}
	kw_rate_window_start = GetCurrentTimestamp();
	ereport(LOG,
			(errmsg("kafka source \"%s\" worker %d started on topic \"%s\"",
					kw_source_name, kw_args.slot, kw_source->topic)));

	for (;;)
	{
		bool		full = false;
		TimestampTz now;
		long		timeout;
		int			rc;

		now = GetCurrentTimestamp();
		if (now >= kw_next_metadata)
		{
			kw_refresh_assignment();
			now = GetCurrentTimestamp();
		}

		/* the batch array follows the batch size */
		if (msgs_cap < kw_batch_size())
		{
			int			newcap = kw_batch_size();

			if (kw_msgs == NULL)
				kw_msgs = MemoryContextAlloc(kw_long_cxt, newcap * sizeof(*kw_msgs));
			else
				kw_msgs = repalloc(kw_msgs, newcap * sizeof(*kw_msgs));
			msgs_cap = newcap;
		}

		full = kw_poll();
		if (kw_polled_bytes >= kw_wake_bytes)
			kw_wake_fetcher();
		kw_report_callbacks();
		now = GetCurrentTimestamp();

		/*
		 * A batch ends when it is full or max_latency after its first
		 * message; and when a backlog has just been read to its end (the
		 * batch before was full): its last messages have waited long enough,
		 * and ending then adds at most one transaction per backlog; and when
		 * a partition's data was lost (the batch first, then the gap).
		 */
		if (full || (kw_nmsgs > 0 &&
					 (now >= kw_batch_deadline || kw_any_lost ||
					  (kw_after_full_batch && kw_caught_up()))))
		{
			kw_apply_batch_or_exit();
			kw_after_full_batch = full;
			CHECK_FOR_INTERRUPTS();
		}
		if (kw_nmsgs == 0 && kw_any_lost)
			kw_handle_data_loss();

		/* between batches: the source may have changed; status */
		now = GetCurrentTimestamp();
		if (kw_nmsgs == 0 && now >= kw_next_catalog_check)
		{
			kw_check_source();
			kw_next_catalog_check = TimestampTzPlusMilliseconds(now, KW_CATALOG_CHECK_MS);
		}
		if (kw_nmsgs == 0 && now >= kw_next_watermarks)
		{
			kw_refresh_all_watermarks();
			kw_next_watermarks = TimestampTzPlusMilliseconds(now, KW_WATERMARKS_MS);
		}
		if (kw_nmsgs == 0 &&
			(kw_error_pending || kw_reported_state == NULL ||
			 strcmp(kw_reported_state, kw_state) != 0 ||
			 TimestampDifferenceExceeds(kw_last_status_flush, now, KW_STATUS_FLUSH_MS)))
		{
			kw_refresh_watermarks();
			kw_flush_status();
		}

		/* a full batch may have left messages in the queue: no waiting */
		if (full)
		{
			if (ConfigReloadPending)
			{
				ConfigReloadPending = false;
				ProcessConfigFile(PGC_SIGHUP);
			}
			continue;
		}

		/* wait for messages, the deadline of the batch, or a tick */
		now = GetCurrentTimestamp();
		if (kw_nmsgs > 0)
			timeout = Max(TimestampDifferenceMilliseconds(now, kw_batch_deadline), 0);
		else
			timeout = KW_IDLE_WAIT_MS;
		if (kw_next_metadata > now)
			timeout = Min(timeout, TimestampDifferenceMilliseconds(now, kw_next_metadata) + 1);
		else
			timeout = 0;
		if (kw_any_lost)
			timeout = 0;

		if (timeout > 0)
		{
			rc = WaitLatchOrSocket(MyLatch,
								   WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT |
								   WL_EXIT_ON_PM_DEATH,
								   kw_pipe[0], timeout, PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
				ResetLatch(MyLatch);
		}
		kw_drain_pipe();
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		AcceptInvalidationMessages();
	}
}
