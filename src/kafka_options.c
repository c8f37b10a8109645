/*-------------------------------------------------------------------------
 *
 * kafka_options.c
 *	  Options of Kafka sources: who may set which librdkafka property where,
 *	  the validator of the kappa_kafka foreign-data wrapper, the batch bounds
 *	  and format options of a source, and the librdkafka configuration of
 *	  its consumer.
 *
 * A Kafka cluster is a foreign server of the kappa_kafka wrapper (option
 * 'brokers' plus librdkafka properties); credentials are user mappings; a
 * source names its server and may add properties of its own.  Every
 * librdkafka property belongs to one class (ko_properties[]), which says
 * where it may be given and by whom:
 *
 *	 safe		   anyone who may set options at that level
 *	 secret		   only in a user mapping (server options are readable by
 *				   everyone in pg_foreign_server; source options are dumped)
 *	 network	   where the database server connects to: server options only
 *				   (creating a server needs USAGE on the wrapper)
 *	 file		   names a file of the database server: superusers and members
 *				   of pg_read_server_files
 *	 program	   runs a program on the database server: superusers and
 *				   members of pg_execute_server_program
 *	 superuser	   loads code into the server, floods its log, or is not known
 *				   to be safe: superusers only
 *	 reserved	   set by pg_kappa itself: nobody
 *
 * A property librdkafka knows but this table does not is "superuser": the
 * list of what is safe is explicit, so a property added by a later
 * librdkafka is refused until someone has looked at it.  A property
 * librdkafka does not know is refused with librdkafka's own text.  The
 * checks run as the role that gives the option -- the wrapper's validator
 * at CREATE/ALTER SERVER and USER MAPPING, kappa.create_kafka_source for a
 * source's own options -- and a source's options are checked again against
 * its owner whenever a worker starts.  See docs/security.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <librdkafka/rdkafka.h>

#include "access/htup_details.h"
#include "access/reloptions.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_foreign_data_wrapper.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "foreign/foreign.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/jsonb.h"
#include "utils/syscache.h"

#include "pg_kappa.h"
#include "kafka.h"

PG_FUNCTION_INFO_V1(kappa_kafka_fdw_validator);
PG_FUNCTION_INFO_V1(kappa_kafka_properties);
PG_FUNCTION_INFO_V1(kappa_option_is_secret);

/* Who may set which librdkafka property where (see the file header). */
typedef enum KappaKafkaPropClass
{
	KAFKA_PROP_SAFE,			/* anyone who may set options at that level */
	KAFKA_PROP_SECRET,			/* only in a user mapping */
	KAFKA_PROP_NETWORK,			/* where the server connects: server only */
	KAFKA_PROP_FILE,			/* a server file: pg_read_server_files */
	KAFKA_PROP_PROGRAM,			/* runs a program: pg_execute_server_program */
	KAFKA_PROP_SUPERUSER,		/* loads code, floods the log, or unknown */
	KAFKA_PROP_RESERVED			/* set by pg_kappa itself */
} KappaKafkaPropClass;

typedef enum KappaOptionLevel
{
	KAPPA_LEVEL_SERVER,
	KAPPA_LEVEL_USER_MAPPING,
	KAPPA_LEVEL_SOURCE
} KappaOptionLevel;

static bool ko_option_is_secret(const char *key);

typedef struct KafkaProperty
{
	const char *name;
	KappaKafkaPropClass class;
} KafkaProperty;

/*
 * The librdkafka (2.0) consumer properties pg_kappa knows, by class.
 * Properties absent from this table are KAFKA_PROP_SUPERUSER.
 */
