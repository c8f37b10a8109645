/*-------------------------------------------------------------------------
 *
 * decode_change.c
 *	  Message decoders for keyed changelogs: the envelopes 'upsert' (the
 *	  message key is the primary key, the value the row, a null value
 *	  deletes) and 'debezium' (Debezium change events, op c/r/u/d/t), plus
 *	  kappa.decode_change_preview() to try one from SQL.
 *
 * A change decoder is a KappaDecoder (decode.c) prepared with 'keyed' set,
 * so that identity columns are payload columns and payload columns the
 * message has no value for are NULL rather than their default, plus the
 * state below (KappaDecoder.change).  KappaDecodeChange turns one message
 * into a KappaChange (kafka.h).
 *
 * 'upsert': the value is decoded by KappaDecode in the source's format; the
 * key (key_format json: an object of key column name to value, or a bare
 * scalar for a one-column key, either inside a Kafka Connect JsonConverter
 * schema wrapper or not; key_format text: the whole key is the text of the
 * one key column) then supplies the key columns.
 *
 * 'debezium' (format json only): the value is a Debezium change event, with
 * or without the JsonConverter schema wrapper ({"schema": ..., "payload":
 * ...}, exactly these two keys: detected per message, on keys as on
 * values).  The event is walked with PostgreSQL's JSON lexer, field by
 * field, straight from the message bytes: the top level, the payload, and
 * the 'after' object whose fields go through the columns' input functions
 * (decode_value.c) without a jsonb document being built.  When the event
 * has the schema wrapper, the schema of the 'after' struct says how values
 * are encoded (Kafka Connect Decimal, Date, Time, Timestamp; Debezium's
 * VariableScaleDecimal, Date, Time, MicroTime, NanoTime, Timestamp,
 * MicroTimestamp, NanoTimestamp; bytes as base64); the mapping is kept per
 * decoder and parsed again only when the schema's text changes.  Without
 * the wrapper, the column type decides: an integer is epoch microseconds
 * for a timestamp or timestamptz column (the PostgreSQL connector's
 * default), epoch days for a date column and microseconds since midnight for
 * a time column; {"scale": n, "value": base64} is a VariableScaleDecimal for
 * a numeric column.  Debezium's unchanged-TOAST placeholder
 * (__debezium_unavailable_value) marks the column unavailable.  Columns
 * absent from 'after' are NULL (not their default), as for 'upsert': the
 * same message gives the same row whether it inserts or replaces.
 *
 * Encoded values are turned into the text of their value in ISO form
 * (independent of DateStyle and TimeZone: timestamps are written with the
 * "+00" offset, so that a timestamp column gets the UTC wall clock and a
 * timestamptz column the instant) and then go through the column's input
 * function like any other value, so that domains, typmods and the error
 * context line work as for format json.
 *
 * Errors are raised as in KappaDecode (see decode.c): errcode, errmsg and a
 * detail; DecodeErrorCallback adds the message's context line.
 *
 * Calls go down only: this file calls decode.c and decode_value.c (see
 * decode_internal.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/index.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "common/jsonapi.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/typcache.h"

#include "decode_internal.h"

PG_FUNCTION_INFO_V1(kappa_decode_change_preview);

/* Debezium's default unavailable.value.placeholder */
#define DCHG_UNAVAILABLE	"__debezium_unavailable_value"

/* How a field's value is encoded, from the schema wrapper. */
typedef enum DchgEncoding
{
	DCHG_ENC_PLAIN,				/* as the column type asks (see header) */
	DCHG_ENC_DECIMAL,			/* base64 unscaled bytes, scale in schema */
	DCHG_ENC_VSDECIMAL,			/* {"scale": n, "value": base64} */
	DCHG_ENC_BYTES,				/* base64 */
	DCHG_ENC_DATE_DAYS,			/* days since 1970-01-01 */
	DCHG_ENC_TIME_MS,			/* since midnight */
	DCHG_ENC_TIME_US,
	DCHG_ENC_TIME_NS,
	DCHG_ENC_TS_MS,				/* since 1970-01-01 00:00:00 UTC */
	DCHG_ENC_TS_US,
	DCHG_ENC_TS_NS
} DchgEncoding;

/* What the column type is, for values without a schema. */
typedef enum DchgColType
{
	DCHG_COL_OTHER,
	DCHG_COL_TIMESTAMP,			/* timestamp or timestamptz */
	DCHG_COL_DATE,
	DCHG_COL_TIME,
	DCHG_COL_NUMERIC,
	DCHG_COL_JSON
} DchgColType;

/* The encodings of a struct's fields, by column, for one schema text. */
typedef struct DchgSchema
{
	char	   *text;			/* the schema's JSON text, or NULL: none */
	int			len;
	DchgEncoding *enc;			/* per column */
	int		   *scale;			/* per column, for DCHG_ENC_DECIMAL */
} DchgSchema;

/* State of a change decoder (KappaDecoder.change). */
typedef struct DecodeChange
{
	KappaEnvelope envelope;
	KappaFormat key_format;
	int			nkeys;
	int		   *keycols;		/* 0-based column indexes */
	bool	   *iskey;			/* per column */
	FmgrInfo   *keyeq;			/* equality of each key column, or fn_oid
								 * InvalidOid: binary comparison */
	Oid		   *keycoll;
	DchgColType *coltype;		/* per column */
	char	  **order_by;		/* path components, NULL-terminated */
	DchgSchema	value_schema;	/* of 'after' (and 'before') */
	DchgSchema	key_schema;
} DecodeChange;

/* A JSON value found in a message: its token type and its text. */
typedef struct DchgValue
{
	JsonTokenType type;			/* JSON_TOKEN_INVALID: absent */
	char	   *start;			/* the value's text in the message */
	int			len;
	char	   *str;			/* scalars: the string de-escaped, or the
								 * number, NUL-terminated */
	int			slen;
} DchgValue;

/* A JSON object or array being walked. */
typedef struct DchgWalk
{
	JsonLexContext *lex;
	bool		first;
	bool		array;
} DchgWalk;

/*
 * dchg_json_error raises the error for JSON that is not valid; 'what'
 * names the part of the message.
 */
static void
dchg_json_error(JsonLexContext *lex, JsonParseErrorType err, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("kafka message %s is not valid JSON", what),
			 err != JSON_SUCCESS ?
			 errdetail("%s The %s begins with %s.", json_errdetail(err, lex), what,
					   DecodeSample(lex->input, lex->input_length)) :
			 errdetail("Unexpected token at byte %d. The %s begins with %s.",
					   (int) (lex->token_start - lex->input), what,
					   DecodeSample(lex->input, lex->input_length))));
}

/*
 * dchg_lex moves 'lex' to the next token, raising the error of invalid
 * JSON.
 */
static void
dchg_lex(JsonLexContext *lex, const char *what)
{
	JsonParseErrorType err = json_lex(lex);

	if (err != JSON_SUCCESS)
		dchg_json_error(lex, err, what);
}

/*
 * dchg_skip moves 'lex', on the first token of a value, to the value's last
 * token, checking the grammar of nested objects and arrays.
 */
static void
dchg_skip(JsonLexContext *lex, const char *what)
{
	JsonTokenType t = lex->token_type;

	check_stack_depth();
	if (t == JSON_TOKEN_OBJECT_START || t == JSON_TOKEN_ARRAY_START)
	{
		bool		obj = (t == JSON_TOKEN_OBJECT_START);
		JsonTokenType end = obj ? JSON_TOKEN_OBJECT_END : JSON_TOKEN_ARRAY_END;
		bool		first = true;

		for (;;)
		{
			dchg_lex(lex, what);
			if (lex->token_type == end && first)
				return;
			if (!first)
			{
				if (lex->token_type == end)
					return;
				if (lex->token_type != JSON_TOKEN_COMMA)
					dchg_json_error(lex, JSON_SUCCESS, what);
				dchg_lex(lex, what);
			}
			first = false;
			if (obj)
			{
				if (lex->token_type != JSON_TOKEN_STRING)
					dchg_json_error(lex, JSON_SUCCESS, what);
				dchg_lex(lex, what);
				if (lex->token_type != JSON_TOKEN_COLON)
					dchg_json_error(lex, JSON_SUCCESS, what);
				dchg_lex(lex, what);
			}
			dchg_skip(lex, what);
		}
	}
	if (t != JSON_TOKEN_STRING && t != JSON_TOKEN_NUMBER &&
		t != JSON_TOKEN_TRUE && t != JSON_TOKEN_FALSE && t != JSON_TOKEN_NULL)
		dchg_json_error(lex, JSON_SUCCESS, what);
}

/*
 * dchg_value fills 'v' from the value 'lex' is on (its first token),
 * leaving 'lex' on its last token.
 */
static void
dchg_value(JsonLexContext *lex, DchgValue *v)
{
	v->type = lex->token_type;
	v->start = lex->token_start;
	v->str = NULL;
	v->slen = 0;
	if (v->type == JSON_TOKEN_STRING)
	{
		v->str = pstrdup(lex->strval->data);
		v->slen = lex->strval->len;
	}
	else if (v->type == JSON_TOKEN_NUMBER || v->type == JSON_TOKEN_TRUE ||
			 v->type == JSON_TOKEN_FALSE)
	{
		v->slen = lex->token_terminator - lex->token_start;
		v->str = pnstrdup(lex->token_start, v->slen);
	}
	else
		dchg_skip(lex, "message");
	v->len = lex->token_terminator - v->start;
}

