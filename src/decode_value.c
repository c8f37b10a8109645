/*-------------------------------------------------------------------------
 *
 * decode_value.c
 *	  What the message decoders share: turning the text of one field into the
 *	  Datum of its column, NULLs, finding a column by name, samples of bad
 *	  values for error details, and the error context line of a message.
 *
 * A value reaches its column through the column type's input function (or,
 * with option time_format, as a number of seconds, milliseconds or
 * microseconds since 1970 for a timestamp column); a NULL for a domain type
 * goes through domain_in, so that the domain's constraints are checked as an
 * INSERT would check them.  Errors of the input functions are not caught:
 * they keep their SQLSTATE, message and detail, and DecodeErrorCallback,
 * which KappaDecode installs for the whole message, adds the context line
 * that says which message, which field or column and which value, in the
 * manner of COPY's CopyFromErrorCallback.  While a value is converted, the
 * decoder's cur_* fields say which one it is; nothing is formatted unless
 * an error is raised.
 *
 * See decode_internal.h for how the decoder's files call one another; this
 * file calls none of them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "decode_internal.h"

/* Bytes of a bad value shown in an error detail or context line. */
#define DVAL_SAMPLE_BYTES	64

/*
 * DecodeSample returns 'value' quoted as a JSON string, cut to
 * DVAL_SAMPLE_BYTES bytes (on a character boundary) with "..." appended if
 * longer: the form in which errors show bad values.  'value' must be valid in
 * the database encoding.  The result is palloc'd in the current context.
 */
char *
DecodeSample(const char *value, int len)
{
	StringInfoData buf;
	int			clip = len;

	if (len > DVAL_SAMPLE_BYTES)
		clip = pg_mbcliplen(value, len, DVAL_SAMPLE_BYTES);
	initStringInfo(&buf);
	escape_json(&buf, pnstrdup(value, clip));
	if (clip < len)
		appendStringInfoString(&buf, "...");
	return buf.data;
}

/*
 * DecodeFieldName returns a JSON field name or CSV header name quoted as a
 * JSON string, for errors ("Field %s holds ...").  Palloc'd.
 */
char *
DecodeFieldName(const char *fname)
{
	StringInfoData buf;

	initStringInfo(&buf);
	escape_json(&buf, fname);
	return buf.data;
}

/*
 * DecodeFindColumn returns the index of the target's column named 'name'
 * (exactly), or -1.  Dropped columns have no name.
 */
int
DecodeFindColumn(KappaDecoder *d, const char *name)
{
	DecodeColumnEntry *entry;

	if (strlen(name) >= NAMEDATALEN)
		return -1;
	entry = hash_search(d->byname, name, HASH_FIND, NULL);
	return entry ? entry->index : -1;
}

/*
 * DecodeUnknownField raises the error of option strict for a field that
 * names no column; 'value' ('len' bytes) is the field's value, or NULL for a
 * CSV header name.
 */
void
DecodeUnknownField(const char *fname, const char *value, int len)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("kafka message has field \"%s\", which names no column of the target",
					fname),
			 value ? errdetail("Field %s holds %s.", DecodeFieldName(fname),
							   DecodeSample(value, len)) :
			 errdetail("Field %s names no column.", DecodeFieldName(fname)),
			 errhint("Add the column to the target, or set option \"strict\" "
					 "to false to ignore such fields.")));
}

/*
 * dval_input converts 'str' (NUL-terminated, 'len' bytes, in the database
 * encoding) with the input function of 'col'; the Datum is allocated in the
 * caller's context of KappaDecode.
 */
static Datum
dval_input(KappaDecoder *d, DecodeColumn *col, char *str, int len)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(d->outcxt);
	Datum		result;

	if (col->is_text)
		result = PointerGetDatum(cstring_to_text_with_len(str, len));
	else
		result = InputFunctionCall(&col->infunc, str, col->ioparam,
								   col->typmod);
	MemoryContextSwitchTo(oldcxt);
	return result;
}

/*
 * dval_epoch converts a number of seconds, milliseconds or microseconds
 * since 1970 (per time_format) in 'str' to a timestamp(tz) Datum.  Returns
 * false, leaving *result alone, if 'str' is not a number.
 */
