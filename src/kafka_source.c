/*-------------------------------------------------------------------------
 *
 * kafka_source.c
 *	  Kafka sources: the SQL functions that create, pause, resume and drop
 *	  them, and the catalog they live in.
 *
 * The catalog (kappa.source_catalog and the tables next to it) is not
 * writable by users.  The functions here check privileges as the caller --
 * USAGE on the source's kappa_kafka server (or superuser, for brokers given
 * directly), INSERT on the target, the right to set each of its options
 * (kafka_options.c) to create a source; membership in the owner role to
 * change one -- and then write the catalog as the extension's owner, with
 * search_path pinned (KappaBecomeExtensionOwner).  Workers do the same for
 * offsets, status and dead letters.
 *
 * Options are one jsonb object.  Keys pg_kappa knows (batch_size,
 * max_latency, batch_bytes, max_message_bytes and the format options) are
 * ours; every other key is a librdkafka property, checked when the source
 * is created so that a typo is refused at once instead of failing in a
 * worker.  Secrets are not source options: they belong in user mappings.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "foreign/foreign.h"
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
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "pg_kappa.h"
#include "kafka.h"
#include "util.h"

PG_FUNCTION_INFO_V1(kappa_create_kafka_source);
PG_FUNCTION_INFO_V1(kappa_create_kafka_source_0_2);
PG_FUNCTION_INFO_V1(kappa_create_kafka_source_0_3);
PG_FUNCTION_INFO_V1(kappa_pause_source);
PG_FUNCTION_INFO_V1(kappa_resume_source);
PG_FUNCTION_INFO_V1(kappa_resume_source_0_2);
PG_FUNCTION_INFO_V1(kappa_drop_source);
PG_FUNCTION_INFO_V1(kappa_source_arrives_paused);

/* Kafka's own default limit of a message's size (message.max.bytes) */
#define KSRC_DEFAULT_MAX_MESSAGE_BYTES 1048588

/* True while kappa.create_kafka_source inserts its catalog row. */
static bool ksrc_creating_source = false;

/*
 * ksrc_parse_ms parses a duration option: a number of milliseconds, or a
 * string with a unit ('10ms', '2s').
 */
static int
ksrc_parse_ms(const char *key, const char *value)
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
 * ksrc_parse_positive parses a positive integer option.
 */
static int
ksrc_parse_positive(const char *key, const char *value)
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
 * ksrc_parse_bytes parses a size option: a number of bytes, or a string
 * with a unit ('64MB', '512kB').
 */
static int64
ksrc_parse_bytes(const char *key, const char *value)
{
	int			kb;
	char	   *end;
	long		bytes;

	/* a plain number is bytes; with a unit, as a GUC (in kB) */
	errno = 0;
	bytes = strtol(value, &end, 10);
	if (*end == '\0' && errno == 0 && bytes >= 1024)
		return bytes;
	if (*end != '\0' && parse_int(value, &kb, GUC_UNIT_KB, NULL) && kb >= 1)
		return (int64) kb * 1024;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for option \"%s\": \"%s\"", key, value),
			 errhint("Give a number of bytes of at least 1024, or a size such as '64MB'.")));
	return 0;
}

/*
 * ksrc_apply_own_options reads the batch bounds (batch_size, max_latency,
 * batch_bytes: -1 when not given, for the settings) and max_message_bytes
 * from the source's options into the struct, checking each.
 */
static void
ksrc_apply_own_options(KappaSource *source)
{
	ListCell   *lc;

	source->batch_size = -1;
	source->max_latency_ms = -1;
	source->batch_bytes = -1;
	source->max_message_bytes = KSRC_DEFAULT_MAX_MESSAGE_BYTES;
	source->evolve_add_columns = false;
	foreach(lc, KappaSourceOptionList(source))
	{
		DefElem    *def = lfirst(lc);
		char	   *value = def->arg ? strVal(def->arg) : NULL;

		if (value == NULL)
			continue;
		if (strcmp(def->defname, "batch_size") == 0)
			source->batch_size = ksrc_parse_positive(def->defname, value);
		else if (strcmp(def->defname, "max_latency") == 0)
			source->max_latency_ms = ksrc_parse_ms(def->defname, value);
		else if (strcmp(def->defname, "max_message_bytes") == 0)
			source->max_message_bytes = ksrc_parse_positive(def->defname, value);
		else if (strcmp(def->defname, "batch_bytes") == 0)
			source->batch_bytes = ksrc_parse_bytes(def->defname, value);
		else if (strcmp(def->defname, "evolve") == 0)
		{
			if (strcmp(value, "add_columns") == 0)
				source->evolve_add_columns = true;
			else if (strcmp(value, "none") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value for option \"evolve\": \"%s\"", value),
						 errhint("Option \"evolve\" is 'none' (fields without a column are ignored) or 'add_columns'.")));
		}
	}
}

