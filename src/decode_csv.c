/*-------------------------------------------------------------------------
 *
 * decode_csv.c
 *	  Format csv of the message decoders: one CSV record, or a header record
 *	  and a record of values, to the payload columns of one row.
 *
 * Quoting follows COPY's CSV format (delimiter, quote, escape and null
 * string are the decoder's options).  Without option header the fields go
 * to the columns the driver resolved at KappaDecoderCreate (d->field_cols);
 * with it, the header names them, message by message.  Each field's text
 * goes through DecodeSetValue or DecodeSetNull (decode_value.c).
 *
 * The errors raised here (the record's structure, strict) show a sample of
 * the record in their detail; errors of a column's input function get their
 * context line from DecodeErrorCallback.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "decode_internal.h"

/* A field of a CSV record. */
typedef struct DecodeCsvField
{
	char	   *value;
	int			len;
	bool		isnull;
} DecodeCsvField;

/*
 * dcsv_record parses one CSV record of 'data' from *pos, leaving *pos
 * after its line end, into a palloc'd array of fields (*nfields of them).
 * Quoting follows COPY's CSV format: a quoted field may hold delimiters,
 * line breaks and doubled quotes; an unquoted field equal to the null string
 * is NULL.
 */
static DecodeCsvField *
dcsv_record(KappaDecoder *d, const char *data, int len, int *pos,
			int *nfields)
{
	int			p = *pos;
	int			nalloc = 16;
	int			n = 0;
	DecodeCsvField *fields = palloc(sizeof(DecodeCsvField) * nalloc);
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
							   DecodeSample(data + start, len - start))));

		if (n == nalloc)
		{
			nalloc *= 2;
			fields = repalloc(fields, sizeof(DecodeCsvField) * nalloc);
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
 * dcsv_at_end tells whether only line breaks remain from 'pos'.
 */
static bool
dcsv_at_end(const char *data, int len, int pos)
{
	while (pos < len && (data[pos] == '\n' || data[pos] == '\r'))
		pos++;
	return pos >= len;
}

/*
 * DecodeCsv fills the payload columns of values/nulls (and d->filled) from
 * one CSV record, or from a header record naming the columns followed by one
 * record of values: 'data' ('len' bytes, in the database encoding).  Raises
 * an error for a message of another shape or whose values the columns cannot
 * take.  Temporaries go to the current memory context (the decoder's scratch
 * context), the Datums to the caller's of KappaDecode.
 */
void
DecodeCsv(KappaDecoder *d, char *data, int len,
		  Datum *values, bool *nulls)
{
	int			pos = 0;
	int			nfields;
	DecodeCsvField *fields;
	int		   *cols;
	int			ncols;

	if (d->header)
	{
		int			nheader;
		DecodeCsvField *header = dcsv_record(d, data, len, &pos, &nheader);

		if (dcsv_at_end(data, len, pos))
			ereport(ERROR,
					(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
					 errmsg("kafka message has a CSV header but no values"),
					 errdetail("With option \"header\", each message holds a header "
							   "record naming the columns, then one record of values. "
							   "The message is %s.", DecodeSample(data, len))));

		cols = palloc(sizeof(int) * nheader);
		for (int i = 0; i < nheader; i++)
		{
			int			c;

			c = header[i].isnull ? -1 : DecodeFindColumn(d, header[i].value);
			if (c < 0 && d->strict)
				DecodeUnknownField(header[i].isnull ? "" : header[i].value,
								   NULL, 0);
			if (c < 0)
				d->drift = true;
			if (c >= 0 && d->cols[c].kind != DECODE_COL_PAYLOAD)
				c = -1;			/* metadata or generated: ignored */
			for (int j = 0; c >= 0 && j < i; j++)
			{
				if (cols[j] == c)
					ereport(ERROR,
							(errcode(ERRCODE_DUPLICATE_COLUMN),
							 errmsg("CSV header of kafka message names column \"%s\" twice",
									d->cols[c].name),
							 errdetail("The header is %s.",
									   DecodeSample(data, pos))));
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

	fields = dcsv_record(d, data, len, &pos, &nfields);
	if (!dcsv_at_end(data, len, pos))
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("kafka message holds more than one CSV record"),
				 errdetail("Each message is one record%s; the next record begins with %s.",
						   d->header ? " after the header" : "",
						   DecodeSample(data + pos, len - pos))));

	if (nfields > ncols)
		d->drift = true;
	if (nfields > ncols && d->strict)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("kafka message has %d CSV fields, more than the %d expected",
						nfields, ncols),
				 errdetail("Field %d holds %s.", ncols + 1,
						   DecodeSample(fields[ncols].value, fields[ncols].len)),
				 errhint("Set option \"strict\" to false to ignore extra fields.")));

	for (int i = 0; i < nfields && i < ncols; i++)
	{
		int			c = cols[i];
		DecodeWhere where = {NULL, 0, NULL};

		if (c < 0)
			continue;
		if (d->header)
			where.field = d->cols[c].name;
		else
			where.fieldno = i + 1;
		if (fields[i].isnull)
			DecodeSetNull(d, c, &where, values, nulls);
		else
			DecodeSetValue(d, c, fields[i].value, fields[i].len, &where,
						   values, nulls);
	}
}
