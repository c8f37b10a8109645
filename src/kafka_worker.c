/*-------------------------------------------------------------------------
 *
 * kafka_worker.c
 *	  The worker of one Kafka source slot: its start, its main loop, its
 *	  modes, privilege rechecks and why it stops.
 *
 * A worker consumes the partitions of its slot (kafka_consumer.c) and
 * applies them to the target, one batch per transaction, exactly once
 * (kafka_apply.c); kafka_status.c keeps what kappa.sources shows of it.
 * This file calls those three and nothing calls back into it: what the
 * loop must do is returned to it.
 *
 * The loop.  Wait on the latch, postmaster death and the consumer queue's
 * event fd, with a timeout; poll messages into the batch; apply the batch
 * when it is full, when max_latency has passed since its first message,
 * when a backlog has just been read to its end, or when a partition's data
 * was lost; between batches deal with lost data, re-read the source every
 * KW_CATALOG_CHECK_MS, refresh the watermarks and flush the status.
 *
 * Modes.  A worker consumes; or, for a paused source (slot 0 only), holds
 * no partition but keeps the lag current; or, when it cannot go on (data
 * loss under 'fail', USAGE on the server or an option's privilege lost, a
 * row that violates an expectation whose action is 'fail'),
 * holds no partition, shows state failed with the reason, and keeps the lag
 * current until the cause is gone (blocked: rechecked with the source) or
 * the worker is restarted (failed).
 *
 * Rewinds.  kappa.rewind_source moves the stored offsets; between batches
 * kw_check_source notices that they are not the ones the worker committed
 * and the worker reads from them again (a failed worker starts over); a
 * batch that raced the rewind fails on its offsets and the worker restarts.
 *
 * Stopping.  A worker exits cleanly when its source is dropped, paused (but
 * for slot 0) or shrunk below its slot, and exits to be started over when
 * the source was replaced, a batch failed for a reason that is not a
 * message's (the error is shown in kappa.sources first), or its stored
 * offsets were changed by someone else; it is restarted and starts over
 * from the stored offsets.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "kappa_errcodes.h"
#include "util.h"

/* Timings */
#define KW_CATALOG_CHECK_MS		1000	/* re-read the source between batches */
#define KW_WATERMARKS_MS		5000	/* ends of all the topic's partitions */
#define KW_IDLE_WAIT_MS			1000	/* longest wait without a batch */
#define KW_RETRY_MIN_MS			500 /* a batch that must wait (the schema */
#define KW_RETRY_MAX_MS			30000	/* registry is down): backoff bounds */

/* What the worker does. */
typedef enum KwMode
{
	KW_MODE_CONSUMING,
	KW_MODE_PAUSED,				/* the source is paused: no partition held */
	KW_MODE_BLOCKED,			/* a privilege is missing: rechecked often */
	KW_MODE_FAILED				/* lost data under 'fail': until a restart */
} KwMode;

/* Why the source no longer wants this worker (kw_check_source). */
typedef enum KwStopReason
{
	KW_STOP_NONE,				/* it does */
	KW_STOP_DROPPED,
	KW_STOP_REPLACED,			/* another source under the same id */
	KW_STOP_PAUSED,				/* paused, and this is not slot 0 */
	KW_STOP_RESIZED				/* parallelism now at most this slot */
} KwStopReason;

/* This worker. */
typedef struct KwWorker
{
	KappaWorkerArgs args;
	KappaSource *source;		/* as loaded at start, in cxt */
	MemoryContext cxt;			/* lives as long as the worker */
	KwMode		mode;
	bool		after_full_batch;	/* the last batch applied was full */
	TimestampTz next_catalog_check;
	TimestampTz next_watermarks;
	bool		retrying;		/* the last batch had to wait */
	int			retry_ms;		/* the wait after the next such batch */
} KwWorker;

static KwWorker kw_worker = {.mode = KW_MODE_CONSUMING};