/*
 * dchg_open starts reading the JSON value data[0 .. len) and fills 'v'
 * with it.  Returns the lexer, which the caller hands to dchg_walk_start
 * if the value is an object or array.
 */
static JsonLexContext *
dchg_open(char *data, int len, DchgValue *v, const char *what)
{
	JsonLexContext *lex;

	lex = makeJsonLexContextCstringLen(data, len, GetDatabaseEncoding(), true);
	dchg_lex(lex, what);
	if (lex->token_type == JSON_TOKEN_END)
		dchg_json_error(lex, JSON_SUCCESS, what);
	{
		char	   *start = lex->token_start;

		if (lex->token_type == JSON_TOKEN_OBJECT_START ||
			lex->token_type == JSON_TOKEN_ARRAY_START)
		{
			/* the caller walks it; check the whole value once first */
			JsonLexContext *check = makeJsonLexContextCstringLen(data, len,
																 GetDatabaseEncoding(),
																 false);

			dchg_lex(check, what);
			dchg_skip(check, what);
			dchg_lex(check, what);
			if (check->token_type != JSON_TOKEN_END)
				dchg_json_error(check, JSON_SUCCESS, what);
			v->type = lex->token_type;
			v->start = start;
			v->len = len - (start - data);
			v->str = NULL;
			return lex;
		}
		dchg_value(lex, v);
		dchg_lex(lex, what);
		if (lex->token_type != JSON_TOKEN_END)
			dchg_json_error(lex, JSON_SUCCESS, what);
	}
	return lex;
}

/*
 * dchg_sub returns a lexer on the object or array 'v' (found inside a
 * message already checked by dchg_open), positioned on its first token.
 */
static JsonLexContext *
dchg_sub(DchgValue *v)
{
	JsonLexContext *lex;

	lex = makeJsonLexContextCstringLen(v->start, v->len, GetDatabaseEncoding(),
									   true);
	dchg_lex(lex, "message");
	return lex;
}

/* dchg_walk_start begins walking the object or array 'lex' is on. */
static void
dchg_walk_start(DchgWalk *w, JsonLexContext *lex)
{
	w->lex = lex;
	w->first = true;
	w->array = (lex->token_type == JSON_TOKEN_ARRAY_START);
}

/*
 * dchg_walk_next moves to the next field (or element) of the object (or
 * array) being walked: sets *name (NULL for arrays) and 'v'.  Returns false
 * at its end.
 */
static bool
dchg_walk_next(DchgWalk *w, char **name, DchgValue *v)
{
	JsonLexContext *lex = w->lex;
	JsonTokenType end = w->array ? JSON_TOKEN_ARRAY_END : JSON_TOKEN_OBJECT_END;

	dchg_lex(lex, "message");
	if (lex->token_type == end)
		return false;
	if (!w->first)
	{
		if (lex->token_type != JSON_TOKEN_COMMA)
			dchg_json_error(lex, JSON_SUCCESS, "message");
		dchg_lex(lex, "message");
	}
	w->first = false;
	*name = NULL;
	if (!w->array)
	{
		if (lex->token_type != JSON_TOKEN_STRING)
			dchg_json_error(lex, JSON_SUCCESS, "message");
		*name = pstrdup(lex->strval->data);
		dchg_lex(lex, "message");
		if (lex->token_type != JSON_TOKEN_COLON)
			dchg_json_error(lex, JSON_SUCCESS, "message");
		dchg_lex(lex, "message");
	}
	dchg_value(lex, v);
	return true;
}

/*
 * dchg_unwrap finds the JSON value of a message part ('what': "payload" or
 * "key"): if it is a Kafka Connect JsonConverter envelope, an object with
 * exactly the keys "schema" and "payload", *value is the payload and
 * *schema the schema; otherwise *value is the whole part and schema->type
 * is JSON_TOKEN_INVALID.
 */
static void
dchg_unwrap(char *data, int len, const char *what,
			DchgValue *value, DchgValue *schema)
{
	JsonLexContext *lex = dchg_open(data, len, value, what);
	DchgWalk	w;
	DchgValue	v;
	DchgValue	found_schema = {JSON_TOKEN_INVALID};
	DchgValue	found_payload = {JSON_TOKEN_INVALID};
	char	   *name;
	int			n = 0;

	schema->type = JSON_TOKEN_INVALID;
	if (value->type != JSON_TOKEN_OBJECT_START)
		return;
	dchg_walk_start(&w, lex);
	while (dchg_walk_next(&w, &name, &v))
	{
		if (++n > 2)
			return;
		if (strcmp(name, "schema") == 0)
			found_schema = v;
		else if (strcmp(name, "payload") == 0)
			found_payload = v;
		else
			return;
	}
	if (found_schema.type == JSON_TOKEN_INVALID ||
		found_payload.type == JSON_TOKEN_INVALID)
		return;
	*schema = found_schema;
	*value = found_payload;
}

/*
 * dchg_encoding_of maps a Kafka Connect schema name (and type) to the
 * encoding of its values.
 */
static DchgEncoding
dchg_encoding_of(const char *name, const char *type)
{
	static const struct
	{
		const char *name;
		DchgEncoding enc;
	}			names[] =
	{
		{"org.apache.kafka.connect.data.Decimal", DCHG_ENC_DECIMAL},
		{"io.debezium.data.VariableScaleDecimal", DCHG_ENC_VSDECIMAL},
		{"org.apache.kafka.connect.data.Date", DCHG_ENC_DATE_DAYS},
		{"io.debezium.time.Date", DCHG_ENC_DATE_DAYS},
		{"org.apache.kafka.connect.data.Time", DCHG_ENC_TIME_MS},
		{"io.debezium.time.Time", DCHG_ENC_TIME_MS},
		{"io.debezium.time.MicroTime", DCHG_ENC_TIME_US},
		{"io.debezium.time.NanoTime", DCHG_ENC_TIME_NS},
		{"org.apache.kafka.connect.data.Timestamp", DCHG_ENC_TS_MS},
		{"io.debezium.time.Timestamp", DCHG_ENC_TS_MS},
		{"io.debezium.time.MicroTimestamp", DCHG_ENC_TS_US},
		{"io.debezium.time.NanoTimestamp", DCHG_ENC_TS_NS},
	};

	if (name != NULL)
	{
		for (int i = 0; i < lengthof(names); i++)
			if (strcmp(name, names[i].name) == 0)
				return names[i].enc;
	}
	if (type != NULL && strcmp(type, "bytes") == 0)
		return DCHG_ENC_BYTES;
	return DCHG_ENC_PLAIN;
}

/*
 * dchg_struct_fields reads the "fields" of the struct schema 'v' into the
 * per-column encodings of 's'.
 */
static void
dchg_struct_fields(KappaDecoder *d, DchgSchema *s, DchgValue *structv)
{
	DchgWalk	w;
	DchgValue	v;
	char	   *name;

	if (structv->type != JSON_TOKEN_OBJECT_START)
		return;
	dchg_walk_start(&w, dchg_sub(structv));
	while (dchg_walk_next(&w, &name, &v))
	{
		DchgWalk	fw;
		DchgValue	f;

		if (strcmp(name, "fields") != 0 || v.type != JSON_TOKEN_ARRAY_START)
			continue;
		dchg_walk_start(&fw, dchg_sub(&v));
		while (dchg_walk_next(&fw, &name, &f))
		{
			DchgWalk	ew;
			DchgValue	e;
			char	   *field = NULL;
			char	   *sname = NULL;
			char	   *type = NULL;
			int			scale = 0;
			int			col;

			if (f.type != JSON_TOKEN_OBJECT_START)
				continue;
			dchg_walk_start(&ew, dchg_sub(&f));
			while (dchg_walk_next(&ew, &name, &e))
			{
				if (e.type == JSON_TOKEN_STRING && strcmp(name, "field") == 0)
					field = e.str;
				else if (e.type == JSON_TOKEN_STRING && strcmp(name, "name") == 0)
					sname = e.str;
				else if (e.type == JSON_TOKEN_STRING && strcmp(name, "type") == 0)
					type = e.str;
				else if (e.type == JSON_TOKEN_OBJECT_START &&
						 strcmp(name, "parameters") == 0)
				{
					DchgWalk	pw;
					DchgValue	p;

					dchg_walk_start(&pw, dchg_sub(&e));
					while (dchg_walk_next(&pw, &name, &p))
						if (strcmp(name, "scale") == 0 && p.str != NULL)
							scale = pg_strtoint32(p.str);
				}
			}
			if (field == NULL || (col = DecodeFindColumn(d, field)) < 0)
				continue;
			s->enc[col] = dchg_encoding_of(sname, type);
			s->scale[col] = scale;
		}
	}
}

/*
 * dchg_schema makes 's' describe the schema 'schema' (JSON_TOKEN_INVALID:
 * none), parsing it only when its text differs from the last one's.
 * 'after': the schema is a Debezium envelope's, whose field "after" is the
 * row's struct; else the schema is the struct itself (a key's).  The
 * mapping lives in the decoder's memory context.
 */
