/*-------------------------------------------------------------------------
 *
 * decode.c
 *	  Message decoders: the bytes of one Kafka message straight to the
 *	  Datums of one row of a target relation, in the formats json, csv, text
 *	  and bytea, plus kappa.decode_preview() to try a format from SQL.
 *
 * A decoder is prepared once per target (KappaDecoderCreate) and then turns
 * each message into values/nulls arrays (KappaDecode).  Preparing resolves
 * everything that does not depend on the message: which column each JSON key
 * or CSV field goes to, the input function of every column, the columns'
 * default expressions (compiled once, evaluated per message), and which
 * columns are filled from the message's metadata.  A target that the format
 * cannot fill is refused there, so that create_kafka_source reports it at
 * once instead of a worker failing later.
 *
 * Columns named kafka_key, kafka_partition, kafka_offset, kafka_timestamp
 * and kafka_headers are metadata columns: they are filled from the message's
 * coordinates, never from its payload.  Generated and identity columns are
 * left NULL, for the executor to fill when the row is inserted.  Every other
 * column is a payload column.
 *
 * JSON is read with PostgreSQL's own lexer and parser (common/jsonapi.h).
 * A top-level field's scalar goes through the column type's input function,
 * a nested object or array is cut out of the input as text for a json or
 * jsonb column.  No jsonb document is built per message.  Two paths share
 * that contract: the fast one (kappa_decode_json_flat) drives json_lex
 * itself over the object's fields, without de-escaping strings that need
 * none, and finds columns by the fields' positions in the previous message;
 * anything it does not handle -- invalid JSON, a value that is not an
 * object, escaped field names, errors of option strict and nested values
 * for scalar columns -- goes to the general one (pg_parse_json with
 * semantic callbacks), which decodes the message again from its start and
 * raises the error.  Both convert the fields in the order they come, so a
 * message fails with the same error whichever path sees it first.
 *
 * Errors: a message that cannot be decoded raises ERROR with an errcode, an
 * errmsg and an errdetail naming the field and showing a truncated sample of
 * the bad value.  Errors raised by a column type's input function keep their
 * own errcode and message and get that errdetail added.  The caller (the
 * Kafka worker) isolates such messages with a subtransaction and stores them
 * as dead letters.
 *
 * Memory: the decoder and everything it keeps live in the memory context
 * current at KappaDecoderCreate.  KappaDecode allocates the Datums it returns
 * in the context current when it is called, and its parse temporaries in a
 * scratch context of the decoder that is reset at every call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include <librdkafka/rdkafka.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "common/jsonapi.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "parser/parse_type.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "pg_kappa.h"
#include "kafka.h"

PG_FUNCTION_INFO_V1(kappa_decode_preview);

/* Bytes of a bad value shown in an error detail. */
#define KAPPA_SAMPLE_BYTES	64

/* What fills a column. */
typedef enum KappaColumnKind
{
	KAPPA_COL_SKIP,				/* dropped, generated or identity: NULL */
	KAPPA_COL_PAYLOAD,			/* a value from the payload, or the default */
	KAPPA_COL_KEY,				/* kafka_key */
	KAPPA_COL_PARTITION,		/* kafka_partition */
	KAPPA_COL_OFFSET,			/* kafka_offset */
	KAPPA_COL_TIMESTAMP,		/* kafka_timestamp */
	KAPPA_COL_HEADERS			/* kafka_headers */
} KappaColumnKind;

/* How numbers are read into timestamp columns (option time_format). */
typedef enum KappaTimeFormat
{
	KAPPA_TIME_TEXT,			/* the type's input function only */
	KAPPA_TIME_EPOCH_S,			/* numbers are seconds since 1970 */
	KAPPA_TIME_EPOCH_MS,		/* milliseconds since 1970 */
	KAPPA_TIME_EPOCH_US			/* microseconds since 1970 */
} KappaTimeFormat;

/* One column of the target, as the decoder fills it. */
typedef struct KappaColumn
{
	const char *name;
	KappaColumnKind kind;
	Oid			typid;
	int32		typmod;
	bool		is_domain;		/* NULL must go through domain_in */
	bool		is_json;		/* json or jsonb: takes nested JSON values */
	bool		is_text;		/* plain text: no input function needed */
	bool		is_timestamp;	/* timestamp or timestamptz (time_format) */
	bool		is_bytea;		/* bytea (kafka_key) */
	int16		typlen;
	bool		typbyval;
	FmgrInfo	infunc;
	Oid			ioparam;
	/* default, when the payload has no value for the column */
	ExprState  *defstate;		/* non-constant default, or NULL */
	Datum		defvalue;		/* constant default */
	bool		defnull;
} KappaColumn;

/* Column lookup by name. */
typedef struct KappaColumnEntry
{
	char		name[NAMEDATALEN];	/* hash key */
	int			index;
} KappaColumnEntry;

/*
 * The fast JSON path remembers, for each of the first KAPPA_JSON_FIELDS
 * field positions, the name seen there last and the column it names: the
 * messages of one topic nearly always have the same keys in the same order,
 * so a field is found with one memcmp instead of a hash lookup.
 */
#define KAPPA_JSON_FIELDS	64

/* What a JSON field name resolves to, besides a column index. */
#define KAPPA_FIELD_IGNORED	(-1)	/* no payload column: skip the value */
#define KAPPA_FIELD_REFUSED	(-2)	/* names no column, and strict is on */

typedef struct KappaJsonField
{
	char	   *name;			/* NUL-terminated, in the decoder's context */
	int			len;
	int			col;			/* column index or KAPPA_FIELD_* */
} KappaJsonField;

/* A field of a CSV record. */
typedef struct KappaCsvField
{
	char	   *value;
	int			len;
	bool		isnull;
} KappaCsvField;

struct KappaDecoder
{
	KappaFormat format;
	int			natts;
	KappaColumn *cols;
	HTAB	   *byname;			/* every non-dropped column */
	ExprContext *econtext;		/* for default expressions */
	MemoryContext scratch;		/* reset at each KappaDecode */
	MemoryContext outcxt;		/* caller's context during KappaDecode */

	/* options */
	bool		strict;
	int			encoding;		/* of the payload */
	KappaTimeFormat time_format;
	char		delimiter;
	char		quote;
	char		escape;
	char	   *null_string;
	bool		header;
	int		   *field_cols;		/* csv without header: column per field */
	int			nfield_cols;
	int			payload_col;	/* text and bytea: the column */

	/* per message */
	bool	   *filled;
	const KappaMessageMeta *meta;

	/* JSON: the columns of the field names seen last, by position */
	KappaJsonField json_fields[KAPPA_JSON_FIELDS];
	StringInfoData json_token;	/* a scalar token, NUL-terminated */
};

/*
 * Where a value comes from, for error details.  Only formatted when an error
 * is raised (kappa_where_text), so that decoding a good message builds no
 * message text.
 */
typedef struct KappaWhere
{
	const char *field;			/* JSON key or CSV header name, or NULL */
	int			fieldno;		/* CSV field number (1-based), or 0 */
	const char *column;			/* the column, with fieldno */
	const char *subject;		/* else a fixed subject ("The key") */
} KappaWhere;

/* State of the JSON callbacks for one message. */
typedef struct KappaJsonState
{
	KappaDecoder *decoder;
	JsonLexContext *lex;
	Datum	   *values;
	bool	   *nulls;
	int			depth;			/* 1 inside the top-level object */
	int			col;			/* column of the current top-level field */
	bool		unknown;		/* it names no column (and strict is on) */
	JsonTokenType nested;		/* it is an object or array for a scalar
								 * column (else JSON_TOKEN_INVALID) */
	char	   *fname;			/* name of the current top-level field */
	char	   *value_start;	/* where the field's value begins */
} KappaJsonState;

static const char *const kappa_format_names[] = {"json", "csv", "text", "bytea"};

static void kappa_parse_options(KappaDecoder *d, Jsonb *options,
								List **columns);
static void kappa_rethrow(ErrorData *edata, const char *mine) pg_attribute_noreturn();
static char *kappa_where_text(const KappaWhere *where);

/*
 * KappaParseFormat maps a format name (case-insensitive) to KappaFormat,
 * raising an error for an unknown one.
 */
KappaFormat
KappaParseFormat(const char *name)
{
	if (name != NULL)
	{
		for (int i = 0; i < lengthof(kappa_format_names); i++)
		{
			if (pg_strcasecmp(name, kappa_format_names[i]) == 0)
				return (KappaFormat) i;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown Kafka message format \"%s\"",
					name ? name : "(null)"),
			 errhint("The formats are json, csv, text and bytea.")));
	return KAPPA_FORMAT_JSON;	/* keep compiler quiet */
}

