/*-------------------------------------------------------------------------
 *
 * kafka_rewind.c
 *	  kappa.rewind_source(): move the offsets of a Kafka source into a table
 *	  to another position of its topic -- earliest, latest, a time, or
 *	  explicit offsets per partition -- in the caller's transaction.
 *
 * Where.  The new next offset of each partition is resolved when the
 * function runs: 'earliest', 'latest' and a time ask the broker (a
 * short-lived librdkafka handle of this backend, with the source's
 * configuration, KR_BROKER_TIMEOUT_MS per request; if the broker cannot
 * tell, nothing is changed), for every partition of the topic; a time that
 * no message is at or after (and the answer -1, which the dev broker always
 * gives) means the partition's end, as for a source's start.  A jsonb
 * object {"0": 123} names partitions and their next offsets; partitions it
 * does not name keep theirs, and it needs no broker.
 *
 * What may be rewound.  A stream target never: its views have counted the
 * messages already, and would count them twice.  A table with envelope
 * 'upsert' or 'debezium' always: applying a key's changes again converges
 * to the same rows.  A table with envelope 'none' appends every message, so
 * a rewind that moves any partition back (and 'earliest' always) needs
 * truncate_target => true: the target is truncated in the same transaction,
 * as the caller, who must have TRUNCATE on it.  truncate_target is allowed
 * with the envelopes too (start the table over from the position).
 *
 * Exactly once.  Everything happens in the caller's transaction: the
 * TRUNCATE, the ordering guard's positions (forgotten with the truncated
 * rows; kept otherwise, so that a replay never takes a key back to an older
 * change), the offsets, and the source's dead letters and recorded gaps at
 * or after the new offsets (they will be read and recorded again).  A
 * worker's batch updates an offset only where it still holds the offset the
 * batch started from (ka_store_offsets in kafka_apply.c), so a batch that
 * commits after the rewind began from the new offset, and one that raced
 * it fails with a serialization failure and its worker starts over from the
 * stored offsets.  A worker between batches notices that the stored offsets
 * of its partitions are not the ones it committed (kw_check_source,
 * KappaConsumerOffsetsMoved) and reads again from the stored ones.
 *
 * Locks are taken in the order a batch takes them -- the target, the
 * ordering guard's rows, the offset rows by partition -- so that a rewind
 * and a batch wait for each other but never deadlock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "util.h"

PG_FUNCTION_INFO_V1(kappa_rewind_source);

/* one metadata or offsets request of the backend to the broker */
#define KR_BROKER_TIMEOUT_MS	5000

/* the broker is asked for a rebuild (KappaKafkaLogBounds), not a rewind */
static bool kr_for_rebuild = false;

/* What the position argument says. */
typedef enum KrPositionKind
{
	KR_EARLIEST,
	KR_LATEST,
	KR_TIME,
	KR_OFFSETS
} KrPositionKind;

/* The position, parsed. */
typedef struct KrPosition
{
	KrPositionKind kind;
	TimestampTz time;			/* KR_TIME */
	int			noffsets;		/* KR_OFFSETS: the partitions named */
	int32	   *partitions;
	int64	   *offsets;
} KrPosition;

/* The new offsets, resolved. */
typedef struct KrTarget
{
	int			n;
	int32	   *partitions;
	int64	   *offsets;
	int64	   *ends;			/* high watermarks, -1 if unknown */
} KrTarget;

/*
 * kr_parse_offsets reads a jsonb object {"partition": offset, ...} into
 * 'pos'.  Raises an error for anything else.
 */