static void
dchg_schema(KappaDecoder *d, DchgSchema *s, DchgValue *schema, bool after)
{
	MemoryContext cxt = GetMemoryChunkContext(d);

	if (schema->type != JSON_TOKEN_OBJECT_START)
	{
		if (s->text !=NULL)
		{
			pfree(s->text);
			s->text = NULL;
			memset(s->enc, 0, sizeof(DchgEncoding) * d->natts);
		}
		return;
	}
	if (s->text !=NULL && s->len == schema->len &&
		memcmp(s->text, schema->start, schema->len) == 0)
		return;

	if (s->text !=NULL)
		pfree(s->text);
	s->text = NULL;
	memset(s->enc, 0, sizeof(DchgEncoding) * d->natts);
	memset(s->scale, 0, sizeof(int) * d->natts);

	if (after)
	{
		DchgWalk	w;
		DchgValue	v;
		char	   *name;

		dchg_walk_start(&w, dchg_sub(schema));
		while (dchg_walk_next(&w, &name, &v))
		{
			DchgWalk	fw;
			DchgValue	f;

			if (strcmp(name, "fields") != 0 || v.type != JSON_TOKEN_ARRAY_START)
				continue;
			dchg_walk_start(&fw, dchg_sub(&v));
			while (dchg_walk_next(&fw, &name, &f))
			{
				DchgWalk	ew;
				DchgValue	e;
				bool		is_after = false;

				if (f.type != JSON_TOKEN_OBJECT_START)
					continue;
				dchg_walk_start(&ew, dchg_sub(&f));
				while (dchg_walk_next(&ew, &name, &e))
					if (strcmp(name, "field") == 0 && e.str != NULL &&
						strcmp(e.str, "after") == 0)
						is_after = true;
				if (is_after)
					dchg_struct_fields(d, s, &f);
			}
		}
	}
	else
		dchg_struct_fields(d, s, schema);

	s->text = MemoryContextAlloc(cxt, schema->len);
	memcpy(s->text, schema->start, schema->len);
	s->len = schema->len;
}

/*
 * dchg_int64 reads the integer of field 'fname' ('v'), raising an error if
 * it is not one.
 */
static int64
dchg_int64(const char *fname, DchgValue *v, const char *what)
{
	int64		result;
	char	   *end;

	if (v->type == JSON_TOKEN_NUMBER || v->type == JSON_TOKEN_STRING)
	{
		errno = 0;
		result = strtoi64(v->str, &end, 10);
		if (*end == '\0' && errno == 0 && end != v->str)
			return result;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("field \"%s\" must be an integer (%s)", fname, what),
			 errdetail("Field %s holds %s.", DecodeFieldName(fname),
					   DecodeSample(v->start, v->len))));
	return 0;					/* keep compiler quiet */
}

/*
 * dchg_ymd appends the date 'jd' (a Julian day) in ISO form to 'buf'.
 */
static void
dchg_ymd(StringInfo buf, int64 jd, const char *fname)
{
	int			y,
				m,
				dd;

	/* the range of type date */
	if (jd < DATETIME_MIN_JULIAN || jd >= DATE_END_JULIAN)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("date out of range in field \"%s\"", fname)));
	j2date((int) jd, &y, &m, &dd);
	if (y <= 0)
		appendStringInfo(buf, "%04d-%02d-%02d BC", 1 - y, m, dd);
	else
		appendStringInfo(buf, "%04d-%02d-%02d", y, m, dd);
}

/*
 * dchg_clock appends 'units' (of 1/persec second) since midnight as
 * HH:MM:SS.fraction to 'buf'.  'units' may reach a day (24:00:00).
 */
static void
dchg_clock(StringInfo buf, int64 units, int64 persec, int digits)
{
	int64		secs = units / persec;
	int64		frac = units % persec;

	appendStringInfo(buf, "%02d:%02d:%02d",
					 (int) (secs / 3600), (int) (secs / 60 % 60), (int) (secs % 60));
	if (digits > 0)
		appendStringInfo(buf, ".%0*lld", digits, (long long) frac);
}

/*
 * dchg_epoch_text returns the ISO text of an instant 'value' units of
 * 1/persec second since 1970 UTC, with the +00 offset.
 */
static char *
dchg_epoch_text(int64 value, int64 persec, int digits, const char *fname)
{
	StringInfoData buf;
	int64		perday = persec * SECS_PER_DAY;
	int64		days = value / perday;
	int64		rest = value % perday;

	if (rest < 0)
	{
		rest += perday;
		days--;
	}
	initStringInfo(&buf);
	dchg_ymd(&buf, days + UNIX_EPOCH_JDATE, fname);
	if (buf.data[buf.len - 1] == 'C')
	{
		/* BC: the era goes after the time */
		buf.len -= 3;
		buf.data[buf.len] = '\0';
		appendStringInfoChar(&buf, ' ');
		dchg_clock(&buf, rest, persec, digits);
		appendStringInfoString(&buf, "+00 BC");
		return buf.data;
	}
	appendStringInfoChar(&buf, ' ');
	dchg_clock(&buf, rest, persec, digits);
	appendStringInfoString(&buf, "+00");
	return buf.data;
}

/*
 * dchg_base64 decodes the base64 text of field 'fname'; sets *len.
 */
static unsigned char *
dchg_base64(const char *fname, DchgValue *v, int *len)
{
	unsigned char *result;

	if (v->type == JSON_TOKEN_STRING)
	{
		result = palloc(pg_b64_dec_len(v->slen) + 1);
		*len = pg_b64_decode(v->str, v->slen, (char *) result,
							 pg_b64_dec_len(v->slen));
		if (*len >= 0)
			return result;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("field \"%s\" is not valid base64", fname),
			 errdetail("Field %s holds %s; its schema says it holds bytes in base64.",
					   DecodeFieldName(fname), DecodeSample(v->start, v->len))));
	return NULL;				/* keep compiler quiet */
}

/*
 * dchg_decimal_text returns the text of the decimal whose unscaled value is
 * the big-endian two's-complement integer bytes[0 .. len), with 'scale'.
 */
static char *
dchg_decimal_text(unsigned char *bytes, int len, int scale)
{
	bool		neg = (len > 0 && (bytes[0] & 0x80));
	char	   *digits = palloc(len * 3 + 2);
	int			ndig = 0;
	int			start = 0;
	StringInfoData buf;

	if (neg)
	{
		/* two's complement: invert and add one */
		int			carry = 1;

		for (int i = len - 1; i >= 0; i--)
		{
			int			b = (unsigned char) ~bytes[i] + carry;

			bytes[i] = (unsigned char) (b & 0xff);
			carry = b >> 8;
		}
	}
	/* repeated division by 10, least significant digit first */
	while (start < len)
	{
		int			rem = 0;

		for (int i = start; i < len; i++)
		{
			int			cur = rem * 256 + bytes[i];

			bytes[i] = (unsigned char) (cur / 10);
			rem = cur % 10;
		}
		digits[ndig++] = '0' + rem;
		while (start < len && bytes[start] == 0)
			start++;
	}
	if (ndig == 0)
		digits[ndig++] = '0';

	initStringInfo(&buf);
	if (neg)
		appendStringInfoChar(&buf, '-');
	if (scale <= 0)
	{
		for (int i = ndig - 1; i >= 0; i--)
			appendStringInfoChar(&buf, digits[i]);
		for (int i = 0; i < -scale; i++)
			appendStringInfoChar(&buf, '0');
		return buf.data;
	}
	if (ndig <= scale)
	{
		appendStringInfoString(&buf, "0.");
		for (int i = 0; i < scale - ndig; i++)
			appendStringInfoChar(&buf, '0');
		for (int i = ndig - 1; i >= 0; i--)
			appendStringInfoChar(&buf, digits[i]);
		return buf.data;
	}
	for (int i = ndig - 1; i >= 0; i--)
	{
		appendStringInfoChar(&buf, digits[i]);
		if (i == scale)
			appendStringInfoChar(&buf, '.');
	}
	return buf.data;
}

/*
 * dchg_vsdecimal_text reads a VariableScaleDecimal {"scale": n, "value":
 * base64} of field 'fname' and returns its text.
 */
static char *
dchg_vsdecimal_text(const char *fname, DchgValue *v)
{
	DchgWalk	w;
	DchgValue	e;
	DchgValue	value = {JSON_TOKEN_INVALID};
	char	   *name;
	int			scale = 0;
	bool		has_scale = false;
	unsigned char *bytes;
	int			len;

	dchg_walk_start(&w, dchg_sub(v));
	while (dchg_walk_next(&w, &name, &e))
	{
		if (strcmp(name, "scale") == 0)
		{
			scale = (int) dchg_int64(fname, &e, "the scale of a VariableScaleDecimal");
			has_scale = true;
		}
		else if (strcmp(name, "value") == 0)
			value = e;
	}
	if (!has_scale || value.type == JSON_TOKEN_INVALID || scale < -1000 ||
		scale > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("field \"%s\" is not a VariableScaleDecimal", fname),
				 errdetail("Field %s holds %s.", DecodeFieldName(fname),
						   DecodeSample(v->start, v->len)),
				 errhint("A numeric column takes a JSON number, a string, or an object "
						 "{\"scale\": n, \"value\": base64} (io.debezium.data.VariableScaleDecimal).")));
	bytes = dchg_base64(fname, &value, &len);
	return dchg_decimal_text(bytes, len, scale);
}