/*
 * kappa_sample returns 'value' quoted as a JSON string, cut to
 * KAPPA_SAMPLE_BYTES bytes (on a character boundary) with "..." appended if
 * longer: the form in which error details show bad values.  'value' must be
 * valid in the database encoding.
 */
static char *
kappa_sample(const char *value, int len)
{
	StringInfoData buf;
	int			clip = len;

	if (len > KAPPA_SAMPLE_BYTES)
		clip = pg_mbcliplen(value, len, KAPPA_SAMPLE_BYTES);
	initStringInfo(&buf);
	escape_json(&buf, pnstrdup(value, clip));
	if (clip < len)
		appendStringInfoString(&buf, "...");
	return buf.data;
}

/*
 * kappa_hex_sample returns up to 16 bytes of 'data' from 'offset' in hex
 * ("0xc3 0x28 ..."), for details about bytes that are not valid text.
 */
static char *
kappa_hex_sample(const char *data, size_t len, size_t offset)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (size_t i = offset; i < len && i < offset + 16; i++)
		appendStringInfo(&buf, "%s0x%02x", i > offset ? " " : "",
						 (unsigned char) data[i]);
	if (len > offset + 16)
		appendStringInfoString(&buf, " ...");
	return buf.data;
}

/*
 * kappa_to_server checks that 'data' is valid in the payload encoding and
 * returns it in the database encoding, NUL-terminated unless *outlen tells
 * otherwise ('data' itself when no conversion is needed).  'what' names the
 * part of the message for the error ("payload", "key").  Raises an error for
 * bytes that are not valid text (a NUL byte included).
 */
static char *
kappa_to_server(KappaDecoder *d, const char *data, size_t len,
				const char *what, int *outlen)
{
	int			dbenc = GetDatabaseEncoding();
	int			valid;
	char	   *result;

	if (len >= MaxAllocSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("kafka message %s is too large", what),
				 errdetail("The %s has %zu bytes; the limit is %zu bytes.",
						   what, len, (size_t) MaxAllocSize - 1)));

	valid = pg_encoding_verifymbstr(d->encoding, data, (int) len);
	if (valid != (int) len)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("invalid byte sequence for encoding \"%s\" in kafka message %s",
						pg_encoding_to_char(d->encoding), what),
				 errdetail("The bytes at offset %d are %s.",
						   valid, kappa_hex_sample(data, len, valid)),
				 strcmp(what, "key") == 0 ?
				 errhint("Use a bytea kafka_key column for binary keys.") :
				 errhint("Use format bytea for binary messages, or option \"encoding\" "
						 "if the messages are text in another encoding.")));

	if (d->encoding == dbenc || dbenc == PG_SQL_ASCII ||
		d->encoding == PG_SQL_ASCII)
	{
		*outlen = (int) len;
		return (char *) data;
	}

	result = pg_any_to_server(data, (int) len, d->encoding);
	*outlen = (result == data) ? (int) len : (int) strlen(result);
	return result;
}

/*
 * kappa_rethrow adds 'mine' (a sentence saying where the value comes from)
 * to the detail of an error raised while converting a value and throws it
 * again.  The error keeps its errcode, message and hint.
 */
static void
kappa_rethrow(ErrorData *edata, const char *mine)
{
	if (edata->detail != NULL)
		edata->detail = psprintf("%s %s", edata->detail, mine);
	else
		edata->detail = pstrdup(mine);
	/* the context is collected again when the error is thrown */
	edata->context = NULL;
	ReThrowError(edata);
}

/*
 * kappa_input converts 'str' (NUL-terminated, 'len' bytes, in the database
 * encoding) to a Datum of column 'col' into *result, allocated in the
 * caller's context of KappaDecode.  'where' tells where the value comes
 * from, for error details.
 */
static void
kappa_input(KappaDecoder *d, KappaColumn *col, char *str, int len,
			const KappaWhere *where, Datum *result)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(d->outcxt);

	if (col->is_text)
	{
		*result = PointerGetDatum(cstring_to_text_with_len(str, len));
		MemoryContextSwitchTo(oldcxt);
		return;
	}

	PG_TRY();
	{
		*result = InputFunctionCall(&col->infunc, str, col->ioparam,
									col->typmod);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(d->scratch);
		edata = CopyErrorData();
		FlushErrorState();
		kappa_rethrow(edata, psprintf("%s holds %s.", kappa_where_text(where),
									  kappa_sample(str, len)));
	}
	PG_END_TRY();

	MemoryContextSwitchTo(oldcxt);
}

/*
 * kappa_epoch converts a number of seconds, milliseconds or microseconds
 * since 1970 (per time_format) in 'str' to a timestamp(tz) Datum.  Returns
 * false, leaving *result alone, if 'str' is not a number.
 */
static bool
kappa_epoch(KappaDecoder *d, KappaColumn *col, const char *str, int len,
			const KappaWhere *where, Datum *result)
{
	int64		unit;
	char	   *end;
	double		fval;
	long long	ival;
	double		usecs;
	TimestampTz ts;

	switch (d->time_format)
	{
		case KAPPA_TIME_EPOCH_S:
			unit = USECS_PER_SEC;
			break;
		case KAPPA_TIME_EPOCH_MS:
			unit = 1000;
			break;
		default:
			unit = 1;
			break;
	}

	if (len == 0 || isspace((unsigned char) str[0]))
		return false;
	errno = 0;
	ival = strtoll(str, &end, 10);
	if (*end == '\0' && errno == 0)
		usecs = (double) ival * (double) unit;
	else
	{
		errno = 0;
		fval = strtod(str, &end);
		if (*end != '\0' || errno != 0 || isnan(fval) || isinf(fval))
			return false;
		usecs = rint(fval * (double) unit);
	}

	usecs -= (double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	if (!(usecs >= (double) MIN_TIMESTAMP && usecs < (double) END_TIMESTAMP))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("%s holds %s, read as %s since 1970.",
						   kappa_where_text(where),
						   kappa_sample(str, len),
						   d->time_format == KAPPA_TIME_EPOCH_S ? "seconds" :
						   d->time_format == KAPPA_TIME_EPOCH_MS ? "milliseconds" :
						   "microseconds")));
	ts = (TimestampTz) usecs;
	/* timestamp without time zone: the UTC wall clock */
	*result = TimestampTzGetDatum(ts);
	return true;
}

/*
 * kappa_set_value converts a payload value for column index 'i'.
 */
static void
kappa_set_value(KappaDecoder *d, int i, char *str, int len,
				const KappaWhere *where, Datum *values, bool *nulls)
{
	KappaColumn *col = &d->cols[i];

	if (col->is_timestamp && d->time_format != KAPPA_TIME_TEXT &&
		kappa_epoch(d, col, str, len, where, &values[i]))
		nulls[i] = false;
	else
	{
		kappa_input(d, col, str, len, where, &values[i]);
		nulls[i] = false;
	}
	d->filled[i] = true;
}

/*
 * kappa_set_null stores NULL for column index 'i'; for a domain type the
 * domain's constraints are checked, as an INSERT of NULL would.  'where'
 * says where the NULL comes from, for errors: NULL when the message has no
 * value for the column.
 */
static void
kappa_set_null(KappaDecoder *d, int i, const KappaWhere *where,
			   Datum *values, bool *nulls)
{
	KappaColumn *col = &d->cols[i];

	values[i] = (Datum) 0;
	nulls[i] = true;
	d->filled[i] = true;
	if (col->is_domain)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(d->outcxt);

		PG_TRY();
		{
			(void) InputFunctionCall(&col->infunc, NULL, col->ioparam,
									 col->typmod);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(d->scratch);
			edata = CopyErrorData();
			FlushErrorState();
			if (where == NULL)
				kappa_rethrow(edata,
							  psprintf("The message has no value for column \"%s\", "
									   "which has no default.", col->name));
			else
				kappa_rethrow(edata, psprintf("%s is null.", kappa_where_text(where)));
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcxt);
	}
}

/*
 * kappa_find_column returns the index of the column named 'name', or -1.
 */
static int
kappa_find_column(KappaDecoder *d, const char *name)
{
	KappaColumnEntry *entry;

	if (strlen(name) >= NAMEDATALEN)
		return -1;
	entry = hash_search(d->byname, name, HASH_FIND, NULL);
	return entry ? entry->index : -1;
}

/*
 * kappa_field_where names a JSON field or CSV header field for details.
 */
static char *
kappa_field_where(const char *fname)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "Field ");
	escape_json(&buf, fname);
	return buf.data;
}

/*
 * kappa_where_text formats a KappaWhere as the subject of a sentence.
 */
static char *
kappa_where_text(const KappaWhere *where)
{
	if (where->subject != NULL)
		return pstrdup(where->subject);
	if (where->fieldno > 0)
		return psprintf("CSV field %d (column \"%s\")", where->fieldno,
						where->column);
	return kappa_field_where(where->field);
}

