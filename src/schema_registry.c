/*-------------------------------------------------------------------------
 *
 * schema_registry.c
 *	  A client of a Confluent-compatible Schema Registry: the writer schema
 *	  of an Avro message fetched by its id (GET /schemas/ids/{id}) over HTTP
 *	  with libcurl, parsed by avro-c, and kept for the life of the process.
 *
 * Ids are global and immutable in a registry, so a schema is fetched once
 * per worker and never again.  Fetching happens outside the per-message
 * path: the Kafka worker asks for every id of a batch before it applies the
 * batch (KappaRegistryFetch), and the decoder only looks the schemas up
 * (KappaRegistryLookup).  The registry's answers fall in three kinds:
 *
 *	 - a schema (200): parsed with avro-c; one avro-c cannot parse, or of
 *	   another schema type (PROTOBUF, JSON), is UNUSABLE -- its messages are
 *	   dead letters;
 *	 - no such id (404): MISSING -- a dead letter too, since the message
 *	   names a schema that does not exist; asked again after
 *	   KR_MISSING_RECHECK_MS, in case it is registered meanwhile;
 *	 - anything else (no connection, a timeout, 401, 5xx, a reply that is not
 *	   the registry's JSON): the registry is unavailable, which is no
 *	   message's fault -- the worker retries the batch later and shows
 *	   state 'retrying'.
 *
 * Safety: the URL comes from a kappa_kafka server's options (or, for
 * superusers, a source's), and only http and https are allowed, with no
 * redirects, so that the option cannot reach a file or another protocol of
 * the database server.  Replies are bounded in size and time, and a
 * pending interrupt (a shutdown) aborts a request.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "schema_registry.h"

#define KR_CONNECT_TIMEOUT_MS	5000
#define KR_REQUEST_TIMEOUT_MS	15000
#define KR_MAX_REPLY_BYTES		(16 * 1024 * 1024)
#define KR_MISSING_RECHECK_MS	60000

typedef struct KrRegistry
{
	MemoryContext cxt;
	HTAB	   *schemas;		/* id -> KappaWriterSchema */
	char	   *url;			/* without a trailing slash */
	char	   *username;
	char	   *password;
	CURL	   *curl;
} KrRegistry;

static KrRegistry kr_registry;

/* A reply being received (malloc'd: filled inside libcurl's callbacks). */
typedef struct KrReply
{
	char	   *data;
	size_t		len;
	bool		too_large;
} KrReply;

/*
 * KappaRegistryConfigure sets where the registry is; called once by a
 * worker before its first fetch.  Schemas fetched from another URL before
 * are forgotten.
 */
void
KappaRegistryConfigure(const char *url, const char *username,
					   const char *password)
{
	MemoryContext old;
	size_t		len;

	if (kr_registry.cxt == NULL)
		kr_registry.cxt = AllocSetContextCreate(TopMemoryContext,
												"pg_kappa schema registry",
												ALLOCSET_DEFAULT_SIZES);
	if (kr_registry.url != NULL && url != NULL &&
		strcmp(kr_registry.url, url) == 0)
		return;
	old = MemoryContextSwitchTo(kr_registry.cxt);
	kr_registry.url = url ? pstrdup(url) : NULL;
	if (kr_registry.url)
	{
		len = strlen(kr_registry.url);
		while (len > 0 && kr_registry.url[len - 1] == '/')
			kr_registry.url[--len] = '\0';
	}
	kr_registry.username = username ? pstrdup(username) : NULL;
	kr_registry.password = password ? pstrdup(password) : NULL;
	MemoryContextSwitchTo(old);
	/* schemas of another registry: the entries leak, the process is short */
	kr_registry.schemas = NULL;
}

/* kr_write collects the reply body (libcurl's write callback). */
static size_t
kr_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	KrReply    *reply = (KrReply *) userdata;
	size_t		n = size * nmemb;
	char	   *grown;

	if (reply->len + n > KR_MAX_REPLY_BYTES)
	{
		reply->too_large = true;
		return 0;				/* aborts the transfer */
	}
	grown = realloc(reply->data, reply->len + n + 1);
	if (grown == NULL)
		return 0;
	reply->data = grown;
	memcpy(reply->data + reply->len, ptr, n);
	reply->len += n;
	reply->data[reply->len] = '\0';
	return n;
}

/* kr_progress aborts a transfer when the process is to stop. */
static int
kr_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			curl_off_t ultotal, curl_off_t ulnow)
{
	return (InterruptPending && (ProcDiePending || QueryCancelPending)) ? 1 : 0;
}

/*
 * kr_entry returns the cache entry of 'id', creating it (state MISSING,
 * never fetched) if there is none.
 */
