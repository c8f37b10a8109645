/*-------------------------------------------------------------------------
 *
 * decode_avro.c
 *	  Avro messages in the Confluent wire format: a magic byte 0, the writer
 *	  schema's id in four big-endian bytes, then the Avro binary body, which
 *	  avro-c decodes and this file turns into the Datums of the target's
 *	  columns.
 *
 * The writer schema comes from the schema registry (schema_registry.c),
 * which the Kafka worker asked for every id of a batch before applying it;
 * here schemas are only looked up.  Each message is decoded with its own
 * writer schema, and the target's columns are the reader: a field fills the
 * column of the same name; a field without a column is ignored (refused
 * with option strict); a column without a field gets its default or NULL.
 *
 * Per writer schema and target, a plan (AvroPlan) says which column each
 * top-level field fills, and holds the schema as a tree of AvroNode: the
 * avro-c schema's shape plus what avro-c 1.11 does not keep, the logical
 * types (decimal with its scale, date, time-millis/-micros,
 * timestamp-millis/-micros, local-timestamp-millis/-micros, uuid), read
 * from the schema's JSON.
 *
 * A body is first walked by davro_check_value, which refuses what avro-c
 * would trust: lengths beyond the end of the message (avro-c allocates the
 * length first), enum and union indexes out of range, and arrays or maps
 * with more items than the message could hold.  Then avro_value_read
 * decodes it into the schema's generic value; bytes after a complete record
 * are ignored, as Confluent's deserializer does.
 *
 * Values become Datums directly where the column's type and the Avro type
 * agree (integers, floating point, boolean, text, bytea, date, time,
 * timestamps, numeric from numbers); otherwise through the text form of the
 * value and the column type's input function, as the JSON decoder does;
 * records, maps, arrays and other unions become jsonb (or json, or their
 * text), and an Avro array fills an array column element by element.
 *
 * Errors are the message's: they become dead letters, and their context
 * line (DecodeErrorCallback) names the writer schema id and the field.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/heap.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "decode_internal.h"
#include "schema_registry.h"

/* The logical types the decoder knows. */
typedef enum AvroLogical
{
	AVRO_LOGICAL_NONE,
	AVRO_LOGICAL_DECIMAL,		/* bytes or fixed, two's complement */
	AVRO_LOGICAL_DATE,			/* int: days since 1970-01-01 */
	AVRO_LOGICAL_TIME_MILLIS,	/* int: ms after midnight */
	AVRO_LOGICAL_TIME_MICROS,	/* long: us after midnight */
	AVRO_LOGICAL_TS_MILLIS,		/* long: ms since 1970, UTC */
	AVRO_LOGICAL_TS_MICROS,		/* long: us since 1970, UTC */
	AVRO_LOGICAL_LOCAL_TS_MILLIS,	/* long: ms since 1970, local wall clock */
	AVRO_LOGICAL_LOCAL_TS_MICROS,	/* long: us since 1970, local wall clock */
	AVRO_LOGICAL_LOCAL_TS_NANOS,	/* long: ns since 1970, local wall clock
									 * (Debezium's NanoTimestamp) */
	AVRO_LOGICAL_TIME_NANOS,	/* long: ns after midnight (NanoTime) */
	AVRO_LOGICAL_UUID,			/* string */
	AVRO_LOGICAL_VARIABLE_DECIMAL	/* record {scale, value}: Debezium's
									 * VariableScaleDecimal */
} AvroLogical;

/* One node of a writer schema (see the file header). */
typedef struct AvroNode
{
	avro_type_t type;			/* never AVRO_LINK */
	AvroLogical logical;
	int			scale;			/* decimal */
	int64		fixed_size;		/* fixed */
	int			nchildren;		/* union branches, record fields, the items of
								 * an array or the values of a map */
	struct AvroNode **children;
	char	  **names;			/* record: field names */
	int			nsymbols;		/* enum */
	char	  **symbols;
} AvroNode;

/* How one writer schema fills the target. */
typedef struct AvroPlan
{
	int32		id;				/* hash key: the schema id */
	KappaWriterSchema *schema;
	AvroNode   *root;
	int		   *field_col;		/* per top-level field: its column, or -1 */
	int		   *missing_notnull;	/* NOT NULL columns without a field or
									 * default, -1 terminated */
	DecodeColumn **elements;	/* per column: an array's element, or NULL */
	bool		drift;			/* a field names no column */
} AvroPlan;

/* The Avro state of a decoder (KappaDecoder.avro). */
struct DecodeAvroState
{
	MemoryContext cxt;			/* the decoder's */
	HTAB	   *plans;			/* schema id -> AvroPlan, of values */
	HTAB	   *key_plans;		/* schema id -> AvroPlan, of keys */

	/* the Debezium change event decoded last (DecodeAvroEvent) */
	avro_value_t event_rows[2]; /* its after and before records */
	AvroNode   *event_nodes[2]; /* their nodes, NULL when null */
	List	   *row_maps;		/* of AvroRowMap, per record node */
	struct AvroPlan *last_value;	/* DecodeAvro's last record's plan */
	avro_reader_t reader;

	/*
	 * The plans found last, of values and of keys: consecutive messages
	 * mostly share their writer schema.
	 */
	struct AvroPlan *last_plan[2];
};

/* Which column each field of a record node fills (Debezium rows). */
typedef struct AvroRowMap
{
	AvroNode   *node;
	bool		drift;			/* a field names no column */
	int		   *field_col;
	DecodeColumn **elements;	/* per column: an array's element, or NULL */
} AvroRowMap;

/* What davro_check_value walks. */
typedef struct AvroCursor
{
	const		uint8 *p;
	const		uint8 *end;
	int64		items;			/* array and map items so far */
	int64		max_items;
	const char *field;			/* top-level field being walked */
} AvroCursor;

/* A pair of the memo of davro_build_node. */
typedef struct AvroMemo
{
	avro_schema_t schema;
	AvroNode   *node;
} AvroMemo;

static Datum davro_datum(KappaDecoder *d, DecodeColumn *col, DecodeColumn *element,
						 avro_value_t * v, AvroNode *n, bool *isnull);
static char *davro_composite_text(KappaDecoder *d, avro_value_t * v, AvroNode *n,
								  Oid typid);

/* ---------------------------------------------------------------------
 * The writer schema as a tree of AvroNode
 * ---------------------------------------------------------------------
 */

/* davro_json_member returns member 'key' of a JSON object value, or NULL. */
static JsonbValue *
davro_json_member(JsonbValue *jv, const char *key)
{
	if (jv == NULL || jv->type != jbvBinary ||
		!JsonContainerIsObject(jv->val.binary.data))
		return NULL;
	return getKeyJsonValueFromContainer(jv->val.binary.data, key, strlen(key), NULL);
}

/* davro_json_element returns element i of a JSON array value, or NULL. */
static JsonbValue *
davro_json_element(JsonbValue *jv, int i)
{
	if (jv == NULL || jv->type != jbvBinary ||
		!JsonContainerIsArray(jv->val.binary.data))
		return NULL;
	return getIthJsonbValueFromContainer(jv->val.binary.data, i);
}

/* davro_json_equals tells whether a JSON value is the string 's'. */
static bool
davro_json_equals(JsonbValue *jv, const char *s)
{
	return jv != NULL && jv->type == jbvString &&
		jv->val.string.len == strlen(s) &&
		memcmp(jv->val.string.val, s, jv->val.string.len) == 0;
}

/*
 * davro_logical reads the logical type of a schema node's JSON, if it is one
 * that applies to the node's Avro type (others are ignored, as the Avro
 * specification says).
 */
static void
davro_logical(AvroNode *node, JsonbValue *jv)
{
	JsonbValue *lt = davro_json_member(jv, "logicalType");
	JsonbValue *cn = davro_json_member(jv, "connect.name");
	JsonbValue *scale;

	if (lt != NULL && lt->type != jbvString)
		lt = NULL;
	if (cn != NULL && cn->type != jbvString)
		cn = NULL;
	switch (node->type)
	{
		case AVRO_BYTES:
		case AVRO_FIXED:
			if (davro_json_equals(lt, "decimal") ||
				davro_json_equals(cn, "org.apache.kafka.connect.data.Decimal"))
			{
				node->logical = AVRO_LOGICAL_DECIMAL;
				scale = davro_json_member(jv, "scale");
				if (scale == NULL)
					scale = davro_json_member(davro_json_member(jv, "connect.parameters"), "scale");
				if (scale != NULL && scale->type == jbvNumeric)
					node->scale = DatumGetInt32(DirectFunctionCall1(numeric_int4,
																	NumericGetDatum(scale->val.numeric)));
				else if (scale != NULL && scale->type == jbvString)
					node->scale = pg_strtoint32(pnstrdup(scale->val.string.val,
														 scale->val.string.len));
				if (node->scale < 0 || node->scale > NUMERIC_MAX_DISPLAY_SCALE)
					node->logical = AVRO_LOGICAL_NONE;
			}
			break;
		case AVRO_INT32:
			if (davro_json_equals(lt, "date") ||
				davro_json_equals(cn, "io.debezium.time.Date") ||
				davro_json_equals(cn, "org.apache.kafka.connect.data.Date"))
				node->logical = AVRO_LOGICAL_DATE;
			else if (davro_json_equals(lt, "time-millis") ||
					 davro_json_equals(cn, "io.debezium.time.Time") ||
					 davro_json_equals(cn, "org.apache.kafka.connect.data.Time"))
				node->logical = AVRO_LOGICAL_TIME_MILLIS;
			break;
		case AVRO_INT64:
			if (davro_json_equals(lt, "time-micros") ||
				davro_json_equals(cn, "io.debezium.time.MicroTime"))
				node->logical = AVRO_LOGICAL_TIME_MICROS;
			else if (davro_json_equals(cn, "io.debezium.time.NanoTime"))
				node->logical = AVRO_LOGICAL_TIME_NANOS;
			else if (davro_json_equals(lt, "timestamp-millis") ||
					 davro_json_equals(cn, "org.apache.kafka.connect.data.Timestamp"))
				node->logical = AVRO_LOGICAL_TS_MILLIS;
			else if (davro_json_equals(lt, "timestamp-micros"))
				node->logical = AVRO_LOGICAL_TS_MICROS;
			else if (davro_json_equals(lt, "local-timestamp-millis") ||
					 davro_json_equals(cn, "io.debezium.time.Timestamp"))
				node->logical = AVRO_LOGICAL_LOCAL_TS_MILLIS;
			else if (davro_json_equals(lt, "local-timestamp-micros") ||
					 davro_json_equals(cn, "io.debezium.time.MicroTimestamp"))
				node->logical = AVRO_LOGICAL_LOCAL_TS_MICROS;
			else if (davro_json_equals(cn, "io.debezium.time.NanoTimestamp"))
				node->logical = AVRO_LOGICAL_LOCAL_TS_NANOS;
			break;
		case AVRO_STRING:
			if (davro_json_equals(lt, "uuid"))
				node->logical = AVRO_LOGICAL_UUID;
			break;
		case AVRO_RECORD:
			if (davro_json_equals(cn, "io.debezium.data.VariableScaleDecimal"))
				node->logical = AVRO_LOGICAL_VARIABLE_DECIMAL;
			break;
		default:
			break;
	}
}

