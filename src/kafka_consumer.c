/*-------------------------------------------------------------------------
 *
 * kafka_consumer.c
 *	  A source worker's librdkafka consumer: the handle and its callbacks,
 *	  the assignment of partitions at their stored offsets, watermarks and
 *	  offset lookups, lost data, polling messages into a batch, and waking
 *	  librdkafka's fetcher.
 *
 * Assignment.  Partitions are assigned explicitly (no consumer group), at
 * the next offsets stored in kappa.source_offsets; nothing is committed to
 * Kafka.  The topic's partitions are read from the broker every
 * KC_METADATA_MS (on failure after KC_METADATA_BACKOFF_MIN_MS, doubling up
 * to KC_METADATA_BACKOFF_MAX_MS).  A partition never seen gets its first
 * offset from the source's start (earliest, latest or a time), stored by
 * whichever slot sees it first, so that the lag of partitions no worker
 * reads shows; partition p is assigned to slot p % parallelism.  When
 * someone else moves the stored offsets (kappa.rewind_source), the worker
 * sees it between batches (KappaConsumerOffsetsMoved) and assigns its
 * partitions again from them.
 *
 * The batch.  KappaConsumerPoll takes messages from the consumer queue into
 * the current batch, up to the batch's size and bytes; the batch is held
 * here until kafka_apply.c has committed it (KappaConsumerBatchCommitted),
 * which advances the partitions' committed offsets.
 *
 * Lost data.  librdkafka reports a stored offset the broker no longer holds
 * (auto.offset.reset = error) instead of skipping ahead; such a partition is
 * marked lost and KappaConsumerHandleDataLoss deals with it between
 * batches: under on_data_loss 'record' it records the gap in
 * kappa.dead_letters (kind 'gap', shown in kappa.errors) and moves the
 * stored offset past it, in one transaction, so that messages produced =
 * rows applied + dead letters + messages in gaps; under 'fail' it leaves
 * the worker to fail the source, naming the missing range.
 *
 * Threads.  librdkafka runs its own threads.  Its log lines and errors are
 * routed to the consumer queue (log.queue) and served by
 * rd_kafka_consumer_poll in this process's main thread; the callbacks only
 * copy text into kc_consumer, which KappaConsumerPoll then reports.  The
 * queue's event fd (a pipe, KappaConsumerEventFd) wakes the worker's latch
 * wait when messages arrive.
 *
 * This file calls kafka_status.c (errors, state) and never the worker loop:
 * what the loop must do is returned to it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "kafka.h"
#include "util.h"

/* Timings */
#define KC_METADATA_MS				5000	/* partitions of the topic */
#define KC_METADATA_BACKOFF_MIN_MS	500
#define KC_METADATA_BACKOFF_MAX_MS	10000
#define KC_BROKER_TIMEOUT_MS		500 /* metadata and offset requests */
/* the offsets of a lost partition: worth a longer wait */
#define KC_WATERMARKS_TIMEOUT_MS	(KC_BROKER_TIMEOUT_MS * 4)

/* librdkafka's default queued.max.messages.kbytes, should it not tell */
#define KC_DEFAULT_QUEUE_KBYTES		65536

/* Log lines of librdkafka kept between two polls (more are dropped). */
#define KC_LOG_LINES	16

/* The consumer of this worker. */
typedef struct KcConsumer
{
	KappaSource *source;
	int			slot;
	MemoryContext cxt;			/* the partition table and the batch array */

	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;
	int			pipe[2];		/* the queue's event fd: read, write end */

	/* the partitions of the topic */
	KappaPartition *parts;
	int			nparts;			/* allocated entries of parts */
	int			topic_partitions;	/* as last seen, -1 unknown */
	bool		any_lost;		/* some partition has 'lost' set */
	TimestampTz next_metadata;	/* when to read the topic's partitions */
	int			metadata_backoff_ms;

	/* the current batch */
	rd_kafka_message_t **msgs;
	int			nmsgs;
	int			maxmsgs;		/* allocated entries of msgs */
	int64		batch_bytes;	/* of payloads and keys */
	TimestampTz batch_deadline; /* max_latency after its first message */

	/*
	 * Bytes taken from the consumer queue since kc_wake_fetcher last ran, and
	 * how many make it run again (half of queued.max.messages.kbytes).
	 */
	int64		polled_bytes;
	int64		wake_bytes;

	/* librdkafka's callbacks copy here; KappaConsumerPoll reports */
	char		log_lines[KC_LOG_LINES][512];
	int			log_count;
	char		error[512];
	bool		error_set;
} KcConsumer;

static KcConsumer kc_consumer = {
	.pipe = {-1, -1},
	.topic_partitions = -1,
	.metadata_backoff_ms = KC_METADATA_BACKOFF_MIN_MS,
};