static void kw_stop(KwStopReason reason) pg_attribute_noreturn();
static void kw_fail_and_exit(ErrorData *edata, const char *what) pg_attribute_noreturn();
static void kw_stopped_by_expectation(ErrorData *edata) pg_attribute_noreturn();
static void kw_reload_config(void);

/*
 * kw_source_changed tells whether the catalog row with our source's id now
 * describes another source (dropped and created again, say after the
 * extension was recreated), or one whose settings the worker was started
 * with have changed (on_data_loss, after kappa.resume_source).
 */
static bool
kw_source_changed(KappaSource *s)
{
	KappaSource *mine = kw_worker.source;

	return strcmp(s->name, mine->name) != 0 ||
		s->target != mine->target ||
		s->owner != mine->owner ||
		strcmp(s->topic, mine->topic) != 0 ||
		(s->server == NULL) != (mine->server == NULL) ||
		(s->server && strcmp(s->server, mine->server) != 0) ||
		(s->brokers == NULL) != (mine->brokers == NULL) ||
		(s->brokers && strcmp(s->brokers, mine->brokers) != 0) ||
		strcmp(s->format, mine->format) != 0 ||
		strcmp(s->start, mine->start) != 0 ||
		s->onDataLoss != mine->onDataLoss ||
		VARSIZE(s->options) != VARSIZE(mine->options) ||
		memcmp(s->options, mine->options, VARSIZE(s->options)) != 0;
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
	if (mode == kw_worker.mode)
		return;
	if (mode != KW_MODE_CONSUMING)
		KappaConsumerUnassignAll();
	else
		KappaConsumerRefreshSoon(); /* assign at once */
	kw_worker.mode = mode;
	if (mode == KW_MODE_PAUSED)
	{
		KappaStatusSetState(KAPPA_WORKER_PAUSED);
		KappaStatusForgetError();
	}
	else if (mode == KW_MODE_CONSUMING)
		KappaStatusSetState(KAPPA_WORKER_STARTING);
}

/*
 * kw_stop exits because the source no longer wants this worker: cleanly,
 * but for a replaced source, which starts over with a new worker.  The
 * launcher is told at once.
 */
static void
kw_stop(KwStopReason reason)
{
	const char *why = NULL;

	Assert(reason != KW_STOP_NONE);
	switch (reason)
	{
		case KW_STOP_NONE:
		case KW_STOP_DROPPED:
			why = "dropped";
			break;
		case KW_STOP_REPLACED:
			why = "replaced";
			break;
		case KW_STOP_PAUSED:
			why = "paused";
			break;
		case KW_STOP_RESIZED:
			why = "resized";
			break;
	}
	ereport(LOG,
			(errmsg("kafka source \"%s\" worker %d stopping: the source was %s",
					kw_worker.source->name, kw_worker.args.slot, why)));
	if (kw_worker.args.managed)
		KappaLauncherWake();
	proc_exit(reason == KW_STOP_REPLACED ? 1 : 0);
}

/*
 * kw_offsets_moved follows offsets someone else stored for the worker's
 * partitions (kappa.rewind_source): a consuming worker lets go of its
 * partitions and assigns them again at once, from the stored offsets; a
 * failed one exits, to be started over from them.
 */
static void
kw_offsets_moved(void)
{
	ereport(LOG,
			(errmsg("kafka source \"%s\" worker %d: the stored offsets were moved, reading from them",
					kw_worker.source->name, kw_worker.args.slot)));
	if (kw_worker.mode == KW_MODE_FAILED)
	{
		if (kw_worker.args.managed)
			KappaLauncherWake();
		proc_exit(1);
	}
	KappaConsumerRewind(GetCurrentTimestamp());
}

/*
 * kw_check_source re-reads the source and returns why this worker must stop
 * (gone, replaced, resized or, for slots other than 0, paused), or
 * KW_STOP_NONE; slot 0 of a paused source stays, holding no partition.
 * Also rechecks the owner's privileges, blocking the worker while one is
 * missing.  Runs outside any batch.
 */