/*
 * davro_build_node builds the AvroNode of avro-c schema 's', whose JSON is
 * 'jv' (NULL when unknown: a reference to a named type already built, whose
 * node the memo holds).  Named types are built once, so that references and
 * recursive records share their node.
 */
static AvroNode *
davro_build_node(avro_schema_t s, JsonbValue *jv, List **memo)
{
	AvroNode   *node;
	ListCell   *lc;
	JsonbValue *type_json;

	check_stack_depth();
	if (avro_typeof(s) == AVRO_LINK)
		return davro_build_node(avro_schema_link_target(s), NULL, memo);
	foreach(lc, *memo)
	{
		AvroMemo   *m = lfirst(lc);

		if (m->schema == s)
			return m->node;
	}

	node = palloc0(sizeof(AvroNode));
	node->type = avro_typeof(s);
	if (is_avro_named_type(s))
	{
		AvroMemo   *m = palloc(sizeof(AvroMemo));

		m->schema = s;
		m->node = node;
		*memo = lappend(*memo, m);
	}

	/* {"type": {...}} nests the definition one level down */
	type_json = davro_json_member(jv, "type");
	if (type_json != NULL && type_json->type == jbvBinary &&
		!is_avro_record(s) && !is_avro_enum(s) && !is_avro_fixed(s) &&
		!is_avro_array(s) && !is_avro_map(s))
		jv = type_json;

	switch (node->type)
	{
		case AVRO_RECORD:
			{
				JsonbValue *fields = davro_json_member(jv, "fields");

				node->nchildren = avro_schema_record_size(s);
				node->children = palloc0(sizeof(AvroNode *) * Max(node->nchildren, 1));
				node->names = palloc0(sizeof(char *) * Max(node->nchildren, 1));
				for (int i = 0; i < node->nchildren; i++)
				{
					JsonbValue *field = davro_json_element(fields, i);

					node->names[i] = pstrdup(avro_schema_record_field_name(s, i));
					node->children[i] =
						davro_build_node(avro_schema_record_field_get_by_index(s, i),
										 davro_json_member(field, "type"), memo);
				}
				break;
			}
		case AVRO_UNION:
			node->nchildren = avro_schema_union_size(s);
			node->children = palloc0(sizeof(AvroNode *) * Max(node->nchildren, 1));
			for (int i = 0; i < node->nchildren; i++)
				node->children[i] = davro_build_node(avro_schema_union_branch(s, i),
													 davro_json_element(jv, i), memo);
			break;
		case AVRO_ARRAY:
			node->nchildren = 1;
			node->children = palloc(sizeof(AvroNode *));
			node->children[0] = davro_build_node(avro_schema_array_items(s),
												 davro_json_member(jv, "items"), memo);
			break;
		case AVRO_MAP:
			node->nchildren = 1;
			node->children = palloc(sizeof(AvroNode *));
			node->children[0] = davro_build_node(avro_schema_map_values(s),
												 davro_json_member(jv, "values"), memo);
			break;
		case AVRO_ENUM:
			node->nsymbols = avro_schema_enum_number_of_symbols(s);
			node->symbols = palloc0(sizeof(char *) * Max(node->nsymbols, 1));
			for (int i = 0; i < node->nsymbols; i++)
				node->symbols[i] = pstrdup(avro_schema_enum_get(s, i));
			break;
		case AVRO_FIXED:
			node->fixed_size = avro_schema_fixed_size(s);
			break;
		default:
			break;
	}
	davro_logical(node, jv);
	return node;
}

/* ---------------------------------------------------------------------
 * Checking a body before avro-c reads it
 * ---------------------------------------------------------------------
 */

/* davro_bad_body raises the error of a body that does not match its schema. */
static void
davro_bad_body(AvroCursor *c, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("kafka message is not valid Avro for its writer schema"),
			 c->field ?
			 errdetail("In field \"%s\": %s.", c->field, what) :
			 errdetail("%s.", what)));
}

/* davro_check_long reads one zigzag varint of at most 'maxbytes' bytes. */
static int64
davro_check_long(AvroCursor *c, int maxbytes)
{
	uint64		value = 0;
	int			shift = 0;

	for (int i = 0; i < maxbytes; i++)
	{
		uint8		b;

		if (c->p >= c->end)
			davro_bad_body(c, "the message ends inside a number");
		b = *c->p++;
		value |= (uint64) (b & 0x7f) << shift;
		shift += 7;
		if ((b & 0x80) == 0)
			return (int64) ((value >> 1) ^ -(value & 1));
	}
	davro_bad_body(c, "a variable-length number is too long");
	return 0;					/* keep compiler quiet */
}

/* davro_check_skip moves past n bytes, which must be there. */
static void
davro_check_skip(AvroCursor *c, int64 n, const char *what)
{
	if (n < 0 || n > c->end - c->p)
		davro_bad_body(c, psprintf("%s of " INT64_FORMAT " bytes does not fit in the "
								   INT64_FORMAT " bytes left", what, n,
								   (int64) (c->end - c->p)));
	c->p += n;
}

/*
 * davro_check_value walks one value of node 'n' (see the file header),
 * raising an error where avro-c should not be trusted with the body.
 */
static void
davro_check_value(AvroCursor *c, AvroNode *n)
{
	int64		v;

	switch (n->type)
	{
		case AVRO_NULL:
			break;
		case AVRO_BOOLEAN:
			davro_check_skip(c, 1, "a boolean");
			break;
		case AVRO_INT32:
			v = davro_check_long(c, 5);
			if (v < PG_INT32_MIN || v > PG_INT32_MAX)
				davro_bad_body(c, "an int is out of range");
			break;
		case AVRO_INT64:
			(void) davro_check_long(c, 10);
			break;
		case AVRO_FLOAT:
			davro_check_skip(c, 4, "a float");
			break;
		case AVRO_DOUBLE:
			davro_check_skip(c, 8, "a double");
			break;
		case AVRO_STRING:
		case AVRO_BYTES:
			v = davro_check_long(c, 10);
			davro_check_skip(c, v, n->type == AVRO_STRING ? "a string" : "a bytes value");
			break;
		case AVRO_FIXED:
			davro_check_skip(c, n->fixed_size, "a fixed value");
			break;
		case AVRO_ENUM:
			v = davro_check_long(c, 10);
			if (v < 0 || v >= n->nsymbols)
				davro_bad_body(c, psprintf("enum index " INT64_FORMAT " is not one of its %d symbols",
										   v, n->nsymbols));
			break;
		case AVRO_UNION:
			check_stack_depth();
			v = davro_check_long(c, 10);
			if (v < 0 || v >= n->nchildren)
				davro_bad_body(c, psprintf("union branch " INT64_FORMAT " is not one of its %d branches",
										   v, n->nchildren));
			davro_check_value(c, n->children[v]);
			break;
		case AVRO_RECORD:
			check_stack_depth();
			for (int i = 0; i < n->nchildren; i++)
				davro_check_value(c, n->children[i]);
			break;
		case AVRO_ARRAY:
		case AVRO_MAP:
			check_stack_depth();
			for (;;)
			{
				int64		count = davro_check_long(c, 10);

				if (count == 0)
					break;
				if (count < 0)
				{
					if (count == PG_INT64_MIN)
						davro_bad_body(c, "a block count is out of range");
					count = -count;
					if (davro_check_long(c, 10) < 0)
						davro_bad_body(c, "a block size is negative");
				}
				if (count > c->max_items - c->items)
					davro_bad_body(c, psprintf("an array or map claims " INT64_FORMAT
											   " items, more than the message can hold",
											   count));
				c->items += count;
				for (int64 i = 0; i < count; i++)
				{
					if (n->type == AVRO_MAP)
					{
						v = davro_check_long(c, 10);
						davro_check_skip(c, v, "a map key");
					}
					davro_check_value(c, n->children[0]);
				}
			}
			break;
		default:
			davro_bad_body(c, "the schema has a type the decoder does not know");
	}
}

/* ---------------------------------------------------------------------
 * Plans
 * ---------------------------------------------------------------------
 */

/*
 * davro_element_column describes the element type of array column 'col',
 * for filling it from an Avro array, or returns NULL if 'col' is not an
 * array.
 */
