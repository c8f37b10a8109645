/*-------------------------------------------------------------------------
 *
 * kafka_source.c
 *	  Kafka sources: the SQL functions that create, pause, resume and drop
 *	  them, the catalog they live in, and the librdkafka configuration built
 *	  from their options.
 *
 * The catalog (kappa.source_catalog and the tables next to it) is not
 * writable by users.  The functions here check privileges as the caller --
 * INSERT on the target to create a source, membership in the owner role to
 * change one -- and then write the catalog as the catalog's owner, with
 * search_path pinned to pg_catalog.  Workers do the same for offsets,
 * status and dead letters.
 *
 * Options are one jsonb object.  Keys pg_kappa knows (batch_size,
 * max_latency, max_message_bytes and the format options) are ours; every
 * other key is a librdkafka property and is checked with rd_kafka_conf_set at
 * create time, so that a typo is refused at once instead of failing in a
 * worker.  Values of secret properties never appear in error messages.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "util.h"

PG_FUNCTION_INFO_V1(kappa_create_kafka_source);
PG_FUNCTION_INFO_V1(kappa_pause_source);
PG_FUNCTION_INFO_V1(kappa_resume_source);
PG_FUNCTION_INFO_V1(kappa_drop_source);

/* Options that pg_kappa interprets itself; all others go to librdkafka. */
static const char *const kappa_own_options[] = {
	"batch_size", "max_latency", "max_message_bytes",
	/* format options, read by the decoders */
	"strict", "delimiter", "quote", "escape", "header", "null", "encoding",
	"columns", "time_format",
	NULL
};

/* Properties the workers set themselves; users may not override them. */
static const char *const kappa_reserved_properties[] = {
	"enable.auto.commit", "enable.auto.offset.store", "log.queue",
	"bootstrap.servers", "metadata.broker.list",
	NULL
};

/* Source ids whose workers must be started or woken when we commit. */
static List *kappa_pending_starts = NIL;
static bool kappa_pending_wake = false;
static bool kappa_xact_callback_registered = false;

/*
 * KappaOptionIsSecret tells whether an option's value must be hidden from
 * everyone but the owner: sasl.password, ssl.key.password, sasl.oauthbearer.*
 * and any key containing "password" or "secret".
 */
bool
KappaOptionIsSecret(const char *key)
{
	char	   *lower = asc_tolower(key, strlen(key));

	return strstr(lower, "password") != NULL ||
		strstr(lower, "secret") != NULL ||
		strncmp(lower, "sasl.oauthbearer.", 17) == 0;
}

/*
 * KappaOptionIsKappa tells whether an option is pg_kappa's own rather than a
 * librdkafka property.
 */
bool
KappaOptionIsKappa(const char *key)
{
	for (int i = 0; kappa_own_options[i]; i++)
		if (strcmp(key, kappa_own_options[i]) == 0)
			return true;
	return false;
}

/*
 * jsonb_scalar_text returns a scalar jsonb value as text (strings without
 * quotes), or NULL for objects and arrays.
 */
static char *
jsonb_scalar_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvNull:
			return NULL;
		default:
			return NULL;
	}
}

/*
 * kappa_parse_ms parses a duration option: a number of milliseconds, or a
 * string with a unit ('10ms', '2s').
 */
static int
kappa_parse_ms(const char *key, const char *value)
{
	int			result;
	const char *hint = NULL;

	if (!parse_int(value, &result, GUC_UNIT_MS, &hint) || result < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": \"%s\"", key, value),
				 errhint("Give a positive number of milliseconds or a duration such as '10ms'.")));
	return result;
}

/*
 * kappa_parse_positive parses a positive integer option.
 */
static int
kappa_parse_positive(const char *key, const char *value)
{
	int			result;

	if (!parse_int(value, &result, 0, NULL) || result < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": \"%s\"", key, value),
				 errhint("Give a positive integer.")));
	return result;
}

/*
 * kappa_apply_own_options reads batch_size and max_latency from the source's
 * options into the struct and checks the other options of ours.
 */