static const KafkaProperty ko_properties[] = {
	/* tuning of connections, metadata and fetching */
	{"client.rack", KAFKA_PROP_SAFE},
	{"message.max.bytes", KAFKA_PROP_SAFE},
	{"receive.message.max.bytes", KAFKA_PROP_SAFE},
	{"max.in.flight.requests.per.connection", KAFKA_PROP_SAFE},
	{"max.in.flight", KAFKA_PROP_SAFE},
	{"topic.metadata.refresh.interval.ms", KAFKA_PROP_SAFE},
	{"metadata.max.age.ms", KAFKA_PROP_SAFE},
	{"topic.metadata.refresh.fast.interval.ms", KAFKA_PROP_SAFE},
	{"topic.metadata.refresh.sparse", KAFKA_PROP_SAFE},
	{"topic.metadata.propagation.max.ms", KAFKA_PROP_SAFE},
	{"socket.timeout.ms", KAFKA_PROP_SAFE},
	{"socket.send.buffer.bytes", KAFKA_PROP_SAFE},
	{"socket.receive.buffer.bytes", KAFKA_PROP_SAFE},
	{"socket.keepalive.enable", KAFKA_PROP_SAFE},
	{"socket.nagle.disable", KAFKA_PROP_SAFE},
	{"socket.max.fails", KAFKA_PROP_SAFE},
	{"broker.address.ttl", KAFKA_PROP_SAFE},
	{"broker.address.family", KAFKA_PROP_SAFE},
	{"socket.connection.setup.timeout.ms", KAFKA_PROP_SAFE},
	{"connections.max.idle.ms", KAFKA_PROP_SAFE},
	{"reconnect.backoff.jitter.ms", KAFKA_PROP_SAFE},
	{"reconnect.backoff.ms", KAFKA_PROP_SAFE},
	{"reconnect.backoff.max.ms", KAFKA_PROP_SAFE},
	{"api.version.request", KAFKA_PROP_SAFE},
	{"api.version.request.timeout.ms", KAFKA_PROP_SAFE},
	{"api.version.fallback.ms", KAFKA_PROP_SAFE},
	{"broker.version.fallback", KAFKA_PROP_SAFE},
	{"allow.auto.create.topics", KAFKA_PROP_SAFE},
	{"log.connection.close", KAFKA_PROP_SAFE},
	{"queued.min.messages", KAFKA_PROP_SAFE},
	{"queued.max.messages.kbytes", KAFKA_PROP_SAFE},
	{"fetch.wait.max.ms", KAFKA_PROP_SAFE},
	{"fetch.message.max.bytes", KAFKA_PROP_SAFE},
	{"max.partition.fetch.bytes", KAFKA_PROP_SAFE},
	{"fetch.max.bytes", KAFKA_PROP_SAFE},
	{"fetch.min.bytes", KAFKA_PROP_SAFE},
	{"fetch.error.backoff.ms", KAFKA_PROP_SAFE},
	{"isolation.level", KAFKA_PROP_SAFE},
	{"check.crcs", KAFKA_PROP_SAFE},
	/* security settings that name no file */
	{"security.protocol", KAFKA_PROP_SAFE},
	{"ssl.cipher.suites", KAFKA_PROP_SAFE},
	{"ssl.curves.list", KAFKA_PROP_SAFE},
	{"ssl.sigalgs.list", KAFKA_PROP_SAFE},
	{"enable.ssl.certificate.verification", KAFKA_PROP_SAFE},
	{"ssl.endpoint.identification.algorithm", KAFKA_PROP_SAFE},
	{"sasl.mechanisms", KAFKA_PROP_SAFE},
	{"sasl.mechanism", KAFKA_PROP_SAFE},
	{"sasl.kerberos.service.name", KAFKA_PROP_SAFE},
	{"sasl.kerberos.principal", KAFKA_PROP_SAFE},
	{"sasl.kerberos.min.time.before.relogin", KAFKA_PROP_SAFE},
	{"sasl.username", KAFKA_PROP_SAFE},
	{"enable.sasl.oauthbearer.unsecure.jwt", KAFKA_PROP_SAFE},
	{"sasl.oauthbearer.method", KAFKA_PROP_SAFE},
	{"sasl.oauthbearer.client.id", KAFKA_PROP_SAFE},
	{"sasl.oauthbearer.scope", KAFKA_PROP_SAFE},
	{"sasl.oauthbearer.extensions", KAFKA_PROP_SAFE},
	/* librdkafka's sensitive properties, and PEM data */
	{"sasl.password", KAFKA_PROP_SECRET},
	{"sasl.oauthbearer.client.secret", KAFKA_PROP_SECRET},
	{"sasl.oauthbearer.config", KAFKA_PROP_SECRET},
	{"ssl.key.password", KAFKA_PROP_SECRET},
	{"ssl.key.pem", KAFKA_PROP_SECRET},
	{"ssl.keystore.password", KAFKA_PROP_SECRET},
	{"ssl.certificate.pem", KAFKA_PROP_SECRET},
	{"ssl.ca.pem", KAFKA_PROP_SECRET},
	/* where the database server connects to */
	{"sasl.oauthbearer.token.endpoint.url", KAFKA_PROP_NETWORK},
	/* files of the database server */
	{"ssl.key.location", KAFKA_PROP_FILE},
	{"ssl.certificate.location", KAFKA_PROP_FILE},
	{"ssl.ca.location", KAFKA_PROP_FILE},
	{"ssl.ca.certificate.stores", KAFKA_PROP_FILE},
	{"ssl.crl.location", KAFKA_PROP_FILE},
	{"ssl.keystore.location", KAFKA_PROP_FILE},
	{"sasl.kerberos.keytab", KAFKA_PROP_FILE},
	/* programs the database server runs */
	{"sasl.kerberos.kinit.cmd", KAFKA_PROP_PROGRAM},
	/* code loaded into the server, and the server log */
	{"plugin.library.paths", KAFKA_PROP_SUPERUSER},
	{"ssl.engine.location", KAFKA_PROP_SUPERUSER},
	{"ssl.engine.id", KAFKA_PROP_SUPERUSER},
	{"ssl.providers", KAFKA_PROP_SUPERUSER},
	{"debug", KAFKA_PROP_SUPERUSER},
	{"log_level", KAFKA_PROP_SUPERUSER},
	/* what pg_kappa sets: offsets, assignment, logging, brokers */
	{"bootstrap.servers", KAFKA_PROP_RESERVED},
	{"metadata.broker.list", KAFKA_PROP_RESERVED},
	{"group.id", KAFKA_PROP_RESERVED},
	{"group.instance.id", KAFKA_PROP_RESERVED},
	{"client.id", KAFKA_PROP_RESERVED},
	{"enable.auto.commit", KAFKA_PROP_RESERVED},
	{"auto.commit.enable", KAFKA_PROP_RESERVED},
	{"enable.auto.offset.store", KAFKA_PROP_RESERVED},
	{"auto.offset.reset", KAFKA_PROP_RESERVED},
	{"offset.store.method", KAFKA_PROP_RESERVED},
	{"offset.store.path", KAFKA_PROP_RESERVED},
	{"log.queue", KAFKA_PROP_RESERVED},
	{"enable.partition.eof", KAFKA_PROP_RESERVED},
	{NULL, KAFKA_PROP_SUPERUSER}
};