/*
 * kappa_unknown_field raises the error of option strict for a field that
 * names no column.
 */
static void
kappa_unknown_field(const char *fname, const char *value, int len)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("kafka message has field \"%s\", which names no column of the target",
					fname),
			 value ? errdetail("%s holds %s.", kappa_field_where(fname),
							   kappa_sample(value, len)) :
			 errdetail("%s names no column.", kappa_field_where(fname)),
			 errhint("Add the column to the target, or set option \"strict\" "
					 "to false to ignore such fields.")));
}

/*
 * kappa_json_kind names a JSON token type for messages.
 */
static const char *
kappa_json_kind(JsonTokenType type)
{
	switch (type)
	{
		case JSON_TOKEN_STRING:
			return "string";
		case JSON_TOKEN_NUMBER:
			return "number";
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			return "boolean";
		case JSON_TOKEN_NULL:
			return "null";
		case JSON_TOKEN_OBJECT_START:
			return "object";
		case JSON_TOKEN_ARRAY_START:
			return "array";
		default:
			return "value";
	}
}

/*
 * kappa_json_not_object raises the error for a message whose top-level JSON
 * value is not an object.
 */
static void
kappa_json_not_object(KappaJsonState *st, JsonTokenType type)
{
	JsonLexContext *lex = st->lex;

	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("kafka message is a JSON %s, not an object",
					kappa_json_kind(type)),
			 errdetail("The message begins with %s.",
					   kappa_sample(lex->input, lex->input_length)),
			 errhint("Format json takes one JSON object per message, whose keys name the columns.")));
}

/*
 * kappa_json_nested notes, when a nested object or array starts as the value
 * of a top-level field, whether its column cannot take it; the error is
 * raised at the end of the value, to show the whole value.
 */
static void
kappa_json_nested(KappaJsonState *st, JsonTokenType type)
{
	if (st->col >= 0 && !st->decoder->cols[st->col].is_json)
		st->nested = type;
}

/*
 * kappa_json_nested_error raises the error for a nested value bound for a
 * scalar column.
 */
static void
kappa_json_nested_error(KappaJsonState *st, char *value, int len)
{
	KappaColumn *col = &st->decoder->cols[st->col];

	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("cannot store a JSON %s in column \"%s\" of type %s",
					kappa_json_kind(st->nested), col->name,
					format_type_with_typemod(col->typid, col->typmod)),
			 errdetail("%s holds %s.", kappa_field_where(st->fname),
					   kappa_sample(value, len)),
			 errhint("Nested values go to json or jsonb columns.")));
}

/*
 * kappa_json_object_start tracks the depth; an object as a field's value is
 * checked against the field's column.
 */
static void
kappa_json_object_start(void *state)
{
	KappaJsonState *st = (KappaJsonState *) state;

	if (st->depth == 1)
		kappa_json_nested(st, JSON_TOKEN_OBJECT_START);
	st->depth++;
}

/*
 * kappa_json_array_start tracks the depth; a top-level array is refused, an
 * array as a field's value is checked against the field's column.
 */
static void
kappa_json_array_start(void *state)
{
	KappaJsonState *st = (KappaJsonState *) state;

	if (st->depth == 0)
		kappa_json_not_object(st, JSON_TOKEN_ARRAY_START);
	if (st->depth == 1)
		kappa_json_nested(st, JSON_TOKEN_ARRAY_START);
	st->depth++;
}

/*
 * kappa_json_struct_end tracks the depth at the end of an object or array.
 */
static void
kappa_json_struct_end(void *state)
{
	KappaJsonState *st = (KappaJsonState *) state;

	st->depth--;
}

/*
 * kappa_json_field_start finds the column of a top-level field.  A field
 * naming no column is ignored (or refused with strict); one naming a
 * metadata or generated column is ignored.  JSON null stores NULL at once.
 */
static void
kappa_json_field_start(void *state, char *fname, bool isnull)
{
	KappaJsonState *st = (KappaJsonState *) state;
	KappaDecoder *d = st->decoder;
	int			i;

	if (st->depth != 1)
		return;

	st->fname = fname;
	st->value_start = st->lex->token_start;
	st->col = -1;
	st->unknown = false;
	st->nested = JSON_TOKEN_INVALID;

	i = kappa_find_column(d, fname);
	if (i < 0)
	{
		st->unknown = d->strict;
		return;
	}
	if (d->cols[i].kind != KAPPA_COL_PAYLOAD)
		return;

	if (isnull)
	{
		KappaWhere	where = {fname, 0, NULL, NULL};

		kappa_set_null(d, i, &where, st->values, st->nulls);
	}
	else
		st->col = i;
}

/*
 * kappa_json_field_end stores the value of a top-level field bound for a
 * json or jsonb column: its JSON text, cut out of the message.  It raises
 * the errors noted for the field (strict, nested value for a scalar column),
 * now that the whole value can be shown.
 */
static void
kappa_json_field_end(void *state, char *fname, bool isnull)
{
	KappaJsonState *st = (KappaJsonState *) state;
	KappaDecoder *d = st->decoder;
	int			len;

	if (st->depth != 1)
		return;
	len = st->lex->prev_token_terminator - st->value_start;
	if (st->unknown)
		kappa_unknown_field(fname, st->value_start, len);
	if (st->col < 0)
		return;
	if (st->nested != JSON_TOKEN_INVALID)
		kappa_json_nested_error(st, st->value_start, len);
	if (d->cols[st->col].is_json)
	{
		KappaWhere	where = {fname, 0, NULL, NULL};

		kappa_set_value(d, st->col, pnstrdup(st->value_start, len), len,
						&where, st->values, st->nulls);
	}
	st->col = -1;
}

/*
 * kappa_json_scalar converts the scalar value of a top-level field (strings
 * de-escaped, numbers and booleans as written) with the column type's input
 * function.
 */
static void
kappa_json_scalar(void *state, char *token, JsonTokenType tokentype)
{
	KappaJsonState *st = (KappaJsonState *) state;
	KappaDecoder *d = st->decoder;
	KappaWhere	where = {NULL, 0, NULL, NULL};

	if (st->depth == 0)
		kappa_json_not_object(st, tokentype);
	if (st->depth != 1 || st->col < 0 || d->cols[st->col].is_json)
		return;

	where.field = st->fname;
	kappa_set_value(d, st->col, token, strlen(token), &where,
					st->values, st->nulls);
	st->col = -1;
}

/*
 * kappa_decode_json_general fills the payload columns from a JSON object
 * with pg_parse_json and the callbacks above.  It takes every valid message
 * and raises the error of every invalid one.
 */
static void
kappa_decode_json_general(KappaDecoder *d, char *data, int len,
						  Datum *values, bool *nulls)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	KappaJsonState st;
	JsonParseErrorType result;

	lex = makeJsonLexContextCstringLen(data, len, GetDatabaseEncoding(), true);

	memset(&st, 0, sizeof(st));
	st.decoder = d;
	st.lex = lex;
	st.values = values;
	st.nulls = nulls;
	st.col = -1;

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = kappa_json_object_start;
	sem.object_end = kappa_json_struct_end;
	sem.array_start = kappa_json_array_start;
	sem.array_end = kappa_json_struct_end;
	sem.object_field_start = kappa_json_field_start;
	sem.object_field_end = kappa_json_field_end;
	sem.scalar = kappa_json_scalar;

	result = pg_parse_json(lex, &sem);
	if (result != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("kafka message is not valid JSON"),
				 errdetail("%s The message begins with %s.",
						   json_errdetail(result, lex),
						   kappa_sample(data, len))));
}

/*
 * kappa_json_field_column tells what the field name 'name' ('len' bytes,
 * not NUL-terminated, no escapes) at position 'pos' of the object fills: a
 * payload column's index, KAPPA_FIELD_IGNORED or KAPPA_FIELD_REFUSED -- the
 * same answer kappa_json_field_start gives.  *fname is set to the name,
 * NUL-terminated, for error details.
 */
static int
kappa_json_field_column(KappaDecoder *d, int pos, const char *name, int len,
						char **fname)
{
	KappaJsonField *field = NULL;
	char	   *copy;
	int			i;
	int			result;

	if (pos < KAPPA_JSON_FIELDS)
	{
		field = &d->json_fields[pos];
		if (field->name != NULL && field->len == len &&
			memcmp(field->name, name, len) == 0)
		{
			*fname = field->name;
			return field->col;
		}
	}

	copy = pnstrdup(name, len);
	i = kappa_find_column(d, copy);
	if (i < 0)
		result = d->strict ? KAPPA_FIELD_REFUSED : KAPPA_FIELD_IGNORED;
	else if (d->cols[i].kind != KAPPA_COL_PAYLOAD)
		result = KAPPA_FIELD_IGNORED;
	else
		result = i;

	if (field != NULL)
	{
		if (field->name != NULL)
			pfree(field->name);
		field->name = MemoryContextStrdup(GetMemoryChunkContext(d), copy);
		field->len = len;
		field->col = result;
		*fname = field->name;
	}
	else
		*fname = copy;
	return result;
}

