/*-------------------------------------------------------------------------
 *
 * decode.c
 *	  Message decoders, the driver: the bytes of one Kafka message straight
 *	  to the Datums of one row of a target relation, in the formats json,
 *	  csv, text and bytea, plus kappa.decode_preview() to try a format from
 *	  SQL.
 *
 * A decoder is prepared once per target (KappaDecoderCreate) and then turns
 * each message into values/nulls arrays (KappaDecode).  Preparing resolves
 * everything that does not depend on the message: the format options, which
 * column each CSV field goes to, the input function of every column, the
 * columns' default expressions (compiled once, evaluated per message), and
 * which columns are filled from the message's metadata.  A target that the
 * format cannot fill is refused there, so that create_kafka_source reports
 * it at once instead of a worker failing later.
 *
 * Columns named kafka_key, kafka_partition, kafka_offset, kafka_timestamp
 * and kafka_headers are metadata columns: they are filled from the message's
 * coordinates, never from its payload.  Generated and identity columns are
 * left NULL, for the executor to fill when the row is inserted.  Every other
 * column is a payload column.
 *
 * KappaDecode checks and converts the payload's encoding, stores a text or
 * bytea message itself and hands a json or csv one to its parser
 * (decode_json.c, decode_csv.c); both parsers and this file convert values
 * with decode_value.c.  See decode_internal.h for the map of the decoder's files.
 *
 * Errors: a message that cannot be decoded raises ERROR with an errcode and
 * an errmsg; the decoder's own errors have an errdetail that shows a
 * truncated sample of the bad part.  Errors raised by a column type's input
 * function are not caught: they keep their own errcode, message and detail.
 * While KappaDecode runs, an error context callback (DecodeErrorCallback)
 * adds the CONTEXT line: the message's partition and offset and, while a
 * value is being converted, its field or column and a sample of it.  The
 * caller (the Kafka worker) isolates such messages with a subtransaction and
 * stores them as dead letters, context line included.
 *
 * Memory: the decoder and everything it keeps live in the memory context
 * current at KappaDecoderCreate.  KappaDecode allocates the Datums it returns
 * in the context current when it is called, and its parse temporaries in a
 * scratch context of the decoder that is reset at every call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/int.h"
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

#include "decode_internal.h"
#include "schema_registry.h"

PG_FUNCTION_INFO_V1(kappa_decode_preview);

static const char *const dec_format_names[] = {"json", "csv", "text", "bytea", "avro"};

static void dec_parse_options(KappaDecoder *d, Jsonb *options,
							  List **columns);

/*
 * KappaParseFormat maps a format name (case-insensitive) to KappaFormat,
 * raising an error for an unknown one.
 */
KappaFormat
KappaParseFormat(const char *name)
{
	if (name != NULL)
	{
		for (int i = 0; i < lengthof(dec_format_names); i++)
		{
			if (pg_strcasecmp(name, dec_format_names[i]) == 0)
				return (KappaFormat) i;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown Kafka message format \"%s\"",
					name ? name : "(null)"),
			 errhint("The formats are json, csv, text, bytea and avro.")));
	return KAPPA_FORMAT_JSON;	/* keep compiler quiet */
}

/*
 * dec_hex_sample returns up to 16 bytes of 'data' from 'offset' in hex
 * ("0xc3 0x28 ..."), for details about bytes that are not valid text.
 */
static char *
dec_hex_sample(const char *data, size_t len, size_t offset)
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
 * DecodeToServer checks that 'data' is valid in the payload encoding and
 * returns it in the database encoding, NUL-terminated unless *outlen tells
 * otherwise ('data' itself when no conversion is needed).  'what' names the
 * part of the message for the error ("payload", "key").  Raises an error for
 * bytes that are not valid text (a NUL byte included).
 */
char *
DecodeToServer(KappaDecoder *d, const char *data, size_t len,
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
						   valid, dec_hex_sample(data, len, valid)),
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
 * dec_headers_text converts a header name or value to text in the
 * database encoding: as is when valid in the payload encoding, otherwise
 * in bytea's hex form ("\x...").
 */