/* Options that pg_kappa interprets itself, on a source; all others go to librdkafka. */
static const char *const ko_own_options[] = {
	"batch_size", "max_latency", "max_message_bytes", "batch_bytes",
	/* the schema registry of format avro (superusers; else the server's) */
	"schema_registry",
	/* new fields of Avro writer schemas: 'none' or 'add_columns' */
	"evolve",
	/* format options, read by the decoders */
	"strict", "delimiter", "quote", "escape", "header", "null", "encoding",
	"columns", "time_format",
	NULL
};

/*
 * ko_property_class returns the class of a librdkafka property (see
 * the file header).
 */
static KappaKafkaPropClass
ko_property_class(const char *name)
{
	for (int i = 0; ko_properties[i].name; i++)
		if (strcmp(name, ko_properties[i].name) == 0)
			return ko_properties[i].class;
	/* not in the table: secret by its name, else not known to be safe */
	if (ko_option_is_secret(name))
		return KAFKA_PROP_SECRET;
	return KAFKA_PROP_SUPERUSER;
}

/* The name of a class, as kappa.ko_properties() shows it. */
static const char *
ko_class_name(KappaKafkaPropClass class)
{
	switch (class)
	{
		case KAFKA_PROP_SAFE:
			return "safe";
		case KAFKA_PROP_SECRET:
			return "secret";
		case KAFKA_PROP_NETWORK:
			return "network";
		case KAFKA_PROP_FILE:
			return "file";
		case KAFKA_PROP_PROGRAM:
			return "program";
		case KAFKA_PROP_SUPERUSER:
			return "superuser";
		case KAFKA_PROP_RESERVED:
			return "reserved";
	}
	return "superuser";
}

/*
 * ko_option_is_secret tells whether an option's value must be hidden from
 * everyone but its owner: librdkafka's sensitive properties, and any name
 * with a part that says key, password, secret, token or pem.
 */
static bool
ko_option_is_secret(const char *key)
{
	static const char *const words[] = {"key", "password", "secret", "token", "pem", NULL};
	char	   *lower = asc_tolower(key, strlen(key));
	char	   *part;
	char	   *save = NULL;

	for (int i = 0; ko_properties[i].name; i++)
		if (ko_properties[i].class == KAFKA_PROP_SECRET &&
			strcmp(lower, ko_properties[i].name) == 0)
			return true;
	if (strstr(lower, "password") || strstr(lower, "secret") || strstr(lower, "token"))
		return true;
	for (part = strtok_r(lower, "._-", &save); part; part = strtok_r(NULL, "._-", &save))
		for (int i = 0; words[i]; i++)
			if (strcmp(part, words[i]) == 0)
				return true;
	return false;
}

