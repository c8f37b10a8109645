/*-------------------------------------------------------------------------
 *
 * kafka.h
 *	  Kafka ingestion: sources, workers, the launcher and message decoders.
 *
 * A source worker is four files, called in one direction only:
 * kafka_worker.c (the loop: modes, start, stop, privilege rechecks) calls
 * kafka_consumer.c (the librdkafka handle, assignment, watermarks, polling),
 * kafka_apply.c (one batch in one transaction) and kafka_status.c (rates,
 * errors, status rows); kafka_apply.c calls the consumer and the status,
 * kafka_consumer.c the status, and kafka_status.c neither.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_KAFKA_H
#define KAPPA_KAFKA_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "nodes/execnodes.h"
#include "nodes/params.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

/* What a worker does when the broker no longer holds unread messages. */
typedef enum KappaDataLossPolicy
{
	KAPPA_DATA_LOSS_FAIL,		/* stop, naming the missing range */
	KAPPA_DATA_LOSS_RECORD		/* record the gap in kappa.errors, go on */
} KappaDataLossPolicy;

/*
 * How a source's messages change its target (create_kafka_source's
 * envelope): 'none' appends every message as a row; 'upsert' and
 * 'debezium' read keyed changelogs into a table with a primary key.
 */
typedef enum KappaEnvelope
{
	KAPPA_ENVELOPE_NONE,
	KAPPA_ENVELOPE_UPSERT,		/* key = primary key, value = the row, a null
								 * value (tombstone) deletes the key */
	KAPPA_ENVELOPE_DEBEZIUM		/* Debezium change events (op c/r/u/d/t) */
} KappaEnvelope;

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
	KappaEnvelope envelope;
	char	   *key_format;		/* keys of 'upsert' and 'debezium' */
	char	   *order_by;		/* path of the ordering guard, or NULL */
	char	   *start;
	KappaDataLossPolicy onDataLoss;
	int32		parallelism;
	Jsonb	   *options;		/* as given by the user */
	bool		paused;
	int			batch_size;		/* option batch_size, or -1: the GUC */
	int			max_latency_ms; /* option max_latency, or -1: the GUC */
	int64		batch_bytes;	/* option batch_bytes, or -1: the GUC */
	int			max_message_bytes;	/* option max_message_bytes, or Kafka's
									 * default */
	bool		evolve_add_columns; /* option evolve: 'add_columns' */
} KappaSource;

/* Arguments of a source worker, carried in bgw_extra. */
typedef struct KappaWorkerArgs
{
	Oid			dboid;
	Oid			owner;
	int32		source_id;
	int32		slot;
	bool		managed;		/* started by the launcher */
	int32		rebuild_id;		/* a rebuild worker (view_rebuild.c) for this
								 * kappa.view_rebuilds row -- with source_id,
								 * its replay worker for that source; else 0 */
} KappaWorkerArgs;

#define KAPPA_WORKER_TYPE		"pg_kappa worker"
#define KAPPA_LAUNCHER_TYPE		"pg_kappa launcher"
#define KAPPA_SCANNER_TYPE		"pg_kappa scanner"
#define KAPPA_REBUILD_TYPE		"pg_kappa rebuild"
#define KAPPA_REPLAY_TYPE		"pg_kappa replay"

/* in launcher.c */
extern void KappaKafkaPreloadInit(void);
extern bool KappaLauncherActive(void);
extern void KappaLauncherWake(void);
extern bool KappaStartWorker(const KappaWorkerArgs *args, const char *source_name,
							 bool restart_on_exit, void **handle);
extern void KappaStartWorkerAtCommit(const KappaWorkerArgs *args);
extern PGDLLEXPORT void KappaLauncherMain(Datum arg);
extern PGDLLEXPORT void KappaScannerMain(Datum arg);

#define KAPPA_KAFKA_FDW_NAME	"kappa_kafka"

/* in kafka_source.c */
extern KappaSource *KappaSourceLoad(int32 source_id, bool missing_ok);
extern KappaSource *KappaSourceLookupForChange(const char *name);

