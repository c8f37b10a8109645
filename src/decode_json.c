/*-------------------------------------------------------------------------
 *
 * decode_json.c
 *	  Format json of the message decoders: the top-level fields of one JSON
 *	  object to the payload columns of one row.
 *
 * JSON is read with PostgreSQL's own lexer and parser (common/jsonapi.h).
 * A top-level field's scalar goes through the column type's input function
 * (DecodeSetValue), a nested object or array is cut out of the input as
 * text for a json or jsonb column.  No jsonb document is built per message.
 * Two paths share that contract: the fast one (djson_flat) drives json_lex
 * itself over the object's fields, without de-escaping strings that need
 * none, and finds columns by the fields' positions in the previous message;
 * anything it does not handle -- invalid JSON, a value that is not an
 * object, escaped field names, errors of option strict and nested values
 * for scalar columns -- goes to the general one (djson_general: pg_parse_json
 * with semantic callbacks), which decodes the message again from its start
 * and raises the error.  Both convert the fields in the order they come, so
 * a message fails with the same error whichever path sees it first.
 *
 * The errors raised here name the field in their detail and show a sample
 * of the value; errors of a column's input function get their context line
 * from DecodeErrorCallback (decode_value.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "decode_internal.h"

/* What a JSON field name resolves to, besides a column index. */
#define DJSON_FIELD_IGNORED	(-1)	/* no payload column: skip the value */
#define DJSON_FIELD_REFUSED	(-2)	/* names no column, and strict is on */
#define DJSON_FIELD_UNKNOWN	(-3)	/* names no column: skip it, note drift */

/* State of the JSON callbacks of the general path for one message. */
typedef struct DecodeJsonState
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
} DecodeJsonState;

/*
 * djson_kind names a JSON token type for messages.
 */
static const char *
djson_kind(JsonTokenType type)
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
 * djson_not_object raises the error for a message whose top-level JSON
 * value is not an object.
 */
static void
djson_not_object(DecodeJsonState *st, JsonTokenType type)
{
	JsonLexContext *lex = st->lex;

	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("kafka message is a JSON %s, not an object",
					djson_kind(type)),
			 errdetail("The message begins with %s.",
					   DecodeSample(lex->input, lex->input_length)),
			 errhint("Format json takes one JSON object per message, whose keys name the columns.")));
}

/*
 * djson_nested notes, when a nested object or array starts as the value
 * of a top-level field, whether its column cannot take it; the error is
 * raised at the end of the value, to show the whole value.
 */
static void
djson_nested(DecodeJsonState *st, JsonTokenType type)
{
	if (st->col >= 0 && !st->decoder->cols[st->col].is_json)
		st->nested = type;
}

/*
 * djson_nested_error raises the error for a nested value bound for a
 * scalar column.
 */
static void
djson_nested_error(DecodeJsonState *st, char *value, int len)
{
	DecodeColumn *col = &st->decoder->cols[st->col];

	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("cannot store a JSON %s in column \"%s\" of type %s",
					djson_kind(st->nested), col->name,
					format_type_with_typemod(col->typid, col->typmod)),
			 errdetail("Field %s holds %s.", DecodeFieldName(st->fname),
					   DecodeSample(value, len)),
			 errhint("Nested values go to json or jsonb columns.")));
}

/*
 * djson_object_start tracks the depth; an object as a field's value is
 * checked against the field's column.
 */
static void
djson_object_start(void *state)
{
	DecodeJsonState *st = (DecodeJsonState *) state;

	if (st->depth == 1)
		djson_nested(st, JSON_TOKEN_OBJECT_START);
	st->depth++;
}

/*
 * djson_array_start tracks the depth; a top-level array is refused, an
 * array as a field's value is checked against the field's column.
 */
static void
djson_array_start(void *state)
{
	DecodeJsonState *st = (DecodeJsonState *) state;

	if (st->depth == 0)
		djson_not_object(st, JSON_TOKEN_ARRAY_START);
	if (st->depth == 1)
		djson_nested(st, JSON_TOKEN_ARRAY_START);
	st->depth++;
}

/*
 * djson_struct_end tracks the depth at the end of an object or array.
 */
static void
djson_struct_end(void *state)
{
	DecodeJsonState *st = (DecodeJsonState *) state;

	st->depth--;
}