/*
 * KappaConsumerInit tells the consumer whose it is (the worker of 'slot' of
 * 'source', which must outlive it) and where its long-lived memory goes.
 * Nothing is created yet (KappaConsumerCreate).
 */
void
KappaConsumerInit(KappaSource *source, int slot, MemoryContext cxt)
{
	kc_consumer.source = source;
	kc_consumer.slot = slot;
	kc_consumer.cxt = cxt;
}

/*
 * Callbacks: run from rd_kafka_consumer_poll in this thread (log.queue), but
 * still never call elog (it could longjmp through librdkafka): copy only.
 */
static void
kc_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	if (kc_consumer.log_count < KC_LOG_LINES)
		snprintf(kc_consumer.log_lines[kc_consumer.log_count++],
				 sizeof(kc_consumer.log_lines[0]), "%s: %s", fac, buf);
}

static void
kc_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	snprintf(kc_consumer.error, sizeof(kc_consumer.error), "%s", reason);
	kc_consumer.error_set = true;
}

/* kc_report_callbacks logs what librdkafka's callbacks left behind. */
static void
kc_report_callbacks(void)
{
	for (int i = 0; i < kc_consumer.log_count; i++)
		ereport(LOG,
				(errmsg("kafka source \"%s\": librdkafka log line",
						kc_consumer.source->name),
				 errdetail_internal("%s", kc_consumer.log_lines[i])));
	kc_consumer.log_count = 0;
	if (kc_consumer.error_set)
	{
		kc_consumer.error_set = false;
		KappaStatusSetError(KAPPA_WORKER_RETRYING, "%s", kc_consumer.error);
	}
}

/*
 * kc_exit destroys the consumer without waiting for the broker, so that no
 * librdkafka thread runs while the process exits.
 */
static void
kc_exit(int code, Datum arg)
{
	if (kc_consumer.rk)
	{
		rd_kafka_t *rk = kc_consumer.rk;

		/* librdkafka waits for every message we still hold */
		for (int i = 0; i < kc_consumer.nmsgs; i++)
			rd_kafka_message_destroy(kc_consumer.msgs[i]);
		kc_consumer.nmsgs = 0;
		kc_consumer.rk = NULL;
		if (kc_consumer.queue)
			rd_kafka_queue_destroy(kc_consumer.queue);
		rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	}
}

/*
 * KappaConsumerCreate creates the librdkafka consumer of the source (its
 * configuration read in a transaction of its own) and its event pipe; it is
 * destroyed at process exit.  Raises an error if librdkafka refuses.
 */
void
KappaConsumerCreate(void)
{
	rd_kafka_conf_t *conf;
	char		errstr[512];

	on_proc_exit(kc_exit, (Datum) 0);

	(void) KappaBeginTransaction(false);
	conf = KappaKafkaConfBuild(kc_consumer.source);
	KappaCommitTransaction();
	rd_kafka_conf_set_log_cb(conf, kc_log_cb);
	rd_kafka_conf_set_error_cb(conf, kc_error_cb);

	kc_consumer.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (kc_consumer.rk == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not create a Kafka consumer for source \"%s\"",
						kc_consumer.source->name),
				 errdetail_internal("%s", errstr)));
	rd_kafka_set_log_queue(kc_consumer.rk, NULL);

	/* see kc_wake_fetcher */
	kc_consumer.wake_bytes = KappaKafkaWakeBytes(kc_consumer.rk);
	kc_consumer.polled_bytes = 0;

	rd_kafka_poll_set_consumer(kc_consumer.rk);
	kc_consumer.queue = rd_kafka_queue_get_consumer(kc_consumer.rk);
	if (kc_consumer.queue == NULL)
		elog(ERROR, "librdkafka consumer of source \"%s\" has no consumer queue",
			 kc_consumer.source->name);

	if (pipe(kc_consumer.pipe) != 0)
		elog(ERROR, "could not create pipe: %m");
	fcntl(kc_consumer.pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(kc_consumer.pipe[1], F_SETFL, O_NONBLOCK);
	rd_kafka_queue_io_event_enable(kc_consumer.queue, kc_consumer.pipe[1], "1", 1);
}

/*
 * KappaConsumerEventFd returns the fd that becomes readable when messages
 * arrive in the consumer queue; KappaConsumerDrainEvents empties it.
 */
int
KappaConsumerEventFd(void)
{
	return kc_consumer.pipe[0];
}

void
KappaConsumerDrainEvents(void)
{
	char		buf[256];

	while (read(kc_consumer.pipe[0], buf, sizeof(buf)) > 0)
		;
}

/*
 * kc_ensure_parts grows the partition table to hold n partitions.
 */