/*
 * dchg_looks_numeric tells whether 'str' could be the text of a numeric
 * (digits, sign, point, exponent, or NaN/Infinity).
 */
static bool
dchg_looks_numeric(const char *str)
{
	const char *p = str;

	while (isspace((unsigned char) *p))
		p++;
	if (*p == '+' || *p == '-')
		p++;
	if (pg_strncasecmp(p, "nan", 3) == 0 || pg_strncasecmp(p, "inf", 3) == 0)
		return true;
	for (; *p; p++)
		if (!isdigit((unsigned char) *p) && *p != '.' && *p != 'e' &&
			*p != 'E' && *p != '+' && *p != '-' && *p != '_' &&
			!isspace((unsigned char) *p))
			return false;
	return true;
}

/*
 * dchg_set converts the value 'v' of field 'fname' for column 'col' into
 * values/nulls, decoding it as 'enc' says (with 'scale' for a Decimal) or,
 * for DCHG_ENC_PLAIN, as the column type asks.
 */
static void
dchg_set(KappaDecoder *d, int col, char *fname, DchgValue *v,
		 DchgEncoding enc, int scale, Datum *values, bool *nulls)
{
	DecodeChange *c = d->change;
	DecodeWhere where = {fname, 0, NULL};
	DecodeColumn *column = &d->cols[col];
	DchgColType ct = c->coltype[col];
	char	   *text = NULL;
	unsigned char *bytes;
	int			len;

	if (v->type == JSON_TOKEN_NULL)
	{
		DecodeSetNull(d, col, &where, values, nulls);
		return;
	}

	if (enc == DCHG_ENC_PLAIN && v->type == JSON_TOKEN_NUMBER)
	{
		/* integers into temporal columns, as the PostgreSQL connector sends */
		if (ct == DCHG_COL_TIMESTAMP)
			enc = DCHG_ENC_TS_US;
		else if (ct == DCHG_COL_DATE)
			enc = DCHG_ENC_DATE_DAYS;
		else if (ct == DCHG_COL_TIME)
			enc = DCHG_ENC_TIME_US;
	}
	else if (enc == DCHG_ENC_PLAIN && v->type == JSON_TOKEN_OBJECT_START &&
			 ct == DCHG_COL_NUMERIC)
		enc = DCHG_ENC_VSDECIMAL;

	/* a number given as a string by decimal.handling.mode=string is plain */
	if (enc == DCHG_ENC_DECIMAL && v->type == JSON_TOKEN_NUMBER)
		enc = DCHG_ENC_PLAIN;

	switch (enc)
	{
		case DCHG_ENC_PLAIN:
			if (v->type == JSON_TOKEN_OBJECT_START ||
				v->type == JSON_TOKEN_ARRAY_START)
			{
				if (ct != DCHG_COL_JSON)
					ereport(ERROR,
							(errcode(ERRCODE_DATATYPE_MISMATCH),
							 errmsg("cannot store a JSON %s in column \"%s\" of type %s",
									v->type == JSON_TOKEN_OBJECT_START ? "object" : "array",
									column->name,
									format_type_with_typemod(column->typid, column->typmod)),
							 errdetail("Field %s holds %s.", DecodeFieldName(fname),
									   DecodeSample(v->start, v->len)),
							 errhint("Nested values go to json or jsonb columns.")));
				text = pnstrdup(v->start, v->len);

				DecodeSetValue(d, col, text, v->len, &where, values, nulls);
				return;
			}
			if (ct == DCHG_COL_JSON)
			{
				/* a scalar into a json column: its JSON text */
				text = pnstrdup(v->start, v->len);

				DecodeSetValue(d, col, text, v->len, &where, values, nulls);
				return;
			}
			if (ct == DCHG_COL_NUMERIC && v->type == JSON_TOKEN_STRING &&
				!dchg_looks_numeric(v->str))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("invalid input syntax for type numeric in field \"%s\"",
								fname),
						 errdetail("Field %s holds %s, which may be a Kafka Connect Decimal "
								   "in base64, whose scale only the schema knows.",
								   DecodeFieldName(fname), DecodeSample(v->start, v->len)),
						 errhint("Send the schema with the value (the JsonConverter's "
								 "schemas.enable=true), or set Debezium's "
								 "decimal.handling.mode to string or double.")));
			DecodeSetValue(d, col, v->str, v->slen, &where, values, nulls);
			return;
		case DCHG_ENC_DECIMAL:
			if (scale < -NUMERIC_MAX_DISPLAY_SCALE || scale > NUMERIC_MAX_DISPLAY_SCALE)
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("scale %d of field \"%s\" is out of range", scale, fname),
						 errdetail("The schema's Decimal scale must be between %d and %d.",
								   -NUMERIC_MAX_DISPLAY_SCALE, NUMERIC_MAX_DISPLAY_SCALE)));
			bytes = dchg_base64(fname, v, &len);
			text = dchg_decimal_text(bytes, len, scale);

			break;
		case DCHG_ENC_VSDECIMAL:
			if (v->type != JSON_TOKEN_OBJECT_START)
			{
				/* not the struct: as written (decimal.handling.mode) */
				if (v->str == NULL)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							 errmsg("field \"%s\" is not a VariableScaleDecimal", fname),
							 errdetail("Field %s holds %s.", DecodeFieldName(fname),
									   DecodeSample(v->start, v->len))));
				text = v->str;

				break;
			}
			text = dchg_vsdecimal_text(fname, v);

			break;
		case DCHG_ENC_BYTES:
			if (v->type != JSON_TOKEN_STRING)
				dchg_base64(fname, v, &len);	/* raises the error */
			bytes = dchg_base64(fname, v, &len);
			text = palloc(len * 2 + 3);
			text[		0] = '\\';
			text[		1] = 'x';

			hex_encode((char *) bytes, len, text +2);
			text[		len * 2 + 2] = '\0';

			break;
		case DCHG_ENC_DATE_DAYS:
			{
				StringInfoData buf;

				initStringInfo(&buf);
				dchg_ymd(&buf, dchg_int64(fname, v, "days since 1970") +
						 UNIX_EPOCH_JDATE, fname);
				text = buf.data;

				break;
			}
		case DCHG_ENC_TIME_MS:
		case DCHG_ENC_TIME_US:
		case DCHG_ENC_TIME_NS:
			{
				StringInfoData buf;
				int64		persec = enc == DCHG_ENC_TIME_MS ? 1000 :
				enc == DCHG_ENC_TIME_US ? 1000000 : 1000000000;
				int64		units = dchg_int64(fname, v, "time since midnight");

				if (units < 0 || units > persec * SECS_PER_DAY)
					ereport(ERROR,
							(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
							 errmsg("time out of range in field \"%s\"", fname),
							 errdetail("Field %s holds %s, read as a time since midnight.",
									   DecodeFieldName(fname),
									   DecodeSample(v->start, v->len))));
				initStringInfo(&buf);
				dchg_clock(&buf, units, persec,
						   enc == DCHG_ENC_TIME_MS ? 3 :
						   enc == DCHG_ENC_TIME_US ? 6 : 9);
				text = buf.data;

				break;
			}
		case DCHG_ENC_TS_MS:
		case DCHG_ENC_TS_US:
		case DCHG_ENC_TS_NS:
			{
				int64		units = dchg_int64(fname, v, "time since 1970");

				text = dchg_epoch_text(units,
									   enc == DCHG_ENC_TS_MS ? 1000 :
									   enc == DCHG_ENC_TS_US ? 1000000 : 1000000000,
									   enc == DCHG_ENC_TS_MS ? 3 :
									   enc == DCHG_ENC_TS_US ? 6 : 9,
									   fname);

				break;
			}
	}
	DecodeSetValue(d, col, text, strlen(text), &where, values, nulls);
}

/*
 * dchg_row fills values/nulls from the fields of the JSON object 'obj' (a
 * Debezium 'after' or 'before', or a key), decoded as schema 's' says.
 * Fields naming no payload column are ignored; with 'keys_only', so are
 * those of columns outside the primary key.  With 'placeholder', Debezium's
 * unavailable-value placeholder marks the column in *unavailable (allocated
 * in the caller's context of KappaDecodeChange when first needed).
 */
static void
dchg_row(KappaDecoder *d, DchgValue *obj, DchgSchema *s, bool keys_only,
		 bool placeholder, bool **unavailable, Datum *values, bool *nulls)
{
	DecodeChange *c = d->change;
	DchgWalk	w;
	DchgValue	v;
	char	   *name;

	dchg_walk_start(&w, dchg_sub(obj));
	while (dchg_walk_next(&w, &name, &v))
	{
		int			col = DecodeFindColumn(d, name);

		if (col < 0)
		{
			if (d->strict && !keys_only)
				DecodeUnknownField(name, v.start, v.len);
			if (!keys_only)
				d->drift = true;
			continue;
		}
		if (d->cols[col].kind != DECODE_COL_PAYLOAD ||
			(keys_only && !c->iskey[col]))
			continue;
		if (placeholder && v.type == JSON_TOKEN_STRING &&
			v.slen == sizeof(DCHG_UNAVAILABLE) - 1 &&
			memcmp(v.str, DCHG_UNAVAILABLE, v.slen) == 0)
		{
			if (*unavailable == NULL)
				*unavailable = MemoryContextAllocZero(d->outcxt,
													  sizeof(bool) * d->natts);
			(*unavailable)[col] = true;
			values[col] = (Datum) 0;
			nulls[col] = true;
			d->filled[col] = true;
			continue;
		}
		dchg_set(d, col, name, &v, s ? s->enc[col] : DCHG_ENC_PLAIN,
				 s ? s->scale[col] : 0, values, nulls);
	}
}