/*
 * ksrc_source_from_spi fills a KappaSource from the current row of an SPI
 * result of KAPPA_SOURCE_COLUMNS.
 */
#define KAPPA_SOURCE_COLUMNS \
	"id, name, owner, target::oid, topic, server, brokers, format, start, " \
	"on_data_loss, parallelism, options, paused, envelope, key_format, order_by"

static KappaSource *
ksrc_source_from_spi(HeapTuple tup, TupleDesc desc)
{
	KappaSource *s = palloc0(sizeof(KappaSource));
	bool		isnull;
	char	   *policy;

	s->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	s->name = SPI_getvalue(tup, desc, 2);
	s->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	s->target = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	s->topic = SPI_getvalue(tup, desc, 5);
	s->server = SPI_getvalue(tup, desc, 6);
	s->brokers = SPI_getvalue(tup, desc, 7);
	s->format = SPI_getvalue(tup, desc, 8);
	s->start = SPI_getvalue(tup, desc, 9);
	policy = SPI_getvalue(tup, desc, 10);
	s->onDataLoss = (policy && strcmp(policy, "record") == 0) ?
		KAPPA_DATA_LOSS_RECORD : KAPPA_DATA_LOSS_FAIL;
	s->parallelism = DatumGetInt32(SPI_getbinval(tup, desc, 11, &isnull));
	s->options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 12, &isnull));
	s->paused = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
	s->envelope = KappaParseEnvelope(SPI_getvalue(tup, desc, 14));
	s->key_format = SPI_getvalue(tup, desc, 15);
	s->order_by = SPI_getvalue(tup, desc, 16);
	ksrc_apply_own_options(s);
	return s;
}

/*
 * ksrc_source_lookup reads one source by id (name NULL) or by name, in the
 * current transaction, as the catalog owner, locking its row with 'lock'
 * ("FOR UPDATE", or NULL for no lock).  Returns NULL if missing and
 * missing_ok.  The result is allocated in the caller's memory context.
 */
static KappaSource *
ksrc_source_lookup(int32 id, const char *name, bool missing_ok, const char *lock)
{
	MemoryContext callercxt = CurrentMemoryContext;
	KappaSavedUser saved;
	KappaSource *result = NULL;
	Datum		arg;
	Oid			argtype;
	char		sql[512];
	int			rc;

	snprintf(sql, sizeof(sql),
			 "SELECT " KAPPA_SOURCE_COLUMNS " FROM kappa.source_catalog WHERE %s = $1 %s",
			 name ? "name" : "id", lock ? lock : "");
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

		result = ksrc_source_from_spi(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
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
 * ksrc_source_lookup).
 */
KappaSource *
KappaSourceLoad(int32 source_id, bool missing_ok)
{
	return ksrc_source_lookup(source_id, NULL, missing_ok, NULL);
}

/*
 * KappaSourceLookupForChange reads the source with the given name and locks
 * its catalog row FOR NO KEY UPDATE, against a concurrent drop or change
 * but not against the foreign-key checks of its workers' batches (a
 * rewind waits for a batch in flight while holding it); raises an error if
 * there is none.
 */
KappaSource *
KappaSourceLookupForChange(const char *name)
{
	return ksrc_source_lookup(0, name, false, "FOR NO KEY UPDATE");
}

/*
 * ksrc_after_commit arranges for the workers of a source to be started (or
 * the launcher to be woken) when the current transaction commits.
 */
static void
ksrc_after_commit(KappaSource *source, bool start)
{
	if (KappaLauncherActive())
	{
		KappaStartWorkerAtCommit(NULL);
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
		KappaWorkerArgs wa;

		memset(&wa, 0, sizeof(wa));
		wa.dboid = MyDatabaseId;
		wa.owner = source->owner;
		wa.source_id = source->id;
		wa.slot = slot;
		wa.managed = false;
		KappaStartWorkerAtCommit(&wa);
	}
}

/*
 * ksrc_check_owner raises an error unless the current user may change the
 * source (a member of its owner, or a superuser).
 */
static void
ksrc_check_owner(KappaSource *source)
{
	if (!has_privs_of_role(GetUserId(), source->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of kafka source \"%s\"", source->name)));
}

