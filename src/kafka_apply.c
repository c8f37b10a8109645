/*-------------------------------------------------------------------------
 *
 * kafka_apply.c
 *	  One batch of a source worker in one transaction: its messages decoded
 *	  into rows of the target, bad messages isolated as dead letters, and the
 *	  partitions' next offsets stored.
 *
 * Exactly once.  The next offset of every partition lives in
 * kappa.source_offsets.  A batch's rows (or stream rows, with every view
 * delta), its dead letters and the new offsets are written in one
 * transaction, and the offset rows are updated only if they still hold the
 * offsets the batch started from -- so a crash at any instant neither loses
 * nor duplicates a message, and a second worker on the same partitions
 * (which the worker's session lock should already prevent) cannot commit a
 * duplicate either.
 *
 * Rows.  KappaDecode (decode.c) turns a message into the values of a row of
 * the target, which then takes one of four paths behind one interface
 * (KaSink): a stream's rows go into a KappaBatch (batch.c), which applies
 * them to the stream's views; a plain table's go through
 * ExecSimpleRelationInsert (as logical replication's apply does); any other
 * table's through an INSERT planned once per batch (kafka_target.c does
 * both).  With envelope 'upsert' or 'debezium', KappaDecodeChange turns a
 * message into a change of the row with its key instead, and the changes
 * of a range go into a KappaChangeSet (kafka_target.c), which writes each
 * key once.
 *
 * Bad messages.  A range of messages is applied in a subtransaction.  When
 * it fails in one message (decoding, type or constraint), that message
 * becomes a dead letter and the messages before it are applied again; when
 * it fails while applying a stream batch to its views, the range is bisected
 * until the offending messages are alone.  Errors that do not belong to a
 * message (cancel, shutdown, lack of resources, serialization failures, a
 * lost privilege, a row that violates an expectation whose action is
 * 'fail') are raised to the worker loop, which aborts the transaction and
 * exits (or, for the expectation, stops the source); the worker is
 * restarted and starts over from the stored offsets.
 *
 * Whose rights.  The worker connects as the source's owner, whose INSERT
 * privilege (for keyed changes also UPDATE and DELETE) and row-level
 * security policies apply to the target.  The
 * target's own code -- triggers, defaults, constraints, domains -- runs as
 * the target's owner in a security-restricted operation, and the code of
 * continuous views as their owners (KappaBecomeUser), as logical
 * replication's apply worker does; the catalog is written as the
 * extension's owner.
 *
 * The messages belong to kafka_consumer.c, which is told when the batch
 * committed; the counters go to kafka_status.c.
 *
 * Replays.  A rebuild of a view from Kafka (view_rebuild.c) applies the
 * stream's history with the same code, through KappaApplyReplay: the
 * messages are its own consumer's, the rows feed only the building version
 * (KappaBatchCreateForRebuild), dead letters are counted but not stored
 * again (the live source stored them when it first read the messages), and
 * the offsets and counts go to the rebuild's rows in kappa.rebuild_offsets
 * and kappa.view_rebuilds -- never to the live source's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "pgstat.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "kappa_errcodes.h"
#include "schema_registry.h"
#include "util.h"

/* How the rows of a batch go into the target. */
typedef enum KaPath
{
	KA_PATH_STREAM,				/* into a KappaBatch, then the stream's views */
	KA_PATH_DIRECT,				/* ExecSimpleRelationInsert */
	KA_PATH_PLANNED,			/* the INSERT planned for the batch */
	KA_PATH_CHANGES				/* keyed changes, into a KappaChangeSet */
} KaPath;

/*
 * The insert paths behind one interface: ka_sink_open, ka_sink_put for each
 * decoded row, ka_sink_close.  Lives for one attempt at a range of messages
 * (one subtransaction), whose abort cleans up after an error.
 */
typedef struct KaSink
{
	KaPath		path;
	KappaBatch *batch;			/* KA_PATH_STREAM */
	KappaSimpleTarget direct;	/* KA_PATH_DIRECT */
	KappaChangeSet *changes;	/* KA_PATH_CHANGES */
	int64		out_of_order;	/* changes the ordering guard dropped */
} KaSink;