/*
 * kappa_json_skip_nested moves 'lex', positioned on the start of a nested
 * object or array, to its end.  Returns true if the value is valid JSON, as
 * pg_parse_json with de-escaping checks it.
 */
static bool
kappa_json_skip_nested(JsonLexContext *lex)
{
	char	   *start = lex->token_start;
	int			depth = 1;
	JsonLexContext *check;

	while (depth > 0)
	{
		if (json_lex(lex) != JSON_SUCCESS)
			return false;
		switch (lex->token_type)
		{
			case JSON_TOKEN_OBJECT_START:
			case JSON_TOKEN_ARRAY_START:
				depth++;
				break;
			case JSON_TOKEN_OBJECT_END:
			case JSON_TOKEN_ARRAY_END:
				depth--;
				break;
			case JSON_TOKEN_END:
				return false;
			default:
				break;
		}
	}

	check = makeJsonLexContextCstringLen(start, lex->token_terminator - start,
										 lex->input_encoding, true);
	return pg_parse_json(check, &nullSemAction) == JSON_SUCCESS;
}

/*
 * kappa_json_string sets *str and *len to the value of the string token
 * 'lex' is on: inside the message when it has no escapes, else de-escaped by
 * the lexer.  *str is NUL-terminated only if *copied is set.  Returns false
 * for an escape the general path refuses.
 */
static bool
kappa_json_string(JsonLexContext *lex, char **str, int *len, bool *copied)
{
	char	   *start = lex->token_start + 1;
	int			rawlen = lex->token_terminator - lex->token_start - 2;
	JsonLexContext *unescape;

	if (memchr(start, '\\', rawlen) == NULL)
	{
		*str = start;
		*len = rawlen;
		*copied = false;
		return true;
	}

	unescape = makeJsonLexContextCstringLen(lex->token_start,
											lex->token_terminator - lex->token_start,
											lex->input_encoding, true);
	if (json_lex(unescape) != JSON_SUCCESS ||
		unescape->token_type != JSON_TOKEN_STRING)
		return false;
	*str = unescape->strval->data;
	*len = unescape->strval->len;
	*copied = true;
	return true;
}

/*
 * kappa_json_flat_value converts the value of one field, which 'lex' is on
 * (its first token), for column 'col' (or skips it for KAPPA_FIELD_IGNORED),
 * leaving 'lex' on the value's last token.  Returns false if the general path
 * must take the message.
 */
static bool
kappa_json_flat_value(KappaDecoder *d, JsonLexContext *lex, int col,
					  char *fname, Datum *values, bool *nulls)
{
	KappaWhere	where = {fname, 0, NULL, NULL};
	char	   *value_start = lex->token_start;
	char	   *str;
	int			len;
	bool		copied;

	switch (lex->token_type)
	{
		case JSON_TOKEN_OBJECT_START:
		case JSON_TOKEN_ARRAY_START:
			if (!kappa_json_skip_nested(lex))
				return false;
			if (col == KAPPA_FIELD_IGNORED)
				return true;
			if (col < 0 || !d->cols[col].is_json)
				return false;	/* the general path raises the error */
			break;
		case JSON_TOKEN_NULL:
			if (col == KAPPA_FIELD_REFUSED)
				return false;
			if (col >= 0)
				kappa_set_null(d, col, &where, values, nulls);
			return true;
		case JSON_TOKEN_STRING:
		case JSON_TOKEN_NUMBER:
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			if (col == KAPPA_FIELD_REFUSED)
				return false;
			if (lex->token_type == JSON_TOKEN_STRING)
			{
				/* the general path checks the escapes of every string */
				if (!kappa_json_string(lex, &str, &len, &copied))
					return false;
			}
			else
			{
				str = lex->token_start;
				len = lex->token_terminator - lex->token_start;
				copied = false;
			}
			if (col == KAPPA_FIELD_IGNORED)
				return true;
			if (d->cols[col].is_json)
				break;
			if (!copied && !d->cols[col].is_text)
			{
				/* input functions take NUL-terminated strings */
				resetStringInfo(&d->json_token);
				appendBinaryStringInfo(&d->json_token, str, len);
				str = d->json_token.data;
			}
			kappa_set_value(d, col, str, len, &where, values, nulls);
			return true;
		default:
			return false;
	}

	/* a json or jsonb column takes the value's text */
	len = lex->token_terminator - value_start;
	kappa_set_value(d, col, pnstrdup(value_start, len), len, &where,
					values, nulls);
	return true;
}

/*
 * kappa_decode_json_flat fills the payload columns from a JSON object the
 * fast way (see the header comment).  Returns false if the general path must
 * take the message; the columns it filled until then are then filled again.
 */
static bool
kappa_decode_json_flat(KappaDecoder *d, char *data, int len,
					   Datum *values, bool *nulls)
{
	JsonLexContext *lex;
	int			pos = 0;

	lex = makeJsonLexContextCstringLen(data, len, GetDatabaseEncoding(), false);
	if (json_lex(lex) != JSON_SUCCESS ||
		lex->token_type != JSON_TOKEN_OBJECT_START ||
		json_lex(lex) != JSON_SUCCESS)
		return false;

	if (lex->token_type != JSON_TOKEN_OBJECT_END)
	{
		for (;;)
		{
			char	   *name = lex->token_start + 1;
			int			namelen = lex->token_terminator - lex->token_start - 2;
			char	   *fname;
			int			col;

			if (lex->token_type != JSON_TOKEN_STRING ||
				memchr(name, '\\', namelen) != NULL)
				return false;
			col = kappa_json_field_column(d, pos++, name, namelen, &fname);

			if (json_lex(lex) != JSON_SUCCESS ||
				lex->token_type != JSON_TOKEN_COLON ||
				json_lex(lex) != JSON_SUCCESS ||
				!kappa_json_flat_value(d, lex, col, fname, values, nulls) ||
				json_lex(lex) != JSON_SUCCESS)
				return false;

			if (lex->token_type == JSON_TOKEN_OBJECT_END)
				break;
			if (lex->token_type != JSON_TOKEN_COMMA ||
				json_lex(lex) != JSON_SUCCESS)
				return false;
		}
	}

	return json_lex(lex) == JSON_SUCCESS && lex->token_type == JSON_TOKEN_END;
}

/*
 * kappa_decode_json fills the payload columns from a JSON object.
 */
static void
kappa_decode_json(KappaDecoder *d, char *data, int len,
				  Datum *values, bool *nulls)
{
	if (kappa_decode_json_flat(d, data, len, values, nulls))
		return;

	for (int i = 0; i < d->natts; i++)
	{
		values[i] = (Datum) 0;
		nulls[i] = true;
		d->filled[i] = false;
	}
	kappa_decode_json_general(d, data, len, values, nulls);
}

/*
 * kappa_csv_record parses one CSV record of 'data' from *pos, leaving *pos
 * after its line end, into a palloc'd array of fields (*nfields of them).
 * Quoting follows COPY's CSV format: a quoted field may hold delimiters,
 * line breaks and doubled quotes; an unquoted field equal to the null string
 * is NULL.
 */
static KappaCsvField *
kappa_csv_record(KappaDecoder *d, const char *data, int len, int *pos,
				 int *nfields)
{
	int			p = *pos;
	int			nalloc = 16;
	int			n = 0;
	KappaCsvField *fields = palloc(sizeof(KappaCsvField) * nalloc);
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		bool		quoted = false;
		bool		in_quote = false;
		int			start = p;

		resetStringInfo(&buf);
		while (p < len)
		{
			char		c = data[p];

			if (in_quote)
			{
				if (c == d->escape && p + 1 < len &&
					(data[p + 1] == d->quote ||
					 (d->escape != d->quote && data[p + 1] == d->escape)))
				{
					appendStringInfoChar(&buf, data[p + 1]);
					p += 2;
				}
				else if (c == d->quote)
				{
					in_quote = false;
					p++;
				}
				else
				{
					appendStringInfoChar(&buf, c);
					p++;
				}
			}
			else if (c == d->delimiter || c == '\n' || c == '\r')
				break;
			else if (c == d->quote)
			{
				in_quote = quoted = true;
				p++;
			}
			else
			{
				appendStringInfoChar(&buf, c);
				p++;
			}
		}
		if (in_quote)
			ereport(ERROR,
					(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
					 errmsg("unterminated CSV quoted field in kafka message"),
					 errdetail("Field %d begins with %s.", n + 1,
							   kappa_sample(data + start, len - start))));

		if (n == nalloc)
		{
			nalloc *= 2;
			fields = repalloc(fields, sizeof(KappaCsvField) * nalloc);
		}
		fields[n].value = pnstrdup(buf.data, buf.len);
		fields[n].len = buf.len;
		fields[n].isnull = !quoted && strcmp(buf.data, d->null_string) == 0;
		n++;

		if (p < len && data[p] == d->delimiter)
		{
			p++;
			continue;
		}
		/* end of the record */
		if (p < len && data[p] == '\r')
			p++;
		if (p < len && data[p] == '\n')
			p++;
		break;
	}

	*pos = p;
	*nfields = n;
	return fields;
}