/*
 * ko_option_is_kappa tells whether a source option is pg_kappa's own rather
 * than a librdkafka property.
 */
static bool
ko_option_is_kappa(const char *key)
{
	for (int i = 0; ko_own_options[i]; i++)
		if (strcmp(key, ko_own_options[i]) == 0)
			return true;
	return false;
}

static const char *
ko_level_name(KappaOptionLevel level)
{
	switch (level)
	{
		case KAPPA_LEVEL_SERVER:
			return "server";
		case KAPPA_LEVEL_USER_MAPPING:
			return "user mapping";
		case KAPPA_LEVEL_SOURCE:
			return "source";
	}
	return "source";
}

/*
 * The properties of the installed librdkafka, from its own table
 * (rd_kafka_conf_properties_show), read once per backend: settable ones
 * only (not callbacks and pointers), each name once.
 */
static List *
ko_property_names(void)
{
	static List *names = NIL;
	static bool done = false;
	char	   *text = NULL;
	size_t		len = 0;
	FILE	   *out;
	char	   *line;
	char	   *save = NULL;
	MemoryContext old;

	if (done)
		return names;
	out = open_memstream(&text, &len);
	if (out == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not list librdkafka's properties: %m")));
	rd_kafka_conf_properties_show(out);
	fclose(out);

	old = MemoryContextSwitchTo(TopMemoryContext);
	/* rows of librdkafka's table: name | C/P | range | default | ... */
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
	{
		char	   *bar = strchr(line, '|');
		char	   *name;
		ListCell   *lc;
		bool		dup = false;

		if (bar == NULL || !(line[0] >= 'a' && line[0] <= 'z') ||
			strstr(line, "*Type: pointer*") != NULL ||
			strstr(line, "*Type: see dedicated API*") != NULL)
			continue;
		name = pnstrdup(line, bar - line);
		for (char *p = name + strlen(name) - 1; p >= name && *p == ' '; p--)
			*p = '\0';
		foreach(lc, names)
		{
			if (strcmp(lfirst(lc), name) == 0)
				dup = true;
		}
		if (!dup)
			names = lappend(names, name);
	}
	MemoryContextSwitchTo(old);
	free(text);
	done = true;
	return names;
}

/* Does the installed librdkafka know property 'name'? */
static bool
ko_property_known(const char *name)
{
	ListCell   *lc;

	foreach(lc, ko_property_names())
	{
		if (strcmp(lfirst(lc), name) == 0)
			return true;
	}
	return false;
}

/*
 * ko_check_property raises an error unless role 'role' may set
 * librdkafka property 'name' at 'level' (see the file header).  'value' is
 * checked with librdkafka; the value of a secret never appears in a
 * message.
 */
static void
ko_check_property(const char *name, const char *value,
				  KappaOptionLevel level, Oid role)
{
	KappaKafkaPropClass class = ko_property_class(name);
	rd_kafka_conf_t *conf;
	char		errstr[512];
	rd_kafka_conf_res_t res;

	switch (class)
	{
		case KAFKA_PROP_SAFE:
			break;
		case KAFKA_PROP_SECRET:
			if (level != KAPPA_LEVEL_USER_MAPPING)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("Kafka property \"%s\" is a secret and cannot be a %s option",
								name, ko_level_name(level)),
						 errdetail("%s options are readable by other roles or written to dumps.",
								   level == KAPPA_LEVEL_SERVER ? "Server" : "Source"),
						 errhint("Give it in a user mapping: CREATE USER MAPPING FOR role SERVER server OPTIONS (\"%s\" '...').",
								 name)));
			break;
		case KAFKA_PROP_NETWORK:
			if (level != KAPPA_LEVEL_SERVER)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("Kafka property \"%s\" can only be a server option", name),
						 errdetail("It decides where the database server connects to."),
						 errhint("Set it on the kappa_kafka server (CREATE or ALTER SERVER).")));
			break;
		case KAFKA_PROP_FILE:
			if (!superuser_arg(role) &&
				!has_privs_of_role(role, ROLE_PG_READ_SERVER_FILES))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to set Kafka property \"%s\"", name),
						 errdetail("It names a file of the database server."),
						 errhint("Only superusers and members of pg_read_server_files may set it; give the content instead where librdkafka has a *.pem property.")));
			break;
		case KAFKA_PROP_PROGRAM:
			if (!superuser_arg(role) &&
				!has_privs_of_role(role, ROLE_PG_EXECUTE_SERVER_PROGRAM))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to set Kafka property \"%s\"", name),
						 errdetail("It runs a program on the database server."),
						 errhint("Only superusers and members of pg_execute_server_program may set it.")));
			break;
		case KAFKA_PROP_SUPERUSER:
			if (!superuser_arg(role))
			{
				/*
				 * A typo is a typo: ask librdkafka whether it knows the name
				 * -- by reading it, since setting some (plugin.library.paths)
				 * already loads code.
				 */
				if (!ko_property_known(name))
				{
					/* unknown to librdkafka: setting it does nothing */
					conf = rd_kafka_conf_new();
					res = rd_kafka_conf_set(conf, name, value ? value : "", errstr, sizeof(errstr));
					rd_kafka_conf_destroy(conf);
					ereport(ERROR,
							(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
							 errmsg("unknown Kafka property \"%s\"", name),
							 errdetail_internal("%s", errstr),
							 errhint("See kappa.ko_properties() for the properties and who may set them.")));
				}
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to set Kafka property \"%s\"", name),
						 errdetail("It loads code into the database server, writes to its log, or is not known to be safe."),
						 errhint("Only superusers may set it; kappa.ko_properties() lists the properties others may set.")));
			}
			break;
		case KAFKA_PROP_RESERVED:
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("Kafka property \"%s\" is set by pg_kappa", name),
					 errhint("Give the brokers with the server's brokers option; offsets are kept by pg_kappa, not committed to Kafka.")));
			break;
	}

	/* the value, as librdkafka sees it */
	conf = rd_kafka_conf_new();
	res = rd_kafka_conf_set(conf, name, value ? value : "", errstr, sizeof(errstr));
	rd_kafka_conf_destroy(conf);
	if (res == RD_KAFKA_CONF_UNKNOWN)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("unknown Kafka property \"%s\"", name),
				 errdetail_internal("%s", errstr),
				 errhint("Options are librdkafka properties (see kappa.ko_properties()) or one of pg_kappa's.")));
	if (res != RD_KAFKA_CONF_OK)
	{
		if (ko_option_is_secret(name))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid value for Kafka property \"%s\"", name)));
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid value for Kafka property \"%s\"", name),
				 errdetail_internal("%s", errstr)));
	}
}