/* The apply state of this worker. */
typedef struct KaApply
{
	KappaSource *source;
	MemoryContext cxt;			/* lives as long as the worker */
	MemoryContext target_cxt;	/* the target's shape, rebuilt on change */
	MemoryContext batch_cxt;	/* reset after each batch */
	MemoryContext row_cxt;		/* reset after each message */

	/* the target, as of the last batch */
	TupleDesc	tupdesc;
	bool		is_stream;
	KaPath		path;			/* checked again every batch */
	bool		target_rls;		/* row-level security on the target */
	KappaDecoder *decoder;
	Datum	   *values;			/* the decoded message */
	bool	   *nulls;
	KappaChange change;			/* or the decoded change (envelopes) */
	TupleTableSlot *stream_slot;	/* a stream row, for KappaBatchAdd */

	/* the INSERT of KA_PATH_PLANNED */
	char	   *insert_sql;
	int			ncols;
	int		   *colmap;			/* parameter i is attribute colmap[i] */
	Oid		   *coltypes;
	List	   *insert_plans;	/* of PlannedStmt, in batch_cxt */

	/* the batch being applied (the consumer's messages) */
	rd_kafka_message_t **msgs;
	int			nmsgs;
	ErrorData **dead;			/* why msgs[i] is a dead letter, or NULL */
	bool	   *drifted;		/* msgs[i] had fields naming no column */
	int64		out_of_order;	/* changes the ordering guard dropped */
	int			failed_index;	/* message being processed, -1 in apply */

	/* catalog plans (executed as the extension's owner) */
	SPIPlanPtr	dead_plan;
	SPIPlanPtr	offsets_plan;

	/* format avro: writer schemas from the schema registry */
	bool		avro_values;
	bool		avro_keys;		/* keyed changelogs with key_format avro */
	List	   *schema_ids;		/* ids seen (integers, in cxt) */
	List	   *evolved_ids;	/* option evolve: ids whose new fields have
								 * columns (integers, in cxt) */
	int32		last_schema_id; /* of the last message, or -1 */

	/* a rebuild's replay (see the file header), or replay_id 0 */
	int32		replay_id;		/* kappa.view_rebuilds.id */
	Oid			replay_mat;		/* the building version's materialization */
	const int64 *replay_from;	/* by partition: stored next offsets */
	int			replay_nparts;
	int64	   *replay_next;	/* by partition: the batch's next offsets */
	SPIPlanPtr	replay_offsets_plan;
	SPIPlanPtr	replay_progress_plan;
} KaApply;

static KaApply ka_apply;

/*
 * KappaApplyInit prepares applying batches of 'source' (which must outlive
 * them), in memory contexts under 'parent'.
 */
void
KappaApplyInit(KappaSource *source, MemoryContext parent)
{
	ka_apply.source = source;
	ka_apply.cxt = parent;
	ka_apply.target_cxt = AllocSetContextCreate(parent, "pg_kappa target",
												ALLOCSET_DEFAULT_SIZES);
	ka_apply.batch_cxt = AllocSetContextCreate(parent, "pg_kappa batch",
											   ALLOCSET_DEFAULT_SIZES);
	ka_apply.row_cxt = AllocSetContextCreate(parent, "pg_kappa message",
											 ALLOCSET_DEFAULT_SIZES);
	ka_apply.failed_index = -1;
	ka_apply.last_schema_id = -1;
	/* violated expectations: dead letters, or the source stops */
	KappaContractsForKafka();
	ka_apply.avro_values = (KappaParseFormat(source->format) == KAPPA_FORMAT_AVRO);
	ka_apply.avro_keys = (source->envelope != KAPPA_ENVELOPE_NONE &&
						  KappaParseKeyFormat(source->key_format) == KAPPA_FORMAT_AVRO);
	if (ka_apply.avro_values || ka_apply.avro_keys)
	{
		char	   *url;
		char	   *username;
		char	   *password;

		KappaRegistryOptions(source, &url, &username, &password);
		KappaRegistryConfigure(url, username, password);
	}
}

/*
 * ka_change_decoder makes the decoder of a keyed changelog for the target
 * 'rel' and its primary key (if the key was dropped since the source was
 * created, every batch fails, and the source shows why).
 */
static KappaDecoder *
ka_change_decoder(Relation rel)
{
	KappaSource *source = ka_apply.source;
	AttrNumber	keyattnos[INDEX_MAX_KEYS];
	int			nkeys = KappaTablePrimaryKey(rel, keyattnos);

	return KappaChangeDecoderCreate(KappaParseFormat(source->format), source->envelope,
									KappaParseKeyFormat(source->key_format),
									ka_apply.tupdesc, nkeys, keyattnos,
									source->order_by, KappaFormatOptions(source));
}

/*
 * ka_prepare_target (re)builds the decoder and the shape of the INSERT or
 * the stream slot for the target's current row type, and chooses the insert
 * path.  Called in each batch transaction with the target open, as the
 * target's owner; cheap when nothing changed.
 */
static void
ka_prepare_target(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;
	StringInfoData sql;

	if (ka_apply.tupdesc == NULL || !equalTupleDescs(ka_apply.tupdesc, desc))
	{
		if (ka_apply.stream_slot)
		{
			ExecDropSingleTupleTableSlot(ka_apply.stream_slot);
			ka_apply.stream_slot = NULL;
		}
		MemoryContextReset(ka_apply.target_cxt);
		old = MemoryContextSwitchTo(ka_apply.target_cxt);

		ka_apply.tupdesc = CreateTupleDescCopyConstr(desc);
		ka_apply.is_stream = KappaIsStream(RelationGetRelid(rel));
		if (ka_apply.source->envelope == KAPPA_ENVELOPE_NONE)
			ka_apply.decoder = KappaDecoderCreate(KappaParseFormat(ka_apply.source->format),
												  ka_apply.tupdesc,
												  KappaFormatOptions(ka_apply.source));
		else
			ka_apply.decoder = ka_change_decoder(rel);
		ka_apply.values = palloc0(sizeof(Datum) * desc->natts);
		ka_apply.nulls = palloc0(sizeof(bool) * desc->natts);
		ka_apply.colmap = palloc0(sizeof(int) * desc->natts);
		ka_apply.coltypes = palloc0(sizeof(Oid) * desc->natts);
		ka_apply.ncols = 0;
		ka_apply.insert_sql = NULL;

		if (ka_apply.is_stream)
		{
			MemoryContextSwitchTo(ka_apply.cxt);
			ka_apply.stream_slot = MakeSingleTupleTableSlot(ka_apply.tupdesc,
															&TTSOpsVirtual);
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
				appendStringInfo(&sql, "%s%s", ka_apply.ncols ? ", " : "",
								 quote_identifier(NameStr(att->attname)));
				ka_apply.coltypes[ka_apply.ncols] = att->atttypid;
				ka_apply.colmap[ka_apply.ncols++] = i;
			}
			appendStringInfoString(&sql, ") VALUES (");
			for (int i = 0; i < ka_apply.ncols; i++)
				appendStringInfo(&sql, "%s$%d", i ? ", " : "", i + 1);
			appendStringInfoChar(&sql, ')');
			ka_apply.insert_sql = sql.data;
		}
		MemoryContextSwitchTo(old);
	}

	/* cheap, and triggers, policies or rules may come and go: every batch */
	if (ka_apply.is_stream)
		ka_apply.path = KA_PATH_STREAM;
	else if (ka_apply.source->envelope != KAPPA_ENVELOPE_NONE)
		ka_apply.path = KA_PATH_CHANGES;
	else if (KappaTargetIsSimple(rel, false))
		ka_apply.path = KA_PATH_DIRECT;
	else
		ka_apply.path = KA_PATH_PLANNED;
	ka_apply.target_rls = rel->rd_rel->relrowsecurity;
}