static char *
dec_headers_text(KappaDecoder *d, const char *data, size_t len, int *outlen)
{
	if (len < MaxAllocSize &&
		pg_encoding_verifymbstr(d->encoding, data, (int) len) == (int) len)
	{
		char	   *s = DecodeToServer(d, data, len, "header", outlen);

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
 * dec_headers_datum builds the kafka_headers value: a jsonb (or json)
 * object of header name to value as text (null for a header without value;
 * the last one wins when a name repeats), or NULL without headers.
 */
static bool
dec_headers_datum(KappaDecoder *d, DecodeColumn *col,
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
		k.val.string.val = dec_headers_text(d, name, strlen(name), &len);
		k.val.string.len = len;
		pushJsonbValue(&state, WJB_KEY, &k);

		if (value == NULL)
			v.type = jbvNull;
		else
		{
			v.type = jbvString;
			v.val.string.val = dec_headers_text(d, value, size, &len);
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
 * dec_fill_meta fills metadata column index 'i' from the message's
 * coordinates.
 */
static void
dec_fill_meta(KappaDecoder *d, int i, const KappaMessageMeta *meta,
			  Datum *values, bool *nulls)
{
	DecodeColumn *col = &d->cols[i];

	nulls[i] = false;
	switch (col->kind)
	{
		case DECODE_COL_KEY:
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
				DecodeWhere where = {NULL, 0, "key"};
				int			len;
				char	   *s = DecodeToServer(d, meta->key, meta->keylen,
											   "key", &len);

				if (s == meta->key)
					s = pnstrdup(s, len);
				DecodeSetValue(d, i, s, len, &where, values, nulls);
			}
			break;
		case DECODE_COL_PARTITION:
			values[i] = (col->typid == INT8OID) ?
				Int64GetDatum((int64) meta->partition) :
				Int32GetDatum(meta->partition);
			break;
		case DECODE_COL_OFFSET:
			values[i] = Int64GetDatum(meta->offset);
			break;
		case DECODE_COL_TIMESTAMP:
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
		case DECODE_COL_HEADERS:
			nulls[i] = !dec_headers_datum(d, col,
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
 * cannot be decoded raises an ERROR, with a context line naming the message
 * (DecodeErrorCallback); the caller isolates it.  The Datums are allocated
 * in the current memory context.  When an error is raised, the current
 * memory context may be the decoder's scratch context, which the next call
 * resets: the caller's error handler must switch back to its own context, as
 * after any PG_CATCH.
 */
void
KappaDecode(KappaDecoder *d, const char *payload, size_t len,
			const KappaMessageMeta *meta, Datum *values, bool *nulls)
{
	MemoryContext outcxt = CurrentMemoryContext;
	KappaMessageMeta nometa = {NULL, 0, -1, -1, -1, NULL};
	ErrorContextCallback errcallback;

	if (meta == NULL)
		meta = &nometa;

	ResetExprContext(d->econtext);
	MemoryContextReset(d->scratch);
	d->outcxt = outcxt;
	d->meta = meta;
	d->cur_col = -1;
	d->cur_schema_id = -1;
	d->drift = false;
	MemoryContextSwitchTo(d->scratch);

	/* an error's context line names the message and the value converted */
	errcallback.callback = DecodeErrorCallback;
	errcallback.arg = (void *) d;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

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
						   dec_format_names[d->format])));

	switch (d->format)
	{
		case KAPPA_FORMAT_JSON:
		case KAPPA_FORMAT_CSV:
			{
				int			slen;
				char	   *s = DecodeToServer(d, payload, len, "payload", &slen);

				if (d->format == KAPPA_FORMAT_JSON)
					DecodeJson(d, s, slen, values, nulls);
				else
					DecodeCsv(d, s, slen, values, nulls);
				break;
			}
		case KAPPA_FORMAT_TEXT:
			{
				DecodeWhere where = {NULL, 0, "payload"};
				int			slen;
				char	   *s = DecodeToServer(d, payload, len, "payload", &slen);

				if (s == payload)
					s = pnstrdup(s, slen);
				DecodeSetValue(d, d->payload_col, s, slen, &where,
							   values, nulls);
				break;
			}
		case KAPPA_FORMAT_AVRO:
			DecodeAvro(d, payload, len, values, nulls);
			break;
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

	MemoryContextSwitchTo(outcxt);
	DecodeFinishRow(d, meta, values, nulls);

	error_context_stack = errcallback.previous;
}

/*
 * DecodeFinishRow completes a row decoded from a message, in the caller's
 * memory context: the metadata columns from 'meta', and for each payload
 * column the message had no value for, its default (or NULL; only NULL, and
 * its domain's check, with d->absent_null).  Used by KappaDecode and by the
 * keyed changelogs (decode_change.c), under their error context callback.
 */
void
DecodeFinishRow(KappaDecoder *d, const KappaMessageMeta *meta,
				Datum *values, bool *nulls)
{
	MemoryContext outcxt = CurrentMemoryContext;

	for (int i = 0; i < d->natts; i++)
	{
		DecodeColumn *col = &d->cols[i];

		if (col->kind == DECODE_COL_SKIP)
			continue;
		if (col->kind != DECODE_COL_PAYLOAD)
			dec_fill_meta(d, i, meta, values, nulls);
		else if (d->filled[i])
			continue;
		else if (d->absent_null)
		{
			if (col->is_domain)
			{
				MemoryContextSwitchTo(d->scratch);
				DecodeSetNull(d, i, NULL, values, nulls);
				MemoryContextSwitchTo(outcxt);
			}
		}
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
			DecodeSetNull(d, i, NULL, values, nulls);
			MemoryContextSwitchTo(outcxt);
		}
	}
}

/*
 * KappaDecoderDrift: see kafka.h.
 */
bool
KappaDecoderDrift(KappaDecoder *d)
{
	return d->drift;
}

/*
 * KappaDecoderUsesTimeAndHeaders: see kafka.h.
 */
bool
KappaDecoderUsesTimeAndHeaders(KappaDecoder *d)
{
	for (int i = 0; i < d->natts; i++)
	{
		if (d->cols[i].kind == DECODE_COL_TIMESTAMP ||
			d->cols[i].kind == DECODE_COL_HEADERS)
			return true;
	}
	return false;
}

/*
 * dec_meta_kind tells whether a column name is a metadata column's.
 */
static DecodeColumnKind
dec_meta_kind(const char *name)
{
	if (strcmp(name, "kafka_key") == 0)
		return DECODE_COL_KEY;
	if (strcmp(name, "kafka_partition") == 0)
		return DECODE_COL_PARTITION;
	if (strcmp(name, "kafka_offset") == 0)
		return DECODE_COL_OFFSET;
	if (strcmp(name, "kafka_timestamp") == 0)
		return DECODE_COL_TIMESTAMP;
	if (strcmp(name, "kafka_headers") == 0)
		return DECODE_COL_HEADERS;
	return DECODE_COL_PAYLOAD;
}

/*
 * dec_check_meta_type refuses a metadata column whose type its value
 * cannot have.
 */
static void
dec_check_meta_type(DecodeColumn *col)
{
	const char *want = NULL;
	bool		ok = false;

	switch (col->kind)
	{
		case DECODE_COL_KEY:
			ok = col->typid == TEXTOID || col->typid == VARCHAROID ||
				col->typid == BYTEAOID;
			want = "text, varchar or bytea";
			break;
		case DECODE_COL_PARTITION:
			ok = col->typid == INT4OID || col->typid == INT8OID;
			want = "integer or bigint";
			break;
		case DECODE_COL_OFFSET:
			ok = col->typid == INT8OID;
			want = "bigint";
			break;
		case DECODE_COL_TIMESTAMP:
			ok = col->typid == TIMESTAMPTZOID;
			want = "timestamp with time zone";
			break;
		case DECODE_COL_HEADERS:
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
 * dec_prepare_defaults compiles the default expression of every payload
 * column.  The target relation is found from the row type of 'tupdesc'; a
 * descriptor of no relation gives the types' defaults only.
 */
static void
dec_prepare_defaults(KappaDecoder *d, TupleDesc tupdesc)
{
	Oid			relid = InvalidOid;
	Relation	rel = NULL;

	if (OidIsValid(tupdesc->tdtypeid) && tupdesc->tdtypeid != RECORDOID)
		relid = typeidTypeRelid(tupdesc->tdtypeid);
	if (OidIsValid(relid))
		rel = relation_open(relid, AccessShareLock);

	for (int i = 0; i < d->natts; i++)
	{
		DecodeColumn *col = &d->cols[i];
		Node	   *expr = NULL;

		col->defnull = true;
		if (col->kind != DECODE_COL_PAYLOAD)
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
 * dec_payload_column picks the column that takes the whole payload in
 * formats text and bytea: the one named by option columns, or else the only
 * payload column of a suitable type.
 */
static int
dec_payload_column(KappaDecoder *d, List *columns)
{
	const char *fmt = dec_format_names[d->format];
	const char *want = (d->format == KAPPA_FORMAT_BYTEA) ?
	"bytea" : "text, varchar, char, json or jsonb";
	int			found = -1;
	int			count = 0;

	for (int i = 0; i < d->natts; i++)
	{
		DecodeColumn *col = &d->cols[i];
		Oid			base;
		bool		ok;

		if (col->kind != DECODE_COL_PAYLOAD)
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
	return DecodeCreate(format, tupdesc, options, false);
}

/*
 * DecodeCreate is KappaDecoderCreate; with 'keyed', identity columns are
 * payload columns (a keyed changelog carries the source's values of them,
 * the primary key's above all) and payload columns without a value are
 * NULL, not their default (d->absent_null).
 */
KappaDecoder *
DecodeCreate(KappaFormat format, TupleDesc tupdesc, Jsonb *options,
			 bool keyed)
{
	KappaDecoder *d = palloc0(sizeof(KappaDecoder));
	HASHCTL		hctl;
	List	   *columns = NIL;
	int			npayload = 0;

	if ((int) format < 0 || (int) format >= lengthof(dec_format_names))
		elog(ERROR, "invalid Kafka message format %d", (int) format);

	d->format = format;
	d->absent_null = keyed;
	d->natts = tupdesc->natts;
	d->cols = palloc0(sizeof(DecodeColumn) * Max(d->natts, 1));
	d->filled = palloc0(sizeof(bool) * Max(d->natts, 1));
	d->payload_col = -1;
	d->cur_col = -1;
	d->cur_schema_id = -1;
	initStringInfo(&d->json_token);

	/* option defaults */
	d->encoding = PG_UTF8;
	d->delimiter = ',';
	d->quote = '"';
	d->escape = '\0';
	d->null_string = "";
	d->time_format = DECODE_TIME_TEXT;
	dec_parse_options(d, options, &columns);
	if (d->escape == '\0')
		d->escape = d->quote;

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = NAMEDATALEN;
	hctl.entrysize = sizeof(DecodeColumnEntry);
	hctl.hcxt = CurrentMemoryContext;
	d->byname = hash_create("kappa decoder columns", Max(d->natts, 8), &hctl,
							HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	for (int i = 0; i < d->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		DecodeColumn *col = &d->cols[i];
		DecodeColumnEntry *entry;
		Oid			infunc;
		Oid			base;

		col->name = pstrdup(NameStr(att->attname));
		col->typid = att->atttypid;
		col->typmod = att->atttypmod;
		if (att->attisdropped)
		{
			col->kind = DECODE_COL_SKIP;
			continue;
		}

		entry = hash_search(d->byname, col->name, HASH_ENTER, NULL);
		entry->index = i;

		col->kind = dec_meta_kind(col->name);
		if (att->attgenerated || (att->attidentity && !keyed))
			col->kind = DECODE_COL_SKIP;	/* filled by the executor */
		dec_check_meta_type(col);
		if (col->kind == DECODE_COL_SKIP)
			continue;

		base = getBaseType(col->typid);
		col->is_domain = (base != col->typid);
		col->is_json = (base == JSONOID || base == JSONBOID);
		col->is_text = (col->typid == TEXTOID);
		col->is_timestamp = (col->typid == TIMESTAMPOID ||
							 col->typid == TIMESTAMPTZOID);
		col->is_bytea = (col->typid == BYTEAOID);
		col->notnull = att->attnotnull;
		get_typlenbyval(col->typid, &col->typlen, &col->typbyval);
		getTypeInputInfo(col->typid, &infunc, &col->ioparam);
		fmgr_info(infunc, &col->infunc);
		if (col->kind == DECODE_COL_PAYLOAD)
			npayload++;
	}

	switch (format)
	{
		case KAPPA_FORMAT_JSON:
			break;
		case KAPPA_FORMAT_AVRO:
			DecodeAvroCreate(d);
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
						if (d->cols[i].kind == DECODE_COL_PAYLOAD)
							d->field_cols[n++] = i;
				}
				foreach(lc, columns)
				{
					const char *name = strVal(lfirst(lc));
					int			c = DecodeFindColumn(d, name);

					if (c < 0 || d->cols[c].kind != DECODE_COL_PAYLOAD)
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
								dec_format_names[format]),
						 errdetail("Format %s stores the whole message in one column.",
								   dec_format_names[format])));
			d->payload_col = dec_payload_column(d, columns);
			break;
	}

	dec_prepare_defaults(d, tupdesc);
	d->econtext = CreateStandaloneExprContext();
	d->scratch = AllocSetContextCreate(CurrentMemoryContext,
									   "kappa decoder scratch",
									   ALLOCSET_DEFAULT_SIZES);
	return d;
}

/*
 * dec_option_error raises the error for an invalid option value.
 */
static void
dec_option_error(const char *key, const char *want)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for format option \"%s\"", key),
			 errdetail("Option \"%s\" must be %s.", key, want)));
}

/*
 * dec_option_string returns a string option's value; numbers and booleans
 * are taken as written.
 */
static char *
dec_option_string(const char *key, JsonbValue *v)
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
			dec_option_error(key, "a string");
			return NULL;		/* keep compiler quiet */
	}
}