static void
kappa_apply_own_options(KappaSource *source)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	source->batch_size = -1;
	source->max_latency_ms = -1;
	if (source->options == NULL || !JB_ROOT_IS_OBJECT(source->options))
		return;

	it = JsonbIteratorInit(&source->options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *value;

		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE || key == NULL)
			continue;
		value = jsonb_scalar_text(&v);
		if (strcmp(key, "batch_size") == 0 && value)
			source->batch_size = kappa_parse_positive(key, value);
		else if (strcmp(key, "max_latency") == 0 && value)
			source->max_latency_ms = kappa_parse_ms(key, value);
		else if (strcmp(key, "max_message_bytes") == 0 && value)
			(void) kappa_parse_positive(key, value);
	}
}

/*
 * KappaSourceMaxMessageBytes returns the max_message_bytes option, or the
 * default (Kafka's own default message size limit).
 */
int
KappaSourceMaxMessageBytes(KappaSource *source)
{
	JsonbValue *v;

	if (source->options == NULL)
		return 1048588;
	v = getKeyJsonValueFromContainer(&source->options->root,
									 "max_message_bytes", 17, NULL);
	if (v)
	{
		char	   *s = jsonb_scalar_text(v);

		if (s)
			return kappa_parse_positive("max_message_bytes", s);
	}
	return 1048588;
}

/*
 * KappaFormatOptions returns the options the decoder reads (ours except the
 * batch bounds), as a jsonb object.
 */
Jsonb *
KappaFormatOptions(KappaSource *source)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbValue *res;
	bool		skip = false;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	if (source->options && JB_ROOT_IS_OBJECT(source->options))
	{
		it = JsonbIteratorInit(&source->options->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				char	   *key = pnstrdup(v.val.string.val, v.val.string.len);

				skip = !KappaOptionIsKappa(key) ||
					strcmp(key, "batch_size") == 0 ||
					strcmp(key, "max_latency") == 0 ||
					strcmp(key, "max_message_bytes") == 0;
				if (!skip)
					pushJsonbValue(&state, WJB_KEY, &v);
			}
			else if (tok == WJB_VALUE && !skip)
				pushJsonbValue(&state, WJB_VALUE, &v);
		}
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * kappa_conf_set sets one librdkafka property, raising a clear error when
 * librdkafka refuses it.  The value of a secret property is never shown.
 */
static void
kappa_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char		errstr[512];
	rd_kafka_conf_res_t res;

	res = rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr));
	if (res == RD_KAFKA_CONF_OK)
		return;

	rd_kafka_conf_destroy(conf);
	if (res == RD_KAFKA_CONF_UNKNOWN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown Kafka source option \"%s\"", key),
				 errdetail_internal("%s", errstr),
				 errhint("Options are librdkafka properties or one of pg_kappa's: "
						 "batch_size, max_latency, max_message_bytes and the format options.")));
	if (KappaOptionIsSecret(key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for Kafka property \"%s\"", key)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for Kafka property \"%s\"", key),
			 errdetail_internal("%s", errstr)));
}

/*
 * KappaKafkaConfBuild returns a new rd_kafka_conf_t * for a consumer of the
 * source: its librdkafka options, then the properties the workers rely on.
 * Raises an error for an unknown or invalid property.  The caller owns the
 * result (rd_kafka_new takes it over).
 */