/*
 * ka_plan_insert plans the INSERT of KA_PATH_PLANNED for this batch (in
 * batch_cxt), checked as the source's owner (KappaTargetPlan).
 */
static void
ka_plan_insert(void)
{
	MemoryContext old = MemoryContextSwitchTo(ka_apply.batch_cxt);

	ka_apply.insert_plans = KappaTargetPlan(ka_apply.insert_sql, ka_apply.coltypes,
											ka_apply.ncols, ka_apply.source->owner);
	MemoryContextSwitchTo(old);
}

/*
 * ka_exec_insert runs the planned INSERT for the decoded message's values.
 */
static void
ka_exec_insert(void)
{
	ParamListInfo params = makeParamList(ka_apply.ncols);

	for (int c = 0; c < ka_apply.ncols; c++)
	{
		params->params[c].value = ka_apply.values[ka_apply.colmap[c]];
		params->params[c].isnull = ka_apply.nulls[ka_apply.colmap[c]];
		params->params[c].pflags = PARAM_FLAG_CONST;
		params->params[c].ptype = ka_apply.coltypes[c];
	}
	KappaTargetExec(ka_apply.insert_plans, ka_apply.insert_sql, params);
}

/*
 * ka_sink_open gets the insert path of the batch ready for rows of 'rel'.
 */
static void
ka_sink_open(KaSink *sink, Relation rel)
{
	memset(sink, 0, sizeof(*sink));
	sink->path = ka_apply.path;
	if (sink->path == KA_PATH_STREAM)
		sink->batch = KappaBatchCreateForRebuild(rel, ka_apply.replay_mat,
												 ka_apply.batch_cxt);
	else if (sink->path == KA_PATH_DIRECT)
		KappaSimpleTargetOpen(&sink->direct, rel);
	else if (sink->path == KA_PATH_CHANGES)
		sink->changes = KappaChangeSetCreate(rel, ka_apply.source->owner,
											 ka_apply.source->order_by ? ka_apply.source->id : 0,
											 ka_apply.batch_cxt);
}

/*
 * ka_sink_put stores the decoded message (ka_apply.values and nulls) as a
 * row.  On the stream path, an error raised while the rows gathered so far
 * are pushed into the views is not the message's: failed_index is -1 then.
 */
static void
ka_sink_put(KaSink *sink)
{
	int			natts = ka_apply.tupdesc->natts;

	switch (sink->path)
	{
		case KA_PATH_STREAM:
			{
				TupleTableSlot *slot = ka_apply.stream_slot;

				ExecClearTuple(slot);
				memcpy(slot->tts_values, ka_apply.values, sizeof(Datum) * natts);
				memcpy(slot->tts_isnull, ka_apply.nulls, sizeof(bool) * natts);
				ExecStoreVirtualTuple(slot);
				KappaBatchAdd(sink->batch, slot);
				if (KappaBatchPushDue(sink->batch))
				{
					ka_apply.failed_index = -1;
					KappaBatchPush(sink->batch);
				}
				break;
			}
		case KA_PATH_DIRECT:
			{
				TupleTableSlot *slot = sink->direct.slot;

				ExecClearTuple(slot);
				memcpy(slot->tts_values, ka_apply.values, sizeof(Datum) * natts);
				memcpy(slot->tts_isnull, ka_apply.nulls, sizeof(bool) * natts);
				ExecStoreVirtualTuple(slot);
				ExecSimpleRelationInsert(sink->direct.rri, sink->direct.estate, slot);
				ResetPerTupleExprContext(sink->direct.estate);
				break;
			}
		case KA_PATH_PLANNED:
			ka_exec_insert();
			break;
		case KA_PATH_CHANGES:
			KappaChangeSetAdd(sink->changes, &ka_apply.change, ka_apply.failed_index);
			break;
	}
}

/*
 * ka_sink_close finishes the rows: a stream's are applied to its views; a
 * table's immediate AFTER triggers (deferred constraints) fire; keyed
 * changes are applied, each key once -- an error then is the message of the
 * change being applied (failed_index), or no single message's (-1).
 */