/*
 * ko_registry_option tells whether an option of a server or user mapping is
 * one of the schema registry's rather than a librdkafka property:
 * schema_registry (the URL; server only, it decides where the database
 * server connects to), schema_registry.username (server or user mapping)
 * and schema_registry.password (a secret: user mapping only).
 */
static bool
ko_registry_option(const char *name)
{
	return strcmp(name, "schema_registry") == 0 ||
		strcmp(name, "schema_registry.username") == 0 ||
		strcmp(name, "schema_registry.password") == 0;
}

/*
 * ko_check_registry_url raises an error unless 'url' is an http or https
 * URL: nothing else may reach libcurl, which also speaks file:// and more.
 */
static void
ko_check_registry_url(const char *url)
{
	if (pg_strncasecmp(url, "http://", 7) != 0 &&
		pg_strncasecmp(url, "https://", 8) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("option \"schema_registry\" must be an http or https URL"),
				 errhint("Give the registry's base URL, e.g. 'http://registry:8081'.")));
}

/*
 * ko_check_registry_option raises an error unless registry option 'name'
 * may be set at 'level' (see ko_registry_option).
 */
static void
ko_check_registry_option(const char *name, const char *value,
						 KappaOptionLevel level)
{
	if (strcmp(name, "schema_registry") == 0)
	{
		if (level != KAPPA_LEVEL_SERVER)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("option \"schema_registry\" can only be a server option"),
					 errdetail("It decides where the database server connects to."),
					 errhint("Set it on the kappa_kafka server (CREATE or ALTER SERVER).")));
		ko_check_registry_url(value);
	}
	else if (strcmp(name, "schema_registry.password") == 0 &&
			 level != KAPPA_LEVEL_USER_MAPPING)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("option \"%s\" is a secret and cannot be a %s option",
						name, ko_level_name(level)),
				 errdetail("Server options are readable by other roles."),
				 errhint("Give it in a user mapping: CREATE USER MAPPING FOR role SERVER server OPTIONS (\"%s\" '...').",
						 name)));
}

/*
 * kappa.kafka_fdw_validator(options, catalog): the validator of the
 * kappa_kafka wrapper.  A server takes 'brokers' and librdkafka properties,
 * a user mapping takes librdkafka properties (its place for secrets); the
 * wrapper itself and foreign tables take nothing.
 */
