/*-------------------------------------------------------------------------
 *
 * decode_internal.h
 *	  Private declarations of the message decoders: the state of a decoder
 *	  and the functions its six files call one another with.  The public
 *	  API (KappaDecoderCreate, KappaDecode) is in kafka.h.
 *
 * The decoders are split the way COPY FROM is split into copyfrom.c and
 * copyfromparse.c:
 *
 *	decode.c		the driver: formats and options, preparing a decoder,
 *					KappaDecode (text and bytea itself, json and csv by the
 *					parsers below), the kafka_* metadata columns and
 *					kappa.decode_preview()
 *	decode_change.c	keyed changelogs (envelopes upsert and debezium):
 *					KappaChangeDecoderCreate, KappaDecodeChange, the
 *					Debezium value encodings and
 *					kappa.decode_change_preview(); it calls decode.c
 *					for the row of an upsert and for the metadata
 *	decode_json.c	JSON messages
 *	decode_csv.c	CSV messages
 *	decode_avro.c	Avro messages (Confluent wire format), with the writer
 *					schemas of schema_registry.c
 *	decode_value.c	what both parsers share: a field's text to the Datum
 *					of its column through the column's input function,
 *					NULLs, column lookup by name, samples of bad values and
 *					the error context line
 *
 * Calls go one way: decode_change.c calls decode.c, decode.c calls
 * decode_json.c, decode_csv.c and decode_avro.c, and all of them call
 * decode_value.c; none calls back up.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_DECODE_INTERNAL_H
#define KAPPA_DECODE_INTERNAL_H

#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "nodes/execnodes.h"
#include "utils/hsearch.h"

#include "kafka.h"

/* What fills a column. */
typedef enum DecodeColumnKind
{
	DECODE_COL_SKIP,			/* dropped, generated or identity: NULL */
	DECODE_COL_PAYLOAD,			/* a value from the payload, or the default */
	DECODE_COL_KEY,				/* kafka_key */
	DECODE_COL_PARTITION,		/* kafka_partition */
	DECODE_COL_OFFSET,			/* kafka_offset */
	DECODE_COL_TIMESTAMP,		/* kafka_timestamp */
	DECODE_COL_HEADERS			/* kafka_headers */
} DecodeColumnKind;

/* How numbers are read into timestamp columns (option time_format). */
typedef enum DecodeTimeFormat
{
	DECODE_TIME_TEXT,			/* the type's input function only */
	DECODE_TIME_EPOCH_S,		/* numbers are seconds since 1970 */
	DECODE_TIME_EPOCH_MS,		/* milliseconds since 1970 */
	DECODE_TIME_EPOCH_US		/* microseconds since 1970 */
} DecodeTimeFormat;

/* One column of the target, as the decoder fills it. */
typedef struct DecodeColumn
{
	const char *name;
	DecodeColumnKind kind;
	Oid			typid;
	int32		typmod;
	bool		is_domain;		/* NULL must go through domain_in */
	bool		is_json;		/* json or jsonb: takes nested JSON values */
	bool		is_text;		/* plain text: no input function needed */
	bool		is_timestamp;	/* timestamp or timestamptz (time_format) */
	bool		is_bytea;		/* bytea (kafka_key) */
	bool		notnull;		/* NOT NULL */
	int16		typlen;
	bool		typbyval;
	FmgrInfo	infunc;
	Oid			ioparam;
	/* default, when the payload has no value for the column */
	ExprState  *defstate;		/* non-constant default, or NULL */
	Datum		defvalue;		/* constant default */
	bool		defnull;
} DecodeColumn;

/* Column lookup by name (KappaDecoder.byname). */
typedef struct DecodeColumnEntry
{
	char		name[NAMEDATALEN];	/* hash key */
	int			index;
} DecodeColumnEntry;

/*
 * The fast JSON path remembers, for each of the first DECODE_JSON_FIELDS
 * field positions, the name seen there last and the column it names: the
 * messages of one topic nearly always have the same keys in the same order,
 * so a field is found with one memcmp instead of a hash lookup.
 */
#define DECODE_JSON_FIELDS	64

typedef struct DecodeJsonField
{
	char	   *name;			/* NUL-terminated, in the decoder's context */
	int			len;
	int			col;			/* column index, or what decode_json.c's
								 * DJSON_FIELD_* say */
} DecodeJsonField;

/*
 * Where a value comes from, for the error context line (DecodeErrorCallback).
 * Callers fill one on the stack; it is only formatted when an error is
 * raised, so that decoding a good message builds no text.
 */