static void
ka_sink_close(KaSink *sink)
{
	if (sink->path == KA_PATH_STREAM)
	{
		KappaBatchApply(sink->batch);
		KappaBatchDestroy(sink->batch);
	}
	else if (sink->path == KA_PATH_DIRECT)
		KappaSimpleTargetClose(&sink->direct);
	else if (sink->path == KA_PATH_CHANGES)
		sink->out_of_order = KappaChangeSetApply(sink->changes, &ka_apply.failed_index);
}

/*
 * ka_insert_range decodes and stores messages [lo, hi) that are not dead
 * letters yet; for a stream it then applies them.  Raises the first error;
 * failed_index says which message raised it (-1: the stream's views).
 * Returns how many changes the ordering guard dropped.
 */
static int64
ka_insert_range(Relation rel, int lo, int hi)
{
	KaSink		sink;
	MemoryContext old;
	bool		use_time_and_headers = KappaDecoderUsesTimeAndHeaders(ka_apply.decoder);
	int			max_message_bytes = ka_apply.source->max_message_bytes;

	ka_apply.failed_index = -1;
	ka_sink_open(&sink, rel);
	for (int i = lo; i < hi; i++)
	{
		rd_kafka_message_t *m = ka_apply.msgs[i];
		KappaMessageMeta meta;
		rd_kafka_headers_t *hdrs = NULL;

		if (ka_apply.dead[i])
			continue;
		ka_apply.failed_index = i;
		MemoryContextReset(ka_apply.row_cxt);
		old = MemoryContextSwitchTo(ka_apply.row_cxt);

		if (m->len > (size_t) max_message_bytes)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("message of %zu bytes exceeds max_message_bytes (%d)",
							m->len, max_message_bytes)));

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

		if (sink.path == KA_PATH_CHANGES)
			KappaDecodeChange(ka_apply.decoder, (const char *) m->payload,
							  m->payload ? m->len : 0, &meta, &ka_apply.change);
		else
			KappaDecode(ka_apply.decoder, m->payload ? (const char *) m->payload : "",
						m->payload ? m->len : 0, &meta, ka_apply.values, ka_apply.nulls);
		ka_apply.drifted[i] = KappaDecoderDrift(ka_apply.decoder);
		ka_sink_put(&sink);
		MemoryContextSwitchTo(old);
	}
	ka_apply.failed_index = -1;
	ka_sink_close(&sink);
	ka_apply.failed_index = -1;
	return sink.out_of_order;
}

/*
 * ka_error_is_message_error tells whether an error belongs to the message
 * being processed (so it becomes a dead letter) rather than to the system
 * (then the transaction aborts and the worker starts over).
 */
static bool
ka_error_is_message_error(ErrorData *edata)
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
		(edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE && !ka_apply.target_rls) ||
		edata->sqlerrcode == ERRCODE_UNDEFINED_TABLE ||
		edata->sqlerrcode == ERRCODE_KAPPA_EXPECTATION_FAILED ||
		edata->sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		return false;
	/* class 54 (program limit: an oversize message or value) is the message's */
	return true;
}

/*
 * ka_try_range runs ka_insert_range in a subtransaction.  Returns NULL on
 * success; on failure rolls the subtransaction back and returns the error
 * (in batch_cxt), with *failed set to the failing message (or -1).  Errors
 * that are not the messages' fault are rethrown.
 */
static ErrorData *
ka_try_range(Relation rel, int lo, int hi, int *failed)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		int64		out_of_order = ka_insert_range(rel, lo, hi);

		ReleaseCurrentSubTransaction();
		ka_apply.out_of_order += out_of_order;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(ka_apply.batch_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (!ka_error_is_message_error(edata))
			ReThrowError(edata);
		*failed = ka_apply.failed_index;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return edata;
}

/* ka_live_count counts messages in [lo, hi) that are not dead letters. */
static int
ka_live_count(int lo, int hi)
{
	int			n = 0;

	for (int i = lo; i < hi; i++)
		if (!ka_apply.dead[i])
			n++;
	return n;
}

/*
 * ka_process_range applies messages [lo, hi), isolating bad messages as
 * dead letters (see the file header).
 */
static void
ka_process_range(Relation rel, int lo, int hi)
{
	while (lo < hi)
	{
		int			failed = -1;
		ErrorData  *edata;
		int			live = ka_live_count(lo, hi);

		if (live == 0)
			return;
		edata = ka_try_range(rel, lo, hi, &failed);
		if (edata == NULL)
			return;
		if (failed >= lo && failed < hi)
		{
			/* the message at 'failed' is bad; those before it were fine */
			ka_apply.dead[failed] = edata;
			if (failed > lo)
				ka_process_range(rel, lo, failed);
			lo = failed + 1;
			continue;
		}

		/*
		 * failed while applying to the views: a rebuild's replay fails (the
		 * new definition is at fault, not a message); else bisect
		 */
		if (ka_apply.replay_id != 0)
			ereport(ERROR,
					(errcode(ERRCODE_KAPPA_REBUILD_FAILED),
					 errmsg("the new version of the view failed on replayed rows: %s",
							edata->message),
					 edata->detail ? errdetail("%s", edata->detail) : 0,
					 errhint("Cancel the rebuild with kappa.cancel_rebuild(), correct the definition and replace the view again.")));
		if (live == 1)
		{
			for (int i = lo; i < hi; i++)
				if (!ka_apply.dead[i])
					ka_apply.dead[i] = edata;
			return;
		}
		{
			int			mid = lo + (hi - lo) / 2;

			ka_process_range(rel, lo, mid);
			ka_process_range(rel, mid, hi);
			return;
		}
	}
}