Datum
kappa_kafka_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	ListCell   *lc;
	bool		brokers = false;

	if (catalog == ForeignTableRelationId)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("kappa_kafka servers have no foreign tables"),
				 errhint("Consume a topic into a stream or a table with kappa.create_kafka_source().")));
	if (catalog == ForeignDataWrapperRelationId)
	{
		if (options != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", ((DefElem *) linitial(options))->defname),
					 errhint("The kappa_kafka wrapper takes no options; give them to its servers.")));
		PG_RETURN_VOID();
	}

	foreach(lc, options)
	{
		DefElem    *def = lfirst(lc);
		char	   *value = defGetString(def);

		if (strcmp(def->defname, "brokers") == 0)
		{
			if (catalog != ForeignServerRelationId)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("option \"brokers\" belongs to the server"),
						 errhint("Set it with CREATE or ALTER SERVER.")));
			if (value[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
						 errmsg("option \"brokers\" must not be empty"),
						 errhint("Give the bootstrap brokers as host:port[,host:port...].")));
			brokers = true;
			continue;
		}
		if (ko_registry_option(def->defname))
		{
			ko_check_registry_option(def->defname, value,
									 catalog == ForeignServerRelationId ?
									 KAPPA_LEVEL_SERVER : KAPPA_LEVEL_USER_MAPPING);
			continue;
		}
		if (ko_option_is_kappa(def->defname))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("option \"%s\" belongs to a source", def->defname),
					 errhint("Give it in the options of kappa.create_kafka_source().")));
		ko_check_property(def->defname, value,
						  catalog == ForeignServerRelationId ?
						  KAPPA_LEVEL_SERVER : KAPPA_LEVEL_USER_MAPPING,
						  GetUserId());
	}
	if (catalog == ForeignServerRelationId && !brokers)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("a kappa_kafka server needs the option \"brokers\""),
				 errhint("CREATE SERVER name FOREIGN DATA WRAPPER kappa_kafka OPTIONS (brokers 'host:port').")));
	PG_RETURN_VOID();
}

/*
 * KappaKafkaServer looks up a kappa_kafka server by name: its OID and
 * brokers.  Raises an error if it does not exist or belongs to another
 * wrapper.
 */
ForeignServer *
KappaKafkaServer(const char *name)
{
	ForeignServer *server = GetForeignServerByName(name, false);
	ForeignDataWrapper *fdw = GetForeignDataWrapper(server->fdwid);

	if (strcmp(fdw->fdwname, KAPPA_KAFKA_FDW_NAME) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("server \"%s\" is not a Kafka server", name),
				 errdetail("It belongs to foreign-data wrapper \"%s\".", fdw->fdwname),
				 errhint("Create one with CREATE SERVER ... FOREIGN DATA WRAPPER %s OPTIONS (brokers '...').",
						 KAPPA_KAFKA_FDW_NAME)));
	return server;
}

/*
 * The options of the user mapping of 'role' (or else PUBLIC) on 'serverid',
 * or NIL if there is none: a cluster without authentication needs none.
 */
static List *
ko_user_mapping_options(Oid role, Oid serverid)
{
	HeapTuple	mapping;
	Datum		datum;
	bool		isnull;
	List	   *options = NIL;

	mapping = SearchSysCache2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(role),
							  ObjectIdGetDatum(serverid));
	if (!HeapTupleIsValid(mapping))
		mapping = SearchSysCache2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(InvalidOid),
								  ObjectIdGetDatum(serverid));
	if (!HeapTupleIsValid(mapping))
		return NIL;
	datum = SysCacheGetAttr(USERMAPPINGUSERSERVER, mapping, Anum_pg_user_mapping_umoptions,
							&isnull);
	if (!isnull)
		options = untransformRelOptions(datum);
	ReleaseSysCache(mapping);
	return options;
}

/*
 * ko_jsonb_scalar_text returns a scalar jsonb value as text (strings
 * without quotes), or NULL for null, objects and arrays.
 */
static char *
ko_jsonb_scalar_text(JsonbValue *v)
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
		default:
			return NULL;
	}
}

/*
 * KappaSourceOptionList returns a source's options as a list of DefElem, in
 * their order, each with its value as text (a String), or with no value
 * (arg NULL) for null, objects and arrays.
 */