static void
kr_parse_offsets(Jsonb *jb, KrPosition *pos)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n;
	int32		partition = -1;

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_COUNT(jb) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a position in jsonb must be an object of partitions and offsets"),
				 errhint("Give, for instance, '{\"0\": 1200, \"1\": 0}': the next offset to read of each partition named.")));
	n = JB_ROOT_COUNT(jb);
	pos->kind = KR_OFFSETS;
	pos->noffsets = 0;
	pos->partitions = palloc(sizeof(int32) * n);
	pos->offsets = palloc(sizeof(int64) * n);

	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			char	   *key = pnstrdup(v.val.string.val, v.val.string.len);
			char	   *end;
			long		p;

			errno = 0;
			p = strtol(key, &end, 10);
			if (*key == '\0' || *end != '\0' || errno != 0 || p < 0 || p > PG_INT32_MAX)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid partition \"%s\" in position", key),
						 errdetail("The keys of a position in jsonb are partition numbers (0, 1, ...).")));
			partition = (int32) p;
		}
		else if (tok == WJB_VALUE)
		{
			int64		offset;

			if (v.type != jbvNumeric)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("the offset of partition %d in position is not a number", partition)));
			offset = DatumGetInt64(DirectFunctionCall1(numeric_int8,
													   NumericGetDatum(v.val.numeric)));
			if (offset < 0 ||
				!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v.val.numeric),
												  DirectFunctionCall1(int8_numeric,
																	  Int64GetDatum(offset)))))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid offset %s for partition %d in position",
								DatumGetCString(DirectFunctionCall1(numeric_out,
																	NumericGetDatum(v.val.numeric))),
								partition),
						 errdetail("An offset is the next one to read: an integer of at least 0.")));
			pos->partitions[pos->noffsets] = partition;
			pos->offsets[pos->noffsets++] = offset;
		}
	}
}

/*
 * kr_looks_like_time tells whether timestamptz_in would read 'text' as a
 * date and time (it may still find it out of range), without raising an
 * error: what is neither a keyword, an object nor a time gets our own error.
 */
static bool
kr_looks_like_time(const char *text)
{
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	struct pg_tm tt;
	fsec_t		fsec;
	int			tz;

	if (ParseDateTime(text, workbuf, sizeof(workbuf), field, ftype,
					  MAXDATEFIELDS, &nf) != 0)
		return false;
	return DecodeDateTime(field, ftype, nf, &dtype, &tt, &fsec, &tz) == 0;
}

/*
 * kr_parse_position reads the position argument, of type text ('earliest',
 * 'latest', a JSON object or a timestamptz), timestamptz or jsonb.
 */
static void
kr_parse_position(FunctionCallInfo fcinfo, KrPosition *pos)
{
	Oid			argtype = get_fn_expr_argtype(fcinfo->flinfo, 1);
	char	   *str;
	const char *p;

	memset(pos, 0, sizeof(KrPosition));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("position must not be NULL")));
	if (argtype == TIMESTAMPTZOID)
	{
		pos->kind = KR_TIME;
		pos->time = PG_GETARG_TIMESTAMPTZ(1);
	}
	else if (argtype == JSONBOID)
	{
		kr_parse_offsets(PG_GETARG_JSONB_P(1), pos);
		return;
	}
	else
	{
		str = text_to_cstring(PG_GETARG_TEXT_PP(1));
		for (p = str; *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'; p++)
			;
		if (pg_strcasecmp(str, "earliest") == 0)
			pos->kind = KR_EARLIEST;
		else if (pg_strcasecmp(str, "latest") == 0)
			pos->kind = KR_LATEST;
		else if (*p == '{')
		{
			kr_parse_offsets(DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
																CStringGetDatum(str))),
							 pos);
			return;
		}
		else
		{
			if (!kr_looks_like_time(str))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid position \"%s\"", str),
						 errhint("A position is 'earliest', 'latest', a timestamptz, or a jsonb object of partitions and offsets such as '{\"0\": 1200}'.")));
			pos->kind = KR_TIME;
			pos->time = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																CStringGetDatum(str),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
		}
	}
	if (pos->kind == KR_TIME && TIMESTAMP_NOT_FINITE(pos->time))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("position must be a finite timestamptz")));
}

/*
 * kr_list_offsets asks the leaders of partitions 0..n-1 of the topic for an
 * offset of each, by 'ts' (milliseconds since 1970, or
 * RD_KAFKA_OFFSET_BEGINNING / RD_KAFKA_OFFSET_END), into offsets[p].
 * Raises an error if the broker cannot tell.
 */
static void
kr_list_offsets(rd_kafka_t *rk, KappaSource *source, int n, int64 ts, int64 *offsets)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
	rd_kafka_resp_err_t err;

	for (int p = 0; p < n; p++)
		rd_kafka_topic_partition_list_add(list, source->topic, p)->offset = ts;
	err = rd_kafka_offsets_for_times(rk, list, KR_BROKER_TIMEOUT_MS);
	for (int i = 0; i < list->cnt && err == RD_KAFKA_RESP_ERR_NO_ERROR; i++)
	{
		err = list->elems[i].err;
		offsets[list->elems[i].partition] = list->elems[i].offset;
	}
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not look up the offsets of topic \"%s\" for kafka source \"%s\"",
						source->topic, source->name),
				 errdetail_internal("%s", rd_kafka_err2str(err)),
				 errhint("Nothing was changed. Try again when the broker can be reached%s.", kr_for_rebuild ? "" : ", or give the offsets as jsonb")));
}