/*
 * ka_dead_letter_text renders an error for kappa.errors on one line:
 * message, then detail, then the context lines in parentheses, separated by
 * "; " (e.g. the decoder's "kafka message at partition 0, offset 7, field
 * "id": "x"").
 */
static char *
ka_dead_letter_text(ErrorData *edata)
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

/* ka_bytea copies len bytes into a new bytea. */
static bytea *
ka_bytea(const void *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	if (len > 0)
		memcpy(VARDATA(b), data, len);
	return b;
}

/*
 * ka_store_dead_letters writes a row of kappa.dead_letters for every message
 * of the batch that became one (key, payload, error and SQLSTATE), and
 * returns how many.
 */
static int64
ka_store_dead_letters(void)
{
	KappaSource *source = ka_apply.source;
	int64		ndead = 0;

	if (ka_apply.dead_plan == NULL)
	{
		Oid			argtypes[8] = {INT4OID, TEXTOID, INT4OID, INT8OID, BYTEAOID, BYTEAOID,
		TEXTOID, TEXTOID};

		ka_apply.dead_plan =
			KappaPrepareCatalogSql("INSERT INTO kappa.dead_letters "
								   "(source_id, topic, partition, \"offset\", key, payload, error, sqlstate) "
								   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", 8, argtypes);
	}
	for (int i = 0; i < ka_apply.nmsgs; i++)
	{
		rd_kafka_message_t *m = ka_apply.msgs[i];
		ErrorData  *edata = ka_apply.dead[i];
		Datum		v[8];
		char		n[8] = "        ";

		if (!edata)
			continue;
		ndead++;
		v[0] = Int32GetDatum(source->id);
		v[1] = CStringGetTextDatum(source->topic);
		v[2] = Int32GetDatum(m->partition);
		v[3] = Int64GetDatum(m->offset);
		if (m->key)
			v[4] = PointerGetDatum(ka_bytea(m->key, m->key_len));
		else
			n[4] = 'n';
		if (m->payload)
			v[5] = PointerGetDatum(ka_bytea(m->payload, m->len));
		else
			n[5] = 'n';
		v[6] = CStringGetTextDatum(ka_dead_letter_text(edata));
		v[7] = CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode));
		(void) KappaExecCatalogPlan(ka_apply.dead_plan, v, n, SPI_OK_INSERT);
	}
	return ndead;
}

/*
 * ka_store_offsets stores the next offset of every partition the batch has
 * messages of, with the partitions' current high watermarks -- only where
 * the stored offset is still the one the batch started from; else it raises
 * a serialization failure.  Returns the next offsets by partition (-1: not
 * in the batch), in batch_cxt, for KappaConsumerBatchCommitted.
 */
static int64 *
ka_store_offsets(void)
{
	KappaSource *source = ka_apply.source;
	const KappaPartition *parts;
	int			nparts;
	int64	   *next;

	if (ka_apply.offsets_plan == NULL)
	{
		Oid			argtypes[5] = {INT4OID, INT4OID, INT8OID, INT8OID, INT8OID};

		ka_apply.offsets_plan =
			KappaPrepareCatalogSql("UPDATE kappa.source_offsets SET next_offset = $3, "
								   "high_watermark = coalesce($4, high_watermark), "
								   "updated_at = pg_catalog.now() "
								   "WHERE source_id = $1 AND partition = $2 AND next_offset = $5",
								   5, argtypes);
	}
	KappaConsumerRefreshWatermarks();
	parts = KappaConsumerPartitions(&nparts, NULL);
	next = MemoryContextAlloc(ka_apply.batch_cxt, sizeof(int64) * Max(nparts, 1));
	for (int p = 0; p < nparts; p++)
		next[p] = -1;
	for (int i = 0; i < ka_apply.nmsgs; i++)
	{
		int32		p = ka_apply.msgs[i]->partition;

		if (next[p] < ka_apply.msgs[i]->offset + 1)
			next[p] = ka_apply.msgs[i]->offset + 1;
	}
	for (int p = 0; p < nparts; p++)
	{
		Datum		v[5];
		char		n[5] = "     ";

		if (next[p] < 0)
			continue;
		v[0] = Int32GetDatum(source->id);
		v[1] = Int32GetDatum(p);
		v[2] = Int64GetDatum(next[p]);
		v[3] = Int64GetDatum(parts[p].hwm);
		if (parts[p].hwm < 0)
			n[3] = 'n';
		v[4] = Int64GetDatum(parts[p].committed);
		if (KappaExecCatalogPlan(ka_apply.offsets_plan, v, n, SPI_OK_UPDATE) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("offsets of partition %d of kafka source \"%s\" were changed concurrently",
							p, source->name),
					 errdetail("The source was dropped or another worker consumed the partition; this batch is discarded.")));
	}
	return next;
}

/*
 * ka_check_privileges raises an error unless the source's owner may INSERT
 * into the target (into all its columns, or the table) and, for keyed
 * changes, UPDATE and DELETE it too: checked per batch, since the direct
 * paths check none and a lost privilege must stop the source rather than
 * turn every message into a dead letter.
 */