static DecodeColumn *
davro_element_column(DecodeColumn *col)
{
	Oid			base = getBaseType(col->typid);
	Oid			elemtype = get_element_type(base);
	DecodeColumn *elem;
	Oid			infunc;
	Oid			elembase;

	if (!OidIsValid(elemtype) || base == INT2VECTOROID || base == OIDVECTOROID)
		return NULL;
	elem = palloc0(sizeof(DecodeColumn));
	elem->name = col->name;
	elem->kind = DECODE_COL_PAYLOAD;
	elem->typid = elemtype;
	elem->typmod = col->typmod;
	elembase = getBaseType(elemtype);
	elem->is_domain = (elembase != elemtype);
	elem->is_json = (elembase == JSONOID || elembase == JSONBOID);
	elem->is_text = (elemtype == TEXTOID);
	elem->is_bytea = (elemtype == BYTEAOID);
	get_typlenbyval(elemtype, &elem->typlen, &elem->typbyval);
	getTypeInputInfo(elemtype, &infunc, &elem->ioparam);
	fmgr_info(infunc, &elem->infunc);
	return elem;
}

/*
 * davro_plan_build fills 'plan' (its schema set) for this decoder, with the
 * fields of a key (with 'keycols', 'nkeys') or of a value, allocating in
 * the current memory context.  Raises an error when the schema's JSON
 * cannot be read (a decimal's scale that is not a number).
 */
static void
davro_plan_build(KappaDecoder *d, AvroPlan *plan, const int *keycols, int nkeys)
{
	KappaWriterSchema *ws = plan->schema;
	JsonbValue	root;
	List	   *memo = NIL;
	int			nmissing = 0;

	if (JB_ROOT_IS_SCALAR(ws->json))
		(void) JsonbExtractScalar(&ws->json->root, &root);
	else
	{
		root.type = jbvBinary;
		root.val.binary.data = &ws->json->root;
		root.val.binary.len = VARSIZE(ws->json) - VARHDRSZ;
	}
	plan->root = davro_build_node(ws->schema, &root, &memo);
	plan->field_col = palloc(sizeof(int) * Max(plan->root->nchildren, 1));
	plan->elements = palloc0(sizeof(DecodeColumn *) * Max(d->natts, 1));
	plan->missing_notnull = palloc(sizeof(int) * (d->natts + 1));
	plan->missing_notnull[0] = -1;
	if (plan->root->type != AVRO_RECORD)
	{
		/* a key of one value: the one key column */
		plan->elements[keycols[0]] = davro_element_column(&d->cols[keycols[0]]);
		return;
	}
	for (int i = 0; i < plan->root->nchildren; i++)
	{
		int			c = DecodeFindColumn(d, plan->root->names[i]);

		if (c < 0)
			plan->drift = true;
		if (c >= 0 && d->cols[c].kind != DECODE_COL_PAYLOAD)
			c = -1;
		if (c >= 0 && keycols != NULL)
		{
			bool		is_key = false;

			for (int k = 0; k < nkeys; k++)
				if (keycols[k] == c)
					is_key = true;
			if (!is_key)
				c = -1;
		}
		plan->field_col[i] = c;
		if (c >= 0 && plan->elements[c] == NULL)
			plan->elements[c] = davro_element_column(&d->cols[c]);
	}

	/*
	 * A NOT NULL column that the schema has no field for, and that has no
	 * default, fails every message of the schema: say so by name.  Keyed
	 * changelogs take their key columns from the key, and leave it to the
	 * table's constraint.
	 */
	for (int c = 0; c < d->natts && keycols == NULL && !d->absent_null; c++)
	{
		bool		has_field = false;

		if (d->cols[c].kind != DECODE_COL_PAYLOAD || !d->cols[c].notnull ||
			!d->cols[c].defnull || d->cols[c].defstate != NULL)
			continue;
		for (int i = 0; i < plan->root->nchildren; i++)
			if (plan->field_col[i] == c)
				has_field = true;
		if (!has_field)
			plan->missing_notnull[nmissing++] = c;
	}
	plan->missing_notnull[nmissing] = -1;
}

/*
 * davro_plan returns the plan of writer schema 'id' for this decoder, for
 * the values of messages or (with 'keycols', 'nkeys') for their keys,
 * making it on first use.  A value's schema must be a record; a key's may
 * also be a single value, for a primary key of one column.  The fields of
 * a key fill only the key columns.  Raises the message's error when the
 * registry has no usable schema of that id, or the schema cannot fill the
 * target.  A plan is built in a memory context of its own, under the
 * decoder's, and kept only once complete: after an error while building,
 * the next message of the schema tries again (and fails the same way).
 */
static AvroPlan *
davro_plan(KappaDecoder *d, int32 id, const int *keycols, int nkeys)
{
	DecodeAvroState *a = d->avro;
	HTAB	   *plans = keycols ? a->key_plans : a->plans;
	AvroPlan   *plan;
	AvroPlan	built;
	KappaWriterSchema *ws;
	MemoryContext plancxt;
	MemoryContext old = CurrentMemoryContext;
	AvroPlan  **last = &a->last_plan[keycols ? 1 : 0];

	if (*last != NULL && (*last)->id == id)
		return *last;
	plan = hash_search(plans, &id, HASH_FIND, NULL);
	if (plan != NULL)
	{
		*last = plan;
		return plan;
	}

	ws = KappaRegistryLookup(id);
	if (ws == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("writer schema id %d of an Avro message was not fetched", id),
				 errdetail("Only the Kafka workers fetch writer schemas from the schema registry."),
				 errhint("Give kappa.decode_preview the writer schema as option \"writer_schema\".")));
	if (ws->state != KAPPA_SCHEMA_OK)
		ereport(ERROR,
				(errcode(ws->state == KAPPA_SCHEMA_MISSING ? ERRCODE_UNDEFINED_OBJECT :
						 ERRCODE_INVALID_SCHEMA_DEFINITION),
				 errmsg("kafka message names a writer schema that cannot be used"),
				 errdetail("%s.", ws->error),
				 ws->state == KAPPA_SCHEMA_MISSING ?
				 errhint("The producer registered its schema in another registry, or the schema was deleted.") : 0));
	if (avro_typeof(ws->schema) != AVRO_RECORD && (keycols == NULL || nkeys != 1))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("writer schema id %d is not a record", id),
				 keycols ?
				 errdetail("The primary key has %d columns, which an Avro key fills from the fields of a record.", nkeys) :
				 errdetail("Format avro fills the target's columns from the fields of a record."),
				 keycols ? 0 :
				 errhint("Produce the values as records, or consume the topic with format bytea.")));

	memset(&built, 0, sizeof(built));
	built.id = id;
	built.schema = ws;
	plancxt = AllocSetContextCreate(a->cxt, "pg_kappa avro plan", ALLOCSET_SMALL_SIZES);
	PG_TRY();
	{
		MemoryContextSwitchTo(plancxt);
		davro_plan_build(d, &built, keycols, nkeys);
		MemoryContextSwitchTo(old);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(plancxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	plan = hash_search(plans, &id, HASH_ENTER, NULL);
	*plan = built;
	*last = plan;
	return plan;
}

/* ---------------------------------------------------------------------
 * Values
 * ---------------------------------------------------------------------
 */

/* avro_type_name names an Avro type (with its logical type) for errors. */
static const char *
davro_type_name(AvroNode *n)
{
	switch (n->logical)
	{
		case AVRO_LOGICAL_DECIMAL:
			return "decimal";
		case AVRO_LOGICAL_DATE:
			return "date";
		case AVRO_LOGICAL_TIME_MILLIS:
			return "time-millis";
		case AVRO_LOGICAL_TIME_MICROS:
			return "time-micros";
		case AVRO_LOGICAL_TS_MILLIS:
			return "timestamp-millis";
		case AVRO_LOGICAL_TS_MICROS:
			return "timestamp-micros";
		case AVRO_LOGICAL_LOCAL_TS_MILLIS:
			return "local-timestamp-millis";
		case AVRO_LOGICAL_LOCAL_TS_MICROS:
			return "local-timestamp-micros";
		case AVRO_LOGICAL_LOCAL_TS_NANOS:
			return "io.debezium.time.NanoTimestamp";
		case AVRO_LOGICAL_TIME_NANOS:
			return "io.debezium.time.NanoTime";
		case AVRO_LOGICAL_UUID:
			return "uuid";
		case AVRO_LOGICAL_VARIABLE_DECIMAL:
			return "io.debezium.data.VariableScaleDecimal";
		case AVRO_LOGICAL_NONE:
			break;
	}
	switch (n->type)
	{
		case AVRO_STRING:
			return "string";
		case AVRO_BYTES:
			return "bytes";
		case AVRO_INT32:
			return "int";
		case AVRO_INT64:
			return "long";
		case AVRO_FLOAT:
			return "float";
		case AVRO_DOUBLE:
			return "double";
		case AVRO_BOOLEAN:
			return "boolean";
		case AVRO_NULL:
			return "null";
		case AVRO_RECORD:
			return "record";
		case AVRO_ENUM:
			return "enum";
		case AVRO_FIXED:
			return "fixed";
		case AVRO_MAP:
			return "map";
		case AVRO_ARRAY:
			return "array";
		case AVRO_UNION:
			return "union";
		default:
			return "unknown";
	}
}

/*
 * davro_string returns an Avro string (UTF-8) in the database encoding,
 * NUL-terminated, with its length in *len; invalid UTF-8 (a NUL byte
 * included) is an error.
 */
static char *
davro_string(KappaDecoder *d, const char *s, size_t size, int *len)
{
	char	   *result;

	if (size >= MaxAllocSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("Avro string of %zu bytes is too long", size)));
	if (pg_encoding_verifymbstr(PG_UTF8, s, (int) size) != (int) size)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("invalid byte sequence for encoding \"UTF8\" in an Avro string")));
	result = pg_any_to_server(s, (int) size, PG_UTF8);
	if (result == s)
	{
		result = palloc(size + 1);
		memcpy(result, s, size);
		result[size] = '\0';
		*len = (int) size;
	}
	else
		*len = strlen(result);
	return result;
}