void *
KappaKafkaConfBuild(KappaSource *source)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		client_id[NAMEDATALEN + 16];

	snprintf(client_id, sizeof(client_id), "pg_kappa-%s", source->name);
	kappa_conf_set(conf, "client.id", client_id);
	/* the consumer queue needs a group; it never joins or commits (assign) */
	kappa_conf_set(conf, "group.id", client_id);
	kappa_conf_set(conf, "auto.offset.reset", "earliest");
	kappa_conf_set(conf, "topic.metadata.refresh.interval.ms", "10000");
	kappa_conf_set(conf, "reconnect.backoff.max.ms", "2000");

	/*
	 * All partitions share one consumer queue; librdkafka 2.0.2 stops
	 * fetching every partition for a while (up to ~1 s) whenever that queue
	 * holds queued.min.messages (default 100000) or
	 * queued.max.messages.kbytes.  Let the byte limit bound prefetching: the
	 * worker wakes the fetcher whenever it has taken half of it out of the
	 * queue (kw_wake_fetcher), which the message count would not tell it.
	 * With that, 16 MB prefetch as fast as 64 MB (librdkafka's default) on
	 * bench/kafka_bench.sh and cost a quarter of the memory.
	 */
	kappa_conf_set(conf, "queued.min.messages", "10000000");
	kappa_conf_set(conf, "queued.max.messages.kbytes", "16384");

	/*
	 * A fetch that finds no new data waits up to fetch.wait.max.ms (500 ms by
	 * default) on the broker.  Brokers that do not answer as soon as data
	 * arrives (the mock cluster, some proxies) then add that wait to every
	 * message's latency; keep it to half the batch latency bound.
	 */
	{
		int			latency = kappa_max_latency_ms;
		char		buf[32];

		if (source->max_latency_ms > 0)
			latency = source->max_latency_ms;

		snprintf(buf, sizeof(buf), "%d", Max(Min(latency / 2, 500), 5));
		kappa_conf_set(conf, "fetch.wait.max.ms", buf);
	}

	if (source->options && JB_ROOT_IS_OBJECT(source->options))
	{
		JsonbIterator *it = JsonbIteratorInit(&source->options->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		char	   *key = NULL;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			char	   *value;

			if (tok == WJB_KEY)
			{
				key = pnstrdup(v.val.string.val, v.val.string.len);
				continue;
			}
			if (tok != WJB_VALUE || key == NULL || KappaOptionIsKappa(key))
				continue;
			for (int i = 0; kappa_reserved_properties[i]; i++)
				if (strcmp(key, kappa_reserved_properties[i]) == 0)
				{
					rd_kafka_conf_destroy(conf);
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("Kafka property \"%s\" is set by pg_kappa", key),
							 errhint("Give the brokers with the brokers argument; offsets are "
									 "kept by pg_kappa, not committed to Kafka.")));
				}
			value = jsonb_scalar_text(&v);
			if (value == NULL)
			{
				rd_kafka_conf_destroy(conf);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"%s\" must be a string, a number or a boolean", key)));
			}
			kappa_conf_set(conf, key, value);
		}
	}

	kappa_conf_set(conf, "bootstrap.servers", source->brokers);
	kappa_conf_set(conf, "enable.auto.commit", "false");
	kappa_conf_set(conf, "enable.auto.offset.store", "false");
	kappa_conf_set(conf, "log.queue", "true");
	return conf;
}

/*
 * kappa_source_from_spi fills a KappaSource from the current row of an SPI
 * result of "SELECT id, name, owner, target, topic, brokers, format, start,
 * parallelism, options, paused".
 */
static KappaSource *
kappa_source_from_spi(HeapTuple tup, TupleDesc desc)
{
	KappaSource *s = palloc0(sizeof(KappaSource));
	bool		isnull;

	s->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	s->name = SPI_getvalue(tup, desc, 2);
	s->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	s->target = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	s->topic = SPI_getvalue(tup, desc, 5);
	s->brokers = SPI_getvalue(tup, desc, 6);
	s->format = SPI_getvalue(tup, desc, 7);
	s->start = SPI_getvalue(tup, desc, 8);
	s->parallelism = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
	s->options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 10, &isnull));
	s->paused = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
	kappa_apply_own_options(s);
	return s;
}

/*
 * kappa_source_lookup reads one source by id (name NULL) or by name, in the
 * current transaction, as the catalog owner.  Returns NULL if missing and
 * missing_ok.  The result is allocated in the caller's memory context.
 */