/*
 * kr_resolve asks the broker for the partitions of the source's topic and
 * the offsets 'pos' (earliest, latest or a time) means in each, into 't'
 * (in the caller's memory context).  A time no message is at or after
 * gives the partition's end.  Raises an error, with nothing changed, if
 * the broker cannot tell.
 */
static void
kr_resolve(KappaSource *source, const KrPosition *pos, KrTarget *t)
{
	rd_kafka_conf_t *conf = KappaKafkaConfBuild(source);
	rd_kafka_t *rk;
	rd_kafka_topic_t *volatile rkt = NULL;
	const struct rd_kafka_metadata *volatile md = NULL;
	char		errstr[512];

	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not create a Kafka client for source \"%s\"", source->name),
				 errdetail_internal("%s", errstr)));
	}

	PG_TRY();
	{
		const struct rd_kafka_metadata *meta = NULL;
		rd_kafka_resp_err_t err;
		int			n;

		rkt = rd_kafka_topic_new(rk, source->topic, NULL);
		err = rd_kafka_metadata(rk, 0, rkt, &meta, KR_BROKER_TIMEOUT_MS);
		md = meta;
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR && meta->topic_cnt == 1 && meta->topics[0].err)
			err = meta->topics[0].err;
		if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("topic \"%s\" of kafka source \"%s\" does not exist",
							source->topic, source->name),
					 errhint("Nothing was changed.")));
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not read the partitions of topic \"%s\" for kafka source \"%s\"",
							source->topic, source->name),
					 errdetail_internal("%s", rd_kafka_err2str(err)),
					 errhint("Nothing was changed. Try again when the broker can be reached%s.", kr_for_rebuild ? "" : ", or give the offsets as jsonb")));
		n = meta->topics[0].partition_cnt;
		if (n <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the broker names no partition of topic \"%s\"", source->topic),
					 errhint("Nothing was changed.")));

		t->n = n;
		t->partitions = palloc(sizeof(int32) * n);
		t->offsets = palloc(sizeof(int64) * n);
		t->ends = palloc(sizeof(int64) * n);
		for (int p = 0; p < n; p++)
			t->partitions[p] = p;
		kr_list_offsets(rk, source, n, RD_KAFKA_OFFSET_END, t->ends);
		if (pos->kind == KR_EARLIEST)
			kr_list_offsets(rk, source, n, RD_KAFKA_OFFSET_BEGINNING, t->offsets);
		else if (pos->kind == KR_LATEST)
			memcpy(t->offsets, t->ends, sizeof(int64) * n);
		else
		{
			int64		ms = pos->time / 1000 +
			(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

			/* before 1970: the first message of each partition */
			kr_list_offsets(rk, source, n, Max(ms, 0), t->offsets);
			for (int p = 0; p < n; p++)
				if (t->offsets[p] < 0)
					t->offsets[p] = t->ends[p];
		}
	}
	PG_FINALLY();
	{
		if (md)
			rd_kafka_metadata_destroy(md);
		if (rkt)
			rd_kafka_topic_destroy(rkt);
		rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	}
	PG_END_TRY();
}

/*
 * KappaKafkaLogBounds asks the broker, from a backend, for the partitions
 * of the source's topic: *n of them, with the earliest offset each still
 * holds in (*starts)[p] -- or, with 'haveTime', the first offset at or
 * after 'time' (the end if there is none) -- and its end in (*ends)[p] (-1
 * if unknown); arrays in the caller's memory context.  Raises an error if
 * the broker cannot tell.  For rebuilds (view_rebuild.c).
 */
void
KappaKafkaLogBounds(KappaSource *source, bool haveTime, TimestampTz time,
					int *n, int64 **starts, int64 **ends)
{
	KrPosition	pos;
	KrTarget	t;

	memset(&pos, 0, sizeof(pos));
	memset(&t, 0, sizeof(t));
	pos.kind = haveTime ? KR_TIME : KR_EARLIEST;
	pos.time = time;
	kr_for_rebuild = true;
	PG_TRY();
	{
		kr_resolve(source, &pos, &t);
	}
	PG_FINALLY();
	{
		kr_for_rebuild = false;
	}
	PG_END_TRY();
	*n = t.n;
	*starts = t.offsets;
	*ends = t.ends;
}