/*
 * davro_decimal_text returns the decimal text of a two's-complement
 * big-endian unscaled integer with 'scale' digits after the point.
 */
static char *
davro_decimal_text(const uint8 * bytes, size_t size, int scale)
{
	uint8	   *mag;
	bool		negative = size > 0 && (bytes[0] & 0x80);
	char	   *digits;
	int			ndigits = 0;
	StringInfoData buf;

	if (size > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("Avro decimal of %zu bytes is too large", size)));
	/* the magnitude, big-endian */
	mag = palloc(Max(size, 1));
	memcpy(mag, bytes, size);
	if (negative)
	{
		int			carry = 1;

		for (int i = (int) size - 1; i >= 0; i--)
		{
			int			v = (uint8) ~ mag[i] + carry;

			mag[i] = (uint8) v;
			carry = v >> 8;
		}
	}
	/* repeated division by 10, least significant digit first */
	digits = palloc(size * 3 + 2);
	for (;;)
	{
		bool		zero = true;
		int			rem = 0;

		for (size_t i = 0; i < size; i++)
		{
			int			cur = (rem << 8) | mag[i];

			mag[i] = (uint8) (cur / 10);
			rem = cur % 10;
			if (mag[i] != 0)
				zero = false;
		}
		digits[ndigits++] = '0' + rem;
		if (zero)
			break;
	}
	while (ndigits <= scale)
		digits[ndigits++] = '0';

	initStringInfo(&buf);
	if (negative)
		appendStringInfoChar(&buf, '-');
	for (int i = ndigits - 1; i >= 0; i--)
	{
		appendStringInfoChar(&buf, digits[i]);
		if (i == scale && scale > 0)
			appendStringInfoChar(&buf, '.');
	}
	return buf.data;
}

/*
 * davro_epoch_usecs converts an Avro count of 'unit' microseconds since
 * 1970 to microseconds since 2000 (PostgreSQL's epoch), raising an error
 * outside the range of timestamps.
 */
static int64
davro_epoch_usecs(KappaDecoder *d, int64 value, int64 unit)
{
	int64		us;

	if (pg_mul_s64_overflow(value, unit, &us) ||
		pg_sub_s64_overflow(us, (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY, &us) ||
		!IS_VALID_TIMESTAMP(us))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("The Avro value is " INT64_FORMAT " %s since 1970.",
						   value, unit == 1000 ? "milliseconds" : "microseconds")));
	return us;
}

/* davro_date converts days since 1970 to a DateADT. */
static DateADT
davro_date(int64 days)
{
	int64		d = days - (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE);

	if (d < PG_INT32_MIN || d > PG_INT32_MAX || !IS_VALID_DATE((DateADT) d))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("date out of range"),
				 errdetail("The Avro date is " INT64_FORMAT " days since 1970.", days)));
	return (DateADT) d;
}

/* davro_time converts a time of day in 'unit' microseconds to a TimeADT. */
static TimeADT
davro_time(int64 value, int64 unit)
{
	int64		us;

	if (pg_mul_s64_overflow(value, unit, &us) || us < 0 || us > USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("time out of range"),
				 errdetail("The Avro time is " INT64_FORMAT " %s after midnight.",
						   value, unit == 1000 ? "milliseconds" : "microseconds")));
	return (TimeADT) us;
}

/* davro_nanos_to_micros divides nanoseconds by 1000, rounding down. */
static int64
davro_nanos_to_micros(int64 ns)
{
	return ns >= 0 ? ns / 1000 : -((-(ns + 1)) / 1000) - 1;
}

/*
 * davro_logical_datum returns the PostgreSQL value of an int or long with
 * a date, time or timestamp logical type, with its type in *typid.
 */
static Datum
davro_logical_datum(KappaDecoder *d, AvroNode *n, int64 value, Oid *typid)
{
	switch (n->logical)
	{
		case AVRO_LOGICAL_DATE:
			*typid = DATEOID;
			return DateADTGetDatum(davro_date(value));
		case AVRO_LOGICAL_TIME_MILLIS:
			*typid = TIMEOID;
			return TimeADTGetDatum(davro_time(value, 1000));
		case AVRO_LOGICAL_TIME_MICROS:
			*typid = TIMEOID;
			return TimeADTGetDatum(davro_time(value, 1));
		case AVRO_LOGICAL_TS_MILLIS:
			*typid = TIMESTAMPTZOID;
			return TimestampTzGetDatum(davro_epoch_usecs(d, value, 1000));
		case AVRO_LOGICAL_TS_MICROS:
			*typid = TIMESTAMPTZOID;
			return TimestampTzGetDatum(davro_epoch_usecs(d, value, 1));
		case AVRO_LOGICAL_LOCAL_TS_MILLIS:
			*typid = TIMESTAMPOID;
			return TimestampGetDatum(davro_epoch_usecs(d, value, 1000));
		case AVRO_LOGICAL_LOCAL_TS_MICROS:
			*typid = TIMESTAMPOID;
			return TimestampGetDatum(davro_epoch_usecs(d, value, 1));
		case AVRO_LOGICAL_LOCAL_TS_NANOS:
			*typid = TIMESTAMPOID;
			return TimestampGetDatum(davro_epoch_usecs(d, davro_nanos_to_micros(value), 1));
		case AVRO_LOGICAL_TIME_NANOS:
			*typid = TIMEOID;
			return TimeADTGetDatum(davro_time(davro_nanos_to_micros(value), 1));
		default:
			*typid = INT8OID;
			return Int64GetDatum(value);
	}
}

/* davro_integer returns the value of an Avro int or long. */
static int64
davro_integer(avro_value_t * v, AvroNode *n)
{
	if (n->type == AVRO_INT32)
	{
		int32		i = 0;

		avro_value_get_int(v, &i);
		return i;
	}
	else
	{
		int64		l = 0;

		avro_value_get_long(v, &l);
		return l;
	}
}

/* davro_bytes points *buf and *size at the value of an Avro bytes or fixed. */
static void
davro_bytes(avro_value_t * v, AvroNode *n, const void **buf, size_t *size)
{
	*buf = NULL;
	*size = 0;
	if (n->type == AVRO_BYTES)
		avro_value_get_bytes(v, buf, size);
	else
		avro_value_get_fixed(v, buf, size);
}

/*
 * davro_resolve makes *v and *n the branch a union value holds (using
 * 'branch' as storage); other values are left alone.
 */
static void
davro_resolve(avro_value_t * *v, AvroNode **n, avro_value_t * branch)
{
	while ((*n)->type == AVRO_UNION)
	{
		int			disc;

		avro_value_get_discriminant(*v, &disc);
		avro_value_get_current_branch(*v, branch);
		*v = branch;
		*n = (*n)->children[disc];
	}
}

/*
 * davro_variable_decimal_text returns the decimal text of Debezium's
 * VariableScaleDecimal, a record of "scale" (int) and "value" (bytes, the
 * unscaled two's-complement integer).
 */
static char *
davro_variable_decimal_text(avro_value_t * v, AvroNode *n)
{
	int32		scale = -1;
	const void *buf = NULL;
	size_t		size = 0;

	for (int i = 0; i < n->nchildren; i++)
	{
		avro_value_t field;
		avro_value_t branch;
		avro_value_t *fv = &field;
		AvroNode   *fn = n->children[i];

		avro_value_get_by_index(v, i, &field, NULL);
		davro_resolve(&fv, &fn, &branch);
		if (strcmp(n->names[i], "scale") == 0 && fn->type == AVRO_INT32)
			avro_value_get_int(fv, &scale);
		else if (strcmp(n->names[i], "value") == 0 && fn->type == AVRO_BYTES)
			avro_value_get_bytes(fv, &buf, &size);
	}
	if (scale < 0 || scale > NUMERIC_MAX_DISPLAY_SCALE || buf == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("Debezium VariableScaleDecimal needs a scale from 0 to %d and a value",
						NUMERIC_MAX_DISPLAY_SCALE)));
	return davro_decimal_text(buf, size, scale);
}

/*
 * davro_scalar_text returns the text form of a scalar Avro value (not null,
 * not a union), in the database encoding: what the column type's input
 * function reads when no direct conversion applies.  Returns NULL for a
 * record, map or array.
 */