/*
 * dec_option_bool reads a boolean option (true/false, or a string that
 * parse_bool accepts).
 */
static bool
dec_option_bool(const char *key, JsonbValue *v)
{
	bool		result;

	if (v->type == jbvBool)
		return v->val.boolean;
	if (v->type != jbvString ||
		!parse_bool_with_len(v->val.string.val, v->val.string.len, &result))
		dec_option_error(key, "a boolean");
	return result;
}

/*
 * dec_option_char reads a one-character option (a single-byte character
 * other than a line break).
 */
static char
dec_option_char(const char *key, JsonbValue *v)
{
	char	   *s = dec_option_string(key, v);

	if (strlen(s) != 1 || IS_HIGHBIT_SET(s[0]) || s[0] == '\n' || s[0] == '\r')
		dec_option_error(key, "a single one-byte character other than a line break");
	return s[0];
}

/*
 * dec_option_columns reads option columns given as one string of
 * comma-separated names (SQL identifiers: unquoted names are folded to lower
 * case).  An array of names is read by the caller.
 */
static List *
dec_option_columns(JsonbValue *v)
{
	List	   *result = NIL;

	if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
		List	   *names;
		ListCell   *lc;

		if (!SplitIdentifierString(s, ',', &names))
			dec_option_error("columns", "a list of column names");
		foreach(lc, names)
			result = lappend(result, makeString((char *) lfirst(lc)));
		return result;
	}
	dec_option_error("columns", "an array of column names, or one string of comma-separated names");
	return NIL;
}