List *
KappaSourceOptionList(KappaSource *source)
{
	List	   *result = NIL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	if (source->options == NULL || !JB_ROOT_IS_OBJECT(source->options))
		return NIL;
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
		value = ko_jsonb_scalar_text(&v);
		result = lappend(result, makeDefElem(key, value ? (Node *) makeString(value) : NULL, -1));
	}
	return result;
}

/*
 * ko_source_kafka_options returns the librdkafka properties among a
 * source's options (KappaSourceOptionList); raises an error for a value
 * that is not a scalar.
 */
static List *
ko_source_kafka_options(KappaSource *source)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, KappaSourceOptionList(source))
	{
		DefElem    *def = lfirst(lc);

		if (ko_option_is_kappa(def->defname))
			continue;
		if (def->arg == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" must be a string, a number or a boolean", def->defname)));
		result = lappend(result, def);
	}
	return result;
}

/*
 * KappaCheckSourceOptions raises an error unless 'role' may give each
 * librdkafka property among the source's own options.
 */
void
KappaCheckSourceOptions(KappaSource *source, Oid role)
{
	ListCell   *lc;

	foreach(lc, KappaSourceOptionList(source))
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "schema_registry") != 0)
			continue;
		if (def->arg == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"schema_registry\" must be a string")));
		if (!superuser_arg(role))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to set option \"schema_registry\" on a source"),
					 errdetail("It decides where the database server connects to."),
					 errhint("Set it on the source's kappa_kafka server instead.")));
		ko_check_registry_url(strVal(def->arg));
	}

	foreach(lc, ko_source_kafka_options(source))
	{
		DefElem    *def = lfirst(lc);

		ko_check_property(def->defname, strVal(def->arg), KAPPA_LEVEL_SOURCE, role);
	}
}

/*
 * Set one librdkafka property, raising a clear error when librdkafka
 * refuses it (the value of a secret is never shown).
 */
static void
ko_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
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
				 errmsg("unknown Kafka property \"%s\"", key),
				 errdetail_internal("%s", errstr)));
	if (ko_option_is_secret(key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for Kafka property \"%s\"", key)));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for Kafka property \"%s\"", key),
			 errdetail_internal("%s", errstr)));
}

/* Set every property of a DefElem list (options of a server or mapping). */
static void
ko_conf_set_all(rd_kafka_conf_t *conf, List *options)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "brokers") == 0 || ko_registry_option(def->defname))
			continue;
		ko_conf_set(conf, def->defname, defGetString(def));
	}
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

				skip = !ko_option_is_kappa(key) ||
					strcmp(key, "schema_registry") == 0 ||
					strcmp(key, "evolve") == 0 ||
					strcmp(key, "batch_size") == 0 ||
					strcmp(key, "max_latency") == 0 ||
					strcmp(key, "batch_bytes") == 0 ||
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
 * KappaSourceBatchSize, KappaSourceMaxLatency and KappaSourceBatchBytes
 * return the bounds of a source's batches: the source's option if it has
 * one, else the setting (kappa.batch_size, kappa.max_latency in
 * milliseconds, kappa.batch_bytes in bytes) as it is now.
 */
int
KappaSourceBatchSize(KappaSource *source)
{
	return source->batch_size > 0 ? source->batch_size : kappa_batch_size;
}

int
KappaSourceMaxLatency(KappaSource *source)
{
	return source->max_latency_ms > 0 ? source->max_latency_ms : kappa_max_latency_ms;
}

int64
KappaSourceBatchBytes(KappaSource *source)
{
	return source->batch_bytes > 0 ? source->batch_bytes :
		(int64) kappa_batch_bytes_kb * 1024;
}

/*
 * KappaKafkaConfBuild returns a new rd_kafka_conf_t * for a consumer of the
 * source: pg_kappa's defaults, then the properties of its server, of its
 * owner's user mapping there and of the source itself (later ones win),
 * then the properties the workers rely on.  Raises an error for a property
 * librdkafka refuses.  The caller owns the result (rd_kafka_new takes it
 * over).
 */