static void
kc_ensure_parts(int n)
{
	KappaPartition *parts = kc_consumer.parts;

	if (n <= kc_consumer.nparts)
		return;
	if (parts == NULL)
		parts = MemoryContextAllocZero(kc_consumer.cxt, n * sizeof(KappaPartition));
	else
	{
		parts = repalloc(parts, n * sizeof(KappaPartition));
		memset(parts + kc_consumer.nparts, 0,
			   (n - kc_consumer.nparts) * sizeof(KappaPartition));
	}
	for (int p = kc_consumer.nparts; p < n; p++)
		parts[p].hwm = -1;
	kc_consumer.parts = parts;
	kc_consumer.nparts = n;
}

/*
 * KappaConsumerPartitions returns the partition table (*nparts entries) and
 * the number of partitions of the topic as last seen (-1: unknown), for
 * reading only.
 */
const KappaPartition *
KappaConsumerPartitions(int *nparts, int *topic_partitions)
{
	*nparts = kc_consumer.nparts;
	if (topic_partitions)
		*topic_partitions = kc_consumer.topic_partitions;
	return kc_consumer.parts;
}

/*
 * kc_list_offsets asks the leaders of the partitions p with want[p] for an
 * offset of each, by timestamp 'ts' (milliseconds since 1970, or
 * RD_KAFKA_OFFSET_BEGINNING / RD_KAFKA_OFFSET_END for the first and next
 * offsets), all in one round of requests.  Stores the answers in offsets[p]
 * and returns NULL, or returns librdkafka's error text.
 */
static const char *
kc_list_offsets(int npart, const bool *want, int64 ts, int64 *offsets)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(npart);
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (int p = 0; p < npart; p++)
	{
		if (want[p])
			rd_kafka_topic_partition_list_add(list, kc_consumer.source->topic, p)->offset = ts;
	}
	if (list->cnt > 0)
		err = rd_kafka_offsets_for_times(kc_consumer.rk, list, KC_BROKER_TIMEOUT_MS);
	for (int i = 0; i < list->cnt && err == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
	{
		err = list->elems[i].err;
		offsets[list->elems[i].partition] = list->elems[i].offset;
	}
	rd_kafka_topic_partition_list_destroy(list);
	return err ? rd_kafka_err2str(err) : NULL;
}

/*
 * KappaConsumerRefreshWatermarks reads the cached high watermarks of the
 * assigned partitions (no broker round trip).
 */
void
KappaConsumerRefreshWatermarks(void)
{
	for (int p = 0; p < kc_consumer.nparts; p++)
	{
		int64		lo,
					hi;

		if (!kc_consumer.parts[p].assigned)
			continue;
		if (rd_kafka_get_watermark_offsets(kc_consumer.rk, kc_consumer.source->topic, p,
										   &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			hi >= 0)
			kc_consumer.parts[p].hwm = hi;
	}
}

/*
 * KappaConsumerRefreshAllWatermarks looks up the end of every partition of
 * the topic, held by this worker or not, in one round of requests: what
 * makes the lag of unassigned partitions, and of a paused or failed source,
 * show.
 */
void
KappaConsumerRefreshAllWatermarks(void)
{
	int			nparts = kc_consumer.nparts;
	bool	   *want;
	int64	   *ends;

	if (nparts == 0)
		return;
	want = palloc0(sizeof(bool) * nparts);
	ends = palloc(sizeof(int64) * nparts);
	for (int p = 0; p < nparts; p++)
		want[p] = kc_consumer.parts[p].exists;
	if (kc_list_offsets(nparts, want, RD_KAFKA_OFFSET_END, ends) == NULL)
	{
		for (int p = 0; p < nparts; p++)
			if (want[p] && ends[p] >= 0)
				kc_consumer.parts[p].hwm = ends[p];
	}
	pfree(want);
	pfree(ends);
}

/*
 * kc_resolve_starts finds the first offset of the partitions p with want[p]
 * (partitions without a stored offset yet) into starts[p], from the source's
 * start: earliest, latest or a timestamp (the first message at or after it;
 * where the broker has none -- or answers -1 as some do -- the partition's
 * end).  Returns false if the broker could not tell (the error is in the
 * status; the caller retries later).
 */
static bool
kc_resolve_starts(int npart, const bool *want, int64 *starts)
{
	KappaSource *source = kc_consumer.source;
	int64	   *ends = palloc(sizeof(int64) * npart);
	const char *error;
	const char *what = "offsets";

	error = kc_list_offsets(npart, want, RD_KAFKA_OFFSET_END, ends);
	if (error == NULL)
	{
		for (int p = 0; p < npart; p++)
		{
			if (want[p])
				kc_consumer.parts[p].hwm = ends[p];
		}
		if (strcmp(source->start, "earliest") == 0)
			error = kc_list_offsets(npart, want, RD_KAFKA_OFFSET_BEGINNING, starts);
		else if (strcmp(source->start, "latest") == 0)
			memcpy(starts, ends, sizeof(int64) * npart);
		else
		{
			TimestampTz ts = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																	 CStringGetDatum(source->start),
																	 ObjectIdGetDatum(InvalidOid),
																	 Int32GetDatum(-1)));
			int64		ms = ts / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * 86400 * 1000;

			what = "offsets for times";
			error = kc_list_offsets(npart, want, ms, starts);
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
		KappaStatusSetError(KAPPA_WORKER_RETRYING, "could not look up %s in topic \"%s\": %s",
							what, source->topic, error);
		return false;
	}
	return true;
}