static KappaWriterSchema *
kr_entry(int32 id, bool *found)
{
	if (kr_registry.schemas == NULL)
	{
		HASHCTL		hctl;

		memset(&hctl, 0, sizeof(hctl));
		hctl.keysize = sizeof(int32);
		hctl.entrysize = sizeof(KappaWriterSchema);
		hctl.hcxt = kr_registry.cxt;
		kr_registry.schemas = hash_create("pg_kappa writer schemas", 16, &hctl,
										  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	return hash_search(kr_registry.schemas, &id, HASH_ENTER, found);
}

/*
 * kr_get performs GET url and returns the HTTP status, or 0 with *error set
 * when no reply came (*error and reply->data must be freed by the caller).
 */
static long
kr_get(const char *url, KrReply *reply, char **error)
{
	CURLcode	rc;
	long		status = 0;
	char		errbuf[CURL_ERROR_SIZE];
	struct curl_slist *headers = NULL;

	if (kr_registry.curl == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 ||
			(kr_registry.curl = curl_easy_init()) == NULL)
		{
			*error = pstrdup("could not initialize libcurl");
			return 0;
		}
	}
	else
		curl_easy_reset(kr_registry.curl);

	headers = curl_slist_append(headers,
								"Accept: application/vnd.schemaregistry.v1+json, application/json");
	errbuf[0] = '\0';
	curl_easy_setopt(kr_registry.curl, CURLOPT_URL, url);
	curl_easy_setopt(kr_registry.curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(kr_registry.curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(kr_registry.curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(kr_registry.curl, CURLOPT_CONNECTTIMEOUT_MS, (long) KR_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(kr_registry.curl, CURLOPT_TIMEOUT_MS, (long) KR_REQUEST_TIMEOUT_MS);
	curl_easy_setopt(kr_registry.curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(kr_registry.curl, CURLOPT_WRITEFUNCTION, kr_write);
	curl_easy_setopt(kr_registry.curl, CURLOPT_WRITEDATA, reply);
	curl_easy_setopt(kr_registry.curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(kr_registry.curl, CURLOPT_XFERINFOFUNCTION, kr_progress);
	curl_easy_setopt(kr_registry.curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(kr_registry.curl, CURLOPT_USERAGENT, "pg_kappa/" KAPPA_EXTENSION_VERSION);
	if (kr_registry.username != NULL)
	{
		curl_easy_setopt(kr_registry.curl, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
		curl_easy_setopt(kr_registry.curl, CURLOPT_USERNAME, kr_registry.username);
		curl_easy_setopt(kr_registry.curl, CURLOPT_PASSWORD,
						 kr_registry.password ? kr_registry.password : "");
	}

	rc = curl_easy_perform(kr_registry.curl);
	curl_slist_free_all(headers);
	CHECK_FOR_INTERRUPTS();
	if (rc != CURLE_OK)
	{
		if (reply->too_large)
			*error = psprintf("the reply exceeds %d bytes", KR_MAX_REPLY_BYTES);
		else
			*error = pstrdup(errbuf[0] ? errbuf : curl_easy_strerror(rc));
		return 0;
	}
	curl_easy_getinfo(kr_registry.curl, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

/*
 * kr_printable returns up to 'max' bytes of a reply as printable ASCII
 * (other bytes become '?'), for error texts.
 */
static char *
kr_printable(const char *data, int max)
{
	int			len = strnlen(data, max);
	char	   *result = pnstrdup(data, len);

	for (int i = 0; i < len; i++)
		if ((unsigned char) result[i] < 0x20 || (unsigned char) result[i] > 0x7e)
			result[i] = '?';
	return result;
}

/*
 * kr_json_string returns the string member 'key' of JSON object 'jb', or
 * NULL if there is none (or it is not a string).
 */
static char *
kr_json_string(Jsonb *jb, const char *key)
{
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(jb))
		return NULL;
	v = getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * kr_parse_json parses JSON text (UTF-8) into jsonb, returning NULL (with
 * *error) when it is not JSON or not valid UTF-8.
 */
static Jsonb *
kr_parse_json(const char *text, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile result = NULL;

	PG_TRY();
	{
		/* the registry speaks UTF-8 */
		char	   *converted = pg_any_to_server(text, strlen(text), PG_UTF8);

		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(converted)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		*error = edata->message;
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/*
 * kr_store_schema parses the registry's reply for schema 'id' into 'entry'.
 * Returns false (with *error) when the reply is not the registry's JSON.
 */
static bool
kr_store_schema(KappaWriterSchema *entry, const char *body, char **error)
{
	Jsonb	   *reply;
	char	   *text;
	char	   *type;
	char	   *jerror = NULL;

	reply = kr_parse_json(body, &jerror);
	if (reply == NULL || (text = kr_json_string(reply, "schema")) == NULL)
	{
		*error = psprintf("the reply for schema id %d is not a schema: %s",
						  entry->id, jerror ? jerror : "it has no member \"schema\"");
		return false;
	}

	entry->state = KAPPA_SCHEMA_UNUSABLE;
	type = kr_json_string(reply, "schemaType");
	if (type != NULL && strcmp(type, "AVRO") != 0)
	{
		entry->error = psprintf("Schema id %d is a %s schema, not an Avro schema",
								entry->id, type);
		return true;
	}
	entry->text = text;

	entry->json = kr_parse_json(text, &jerror);
	if (entry->json == NULL)
	{
		entry->error = psprintf("Schema id %d is not valid JSON: %s", entry->id, jerror);
		return true;
	}
	if (avro_schema_from_json_length(text, strlen(text), &entry->schema) != 0)
	{
		entry->error = psprintf("Schema id %d is not an Avro schema avro-c can read: %s",
								entry->id, avro_strerror());
		return true;
	}
	entry->iface = avro_generic_class_from_schema(entry->schema);
	if (entry->iface == NULL || avro_generic_value_new(entry->iface, &entry->value) != 0)
	{
		entry->error = psprintf("Schema id %d cannot be decoded by avro-c: %s",
								entry->id, avro_strerror());
		return true;
	}
	entry->state = KAPPA_SCHEMA_OK;
	return true;
}

/*
 * KappaRegistryFetch: see schema_registry.h.
 */
bool
KappaRegistryFetch(int32 id, char **error)
{
	KappaWriterSchema *entry;
	bool		found;
	KrReply		reply = {NULL, 0, false};
	char	   *url;
	long		status;
	MemoryContext old;
	bool		ok = true;

	if (kr_registry.url == NULL)
	{
		*error = pstrdup("no schema registry is configured");
		return false;
	}
	entry = kr_entry(id, &found);
	if (found && entry->state != KAPPA_SCHEMA_MISSING)
		return true;
	if (found && !TimestampDifferenceExceeds(entry->fetched_at, GetCurrentTimestamp(),
											 KR_MISSING_RECHECK_MS))
		return true;
	if (!found)
	{
		/* not known until the registry answers */
		hash_search(kr_registry.schemas, &id, HASH_REMOVE, NULL);
	}

	url = psprintf("%s/schemas/ids/%d", kr_registry.url, id);
	status = kr_get(url, &reply, error);
	old = MemoryContextSwitchTo(kr_registry.cxt);
	if (status == 200 || status == 404)
	{
		entry = kr_entry(id, &found);
		memset(((char *) entry) + sizeof(int32), 0,
			   sizeof(KappaWriterSchema) - sizeof(int32));
		entry->fetched_at = GetCurrentTimestamp();
		if (status == 404)
		{
			entry->state = KAPPA_SCHEMA_MISSING;
			entry->error = psprintf("Schema id %d is not in the schema registry (404)", id);
		}
		else if (!kr_store_schema(entry, reply.data ? reply.data : "", error))
		{
			*error = MemoryContextStrdup(old, *error);
			hash_search(kr_registry.schemas, &id, HASH_REMOVE, NULL);
			ok = false;
		}
	}
	else
	{
		MemoryContextSwitchTo(old);
		if (status != 0)
			*error = psprintf("the schema registry answered HTTP %ld for schema id %d%s%s",
							  status, id, reply.data ? ": " : "",
							  reply.data ? kr_printable(reply.data, 200) : "");
		ok = false;
	}
	MemoryContextSwitchTo(old);
	free(reply.data);
	pfree(url);
	return ok;
}

/*
 * KappaRegistryAdd: see schema_registry.h.
 */
void
KappaRegistryAdd(int32 id, const char *schema_text)
{
	KappaWriterSchema *entry;
	bool		found;
	MemoryContext old;
	char	   *error = NULL;
	StringInfoData reply;

	if (kr_registry.cxt == NULL)
		kr_registry.cxt = AllocSetContextCreate(TopMemoryContext,
												"pg_kappa schema registry",
												ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(kr_registry.cxt);
	entry = kr_entry(id, &found);
	memset(((char *) entry) + sizeof(int32), 0,
		   sizeof(KappaWriterSchema) - sizeof(int32));
	entry->fetched_at = GetCurrentTimestamp();
	/* as the registry would answer */
	initStringInfo(&reply);
	appendStringInfoString(&reply, "{\"schema\": ");
	escape_json(&reply, schema_text);
	appendStringInfoChar(&reply, '}');
	if (!kr_store_schema(entry, reply.data, &error))
	{
		entry->state = KAPPA_SCHEMA_UNUSABLE;
		entry->error = error;
	}
	MemoryContextSwitchTo(old);
}

/*
 * KappaRegistryLookup: see schema_registry.h.
 */
KappaWriterSchema *
KappaRegistryLookup(int32 id)
{
	if (kr_registry.schemas == NULL)
		return NULL;
	return hash_search(kr_registry.schemas, &id, HASH_FIND, NULL);
}