void *
KappaKafkaConfBuild(KappaSource *source)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		client_id[NAMEDATALEN + 16];
	const char *brokers = source->brokers;

	snprintf(client_id, sizeof(client_id), "pg_kappa-%s", source->name);
	ko_conf_set(conf, "client.id", client_id);
	/* the consumer queue needs a group; it never joins or commits (assign) */
	ko_conf_set(conf, "group.id", client_id);
	ko_conf_set(conf, "topic.metadata.refresh.interval.ms", "10000");
	ko_conf_set(conf, "reconnect.backoff.max.ms", "2000");

	/*
	 * All partitions share one consumer queue; librdkafka 2.0.2 stops
	 * fetching every partition for a while (up to ~1 s) whenever that queue
	 * holds queued.min.messages (default 100000) or
	 * queued.max.messages.kbytes.  Let the byte limit bound prefetching: the
	 * worker wakes the fetcher whenever it has taken half of it out of the
	 * queue (kc_wake_fetcher in kafka_consumer.c), which the message count
	 * would not tell it. With that, 16 MB prefetch as fast as 64 MB
	 * (librdkafka's default) on bench/kafka_bench.sh and cost a quarter of
	 * the memory.
	 */
	ko_conf_set(conf, "queued.min.messages", "10000000");
	ko_conf_set(conf, "queued.max.messages.kbytes", "16384");

	/*
	 * A fetch that finds no new data waits up to fetch.wait.max.ms (500 ms by
	 * default) on the broker.  Brokers that do not answer as soon as data
	 * arrives (the mock cluster, some proxies) then add that wait to every
	 * message's latency; keep it to half the batch latency bound.
	 */
	{
		int			latency = KappaSourceMaxLatency(source);
		char		buf[32];

		snprintf(buf, sizeof(buf), "%d", Max(Min(latency / 2, 500), 5));
		ko_conf_set(conf, "fetch.wait.max.ms", buf);
	}

	if (source->server != NULL)
	{
		ForeignServer *server = KappaKafkaServer(source->server);
		ListCell   *lc;

		foreach(lc, server->options)
		{
			DefElem    *def = lfirst(lc);

			if (strcmp(def->defname, "brokers") == 0)
				brokers = defGetString(def);
		}
		ko_conf_set_all(conf, server->options);
		ko_conf_set_all(conf, ko_user_mapping_options(source->owner, server->serverid));
	}
	ko_conf_set_all(conf, ko_source_kafka_options(source));

	if (brokers == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("kafka source \"%s\" has no brokers", source->name)));
	ko_conf_set(conf, "bootstrap.servers", brokers);
	ko_conf_set(conf, "enable.auto.commit", "false");
	ko_conf_set(conf, "enable.auto.offset.store", "false");
	/* a stored offset the broker no longer holds is reported, not skipped */
	ko_conf_set(conf, "auto.offset.reset", "error");
	ko_conf_set(conf, "log.queue", "true");
	return conf;
}

/*
 * KappaRegistryOptions returns where a source's schema registry is (the
 * source's option schema_registry, else its server's; NULL if neither has
 * one) and the credentials of the source owner's user mapping (or the
 * server's username).  Raises an error for a URL that is not http(s).
 */
void
KappaRegistryOptions(KappaSource *source, char **url, char **username,
					 char **password)
{
	ListCell   *lc;

	*url = *username = *password = NULL;
	if (source->server != NULL)
	{
		ForeignServer *server = KappaKafkaServer(source->server);
		List	   *levels[2];

		levels[0] = server->options;
		levels[1] = ko_user_mapping_options(source->owner, server->serverid);
		for (int l = 0; l < 2; l++)
		{
			foreach(lc, levels[l])
			{
				DefElem    *def = lfirst(lc);

				if (strcmp(def->defname, "schema_registry") == 0 && l == 0)
					*url = defGetString(def);
				else if (strcmp(def->defname, "schema_registry.username") == 0)
					*username = defGetString(def);
				else if (strcmp(def->defname, "schema_registry.password") == 0 && l == 1)
					*password = defGetString(def);
			}
		}
	}
	foreach(lc, KappaSourceOptionList(source))
	{
		DefElem    *def = lfirst(lc);

		if (strcmp(def->defname, "schema_registry") == 0 && def->arg != NULL)
			*url = strVal(def->arg);
	}
	if (*url != NULL)
		ko_check_registry_url(*url);
}

/*
 * kappa.ko_properties() lists every property the installed librdkafka
 * knows, with its class (who may set it where, see the file header) and
 * whether its value is hidden as a secret.  Properties set only through
 * librdkafka's C API (callbacks, pointers) are left out.
 */
Datum
kappa_kafka_properties(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach(lc, ko_property_names())
	{
		const char *name = lfirst(lc);
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(name);
		values[1] = CStringGetTextDatum(ko_class_name(ko_property_class(name)));
		values[2] = BoolGetDatum(ko_option_is_secret(name));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * kappa.option_is_secret(name) tells whether the value of a source option
 * named so is hidden from other roles (ko_option_is_secret).
 */
Datum
kappa_option_is_secret(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ko_option_is_secret(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}