/*
 * dchg_no_key raises the error of a message whose key columns cannot all
 * be found.
 */
static void
dchg_no_key(KappaDecoder *d, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("kafka message has no primary key"),
			 errdetail("%s", why),
			 errhint("A keyed changelog needs the primary key in the message key, "
					 "as a JSON object of key column name to value.")));
}

/*
 * dchg_key fills the key columns of values/nulls from the message key.
 * Raises an error for a message without a key, or whose key lacks a key
 * column.  Other columns are left alone.
 */
static void
dchg_key(KappaDecoder *d, const KappaMessageMeta *meta,
		 Datum *values, bool *nulls)
{
	DecodeChange *c = d->change;
	char	   *s;
	int			slen;
	DchgValue	key;
	DchgValue	schema;

	if (meta->key == NULL)
		dchg_no_key(d, "The message has no key.");

	for (int k = 0; k < c->nkeys; k++)
		d->filled[c->keycols[k]] = false;

	if (c->key_format == KAPPA_FORMAT_AVRO)
	{
		DecodeAvroKey(d, meta->key, meta->keylen, c->keycols, c->nkeys,
					  values, nulls);
		for (int k = 0; k < c->nkeys; k++)
		{
			if (!d->filled[c->keycols[k]])
				dchg_no_key(d, psprintf("The message key has no field \"%s\".",
										d->cols[c->keycols[k]].name));
		}
		return;
	}

	s = DecodeToServer(d, meta->key, meta->keylen, "key", &slen);
	if (s == meta->key)
		s = pnstrdup(s, slen);

	if (c->key_format == KAPPA_FORMAT_TEXT)
	{
		DecodeWhere where = {NULL, 0, "key"};

		DecodeSetValue(d, c->keycols[0], s, slen, &where, values, nulls);
		return;
	}

	dchg_unwrap(s, slen, "key", &key, &schema);
	dchg_schema(d, &c->key_schema, &schema, false);
	if (key.type == JSON_TOKEN_OBJECT_START)
		dchg_row(d, &key, &c->key_schema, true, false, NULL, values, nulls);
	else if (key.type == JSON_TOKEN_NULL)
		dchg_no_key(d, "The message key is JSON null.");
	else if (key.type == JSON_TOKEN_ARRAY_START || c->nkeys > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("kafka message key is a JSON %s, not an object",
						key.type == JSON_TOKEN_ARRAY_START ? "array" : "scalar"),
				 errdetail("The key begins with %s.", DecodeSample(s, slen)),
				 errhint("A key of several columns is a JSON object of key column name to value.")));
	else
	{
		int			col = c->keycols[0];

		dchg_set(d, col, (char *) d->cols[col].name, &key,
				 c->key_schema.text ? c->key_schema.enc[col] : DCHG_ENC_PLAIN,
				 c->key_schema.text ? c->key_schema.scale[col] : 0,
				 values, nulls);
	}

	for (int k = 0; k < c->nkeys; k++)
	{
		if (!d->filled[c->keycols[k]])
			dchg_no_key(d, psprintf("The message key has no field \"%s\".",
									d->cols[c->keycols[k]].name));
	}
}

/*
 * dchg_position sets change->position from the number at the order_by path
 * inside the JSON object 'obj' (whose first path component's value is
 * 'first', when the caller found it already).
 */
static void
dchg_position(KappaDecoder *d, DchgValue *first, KappaChange *change)
{
	DecodeChange *c = d->change;
	DchgValue	v = *first;
	MemoryContext old;

	for (int i = 1; c->order_by[i] != NULL && v.type != JSON_TOKEN_INVALID; i++)
	{
		DchgWalk	w;
		DchgValue	e;
		char	   *name;
		DchgValue	found = {JSON_TOKEN_INVALID};

		if (v.type != JSON_TOKEN_OBJECT_START)
		{
			v.type = JSON_TOKEN_INVALID;
			break;
		}
		dchg_walk_start(&w, dchg_sub(&v));
		while (dchg_walk_next(&w, &name, &e))
			if (strcmp(name, c->order_by[i]) == 0)
				found = e;
		v = found;
	}
	if (v.type == JSON_TOKEN_INVALID || v.type == JSON_TOKEN_NULL)
		return;
	if (v.type != JSON_TOKEN_NUMBER)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("order_by value of kafka message is not a number"),
				 errdetail("The value at the order_by path holds %s.",
						   DecodeSample(v.start, v.len)),
				 errhint("order_by names a path to a JSON number, e.g. \"source.lsn\".")));
	old = MemoryContextSwitchTo(d->outcxt);
	change->position = DirectFunctionCall3(numeric_in, CStringGetDatum(v.str),
										   ObjectIdGetDatum(InvalidOid),
										   Int32GetDatum(-1));
	MemoryContextSwitchTo(old);
	change->has_position = true;
}

/*
 * dchg_find returns the value of field 'name' of the object 'obj', or a
 * value of type JSON_TOKEN_INVALID.
 */
static DchgValue
dchg_find(DchgValue *obj, const char *name)
{
	DchgWalk	w;
	DchgValue	e;
	DchgValue	found = {JSON_TOKEN_INVALID};
	char	   *fname;

	if (obj->type != JSON_TOKEN_OBJECT_START)
		return found;
	dchg_walk_start(&w, dchg_sub(obj));
	while (dchg_walk_next(&w, &fname, &e))
		if (strcmp(fname, name) == 0)
			found = e;
	return found;
}

/*
 * dchg_keys_equal tells whether the key columns of two rows are equal (by
 * the types' equality, or binary equality for a type without one).
 */
static bool
dchg_keys_equal(KappaDecoder *d, Datum *v1, bool *n1, Datum *v2, bool *n2)
{
	DecodeChange *c = d->change;

	for (int k = 0; k < c->nkeys; k++)
	{
		int			i = c->keycols[k];
		DecodeColumn *col = &d->cols[i];

		if (n1[i] != n2[i])
			return false;
		if (n1[i])
			continue;
		if (OidIsValid(c->keyeq[k].fn_oid))
		{
			if (!DatumGetBool(FunctionCall2Coll(&c->keyeq[k], c->keycoll[k],
												v1[i], v2[i])))
				return false;
		}
		else if (!datumIsEqual(v1[i], v2[i], col->typbyval, col->typlen))
			return false;
	}
	return true;
}

/*
 * dchg_old_key_start gets ready to read the old primary key of an update
 * (a Debezium 'before'): *ov and *on, in the caller's context of
 * KappaDecodeChange, all NULL, and the columns marked unfilled.  Returns
 * what was filled before, for dchg_old_key_finish.
 */
static bool *
dchg_old_key_start(KappaDecoder *d, Datum **ov, bool **on)
{
	bool	   *saved = palloc(sizeof(bool) * d->natts);

	*ov = MemoryContextAlloc(d->outcxt, sizeof(Datum) * d->natts);
	*on = MemoryContextAlloc(d->outcxt, sizeof(bool) * d->natts);
	memcpy(saved, d->filled, sizeof(bool) * d->natts);
	for (int i = 0; i < d->natts; i++)
	{
		(*ov)[i] = (Datum) 0;
		(*on)[i] = true;
		d->filled[i] = false;
	}
	return saved;
}

/*
 * dchg_old_key_finish ends reading an old primary key into ov/on: when every
 * key column was there and the key differs from the new row's, the change
 * moved the row ('moved', old_values, old_nulls).  Restores what was filled.
 */
static void
dchg_old_key_finish(KappaDecoder *d, KappaChange *change, Datum *ov, bool *on,
					bool *saved)
{
	DecodeChange *c = d->change;
	bool		all = true;

	for (int k = 0; k < c->nkeys; k++)
		if (!d->filled[c->keycols[k]])
			all = false;
	memcpy(d->filled, saved, sizeof(bool) * d->natts);
	if (all && !dchg_keys_equal(d, ov, on, change->values, change->nulls))
	{
		change->moved = true;
		change->old_values = ov;
		change->old_nulls = on;
	}
}

/*
 * dchg_debezium decodes one Debezium change event 's' ('slen' bytes, in the
 * database encoding) into 'change'.
 */