/*
 * kr_refuse_stream explains why a source into a stream cannot be rewound.
 */
static void
kr_refuse_stream(KappaSource *source)
{
	ereport(ERROR,
			(errcode(ERRCODE_WRONG_OBJECT_TYPE),
			 errmsg("cannot rewind kafka source \"%s\" because its target \"%s\" is a stream",
					source->name, get_rel_name(source->target)),
			 errdetail("A rewind would count messages twice in the stream's views."),
			 errhint("To rebuild the views from the topic, drop and recreate them and create a new source with start => 'earliest'.")));
}

/*
 * kr_truncate truncates the target as the caller (who needs TRUNCATE on
 * it, checked before): its truncate triggers fire, and continuous views
 * over it see the rows go.  An inheritance parent's children are not the
 * source's: ONLY; a partitioned table's partitions are.
 */
static void
kr_truncate(Oid relid)
{
	char	   *sql;

	sql = psprintf("TRUNCATE TABLE %s%s",
				   get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ? "" : "ONLY ",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
											  get_rel_name(relid)));
	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not truncate the target: %s", sql);
}

/*
 * kr_store applies the new offsets 't' to the source's catalog, as the
 * extension's owner, after locking its offset rows in partition order (as
 * a batch does): with envelope 'none' and no truncate, refuses to move a
 * partition back; a partition named explicitly must be known.  Updates or
 * inserts the offsets, and deletes the dead letters and recorded gaps the
 * source will meet again (a gap the new offset falls into is cut short).
 * SPI connected.
 */
static void
kr_store(KappaSource *source, const KrTarget *t, bool explicit, bool may_move_back)
{
	Oid			types[4] = {INT4OID, INT4OID, INT8OID, INT8OID};
	Datum		v[4];
	char		nulls[4] = "    ";
	int			nstored;
	int32	   *stored_p;
	int64	   *stored_o;

	v[0] = Int32GetDatum(source->id);
	KappaExecCatalogSql("SELECT partition, next_offset FROM kappa.source_offsets "
						"WHERE source_id OPERATOR(pg_catalog.=) $1 "
						"ORDER BY partition FOR UPDATE", 1, types, v, NULL);
	nstored = (int) SPI_processed;
	stored_p = palloc(sizeof(int32) * Max(nstored, 1));
	stored_o = palloc(sizeof(int64) * Max(nstored, 1));
	for (int r = 0; r < nstored; r++)
	{
		bool		isnull;

		stored_p[r] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
												  SPI_tuptable->tupdesc, 1, &isnull));
		stored_o[r] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
												  SPI_tuptable->tupdesc, 2, &isnull));
	}

	for (int i = 0; i < t->n; i++)
	{
		int32		p = t->partitions[i];
		int64		current = -1;

		for (int r = 0; r < nstored; r++)
			if (stored_p[r] == p)
				current = stored_o[r];
		if (explicit && current < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("kafka source \"%s\" has no partition %d", source->name, p),
					 errdetail("The partitions of a position in jsonb must be partitions the source has offsets of (kappa.source_partitions)."),
					 errhint("Rewind to 'earliest', 'latest' or a time to include partitions the source has not read yet.")));
		if (!may_move_back && current >= 0 && t->offsets[i] < current)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot rewind kafka source \"%s\" into table \"%s\" without truncating it",
							source->name, get_rel_name(source->target)),
					 errdetail("The source has envelope 'none': every message is appended, and partition %d would read offsets %lld to %lld again.",
							   p, (long long) t->offsets[i], (long long) (current - 1)),
					 errhint("Add truncate_target => true to truncate the table in the same transaction.")));
		if (current == t->offsets[i])
			continue;

		v[1] = Int32GetDatum(p);
		v[2] = Int64GetDatum(t->offsets[i]);
		nulls[3] = ' ';
		if (t->ends == NULL || t->ends[i] < 0)
			nulls[3] = 'n';
		else
			v[3] = Int64GetDatum(t->ends[i]);
		KappaExecCatalogSql("INSERT INTO kappa.source_offsets AS o "
							"(source_id, partition, next_offset, high_watermark, first_offset) "
							"VALUES ($1, $2, $3, $4, $3) "
							"ON CONFLICT (source_id, partition) DO UPDATE "
							"SET next_offset = EXCLUDED.next_offset, "
							"first_offset = LEAST(o.first_offset, EXCLUDED.first_offset), "
							"high_watermark = coalesce(EXCLUDED.high_watermark, o.high_watermark), "
							"updated_at = pg_catalog.now()",
							4, types, v, nulls);
		KappaExecCatalogSql("DELETE FROM kappa.dead_letters "
							"WHERE source_id OPERATOR(pg_catalog.=) $1 "
							"AND partition OPERATOR(pg_catalog.=) $2 "
							"AND \"offset\" OPERATOR(pg_catalog.>=) $3",
							3, types, v, NULL);
		KappaExecCatalogSql("UPDATE kappa.dead_letters "
							"SET last_offset = $3 OPERATOR(pg_catalog.-) 1 "
							"WHERE source_id OPERATOR(pg_catalog.=) $1 "
							"AND partition OPERATOR(pg_catalog.=) $2 "
							"AND kind OPERATOR(pg_catalog.=) 'gap' "
							"AND last_offset OPERATOR(pg_catalog.>=) $3",
							3, types, v, NULL);
	}
}