static char *
ksrc_text_arg(FunctionCallInfo fcinfo, int n, const char *argname)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", argname)));
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * ksrc_normalize_start checks start (earliest | latest | a timestamptz) and
 * returns it in a form that reads the same in any session: a timestamptz
 * becomes ISO text in UTC.
 */
static char *
ksrc_normalize_start(const char *start)
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
 * kappa_create_kafka_source and kappa_resume_source are the C functions of
 * version 0.1's kappa.create_kafka_source and kappa.resume_source, and
 * kappa_create_kafka_source_0_2 that of version 0.2's: this library no
 * longer writes their catalogs, so they ask for the update.
 */
Datum
kappa_create_kafka_source(PG_FUNCTION_ARGS)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the pg_kappa library is version %s, but the extension in this database is older",
					KAPPA_EXTENSION_VERSION),
			 errhint("Run ALTER EXTENSION pg_kappa UPDATE.")));
	PG_RETURN_VOID();
}

Datum
kappa_resume_source(PG_FUNCTION_ARGS)
{
	return kappa_create_kafka_source(fcinfo);
}

Datum
kappa_create_kafka_source_0_2(PG_FUNCTION_ARGS)
{
	return kappa_create_kafka_source(fcinfo);
}

/*
 * ksrc_parse_data_loss checks on_data_loss (fail | record).
 */
static KappaDataLossPolicy
ksrc_parse_data_loss(const char *policy)
{
	if (pg_strcasecmp(policy, "fail") == 0)
		return KAPPA_DATA_LOSS_FAIL;
	if (pg_strcasecmp(policy, "record") == 0)
		return KAPPA_DATA_LOSS_RECORD;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid on_data_loss \"%s\"", policy),
			 errhint("Give 'fail' (stop the source and name the lost messages) or 'record' (record them in kappa.errors and go on).")));
	return KAPPA_DATA_LOSS_FAIL;
}

/*
 * ksrc_check_server_usage raises an error unless 'role' has USAGE on the
 * source's server.
 */
static void
ksrc_check_server_usage(ForeignServer *server, Oid role)
{
	AclResult	aclresult = pg_foreign_server_aclcheck(server->serverid, role, ACL_USAGE);

	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FOREIGN_SERVER, server->servername);
}

/*
 * ksrc_check_changelog_target checks that a source with an envelope other
 * than 'none' can apply changes to its target: a table (not a stream) with
 * a primary key, which the caller may also UPDATE and DELETE, and whose key
 * and value the decoder can read.
 */
static void
ksrc_check_changelog_target(KappaSource *source, Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	const char *relname = RelationGetRelationName(rel);
	AttrNumber	keyattnos[INDEX_MAX_KEYS];
	int			nkeys;
	AclResult	aclresult;

	if (KappaIsStream(relid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("envelope '%s' needs a table, but \"%s\" is a stream",
						source->envelope == KAPPA_ENVELOPE_UPSERT ? "upsert" : "debezium",
						relname),
				 errdetail("A stream is append-only: its rows are never updated or deleted."),
				 errhint("Create a table with a primary key as the target, and continuous views over that table.")));
	nkeys = KappaTablePrimaryKey(rel, keyattnos);

	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_UPDATE);
	if (aclresult == ACLCHECK_OK)
		aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_DELETE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, relname);

	(void) KappaChangeDecoderCreate(KappaParseFormat(source->format), source->envelope,
									KappaParseKeyFormat(source->key_format),
									RelationGetDescr(rel), nkeys, keyattnos,
									source->order_by, KappaFormatOptions(source));
}