static void
dchg_debezium(KappaDecoder *d, char *s, int slen,
			  const KappaMessageMeta *meta, KappaChange *change)
{
	DecodeChange *c = d->change;
	DchgValue	payload;
	DchgValue	schema;
	DchgValue	op = {JSON_TOKEN_INVALID};
	DchgValue	before = {JSON_TOKEN_INVALID};
	DchgValue	after = {JSON_TOKEN_INVALID};
	DchgValue	first = {JSON_TOKEN_INVALID};
	DchgWalk	w;
	DchgValue	v;
	char	   *name;
	char		opc;

	dchg_unwrap(s, slen, "payload", &payload, &schema);
	if (payload.type == JSON_TOKEN_NULL)
	{
		change->kind = KAPPA_CHANGE_NONE;
		return;
	}
	if (payload.type != JSON_TOKEN_OBJECT_START)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("kafka message is not a Debezium change event"),
				 errdetail("The message is not a JSON object; it begins with %s.",
						   DecodeSample(s, slen))));
	dchg_schema(d, &c->value_schema, &schema, true);

	dchg_walk_start(&w, dchg_sub(&payload));
	while (dchg_walk_next(&w, &name, &v))
	{
		if (strcmp(name, "op") == 0)
			op = v;
		else if (strcmp(name, "after") == 0)
			after = v;
		else if (strcmp(name, "before") == 0)
			before = v;
		if (c->order_by != NULL && strcmp(name, c->order_by[0]) == 0)
			first = v;
	}

	if (op.type != JSON_TOKEN_STRING || op.slen != 1 ||
		strchr("crudt", op.str[0]) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 op.type == JSON_TOKEN_INVALID ?
				 errmsg("kafka message is not a Debezium change event: it has no \"op\"") :
				 errmsg("kafka message has an unknown Debezium op %s",
						op.str ? DecodeSample(op.str, op.slen) :
						DecodeSample(op.start, op.len)),
				 errdetail("The message begins with %s.", DecodeSample(s, slen)),
				 errhint("The ops of a Debezium change event are \"c\", \"r\", \"u\", \"d\" and \"t\".")));
	opc = op.str[0];

	switch (opc)
	{
		case 'c':
		case 'r':
		case 'u':
			{
				bool		missing = false;

				if (after.type != JSON_TOKEN_OBJECT_START)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("Debezium change event with op \"%c\" has no \"after\" object",
									opc),
							 errdetail("The message begins with %s.", DecodeSample(s, slen))));
				dchg_row(d, &after, &c->value_schema, false, true,
						 &change->unavailable, change->values, change->nulls);
				for (int k = 0; k < c->nkeys; k++)
					if (!d->filled[c->keycols[k]] ||
						(change->unavailable && change->unavailable[c->keycols[k]]))
						missing = true;
				if (missing)
					dchg_key(d, meta, change->values, change->nulls);

				if (opc == 'u' && before.type == JSON_TOKEN_OBJECT_START)
				{
					Datum	   *ov;
					bool	   *on;
					bool	   *saved = dchg_old_key_start(d, &ov, &on);

					dchg_row(d, &before, &c->value_schema, true, false, NULL, ov, on);
					dchg_old_key_finish(d, change, ov, on, saved);
				}
				MemoryContextSwitchTo(d->outcxt);
				DecodeFinishRow(d, meta, change->values, change->nulls);
				MemoryContextSwitchTo(d->scratch);
				change->kind = KAPPA_CHANGE_UPSERT;
				break;
			}
		case 'd':
			if (meta->key != NULL)
				dchg_key(d, meta, change->values, change->nulls);
			else
			{
				if (before.type != JSON_TOKEN_OBJECT_START)
					dchg_no_key(d, "The delete event has neither a message key nor a \"before\" object.");
				dchg_row(d, &before, &c->value_schema, true, false, NULL,
						 change->values, change->nulls);
				for (int k = 0; k < c->nkeys; k++)
					if (!d->filled[c->keycols[k]])
						dchg_no_key(d, psprintf("The delete event has no message key, and its "
												"\"before\" has no field \"%s\".",
												d->cols[c->keycols[k]].name));
			}
			change->kind = KAPPA_CHANGE_DELETE;
			break;
		case 't':
			change->kind = KAPPA_CHANGE_TRUNCATE;
			break;
	}

	if (c->order_by != NULL && first.type != JSON_TOKEN_INVALID)
		dchg_position(d, &first, change);
}

/*
 * dchg_debezium_avro decodes a Debezium change event in Avro (the Confluent
 * wire format, as the AvroConverter writes it) into 'change', by the same
 * rules as dchg_debezium: the row from "after", the key from the message
 * key or "before", a primary key change from "before", the ordering
 * guard's position from the order_by path.
 */
static void
dchg_debezium_avro(KappaDecoder *d, const char *payload, size_t len,
				   const KappaMessageMeta *meta, KappaChange *change)
{
	DecodeChange *c = d->change;
	DecodeAvroEventInfo ev;

	DecodeAvroEvent(d, payload, len, c->order_by, &ev);
	if (ev.op == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 ev.op_text == NULL ?
				 errmsg("kafka message is not a Debezium change event: it has no \"op\"") :
				 errmsg("kafka message has an unknown Debezium op %s", DecodeSample(ev.op_text, strlen(ev.op_text))),
				 errhint("The ops of a Debezium change event are \"c\", \"r\", \"u\", \"d\" and \"t\".")));

	switch (ev.op)
	{
		case 'c':
		case 'r':
		case 'u':
			{
				bool		missing = false;

				if (!ev.has_after)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("Debezium change event with op \"%c\" has no \"after\" record",
									ev.op)));
				DecodeAvroEventRow(d, true, NULL, &change->unavailable,
								   change->values, change->nulls);
				for (int k = 0; k < c->nkeys; k++)
					if (!d->filled[c->keycols[k]] ||
						(change->unavailable && change->unavailable[c->keycols[k]]))
						missing = true;
				if (missing)
					dchg_key(d, meta, change->values, change->nulls);

				if (ev.op == 'u' && ev.has_before)
				{
					Datum	   *ov;
					bool	   *on;
					bool	   *saved = dchg_old_key_start(d, &ov, &on);

					DecodeAvroEventRow(d, false, c->iskey, NULL, ov, on);
					dchg_old_key_finish(d, change, ov, on, saved);
				}
				MemoryContextSwitchTo(d->outcxt);
				DecodeFinishRow(d, meta, change->values, change->nulls);
				MemoryContextSwitchTo(d->scratch);
				change->kind = KAPPA_CHANGE_UPSERT;
				break;
			}
		case 'd':
			if (meta->key != NULL)
				dchg_key(d, meta, change->values, change->nulls);
			else
			{
				if (!ev.has_before)
					dchg_no_key(d, "The delete event has neither a message key nor a \"before\" record.");
				DecodeAvroEventRow(d, false, c->iskey, NULL, change->values, change->nulls);
				for (int k = 0; k < c->nkeys; k++)
					if (!d->filled[c->keycols[k]])
						dchg_no_key(d, psprintf("The delete event has no message key, and its "
												"\"before\" has no field \"%s\".",
												d->cols[c->keycols[k]].name));
			}
			change->kind = KAPPA_CHANGE_DELETE;
			break;
		case 't':
			change->kind = KAPPA_CHANGE_TRUNCATE;
			break;
	}
	if (ev.has_position)
	{
		change->has_position = true;
		change->position = ev.position;
	}
}

/*
 * dchg_looks_wrapped tells, cheaply, whether the JSON value of an 'upsert'
 * message may be in Kafka Connect's JsonConverter schema wrapper: an object
 * whose first key is "schema" or "payload" (dchg_unwrap decides).
 */
static bool
dchg_looks_wrapped(KappaDecoder *d, const char *payload, size_t len)
{
	const char *p = payload;
	const char *end = p + len;

	if (d->format != KAPPA_FORMAT_JSON)
		return false;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	if (p == end || *p != '{')
		return false;
	p++;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return (end - p >= 8 && memcmp(p, "\"schema\"", 8) == 0) ||
		(end - p >= 9 && memcmp(p, "\"payload\"", 9) == 0);
}

/*
 * dchg_upsert_wrapped decodes the value of an 'upsert' message that is in
 * the JsonConverter schema wrapper ({"schema": ..., "payload": ...}): the
 * payload is the row, its fields decoded as the schema says (Decimal,
 * dates, times as for 'debezium'), absent columns NULL.  A wrapped null is
 * Kafka Connect's rendering of a tombstone: a delete.  Returns false if the
 * value is not in the wrapper after all (KappaDecode then reads it); the
 * value's text, in the server encoding, is left in *value for order_by.
 * Runs in the scratch context under the decoder's error callback.
 */
static bool
dchg_upsert_wrapped(KappaDecoder *d, const char *payload, size_t len,
					const KappaMessageMeta *meta, KappaChange *change,
					DchgValue *value)
{
	DecodeChange *c = d->change;
	int			slen;
	char	   *s = DecodeToServer(d, payload, len, "payload", &slen);
	DchgValue	schema;

	dchg_unwrap(s, slen, "payload", value, &schema);
	if (schema.type == JSON_TOKEN_INVALID)
		return false;
	if (value->type == JSON_TOKEN_NULL)
	{
		change->kind = KAPPA_CHANGE_DELETE;
		return true;
	}
	if (value->type != JSON_TOKEN_OBJECT_START)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("kafka message has no JSON object in its \"payload\""),
				 errdetail("The message begins with %s.", DecodeSample(s, slen))));
	dchg_schema(d, &c->value_schema, &schema, false);
	dchg_row(d, value, &c->value_schema, false, false, NULL,
			 change->values, change->nulls);
	MemoryContextSwitchTo(d->outcxt);
	DecodeFinishRow(d, meta, change->values, change->nulls);
	MemoryContextSwitchTo(d->scratch);
	change->kind = KAPPA_CHANGE_UPSERT;
	return true;
}

/*
 * KappaDecodeChange: see kafka.h.  The arrays of 'change' are allocated in
 * the current memory context; parse temporaries go to the decoder's scratch
 * context, reset at every call.  As with KappaDecode, the caller's error
 * handler must switch back to its own memory context.
 */