static char *
davro_scalar_text(KappaDecoder *d, avro_value_t * v, AvroNode *n)
{
	switch (n->type)
	{
		case AVRO_BOOLEAN:
			{
				int			b;

				avro_value_get_boolean(v, &b);
				return pstrdup(b ? "true" : "false");
			}
		case AVRO_INT32:
		case AVRO_INT64:
			{
				int64		value = 0;
				Oid			typid;
				Datum		datum;

				value = davro_integer(v, n);
				if (n->logical == AVRO_LOGICAL_NONE)
					return psprintf(INT64_FORMAT, value);
				datum = davro_logical_datum(d, n, value, &typid);
				switch (typid)
				{
					case DATEOID:
						return DatumGetCString(DirectFunctionCall1(date_out, datum));
					case TIMEOID:
						return DatumGetCString(DirectFunctionCall1(time_out, datum));
					case TIMESTAMPTZOID:
						return DatumGetCString(DirectFunctionCall1(timestamptz_out, datum));
					case TIMESTAMPOID:
						return DatumGetCString(DirectFunctionCall1(timestamp_out, datum));
					default:
						return psprintf(INT64_FORMAT, value);
				}
			}
		case AVRO_FLOAT:
			{
				float		f;

				avro_value_get_float(v, &f);
				return DatumGetCString(DirectFunctionCall1(float4out, Float4GetDatum(f)));
			}
		case AVRO_DOUBLE:
			{
				double		f;

				avro_value_get_double(v, &f);
				return DatumGetCString(DirectFunctionCall1(float8out, Float8GetDatum(f)));
			}
		case AVRO_STRING:
			{
				const char *s;
				size_t		size;
				int			len;

				avro_value_get_string(v, &s, &size);
				/* size counts the terminating NUL */
				return davro_string(d, s, size > 0 ? size - 1 : 0, &len);
			}
		case AVRO_BYTES:
		case AVRO_FIXED:
			{
				const void *buf;
				size_t		size;
				int			len;

				davro_bytes(v, n, &buf, &size);
				if (n->logical == AVRO_LOGICAL_DECIMAL)
					return davro_decimal_text(buf, size, n->scale);
				/* bytes read as a string (Avro's bytes-to-string promotion) */
				return davro_string(d, buf, size, &len);
			}
		case AVRO_ENUM:
			{
				int symbol;

				avro_value_get_enum(v, &symbol);
				return pstrdup(n->symbols[symbol]);
			}
		case AVRO_RECORD:
			if (n->logical == AVRO_LOGICAL_VARIABLE_DECIMAL)
				return davro_variable_decimal_text(v, n);
			return NULL;
		default:
			return NULL;
	}
}

/*
 * davro_push_jsonb adds Avro value 'v' of node 'n' to a jsonb being built
 * (as 'token': WJB_VALUE, WJB_ELEM, or 0 for the root).
 */
static JsonbValue *
davro_push_jsonb(KappaDecoder *d, JsonbParseState **state, avro_value_t * v,
				 AvroNode *n, JsonbIteratorToken token)
{
	JsonbValue	jv;
	avro_value_t child;
	size_t		size;
	JsonbValue *res = NULL;

	check_stack_depth();
	davro_resolve(&v, &n, &child);

	switch (n->type)
	{
		case AVRO_RECORD:
			if (n->logical == AVRO_LOGICAL_VARIABLE_DECIMAL)
			{
				jv.type = jbvNumeric;
				jv.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																	 CStringGetDatum(davro_variable_decimal_text(v, n)),
																	 ObjectIdGetDatum(InvalidOid),
																	 Int32GetDatum(-1)));
				break;
			}
			/* FALLTHROUGH */
		case AVRO_MAP:
			res = pushJsonbValue(state, WJB_BEGIN_OBJECT, NULL);
			avro_value_get_size(v, &size);
			for (size_t i = 0; i < size; i++)
			{
				avro_value_t item;
				const char *name;
				JsonbValue	key;
				int			len;

				avro_value_get_by_index(v, i, &item, &name);
				key.type = jbvString;
				key.val.string.val = davro_string(d, name, strlen(name), &len);
				key.val.string.len = len;
				pushJsonbValue(state, WJB_KEY, &key);
				davro_push_jsonb(d, state, &item,
								 n->type == AVRO_RECORD ? n->children[i] : n->children[0],
								 WJB_VALUE);
			}
			return pushJsonbValue(state, WJB_END_OBJECT, NULL);
		case AVRO_ARRAY:
			res = pushJsonbValue(state, WJB_BEGIN_ARRAY, NULL);
			avro_value_get_size(v, &size);
			for (size_t i = 0; i < size; i++)
			{
				avro_value_t item;

				avro_value_get_by_index(v, i, &item, NULL);
				davro_push_jsonb(d, state, &item, n->children[0], WJB_ELEM);
			}
			return pushJsonbValue(state, WJB_END_ARRAY, NULL);
		case AVRO_NULL:
			jv.type = jbvNull;
			break;
		case AVRO_BOOLEAN:
			{
				int			b;

				avro_value_get_boolean(v, &b);
				jv.type = jbvBool;
				jv.val.boolean = b != 0;
				break;
			}
		case AVRO_INT32:
		case AVRO_INT64:
		case AVRO_FLOAT:
		case AVRO_DOUBLE:
		case AVRO_BYTES:
		case AVRO_FIXED:
			{
				char	   *text = davro_scalar_text(d, v, n);
				bool		number = (n->logical == AVRO_LOGICAL_NONE &&
									  n->type != AVRO_BYTES && n->type != AVRO_FIXED) ||
				n->logical == AVRO_LOGICAL_DECIMAL;

				if (number && (n->type == AVRO_FLOAT || n->type == AVRO_DOUBLE))
				{
					double		f = strtod(text, NULL);

					number = !isnan(f) && !isinf(f);
				}
				if (number)
				{
					jv.type = jbvNumeric;
					jv.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																		 CStringGetDatum(text),
																		 ObjectIdGetDatum(InvalidOid),
																		 Int32GetDatum(-1)));
				}
				else
				{
					jv.type = jbvString;
					jv.val.string.val = text;

					jv.val.string.len = strlen(text);
				}
				break;
			}
		default:
			{
				char	   *text = davro_scalar_text(d, v, n);

				jv.type = jbvString;
				jv.val.string.val = text;

				jv.val.string.len = strlen(text);
				break;
			}
	}
	if (token == 0)
	{
		/* a scalar at the root: a one-element raw scalar array */
		pushJsonbValue(state, WJB_BEGIN_ARRAY, NULL);
		(*state)->contVal.val.array.rawScalar = true;
		pushJsonbValue(state, WJB_ELEM, &jv);
		return pushJsonbValue(state, WJB_END_ARRAY, NULL);
	}
	res = pushJsonbValue(state, token, &jv);
	return res;
}

/*
 * davro_json_datum returns Avro value 'v' as a Datum of json or jsonb
 * column 'col' (its text for json).
 */
static Datum
davro_json_datum(KappaDecoder *d, DecodeColumn *col, avro_value_t * v, AvroNode *n)
{
	JsonbParseState *state = NULL;
	Jsonb	   *jb = JsonbValueToJsonb(davro_push_jsonb(d, &state, v, n, 0));

	if (getBaseType(col->typid) == JSONBOID && !col->is_domain)
		return JsonbPGetDatum(jb);
	return InputFunctionCall(&col->infunc, JsonbToCString(NULL, &jb->root, VARSIZE(jb)),
							 col->ioparam, col->typmod);
}

/*
 * davro_array_datum fills array column 'col' from an Avro array, element by
 * element ('element' describes the element type).
 */
static Datum
davro_array_datum(KappaDecoder *d, DecodeColumn *col, DecodeColumn *element,
				  avro_value_t * v, AvroNode *n)
{
	size_t		size;
	Datum	   *elems;
	bool	   *nulls;
	int			dims[1];
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Datum		result;

	avro_value_get_size(v, &size);
	elems = palloc(sizeof(Datum) * Max(size, 1));
	nulls = palloc(sizeof(bool) * Max(size, 1));
	for (size_t i = 0; i < size; i++)
	{
		avro_value_t item;

		avro_value_get_by_index(v, i, &item, NULL);
		elems[i] = davro_datum(d, element, NULL, &item, n->children[0], &nulls[i]);
	}
	dims[0] = (int) size;
	get_typlenbyvalalign(element->typid, &typlen, &typbyval, &typalign);
	result = PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
												element->typid, typlen, typbyval,
												typalign));
	if (col->is_domain)
	{
		/* the domain's checks, through its input function */
		result = InputFunctionCall(&col->infunc,
								   DatumGetCString(OidFunctionCall1(F_ARRAY_OUT, result)),
								   col->ioparam, col->typmod);
	}
	return result;
}

/*
 * davro_direct converts a scalar Avro value straight to a Datum of 'col'
 * where its type and the Avro type agree (see the file header); returns
 * false when they do not.
 */
