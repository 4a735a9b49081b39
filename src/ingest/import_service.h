/*
 * import_service.h — file import and quarantine over the API, for
 * `concord serve`:
 *
 *   POST   /fhir/$import                     start an asynchronous import (202 + Content-Location)
 *   GET    /fhir/$import-poll-status/ID      202 with X-Progress while it runs; 200 with the outcome
 *   DELETE /fhir/$import-poll-status/ID      stop it (what was committed stays; resumable)
 *   GET    /fhir/$quarantine[?status=S&_count=N]   records ingest refused (newest first)
 *   GET    /fhir/$quarantine/ID              one record, with its bytes
 *   POST   /fhir/$quarantine/ID/$replay      process it again
 *   POST   /fhir/$quarantine/ID/$discard     give up on it (kept, marked discarded)
 *
 * $import takes either a FHIR Parameters body naming files on the server
 * (input.url, each under the import directory), or the data itself
 * (Content-Type application/fhir+ndjson or text/csv), which is written
 * durably to the import directory before 202 is returned. Jobs run one at
 * a time on one thread, survive a restart (a queued or interrupted job is
 * resumed when the server starts) and never store a record twice.
 */
#ifndef CONCORD_INGEST_IMPORT_SERVICE_H
#define CONCORD_INGEST_IMPORT_SERVICE_H

#include "../fhir/rest.h"
#include "../store/store.h"
#include "ingest.h"

typedef struct import_service import_service;

/* dir: the import directory (created if missing); mappings_dir: where CSV
 * mapping names are resolved (NAME -> mappings_dir/NAME.map). `g` (may be
 * NULL) replays quarantined HL7 messages. */
status import_service_start(store *s, ingest *g, const char *dir, const char *mappings_dir, import_service **out,
                            err *e);
/* Stop the running job at the next record (resumable), join, free. */
void import_service_stop(import_service *svc);

/* The routes above, for http_config.ext (ext_user = the service). */
extern const rest_ext_route import_service_routes[];
extern const size_t import_service_nroutes;

#endif