/* in kafka_options.c */
struct ForeignServer;
extern void KappaCheckSourceOptions(KappaSource *source, Oid role);
extern List *KappaSourceOptionList(KappaSource *source);
extern struct ForeignServer *KappaKafkaServer(const char *name);
extern Jsonb *KappaFormatOptions(KappaSource *source);
extern int	KappaSourceBatchSize(KappaSource *source);
extern int	KappaSourceMaxLatency(KappaSource *source);
extern int64 KappaSourceBatchBytes(KappaSource *source);
extern void *KappaKafkaConfBuild(KappaSource *source);
extern void KappaRegistryOptions(KappaSource *source, char **url,
								 char **username, char **password);

/* in kafka_worker.c */
extern PGDLLEXPORT void KappaKafkaWorkerMain(Datum arg);

/*
 * What a worker shows as its state in kappa.sources (kafka_status.c keeps
 * it and writes its name).
 */
typedef enum KappaWorkerState
{
	KAPPA_WORKER_STARTING,
	KAPPA_WORKER_RUNNING,
	KAPPA_WORKER_PAUSED,
	KAPPA_WORKER_WAITING,		/* for the topic to exist */
	KAPPA_WORKER_RETRYING,		/* after an error of the broker */
	KAPPA_WORKER_FAILED			/* see last_error */
} KappaWorkerState;

/*
 * What a worker knows of one partition of its topic.  kafka_consumer.c
 * keeps the table (KappaConsumerPartitions); the others only read it.
 */
typedef struct KappaPartition
{
	bool		exists;			/* the topic has it */
	bool		mine;			/* partition % parallelism == slot */
	bool		assigned;		/* given to librdkafka */
	bool		lost;			/* the broker no longer holds its next offset */
	int64		committed;		/* next offset, as stored */
	bool		positioned;		/* committed is known (it was assigned) */
	int64		hwm;			/* high watermark, -1 if unknown */
	int64		polled_next;	/* next offset after the last one polled */
} KappaPartition;

/* What KappaConsumerHandleDataLoss leaves the worker to do. */
typedef enum KappaDataLossResult
{
	KAPPA_LOSS_HANDLED,			/* gaps recorded, or to be retried later */
	KAPPA_LOSS_FAILED,			/* the source must fail: the status says why */
	KAPPA_LOSS_CONFLICT			/* a stored offset changed under the worker */
} KappaDataLossResult;

struct rd_kafka_message_s;
struct rd_kafka_s;

/* in kafka_consumer.c */
extern void KappaConsumerInit(KappaSource *source, int slot, MemoryContext cxt);
extern void KappaConsumerCreate(void);
extern void KappaConsumerRefreshAssignment(bool consuming);
extern TimestampTz KappaConsumerNextRefresh(void);
extern void KappaConsumerRefreshSoon(void);
extern void KappaConsumerUnassignAll(void);
extern bool KappaConsumerPoll(int batch_size, int64 batch_bytes,
							  int max_latency_ms);
extern int	KappaConsumerPending(void);
extern TimestampTz KappaConsumerBatchDeadline(void);
extern struct rd_kafka_message_s **KappaConsumerBatch(int *nmsgs);
extern void KappaConsumerBatchCommitted(const int64 *next);
extern void KappaConsumerRewind(TimestampTz resume);
extern bool KappaConsumerOffsetsMoved(bool held_only);
extern bool KappaConsumerCaughtUp(void);
extern bool KappaConsumerAnyLost(void);
extern KappaDataLossResult KappaConsumerHandleDataLoss(int *partition);
extern void KappaConsumerRefreshWatermarks(void);
extern void KappaConsumerRefreshAllWatermarks(void);
extern const KappaPartition *KappaConsumerPartitions(int *nparts,
													 int *topic_partitions);
extern int	KappaConsumerEventFd(void);
extern void KappaKafkaWakeFetcher(struct rd_kafka_s *rk, const char *topic,
								  const bool *assigned, int nparts);
extern int64 KappaKafkaWakeBytes(struct rd_kafka_s *rk);
extern void KappaConsumerDrainEvents(void);

/* in kafka_rewind.c */
extern void KappaKafkaLogBounds(KappaSource *source, bool haveTime, TimestampTz time,
								int *n, int64 **starts, int64 **ends);

/* in kafka_replay.c */
extern void KappaReplaySource(int32 rebuild_id, int32 source_id, Oid building_mat);