static void
ka_check_privileges(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			owner = ka_apply.source->owner;
	AclMode		modes[3] = {ACL_INSERT, ACL_UPDATE, ACL_DELETE};
	int			nmodes = ka_apply.source->envelope == KAPPA_ENVELOPE_NONE ? 1 : 3;

	for (int i = 0; i < nmodes; i++)
	{
		AclResult	aclresult = pg_class_aclcheck(relid, owner, modes[i]);

		if (aclresult != ACLCHECK_OK &&
			(modes[i] == ACL_DELETE ||
			 pg_attribute_aclcheck_all(relid, owner, modes[i], ACLMASK_ALL) != ACLCHECK_OK))
			aclcheck_error(aclresult, OBJECT_TABLE, RelationGetRelationName(rel));
	}
}

/*
 * ka_fetch_schemas asks the schema registry for the writer schema of every
 * Avro value and key of the batch not known yet, before the batch's transaction
 * (a message whose schema the registry does not have becomes a dead
 * letter when it is decoded).  Returns false when the registry could not
 * be asked: the batch must wait, and the status says why.
 */
static bool
ka_fetch_schemas(void)
{
	int32		last = -1;
	int32		previous[2] = {-1, -1}; /* of values, of keys */

	for (int i = 0; i < ka_apply.nmsgs * 2; i++)
	{
		rd_kafka_message_t *m = ka_apply.msgs[i / 2];
		int32		id = -1;
		char	   *error = NULL;

		/* the value's schema, then the key's */
		if (i % 2 == 0 && ka_apply.avro_values)
			id = KappaAvroSchemaId(m->payload, m->payload ? m->len : 0);
		else if (i % 2 == 1 && ka_apply.avro_keys)
			id = KappaAvroSchemaId(m->key, m->key ? m->key_len : 0);
		if (id < 0)
			continue;
		last = id;
		/* most messages have their predecessor's schema: known already */
		if (id == previous[i % 2])
			continue;
		previous[i % 2] = id;
		if (!list_member_int(ka_apply.schema_ids, id))
		{
			MemoryContext old = MemoryContextSwitchTo(ka_apply.cxt);

			ka_apply.schema_ids = lappend_int(ka_apply.schema_ids, id);
			MemoryContextSwitchTo(old);
		}
		if (!KappaRegistryFetch(id, &error))
		{
			if (ka_apply.replay_id == 0)
				KappaStatusSetError(KAPPA_WORKER_RETRYING, "schema registry: %s", error);
			else
				ereport(LOG,
						(errmsg("rebuild %d: schema registry: %s", ka_apply.replay_id, error)));
			return false;
		}
	}
	if (last >= 0)
		ka_apply.last_schema_id = last;
	return true;
}

/*
 * ka_add_columns_sql returns "ALTER <kind> <relation> ADD COLUMN IF NOT
 * EXISTS ..." for the new fields (names and types), relation quoted and
 * schema-qualified.
 */
static char *
ka_add_columns_sql(const char *kind, const char *nspname, const char *relname,
				   List *names, List *types)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "ALTER %s %s", kind, quote_qualified_identifier(nspname, relname));
	for (int f = 0; f < list_length(names); f++)
		appendStringInfo(&sql, "%s ADD COLUMN IF NOT EXISTS %s %s", f ? "," : "",
						 quote_identifier(list_nth(names, f)),
						 (char *) list_nth(types, f));
	return sql.data;
}

/*
 * ka_evolve_target adds to the target a nullable column for every field of
 * the batch's writer schemas that it has no column for (option evolve
 * 'add_columns'), as the source's owner, who owns the target; a schema id
 * is looked at once per worker.  A stream that retains rows gets the same
 * columns in its retained-rows table (as the extension's owner, who owns
 * it), so that both stay alike.  Runs in the batch's transaction before the
 * target is opened; the new columns are NULL in the rows already there.
 */
static void
ka_evolve_target(void)
{
	KappaSource *source = ka_apply.source;

	for (int i = 0; i < ka_apply.nmsgs; i++)
	{
		rd_kafka_message_t *m = ka_apply.msgs[i];
		int32		id = KappaAvroSchemaId(m->payload, m->payload ? m->len : 0);
		Relation	rel;
		List	   *names;
		List	   *types;
		char	   *nspname;
		char	   *relname;
		bool		is_stream;
		MemoryContext old;

		if (id < 0 || (i > 0 && id == KappaAvroSchemaId(ka_apply.msgs[i - 1]->payload,
														ka_apply.msgs[i - 1]->payload ?
														ka_apply.msgs[i - 1]->len : 0)) ||
			list_member_int(ka_apply.evolved_ids, id))
			continue;
		rel = try_relation_open(source->target, AccessShareLock);
		if (rel == NULL)
			return;				/* KappaApplyMessages says so */
		KappaAvroNewColumns(id, source->envelope == KAPPA_ENVELOPE_DEBEZIUM,
							RelationGetDescr(rel), &names, &types);
		nspname = get_namespace_name(RelationGetNamespace(rel));
		relname = pstrdup(RelationGetRelationName(rel));
		is_stream = KappaIsStream(RelationGetRelid(rel));
		relation_close(rel, AccessShareLock);
		if (names != NIL)
		{
			char	   *sql = ka_add_columns_sql(is_stream ? "FOREIGN TABLE" : "TABLE",
												 nspname, relname, names, types);
			Oid			backing = is_stream ? KappaStreamBackingRelid(source->target) : InvalidOid;

			ereport(LOG,
					(errmsg("kafka source \"%s\": writer schema id %d has new fields, adding columns",
							source->name, id),
					 errdetail_internal("%s", sql)));
			if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not add columns for writer schema id %d", id);
			if (OidIsValid(backing))
			{
				KappaSavedUser saved;

				sql = ka_add_columns_sql("TABLE", get_namespace_name(get_rel_namespace(backing)),
										 get_rel_name(backing), names, types);
				KappaBecomeExtensionOwner(&saved);
				if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
					elog(ERROR, "could not add columns for writer schema id %d", id);
				KappaRestoreUser(&saved);
			}
		}
		old = MemoryContextSwitchTo(ka_apply.cxt);
		ka_apply.evolved_ids = lappend_int(ka_apply.evolved_ids, id);
		MemoryContextSwitchTo(old);
	}
}