/*
 * kappa_csv_at_end tells whether only line breaks remain from 'pos'.
 */
static bool
kappa_csv_at_end(const char *data, int len, int pos)
{
	while (pos < len && (data[pos] == '\n' || data[pos] == '\r'))
		pos++;
	return pos >= len;
}

/*
 * kappa_decode_csv fills the payload columns from one CSV record, or from a
 * header record naming the columns followed by one record of values.
 */
static void
kappa_decode_csv(KappaDecoder *d, char *data, int len,
				 Datum *values, bool *nulls)
{
	int			pos = 0;
	int			nfields;
	KappaCsvField *fields;
	int		   *cols;
	int			ncols;

	if (d->header)
	{
		int			nheader;
		KappaCsvField *header = kappa_csv_record(d, data, len, &pos, &nheader);

		if (kappa_csv_at_end(data, len, pos))
			ereport(ERROR,
					(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
					 errmsg("kafka message has a CSV header but no values"),
					 errdetail("With option \"header\", each message holds a header "
							   "record naming the columns, then one record of values. "
							   "The message is %s.", kappa_sample(data, len))));

		cols = palloc(sizeof(int) * nheader);
		for (int i = 0; i < nheader; i++)
		{
			int			c;

			c = header[i].isnull ? -1 : kappa_find_column(d, header[i].value);
			if (c < 0 && d->strict)
				kappa_unknown_field(header[i].isnull ? "" : header[i].value,
									NULL, 0);
			if (c >= 0 && d->cols[c].kind != KAPPA_COL_PAYLOAD)
				c = -1;			/* metadata or generated: ignored */
			for (int j = 0; c >= 0 && j < i; j++)
			{
				if (cols[j] == c)
					ereport(ERROR,
							(errcode(ERRCODE_DUPLICATE_COLUMN),
							 errmsg("CSV header of kafka message names column \"%s\" twice",
									d->cols[c].name),
							 errdetail("The header is %s.",
									   kappa_sample(data, pos))));
			}
			cols[i] = c;
		}
		ncols = nheader;
	}
	else
	{
		cols = d->field_cols;
		ncols = d->nfield_cols;
	}

	fields = kappa_csv_record(d, data, len, &pos, &nfields);
	if (!kappa_csv_at_end(data, len, pos))
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("kafka message holds more than one CSV record"),
				 errdetail("Each message is one record%s; the next record begins with %s.",
						   d->header ? " after the header" : "",
						   kappa_sample(data + pos, len - pos))));

	if (nfields > ncols && d->strict)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("kafka message has %d CSV fields, more than the %d expected",
						nfields, ncols),
				 errdetail("Field %d holds %s.", ncols + 1,
						   kappa_sample(fields[ncols].value, fields[ncols].len)),
				 errhint("Set option \"strict\" to false to ignore extra fields.")));

	for (int i = 0; i < nfields && i < ncols; i++)
	{
		int			c = cols[i];
		KappaWhere	where = {NULL, 0, NULL, NULL};

		if (c < 0)
			continue;
		if (d->header)
			where.field = d->cols[c].name;
		else
		{
			where.fieldno = i + 1;
			where.column = d->cols[c].name;
		}
		if (fields[i].isnull)
			kappa_set_null(d, c, &where, values, nulls);
		else
			kappa_set_value(d, c, fields[i].value, fields[i].len, &where,
							values, nulls);
	}
}

/*
 * kappa_headers_text converts a header name or value to text in the
 * database encoding: as is when valid in the payload encoding, otherwise
 * in bytea's hex form ("\x...").
 */
static char *
kappa_headers_text(KappaDecoder *d, const char *data, size_t len, int *outlen)
{
	if (len < MaxAllocSize &&
		pg_encoding_verifymbstr(d->encoding, data, (int) len) == (int) len)
	{
		char	   *s = kappa_to_server(d, data, len, "header", outlen);

		return s;
	}
	else
	{
		char	   *hex = palloc(len * 2 + 3);

		hex[0] = '\\';
		hex[1] = 'x';
		hex_encode(data, len, hex + 2);
		hex[len * 2 + 2] = '\0';
		*outlen = (int) len * 2 + 2;
		return hex;
	}
}

/*
 * kappa_headers_datum builds the kafka_headers value: a jsonb (or json)
 * object of header name to value as text (null for a header without value;
 * the last one wins when a name repeats), or NULL without headers.
 */
static bool
kappa_headers_datum(KappaDecoder *d, KappaColumn *col,
					rd_kafka_headers_t *headers, Datum *result)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	const char *name;
	const void *value;
	size_t		size;
	Jsonb	   *jb;

	if (headers == NULL || rd_kafka_header_cnt(headers) == 0)
		return false;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (size_t i = 0;
		 rd_kafka_header_get_all(headers, i, &name, &value, &size) ==
		 RD_KAFKA_RESP_ERR_NO_ERROR;
		 i++)
	{
		JsonbValue	k;
		JsonbValue	v;
		int			len;

		k.type = jbvString;
		k.val.string.val = kappa_headers_text(d, name, strlen(name), &len);
		k.val.string.len = len;
		pushJsonbValue(&state, WJB_KEY, &k);

		if (value == NULL)
			v.type = jbvNull;
		else
		{
			v.type = jbvString;
			v.val.string.val = kappa_headers_text(d, value, size, &len);
			v.val.string.len = len;
		}
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	jb = JsonbValueToJsonb(res);

	if (col->typid == JSONBOID)
		*result = JsonbPGetDatum(jb);
	else
		*result = PointerGetDatum(cstring_to_text(JsonbToCString(NULL, &jb->root,
																 VARSIZE(jb))));
	return true;
}

/*
 * kappa_fill_meta fills metadata column index 'i' from the message's
 * coordinates.
 */
static void
kappa_fill_meta(KappaDecoder *d, int i, const KappaMessageMeta *meta,
				Datum *values, bool *nulls)
{
	KappaColumn *col = &d->cols[i];

	nulls[i] = false;
	switch (col->kind)
	{
		case KAPPA_COL_KEY:
			if (meta->key == NULL)
				nulls[i] = true;
			else if (col->is_bytea)
			{
				bytea	   *b = palloc(meta->keylen + VARHDRSZ);

				SET_VARSIZE(b, meta->keylen + VARHDRSZ);
				memcpy(VARDATA(b), meta->key, meta->keylen);
				values[i] = PointerGetDatum(b);
			}
			else
			{
				KappaWhere	where = {NULL, 0, NULL, "The key"};
				int			len;
				char	   *s = kappa_to_server(d, meta->key, meta->keylen,
												"key", &len);

				if (s == meta->key)
					s = pnstrdup(s, len);
				kappa_input(d, col, s, len, &where, &values[i]);
			}
			break;
		case KAPPA_COL_PARTITION:
			values[i] = (col->typid == INT8OID) ?
				Int64GetDatum((int64) meta->partition) :
				Int32GetDatum(meta->partition);
			break;
		case KAPPA_COL_OFFSET:
			values[i] = Int64GetDatum(meta->offset);
			break;
		case KAPPA_COL_TIMESTAMP:
			if (meta->timestamp_ms < 0)
				nulls[i] = true;
			else
			{
				TimestampTz ts;

				if (meta->timestamp_ms > PG_INT64_MAX / 1000 ||
					pg_sub_s64_overflow(meta->timestamp_ms * 1000,
										(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) *
										USECS_PER_DAY, &ts) ||
					!IS_VALID_TIMESTAMP(ts))
					ereport(ERROR,
							(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
							 errmsg("kafka message timestamp out of range"),
							 errdetail("The message's timestamp is " INT64_FORMAT
									   " milliseconds since 1970.",
									   meta->timestamp_ms)));
				values[i] = TimestampTzGetDatum(ts);
			}
			break;
		case KAPPA_COL_HEADERS:
			nulls[i] = !kappa_headers_datum(d, col,
											(rd_kafka_headers_t *) meta->headers,
											&values[i]);
			break;
		default:
			nulls[i] = true;
			break;
	}
}