/*
 * kc_assign gives partitions to librdkafka at the given offsets.
 */
static void
kc_assign(rd_kafka_topic_partition_list_t *add)
{
	rd_kafka_error_t *error;

	if (add->cnt == 0)
		return;
	error = rd_kafka_incremental_assign(kc_consumer.rk, add);
	if (error)
	{
		char	   *msg = pstrdup(rd_kafka_error_string(error));

		rd_kafka_error_destroy(error);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not assign partitions of topic \"%s\" to kafka source \"%s\"",
						kc_consumer.source->topic, kc_consumer.source->name),
				 errdetail_internal("%s", msg)));
	}
	for (int i = 0; i < add->cnt; i++)
		kc_consumer.parts[add->elems[i].partition].assigned = true;
}

/*
 * kc_unassign takes partition p away from librdkafka (messages of it still
 * in the queue are dropped by KappaConsumerPoll).
 */
static void
kc_unassign(int p)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
	rd_kafka_error_t *error;

	rd_kafka_topic_partition_list_add(list, kc_consumer.source->topic, p);
	error = rd_kafka_incremental_unassign(kc_consumer.rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (error)
	{
		char	   *msg = pstrdup(rd_kafka_error_string(error));

		rd_kafka_error_destroy(error);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not unassign partition %d of topic \"%s\" from kafka source \"%s\"",
						p, kc_consumer.source->topic, kc_consumer.source->name),
				 errdetail_internal("%s", msg)));
	}
	kc_consumer.parts[p].assigned = false;
	kc_consumer.parts[p].lost = false;
}

/*
 * kc_reassign assigns partition p again, to read on from 'offset'.
 */
static void
kc_reassign(int p, int64 offset)
{
	rd_kafka_topic_partition_list_t *add = rd_kafka_topic_partition_list_new(1);

	kc_unassign(p);
	rd_kafka_topic_partition_list_add(add, kc_consumer.source->topic, p)->offset = offset;
	kc_assign(add);
	rd_kafka_topic_partition_list_destroy(add);
}

/*
 * KappaConsumerUnassignAll lets go of every partition (a worker that is not
 * consuming holds none).
 */
void
KappaConsumerUnassignAll(void)
{
	for (int p = 0; p < kc_consumer.nparts; p++)
		if (kc_consumer.parts[p].assigned)
			kc_unassign(p);
	kc_consumer.any_lost = false;
}

/*
 * kc_refresh_later schedules the next read of the topic's partitions: after
 * the backoff, doubled each time, when this one failed; else after
 * KC_METADATA_MS.
 */
static void
kc_refresh_later(bool failed)
{
	TimestampTz now = GetCurrentTimestamp();

	if (failed)
	{
		kc_consumer.next_metadata = TimestampTzPlusMilliseconds(now,
																kc_consumer.metadata_backoff_ms);
		kc_consumer.metadata_backoff_ms = Min(kc_consumer.metadata_backoff_ms * 2,
											  KC_METADATA_BACKOFF_MAX_MS);
	}
	else
	{
		kc_consumer.metadata_backoff_ms = KC_METADATA_BACKOFF_MIN_MS;
		kc_consumer.next_metadata = TimestampTzPlusMilliseconds(now, KC_METADATA_MS);
	}
}

/*
 * KappaConsumerNextRefresh returns when KappaConsumerRefreshAssignment is
 * due; KappaConsumerRefreshSoon makes it due at once.
 */
TimestampTz
KappaConsumerNextRefresh(void)
{
	return kc_consumer.next_metadata;
}

void
KappaConsumerRefreshSoon(void)
{
	kc_consumer.next_metadata = 0;
}

/*
 * kc_read_topic reads the topic's partitions from the broker into the
 * partition table, and returns how many of this slot's are not assigned,
 * or -1 after recording the error.
 */