/*
 * kappa.create_kafka_source(name, target, topic, server, brokers, format,
 * start, on_data_loss, parallelism, options, envelope, key_format,
 * order_by) checks everything that can be checked without a broker,
 * records the source and arranges for its workers to run.
 */
Datum
kappa_create_kafka_source_0_3(PG_FUNCTION_ARGS)
{
	KappaSource *source = palloc0(sizeof(KappaSource));
	char	   *target = ksrc_text_arg(fcinfo, 1, "target");
	RangeVar   *rv;
	Relation	rel;
	AclResult	aclresult;
	rd_kafka_conf_t *conf;
	KappaSavedUser saved;
	Oid			argtypes[14] = {TEXTOID, OIDOID, OIDOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, INT4OID, JSONBOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[14];
	char		nulls[14] = "              ";
	int			rc;
	HeapTuple	roletup;
	ForeignServer *server = NULL;

	source->name = ksrc_text_arg(fcinfo, 0, "name");
	source->topic = ksrc_text_arg(fcinfo, 2, "topic");
	source->server = PG_ARGISNULL(3) ? NULL : ksrc_text_arg(fcinfo, 3, "server");
	source->brokers = PG_ARGISNULL(4) ? NULL : ksrc_text_arg(fcinfo, 4, "brokers");
	source->format = PG_ARGISNULL(5) ? pstrdup("json") : ksrc_text_arg(fcinfo, 5, "format");
	source->start = PG_ARGISNULL(6) ? pstrdup("earliest") : ksrc_text_arg(fcinfo, 6, "start");
	source->onDataLoss = ksrc_parse_data_loss(PG_ARGISNULL(7) ? "fail" :
											  ksrc_text_arg(fcinfo, 7, "on_data_loss"));
	source->parallelism = PG_ARGISNULL(8) ? 1 : PG_GETARG_INT32(8);
	source->options = PG_ARGISNULL(9) ? NULL : PG_GETARG_JSONB_P_COPY(9);
	source->envelope = KappaParseEnvelope(PG_ARGISNULL(10) ? "none" :
										  ksrc_text_arg(fcinfo, 10, "envelope"));
	source->key_format = PG_ARGISNULL(11) ? pstrdup("json") :
		ksrc_text_arg(fcinfo, 11, "key_format");
	source->order_by = PG_ARGISNULL(12) ? NULL : ksrc_text_arg(fcinfo, 12, "order_by");
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
	if (source->parallelism < 1 || source->parallelism > 64)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parallelism must be between 1 and 64")));
	if (source->options && !JB_ROOT_IS_OBJECT(source->options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("options must be a jsonb object")));

	/* the cluster: a server the caller may use, or (superusers) brokers */
	if ((source->server == NULL) == (source->brokers == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("give either server or brokers"),
				 errhint("Name a Kafka server: CREATE SERVER kafka_main FOREIGN DATA WRAPPER %s OPTIONS (brokers 'host:port'); then server => 'kafka_main'.",
						 KAPPA_KAFKA_FDW_NAME)));
	if (source->server != NULL)
	{
		server = KappaKafkaServer(source->server);
		ksrc_check_server_usage(server, source->owner);
	}
	else
	{
		if (!superuser())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to give brokers directly"),
					 errdetail("Only superusers may point the database server at any host and port."),
					 errhint("Use a Kafka server you have USAGE on: server => 'name' (see kappa.kafka_servers).")));
		if (source->brokers[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("brokers must not be empty")));
	}

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

	source->start = ksrc_normalize_start(source->start);

	/* options: ours, then librdkafka's, each as the caller may give it */
	ksrc_apply_own_options(source);
	KappaCheckSourceOptions(source, source->owner);
	conf = KappaKafkaConfBuild(source);
	rd_kafka_conf_destroy(conf);
	if (KappaParseFormat(source->format) == KAPPA_FORMAT_AVRO ||
		(source->envelope != KAPPA_ENVELOPE_NONE &&
		 KappaParseKeyFormat(source->key_format) == KAPPA_FORMAT_AVRO))
	{
		char	   *url;
		char	   *username;
		char	   *password;

		KappaRegistryOptions(source, &url, &username, &password);
		if (url == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
					 errmsg("Avro messages need a schema registry"),
					 errdetail("Avro messages name their writer schema by an id of a schema registry."),
					 errhint("Set option schema_registry on the source's kappa_kafka server: ALTER SERVER name OPTIONS (ADD schema_registry 'http://host:8081').")));
	}
	if (source->evolve_add_columns)
	{
		Oid			relowner;

		if (KappaParseFormat(source->format) != KAPPA_FORMAT_AVRO)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"evolve\" 'add_columns' needs format avro"),
					 errdetail("The type of a new column comes from the field's type in the writer schema.")));
		{
			HeapTuple	reltup = SearchSysCache1(RELOID, ObjectIdGetDatum(source->target));

			if (!HeapTupleIsValid(reltup))
				elog(ERROR, "cache lookup failed for relation %u", source->target);
			relowner = ((Form_pg_class) GETSTRUCT(reltup))->relowner;
			ReleaseSysCache(reltup);
		}
		if (!has_privs_of_role(source->owner, relowner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("option \"evolve\" 'add_columns' needs a source owned by the owner of \"%s\"",
							get_rel_name(source->target)),
					 errdetail("The worker adds columns to the table as the source's owner."),
					 errhint("Create the source as the table's owner, or leave out option \"evolve\".")));
	}

	/* the format and envelope, and whether they can fill the target */
	rel = relation_open(source->target, AccessShareLock);
	if (source->envelope == KAPPA_ENVELOPE_NONE)
	{
		if (source->order_by != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("order_by needs envelope 'upsert' or 'debezium'"),
					 errdetail("The ordering guard compares changes of the same key; envelope 'none' appends every message.")));
		(void) KappaDecoderCreate(KappaParseFormat(source->format),
								  RelationGetDescr(rel), KappaFormatOptions(source));
	}
	else
		ksrc_check_changelog_target(source, rel);
	relation_close(rel, AccessShareLock);

	/* record it */
	values[0] = CStringGetTextDatum(source->name);
	values[1] = ObjectIdGetDatum(source->owner);
	values[2] = ObjectIdGetDatum(source->target);
	values[3] = CStringGetTextDatum(source->topic);
	if (source->server)
		values[4] = CStringGetTextDatum(source->server);
	else
		nulls[4] = 'n';
	if (source->brokers)
		values[5] = CStringGetTextDatum(source->brokers);
	else
		nulls[5] = 'n';
	values[6] = CStringGetTextDatum(source->format);
	values[7] = CStringGetTextDatum(source->start);
	values[8] = CStringGetTextDatum(source->onDataLoss == KAPPA_DATA_LOSS_RECORD ?
									"record" : "fail");
	values[9] = Int32GetDatum(source->parallelism);
	values[10] = source->options ? JsonbPGetDatum(source->options)
		: DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	values[11] = CStringGetTextDatum(source->envelope == KAPPA_ENVELOPE_UPSERT ? "upsert" :
									 source->envelope == KAPPA_ENVELOPE_DEBEZIUM ? "debezium" :
									 "none");
	values[12] = CStringGetTextDatum(source->key_format);
	if (source->order_by)
		values[13] = CStringGetTextDatum(source->order_by);
	else
		nulls[13] = 'n';

	KappaBecomeExtensionOwner(&saved);
	SPI_connect();
	rc = SPI_execute_with_args("SELECT 1 FROM kappa.source_catalog WHERE name = $1",
							   1, argtypes, values, NULL, true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("kafka source \"%s\" already exists", source->name)));
	/* not a restored row: it does not arrive paused (see below) */
	ksrc_creating_source = true;
	PG_TRY();
	{
		rc = SPI_execute_with_args("INSERT INTO kappa.source_catalog "
								   "(name, owner, target, topic, server, brokers, format, start, "
								   " on_data_loss, parallelism, options, envelope, key_format, order_by) "
								   "VALUES ($1, $2, $3::pg_catalog.regclass, $4, $5, $6, $7, $8, $9, $10, $11, "
								   "$12, $13, $14) "
								   "RETURNING id",
								   14, argtypes, values, nulls, false, 1);
	}
	PG_FINALLY();
	{
		ksrc_creating_source = false;
	}
	PG_END_TRY();
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

	ksrc_after_commit(source, true);
	PG_RETURN_VOID();
}