/*
 * KappaDecode decodes one message payload into values/nulls (arrays of the
 * target's natts), filling the kafka_* metadata columns from 'meta' (NULL:
 * no metadata).  Payload columns without a value get their default (or
 * NULL); dropped, generated and identity columns are NULL.  A message that
 * cannot be decoded raises an ERROR; the caller isolates it.  The Datums are
 * allocated in the current memory context.  When an error is raised, the
 * current memory context may be the decoder's scratch context, which the
 * next call resets: the caller's error handler must switch back to its own
 * context, as after any PG_CATCH.
 */
void
KappaDecode(KappaDecoder *d, const char *payload, size_t len,
			const KappaMessageMeta *meta, Datum *values, bool *nulls)
{
	MemoryContext outcxt = CurrentMemoryContext;
	KappaMessageMeta nometa = {NULL, 0, -1, -1, -1, NULL};

	if (meta == NULL)
		meta = &nometa;

	ResetExprContext(d->econtext);
	MemoryContextReset(d->scratch);
	d->outcxt = outcxt;
	d->meta = meta;
	MemoryContextSwitchTo(d->scratch);

	for (int i = 0; i < d->natts; i++)
	{
		values[i] = (Datum) 0;
		nulls[i] = true;
		d->filled[i] = false;
	}

	if (payload == NULL || len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("kafka message is empty"),
				 errdetail("Format %s takes one row per message; a message with an "
						   "empty or null payload (a tombstone) has none.",
						   kappa_format_names[d->format])));

	switch (d->format)
	{
		case KAPPA_FORMAT_JSON:
		case KAPPA_FORMAT_CSV:
			{
				int			slen;
				char	   *s = kappa_to_server(d, payload, len, "payload", &slen);

				if (d->format == KAPPA_FORMAT_JSON)
					kappa_decode_json(d, s, slen, values, nulls);
				else
					kappa_decode_csv(d, s, slen, values, nulls);
				break;
			}
		case KAPPA_FORMAT_TEXT:
			{
				KappaWhere	where = {NULL, 0, NULL, "The message"};
				int			slen;
				char	   *s = kappa_to_server(d, payload, len, "payload", &slen);

				if (s == payload)
					s = pnstrdup(s, slen);
				kappa_set_value(d, d->payload_col, s, slen, &where,
								values, nulls);
				break;
			}
		case KAPPA_FORMAT_BYTEA:
			{
				bytea	   *b;

				if (len >= MaxAllocSize - VARHDRSZ)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("kafka message payload is too large"),
							 errdetail("The payload has %zu bytes.", len)));
				b = MemoryContextAlloc(outcxt, len + VARHDRSZ);
				SET_VARSIZE(b, len + VARHDRSZ);
				memcpy(VARDATA(b), payload, len);
				values[d->payload_col] = PointerGetDatum(b);
				nulls[d->payload_col] = false;
				d->filled[d->payload_col] = true;
				break;
			}
	}

	/* metadata, and defaults for payload columns without a value */
	MemoryContextSwitchTo(outcxt);
	for (int i = 0; i < d->natts; i++)
	{
		KappaColumn *col = &d->cols[i];

		if (col->kind == KAPPA_COL_SKIP)
			continue;
		if (col->kind != KAPPA_COL_PAYLOAD)
			kappa_fill_meta(d, i, meta, values, nulls);
		else if (d->filled[i])
			continue;
		else if (col->defstate != NULL)
		{
			Datum		v = ExecEvalExprSwitchContext(col->defstate, d->econtext,
													  &nulls[i]);

			values[i] = nulls[i] ? (Datum) 0 :
				datumCopy(v, col->typbyval, col->typlen);
		}
		else if (!col->defnull)
		{
			values[i] = col->defvalue;
			nulls[i] = false;
		}
		else if (col->is_domain)
		{
			MemoryContextSwitchTo(d->scratch);
			kappa_set_null(d, i, NULL, values, nulls);
			MemoryContextSwitchTo(outcxt);
		}
	}
}

/*
 * KappaDecoderUsesTimeAndHeaders: see kafka.h.
 */
bool
KappaDecoderUsesTimeAndHeaders(KappaDecoder *d)
{
	for (int i = 0; i < d->natts; i++)
	{
		if (d->cols[i].kind == KAPPA_COL_TIMESTAMP ||
			d->cols[i].kind == KAPPA_COL_HEADERS)
			return true;
	}
	return false;
}

/*
 * kappa_meta_kind tells whether a column name is a metadata column's.
 */
static KappaColumnKind
kappa_meta_kind(const char *name)
{
	if (strcmp(name, "kafka_key") == 0)
		return KAPPA_COL_KEY;
	if (strcmp(name, "kafka_partition") == 0)
		return KAPPA_COL_PARTITION;
	if (strcmp(name, "kafka_offset") == 0)
		return KAPPA_COL_OFFSET;
	if (strcmp(name, "kafka_timestamp") == 0)
		return KAPPA_COL_TIMESTAMP;
	if (strcmp(name, "kafka_headers") == 0)
		return KAPPA_COL_HEADERS;
	return KAPPA_COL_PAYLOAD;
}

/*
 * kappa_check_meta_type refuses a metadata column whose type its value
 * cannot have.
 */
static void
kappa_check_meta_type(KappaColumn *col)
{
	const char *want = NULL;
	bool		ok = false;

	switch (col->kind)
	{
		case KAPPA_COL_KEY:
			ok = col->typid == TEXTOID || col->typid == VARCHAROID ||
				col->typid == BYTEAOID;
			want = "text, varchar or bytea";
			break;
		case KAPPA_COL_PARTITION:
			ok = col->typid == INT4OID || col->typid == INT8OID;
			want = "integer or bigint";
			break;
		case KAPPA_COL_OFFSET:
			ok = col->typid == INT8OID;
			want = "bigint";
			break;
		case KAPPA_COL_TIMESTAMP:
			ok = col->typid == TIMESTAMPTZOID;
			want = "timestamp with time zone";
			break;
		case KAPPA_COL_HEADERS:
			ok = col->typid == JSONBOID || col->typid == JSONOID;
			want = "jsonb or json";
			break;
		default:
			ok = true;
			break;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("metadata column \"%s\" has type %s, but must be %s",
						col->name, format_type_with_typemod(col->typid, col->typmod),
						want),
				 errdetail("Columns named kafka_key, kafka_partition, kafka_offset, "
						   "kafka_timestamp and kafka_headers are filled from the "
						   "message's metadata."),
				 errhint("Change the column's type to %s, or rename the column.",
						 want)));
}

/*
 * kappa_prepare_defaults compiles the default expression of every payload
 * column.  The target relation is found from the row type of 'tupdesc'; a
 * descriptor of no relation gives the types' defaults only.
 */
static void
kappa_prepare_defaults(KappaDecoder *d, TupleDesc tupdesc)
{
	Oid			relid = InvalidOid;
	Relation	rel = NULL;

	if (OidIsValid(tupdesc->tdtypeid) && tupdesc->tdtypeid != RECORDOID)
		relid = typeidTypeRelid(tupdesc->tdtypeid);
	if (OidIsValid(relid))
		rel = relation_open(relid, AccessShareLock);

	for (int i = 0; i < d->natts; i++)
	{
		KappaColumn *col = &d->cols[i];
		Node	   *expr = NULL;

		col->defnull = true;
		if (col->kind != KAPPA_COL_PAYLOAD)
			continue;

		if (rel != NULL && i < RelationGetNumberOfAttributes(rel))
		{
			Form_pg_attribute relatt = TupleDescAttr(RelationGetDescr(rel), i);

			if (!relatt->attisdropped && relatt->atttypid == col->typid &&
				strcmp(NameStr(relatt->attname), col->name) == 0)
				expr = build_column_default(rel, i + 1);
		}
		else
			expr = get_typdefault(col->typid);
		if (expr == NULL)
			continue;

		expr = (Node *) expression_planner((Expr *) expr);
		if (IsA(expr, Const))
		{
			col->defvalue = ((Const *) expr)->constvalue;
			col->defnull = ((Const *) expr)->constisnull;
		}
		else
		{
			col->defstate = ExecInitExpr((Expr *) expr, NULL);
			col->defnull = false;
		}
	}

	if (rel != NULL)
		relation_close(rel, AccessShareLock);
}

/*
 * kappa_payload_column picks the column that takes the whole payload in
 * formats text and bytea: the one named by option columns, or else the only
 * payload column of a suitable type.
 */