/*
 * dec_option_column_array reads option columns given as an array of
 * column names (exact names).
 */
static List *
dec_option_column_array(JsonbContainer *array)
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
			dec_option_error("columns", "an array of column names");
		result = lappend(result, makeString(pnstrdup(v.val.string.val,
													 v.val.string.len)));
	}
	return result;
}

/*
 * dec_parse_options reads the format options from 'options' into the
 * decoder.  Unknown options and options of another format are refused.
 */
static void
dec_parse_options(KappaDecoder *d, Jsonb *options, List **columns)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	const char *fmt = dec_format_names[d->format];
	bool		csv = (d->format == KAPPA_FORMAT_CSV);
	bool		json = (d->format == KAPPA_FORMAT_JSON);
	bool		is_text = (d->format == KAPPA_FORMAT_TEXT);
	bool		avro = (d->format == KAPPA_FORMAT_AVRO);

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
				dec_option_error(key, "a string, a number or a boolean");
			valid = !json && !avro;
			if (valid)
				*columns = dec_option_column_array(v.val.binary.data);
		}
		else if (v.type == jbvNull)
			valid = true;		/* null: the default */
		else if (strcmp(key, "strict") == 0)
		{
			valid = json || csv || avro;
			d->strict = dec_option_bool(key, &v);
		}
		else if (strcmp(key, "header") == 0)
		{
			valid = csv;
			d->header = dec_option_bool(key, &v);
		}
		else if (strcmp(key, "delimiter") == 0)
		{
			valid = csv;
			d->delimiter = dec_option_char(key, &v);
		}
		else if (strcmp(key, "quote") == 0)
		{
			valid = csv;
			d->quote = dec_option_char(key, &v);
		}
		else if (strcmp(key, "escape") == 0)
		{
			valid = csv;
			d->escape = dec_option_char(key, &v);
		}
		else if (strcmp(key, "null") == 0)
		{
			valid = csv;
			d->null_string = dec_option_string(key, &v);
		}
		else if (strcmp(key, "encoding") == 0)
		{
			char	   *name = dec_option_string(key, &v);
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
			char	   *name = dec_option_string(key, &v);

			valid = json || csv;
			if (strcmp(name, "text") == 0)
				d->time_format = DECODE_TIME_TEXT;
			else if (strcmp(name, "epoch") == 0 || strcmp(name, "epoch_s") == 0)
				d->time_format = DECODE_TIME_EPOCH_S;
			else if (strcmp(name, "epoch_ms") == 0)
				d->time_format = DECODE_TIME_EPOCH_MS;
			else if (strcmp(name, "epoch_us") == 0)
				d->time_format = DECODE_TIME_EPOCH_US;
			else
				dec_option_error(key, "text, epoch_s, epoch_ms or epoch_us");
		}
		else if (strcmp(key, "columns") == 0)
		{
			valid = !json && !avro;
			if (valid)
				*columns = dec_option_columns(&v);
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
 * dec_preview_headers builds librdkafka headers from a jsonb object of
 * name to value (null for a header without value), for decode_preview.
 */
static rd_kafka_headers_t *
dec_preview_headers(Jsonb *headers)
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
				char	   *value = dec_option_string(name, &v);

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
/*
 * dec_preview_writer_schema takes option writer_schema out of 'options' and
 * stores it as the writer schema of the Avro message 'payload'
 * (KappaRegistryAdd), for kappa.decode_preview; returns the other options.
 * Without it, the message's schema id is unknown to the backend, which the
 * decoder reports.
 */
static Jsonb *
dec_preview_writer_schema(Jsonb *options, bytea *payload)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *schema = NULL;
	bool		skip = false;
	int32		id;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		return options;
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			skip = (v.val.string.len == strlen("writer_schema") &&
					memcmp(v.val.string.val, "writer_schema", v.val.string.len) == 0);
			if (!skip)
				pushJsonbValue(&state, WJB_KEY, &v);
		}
		else if (tok == WJB_VALUE && skip)
		{
			if (v.type == jbvString)
				schema = pnstrdup(v.val.string.val, v.val.string.len);
			else if (v.type == jbvBinary)
				schema = JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
			else
				dec_option_error("writer_schema", "an Avro schema, as JSON or as a string of JSON");
		}
		else if (tok == WJB_VALUE)
			pushJsonbValue(&state, WJB_VALUE, &v);
	}
	if (schema == NULL)
		return options;
	id = KappaAvroSchemaId(payload ? VARDATA_ANY(payload) : NULL,
						   payload ? VARSIZE_ANY_EXHDR(payload) : 0);
	if (id >= 0)
		KappaRegistryAdd(id, schema);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

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
	KappaFormat format;
	Jsonb	   *options;

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
	format = KappaParseFormat(text_to_cstring(PG_GETARG_TEXT_PP(1)));
	options = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	payload = PG_ARGISNULL(2) ? NULL : PG_GETARG_BYTEA_PP(2);

	/*
	 * Avro: a backend asks no schema registry; option writer_schema gives the
	 * message's writer schema instead (as JSON, or as a string of JSON).
	 */
	if (format == KAPPA_FORMAT_AVRO)
		options = dec_preview_writer_schema(options, payload);

	d = KappaDecoderCreate(format, tupdesc, options);

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
			headers = dec_preview_headers(PG_GETARG_JSONB_P(8));
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