static KwStopReason
kw_check_source(void)
{
	KappaSource *s = NULL;
	KwStopReason why = KW_STOP_NONE;
	char	   *blocked = NULL;
	bool		paused = false;
	bool		moved = false;

	if (KappaBeginTransaction(true) != KAPPA_EXTENSION_MISSING)
		s = KappaSourceLoad(kw_worker.source->id, true);
	if (s == NULL)
		why = KW_STOP_DROPPED;
	else if (kw_source_changed(s))
		why = KW_STOP_REPLACED;
	else if (s->paused && kw_worker.args.slot > 0)
		why = KW_STOP_PAUSED;
	else if (kw_worker.args.slot >= s->parallelism)
		why = KW_STOP_RESIZED;
	else if (!s->paused)
	{
		char	   *reason = kw_check_privileges(s);

		if (reason != NULL)
			blocked = MemoryContextStrdup(kw_worker.cxt, reason);
	}
	if (s != NULL)
		paused = s->paused;
	/* offsets moved by kappa.rewind_source: read from the stored ones */
	if (why == KW_STOP_NONE &&
		(kw_worker.mode == KW_MODE_CONSUMING || kw_worker.mode == KW_MODE_FAILED))
		moved = KappaConsumerOffsetsMoved(kw_worker.mode == KW_MODE_CONSUMING);
	KappaCommitTransaction();

	if (why != KW_STOP_NONE)
		return why;
	if (moved)
		kw_offsets_moved();
	if (kw_worker.mode == KW_MODE_FAILED)
		return KW_STOP_NONE;	/* only a restart ends it */
	if (paused)
		kw_enter_mode(KW_MODE_PAUSED);
	else if (blocked != NULL)
	{
		kw_enter_mode(KW_MODE_BLOCKED);
		KappaStatusSetError(KAPPA_WORKER_FAILED, "%s", blocked);
		pfree(blocked);
	}
	else if (kw_worker.mode != KW_MODE_CONSUMING)
	{
		kw_enter_mode(KW_MODE_CONSUMING);
		KappaStatusForgetError();
	}
	return KW_STOP_NONE;
}

/*
 * kw_flush_status_after_error writes the status (with the error just
 * recorded) outside any transaction, after an error was handled; an error
 * while writing it is only logged.
 */