/*
 * ksrc_set_paused is pause_source and resume_source; resuming may also set
 * on_data_loss (NULL: unchanged), which restarts the source's workers.
 */
static void
ksrc_set_paused(const char *name, bool paused, const char *onDataLoss)
{
	KappaSource *source = ksrc_source_lookup(0, name, false, "FOR UPDATE");
	KappaSavedUser saved;
	Datum		values[3];
	char		nulls[3] = "   ";
	Oid			argtypes[3] = {INT4OID, BOOLOID, TEXTOID};

	ksrc_check_owner(source);
	values[0] = Int32GetDatum(source->id);
	values[1] = BoolGetDatum(paused);
	if (onDataLoss != NULL)
		values[2] = CStringGetTextDatum(ksrc_parse_data_loss(onDataLoss) == KAPPA_DATA_LOSS_RECORD ?
										"record" : "fail");
	else
		nulls[2] = 'n';
	KappaBecomeExtensionOwner(&saved);
	SPI_connect();
	if (SPI_execute_with_args("UPDATE kappa.source_catalog SET paused = $2, "
							  "on_data_loss = coalesce($3, on_data_loss) WHERE id = $1",
							  3, argtypes, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update kappa.source_catalog");
	SPI_finish();
	KappaRestoreUser(&saved);

	source->paused = paused;
	ksrc_after_commit(source, !paused);
}

Datum
kappa_pause_source(PG_FUNCTION_ARGS)
{
	ksrc_set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), true, NULL);
	PG_RETURN_VOID();
}