static bool
davro_direct(KappaDecoder *d, DecodeColumn *col, avro_value_t * v, AvroNode *n,
			 Datum *result)
{
	Oid			typid = col->typid;

	if (col->is_domain)
		return false;
	switch (n->type)
	{
		case AVRO_BOOLEAN:
			if (typid == BOOLOID)
			{
				int			b;

				avro_value_get_boolean(v, &b);
				*result = BoolGetDatum(b != 0);
				return true;
			}
			return false;
		case AVRO_INT32:
		case AVRO_INT64:
			{
				int64		value = 0;
				Oid			ltype;
				Datum		ldatum;

				value = davro_integer(v, n);
				switch (typid)
				{
					case INT8OID:
						*result = Int64GetDatum(value);
						return true;
					case INT4OID:
						if (value < PG_INT32_MIN || value > PG_INT32_MAX)
							ereport(ERROR,
									(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
									 errmsg("value " INT64_FORMAT " is out of range for type integer",
											value)));
						*result = Int32GetDatum((int32) value);
						return true;
					case INT2OID:
						if (value < PG_INT16_MIN || value > PG_INT16_MAX)
							ereport(ERROR,
									(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
									 errmsg("value " INT64_FORMAT " is out of range for type smallint",
											value)));
						*result = Int16GetDatum((int16) value);
						return true;
					case FLOAT8OID:
						*result = Float8GetDatum((double) value);
						return true;
					case FLOAT4OID:
						*result = Float4GetDatum((float) value);
						return true;
					case NUMERICOID:
						if (col->typmod >= 0)
							return false;	/* numeric_in applies the typmod */
						*result = NumericGetDatum(int64_to_numeric(value));
						return true;
					default:
						break;
				}
				if (n->logical == AVRO_LOGICAL_NONE)
					return false;
				ldatum = davro_logical_datum(d, n, value, &ltype);
				if (ltype == typid && (typid == DATEOID || col->typmod < 0))
				{
					*result = ldatum;
					return true;
				}

				/*
				 * An instant into timestamp without time zone, or a wall
				 * clock into timestamp with time zone: both as UTC, whatever
				 * the TimeZone setting.
				 */
				if (((ltype == TIMESTAMPTZOID && typid == TIMESTAMPOID) ||
					 (ltype == TIMESTAMPOID && typid == TIMESTAMPTZOID)) && col->typmod < 0)
				{
					*result = ldatum;
					return true;
				}
				return false;
			}
		case AVRO_FLOAT:
		case AVRO_DOUBLE:
			{
				double		f;

				if (n->type == AVRO_FLOAT)
				{
					float		f4;

					avro_value_get_float(v, &f4);
					f = f4;
				}
				else
					avro_value_get_double(v, &f);
				if (typid == FLOAT8OID)
					*result = Float8GetDatum(f);
				else if (typid == FLOAT4OID && n->type == AVRO_FLOAT)
					*result = Float4GetDatum((float) f);
				else
					return false;
				return true;
			}
		case AVRO_STRING:
			if (typid == TEXTOID)
			{
				const char *s;
				size_t		size;
				int			len;
				char	   *str;

				avro_value_get_string(v, &s, &size);
				if (size > 0)
					size--;		/* the terminating NUL */
				if (GetDatabaseEncoding() == PG_UTF8 && size < MaxAllocSize - VARHDRSZ &&
					pg_encoding_verifymbstr(PG_UTF8, s, (int) size) == (int) size)
				{
					/* valid and in the database's encoding: one copy */
					*result = PointerGetDatum(cstring_to_text_with_len(s, (int) size));
					return true;
				}
				str = davro_string(d, s, size, &len);
				*result = PointerGetDatum(cstring_to_text_with_len(str, len));
				return true;
			}
			return false;
		case AVRO_BYTES:
		case AVRO_FIXED:
			if (typid == NUMERICOID && n->logical == AVRO_LOGICAL_DECIMAL)
			{
				const void *buf;
				size_t		size;
				const		uint8 *b;
				int64		unscaled;

				davro_bytes(v, n, &buf, &size);
				if (size == 0 || size > 8)
					return false;	/* the general path: any size */
				/* big-endian two's complement, sign-extended */
				b = buf;
				unscaled = (b[0] & 0x80) ? -1 : 0;
				for (size_t i = 0; i < size; i++)
					unscaled = (int64) (((uint64) unscaled << 8) | b[i]);
				*result = NumericGetDatum(int64_div_fast_to_numeric(unscaled, n->scale));
				if (col->typmod >= 0)
					*result = DirectFunctionCall2(numeric, *result,
												  Int32GetDatum(col->typmod));
				return true;
			}
			if (typid == BYTEAOID && n->logical != AVRO_LOGICAL_DECIMAL)
			{
				const void *buf;
				size_t		size;
				bytea	   *b;

				davro_bytes(v, n, &buf, &size);
				b = palloc(size + VARHDRSZ);
				SET_VARSIZE(b, size + VARHDRSZ);
				memcpy(VARDATA(b), buf, size);
				*result = PointerGetDatum(b);
				return true;
			}
			return false;
		case AVRO_ENUM:
			if (typid == TEXTOID)
			{
				int symbol;

				avro_value_get_enum(v, &symbol);
				*result = CStringGetTextDatum(n->symbols[symbol]);
				return true;
			}
			return false;
		default:
			return false;
	}
}

/*
 * davro_append_quoted appends 'text' to a record or array literal as a
 * double-quoted element; a NULL 'text' is nothing in a record literal and
 * NULL in an array literal.
 */
static void
davro_append_quoted(StringInfo buf, const char *text, bool array)
{
	if (text == NULL)
	{
		if (array)
			appendStringInfoString(buf, "NULL");
		return;
	}
	appendStringInfoChar(buf, '"');
	for (const char *p = text; *p; p++)
	{
		if (*p == '"' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '"');
}

/*
 * davro_element_text returns the text of Avro value 'v' of node 'n' as an
 * attribute or element of type 'typid' reads it in a record or array
 * literal: scalars as themselves, records as a nested composite (for a
 * composite type) or JSON, arrays as an array literal (for an array type)
 * or JSON, maps and other values as JSON; NULL for null.
 */
static char *
davro_element_text(KappaDecoder *d, avro_value_t * v, AvroNode *n, Oid typid)
{
	avro_value_t branch;
	char	   *text;
	Oid			base = getBaseType(typid);

	check_stack_depth();
	davro_resolve(&v, &n, &branch);
	if (n->type == AVRO_NULL)
		return NULL;
	if (n->type == AVRO_RECORD && n->logical == AVRO_LOGICAL_NONE &&
		get_typtype(base) == TYPTYPE_COMPOSITE)
		return davro_composite_text(d, v, n, base);
	if (n->type == AVRO_ARRAY && OidIsValid(get_element_type(base)))
	{
		StringInfoData buf;
		size_t		size;
		Oid			elemtype = get_element_type(base);

		initStringInfo(&buf);
		appendStringInfoChar(&buf, '{');
		avro_value_get_size(v, &size);
		for (size_t i = 0; i < size; i++)
		{
			avro_value_t item;

			avro_value_get_by_index(v, i, &item, NULL);
			if (i > 0)
				appendStringInfoChar(&buf, ',');
			davro_append_quoted(&buf, davro_element_text(d, &item, n->children[0], elemtype),
								true);
		}
		appendStringInfoChar(&buf, '}');
		return buf.data;
	}
	text = davro_scalar_text(d, v, n);

	if (text == NULL)
	{
		JsonbParseState *state = NULL;
		Jsonb	   *jb = JsonbValueToJsonb(davro_push_jsonb(d, &state, v, n, 0));

		text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	}
	return text;
}

/*
 * davro_composite_text returns the literal of composite type 'typid' that
 * Avro record 'v' (node 'n') fills: each attribute from the field of the
 * same name, NULL where the record has none.  record_in then reads it, as
 * the column's input function, with every attribute's input function.
 */
static char *
davro_composite_text(KappaDecoder *d, avro_value_t * v, AvroNode *n, Oid typid)
{
	TupleDesc	tupdesc = lookup_rowtype_tupdesc(typid, -1);
	StringInfoData buf;
	bool		first = true;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (int a = 0; a < tupdesc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, a);
		char	   *text = NULL;

		if (att->attisdropped)
			continue;
		if (!first)
			appendStringInfoChar(&buf, ',');
		first = false;
		for (int i = 0; i < n->nchildren; i++)
		{
			if (strcmp(n->names[i], NameStr(att->attname)) == 0)
			{
				avro_value_t field;

				avro_value_get_by_index(v, i, &field, NULL);
				text = davro_element_text(d, &field, n->children[i], att->atttypid);

				break;
			}
		}
		davro_append_quoted(&buf, text, false);
	}
	appendStringInfoChar(&buf, ')');
	ReleaseTupleDesc(tupdesc);
	return buf.data;
}

/*
 * davro_datum converts Avro value 'v' of node 'n' to a Datum of 'col'
 * ('element': its element, when 'col' is an array), allocated in the
 * current memory context; *isnull for null.
 */
static Datum
davro_datum(KappaDecoder *d, DecodeColumn *col, DecodeColumn *element,
			avro_value_t * v, AvroNode *n, bool *isnull)
{
	avro_value_t branch;
	Datum		result;
	char	   *text;

	*isnull = false;
	davro_resolve(&v, &n, &branch);
	if (n->type == AVRO_NULL)
	{
		*isnull = true;
		if (col->is_domain)
			(void) InputFunctionCall(&col->infunc, NULL, col->ioparam, col->typmod);
		return (Datum) 0;
	}
	if (col->is_json)
		return davro_json_datum(d, col, v, n);
	if (davro_direct(d, col, v, n, &result))
		return result;
	if (n->type == AVRO_ARRAY && element != NULL)
		return davro_array_datum(d, col, element, v, n);

	text = davro_scalar_text(d, v, n);

	if (text == NULL)
	{
		Oid			base = getBaseType(col->typid);

		if (n->type == AVRO_RECORD && get_typtype(base) == TYPTYPE_COMPOSITE)
			text = davro_composite_text(d, v, n, base);

		else if (base == TEXTOID || base == VARCHAROID || base == BPCHAROID)
		{
			JsonbParseState *state = NULL;
			Jsonb	   *jb = JsonbValueToJsonb(davro_push_jsonb(d, &state, v, n, 0));

			text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("Avro %s cannot fill column \"%s\" of type %s",
							davro_type_name(n), col->name,
							format_type_with_typemod(col->typid, col->typmod)),
					 errhint("Records, maps and arrays go into jsonb, json or text columns, "
							 "records also into composite-type columns and arrays into array columns.")));
	}
	d->cur_value = text;

	d->cur_len = strlen(text);
	if (col->is_text)
		return PointerGetDatum(cstring_to_text_with_len(text, d->cur_len));
	return InputFunctionCall(&col->infunc, text, col->ioparam, col->typmod);
}

/*
 * davro_pg_type names the PostgreSQL type that takes values of node 'n'
 * when a column is added for a new field (option evolve): the natural
 * type of a scalar, of the non-null branch of a nullable union, an array
 * of a scalar; jsonb for records, maps and other unions.  Names are
 * schema-qualified (or SQL keywords), whatever the search_path.
 */
