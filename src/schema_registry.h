/*-------------------------------------------------------------------------
 *
 * schema_registry.h
 *	  The writer schemas of Avro messages, fetched by id from a
 *	  Confluent-compatible Schema Registry and kept for the life of the
 *	  process (schema_registry.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KAPPA_SCHEMA_REGISTRY_H
#define KAPPA_SCHEMA_REGISTRY_H

#include "postgres.h"

#include <avro.h>

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

/* What the registry said about a schema id. */
typedef enum KappaSchemaState
{
	KAPPA_SCHEMA_OK,			/* fetched and parsed */
	KAPPA_SCHEMA_MISSING,		/* the registry answered 404 */
	KAPPA_SCHEMA_UNUSABLE		/* not an Avro schema avro-c can parse */
} KappaSchemaState;

/*
 * A writer schema, as the registry gave it.  Ids are immutable in a
 * registry, so an entry in state OK is never fetched again; a MISSING one
 * is asked for again after a while (the schema may be registered later).
 * 'value' is a generic avro-c value of the schema, reused by every message
 * decoded with it (avro_value_read resets it).
 */
typedef struct KappaWriterSchema
{
	int32		id;				/* hash key */
	KappaSchemaState state;
	char	   *error;			/* MISSING, UNUSABLE: why, for dead letters */
	TimestampTz fetched_at;
	char	   *text;			/* the schema's JSON text */
	Jsonb	   *json;			/* the same, parsed: logical types */
	avro_schema_t schema;
	avro_value_iface_t *iface;
	avro_value_t value;
	bool		used;			/* a message was decoded with it */
} KappaWriterSchema;

/*
 * Where the registry is and how to log in.  The password is a secret: it
 * comes from a user mapping and never appears in a message.
 */
extern void KappaRegistryConfigure(const char *url, const char *username,
								   const char *password);

/*
 * KappaRegistryFetch makes sure the registry's answer for 'id' is known:
 * returns true when it is (the schema, or that there is none), false when
 * the registry could not be asked (connection error, timeout, an HTTP
 * status other than 200 and 404), with *error saying why (palloc'd).
 */
extern bool KappaRegistryFetch(int32 id, char **error);

/*
 * KappaRegistryAdd stores 'schema_text' as writer schema 'id' of this
 * process, as if the registry had answered it (kappa.decode_preview's
 * option writer_schema); an unusable schema is stored as such.
 */
extern void KappaRegistryAdd(int32 id, const char *schema_text);

/*
 * KappaRegistryLookup returns what is known of schema 'id', or NULL if it
 * was never fetched in this process.
 */
extern KappaWriterSchema *KappaRegistryLookup(int32 id);

#endif							/* KAPPA_SCHEMA_REGISTRY_H */