/*
 * kappa.resume_source(name, on_data_loss) resumes a paused source; with
 * on_data_loss, it also changes what the source does about messages the
 * broker no longer holds (how a source stopped by on_data_loss => 'fail'
 * goes on: 'record').
 */
Datum
kappa_resume_source_0_2(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be NULL")));
	ksrc_set_paused(text_to_cstring(PG_GETARG_TEXT_PP(0)), false,
					PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}

/*
 * kappa_drop_source(name) removes a source with its offsets, status and dead
 * letters; its workers notice and exit.
 */
Datum
kappa_drop_source(PG_FUNCTION_ARGS)
{
	KappaSource *source = ksrc_source_lookup(0, text_to_cstring(PG_GETARG_TEXT_PP(0)),
											 false, "FOR UPDATE");
	KappaSavedUser saved;
	Datum		value = Int32GetDatum(source->id);
	Oid			argtype = INT4OID;

	ksrc_check_owner(source);
	KappaBecomeExtensionOwner(&saved);
	SPI_connect();
	if (SPI_execute_with_args("DELETE FROM kappa.source_catalog WHERE id = $1",
							  1, &argtype, &value, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from kappa.source_catalog");
	SPI_finish();
	KappaRestoreUser(&saved);

	ksrc_after_commit(source, false);
	PG_RETURN_VOID();
}

/*
 * kappa_source_arrives_paused is the BEFORE INSERT trigger of
 * kappa.source_catalog: a row that kappa.create_kafka_source does not insert
 * -- pg_restore's COPY of a dump, above all -- arrives paused.  A restore
 * loads the catalog, the offsets, the views and the rows in separate
 * transactions; a source that ran meanwhile would store start offsets the
 * dump's then collide with, or feed views not restored yet.  And a copy of
 * a database should not start reading its original's topics by itself:
 * kappa.resume_source() starts it when the restore is complete.
 */
Datum
kappa_source_arrives_paused(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	int			col;
	Datum		value = BoolGetDatum(true);
	bool		isnull = false;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kappa.source_arrives_paused() must be a BEFORE INSERT row trigger")));
	tuple = trigdata->tg_trigtuple;
	if (ksrc_creating_source)
		return PointerGetDatum(tuple);
	col = KappaCatalogAttnum(trigdata->tg_relation, "paused");
	tuple = heap_modify_tuple_by_cols(tuple, RelationGetDescr(trigdata->tg_relation),
									  1, &col, &value, &isnull);
	return PointerGetDatum(tuple);
}
