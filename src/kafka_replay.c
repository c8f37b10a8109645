/*-------------------------------------------------------------------------
 *
 * kafka_replay.c
 *	  Reading a Kafka source's history again for a rebuild of a continuous
 *	  view: the partitions' offset ranges that kappa.rebuild_offsets names,
 *	  applied to the building version only.
 *
 * A rebuild from Kafka (view_rebuild.c) records, per source and partition,
 * the range [next_offset, end_offset) still to replay: end_offset is what
 * the live source had committed when the rebuild was registered, and live
 * batches feed the building version from then on.  KappaReplaySource reads
 * those ranges with a consumer of its own -- never the live source's, and
 * never its offsets -- and applies them through kafka_apply.c with the same
 * decoders, envelopes and dead-letter rules as the live worker
 * (KappaApplyReplay), each batch in one transaction with its new next
 * offsets; so a rebuild killed at any instant resumes where it was, with
 * no message counted twice.  Each source of a rebuild is replayed by a
 * worker of its own, all at once (KappaReplayWorkerMain, view_rebuild.c).
 *
 * A range the broker no longer holds when the replay comes to it (the log
 * was truncated after the rebuild was registered) follows the source's
 * on_data_loss rule: 'fail' fails the rebuild, 'record' skips to what the
 * log holds and adds the missing messages to the rebuild's gaps.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "kappa_errcodes.h"
#include "util.h"

/* Timings */
#define KR_POLL_MS				100 /* longest wait for a batch's first
									 * message */
#define KR_FILL_MS				200 /* longest time to fill a batch */
#define KR_BROKER_TIMEOUT_MS	5000	/* a watermark request */
#define KR_RETRY_MIN_MS			500 /* the schema registry is down: backoff */
#define KR_RETRY_MAX_MS			30000

/* The replay of one source. */
typedef struct KrReplay
{
	int32		rebuild_id;
	KappaSource *source;
	rd_kafka_t *rk;
	int			nparts;			/* partitions 0 .. nparts-1 */
	int64	   *next;			/* stored next offset, by partition */
	int64	   *end;			/* where the replay of the partition ends */
	bool	   *active;			/* still to read */
	bool	   *done_in_batch;	/* its last message is in the current batch */
	int64	   *batch_next;		/* KappaApplyReplay's result */
	rd_kafka_message_t **msgs;	/* the batch being read or applied */
	int			nmsgs;
	int64		polled_bytes;	/* taken from the queue since the fetcher */
	int64		wake_bytes;		/* was woken; wake it past this (see
								 * kc_wake_fetcher in kafka_consumer.c) */
} KrReplay;

/*
 * kr_store_end records that partition p was read to its end although the
 * last offsets of its range held no message (compacted away, transaction
 * markers): its next offset becomes its end.
 */
static void
kr_store_end(KrReplay *r, int p)
{
	Oid			t[4] = {INT4OID, INT4OID, INT4OID, INT8OID};
	Datum		v[4];

	(void) KappaBeginTransaction(false);
	SPI_connect();
	v[0] = Int32GetDatum(r->rebuild_id);
	v[1] = Int32GetDatum(r->source->id);
	v[2] = Int32GetDatum(p);
	v[3] = Int64GetDatum(r->next[p]);
	KappaExecCatalogSql("UPDATE kappa.rebuild_offsets SET next_offset = end_offset "
						"WHERE rebuild_id OPERATOR(pg_catalog.=) $1 "
						"AND source_id OPERATOR(pg_catalog.=) $2 "
						"AND partition OPERATOR(pg_catalog.=) $3 "
						"AND next_offset OPERATOR(pg_catalog.=) $4", 4, t, v, NULL);
	SPI_finish();
	KappaCommitTransaction();
	r->next[p] = r->end[p];
}

/*
 * kr_assign assigns partition p to the replay's consumer at 'offset'
 * (unassigning it first with 'again'), or, with offset -1, only unassigns it.
 */