static int
kc_read_topic(void)
{
	KappaSource *source = kc_consumer.source;
	rd_kafka_topic_t *rkt;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;
	int			npart;
	int			nnew = 0;

	rkt = rd_kafka_topic_new(kc_consumer.rk, source->topic, NULL);
	err = rd_kafka_metadata(kc_consumer.rk, 0, rkt, &md, KC_BROKER_TIMEOUT_MS);
	rd_kafka_topic_destroy(rkt);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 && md->topics[0].err)
		err = md->topics[0].err;
	if (err)
	{
		if (md)
			rd_kafka_metadata_destroy(md);
		if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
			KappaStatusSetError(KAPPA_WORKER_WAITING, "topic \"%s\" does not exist (yet)",
								source->topic);
		else
			KappaStatusSetError(KAPPA_WORKER_RETRYING,
								"could not read metadata of topic \"%s\": %s",
								source->topic, rd_kafka_err2str(err));
		return -1;
	}

	npart = md->topics[0].partition_cnt;
	kc_ensure_parts(npart);
	kc_consumer.topic_partitions = npart;
	for (int i = 0; i < npart; i++)
	{
		int32		p = md->topics[0].partitions[i].id;

		if (p >= 0 && p < npart)
		{
			KappaPartition *part = &kc_consumer.parts[p];

			part->exists = true;
			part->mine = (p % source->parallelism) == kc_consumer.slot;
			if (part->mine && !part->assigned)
				nnew++;
		}
	}
	rd_kafka_metadata_destroy(md);
	return nnew;
}

/*
 * kc_store_starts reads the stored next offsets of the topic's 'npart'
 * partitions into starts[p] (known[p] set), and, when 'consuming', resolves
 * and stores the start of every partition that has none yet, mine or not;
 * a partition another worker stored first takes that one.  Returns false if
 * the broker could not tell some start (the caller retries later).  Runs in
 * a transaction of its own.
 */