static int
kappa_payload_column(KappaDecoder *d, List *columns)
{
	const char *fmt = kappa_format_names[d->format];
	const char *want = (d->format == KAPPA_FORMAT_BYTEA) ?
	"bytea" : "text, varchar, char, json or jsonb";
	int			found = -1;
	int			count = 0;

	for (int i = 0; i < d->natts; i++)
	{
		KappaColumn *col = &d->cols[i];
		Oid			base;
		bool		ok;

		if (col->kind != KAPPA_COL_PAYLOAD)
			continue;
		base = getBaseType(col->typid);
		if (d->format == KAPPA_FORMAT_BYTEA)
			ok = (base == BYTEAOID);
		else
			ok = (base == TEXTOID || base == VARCHAROID || base == BPCHAROID ||
				  base == JSONOID || base == JSONBOID);

		if (columns != NIL)
		{
			if (strcmp(col->name, strVal(linitial(columns))) != 0)
				continue;
			if (!ok)
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("format %s cannot fill column \"%s\" of type %s",
								fmt, col->name,
								format_type_with_typemod(col->typid, col->typmod)),
						 errdetail("Format %s stores the whole message in one column of type %s.",
								   fmt, want)));
			return i;
		}
		if (ok)
		{
			found = i;
			count++;
		}
	}

	if (columns != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("option \"columns\" names \"%s\", which is not a payload column of the target",
						strVal(linitial(columns))),
				 errhint("Name a column of type %s that is not a metadata or generated column.",
						 want)));
	if (count == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("format %s needs a column of type %s in the target", fmt, want),
				 errdetail("Format %s stores the whole message in one column; "
						   "the target has no payload column of a suitable type.", fmt),
				 errhint("Add such a column, or choose another format.")));
	if (count > 1)
		ereport(ERROR,
				(errcode(ERRCODE_AMBIGUOUS_COLUMN),
				 errmsg("format %s found several columns that could take the message", fmt),
				 errdetail("Format %s stores the whole message in one column of type %s.",
						   fmt, want),
				 errhint("Name the column with option \"columns\".")));
	return found;
}

/*
 * KappaDecoderCreate prepares decoding of messages into rows of 'tupdesc'
 * ('options': format options, may be NULL).  Raises an error when an option
 * is invalid or a column of the target cannot be filled by the format (the
 * check create_kafka_source runs).  Everything is allocated in the current
 * memory context; the caller frees it by resetting or deleting it.
 */
KappaDecoder *
KappaDecoderCreate(KappaFormat format, TupleDesc tupdesc, Jsonb *options)
{
	KappaDecoder *d = palloc0(sizeof(KappaDecoder));
	HASHCTL		hctl;
	List	   *columns = NIL;
	int			npayload = 0;

	if ((int) format < 0 || (int) format >= lengthof(kappa_format_names))
		elog(ERROR, "invalid Kafka message format %d", (int) format);

	d->format = format;
	d->natts = tupdesc->natts;
	d->cols = palloc0(sizeof(KappaColumn) * Max(d->natts, 1));
	d->filled = palloc0(sizeof(bool) * Max(d->natts, 1));
	d->payload_col = -1;
	initStringInfo(&d->json_token);

	/* option defaults */
	d->encoding = PG_UTF8;
	d->delimiter = ',';
	d->quote = '"';
	d->escape = '\0';
	d->null_string = "";
	d->time_format = KAPPA_TIME_TEXT;
	kappa_parse_options(d, options, &columns);
	if (d->escape == '\0')
		d->escape = d->quote;

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = NAMEDATALEN;
	hctl.entrysize = sizeof(KappaColumnEntry);
	hctl.hcxt = CurrentMemoryContext;
	d->byname = hash_create("kappa decoder columns", Max(d->natts, 8), &hctl,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	for (int i = 0; i < d->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		KappaColumn *col = &d->cols[i];
		KappaColumnEntry *entry;
		Oid			infunc;
		Oid			base;

		col->name = pstrdup(NameStr(att->attname));
		col->typid = att->atttypid;
		col->typmod = att->atttypmod;
		if (att->attisdropped)
		{
			col->kind = KAPPA_COL_SKIP;
			continue;
		}

		entry = hash_search(d->byname, col->name, HASH_ENTER, NULL);
		entry->index = i;

		col->kind = kappa_meta_kind(col->name);
		if (att->attgenerated || att->attidentity)
			col->kind = KAPPA_COL_SKIP; /* filled by the executor */
		kappa_check_meta_type(col);
		if (col->kind == KAPPA_COL_SKIP)
			continue;

		base = getBaseType(col->typid);
		col->is_domain = (base != col->typid);
		col->is_json = (base == JSONOID || base == JSONBOID);
		col->is_text = (col->typid == TEXTOID);
		col->is_timestamp = (col->typid == TIMESTAMPOID ||
							 col->typid == TIMESTAMPTZOID);
		col->is_bytea = (col->typid == BYTEAOID);
		get_typlenbyval(col->typid, &col->typlen, &col->typbyval);
		getTypeInputInfo(col->typid, &infunc, &col->ioparam);
		fmgr_info(infunc, &col->infunc);
		if (col->kind == KAPPA_COL_PAYLOAD)
			npayload++;
	}

	switch (format)
	{
		case KAPPA_FORMAT_JSON:
			break;
		case KAPPA_FORMAT_CSV:
			if (columns != NIL && d->header)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("options \"columns\" and \"header\" cannot be used together"),
						 errdetail("With option \"header\", the header of each message names the columns.")));
			if (d->delimiter == d->quote || d->delimiter == d->escape)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("CSV delimiter must differ from the quote and escape characters")));
			if (!d->header)
			{
				ListCell   *lc;
				int			n = 0;

				d->field_cols = palloc(sizeof(int) *
									   (Max(npayload, list_length(columns)) + 1));
				if (columns == NIL)
				{
					for (int i = 0; i < d->natts; i++)
						if (d->cols[i].kind == KAPPA_COL_PAYLOAD)
							d->field_cols[n++] = i;
				}
				foreach(lc, columns)
				{
					const char *name = strVal(lfirst(lc));
					int			c = kappa_find_column(d, name);

					if (c < 0 || d->cols[c].kind != KAPPA_COL_PAYLOAD)
						ereport(ERROR,
								(errcode(ERRCODE_UNDEFINED_COLUMN),
								 errmsg("option \"columns\" names \"%s\", which is not a payload column of the target",
										name),
								 errhint("Name columns that are not metadata or generated columns.")));
					for (int j = 0; j < n; j++)
						if (d->field_cols[j] == c)
							ereport(ERROR,
									(errcode(ERRCODE_DUPLICATE_COLUMN),
									 errmsg("option \"columns\" names column \"%s\" twice",
											name)));
					d->field_cols[n++] = c;
				}
				d->nfield_cols = n;
				if (n == 0)
					ereport(ERROR,
							(errcode(ERRCODE_DATATYPE_MISMATCH),
							 errmsg("format csv needs at least one payload column in the target"),
							 errdetail("All columns of the target are metadata, dropped or generated columns.")));
			}
			break;
		case KAPPA_FORMAT_TEXT:
		case KAPPA_FORMAT_BYTEA:
			if (list_length(columns) > 1)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"columns\" must name one column for format %s",
								kappa_format_names[format]),
						 errdetail("Format %s stores the whole message in one column.",
								   kappa_format_names[format])));
			d->payload_col = kappa_payload_column(d, columns);
			break;
	}

	kappa_prepare_defaults(d, tupdesc);
	d->econtext = CreateStandaloneExprContext();
	d->scratch = AllocSetContextCreate(CurrentMemoryContext,
									   "kappa decoder scratch",
									   ALLOCSET_DEFAULT_SIZES);
	return d;
}

/*
 * kappa_option_error raises the error for an invalid option value.
 */
static void
kappa_option_error(const char *key, const char *want)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for format option \"%s\"", key),
			 errdetail("Option \"%s\" must be %s.", key, want)));
}

/*
 * kappa_option_string returns a string option's value; numbers and booleans
 * are taken as written.
 */
static char *
kappa_option_string(const char *key, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		default:
			kappa_option_error(key, "a string");
			return NULL;		/* keep compiler quiet */
	}
}

/*
 * kappa_option_bool reads a boolean option (true/false, or a string that
 * parse_bool accepts).
 */
static bool
kappa_option_bool(const char *key, JsonbValue *v)
{
	bool		result;

	if (v->type == jbvBool)
		return v->val.boolean;
	if (v->type != jbvString ||
		!parse_bool_with_len(v->val.string.val, v->val.string.len, &result))
		kappa_option_error(key, "a boolean");
	return result;
}

/*
 * kappa_option_char reads a one-character option (a single-byte character
 * other than a line break).
 */
static char
kappa_option_char(const char *key, JsonbValue *v)
{
	char	   *s = kappa_option_string(key, v);

	if (strlen(s) != 1 || IS_HIGHBIT_SET(s[0]) || s[0] == '\n' || s[0] == '\r')
		kappa_option_error(key, "a single one-byte character other than a line break");
	return s[0];
}