static void
kw_flush_status_after_error(void)
{
	PG_TRY();
	{
		int			nparts;
		int			topic_partitions;
		const KappaPartition *parts = KappaConsumerPartitions(&nparts,
															  &topic_partitions);

		KappaStatusFlush(parts, nparts, topic_partitions);
	}
	PG_CATCH();
	{
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}

/*
 * kw_fail_and_exit records an error that stops the worker in kappa.sources
 * (state failed, last_error) and exits, to be restarted from the stored
 * offsets with a backoff.  Call it from a PG_CATCH block, after
 * CopyErrorData, once the worker has started (kw_start).
 */
static void
kw_fail_and_exit(ErrorData *edata, const char *what)
{
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	KappaStatusForgetError();
	KappaStatusSetError(KAPPA_WORKER_FAILED, "%s: %s%s%s", what, edata->message,
						edata->detail ? ": " : "", edata->detail ? edata->detail : "");
	kw_flush_status_after_error();
	proc_exit(1);
}

/*
 * kw_stopped_by_expectation holds the source after a row violated an
 * expectation whose action is 'fail' (ERRCODE_KAPPA_EXPECTATION_FAILED,
 * contracts.c): the batch is not applied, the worker lets go of its
 * partitions and shows state failed with the error, without restarting
 * over and over, and checks every KW_CATALOG_CHECK_MS whether the
 * expectation still stops the source.  Once it does not (dropped, or added
 * again with another action) the worker exits, to be restarted from the
 * stored offsets; it stops as usual when the source is dropped or changed.
 * Call it from a PG_CATCH block, after CopyErrorData.
 */
static void
kw_stopped_by_expectation(ErrorData *edata)
{
	char	   *name = edata->constraint_name;

	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	kw_enter_mode(KW_MODE_FAILED);
	KappaStatusForgetError();
	KappaStatusSetError(KAPPA_WORKER_FAILED, "stopped by an expectation: %s%s%s",
						edata->message, edata->detail ? ": " : "",
						edata->detail ? edata->detail : "");
	kw_flush_status_after_error();

	for (;;)
	{
		KwStopReason why;
		bool		stops;

		(void) WaitLatchOrSocket(MyLatch,
								 WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT |
								 WL_EXIT_ON_PM_DEATH,
								 KappaConsumerEventFd(), KW_CATALOG_CHECK_MS,
								 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		KappaConsumerDrainEvents();
		CHECK_FOR_INTERRUPTS();
		kw_reload_config();
		AcceptInvalidationMessages();

		why = kw_check_source();
		if (why != KW_STOP_NONE)
			kw_stop(why);
		(void) KappaBeginTransaction(false);
		stops = name != NULL &&
			KappaExpectationStops(kw_worker.source->target, name);
		KappaCommitTransaction();
		if (!stops)
		{
			ereport(LOG,
					(errmsg("kafka source \"%s\" worker %d restarts: expectation \"%s\" no longer stops it",
							kw_worker.source->name, kw_worker.args.slot,
							name ? name : "?")));
			if (kw_worker.args.managed)
				KappaLauncherWake();
			proc_exit(1);
		}
	}
}

/*
 * kw_apply_or_exit applies the batch; on an error that is not a message's
 * fault (the target is gone, the owner lost its privilege, a serialization
 * failure) it records the error in kappa.sources and exits, to be
 * restarted from the stored offsets with a backoff.  A batch that must
 * wait (the schema registry cannot be reached) is dropped unapplied, and
 * its messages are read again from the stored offsets after a backoff of
 * its own, the worker staying up.
 */
static void
kw_apply_or_exit(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		if (KappaApplyMessages())
		{
			kw_worker.retrying = false;
			kw_worker.retry_ms = 0;
		}
		else
		{
			/*
			 * Not applied (the schema registry cannot be reached): let the
			 * messages go and read them again after a backoff.
			 */
			kw_worker.retrying = true;
			kw_worker.retry_ms = kw_worker.retry_ms == 0 ? KW_RETRY_MIN_MS :
				Min(kw_worker.retry_ms * 2, KW_RETRY_MAX_MS);
			KappaConsumerRewind(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															kw_worker.retry_ms));
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		/* the messages were not applied; the restart fetches them again */
		if (edata->sqlerrcode == ERRCODE_KAPPA_EXPECTATION_FAILED)
			kw_stopped_by_expectation(edata);
		kw_fail_and_exit(edata, "batch failed, worker restarts");
	}
	PG_END_TRY();
}

/*
 * kw_create_consumer_or_exit creates the consumer; when librdkafka refuses
 * (say, a key file that is missing), it records the error in kappa.sources
 * and exits, to be restarted with a backoff.
 */
static void
kw_create_consumer_or_exit(void)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		KappaConsumerCreate();
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

/*
 * kw_handle_data_loss deals with the partitions whose next offset the
 * broker no longer holds (KappaConsumerHandleDataLoss): the source fails,
 * or the worker stops when the offsets changed under it.
 */
static void
kw_handle_data_loss(void)
{
	int			partition = -1;

	switch (KappaConsumerHandleDataLoss(&partition))
	{
		case KAPPA_LOSS_HANDLED:
			break;
		case KAPPA_LOSS_FAILED:
			kw_enter_mode(KW_MODE_FAILED);
			break;
		case KAPPA_LOSS_CONFLICT:
			ereport(LOG,
					(errmsg("kafka source \"%s\" worker %d stopping: the offsets of partition %d were changed concurrently",
							kw_worker.source->name, kw_worker.args.slot, partition)));
			proc_exit(1);
	}
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
		KappaExtensionState state = KappaBeginTransaction(true);

		KappaCommitTransaction();
		if (state == KAPPA_EXTENSION_MISSING)
			return false;
		if (state == KAPPA_EXTENSION_CURRENT)
			return true;
		if (!logged)
			ereport(LOG,
					(errmsg("pg_kappa worker for source %d waits for ALTER EXTENSION pg_kappa UPDATE",
							kw_worker.args.source_id),
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
 * kw_start loads the source, takes the slot's lock, gets the worker's parts
 * ready and records the worker in kappa.source_status.  Exits quietly when
 * there is nothing to do.
 */
static void
kw_start(void)
{
	KappaSource *source;
	LOCKTAG		tag;
	char		appname[NAMEDATALEN + 32];
	char	   *blocked = NULL;
	MemoryContext old;

	/* the extension may have been dropped since this worker was registered */
	if (!kw_wait_for_update())
		proc_exit(0);

	(void) KappaBeginTransaction(false);
	old = MemoryContextSwitchTo(kw_worker.cxt);
	source = KappaSourceLoad(kw_worker.args.source_id, true);
	MemoryContextSwitchTo(old);
	if (source == NULL || kw_worker.args.slot >= source->parallelism ||
		(source->paused && kw_worker.args.slot > 0))
	{
		KappaCommitTransaction();
		proc_exit(0);
	}
	kw_worker.source = source;

	snprintf(appname, sizeof(appname), "pg_kappa source %s", source->name);
	SetConfigOption("application_name", appname, PGC_USERSET, PGC_S_SESSION);

	/* one worker per slot: a session lock nobody else uses (field4 = 3) */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) source->id,
						 (uint32) kw_worker.args.slot, 3);
	if (LockAcquire(&tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		ereport(LOG,
				(errmsg("kafka source \"%s\" worker %d is already running",
						source->name, kw_worker.args.slot)));
		KappaCommitTransaction();
		proc_exit(0);
	}

	KappaStatusInit(source, kw_worker.args.slot);
	KappaConsumerInit(source, kw_worker.args.slot, kw_worker.cxt);
	KappaApplyInit(source, kw_worker.cxt);

	SPI_connect();
	KappaStatusStarting();
	SPI_finish();
	if (!source->paused)
	{
		char	   *reason = kw_check_privileges(source);

		/* the reason lives in the transaction's memory */
		if (reason != NULL)
			blocked = MemoryContextStrdup(kw_worker.cxt, reason);
	}
	KappaCommitTransaction();

	if (source->paused)
		kw_enter_mode(KW_MODE_PAUSED);
	else if (blocked != NULL)
	{
		kw_worker.mode = KW_MODE_BLOCKED;
		KappaStatusSetError(KAPPA_WORKER_FAILED, "%s", blocked);
		pfree(blocked);
	}
}

/*
 * kw_reload_config rereads the configuration file if SIGHUP asked for it.
 */
static void
kw_reload_config(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * KappaKafkaWorkerMain is the entry point of a source worker; bgw_extra
 * holds its KappaWorkerArgs.
 */
void
KappaKafkaWorkerMain(Datum main_arg)
{
	KappaSource *source;

	memcpy(&kw_worker.args, MyBgworkerEntry->bgw_extra, sizeof(KappaWorkerArgs));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(kw_worker.args.dboid, kw_worker.args.owner, 0);

	kw_worker.cxt = AllocSetContextCreate(TopMemoryContext, "pg_kappa worker",
										  ALLOCSET_DEFAULT_SIZES);
	kw_start();
	source = kw_worker.source;
	kw_create_consumer_or_exit();
	ereport(LOG,
			(errmsg("kafka source \"%s\" worker %d started on topic \"%s\"",
					source->name, kw_worker.args.slot, source->topic)));

	for (;;)
	{
		bool		full;
		TimestampTz now;
		long		timeout;

		if (GetCurrentTimestamp() >= KappaConsumerNextRefresh())
		{
			KappaConsumerRefreshAssignment(kw_worker.mode == KW_MODE_CONSUMING);
			/* a batch waiting for the schema registry still waits */
			if (kw_worker.retrying)
				KappaStatusSetState(KAPPA_WORKER_RETRYING);
		}

		full = KappaConsumerPoll(KappaSourceBatchSize(source),
								 KappaSourceBatchBytes(source),
								 KappaSourceMaxLatency(source));
		now = GetCurrentTimestamp();

		/*
		 * A batch ends when it is full or max_latency after its first
		 * message; and when a backlog has just been read to its end (the
		 * batch before was full): its last messages have waited long enough,
		 * and ending then adds at most one transaction per backlog; and when
		 * a partition's data was lost (the batch first, then the gap).
		 */
		if (full || (KappaConsumerPending() > 0 &&
					 (now >= KappaConsumerBatchDeadline() || KappaConsumerAnyLost() ||
					  (kw_worker.after_full_batch && KappaConsumerCaughtUp()))))
		{
			kw_apply_or_exit();
			kw_worker.after_full_batch = full;
			CHECK_FOR_INTERRUPTS();
		}
		if (KappaConsumerPending() == 0 && KappaConsumerAnyLost())
			kw_handle_data_loss();

		/* between batches: the source may have changed; status */
		now = GetCurrentTimestamp();
		if (KappaConsumerPending() == 0 && now >= kw_worker.next_catalog_check)
		{
			KwStopReason why = kw_check_source();

			if (why != KW_STOP_NONE)
				kw_stop(why);
			kw_worker.next_catalog_check = TimestampTzPlusMilliseconds(now, KW_CATALOG_CHECK_MS);
		}
		if (KappaConsumerPending() == 0 && now >= kw_worker.next_watermarks)
		{
			KappaConsumerRefreshAllWatermarks();
			kw_worker.next_watermarks = TimestampTzPlusMilliseconds(now, KW_WATERMARKS_MS);
		}
		if (KappaConsumerPending() == 0 && KappaStatusFlushDue(now))
		{
			int			nparts;
			int			topic_partitions;
			const KappaPartition *parts;

			KappaConsumerRefreshWatermarks();
			parts = KappaConsumerPartitions(&nparts, &topic_partitions);
			KappaStatusFlush(parts, nparts, topic_partitions);
		}

		/* a full batch may have left messages in the queue: no waiting */
		if (full)
		{
			kw_reload_config();
			continue;
		}

		/* wait for messages, the deadline of the batch, or a tick */
		now = GetCurrentTimestamp();
		if (KappaConsumerPending() > 0)
			timeout = Max(TimestampDifferenceMilliseconds(now, KappaConsumerBatchDeadline()), 0);
		else
			timeout = KW_IDLE_WAIT_MS;
		if (KappaConsumerNextRefresh() > now)
			timeout = Min(timeout,
						  TimestampDifferenceMilliseconds(now, KappaConsumerNextRefresh()) + 1);
		else
			timeout = 0;
		if (KappaConsumerAnyLost())
			timeout = 0;

		if (timeout > 0)
		{
			int			rc;

			rc = WaitLatchOrSocket(MyLatch,
								   WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT |
								   WL_EXIT_ON_PM_DEATH,
								   KappaConsumerEventFd(), timeout, PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
				ResetLatch(MyLatch);
		}
		KappaConsumerDrainEvents();
		CHECK_FOR_INTERRUPTS();
		kw_reload_config();
		AcceptInvalidationMessages();
	}
}