static bool
kc_store_starts(int npart, bool consuming, int64 *starts, bool *known)
{
	KappaSource *source = kc_consumer.source;
	bool	   *want = palloc0(sizeof(bool) * npart);
	int			nunknown = 0;
	bool		resolved = true;
	Oid			t[4] = {INT4OID, INT4OID, INT8OID, INT8OID};
	Datum		v[4];

	(void) KappaBeginTransaction(false);
	SPI_connect();
	v[0] = Int32GetDatum(source->id);
	KappaExecCatalogSql("SELECT partition, next_offset FROM kappa.source_offsets "
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

	/*
	 * Resolve and store the start of partitions never seen, mine or not --
	 * only when consuming: a paused source may be one a restore has not
	 * finished loading (its offsets come later, see
	 * kappa_source_arrives_paused).
	 */
	for (int p = 0; p < npart; p++)
	{
		want[p] = consuming && kc_consumer.parts[p].exists && !known[p];
		if (want[p])
			nunknown++;
	}
	if (nunknown > 0)
	{
		if (!kc_resolve_starts(npart, want, starts))
			resolved = false;
		else
		{
			for (int p = 0; p < npart; p++)
			{
				char		n[4] = "    ";

				if (!want[p])
					continue;
				v[1] = Int32GetDatum(p);
				v[2] = Int64GetDatum(starts[p]);
				v[3] = Int64GetDatum(kc_consumer.parts[p].hwm);
				if (kc_consumer.parts[p].hwm < 0)
					n[3] = 'n';
				KappaExecCatalogSql("INSERT INTO kappa.source_offsets "
									"(source_id, partition, next_offset, high_watermark, first_offset) "
									"VALUES ($1, $2, $3, $4, $3) ON CONFLICT DO NOTHING", 4, t, v, n);
				if (SPI_processed == 1)
					known[p] = true;
				else
				{
					/* another worker stored it first: take its offset */
					KappaExecCatalogSql("SELECT next_offset FROM kappa.source_offsets "
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
	KappaCommitTransaction();
	pfree(want);
	return resolved;
}

/*
 * KappaConsumerRefreshAssignment reads the topic's partitions from the
 * broker and, when 'consuming', stores a start offset for every partition
 * that has none yet (whichever slot reads it: the lag then counts
 * partitions no worker reads) and assigns those of this slot that are not
 * assigned yet, at their stored offsets.  On failure it records the error
 * and backs off.  Runs outside any transaction.
 */
void
KappaConsumerRefreshAssignment(bool consuming)
{
	KappaSource *source = kc_consumer.source;
	int			nnew;
	int			npart;
	int64	   *starts;
	bool	   *known;
	bool		resolved;

	nnew = kc_read_topic();
	if (nnew < 0)
	{
		kc_refresh_later(true);
		return;
	}
	npart = kc_consumer.topic_partitions;
	starts = palloc(sizeof(int64) * npart);
	known = palloc0(sizeof(bool) * npart);
	resolved = kc_store_starts(npart, consuming, starts, known);

	/* assign mine, when consuming */
	if (nnew > 0 && consuming)
	{
		rd_kafka_topic_partition_list_t *add = rd_kafka_topic_partition_list_new(nnew);

		for (int p = 0; p < npart; p++)
		{
			KappaPartition *part = &kc_consumer.parts[p];

			if (!part->mine || part->assigned || !known[p])
				continue;
			rd_kafka_topic_partition_list_add(add, source->topic, p)->offset = starts[p];
			part->committed = starts[p];
			part->positioned = true;
			part->polled_next = starts[p];
		}
		kc_assign(add);
		if (add->cnt > 0)
			ereport(LOG,
					(errmsg("kafka source \"%s\" worker %d: assigned %d partition(s) of topic \"%s\"",
							source->name, kc_consumer.slot, add->cnt, source->topic)));
		rd_kafka_topic_partition_list_destroy(add);
	}
	pfree(starts);
	pfree(known);

	kc_refresh_later(!resolved);
	if (resolved && consuming)
		KappaStatusSetState(KAPPA_WORKER_RUNNING);
}

/*
 * kc_record_gap writes a gap (offsets first..last of partition p are gone
 * from the broker) to kappa.dead_letters and moves the stored offset past
 * it, in one transaction; false if the stored offset was changed
 * concurrently.
 */
static bool
kc_record_gap(int p, int64 first, int64 last, const char *error)
{
	KappaSource *source = kc_consumer.source;
	Oid			dt[4] = {INT4OID, INT4OID, INT8OID, INT8OID};
	Datum		dv[4];
	uint64		updated;

	(void) KappaBeginTransaction(false);
	SPI_connect();
	dv[0] = Int32GetDatum(source->id);
	dv[1] = Int32GetDatum(p);
	dv[2] = Int64GetDatum(last + 1);
	dv[3] = Int64GetDatum(first);
	KappaExecCatalogSql("UPDATE kappa.source_offsets SET next_offset = $3, updated_at = pg_catalog.now() "
						"WHERE source_id = $1 AND partition = $2 AND next_offset = $4",
						4, dt, dv, NULL);
	updated = SPI_processed;
	if (updated == 1)
	{
		Oid			gt[6] = {INT4OID, TEXTOID, INT4OID, INT8OID, INT8OID, TEXTOID};
		Datum		gv[6];

		gv[0] = Int32GetDatum(source->id);
		gv[1] = CStringGetTextDatum(source->topic);
		gv[2] = Int32GetDatum(p);
		gv[3] = Int64GetDatum(first);
		gv[4] = Int64GetDatum(last);
		gv[5] = CStringGetTextDatum(error);
		KappaExecCatalogSql("INSERT INTO kappa.dead_letters "
							"(source_id, kind, topic, partition, \"offset\", last_offset, error) "
							"VALUES ($1, 'gap', $2, $3, $4, $5, $6)", 6, gt, gv, NULL);
	}
	SPI_finish();
	KappaCommitTransaction();
	return updated == 1;
}

/*
 * KappaConsumerHandleDataLoss deals with the partitions whose next offset
 * the broker no longer holds (see the file header), between batches and
 * outside any transaction.  Returns KAPPA_LOSS_FAILED when the source must
 * fail (the reason is in the status: data lost under on_data_loss 'fail',
 * or a next offset past the partition's end), KAPPA_LOSS_CONFLICT when the
 * stored offset of *partition changed under the worker, and
 * KAPPA_LOSS_HANDLED otherwise (gaps recorded; partitions whose offsets
 * could not be looked up stay lost, for the next call).
 */
KappaDataLossResult
KappaConsumerHandleDataLoss(int *partition)
{
	KappaSource *source = kc_consumer.source;

	kc_consumer.any_lost = false;
	for (int p = 0; p < kc_consumer.nparts; p++)
	{
		KappaPartition *part = &kc_consumer.parts[p];
		int64		lo,
					hi;
		int64		first = part->committed;
		rd_kafka_resp_err_t err;
		char	   *what;

		if (!part->lost)
			continue;
		err = rd_kafka_query_watermark_offsets(kc_consumer.rk, source->topic, p, &lo, &hi,
											   KC_WATERMARKS_TIMEOUT_MS);
		if (err)
		{
			KappaStatusSetError(KAPPA_WORKER_RETRYING,
								"could not look up the offsets of partition %d of topic \"%s\": %s",
								p, source->topic, rd_kafka_err2str(err));
			kc_consumer.any_lost = true;
			continue;
		}
		part->hwm = hi;

		if (first > hi)
		{
			KappaStatusSetError(KAPPA_WORKER_FAILED,
								"the next offset %lld of partition %d of topic \"%s\" is past its end (%lld): "
								"the topic was deleted and created again, or the broker lost its log. "
								"Drop the source and create it again to read the topic from its start.",
								(long long) first, p, source->topic, (long long) hi);
			return KAPPA_LOSS_FAILED;
		}
		if (first >= lo)
		{
			/* nothing is missing (the log moved back?): read on from there */
			kc_reassign(p, first);
			continue;
		}

		what = psprintf("the broker no longer holds offsets %lld to %lld of partition %d of topic \"%s\" "
						"(%lld messages lost)",
						(long long) first, (long long) (lo - 1), p, source->topic,
						(long long) (lo - first));
		if (source->onDataLoss == KAPPA_DATA_LOSS_FAIL)
		{
			KappaStatusSetError(KAPPA_WORKER_FAILED,
								"%s; on_data_loss is 'fail'. To record the gap in kappa.errors and go on: "
								"SELECT kappa.resume_source('%s', on_data_loss => 'record'); or rewind the source.",
								what, source->name);
			return KAPPA_LOSS_FAILED;
		}

		/* record it, then read on from the broker's first offset */
		if (!kc_record_gap(p, first, lo - 1, what))
		{
			*partition = p;
			return KAPPA_LOSS_CONFLICT;
		}
		ereport(LOG,
				(errmsg("kafka source \"%s\": recorded a gap in kappa.errors", source->name),
				 errdetail_internal("%s", what)));
		part->committed = lo;
		part->polled_next = lo;
		kc_reassign(p, lo);
	}
	return KAPPA_LOSS_HANDLED;
}

/*
 * KappaConsumerAnyLost tells whether a partition is waiting for
 * KappaConsumerHandleDataLoss.
 */
bool
KappaConsumerAnyLost(void)
{
	return kc_consumer.any_lost;
}

/*
 * kc_wake_fetcher makes librdkafka resume fetching if the consumer queue
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
kc_wake_fetcher(void)
{
	bool	   *assigned = palloc(sizeof(bool) * Max(kc_consumer.nparts, 1));

	for (int p = 0; p < kc_consumer.nparts; p++)
		assigned[p] = kc_consumer.parts[p].assigned;
	KappaKafkaWakeFetcher(kc_consumer.rk, kc_consumer.source->topic, assigned,
						  kc_consumer.nparts);
	pfree(assigned);
	kc_consumer.polled_bytes = 0;
}

/*
 * KappaKafkaWakeFetcher is kc_wake_fetcher for consumer 'rk' of 'topic',
 * whose partitions p < nparts with assigned[p] it reads; also for a
 * rebuild's replay (kafka_replay.c).
 */
void
KappaKafkaWakeFetcher(rd_kafka_t *rk, const char *topic, const bool *assigned, int nparts)
{
	rd_kafka_topic_partition_list_t *list;

	list = rd_kafka_topic_partition_list_new(nparts);
	for (int p = 0; p < nparts; p++)
	{
		if (assigned[p])
			rd_kafka_topic_partition_list_add(list, topic, p)->offset = RD_KAFKA_OFFSET_END;
	}
	if (list->cnt > 0)
		(void) rd_kafka_offsets_for_times(rk, list, 0);
	rd_kafka_topic_partition_list_destroy(list);
}

/*
 * KappaKafkaWakeBytes returns after how many bytes taken from the queue of
 * consumer 'rk' the fetcher must be woken (KappaKafkaWakeFetcher): half its
 * queued.max.messages.kbytes.
 */
int64
KappaKafkaWakeBytes(rd_kafka_t *rk)
{
	char		value[64];
	size_t		size = sizeof(value);

	if (rd_kafka_conf_get(rd_kafka_conf(rk), "queued.max.messages.kbytes",
						  value, &size) == RD_KAFKA_CONF_OK)
		return Max(strtol(value, NULL, 10), 1) * (int64) 1024 / 2;
	return (int64) KC_DEFAULT_QUEUE_KBYTES * 1024 / 2;
}

/*
 * KappaConsumerPoll moves available messages into the batch, up to
 * 'batch_size' messages and 'batch_bytes' bytes; a batch's deadline is
 * 'max_latency_ms' after its first message.  Returns true if it stopped
 * because the batch is full (messages may be left in the queue, so the
 * caller must not wait for the event fd).  A partition whose next offset
 * the broker no longer holds is marked lost (KappaConsumerHandleDataLoss
 * deals with it after the batch).  Then wakes the fetcher if due and
 * reports what librdkafka's callbacks left.
 */
bool
KappaConsumerPoll(int batch_size, int64 batch_bytes, int max_latency_ms)
{
	bool		full;

	/* the batch array follows the batch size */
	if (kc_consumer.maxmsgs < batch_size)
	{
		if (kc_consumer.msgs == NULL)
			kc_consumer.msgs = MemoryContextAlloc(kc_consumer.cxt,
												  batch_size * sizeof(rd_kafka_message_t *));
		else
			kc_consumer.msgs = repalloc(kc_consumer.msgs,
										batch_size * sizeof(rd_kafka_message_t *));
		kc_consumer.maxmsgs = batch_size;
	}

	while (kc_consumer.nmsgs < batch_size && kc_consumer.batch_bytes < batch_bytes)
	{
		rd_kafka_message_t *m = rd_kafka_consumer_poll(kc_consumer.rk, 0);
		KappaPartition *part;

		if (m == NULL)
			break;
		part = (m->partition >= 0 && m->partition < kc_consumer.nparts) ?
			&kc_consumer.parts[m->partition] : NULL;
		if (m->err)
		{
			if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET &&
				part != NULL && part->assigned)
			{
				part->lost = true;
				kc_consumer.any_lost = true;
			}
			else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				KappaStatusSetError(KAPPA_WORKER_RETRYING, "%s", rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		if (part == NULL || !part->assigned || part->lost)
		{
			rd_kafka_message_destroy(m);
			continue;
		}
		if (kc_consumer.nmsgs == 0)
			kc_consumer.batch_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																	 max_latency_ms);
		kc_consumer.msgs[kc_consumer.nmsgs++] = m;
		kc_consumer.batch_bytes += m->len + m->key_len;
		kc_consumer.polled_bytes += m->len + m->key_len;
		if (part->polled_next < m->offset + 1)
			part->polled_next = m->offset + 1;
	}
	full = kc_consumer.nmsgs >= batch_size || kc_consumer.batch_bytes >= batch_bytes;

	if (kc_consumer.polled_bytes >= kc_consumer.wake_bytes)
		kc_wake_fetcher();
	kc_report_callbacks();
	return full;
}

/*
 * KappaConsumerPending returns how many messages the current batch holds;
 * KappaConsumerBatchDeadline when it is due (valid when it holds some).
 */
int
KappaConsumerPending(void)
{
	return kc_consumer.nmsgs;
}

TimestampTz
KappaConsumerBatchDeadline(void)
{
	return kc_consumer.batch_deadline;
}

/*
 * KappaConsumerBatch returns the messages of the current batch (*nmsgs of
 * them), in the order they were polled; they stay the consumer's.
 */
rd_kafka_message_t **
KappaConsumerBatch(int *nmsgs)
{
	*nmsgs = kc_consumer.nmsgs;
	return kc_consumer.msgs;
}

/*
 * KappaConsumerBatchCommitted is told that the current batch committed:
 * next[p] is the next offset of partition p now stored (or -1 where the
 * batch had no message of p), for every partition of the table.  Advances
 * the committed offsets and lets the messages go; the next batch starts
 * empty.
 */
void
KappaConsumerBatchCommitted(const int64 *next)
{
	for (int p = 0; p < kc_consumer.nparts; p++)
		if (next[p] >= 0)
			kc_consumer.parts[p].committed = next[p];
	for (int i = 0; i < kc_consumer.nmsgs; i++)
		rd_kafka_message_destroy(kc_consumer.msgs[i]);
	kc_consumer.nmsgs = 0;
	kc_consumer.batch_bytes = 0;
}

/*
 * KappaConsumerRewind lets the current batch go unapplied: its messages
 * are dropped and every partition is unassigned, to be assigned again from
 * its stored offset at the first refresh after 'resume'.
 */
void
KappaConsumerRewind(TimestampTz resume)
{
	for (int i = 0; i < kc_consumer.nmsgs; i++)
		rd_kafka_message_destroy(kc_consumer.msgs[i]);
	kc_consumer.nmsgs = 0;
	kc_consumer.batch_bytes = 0;
	KappaConsumerUnassignAll();
	kc_consumer.next_metadata = resume;
}

/*
 * KappaConsumerOffsetsMoved tells whether the stored next offset of one of
 * this worker's partitions is no longer the one it committed: someone else
 * moved it (kappa.rewind_source, kafka_rewind.c), and the worker must read
 * from the stored offsets again (KappaConsumerRewind).  Looks at the
 * partitions held, or with 'held_only' false at every partition the worker
 * has held (a failed worker holds none).  Call it between batches, in a
 * transaction.
 */
bool
KappaConsumerOffsetsMoved(bool held_only)
{
	Oid			t = INT4OID;
	Datum		v = Int32GetDatum(kc_consumer.source->id);
	bool		moved = false;

	SPI_connect();
	KappaExecCatalogSql("SELECT partition, next_offset FROM kappa.source_offsets "
						"WHERE source_id OPERATOR(pg_catalog.=) $1", 1, &t, &v, NULL);
	for (uint64 r = 0; r < SPI_processed && !moved; r++)
	{
		bool		isnull;
		int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 1, &isnull));
		int64		o = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 2, &isnull));
		KappaPartition *part;

		if (p < 0 || p >= kc_consumer.nparts)
			continue;
		part = &kc_consumer.parts[p];
		if ((held_only ? part->assigned : part->positioned) && part->committed != o)
			moved = true;
	}
	SPI_finish();
	return moved;
}

/*
 * KappaConsumerCaughtUp tells whether the worker has polled every message
 * its partitions held as of librdkafka's last fetch responses (their cached
 * high watermarks): the end of a backlog.
 */
bool
KappaConsumerCaughtUp(void)
{
	KappaConsumerRefreshWatermarks();
	for (int p = 0; p < kc_consumer.nparts; p++)
	{
		KappaPartition *part = &kc_consumer.parts[p];

		if (!part->assigned)
			continue;
		if (part->hwm < 0 || part->polled_next < part->hwm)
			return false;
	}
	return true;
}