/*
 * ka_store_replay_progress stores, for a rebuild's replay, the next offset
 * of every partition the batch has messages of -- only where the stored one
 * is still the one the batch started from -- and adds the batch's messages
 * and dead letters to the rebuild's counts.  Raises a serialization failure
 * if the rebuild was cancelled or its offsets moved meanwhile.
 */
static void
ka_store_replay_progress(int64 ndead)
{
	KappaSource *source = ka_apply.source;
	int64	   *next = ka_apply.replay_next;

	if (ka_apply.replay_offsets_plan == NULL)
	{
		Oid			argtypes[5] = {INT4OID, INT4OID, INT4OID, INT8OID, INT8OID};
		Oid			progtypes[3] = {INT4OID, INT8OID, INT8OID};

		ka_apply.replay_offsets_plan =
			KappaPrepareCatalogSql("UPDATE kappa.rebuild_offsets SET next_offset = $4 "
								   "WHERE rebuild_id OPERATOR(pg_catalog.=) $1 "
								   "AND source_id OPERATOR(pg_catalog.=) $2 "
								   "AND partition OPERATOR(pg_catalog.=) $3 "
								   "AND next_offset OPERATOR(pg_catalog.=) $5",
								   5, argtypes);
		ka_apply.replay_progress_plan =
			KappaPrepareCatalogSql("UPDATE kappa.view_rebuilds "
								   "SET replayed = replayed OPERATOR(pg_catalog.+) $2, "
								   "dead_letters = dead_letters OPERATOR(pg_catalog.+) $3, "
								   "updated_at = pg_catalog.now() "
								   "WHERE id OPERATOR(pg_catalog.=) $1 "
								   "AND state OPERATOR(pg_catalog.=) 'building'",
								   3, progtypes);
	}
	for (int p = 0; p < ka_apply.replay_nparts; p++)
		next[p] = -1;
	for (int i = 0; i < ka_apply.nmsgs; i++)
	{
		int32		p = ka_apply.msgs[i]->partition;

		if (p >= 0 && p < ka_apply.replay_nparts && next[p] < ka_apply.msgs[i]->offset + 1)
			next[p] = ka_apply.msgs[i]->offset + 1;
	}
	for (int p = 0; p < ka_apply.replay_nparts; p++)
	{
		Datum		v[5];

		if (next[p] < 0)
			continue;
		v[0] = Int32GetDatum(ka_apply.replay_id);
		v[1] = Int32GetDatum(source->id);
		v[2] = Int32GetDatum(p);
		v[3] = Int64GetDatum(next[p]);
		v[4] = Int64GetDatum(ka_apply.replay_from[p]);
		if (KappaExecCatalogPlan(ka_apply.replay_offsets_plan, v, NULL, SPI_OK_UPDATE) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("the replay of partition %d of kafka source \"%s\" for rebuild %d was changed concurrently",
							p, source->name, ka_apply.replay_id),
					 errdetail("The rebuild was cancelled or another worker replayed the partition; this batch is discarded.")));
	}
	{
		Datum		v[3];

		v[0] = Int32GetDatum(ka_apply.replay_id);
		v[1] = Int64GetDatum((int64) ka_apply.nmsgs);
		v[2] = Int64GetDatum(ndead);
		if (KappaExecCatalogPlan(ka_apply.replay_progress_plan, v, NULL, SPI_OK_UPDATE) != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("rebuild %d is no longer building", ka_apply.replay_id),
					 errdetail("The rebuild was cancelled or has failed; this batch is discarded.")));
	}
}

/*
 * ka_apply_batch applies the messages ka_apply.msgs[0 .. nmsgs) in one
 * transaction of its own: rows, dead letters (a replay counts them only),
 * offsets, and the status row or the rebuild's progress.  See
 * KappaApplyMessages for errors; returns false, with nothing applied, when
 * the schema registry cannot be reached.
 */