void
KappaDecodeChange(KappaDecoder *d, const char *payload, size_t len,
				  const KappaMessageMeta *meta, KappaChange *change)
{
	DecodeChange *c = d->change;
	MemoryContext outcxt = CurrentMemoryContext;
	KappaMessageMeta nometa = {NULL, 0, -1, -1, -1, NULL};
	ErrorContextCallback errcallback;
	bool		wrapped;

	Assert(c != NULL);
	if (meta == NULL)
		meta = &nometa;

	memset(change, 0, sizeof(KappaChange));
	change->kind = KAPPA_CHANGE_NONE;
	change->values = palloc(sizeof(Datum) * Max(d->natts, 1));
	change->nulls = palloc(sizeof(bool) * Max(d->natts, 1));

	wrapped = c->envelope == KAPPA_ENVELOPE_UPSERT && payload != NULL &&
		dchg_looks_wrapped(d, payload, len);
	if (c->envelope == KAPPA_ENVELOPE_UPSERT && payload != NULL && !wrapped)
	{
		/* the row, as format json/csv/text/bytea decodes it */
		KappaDecode(d, payload, len, meta, change->values, change->nulls);
		change->kind = KAPPA_CHANGE_UPSERT;
	}
	else
	{
		MemoryContextReset(d->scratch);
		for (int i = 0; i < d->natts; i++)
		{
			change->values[i] = (Datum) 0;
			change->nulls[i] = true;
			d->filled[i] = false;
		}
	}
	d->outcxt = outcxt;
	d->meta = meta;
	d->cur_col = -1;
	if (!(c->envelope == KAPPA_ENVELOPE_UPSERT && payload != NULL && !wrapped))
		d->drift = false;		/* else KappaDecode has just set it */

	errcallback.callback = DecodeErrorCallback;
	errcallback.arg = (void *) d;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	MemoryContextSwitchTo(d->scratch);

	if (c->envelope == KAPPA_ENVELOPE_UPSERT)
	{
		DchgValue	value = {JSON_TOKEN_INVALID};

		if (wrapped && !dchg_upsert_wrapped(d, payload, len, meta, change, &value))
		{
			/* an object that only began like the wrapper: a plain row */
			MemoryContextSwitchTo(outcxt);
			KappaDecode(d, payload, len, meta, change->values, change->nulls);
			MemoryContextSwitchTo(d->scratch);
			change->kind = KAPPA_CHANGE_UPSERT;
			value.type = JSON_TOKEN_INVALID;
		}
		dchg_key(d, meta, change->values, change->nulls);
		if (payload == NULL)
			change->kind = KAPPA_CHANGE_DELETE;
		else if (c->order_by != NULL && change->kind == KAPPA_CHANGE_UPSERT &&
				 d->format == KAPPA_FORMAT_AVRO)
			change->has_position = DecodeAvroValuePosition(d, c->order_by,
														   &change->position);
		else if (c->order_by != NULL && change->kind == KAPPA_CHANGE_UPSERT)
		{
			if (value.type == JSON_TOKEN_INVALID)
			{
				int			slen;
				char	   *s = DecodeToServer(d, payload, len, "payload", &slen);

				(void) dchg_open(s, slen, &value, "payload");
			}
			if (value.type == JSON_TOKEN_OBJECT_START)
			{
				DchgValue	first = dchg_find(&value, c->order_by[0]);

				dchg_position(d, &first, change);
			}
		}
	}
	else if (payload != NULL && d->format == KAPPA_FORMAT_AVRO)
		dchg_debezium_avro(d, payload, len, meta, change);
	else if (payload != NULL)
	{
		int			slen;
		char	   *s;

		if (len == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("kafka message is empty"),
					 errdetail("A Debezium change event is a JSON object; a tombstone has a null value, not an empty one.")));
		s = DecodeToServer(d, payload, len, "payload", &slen);
		dchg_debezium(d, s, slen, meta, change);
	}

	MemoryContextSwitchTo(outcxt);
	error_context_stack = errcallback.previous;
}

/*
 * KappaParseEnvelope maps an envelope name (case-insensitive) to
 * KappaEnvelope, raising an error for an unknown one.
 */
KappaEnvelope
KappaParseEnvelope(const char *name)
{
	if (name != NULL)
	{
		if (pg_strcasecmp(name, "none") == 0)
			return KAPPA_ENVELOPE_NONE;
		if (pg_strcasecmp(name, "upsert") == 0)
			return KAPPA_ENVELOPE_UPSERT;
		if (pg_strcasecmp(name, "debezium") == 0)
			return KAPPA_ENVELOPE_DEBEZIUM;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown envelope \"%s\"", name ? name : "(null)"),
			 errhint("The envelopes are none, upsert and debezium.")));
	return KAPPA_ENVELOPE_NONE; /* keep compiler quiet */
}

/*
 * KappaChangeDecoderCreate: see kafka.h.  Everything is allocated in the
 * current memory context.
 */
KappaDecoder *
KappaChangeDecoderCreate(KappaFormat format, KappaEnvelope envelope,
						 KappaFormat key_format, TupleDesc tupdesc,
						 int nkeys, const AttrNumber *keyattnos,
						 const char *order_by, Jsonb *options)
{
	KappaDecoder *d;
	DecodeChange *c;

	if (envelope != KAPPA_ENVELOPE_UPSERT && envelope != KAPPA_ENVELOPE_DEBEZIUM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("envelope none is not a keyed changelog"),
				 errhint("The keyed changelogs are the envelopes upsert and debezium.")));
	if (envelope == KAPPA_ENVELOPE_DEBEZIUM && format != KAPPA_FORMAT_JSON &&
		format != KAPPA_FORMAT_AVRO)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("envelope debezium needs format json or avro"),
				 errdetail("Debezium change events are read as Kafka Connect's JsonConverter or AvroConverter writes them."),
				 errhint("Use format json, with or without the converter's schemas, or avro.")));
	if (key_format != KAPPA_FORMAT_JSON && key_format != KAPPA_FORMAT_TEXT &&
		key_format != KAPPA_FORMAT_AVRO)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key format must be json, text or avro"),
				 errdetail("A keyed changelog reads the primary key from the message key.")));
	if (nkeys <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the target of a keyed changelog must have a primary key"),
				 errdetail("Envelopes upsert and debezium change rows by their primary key."),
				 errhint("Add a primary key to the target (ALTER TABLE ... ADD PRIMARY KEY).")));
	if (key_format == KAPPA_FORMAT_TEXT && nkeys > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key format text needs a primary key of one column"),
				 errdetail("The primary key of the target has %d columns.", nkeys),
				 errhint("Use key format json, whose keys are objects of key column name to value.")));
	if (order_by != NULL && envelope == KAPPA_ENVELOPE_UPSERT &&
		format != KAPPA_FORMAT_JSON && format != KAPPA_FORMAT_AVRO)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("order_by needs format json or avro"),
				 errdetail("order_by names a path into a JSON or Avro value.")));

	d = DecodeCreate(format, tupdesc, options, true);
	if (key_format == KAPPA_FORMAT_AVRO && d->avro == NULL)
		DecodeAvroCreate(d);
	c = palloc0(sizeof(DecodeChange));
	d->change = c;
	c->envelope = envelope;
	c->key_format = key_format;
	c->nkeys = nkeys;
	c->keycols = palloc(sizeof(int) * nkeys);
	c->keyeq = palloc0(sizeof(FmgrInfo) * nkeys);
	c->keycoll = palloc0(sizeof(Oid) * nkeys);
	c->iskey = palloc0(sizeof(bool) * Max(d->natts, 1));
	c->coltype = palloc0(sizeof(DchgColType) * Max(d->natts, 1));
	c->value_schema.enc = palloc0(sizeof(DchgEncoding) * Max(d->natts, 1));
	c->value_schema.scale = palloc0(sizeof(int) * Max(d->natts, 1));
	c->key_schema.enc = palloc0(sizeof(DchgEncoding) * Max(d->natts, 1));
	c->key_schema.scale = palloc0(sizeof(int) * Max(d->natts, 1));

	for (int i = 0; i < d->natts; i++)
	{
		Oid			base = getBaseType(d->cols[i].typid);

		if (d->cols[i].kind != DECODE_COL_PAYLOAD)
			continue;
		if (base == TIMESTAMPOID || base == TIMESTAMPTZOID)
			c->coltype[i] = DCHG_COL_TIMESTAMP;
		else if (base == DATEOID)
			c->coltype[i] = DCHG_COL_DATE;
		else if (base == TIMEOID)
			c->coltype[i] = DCHG_COL_TIME;
		else if (base == NUMERICOID)
			c->coltype[i] = DCHG_COL_NUMERIC;
		else if (base == JSONOID || base == JSONBOID)
			c->coltype[i] = DCHG_COL_JSON;
	}

	for (int k = 0; k < nkeys; k++)
	{
		int			i = keyattnos[k] - 1;
		TypeCacheEntry *tce;

		if (i < 0 || i >= d->natts || d->cols[i].kind != DECODE_COL_PAYLOAD)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("primary key column \"%s\" cannot be read from the message",
							(i >= 0 && i < d->natts) ? d->cols[i].name : "?"),
					 errdetail("Metadata, generated and dropped columns are not read from a keyed changelog's messages."),
					 errhint("Make the target's primary key of columns the messages carry.")));
		c->keycols[k] = i;
		c->iskey[i] = true;
		c->keycoll[k] = TupleDescAttr(tupdesc, i)->attcollation;
		tce = lookup_type_cache(d->cols[i].typid, TYPECACHE_EQ_OPR_FINFO);
		if (OidIsValid(tce->eq_opr_finfo.fn_oid))
			fmgr_info_copy(&c->keyeq[k], &tce->eq_opr_finfo, CurrentMemoryContext);
	}

	if (order_by != NULL)
	{
		List	   *parts = NIL;
		char	   *copy = pstrdup(order_by);
		char	   *tok;
		char	   *save = NULL;
		int			n = 0;
		ListCell   *lc;

		for (tok = strtok_r(copy, ".", &save); tok; tok = strtok_r(NULL, ".", &save))
			parts = lappend(parts, tok);
		if (parts == NIL || order_by[0] == '.' ||
			order_by[strlen(order_by) - 1] == '.' || strstr(order_by, "..") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid order_by path \"%s\"", order_by),
					 errhint("order_by is a dotted path of JSON field names, e.g. \"source.lsn\".")));
		c->order_by = palloc0(sizeof(char *) * (list_length(parts) + 1));
		foreach(lc, parts)
			c->order_by[n++] = (char *) lfirst(lc);
	}
	return d;
}