static const char *
davro_pg_type(AvroNode *n)
{
	if (n->type == AVRO_UNION)
	{
		AvroNode   *only = NULL;

		for (int i = 0; i < n->nchildren; i++)
		{
			if (n->children[i]->type == AVRO_NULL)
				continue;
			if (only != NULL)
				return "pg_catalog.jsonb";
			only = n->children[i];
		}
		return only ? davro_pg_type(only) : "pg_catalog.text";
	}
	switch (n->type)
	{
		case AVRO_BOOLEAN:
			return "boolean";
		case AVRO_INT32:
			return n->logical == AVRO_LOGICAL_DATE ? "pg_catalog.date" :
				n->logical == AVRO_LOGICAL_TIME_MILLIS ? "time without time zone" : "integer";
		case AVRO_INT64:
			switch (n->logical)
			{
				case AVRO_LOGICAL_TIME_MICROS:
				case AVRO_LOGICAL_TIME_NANOS:
					return "time without time zone";
				case AVRO_LOGICAL_TS_MILLIS:
				case AVRO_LOGICAL_TS_MICROS:
					return "timestamp with time zone";
				case AVRO_LOGICAL_LOCAL_TS_MILLIS:
				case AVRO_LOGICAL_LOCAL_TS_MICROS:
				case AVRO_LOGICAL_LOCAL_TS_NANOS:
					return "timestamp without time zone";
				default:
					return "bigint";
			}
		case AVRO_FLOAT:
			return "real";
		case AVRO_DOUBLE:
			return "double precision";
		case AVRO_STRING:
			return n->logical == AVRO_LOGICAL_UUID ? "pg_catalog.uuid" : "pg_catalog.text";
		case AVRO_BYTES:
		case AVRO_FIXED:
			return n->logical == AVRO_LOGICAL_DECIMAL ? "pg_catalog.numeric" : "pg_catalog.bytea";
		case AVRO_ENUM:
		case AVRO_NULL:
			return "pg_catalog.text";
		case AVRO_RECORD:
			return n->logical == AVRO_LOGICAL_VARIABLE_DECIMAL ?
				"pg_catalog.numeric" : "pg_catalog.jsonb";
		case AVRO_ARRAY:
			{
				AvroNode   *items = n->children[0];
				const char *item_type = davro_pg_type(items);

				if (items->type == AVRO_ARRAY || strcmp(item_type, "pg_catalog.jsonb") == 0)
					return "pg_catalog.jsonb";
				return psprintf("%s[]", item_type);
			}
		default:
			return "pg_catalog.jsonb";
	}
}

/*
 * KappaAvroNewColumns: see kafka.h.
 */
void
KappaAvroNewColumns(int32 id, bool debezium, TupleDesc tupdesc, List **names,
					List **types)
{
	KappaWriterSchema *ws = KappaRegistryLookup(id);
	JsonbValue	root;
	List	   *memo = NIL;
	AvroNode   *node;

	*names = *types = NIL;
	if (ws == NULL || ws->state != KAPPA_SCHEMA_OK || avro_typeof(ws->schema) != AVRO_RECORD)
		return;
	root.type = jbvBinary;
	root.val.binary.data = &ws->json->root;
	root.val.binary.len = VARSIZE(ws->json) - VARHDRSZ;
	node = davro_build_node(ws->schema, &root, &memo);
	if (debezium)
	{
		/* the row is the record of the envelope's "after" */
		AvroNode   *after = NULL;

		for (int i = 0; i < node->nchildren; i++)
			if (strcmp(node->names[i], "after") == 0)
				after = node->children[i];
		for (int b = 0; after != NULL && after->type == AVRO_UNION && b < after->nchildren; b++)
			if (after->children[b]->type == AVRO_RECORD)
				after = after->children[b];
		if (after == NULL || after->type != AVRO_RECORD)
			return;
		node = after;
	}
	for (int i = 0; i < node->nchildren; i++)
	{
		bool		found = false;

		for (int c = 0; c < tupdesc->natts && !found; c++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, c);

			if (!att->attisdropped && strcmp(NameStr(att->attname), node->names[i]) == 0)
				found = true;
		}

		/*
		 * Names a column cannot have (too long, a system column's) or that
		 * would make it a metadata column are left out: the field stays
		 * unread, as without option evolve.
		 */
		if (found || strlen(node->names[i]) >= NAMEDATALEN ||
			SystemAttributeByName(node->names[i]) != NULL ||
			strcmp(node->names[i], "kafka_key") == 0 ||
			strcmp(node->names[i], "kafka_partition") == 0 ||
			strcmp(node->names[i], "kafka_offset") == 0 ||
			strcmp(node->names[i], "kafka_timestamp") == 0 ||
			strcmp(node->names[i], "kafka_headers") == 0)
			continue;
		*names = lappend(*names, node->names[i]);
		*types = lappend(*types, (char *) davro_pg_type(node->children[i]));
	}
}

/* ---------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------
 */

/*
 * DecodeAvroCreate prepares the Avro state of decoder 'd', in the current
 * memory context.
 */
void
DecodeAvroCreate(KappaDecoder *d)
{
	HASHCTL		hctl;
	DecodeAvroState *a = palloc0(sizeof(DecodeAvroState));

	a->cxt = CurrentMemoryContext;
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(int32);
	hctl.entrysize = sizeof(AvroPlan);
	hctl.hcxt = CurrentMemoryContext;
	a->plans = hash_create("pg_kappa avro plans", 8, &hctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	a->key_plans = hash_create("pg_kappa avro key plans", 8, &hctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	d->avro = a;
}

/*
 * KappaAvroSchemaId returns the writer schema id of a message in the
 * Confluent wire format, or -1 if it does not start with the magic byte
 * and an id (see kafka.h).
 */
int32
KappaAvroSchemaId(const char *data, size_t len)
{
	if (data == NULL || len < 5 || data[0] != 0)
		return -1;
	return (int32) (((uint32) (uint8) data[1] << 24) | ((uint32) (uint8) data[2] << 16) |
					((uint32) (uint8) data[3] << 8) | (uint32) (uint8) data[4]);
}

/*
 * davro_read checks and decodes the body of an Avro message (in the
 * Confluent wire format) with its writer schema, for the values or (with
 * 'keycols') the key of the message; 'what' names the part ("payload",
 * "key").  Returns the plan; the decoded record is plan->schema->value.
 */
static AvroPlan *
davro_read(KappaDecoder *d, const char *data, size_t len, const char *what,
		   const int *keycols, int nkeys)
{
	DecodeAvroState *a = d->avro;
	int32		id = KappaAvroSchemaId(data, len);
	AvroPlan   *plan;
	AvroCursor	cursor;

	d->cur_schema_id = -1;
	if (id < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("kafka message %s is not in the Avro wire format", what),
				 errdetail("Avro data starts with the byte 0 and a four-byte schema id; "
						   "this %s has %zu bytes%s.", what, len,
						   len > 0 && data[0] != 0 ?
						   psprintf(" and starts with byte 0x%02x", (uint8) data[0]) : ""),
				 errhint("Format avro reads data of Confluent's Avro serializer, "
						 "which registers each writer schema in a schema registry.")));
	d->cur_schema_id = id;
	plan = davro_plan(d, id, keycols, nkeys);

	/* refuse what avro-c should not be given */
	cursor.p = (const uint8 *) data + 5;
	cursor.end = (const uint8 *) data + len;
	cursor.items = 0;
	cursor.max_items = (int64) len + 65536;
	cursor.field = NULL;
	if (plan->root->type != AVRO_RECORD)
		davro_check_value(&cursor, plan->root);
	for (int i = 0; plan->root->type == AVRO_RECORD && i < plan->root->nchildren; i++)
	{
		cursor.field = plan->root->names[i];
		davro_check_value(&cursor, plan->root->children[i]);
	}

	if (a->reader == NULL)
		a->reader = avro_reader_memory(data + 5, (int64) len - 5);
	else
		avro_reader_memory_set_source(a->reader, data + 5, (int64) len - 5);
	if (avro_value_read(a->reader, &plan->schema->value) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("kafka message %s is not valid Avro for its writer schema", what),
				 errdetail("avro-c: %s", avro_strerror())));
	plan->schema->used = true;
	return plan;
}

/*
 * davro_fill converts the fields of the record just decoded with 'plan'
 * into their columns, in d->outcxt; with 'strict', a field without a
 * column is an error.
 */
static void
davro_fill(KappaDecoder *d, AvroPlan *plan, bool strict, Datum *values,
		   bool *nulls)
{
	avro_value_t *record = &plan->schema->value;
	MemoryContext old = MemoryContextSwitchTo(d->outcxt);

	for (int i = 0; i < plan->root->nchildren; i++)
	{
		int			c = plan->field_col[i];
		avro_value_t field;
		DecodeWhere where = {NULL, 0, NULL};

		if (c < 0)
		{
			if (strict)
				DecodeUnknownField(plan->root->names[i], NULL, 0);
			continue;
		}
		where.field = plan->root->names[i];
		d->cur_col = c;
		d->cur_where = &where;
		d->cur_value = NULL;
		d->cur_len = 0;
		avro_value_get_by_index(record, i, &field, NULL);
		values[c] = davro_datum(d, &d->cols[c], plan->elements[c], &field,
								plan->root->children[i], &nulls[c]);
		d->filled[c] = true;
		d->cur_col = -1;
	}
	MemoryContextSwitchTo(old);
}

/*
 * DecodeAvro decodes an Avro message (in the Confluent wire format) into
 * values/nulls, allocated in d->outcxt; raises the message's error when it
 * cannot (see the file header).
 */