static KappaSource *
kappa_source_lookup(int32 id, const char *name, bool missing_ok, bool for_update)
{
	MemoryContext callercxt = CurrentMemoryContext;
	KappaSavedUser saved;
	KappaSource *result = NULL;
	Datum		arg;
	Oid			argtype;
	char		sql[512];
	int			rc;

	snprintf(sql, sizeof(sql),
			 "SELECT id, name, owner, target::oid, topic, brokers, format, start, "
			 "parallelism, options, paused FROM kappa.source_catalog WHERE %s = $1%s",
			 name ? "name" : "id", for_update ? " FOR UPDATE" : "");
	if (name)
	{
		arg = CStringGetTextDatum(name);
		argtype = TEXTOID;
	}
	else
	{
		arg = Int32GetDatum(id);
		argtype = INT4OID;
	}

	KappaBecomeExtensionOwner(&saved);
	SPI_connect();
	rc = SPI_execute_with_args(sql, 1, &argtype, &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT && rc != SPI_OK_SELINTO && rc != SPI_OK_UPDATE_RETURNING
		&& rc < 0)
		elog(ERROR, "could not read kappa.source_catalog: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(callercxt);

		result = kappa_source_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	KappaRestoreUser(&saved);

	if (result == NULL && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kafka source \"%s\" does not exist", name ? name : "?")));
	return result;
}

/*
 * KappaSourceLoad reads the source with the given id (see
 * kappa_source_lookup).
 */
KappaSource *
KappaSourceLoad(int32 source_id, bool missing_ok)
{
	return kappa_source_lookup(source_id, NULL, missing_ok, false);
}

/*
 * kappa_xact_callback starts workers (without the launcher) or wakes the
 * launcher once the transaction that changed a source has committed, so
 * that workers never look for a row they cannot see yet.
 */
static void
kappa_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_COMMIT)
	{
		if (kappa_pending_wake)
			KappaLauncherWake();
		foreach(lc, kappa_pending_starts)
		{
			KappaWorkerArgs *wa = lfirst(lc);

			if (!KappaStartWorker(wa, NULL, true, NULL))
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("could not start a worker for kafka source %d", wa->source_id),
						 errhint("Raise max_worker_processes.")));
		}
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
	{
		/* the list lived in TopTransactionContext, gone with it */
		kappa_pending_starts = NIL;
		kappa_pending_wake = false;
	}
}

/*
 * kappa_after_commit arranges for the workers of a source to be started (or
 * the launcher to be woken) when the current transaction commits.
 */
static void
kappa_after_commit(KappaSource *source, bool start)
{
	if (!kappa_xact_callback_registered)
	{
		RegisterXactCallback(kappa_xact_callback, NULL);
		kappa_xact_callback_registered = true;
	}

	if (KappaLauncherActive())
	{
		kappa_pending_wake = true;
		return;
	}
	if (!start)
		return;

	ereport(WARNING,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("pg_kappa is not in shared_preload_libraries: kafka source \"%s\" will not restart after a server restart",
					source->name),
			 errhint("Add pg_kappa to shared_preload_libraries and restart the server.")));
	for (int slot = 0; slot < source->parallelism; slot++)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
		KappaWorkerArgs *wa = palloc0(sizeof(KappaWorkerArgs));

		wa->dboid = MyDatabaseId;
		wa->owner = source->owner;
		wa->source_id = source->id;
		wa->slot = slot;
		wa->managed = false;
		kappa_pending_starts = lappend(kappa_pending_starts, wa);
		MemoryContextSwitchTo(old);
	}
}

/*
 * kappa_check_owner raises an error unless the current user may change the
 * source (a member of its owner, or a superuser).
 */
static void
kappa_check_owner(KappaSource *source)
{
	if (!has_privs_of_role(GetUserId(), source->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of kafka source \"%s\"", source->name)));
}

static char *
kappa_text_arg(FunctionCallInfo fcinfo, int n, const char *argname)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * kappa_normalize_start checks start (earliest | latest | a timestamptz) and
 * returns it in a form that reads the same in any session: a timestamptz
 * becomes ISO text in UTC.
 */