/*
 * kappa.rewind_source(name, position, truncate_target) moves the source's
 * offsets to 'position' (see the file header) in the caller's transaction
 * and returns the new offsets as jsonb {"partition": offset}.  The caller must be a member of
 * the source's owner; with truncate_target, have TRUNCATE on the target.
 * The C function of every signature (text, timestamptz and jsonb
 * positions).
 */
Datum
kappa_rewind_source(PG_FUNCTION_ARGS)
{
	KappaSource *source;
	KrPosition	pos;
	KrTarget	t;
	bool		truncate_target;
	bool		is_stream;
	StringInfoData result;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be NULL")));
	truncate_target = !PG_ARGISNULL(2) && PG_GETARG_BOOL(2);
	kr_parse_position(fcinfo, &pos);

	/* everything that needs no broker first */
	source = KappaSourceLookupForChange(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	if (!has_privs_of_role(GetUserId(), source->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of kafka source \"%s\"", source->name)));
	is_stream = KappaIsStream(source->target);
	if (is_stream)
		kr_refuse_stream(source);
	if (source->envelope == KAPPA_ENVELOPE_NONE && !truncate_target &&
		pos.kind == KR_EARLIEST)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot rewind kafka source \"%s\" into table \"%s\" without truncating it",
						source->name, get_rel_name(source->target)),
				 errdetail("The source has envelope 'none': every message is appended, and the messages read already would be appended again."),
				 errhint("Add truncate_target => true to truncate the table in the same transaction.")));
	if (truncate_target)
	{
		AclResult	aclresult = pg_class_aclcheck(source->target, GetUserId(), ACL_TRUNCATE);

		if (aclresult != ACLCHECK_OK)
			aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(source->target));
	}

	/* where to */
	if (pos.kind == KR_OFFSETS)
	{
		t.n = pos.noffsets;
		t.partitions = pos.partitions;
		t.offsets = pos.offsets;
		t.ends = NULL;
	}
	else
		kr_resolve(source, &pos, &t);

	/* in the order a batch locks: the target, key positions, offsets */
	SPI_connect();
	if (truncate_target)
	{
		kr_truncate(source->target);
		if (source->order_by != NULL)
		{
			Oid			type = INT4OID;
			Datum		id = Int32GetDatum(source->id);

			KappaExecCatalogSql("DELETE FROM kappa.source_key_positions "
								"WHERE source_id OPERATOR(pg_catalog.=) $1",
								1, &type, &id, NULL);
		}
	}
	kr_store(source, &t, pos.kind == KR_OFFSETS,
			 truncate_target || source->envelope != KAPPA_ENVELOPE_NONE);
	SPI_finish();

	/* the new offsets, in the form a position in jsonb takes */
	initStringInfo(&result);
	appendStringInfoChar(&result, '{');
	for (int i = 0; i < t.n; i++)
		appendStringInfo(&result, "%s\"%d\": " INT64_FORMAT, i > 0 ? ", " : "",
						 t.partitions[i], t.offsets[i]);
	appendStringInfoChar(&result, '}');
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result.data)));
}