typedef struct DecodeWhere
{
	const char *field;			/* JSON key or CSV header name, or NULL */
	int			fieldno;		/* else a CSV field number (1-based), or 0 */
	const char *part;			/* else the part of the message ("payload",
								 * "key") */
} DecodeWhere;

struct KappaDecoder
{
	KappaFormat format;
	int			natts;
	DecodeColumn *cols;
	HTAB	   *byname;			/* every non-dropped column */
	ExprContext *econtext;		/* for default expressions */
	MemoryContext scratch;		/* reset at each KappaDecode */
	MemoryContext outcxt;		/* caller's context during KappaDecode */

	/* options */
	bool		strict;
	int			encoding;		/* of the payload */
	DecodeTimeFormat time_format;
	char		delimiter;
	char		quote;
	char		escape;
	char	   *null_string;
	bool		header;
	int		   *field_cols;		/* csv without header: column per field */
	int			nfield_cols;
	int			payload_col;	/* text and bytea: the column */
	bool		absent_null;	/* payload columns without a value are NULL,
								 * not their default (keyed changelogs) */
	struct DecodeChange *change;	/* keyed changelogs: decode_change.c's
									 * state, else NULL */
	struct DecodeAvroState *avro;	/* format avro: decode_avro.c's state */

	/* per message */
	bool	   *filled;
	bool		drift;			/* a field named no column (and strict is
								 * off): schema drift upstream */
	const KappaMessageMeta *meta;

	/*
	 * The value being converted, for the error context line: its column (-1:
	 * none), where it comes from (NULL: the message has no value for the
	 * column), and its text (NULL: it is null).
	 */
	int			cur_col;
	int32		cur_schema_id;	/* Avro: the message's writer schema, or -1 */
	const DecodeWhere *cur_where;
	const char *cur_value;
	int			cur_len;

	/* JSON: the columns of the field names seen last, by position */
	DecodeJsonField json_fields[DECODE_JSON_FIELDS];
	StringInfoData json_token;	/* a scalar token, NUL-terminated */
};

/* in decode.c */
extern KappaDecoder *DecodeCreate(KappaFormat format, TupleDesc tupdesc,
								  Jsonb *options, bool keyed);
extern char *DecodeToServer(KappaDecoder *d, const char *data, size_t len,
							const char *what, int *outlen);
extern void DecodeFinishRow(KappaDecoder *d, const KappaMessageMeta *meta,
							Datum *values, bool *nulls);

/* in decode_avro.c */
typedef struct DecodeAvroState DecodeAvroState;
extern void DecodeAvroCreate(KappaDecoder *d);
extern void DecodeAvro(KappaDecoder *d, const char *data, size_t len,
					   Datum *values, bool *nulls);
extern void DecodeAvroKey(KappaDecoder *d, const char *data, size_t len,
						  const int *keycols, int nkeys,
						  Datum *values, bool *nulls);

/* A Debezium change event in Avro, as DecodeAvroEvent found it. */
typedef struct DecodeAvroEventInfo
{
	char		op;				/* c, r, u, d or t; 0 for none or another */
	char	   *op_text;		/* the op as sent, or NULL */
	bool		has_after;
	bool		has_before;
	bool		has_position;
	Datum		position;		/* numeric, at the order_by path */
} DecodeAvroEventInfo;

extern void DecodeAvroEvent(KappaDecoder *d, const char *data, size_t len,
							char *const *order_by, DecodeAvroEventInfo *ev);
extern void DecodeAvroEventRow(KappaDecoder *d, bool after, const bool *only,
							   bool **unavailable, Datum *values, bool *nulls);
extern bool DecodeAvroValuePosition(KappaDecoder *d, char *const *order_by,
									Datum *position);

/* in decode_json.c */
extern void DecodeJson(KappaDecoder *d, char *data, int len,
					   Datum *values, bool *nulls);

/* in decode_csv.c */
extern void DecodeCsv(KappaDecoder *d, char *data, int len,
					  Datum *values, bool *nulls);

/* in decode_value.c */
extern void DecodeSetValue(KappaDecoder *d, int i, char *str, int len,
						   const DecodeWhere *where,
						   Datum *values, bool *nulls);
extern void DecodeSetNull(KappaDecoder *d, int i, const DecodeWhere *where,
						  Datum *values, bool *nulls);
extern int	DecodeFindColumn(KappaDecoder *d, const char *name);
extern char *DecodeSample(const char *value, int len);
extern char *DecodeFieldName(const char *fname);
extern void DecodeUnknownField(const char *fname, const char *value, int len)
			pg_attribute_noreturn();
extern void DecodeErrorCallback(void *arg);

#endif							/* KAPPA_DECODE_INTERNAL_H */