static char *
kappa_normalize_start(const char *start)
{
	Datum		ts;
	int			level;
	char	   *result;

	if (pg_strcasecmp(start, "earliest") == 0)
		return pstrdup("earliest");
	if (pg_strcasecmp(start, "latest") == 0)
		return pstrdup("latest");

	ts = DirectFunctionCall3(timestamptz_in, CStringGetDatum(start),
							 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	if (TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(ts)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start must be 'earliest', 'latest' or a finite timestamptz")));
	level = NewGUCNestLevel();
	(void) set_config_option("datestyle", "ISO, YMD", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("timezone", "UTC", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	result = DatumGetCString(DirectFunctionCall1(timestamptz_out, ts));
	AtEOXact_GUC(true, level);
	return result;
}

/*
 * kappa_create_kafka_source(name, target, topic, brokers, format, start,
 * parallelism, options) checks everything that can be checked without a
 * broker, records the source and arranges for its workers to run.
 */
Datum
kappa_create_kafka_source(PG_FUNCTION_ARGS)
{
	KappaSource *source = palloc0(sizeof(KappaSource));
	char	   *target = kappa_text_arg(fcinfo, 1, "target");
	RangeVar   *rv;
	Relation	rel;
	AclResult	aclresult;
	rd_kafka_conf_t *conf;
	KappaSavedUser saved;
	Oid			argtypes[9] = {TEXTOID, OIDOID, OIDOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, INT4OID, JSONBOID};
	Datum		values[9];
	int			rc;
	HeapTuple	roletup;

	source->name = kappa_text_arg(fcinfo, 0, "name");
	source->topic = kappa_text_arg(fcinfo, 2, "topic");
	source->brokers = kappa_text_arg(fcinfo, 3, "brokers");
	source->format = PG_ARGISNULL(4) ? pstrdup("json") : kappa_text_arg(fcinfo, 4, "format");
	source->start = PG_ARGISNULL(5) ? pstrdup("earliest") : kappa_text_arg(fcinfo, 5, "start");
	source->parallelism = PG_ARGISNULL(6) ? 1 : PG_GETARG_INT32(6);
	source->options = PG_ARGISNULL(7) ? NULL : PG_GETARG_JSONB_P_COPY(7);
	source->owner = GetUserId();

	if (source->name[0] == '\0' || strlen(source->name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid kafka source name \"%s\"", source->name),
				 errdetail("A source name has 1 to %d bytes.", NAMEDATALEN - 1)));
	if (source->topic[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topic must not be empty")));
	if (source->brokers[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("brokers must not be empty")));
	if (source->parallelism < 1 || source->parallelism > 64)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parallelism must be between 1 and 64")));
	if (source->options && !JB_ROOT_IS_OBJECT(source->options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a jsonb object")));

	/* the target: a stream or a table the caller may INSERT into */
	rv = makeRangeVarFromNameList(stringToQualifiedNameList(target));
	source->target = RangeVarGetRelid(rv, AccessShareLock, false);
	if (IsCatalogRelationOid(source->target))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is a system catalog and cannot be the target of a kafka source",
						target)));
	if (!KappaIsStream(source->target))
	{
		char		relkind = get_rel_relkind(source->target);

		if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("\"%s\" is not a stream or a table", target),
					 errhint("The target of a Kafka source is a stream (kappa.create_stream) or an ordinary table.")));
	}
	aclresult = pg_class_aclcheck(source->target, GetUserId(), ACL_INSERT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(source->target));

	/* the worker connects as the owner */
	roletup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(source->owner));
	if (HeapTupleIsValid(roletup))
	{
		bool		canlogin = ((Form_pg_authid) GETSTRUCT(roletup))->rolcanlogin;

		ReleaseSysCache(roletup);
		if (!canlogin)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("role \"%s\" cannot own a kafka source because it cannot log in",
							GetUserNameFromId(source->owner, false)),
					 errdetail("The workers of a source connect as its owner."),
					 errhint("Create the source as a role with LOGIN.")));
	}

	source->start = kappa_normalize_start(source->start);

	/* options: ours, then librdkafka's */
	kappa_apply_own_options(source);
	(void) KappaSourceMaxMessageBytes(source);
	conf = KappaKafkaConfBuild(source);
	rd_kafka_conf_destroy(conf);

	/* the format, and whether it can fill the target's columns */
	rel = relation_open(source->target, AccessShareLock);
	(void) KappaDecoderCreate(KappaParseFormat(source->format),
							  RelationGetDescr(rel), KappaFormatOptions(source));
	relation_close(rel, AccessShareLock);

	/* record it */
	values[0] = CStringGetTextDatum(source->name);
	values[1] = ObjectIdGetDatum(source->owner);
	values[2] = ObjectIdGetDatum(source->target);
	values[3] = CStringGetTextDatum(source->topic);
	values[4] = CStringGetTextDatum(source->brokers);
	values[5] = CStringGetTextDatum(source->format);
	values[6] = CStringGetTextDatum(source->start);
	values[7] = Int32GetDatum(source->parallelism);
	values[8] = source->options ? JsonbPGetDatum(source->options)
		: DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));

	KappaBecomeExtensionOwner(&saved);
	SPI_connect();
	rc = SPI_execute_with_args("SELECT 1 FROM kappa.source_catalog WHERE name = $1",
							   1, argtypes, values, NULL, true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("kafka source \"%s\" already exists", source->name)));
	rc = SPI_execute_with_args("INSERT INTO kappa.source_catalog "
							   "(name, owner, target, topic, brokers, format, start, parallelism, options) "
							   "VALUES ($1, $2, $3::regclass, $4, $5, $6, $7, $8, $9) RETURNING id",
							   9, argtypes, values, NULL, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not insert into kappa.source_catalog: %s",
			 SPI_result_code_string(rc));
	{
		bool		isnull;

		source->id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	KappaRestoreUser(&saved);

	kappa_after_commit(source, true);
	PG_RETURN_VOID();
}