static bool
dval_epoch(KappaDecoder *d, const char *str, int len, Datum *result)
{
	int64		unit;
	char	   *end;
	double		fval;
	long long	ival;
	double		usecs;
	TimestampTz ts;

	switch (d->time_format)
	{
		case DECODE_TIME_EPOCH_S:
			unit = USECS_PER_SEC;
			break;
		case DECODE_TIME_EPOCH_MS:
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
				 errdetail("The value is read as %s since 1970.",
						   d->time_format == DECODE_TIME_EPOCH_S ? "seconds" :
						   d->time_format == DECODE_TIME_EPOCH_MS ? "milliseconds" :
						   "microseconds")));
	ts = (TimestampTz) usecs;
	/* timestamp without time zone: the UTC wall clock */
	*result = TimestampTzGetDatum(ts);
	return true;
}

/*
 * DecodeSetValue converts the text 'str' ('len' bytes, NUL-terminated, in
 * the database encoding) of a value for column index 'i' into values[i] and
 * nulls[i], allocated in the caller's context of KappaDecode, and marks the
 * column filled.  'where' says where the value comes from, for the error
 * context line of an error raised meanwhile; it is not kept.
 */
void
DecodeSetValue(KappaDecoder *d, int i, char *str, int len,
			   const DecodeWhere *where, Datum *values, bool *nulls)
{
	DecodeColumn *col = &d->cols[i];

	d->cur_col = i;
	d->cur_where = where;
	d->cur_value = str;
	d->cur_len = len;

	if (!(col->is_timestamp && d->time_format != DECODE_TIME_TEXT &&
		  dval_epoch(d, str, len, &values[i])))
		values[i] = dval_input(d, col, str, len);
	nulls[i] = false;
	d->filled[i] = true;

	d->cur_col = -1;
}

/*
 * DecodeSetNull stores NULL for column index 'i' and marks it filled; for a
 * domain type the domain's constraints are checked, as an INSERT of NULL
 * would.  'where' says where the NULL comes from, for the error context
 * line: NULL when the message has no value for the column (and the column
 * has no default).
 */
void
DecodeSetNull(KappaDecoder *d, int i, const DecodeWhere *where,
			  Datum *values, bool *nulls)
{
	DecodeColumn *col = &d->cols[i];

	values[i] = (Datum) 0;
	nulls[i] = true;
	d->filled[i] = true;
	if (col->is_domain)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(d->outcxt);

		d->cur_col = i;
		d->cur_where = where;
		d->cur_value = NULL;
		(void) InputFunctionCall(&col->infunc, NULL, col->ioparam,
								 col->typmod);
		d->cur_col = -1;
		MemoryContextSwitchTo(oldcxt);
	}
}

/*
 * dval_where_text names where the value being converted comes from, for the
 * context line: a field of the message, or the part of the message that
 * fills a metadata or text column, or the column alone when the message has
 * no value for it.
 */
static char *
dval_where_text(KappaDecoder *d)
{
	const DecodeWhere *where = d->cur_where;
	const char *column = d->cols[d->cur_col].name;

	if (where == NULL)
		return psprintf("column \"%s\"", column);
	if (where->field != NULL)
		return psprintf("field %s", DecodeFieldName(where->field));
	if (where->fieldno > 0)
		return psprintf("CSV field %d (column \"%s\")", where->fieldno, column);
	return psprintf("%s (column \"%s\")", where->part, column);
}

/*
 * DecodeErrorCallback is the error context callback KappaDecode installs
 * while it decodes a message ('arg': the decoder).  It names the message by
 * its partition and offset (when it has them) and, while a value is being
 * converted, where the value comes from and a sample of it, e.g.
 *
 *	kafka message at partition 2, offset 17, field "user_id": "seven"
 *
 * for the error's CONTEXT line, and so for the dead letter's error text.
 */
void
DecodeErrorCallback(void *arg)
{
	KappaDecoder *d = (KappaDecoder *) arg;
	const KappaMessageMeta *meta = d->meta;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "kafka message");
	if (meta->offset >= 0)
		appendStringInfo(&buf, " at partition %d, offset " INT64_FORMAT,
						 meta->partition, meta->offset);
	if (d->cur_schema_id >= 0)
		appendStringInfo(&buf, ", writer schema id %d", d->cur_schema_id);
	if (d->cur_col >= 0)
	{
		const char *value;

		if (d->cur_where == NULL)
			value = "no value and no default";
		else if (d->cur_value == NULL)
			value = d->cur_schema_id >= 0 ? NULL : "null";	/* Avro: no text */
		else
			value = DecodeSample(d->cur_value, d->cur_len);
		if (value != NULL)
			appendStringInfo(&buf, ", %s: %s", dval_where_text(d), value);
		else
			appendStringInfo(&buf, ", %s", dval_where_text(d));
	}
	errcontext("%s", buf.data);
}