/*
 * kappa_option_columns reads option columns given as one string of
 * comma-separated names (SQL identifiers: unquoted names are folded to lower
 * case).  An array of names is read by the caller.
 */
static List *
kappa_option_columns(JsonbValue *v)
{
	List	   *result = NIL;

	if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
		List	   *names;
		ListCell   *lc;

		if (!SplitIdentifierString(s, ',', &names))
			kappa_option_error("columns", "a list of column names");
		foreach(lc, names)
			result = lappend(result, makeString((char *) lfirst(lc)));
		return result;
	}
	kappa_option_error("columns", "an array of column names, or one string of comma-separated names");
	return NIL;
}

/*
 * kappa_option_column_array reads option columns given as an array of
 * column names (exact names).
 */
static List *
kappa_option_column_array(JsonbContainer *array)
{
	List	   *result = NIL;
	JsonbIterator *it = JsonbIteratorInit(array);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (v.type != jbvString)
			kappa_option_error("columns", "an array of column names");
		result = lappend(result, makeString(pnstrdup(v.val.string.val,
													 v.val.string.len)));
	}
	return result;
}

/*
 * kappa_parse_options reads the format options from 'options' into the
 * decoder.  Unknown options and options of another format are refused.
 */
static void
kappa_parse_options(KappaDecoder *d, Jsonb *options, List **columns)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	const char *fmt = kappa_format_names[d->format];
	bool		csv = (d->format == KAPPA_FORMAT_CSV);
	bool		json = (d->format == KAPPA_FORMAT_JSON);
	bool		is_text = (d->format == KAPPA_FORMAT_TEXT);

	if (options == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("format options must be a jsonb object")));

	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		bool		valid;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);

		/* the value; an array (columns) is read element by element */
		(void) JsonbIteratorNext(&it, &v, true);
		if (v.type == jbvBinary)
		{
			if (strcmp(key, "columns") != 0 ||
				!JsonContainerIsArray(v.val.binary.data))
				kappa_option_error(key, "a string, a number or a boolean");
			valid = !json;
			if (valid)
				*columns = kappa_option_column_array(v.val.binary.data);
		}
		else if (v.type == jbvNull)
			valid = true;		/* null: the default */
		else if (strcmp(key, "strict") == 0)
		{
			valid = json || csv;
			d->strict = kappa_option_bool(key, &v);
		}
		else if (strcmp(key, "header") == 0)
		{
			valid = csv;
			d->header = kappa_option_bool(key, &v);
		}
		else if (strcmp(key, "delimiter") == 0)
		{
			valid = csv;
			d->delimiter = kappa_option_char(key, &v);
		}
		else if (strcmp(key, "quote") == 0)
		{
			valid = csv;
			d->quote = kappa_option_char(key, &v);
		}
		else if (strcmp(key, "escape") == 0)
		{
			valid = csv;
			d->escape = kappa_option_char(key, &v);
		}
		else if (strcmp(key, "null") == 0)
		{
			valid = csv;
			d->null_string = kappa_option_string(key, &v);
		}
		else if (strcmp(key, "encoding") == 0)
		{
			char	   *name = kappa_option_string(key, &v);
			int			dbenc = GetDatabaseEncoding();

			valid = json || csv || is_text;
			d->encoding = pg_char_to_encoding(name);
			if (d->encoding < 0 || !PG_VALID_BE_ENCODING(d->encoding))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("\"%s\" is not a valid encoding name", name),
						 errhint("Option \"encoding\" takes a server encoding such as UTF8 or LATIN1.")));
			if (d->encoding != dbenc && dbenc != PG_SQL_ASCII &&
				d->encoding != PG_SQL_ASCII &&
				!OidIsValid(FindDefaultConversionProc(d->encoding, dbenc)))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_FUNCTION),
						 errmsg("no conversion from encoding \"%s\" to the database encoding \"%s\"",
								pg_encoding_to_char(d->encoding),
								pg_encoding_to_char(dbenc))));
		}
		else if (strcmp(key, "time_format") == 0)
		{
			char	   *name = kappa_option_string(key, &v);

			valid = json || csv;
			if (strcmp(name, "text") == 0)
				d->time_format = KAPPA_TIME_TEXT;
			else if (strcmp(name, "epoch") == 0 || strcmp(name, "epoch_s") == 0)
				d->time_format = KAPPA_TIME_EPOCH_S;
			else if (strcmp(name, "epoch_ms") == 0)
				d->time_format = KAPPA_TIME_EPOCH_MS;
			else if (strcmp(name, "epoch_us") == 0)
				d->time_format = KAPPA_TIME_EPOCH_US;
			else
				kappa_option_error(key, "text, epoch_s, epoch_ms or epoch_us");
		}
		else if (strcmp(key, "columns") == 0)
		{
			valid = !json;
			if (valid)
				*columns = kappa_option_columns(&v);
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown format option \"%s\"", key),
					 errhint("The format options are strict, header, delimiter, quote, "
							 "escape, null, encoding, time_format and columns.")));

		if (!valid)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"%s\" is not valid for format %s", key, fmt)));
	}
}

/*
 * kappa_preview_headers builds librdkafka headers from a jsonb object of
 * name to value (null for a header without value), for decode_preview.
 */
static rd_kafka_headers_t *
kappa_preview_headers(Jsonb *headers)
{
	rd_kafka_headers_t *result;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;

	if (!JB_ROOT_IS_OBJECT(headers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kafka_headers must be a jsonb object of header name to value")));

	result = rd_kafka_headers_new(8);
	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			name = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			if (v.type == jbvNull)
				rd_kafka_header_add(result, name, -1, NULL, 0);
			else
			{
				char	   *value = kappa_option_string(name, &v);

				rd_kafka_header_add(result, name, -1, value, strlen(value));
			}
		}
	}
	return result;
}

/*
 * kappa_decode_preview(target regclass, format text, payload bytea,
 * options jsonb, kafka_key bytea, kafka_partition int, kafka_offset bigint,
 * kafka_timestamp timestamptz, kafka_headers jsonb) decodes one message as
 * a source with this target and format would, and returns the row as a
 * jsonb object of column name to value.  Defaults are evaluated (a nextval
 * default advances its sequence); nothing is inserted.
 */
Datum
kappa_decode_preview(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Relation	rel;
	TupleDesc	tupdesc;
	KappaDecoder *d;
	KappaMessageMeta meta;
	bytea	   *payload;
	bytea	   *key = NULL;
	Datum	   *values;
	bool	   *nulls;
	HeapTuple	tuple;
	Datum		json;
	rd_kafka_headers_t *volatile headers = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("target and format must not be null")));
	relid = PG_GETARG_OID(0);
	rel = relation_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE &&
		rel->rd_rel->relkind != RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table or a stream",
						RelationGetRelationName(rel))));
	tupdesc = RelationGetDescr(rel);

	d = KappaDecoderCreate(KappaParseFormat(text_to_cstring(PG_GETARG_TEXT_PP(1))),
						   tupdesc, PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3));

	payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_BYTEA_PP(2);
	if (!PG_ARGISNULL(4))
		key = PG_GETARG_BYTEA_PP(4);
	meta.key = key ? VARDATA_ANY(key) : NULL;
	meta.keylen = key ? VARSIZE_ANY_EXHDR(key) : 0;
	meta.partition = PG_ARGISNULL(5) ? 0 : PG_GETARG_INT32(5);
	meta.offset = PG_ARGISNULL(6) ? 0 : PG_GETARG_INT64(6);
	if (PG_ARGISNULL(7))
		meta.timestamp_ms = -1;
	else
	{
		TimestampTz ts = PG_GETARG_TIMESTAMPTZ(7);

		if (TIMESTAMP_NOT_FINITE(ts))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("kafka_timestamp must be finite")));
		meta.timestamp_ms = (ts + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) *
							 USECS_PER_DAY) / 1000;
	}
	meta.headers = NULL;

	values = palloc(sizeof(Datum) * tupdesc->natts);
	nulls = palloc(sizeof(bool) * tupdesc->natts);

	PG_TRY();
	{
		if (!PG_ARGISNULL(8))
			headers = kappa_preview_headers(PG_GETARG_JSONB_P(8));
		meta.headers = headers;
		KappaDecode(d, payload ? VARDATA_ANY(payload) : NULL,
					payload ? VARSIZE_ANY_EXHDR(payload) : 0,
					&meta, values, nulls);
	}
	PG_FINALLY();
	{
		if (headers != NULL)
			rd_kafka_headers_destroy(headers);
	}
	PG_END_TRY();

	tuple = heap_form_tuple(tupdesc, values, nulls);
	json = DirectFunctionCall1(row_to_json, HeapTupleGetDatum(tuple));
	relation_close(rel, AccessShareLock);

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in,
										CStringGetDatum(TextDatumGetCString(json))));
}