static void
kr_assign(KrReplay *r, int p, int64 offset, bool again)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
	rd_kafka_error_t *error = NULL;

	rd_kafka_topic_partition_list_add(list, r->source->topic, p)->offset = offset;
	if (again || offset < 0)
		error = rd_kafka_incremental_unassign(r->rk, list);
	if (error == NULL && offset >= 0)
		error = rd_kafka_incremental_assign(r->rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (error)
	{
		char	   *msg = pstrdup(rd_kafka_error_string(error));

		rd_kafka_error_destroy(error);
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not assign partition %d of topic \"%s\" to replay kafka source \"%s\"",
						p, r->source->topic, r->source->name),
				 errdetail_internal("%s", msg)));
	}
}

/* kr_finish_partition stops reading partition p: its range is read. */
static void
kr_finish_partition(KrReplay *r, int p)
{
	r->active[p] = false;
	kr_assign(r, p, -1, false);
	if (r->next[p] < r->end[p])
		kr_store_end(r, p);
}

/*
 * kr_handle_loss deals with partition p, whose next offset the broker no
 * longer holds: under on_data_loss 'fail' the rebuild fails (an error the
 * replay worker records); under 'record' the missing messages are added to
 * the rebuild's gaps, the partition's next offset moves to the broker's
 * first one, and reading goes on from there.
 */
static void
kr_handle_loss(KrReplay *r, int p)
{
	int64		low = -1;
	int64		high = -1;
	int64		resume;
	rd_kafka_resp_err_t err;

	err = rd_kafka_query_watermark_offsets(r->rk, r->source->topic, p, &low, &high,
										   KR_BROKER_TIMEOUT_MS);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not read the offsets of partition %d of topic \"%s\"",
						p, r->source->topic),
				 errdetail_internal("%s", rd_kafka_err2str(err))));
	if (low <= r->next[p])
		return;					/* nothing lost after all: read again */
	resume = Min(low, r->end[p]);
	if (r->source->onDataLoss == KAPPA_DATA_LOSS_FAIL)
		ereport(ERROR,
				(errcode(ERRCODE_KAPPA_REBUILD_FAILED),
				 errmsg("the log of kafka source \"%s\" no longer holds offsets " INT64_FORMAT " to " INT64_FORMAT " of partition %d",
						r->source->name, r->next[p], resume - 1, p),
				 errdetail("The broker dropped them while the view was being rebuilt; the source's on_data_loss is 'fail'."),
				 errhint("Cancel the rebuild with kappa.cancel_rebuild(); set the source's on_data_loss to 'record' to rebuild from what the log still holds.")));
	{
		Oid			t[5] = {INT4OID, INT4OID, INT4OID, INT8OID, INT8OID};
		Datum		v[5];

		(void) KappaBeginTransaction(false);
		SPI_connect();
		v[0] = Int32GetDatum(r->rebuild_id);
		v[1] = Int32GetDatum(r->source->id);
		v[2] = Int32GetDatum(p);
		v[3] = Int64GetDatum(r->next[p]);
		v[4] = Int64GetDatum(resume);
		KappaExecCatalogSql("UPDATE kappa.rebuild_offsets SET next_offset = $5 "
							"WHERE rebuild_id OPERATOR(pg_catalog.=) $1 "
							"AND source_id OPERATOR(pg_catalog.=) $2 "
							"AND partition OPERATOR(pg_catalog.=) $3 "
							"AND next_offset OPERATOR(pg_catalog.=) $4", 5, t, v, NULL);
		if (SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("the replay of partition %d for rebuild %d was changed concurrently",
							p, r->rebuild_id)));
		KappaExecCatalogSql("UPDATE kappa.view_rebuilds "
							"SET gaps = gaps OPERATOR(pg_catalog.+) ($5 OPERATOR(pg_catalog.-) $4), "
							"updated_at = pg_catalog.now() "
							"WHERE id OPERATOR(pg_catalog.=) $1", 5, t, v, NULL);
		SPI_finish();
		KappaCommitTransaction();
	}
	ereport(LOG,
			(errmsg("rebuild %d: offsets " INT64_FORMAT " to " INT64_FORMAT " of partition %d of topic \"%s\" are no longer in the log; counted as a gap",
					r->rebuild_id, r->next[p], resume - 1, p, r->source->topic)));
	r->next[p] = resume;
	if (resume >= r->end[p])
		kr_finish_partition(r, p);
	else
		kr_assign(r, p, resume, true);
}