/*
 * dchg_jsonb_subset returns a jsonb object of the fields of 'row' (a jsonb
 * object) named by the key columns of 'd'.
 */
static JsonbValue *
dchg_jsonb_subset(KappaDecoder *d, Jsonb *row, JsonbParseState **state)
{
	DecodeChange *c = d->change;

	pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
	for (int k = 0; k < c->nkeys; k++)
	{
		const char *name = d->cols[c->keycols[k]].name;
		JsonbValue	kv;
		JsonbValue *v;

		kv.type = jbvString;
		kv.val.string.val = (char *) name;
		kv.val.string.len = strlen(name);
		v = findJsonbValueFromContainer(&row->root, JB_FOBJECT, &kv);
		pushJsonbValue(state, WJB_KEY, &kv);
		if (v == NULL)
		{
			JsonbValue	null;

			null.type = jbvNull;
			pushJsonbValue(state, WJB_VALUE, &null);
		}
		else
			pushJsonbValue(state, WJB_VALUE, v);
	}
	return pushJsonbValue(state, WJB_END_OBJECT, NULL);
}

/*
 * dchg_row_jsonb returns the row values/nulls of 'tupdesc' as a jsonb
 * object, as row_to_json shows it.
 */
static Jsonb *
dchg_row_jsonb(TupleDesc tupdesc, Datum *values, bool *nulls)
{
	HeapTuple	tuple = heap_form_tuple(tupdesc, values, nulls);
	Datum		json = DirectFunctionCall1(row_to_json, HeapTupleGetDatum(tuple));

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											  CStringGetDatum(TextDatumGetCString(json))));
}

/*
 * dchg_push_key pushes a string key into a jsonb object being built.
 */
static void
dchg_push_key(JsonbParseState **state, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &k);
}

/*
 * dchg_push_jsonb pushes the jsonb 'jb' as a value.
 */
static void
dchg_push_jsonb(JsonbParseState **state, Jsonb *jb)
{
	JsonbValue	v;

	v.type = jbvBinary;
	v.val.binary.data = &jb->root;
	v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
	pushJsonbValue(state, WJB_VALUE, &v);
}

/*
 * KappaTablePrimaryKey puts the attribute numbers of the primary key of
 * 'rel' in keyattnos (room for INDEX_MAX_KEYS) and returns how many there
 * are; a table without a primary key cannot take keyed changes, and gets
 * the error that says so.
 */
int
KappaTablePrimaryKey(Relation rel, AttrNumber *keyattnos)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	Relation	idx;
	int			nkeys;

	if (!OidIsValid(pkoid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table \"%s\" has no primary key", RelationGetRelationName(rel)),
				 errdetail("Envelopes 'upsert' and 'debezium' apply each change to the row with the message's key."),
				 errhint("Add a primary key on the columns of the message key: ALTER TABLE %s ADD PRIMARY KEY (...).",
						 RelationGetRelationName(rel))));
	idx = index_open(pkoid, AccessShareLock);
	nkeys = idx->rd_index->indnkeyatts;
	for (int k = 0; k < nkeys; k++)
		keyattnos[k] = idx->rd_index->indkey.values[k];
	index_close(idx, AccessShareLock);
	return nkeys;
}

/*
 * KappaParseKeyFormat maps the name of a format of message keys to
 * KappaFormat (json, text or avro; KappaChangeDecoderCreate refuses the
 * others).
 */
KappaFormat
KappaParseKeyFormat(const char *name)
{
	return KappaParseFormat(name);
}

/*
 * kappa_decode_change_preview(target regclass, envelope text, payload
 * bytea, key bytea, format text, key_format text, order_by text, options
 * jsonb) decodes one message of a keyed changelog as a source with this
 * target would (its primary key is the target's), and returns the change as
 * jsonb: {"change": "upsert", "row": {...}, "unavailable": [...],
 * "old_key": {...}, "position": n}, {"change": "delete", "key": {...}},
 * {"change": "truncate"} or {"change": "none"}.  Like decode_preview, it
 * runs as the caller and changes nothing.
 */
Datum
kappa_decode_change_preview(PG_FUNCTION_ARGS)
{
	Relation	rel;
	TupleDesc	tupdesc;
	KappaDecoder *d;
	KappaMessageMeta meta;
	KappaChange change;
	bytea	   *payload;
	bytea	   *key;
	int			nkeys;
	AttrNumber *keyattnos;
	KappaFormat kf;
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res;
	static const char *const kinds[] = {"upsert", "delete", "truncate", "none"};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(4) || PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("target, envelope, format and key_format must not be null")));

	rel = relation_open(PG_GETARG_OID(0), AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errdetail("Keyed changelogs write into tables with a primary key.")));
	tupdesc = RelationGetDescr(rel);

	keyattnos = palloc(sizeof(AttrNumber) * INDEX_MAX_KEYS);
	nkeys = KappaTablePrimaryKey(rel, keyattnos);
	kf = KappaParseKeyFormat(text_to_cstring(PG_GETARG_TEXT_PP(5)));

	d = KappaChangeDecoderCreate(KappaParseFormat(text_to_cstring(PG_GETARG_TEXT_PP(4))),
								 KappaParseEnvelope(text_to_cstring(PG_GETARG_TEXT_PP(1))),
								 kf, tupdesc, nkeys, keyattnos,
								 PG_ARGISNULL(6) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(6)),
								 PG_ARGISNULL(7) ? NULL : PG_GETARG_JSONB_P(7));

	payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_BYTEA_PP(2);
	key = PG_ARGISNULL(3) ? NULL : PG_GETARG_BYTEA_PP(3);
	memset(&meta, 0, sizeof(meta));
	meta.key = key ? VARDATA_ANY(key) : NULL;
	meta.keylen = key ? VARSIZE_ANY_EXHDR(key) : 0;
	meta.timestamp_ms = -1;

	KappaDecodeChange(d, payload ? VARDATA_ANY(payload) : NULL,
					  payload ? VARSIZE_ANY_EXHDR(payload) : 0, &meta, &change);

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	dchg_push_key(&state, "change");
	v.type = jbvString;
	v.val.string.val = (char *) kinds[change.kind];
	v.val.string.len = strlen(kinds[change.kind]);
	pushJsonbValue(&state, WJB_VALUE, &v);

	if (change.kind == KAPPA_CHANGE_UPSERT)
	{
		dchg_push_key(&state, "row");
		dchg_push_jsonb(&state, dchg_row_jsonb(tupdesc, change.values, change.nulls));
		if (change.unavailable != NULL)
		{
			dchg_push_key(&state, "unavailable");
			pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
			for (int i = 0; i < tupdesc->natts; i++)
			{
				if (!change.unavailable[i])
					continue;
				v.type = jbvString;
				v.val.string.val = NameStr(TupleDescAttr(tupdesc, i)->attname);
				v.val.string.len = strlen(v.val.string.val);
				pushJsonbValue(&state, WJB_ELEM, &v);
			}
			pushJsonbValue(&state, WJB_END_ARRAY, NULL);
		}
		if (change.moved)
		{
			JsonbParseState *sub = NULL;

			dchg_push_key(&state, "old_key");
			dchg_push_jsonb(&state, JsonbValueToJsonb(dchg_jsonb_subset(d,
																		dchg_row_jsonb(tupdesc, change.old_values, change.old_nulls),
																		&sub)));
		}
	}
	else if (change.kind == KAPPA_CHANGE_DELETE)
	{
		JsonbParseState *sub = NULL;

		dchg_push_key(&state, "key");
		dchg_push_jsonb(&state, JsonbValueToJsonb(dchg_jsonb_subset(d,
																	dchg_row_jsonb(tupdesc, change.values, change.nulls),
																	&sub)));
	}
	if (change.has_position)
	{
		dchg_push_key(&state, "position");
		v.type = jbvNumeric;
		v.val.numeric = DatumGetNumeric(change.position);
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);

	relation_close(rel, AccessShareLock);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}