/*
 * djson_field_start finds the column of a top-level field.  A field
 * naming no column is ignored (or refused with strict); one naming a
 * metadata or generated column is ignored.  JSON null stores NULL at once.
 */
static void
djson_field_start(void *state, char *fname, bool isnull)
{
	DecodeJsonState *st = (DecodeJsonState *) state;
	KappaDecoder *d = st->decoder;
	int			i;

	if (st->depth != 1)
		return;

	st->fname = fname;
	st->value_start = st->lex->token_start;
	st->col = -1;
	st->unknown = false;
	st->nested = JSON_TOKEN_INVALID;

	i = DecodeFindColumn(d, fname);
	if (i < 0)
	{
		st->unknown = d->strict;
		d->drift = !d->strict;
		return;
	}
	if (d->cols[i].kind != DECODE_COL_PAYLOAD)
		return;

	if (isnull)
	{
		DecodeWhere where = {fname, 0, NULL};

		DecodeSetNull(d, i, &where, st->values, st->nulls);
	}
	else
		st->col = i;
}

/*
 * djson_field_end stores the value of a top-level field bound for a
 * json or jsonb column: its JSON text, cut out of the message.  It raises
 * the errors noted for the field (strict, nested value for a scalar column),
 * now that the whole value can be shown.
 */
static void
djson_field_end(void *state, char *fname, bool isnull)
{
	DecodeJsonState *st = (DecodeJsonState *) state;
	KappaDecoder *d = st->decoder;
	int			len;

	if (st->depth != 1)
		return;
	len = st->lex->prev_token_terminator - st->value_start;
	if (st->unknown)
		DecodeUnknownField(fname, st->value_start, len);
	if (st->col < 0)
		return;
	if (st->nested != JSON_TOKEN_INVALID)
		djson_nested_error(st, st->value_start, len);
	if (d->cols[st->col].is_json)
	{
		DecodeWhere where = {fname, 0, NULL};

		DecodeSetValue(d, st->col, pnstrdup(st->value_start, len), len,
					   &where, st->values, st->nulls);
	}
	st->col = -1;
}

/*
 * djson_scalar converts the scalar value of a top-level field (strings
 * de-escaped, numbers and booleans as written) with the column type's input
 * function.
 */
static void
djson_scalar(void *state, char *token, JsonTokenType tokentype)
{
	DecodeJsonState *st = (DecodeJsonState *) state;
	KappaDecoder *d = st->decoder;
	DecodeWhere where = {st->fname, 0, NULL};

	if (st->depth == 0)
		djson_not_object(st, tokentype);
	if (st->depth != 1 || st->col < 0 || d->cols[st->col].is_json)
		return;

	DecodeSetValue(d, st->col, token, strlen(token), &where,
				   st->values, st->nulls);
	st->col = -1;
}

/*
 * djson_general fills the payload columns from a JSON object with
 * pg_parse_json and the callbacks above.  It takes every valid message and
 * raises the error of every invalid one.
 */
static void
djson_general(KappaDecoder *d, char *data, int len,
			  Datum *values, bool *nulls)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	DecodeJsonState st;
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
	sem.object_start = djson_object_start;
	sem.object_end = djson_struct_end;
	sem.array_start = djson_array_start;
	sem.array_end = djson_struct_end;
	sem.object_field_start = djson_field_start;
	sem.object_field_end = djson_field_end;
	sem.scalar = djson_scalar;

	result = pg_parse_json(lex, &sem);
	if (result != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("kafka message is not valid JSON"),
				 errdetail("%s The message begins with %s.",
						   json_errdetail(result, lex),
						   DecodeSample(data, len))));
}

/*
 * djson_field_column tells what the field name 'name' ('len' bytes, not
 * NUL-terminated, no escapes) at position 'pos' of the object fills: a
 * payload column's index, DJSON_FIELD_IGNORED, DJSON_FIELD_UNKNOWN or
 * DJSON_FIELD_REFUSED -- the
 * same answer djson_field_start gives.  *fname is set to the name,
 * NUL-terminated, for errors.
 */