/*
 * kr_load reads what is left of source 'source_id' for rebuild 'rebuild_id'
 * into 'r' (in the current memory context), in a transaction of its own;
 * returns false if nothing is (or the source is gone).
 */
static bool
kr_load(KrReplay *r, int32 rebuild_id, int32 source_id, rd_kafka_conf_t **conf)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			t[2] = {INT4OID, INT4OID};
	Datum		v[2];
	bool		any = false;

	memset(r, 0, sizeof(*r));
	r->rebuild_id = rebuild_id;
	(void) KappaBeginTransaction(false);
	SPI_connect();
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		r->source = KappaSourceLoad(source_id, true);
		MemoryContextSwitchTo(old);
	}
	if (r->source != NULL)
	{
		v[0] = Int32GetDatum(rebuild_id);
		v[1] = Int32GetDatum(source_id);
		KappaExecCatalogSql("SELECT partition, next_offset, end_offset FROM kappa.rebuild_offsets "
							"WHERE rebuild_id OPERATOR(pg_catalog.=) $1 "
							"AND source_id OPERATOR(pg_catalog.=) $2 ORDER BY partition",
							2, t, v, NULL);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 1, &isnull));

			r->nparts = Max(r->nparts, p + 1);
		}
		r->next = MemoryContextAllocZero(cxt, sizeof(int64) * Max(r->nparts, 1));
		r->end = MemoryContextAllocZero(cxt, sizeof(int64) * Max(r->nparts, 1));
		r->active = MemoryContextAllocZero(cxt, sizeof(bool) * Max(r->nparts, 1));
		r->done_in_batch = MemoryContextAllocZero(cxt, sizeof(bool) * Max(r->nparts, 1));
		r->batch_next = MemoryContextAllocZero(cxt, sizeof(int64) * Max(r->nparts, 1));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int32		p = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));

			r->next[p] = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			r->end[p] = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			r->active[p] = r->next[p] < r->end[p];
			any |= r->active[p];
		}
		if (any)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			*conf = KappaKafkaConfBuild(r->source);
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
	KappaCommitTransaction();
	return any;
}

/* kr_create_consumer creates the replay's consumer, assigned to its ranges. */
static void
kr_create_consumer(KrReplay *r, rd_kafka_conf_t *conf)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr,
						  sizeof(errstr)) != RD_KAFKA_CONF_OK)
		elog(ERROR, "librdkafka: %s", errstr);
	r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (r->rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not create a Kafka consumer to replay source \"%s\"",
						r->source->name),
				 errdetail_internal("%s", errstr)));
	}
	rd_kafka_set_log_queue(r->rk, NULL);
	rd_kafka_poll_set_consumer(r->rk);
	r->wake_bytes = KappaKafkaWakeBytes(r->rk);
	r->polled_bytes = 0;
	for (int p = 0; p < r->nparts; p++)
		if (r->active[p])
			kr_assign(r, p, r->next[p], false);
}

/* kr_wait sleeps 'ms' milliseconds, or until the latch is set. */
static void
kr_wait(long ms)
{
	int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   ms, PG_WAIT_EXTENSION);

	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * KappaReplaySource replays what rebuild 'rebuild_id' still has to read of
 * source 'source_id' into the building version whose materialization is
 * 'building_mat' (see the file header), and returns when every range is
 * read.  Runs outside any transaction; errors are raised to the replay
 * worker.
 */