/*
 * kappa_set_paused is pause_source and resume_source.
 */
static void
kappa_set_paused(const char *name, bool paused)
{
	KappaSource *source = kappa_source_lookup(0, name, false, true);
	KappaSavedUser saved;
	Datum		values[2];
	Oid			argtypes[2] = {INT4OID, BOOLOID};

	kappa_check_owner(source);
	values[0] = Int32GetDatum(source->id);
	values[1] = BoolGetDatum(paused);
	KappaBecomeExtensionOwner(&saved);
	SPI_connect();
	if (SPI_execute_with_args("UPDATE kappa.source_catalog SET paused = $2 WHERE id = $1",
							  2, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update kappa.source_catalog");
	SPI_finish();
	KappaRestoreUser(&saved);

	source->paused = paused;
	kappa_after_commit(source, !paused);
}

Datum
kappa_pause_source(PG_FUNCTION_ARGS)
{
	kappa_set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), true);
	PG_RETURN_VOID();
}

Datum
kappa_resume_source(PG_FUNCTION_ARGS)
{
	kappa_set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), false);
	PG_RETURN_VOID();
}

/*
 * kappa_drop_source(name) removes a source with its offsets, status and dead
 * letters; its workers notice and exit.
 */
Datum
kappa_drop_source(PG_FUNCTION_ARGS)
{
	KappaSource *source = kappa_source_lookup(0, text_to_cstring(PG_GETARG_TEXT_PP(0)),
											  false, true);
	KappaSavedUser saved;
	Datum		value = Int32GetDatum(source->id);
	Oid			argtype = INT4OID;

	kappa_check_owner(source);
	KappaBecomeExtensionOwner(&saved);
	SPI_connect();
	if (SPI_execute_with_args("DELETE FROM kappa.source_catalog WHERE id = $1",
							  1, &argtype, &value, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from kappa.source_catalog");
	SPI_finish();
	KappaRestoreUser(&saved);

	kappa_after_commit(source, false);
	PG_RETURN_VOID();
}