static int
djson_field_column(KappaDecoder *d, int pos, const char *name, int len,
				   char **fname)
{
	DecodeJsonField *field = NULL;
	char	   *copy;
	int			i;
	int			result;

	if (pos < DECODE_JSON_FIELDS)
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
	i = DecodeFindColumn(d, copy);
	if (i < 0)
		result = d->strict ? DJSON_FIELD_REFUSED : DJSON_FIELD_UNKNOWN;
	else if (d->cols[i].kind != DECODE_COL_PAYLOAD)
		result = DJSON_FIELD_IGNORED;
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
 * djson_skip_nested moves 'lex', positioned on the start of a nested
 * object or array, to its end.  Returns true if the value is valid JSON, as
 * pg_parse_json with de-escaping checks it.
 */
static bool
djson_skip_nested(JsonLexContext *lex)
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
 * djson_string sets *str and *len to the value of the string token
 * 'lex' is on: inside the message when it has no escapes, else de-escaped by
 * the lexer.  *str is NUL-terminated only if *copied is set.  Returns false
 * for an escape the general path refuses.
 */
static bool
djson_string(JsonLexContext *lex, char **str, int *len, bool *copied)
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
 * djson_flat_value converts the value of one field, which 'lex' is on
 * (its first token), for column 'col' (or skips it for DJSON_FIELD_IGNORED),
 * leaving 'lex' on the value's last token.  Returns false if the general path
 * must take the message.
 */
static bool
djson_flat_value(KappaDecoder *d, JsonLexContext *lex, int col,
				 char *fname, Datum *values, bool *nulls)
{
	DecodeWhere where = {fname, 0, NULL};
	char	   *value_start = lex->token_start;
	char	   *str;
	int			len;
	bool		copied;

	if (col == DJSON_FIELD_UNKNOWN)
	{
		d->drift = true;
		col = DJSON_FIELD_IGNORED;
	}
	switch (lex->token_type)
	{
		case JSON_TOKEN_OBJECT_START:
		case JSON_TOKEN_ARRAY_START:
			if (!djson_skip_nested(lex))
				return false;
			if (col == DJSON_FIELD_IGNORED)
				return true;
			if (col < 0 || !d->cols[col].is_json)
				return false;	/* the general path raises the error */
			break;
		case JSON_TOKEN_NULL:
			if (col == DJSON_FIELD_REFUSED)
				return false;
			if (col >= 0)
				DecodeSetNull(d, col, &where, values, nulls);
			return true;
		case JSON_TOKEN_STRING:
		case JSON_TOKEN_NUMBER:
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			if (col == DJSON_FIELD_REFUSED)
				return false;
			if (lex->token_type == JSON_TOKEN_STRING)
			{
				/* the general path checks the escapes of every string */
				if (!djson_string(lex, &str, &len, &copied))
					return false;
			}
			else
			{
				str = lex->token_start;
				len = lex->token_terminator - lex->token_start;
				copied = false;
			}
			if (col == DJSON_FIELD_IGNORED)
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
			DecodeSetValue(d, col, str, len, &where, values, nulls);
			return true;
		default:
			return false;
	}

	/* a json or jsonb column takes the value's text */
	len = lex->token_terminator - value_start;
	DecodeSetValue(d, col, pnstrdup(value_start, len), len, &where,
				   values, nulls);
	return true;
}

/*
 * djson_flat fills the payload columns from a JSON object the fast way (see
 * the header comment).  Returns false if the general path must take the
 * message; the columns it filled until then are then filled again.
 */
static bool
djson_flat(KappaDecoder *d, char *data, int len,
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
			col = djson_field_column(d, pos++, name, namelen, &fname);

			if (json_lex(lex) != JSON_SUCCESS ||
				lex->token_type != JSON_TOKEN_COLON ||
				json_lex(lex) != JSON_SUCCESS ||
				!djson_flat_value(d, lex, col, fname, values, nulls) ||
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
 * DecodeJson fills the payload columns of values/nulls (and d->filled) from
 * one JSON object, 'data' ('len' bytes, in the database encoding).  Raises
 * an error for a message that is not such an object or whose values the
 * columns cannot take.  Temporaries go to the current memory context (the
 * decoder's scratch context), the Datums to the caller's of KappaDecode.
 */
void
DecodeJson(KappaDecoder *d, char *data, int len,
		   Datum *values, bool *nulls)
{
	if (djson_flat(d, data, len, values, nulls))
		return;

	for (int i = 0; i < d->natts; i++)
	{
		values[i] = (Datum) 0;
		nulls[i] = true;
		d->filled[i] = false;
	}
	djson_general(d, data, len, values, nulls);
}