void
KappaReplaySource(int32 rebuild_id, int32 source_id, Oid building_mat)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "pg_kappa replay",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	KrReplay	r;
	rd_kafka_conf_t *conf = NULL;
	rd_kafka_message_t **msgs;
	int			batch_size;
	int64		batch_bytes;
	long		retry_ms = KR_RETRY_MIN_MS;
	bool		any_active;

	if (!kr_load(&r, rebuild_id, source_id, &conf))
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return;
	}
	KappaApplyReplayInit(r.source, rebuild_id, building_mat, cxt);
	kr_create_consumer(&r, conf);
	batch_size = r.source->batch_size > 0 ? r.source->batch_size : kappa_batch_size;
	batch_bytes = r.source->batch_bytes > 0 ? r.source->batch_bytes :
		(int64) kappa_batch_bytes_kb * 1024;
	msgs = r.msgs = palloc(sizeof(rd_kafka_message_t *) * batch_size);

	PG_TRY();
	{
		do
		{
			int			n = 0;
			int			lost = -1;
			int64		nbytes = 0;
			TimestampTz fill_until = 0;

			/*
			 * fill the batch as the live consumer does: to its size, its
			 * bytes, or for KR_FILL_MS once it has a message
			 */
			while (n < batch_size && nbytes < batch_bytes)
			{
				rd_kafka_message_t *m;
				int32		p;

				if (r.polled_bytes >= r.wake_bytes)
				{
					KappaKafkaWakeFetcher(r.rk, r.source->topic, r.active, r.nparts);
					r.polled_bytes = 0;
				}
				m = rd_kafka_consumer_poll(r.rk, n == 0 ? KR_POLL_MS : 10);
				if (m == NULL)
				{
					if (n == 0 || GetCurrentTimestamp() >= fill_until)
						break;
					continue;
				}
				r.polled_bytes += m->len + m->key_len;
				p = m->partition;
				if (p < 0 || p >= r.nparts || !r.active[p])
				{
					rd_kafka_message_destroy(m);
					continue;
				}
				if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
				{
					/* the log ends at m->offset: the range's end is read */
					if (m->offset >= r.end[p])
						kr_finish_partition(&r, p);
					rd_kafka_message_destroy(m);
					continue;
				}
				if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
					m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE)
				{
					lost = p;
					rd_kafka_message_destroy(m);
					break;
				}
				if (m->err)
				{
					ereport(LOG,
							(errmsg("rebuild %d, kafka source \"%s\": %s", rebuild_id,
									r.source->name, rd_kafka_message_errstr(m))));
					rd_kafka_message_destroy(m);
					continue;
				}
				if (m->offset < r.next[p])
				{
					rd_kafka_message_destroy(m);
					continue;
				}
				if (m->offset >= r.end[p])
				{
					rd_kafka_message_destroy(m);
					kr_finish_partition(&r, p);
					continue;
				}
				if (n == 0)
					fill_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KR_FILL_MS);
				msgs[n++] = m;
				nbytes += m->len + m->key_len;
				r.nmsgs = n;
				if (m->offset + 1 >= r.end[p])
				{
					/* its last message: unassigned once the batch is in */
					r.active[p] = false;
					r.done_in_batch[p] = true;
				}
			}

			if (n > 0)
			{
				while (!KappaApplyReplay(msgs, n, r.next, r.batch_next, r.nparts))
				{
					/* the schema registry cannot be reached: wait, ask again */
					kr_wait(retry_ms);
					retry_ms = Min(retry_ms * 2, KR_RETRY_MAX_MS);
				}
				retry_ms = KR_RETRY_MIN_MS;
				for (int p = 0; p < r.nparts; p++)
					if (r.batch_next[p] >= 0)
						r.next[p] = r.batch_next[p];
				for (int i = 0; i < n; i++)
					rd_kafka_message_destroy(msgs[i]);
				r.nmsgs = 0;
				/* partitions whose last message was in the batch */
				for (int p = 0; p < r.nparts; p++)
					if (r.done_in_batch[p])
					{
						r.done_in_batch[p] = false;
						kr_finish_partition(&r, p);
					}
			}
			if (lost >= 0)
				kr_handle_loss(&r, lost);

			CHECK_FOR_INTERRUPTS();
			if (!PostmasterIsAlive())
				proc_exit(1);
			any_active = false;
			for (int p = 0; p < r.nparts; p++)
				any_active |= r.active[p];
		} while (any_active);
	}
	PG_FINALLY();
	{
		/* librdkafka waits for every message to be let go before it ends */
		for (int i = 0; i < r.nmsgs; i++)
			rd_kafka_message_destroy(r.msgs[i]);
		rd_kafka_destroy_flags(r.rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}