void
DecodeAvro(KappaDecoder *d, const char *data, size_t len,
		   Datum *values, bool *nulls)
{
	AvroPlan   *plan = davro_read(d, data, len, "payload", NULL, 0);

	for (int c = 0; plan->missing_notnull[c] >= 0; c++)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("writer schema id %d has no field for column \"%s\", which is NOT NULL without a default",
						plan->id, d->cols[plan->missing_notnull[c]].name),
				 errhint("Give the column a default, or produce the field again.")));
	davro_fill(d, plan, d->strict, values, nulls);
	d->drift = plan->drift;
	d->avro->last_value = plan;
}

/*
 * DecodeAvroKey decodes the key of a message of a keyed changelog, Avro in
 * the Confluent wire format, into the key columns keycols[0 .. nkeys)
 * (indexes of d->cols): a record's fields by name, or a single value into
 * the only key column.  Other columns are left alone.  Values are
 * allocated in d->outcxt.
 */
void
DecodeAvroKey(KappaDecoder *d, const char *data, size_t len,
			  const int *keycols, int nkeys, Datum *values, bool *nulls)
{
	AvroPlan   *plan = davro_read(d, data, len, "key", keycols, nkeys);

	if (plan->root->type == AVRO_RECORD)
		davro_fill(d, plan, false, values, nulls);
	else
	{
		int			c = keycols[0];
		DecodeWhere where = {NULL, 0, "key"};
		MemoryContext old = MemoryContextSwitchTo(d->outcxt);

		d->cur_col = c;
		d->cur_where = &where;
		d->cur_value = NULL;
		values[c] = davro_datum(d, &d->cols[c], plan->elements[c], &plan->schema->value,
								plan->root, &nulls[c]);
		d->filled[c] = true;
		d->cur_col = -1;
		MemoryContextSwitchTo(old);
	}
}

/* ---------------------------------------------------------------------
 * Debezium change events in Avro
 * ---------------------------------------------------------------------
 */

/* Debezium's default unavailable.value.placeholder */
#define DAVRO_UNAVAILABLE	"__debezium_unavailable_value"

/*
 * davro_field returns the value and node of field 'name' of a record
 * (unions resolved to their branch), or false if the record has no such
 * field.
 */
static bool
davro_field(avro_value_t * record, AvroNode *n, const char *name,
			avro_value_t * value, AvroNode **node)
{
	for (int i = 0; n->type == AVRO_RECORD && i < n->nchildren; i++)
	{
		avro_value_t branch;
		avro_value_t *v = value;

		if (strcmp(n->names[i], name) != 0)
			continue;
		avro_value_get_by_index(record, i, value, NULL);
		*node = n->children[i];
		davro_resolve(&v, node, &branch);
		if (v != value)
			*value = *v;
		return true;
	}
	return false;
}

/*
 * davro_position returns, as a numeric in d->outcxt, the value at the path
 * 'order_by' (a NULL-terminated array of field names) in 'record' of node
 * 'n'; false if the path leads nowhere or to null.  A value that is not a
 * number is an error.
 */
static bool
davro_position(KappaDecoder *d, avro_value_t * record, AvroNode *n,
			   char *const *order_by, Datum *position)
{
	avro_value_t cur = *record;
	AvroNode   *curn = n;
	bool		found = true;
	char	   *text;
	MemoryContext old;

	for (int i = 0; order_by[i] != NULL && found; i++)
	{
		avro_value_t next;

		found = davro_field(&cur, curn, order_by[i], &next, &curn);
		cur = next;
	}
	if (!found || curn->type == AVRO_NULL)
		return false;
	text = davro_scalar_text(d, &cur, curn);

	if (text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the order_by path of the message leads to an Avro %s, not a number",
						davro_type_name(curn))));
	old = MemoryContextSwitchTo(d->outcxt);
	*position = DirectFunctionCall3(numeric_in, CStringGetDatum(text),
									ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * DecodeAvroEvent decodes a Debezium change event in Avro (the Confluent
 * wire format): its op, whether it has an after and a before record (kept
 * for DecodeAvroEventRow), and the value at the path 'order_by' (a
 * NULL-terminated array of field names, or NULL) as a numeric in
 * d->outcxt.  The row fields are not converted here.
 */
void
DecodeAvroEvent(KappaDecoder *d, const char *data, size_t len,
				char *const *order_by, DecodeAvroEventInfo *ev)
{
	DecodeAvroState *a = d->avro;
	AvroPlan   *plan = davro_read(d, data, len, "payload", NULL, 0);
	avro_value_t *record = &plan->schema->value;
	avro_value_t v;
	AvroNode   *n;
	const char *parts[2] = {"after", "before"};

	memset(ev, 0, sizeof(*ev));
	if (davro_field(record, plan->root, "op", &v, &n) && n->type == AVRO_STRING)
	{
		const char *str;
		size_t		size;

		avro_value_get_string(&v, &str, &size);
		ev->op_text = pnstrdup(str, size > 0 ? size - 1 : 0);
		if (strlen(ev->op_text) == 1 && strchr("crudt", ev->op_text[0]) != NULL)
			ev->op = ev->op_text[0];
	}
	for (int p = 0; p < 2; p++)
	{
		a->event_nodes[p] = NULL;
		if (davro_field(record, plan->root, parts[p], &v, &n) && n->type == AVRO_RECORD)
		{
			a->event_rows[p] = v;
			a->event_nodes[p] = n;
		}
	}
	ev->has_after = a->event_nodes[0] != NULL;
	ev->has_before = a->event_nodes[1] != NULL;

	if (order_by != NULL)
		ev->has_position = davro_position(d, record, plan->root, order_by,
										  &ev->position);
}

/*
 * DecodeAvroValuePosition finds the value at the path 'order_by' in the
 * record of the message DecodeAvro decoded last (the ordering guard of an
 * 'upsert' source): returns false if the record has no value there.
 */
bool
DecodeAvroValuePosition(KappaDecoder *d, char *const *order_by, Datum *position)
{
	AvroPlan   *plan = d->avro->last_value;

	if (plan == NULL)
		return false;
	return davro_position(d, &plan->schema->value, plan->root, order_by, position);
}

/*
 * davro_row_map returns which column each field of record node 'n' fills,
 * made on first use.
 */
static AvroRowMap *
davro_row_map(KappaDecoder *d, AvroNode *n)
{
	DecodeAvroState *a = d->avro;
	ListCell   *lc;
	AvroRowMap *map;
	MemoryContext old;

	foreach(lc, a->row_maps)
	{
		map = lfirst(lc);
		if (map->node == n)
			return map;
	}
	old = MemoryContextSwitchTo(a->cxt);
	map = palloc0(sizeof(AvroRowMap));
	map->node = n;
	map->field_col = palloc(sizeof(int) * Max(n->nchildren, 1));
	map->elements = palloc0(sizeof(DecodeColumn *) * Max(d->natts, 1));
	for (int i = 0; i < n->nchildren; i++)
	{
		int			c = DecodeFindColumn(d, n->names[i]);

		if (c < 0)
			map->drift = true;
		if (c >= 0 && d->cols[c].kind != DECODE_COL_PAYLOAD)
			c = -1;
		map->field_col[i] = c;
		if (c >= 0 && map->elements[c] == NULL)
			map->elements[c] = davro_element_column(&d->cols[c]);
	}
	a->row_maps = lappend(a->row_maps, map);
	MemoryContextSwitchTo(old);
	return map;
}

/*
 * DecodeAvroEventRow fills columns from the after (or, with !after, the
 * before) record of the event DecodeAvroEvent decoded last, in d->outcxt:
 * every field's column, or with 'only' just the columns it marks.  With
 * 'unavailable', a string field holding Debezium's unavailable-value
 * placeholder marks its column there (allocated when first needed) instead
 * of filling it.  Fields naming no column are ignored (refused with option
 * strict, unless 'only' is given).
 */
void
DecodeAvroEventRow(KappaDecoder *d, bool after, const bool *only,
				   bool **unavailable, Datum *values, bool *nulls)
{
	DecodeAvroState *a = d->avro;
	avro_value_t *record = &a->event_rows[after ? 0 : 1];
	AvroNode   *n = a->event_nodes[after ? 0 : 1];
	AvroRowMap *map;
	MemoryContext old;

	if (n == NULL)
		return;
	map = davro_row_map(d, n);
	if (only == NULL && map->drift)
		d->drift = true;
	old = MemoryContextSwitchTo(d->outcxt);
	for (int i = 0; i < n->nchildren; i++)
	{
		int			c = map->field_col[i];
		avro_value_t field;
		DecodeWhere where = {NULL, 0, NULL};

		if (c < 0)
		{
			if (d->strict && only == NULL)
				DecodeUnknownField(n->names[i], NULL, 0);
			continue;
		}
		if (only != NULL && !only[c])
			continue;
		avro_value_get_by_index(record, i, &field, NULL);
		if (unavailable != NULL)
		{
			avro_value_t v;
			AvroNode   *fn;

			if (davro_field(record, n, n->names[i], &v, &fn) && fn->type == AVRO_STRING)
			{
				const char *str;
				size_t		size;

				avro_value_get_string(&v, &str, &size);
				if (size == sizeof(DAVRO_UNAVAILABLE) &&
					memcmp(str, DAVRO_UNAVAILABLE, size - 1) == 0)
				{
					if (*unavailable == NULL)
						*unavailable = palloc0(sizeof(bool) * d->natts);
					(*unavailable)[c] = true;
					values[c] = (Datum) 0;
					nulls[c] = true;
					d->filled[c] = true;
					continue;
				}
			}
		}
		where.field = n->names[i];
		d->cur_col = c;
		d->cur_where = &where;
		d->cur_value = NULL;
		d->cur_len = 0;
		values[c] = davro_datum(d, &d->cols[c], map->elements[c], &field,
								n->children[i], &nulls[c]);
		d->filled[c] = true;
		d->cur_col = -1;
	}
	MemoryContextSwitchTo(old);
}
