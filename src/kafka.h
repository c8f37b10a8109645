/*-------------------------------------------------------------------------
 *
 * kafka.h
 *	  Kafka ingestion: sources, workers, the launcher and message decoders.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_KAFKA_H
#define KAPPA_KAFKA_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "utils/jsonb.h"

/* What a worker does when the broker no longer holds unread messages. */
typedef enum KappaDataLossPolicy
{
	KAPPA_DATA_LOSS_FAIL,		/* stop, naming the missing range */
	KAPPA_DATA_LOSS_RECORD		/* record the gap in kappa.errors, go on */
} KappaDataLossPolicy;

/*
 * A Kafka source as stored in kappa.source_catalog, with its options split
 * into librdkafka properties and pg_kappa's own (batch bounds, format
 * options).  A source names a kappa_kafka server, or (superusers only)
 * gives its brokers directly.
 */
typedef struct KappaSource
{
	int32		id;
	char	   *name;
	Oid			owner;
	Oid			target;
	char	   *topic;
	char	   *server;			/* a kappa_kafka server, or NULL */
	char	   *brokers;		/* or brokers, when server is NULL */
	char	   *format;
	char	   *start;
	KappaDataLossPolicy onDataLoss;
	int32		parallelism;
	Jsonb	   *options;		/* as given by the user */
	bool		paused;
	int			batch_size;		/* option batch_size, or -1: the GUC */
	int			max_latency_ms; /* option max_latency, or -1: the GUC */
	int64		batch_bytes;	/* option batch_bytes, or -1: the GUC */
} KappaSource;

/* Arguments of a source worker, carried in bgw_extra. */
typedef struct KappaWorkerArgs
{
	Oid			dboid;
	Oid			owner;
	int32		source_id;
	int32		slot;
	bool		managed;		/* started by the launcher */
} KappaWorkerArgs;

#define KAPPA_WORKER_TYPE		"pg_kappa worker"
#define KAPPA_LAUNCHER_TYPE		"pg_kappa launcher"
#define KAPPA_SCANNER_TYPE		"pg_kappa scanner"

/* in launcher.c */
extern void KappaKafkaPreloadInit(void);
extern bool KappaLauncherActive(void);
extern void KappaLauncherWake(void);
extern bool KappaStartWorker(const KappaWorkerArgs *args, const char *source_name,
							 bool restart_on_exit, void **handle);
extern PGDLLEXPORT void KappaLauncherMain(Datum arg);
extern PGDLLEXPORT void KappaScannerMain(Datum arg);

#define KAPPA_KAFKA_FDW_NAME	"kappa_kafka"

/* in kafka_source.c */
extern KappaSource *KappaSourceLoad(int32 source_id, bool missing_ok);
extern int	KappaSourceMaxMessageBytes(KappaSource *source);
extern Jsonb *KappaFormatOptions(KappaSource *source);
extern bool KappaExtensionUpToDate(void);

/* in kafka_options.c: who may set which librdkafka property where */
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

struct ForeignServer;
extern KappaKafkaPropClass KappaKafkaPropertyClass(const char *name);
extern bool KappaOptionIsSecret(const char *key);
extern bool KappaOptionIsKappa(const char *key);
extern void KappaCheckKafkaProperty(const char *name, const char *value,
									KappaOptionLevel level, Oid role);
extern void KappaCheckSourceOptions(KappaSource *source, Oid role);
extern List *KappaSourceOptionList(KappaSource *source);
extern List *KappaSourceKafkaOptions(KappaSource *source);
extern struct ForeignServer *KappaKafkaServer(const char *name);
extern char *KappaJsonbScalarText(JsonbValue *v);
extern void *KappaKafkaConfBuild(KappaSource *source);

/* in kafka_worker.c */
extern PGDLLEXPORT void KappaKafkaWorkerMain(Datum arg);

/* in decode.c */
typedef enum KappaFormat
{
	KAPPA_FORMAT_JSON,
	KAPPA_FORMAT_CSV,
	KAPPA_FORMAT_TEXT,
	KAPPA_FORMAT_BYTEA
} KappaFormat;

/* Coordinates and metadata of one Kafka message. */
typedef struct KappaMessageMeta
{
	const char *key;			/* NULL if the message has no key */
	size_t		keylen;
	int32		partition;
	int64		offset;
	int64		timestamp_ms;	/* -1 if unknown */
	void	   *headers;		/* rd_kafka_headers_t *, or NULL */
} KappaMessageMeta;

typedef struct KappaDecoder KappaDecoder;

/*
 * KappaParseFormat maps a format name to KappaFormat, raising a clear error
 * for an unknown one.
 */
extern KappaFormat KappaParseFormat(const char *name);

/*
 * KappaDecoderCreate prepares decoding of messages into rows of 'tupdesc'.
 * 'options' holds format options (e.g. csv delimiter, quote, header; json
 * strict) and may be NULL.  Raises an error at creation when a column of the
 * target cannot be filled by the format (the check create_kafka_source runs).
 * Everything is allocated in the current memory context.
 */
extern KappaDecoder *KappaDecoderCreate(KappaFormat format, TupleDesc tupdesc,
										Jsonb *options);

/*
 * KappaDecode decodes one message payload into values/nulls (arrays of
 * tupdesc->natts), filling the kafka_* metadata columns from 'meta'.  Missing
 * fields give the column default or NULL.  A message that cannot be decoded
 * raises an ERROR (errcode and errmsg say why); the caller isolates it.
 * Allocates in the current memory context.
 */
extern void KappaDecode(KappaDecoder *decoder, const char *payload, size_t len,
						const KappaMessageMeta *meta,
						Datum *values, bool *nulls);

/*
 * KappaDecoderUsesTimeAndHeaders tells whether the target has a
 * kafka_timestamp or kafka_headers column, i.e. whether KappaDecode reads
 * meta->timestamp_ms and meta->headers (the caller may leave them unset
 * otherwise).
 */
extern bool KappaDecoderUsesTimeAndHeaders(KappaDecoder *decoder);

#endif							/* KAPPA_KAFKA_H */