/* in kafka_apply.c */
extern void KappaApplyInit(KappaSource *source, MemoryContext parent);
extern bool KappaApplyMessages(void);
extern void KappaApplyReplayInit(KappaSource *source, int32 rebuildId,
								 Oid buildingMat, MemoryContext parent);
extern bool KappaApplyReplay(struct rd_kafka_message_s **msgs, int nmsgs,
							 const int64 *from, int64 *next, int nparts);

/* in kafka_status.c */
extern void KappaStatusInit(KappaSource *source, int slot);
extern void KappaStatusStarting(void);
extern void KappaStatusSetState(KappaWorkerState state);
extern void KappaStatusSetError(KappaWorkerState state, const char *fmt,...)
			pg_attribute_printf(2, 3);
extern void KappaStatusForgetError(void);
extern void KappaStatusBatch(int64 messages, int64 bytes, int64 dead,
							 int64 out_of_order, int64 drift);
extern void KappaStatusBatchCommitted(void);
extern void KappaStatusSchemas(List *schema_ids, int32 last_schema_id);
extern bool KappaStatusFlushDue(TimestampTz now);
extern void KappaStatusFlush(const KappaPartition *parts, int nparts,
							 int topic_partitions);

/* in decode.c */
typedef enum KappaFormat
{
	KAPPA_FORMAT_JSON,
	KAPPA_FORMAT_CSV,
	KAPPA_FORMAT_TEXT,
	KAPPA_FORMAT_BYTEA,
	KAPPA_FORMAT_AVRO			/* Confluent wire format, schema registry */
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
 * raises an ERROR (errcode and errmsg say why) whose CONTEXT line names the
 * message (partition, offset) and the field and value being converted; the
 * caller isolates it.  Allocates in the current memory context.
 */
extern void KappaDecode(KappaDecoder *decoder, const char *payload, size_t len,
						const KappaMessageMeta *meta,
						Datum *values, bool *nulls);

/*
 * KappaAvroSchemaId returns the writer schema id of a message in the
 * Confluent Avro wire format (a byte 0, then the id in four big-endian
 * bytes), or -1 when the message does not start that way.
 */
extern int32 KappaAvroSchemaId(const char *data, size_t len);

/*
 * KappaAvroNewColumns returns the fields of writer schema 'id' (fetched
 * from the registry by this process) that 'tupdesc' has no column of the
 * same name for -- the top-level fields, or with 'debezium' those of the
 * envelope's "after" record: their names and the PostgreSQL types that
 * take them (schema-qualified type names), in two lists of strings.
 * Fields whose names a column cannot have, or that name a kafka_* metadata
 * column, are left out.  Nothing when the schema is not a usable record.
 */
extern void KappaAvroNewColumns(int32 id, bool debezium, TupleDesc tupdesc,
								List **names, List **types);

/*
 * KappaDecoderDrift tells whether the message decoded last had a field
 * that names no column of the target (ignored, since option strict is off):
 * schema drift upstream, which kappa.sources counts.
 */
extern bool KappaDecoderDrift(KappaDecoder *decoder);

/*
 * KappaDecoderUsesTimeAndHeaders tells whether the target has a
 * kafka_timestamp or kafka_headers column, i.e. whether KappaDecode reads
 * meta->timestamp_ms and meta->headers (the caller may leave them unset
 * otherwise).
 */
extern bool KappaDecoderUsesTimeAndHeaders(KappaDecoder *decoder);

/* What one message of a keyed changelog does to the target. */
typedef enum KappaChangeKind
{
	KAPPA_CHANGE_UPSERT,		/* insert the row, or replace the row with its
								 * key */
	KAPPA_CHANGE_DELETE,		/* delete the row with the key, if there is
								 * one */
	KAPPA_CHANGE_TRUNCATE,		/* delete every row of the target */
	KAPPA_CHANGE_NONE			/* nothing (the tombstone after a Debezium
								 * delete) */
} KappaChangeKind;

/*
 * One decoded change.  Arrays have one entry per attribute of the target
 * (tupdesc->natts), are allocated by the decoder (in the context current at
 * KappaDecodeChange) and are valid until the next call.
 *
 *	 - UPSERT: values/nulls are the whole new row (kafka_* metadata columns
 *	   filled as for envelope 'none'; value columns absent from the message
 *	   are NULL, never their default, so that a message gives the same row
 *	   whether it inserts or replaces).  unavailable[i]
 *	   is true where Debezium sent its unchanged-TOAST placeholder
 *	   (__debezium_unavailable_value): the column keeps the value it has.
 *	   If the change moved the row from another primary key (a Debezium 'u'
 *	   whose 'before' has key columns that differ from the new ones),
 *	   'moved' is set and old_values/old_nulls hold that old key.
 *	 - DELETE: values/nulls hold the key columns; other entries are NULL.
 *	 - position: the value of the source's order_by path (a numeric), when
 *	   the source has one; has_position is false if the message lacks it.
 */
typedef struct KappaChange
{
	KappaChangeKind kind;
	Datum	   *values;
	bool	   *nulls;
	bool	   *unavailable;	/* NULL when no column is unavailable */
	bool		moved;
	Datum	   *old_values;
	bool	   *old_nulls;
	bool		has_position;
	Datum		position;		/* numeric */
} KappaChange;

/*
 * KappaParseEnvelope maps an envelope name to KappaEnvelope, raising a clear
 * error for an unknown one.
 */
extern KappaEnvelope KappaParseEnvelope(const char *name);
extern KappaFormat KappaParseKeyFormat(const char *name);
extern int	KappaTablePrimaryKey(Relation rel, AttrNumber *keyattnos);

/*
 * KappaChangeDecoderCreate prepares decoding of a keyed changelog into rows
 * of 'tupdesc', whose primary key is the attributes keyattnos[0 .. nkeys)
 * (1-based).  'format' is the values' format (json for 'debezium'),
 * 'key_format' the keys' (json or text; text needs a one-column key);
 * 'order_by' is a dotted path into the message's value (for 'debezium',
 * into the payload, e.g. "source.lsn"), or NULL.  Raises an error at
 * creation when the combination cannot work (the check create_kafka_source
 * runs).  Allocates in the current memory context.
 */
extern KappaDecoder *KappaChangeDecoderCreate(KappaFormat format,
											  KappaEnvelope envelope,
											  KappaFormat key_format,
											  TupleDesc tupdesc,
											  int nkeys, const AttrNumber *keyattnos,
											  const char *order_by,
											  Jsonb *options);

/*
 * KappaDecodeChange decodes one message of a keyed changelog: 'payload' is
 * NULL for a tombstone (a message without a value), and the message's key
 * is meta->key.  A message that cannot be applied (no key, an unknown op,
 * a value that does not convert) raises an ERROR with the same context
 * line as KappaDecode; the caller isolates it.
 */
extern void KappaDecodeChange(KappaDecoder *decoder, const char *payload,
							  size_t len, const KappaMessageMeta *meta,
							  KappaChange *change);

/*
 * in kafka_target.c: writing into a table target (KappaTargetIsSimple
 * chooses between ExecSimpleRelation* and planned statements), and keyed
 * changes applied to its primary key (KappaChangeSet*)
 */
/* A table opened for ExecSimpleRelation* writes (KappaSimpleTargetOpen). */
typedef struct KappaSimpleTarget
{
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;		/* a row of the table, to write */
	TupleTableSlot *found;		/* a row of the table, as found */
	EPQState	epq;
} KappaSimpleTarget;

typedef struct KappaChangeSet KappaChangeSet;

extern bool KappaTargetIsSimple(Relation rel, bool changes);
extern void KappaSimpleTargetOpen(KappaSimpleTarget *target, Relation rel);
extern void KappaSimpleTargetClose(KappaSimpleTarget *target);
extern List *KappaTargetPlan(const char *sql, Oid *argtypes, int nargs, Oid checkAsUser);
extern void KappaTargetExec(List *plans, const char *sql, ParamListInfo params);
extern KappaChangeSet *KappaChangeSetCreate(Relation rel, Oid checkAsUser,
											int32 ordered_source,
											MemoryContext parent);
extern void KappaChangeSetAdd(KappaChangeSet *set, const KappaChange *change, int msg);
extern int64 KappaChangeSetApply(KappaChangeSet *set, int *failed);

#endif							/* KAPPA_KAFKA_H */