static bool
ka_apply_batch(void)
{
	KappaSource *source = ka_apply.source;
	bool		replay = (ka_apply.replay_id != 0);
	Relation	rel;
	int64		nbytes = 0;
	int64		ndead;
	int64		ndrift = 0;
	int64	   *next = NULL;
	MemoryContext old;
	KappaSavedUser saved;

	if ((ka_apply.avro_values || ka_apply.avro_keys) && !ka_fetch_schemas())
		return false;
	ka_apply.dead = MemoryContextAllocZero(ka_apply.batch_cxt,
										   sizeof(ErrorData *) * ka_apply.nmsgs);
	ka_apply.drifted = MemoryContextAllocZero(ka_apply.batch_cxt,
											  sizeof(bool) * ka_apply.nmsgs);
	ka_apply.out_of_order = 0;

	(void) KappaBeginTransaction(false);
	pgstat_report_activity(STATE_RUNNING, replay ? "pg_kappa: replaying a batch" :
						   "pg_kappa: applying a batch");
	SPI_connect();

	/* a replay neither changes the target nor needs the right to */
	if (!replay && source->evolve_add_columns)
		ka_evolve_target();
	rel = try_relation_open(source->target, RowExclusiveLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the target of kafka source \"%s\" was dropped", source->name)));
	if (!replay)
		ka_check_privileges(rel);

	/* the target's code runs as its owner (see the file header) */
	KappaBecomeUser(rel->rd_rel->relowner, &saved);
	ka_prepare_target(rel);
	if (replay && !ka_apply.is_stream)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the target of kafka source \"%s\" is no longer a stream", source->name)));
	if (ka_apply.path == KA_PATH_PLANNED)
		ka_plan_insert();

	/*
	 * Deferred constraints of the target would be checked at commit, where a
	 * bad message could no longer be isolated (and would fail the batch
	 * forever): check them at the end of each insert instead.
	 */
	if (!ka_apply.is_stream &&
		SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not make constraints immediate");

	old = MemoryContextSwitchTo(ka_apply.batch_cxt);
	ka_process_range(rel, 0, ka_apply.nmsgs);
	KappaRestoreUser(&saved);

	if (replay)
	{
		ndead = 0;
		for (int i = 0; i < ka_apply.nmsgs; i++)
			if (ka_apply.dead[i])
				ndead++;
		ka_store_replay_progress(ndead);
	}
	else
	{
		ndead = ka_store_dead_letters();
		next = ka_store_offsets();
		for (int i = 0; i < ka_apply.nmsgs; i++)
		{
			nbytes += ka_apply.msgs[i]->len;
			if (ka_apply.drifted[i] && !ka_apply.dead[i])
				ndrift++;
		}
		KappaStatusBatch(ka_apply.nmsgs, nbytes, ndead, ka_apply.out_of_order, ndrift);
		if (ka_apply.avro_values || ka_apply.avro_keys)
			KappaStatusSchemas(ka_apply.schema_ids, ka_apply.last_schema_id);
	}
	MemoryContextSwitchTo(old);

	relation_close(rel, NoLock);
	SPI_finish();
	KappaCommitTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);

	/* committed: advance, and let the messages go */
	if (!replay)
		KappaConsumerBatchCommitted(next);
	ka_apply.msgs = NULL;
	ka_apply.nmsgs = 0;
	ka_apply.dead = NULL;
	ka_apply.drifted = NULL;
	ka_apply.insert_plans = NIL;
	MemoryContextReset(ka_apply.batch_cxt);
	if (!replay)
		KappaStatusBatchCommitted();
	return true;
}

/*
 * KappaApplyMessages applies the consumer's current batch, if it holds any
 * message, in one transaction of its own: rows, dead letters, offsets and
 * the status row; then tells the consumer and the status that it
 * committed.  Call it outside any transaction.  An error that is not a
 * message's fault (the target is gone, the owner lost its privilege, a
 * serialization failure) is raised with the transaction still open: the
 * caller aborts it and the messages stay unapplied.  Returns false, with
 * nothing applied, when the schema registry cannot be reached: the caller
 * tries again later.
 */
bool
KappaApplyMessages(void)
{
	ka_apply.msgs = KappaConsumerBatch(&ka_apply.nmsgs);
	if (ka_apply.nmsgs == 0)
		return true;
	return ka_apply_batch();
}

/*
 * KappaApplyReplayInit prepares applying a rebuild's replay of 'source' (see
 * the file header): rebuild 'rebuildId' whose building version has the
 * materialization 'buildingMat'; memory under 'parent', which the caller
 * deletes when it is done with the source.
 */
void
KappaApplyReplayInit(KappaSource *source, int32 rebuildId, Oid buildingMat,
					 MemoryContext parent)
{
	memset(&ka_apply, 0, sizeof(ka_apply));
	KappaApplyInit(source, parent);
	ka_apply.replay_id = rebuildId;
	ka_apply.replay_mat = buildingMat;
}

/*
 * KappaApplyReplay applies 'nmsgs' messages of a replay in one transaction
 * of its own, as KappaApplyMessages does, storing the rebuild's next
 * offsets: from[p] is the next offset of partition p stored before the
 * batch, for 'nparts' partitions; next[p] gets the one stored after it (-1:
 * no message of p).  Returns false, with nothing applied, when the schema
 * registry cannot be reached; the messages stay the caller's.
 */
bool
KappaApplyReplay(rd_kafka_message_t **msgs, int nmsgs, const int64 *from,
				 int64 *next, int nparts)
{
	if (nmsgs == 0)
		return true;
	ka_apply.msgs = msgs;
	ka_apply.nmsgs = nmsgs;
	ka_apply.replay_from = from;
	ka_apply.replay_next = next;
	ka_apply.replay_nparts = nparts;
	return ka_apply_batch();
}
