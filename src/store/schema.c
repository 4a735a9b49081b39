/*
 * schema.c — the store's schema and its forward migrations.
 *
 * The schema is written once with a few dialect tokens, expanded per
 * backend before it runs:
 *   {KEY}   auto-assigned 64-bit primary key (SQLite rowid alias / PostgreSQL
 *           identity)
 *   {TEXT}  text compared bytewise (PostgreSQL COLLATE "C"), so prefix ranges
 *           behave the same on both backends
 *   {REAL}  double precision
 *   {NOROWID} SQLite WITHOUT ROWID clustering for the index tables
 *   {SEQKEY} a 64-bit primary key the program assigns (SQLite: the rowid
 *           itself, no separate index)
 *   {AUDIT} the schema of the access log's tables (SQLite: "audit.", the
 *           attached file of SQLITE_AUDIT_SUFFIX; PostgreSQL: none)
 *   {SQ}...{/SQ}, {PG}...{/PG}  text for one backend only
 *
 * Layout (docs/storage.md explains it at length):
 *   resource          the current version of every resource, deleted or not
 *   resource_history  every earlier version (body NULL for a delete)
 *   idx_token/string/date/ref/number/quantity
 *                     typed search-index rows of the current version
 *   patient_key       patient id -> integer patient key
 *   search_param      (resource type, code) -> integer parameter id
 * Every patient-scoped table carries `pkey` (the patient key, 0 for
 * resources outside any patient's compartment) as its first column.
 *
 * Index choice: each secondary index costs every write a page that the
 * transaction dirties and the WAL carries. Indexes whose keys arrive in
 * random order (a measured quantity's value) cost the most: idx_quantity has
 * none by value — quantity searches run with a code or a patient in
 * practice, and both lead to the candidates through other indexes, after
 * which the quantity is checked by primary key (rkey, param).
 *
 * Migrations are append-only: never edit a released step, add a new one.
 * Each runs in a transaction with the version bump; concord_schema holds
 * one row per applied step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../base/buf.h"
#include "../base/log.h"
#include "../base/netstring.h"
#include "store_int.h"

/* The access log's blocks (migration 12; store_audit.c writes them). On
 * PostgreSQL the events are stored uncompressed: they are written far more
 * often than read, and pglz on every commit costs more than the bytes. */
#define AUDIT_BLOCK_TABLES                                                                                   \
    "CREATE TABLE IF NOT EXISTS {AUDIT}audit_block (seq {SEQKEY}, last BIGINT NOT NULL,"                     \
    " at_min BIGINT NOT NULL, at_max BIGINT NOT NULL, hash {TEXT} NOT NULL, events TEXT NOT NULL);"          \
    "{PG}ALTER TABLE audit_block ALTER COLUMN events SET STORAGE EXTERNAL;{/PG}"                             \
    "CREATE INDEX IF NOT EXISTS {AUDIT}audit_block_at ON audit_block (at_max);"                              \
    "CREATE TABLE IF NOT EXISTS {AUDIT}audit_block_patient (grp BIGINT NOT NULL, pkey BIGINT NOT NULL,"      \
    " seq BIGINT NOT NULL, PRIMARY KEY (grp, pkey, seq)){NOROWID};"                                          \
    "CREATE TABLE IF NOT EXISTS {AUDIT}audit_block_user (grp BIGINT NOT NULL, user_name {TEXT} NOT NULL,"    \
    " seq BIGINT NOT NULL, PRIMARY KEY (grp, user_name, seq)){NOROWID};"

/* After every insert, update and delete of table T: the access epoch moves. */
#define EPOCH_TRIGGER(T, OP)                                                                                 \
    "CREATE TRIGGER IF NOT EXISTS acc_epoch_" T "_" OP " AFTER " OP " ON " T                                 \
    " BEGIN UPDATE acc_epoch SET n = n + 1 WHERE id = 1; END;"
#define EPOCH_TRIGGERS(T) EPOCH_TRIGGER(T, "INSERT") EPOCH_TRIGGER(T, "UPDATE") EPOCH_TRIGGER(T, "DELETE")

static const char *const migrations[] = {
    /* 1: resources, history, search indexes */
    "CREATE TABLE patient_key (pkey {KEY}, patient_id {TEXT} NOT NULL UNIQUE);"
    "CREATE TABLE search_param (param {KEY}, rtype {TEXT} NOT NULL, code {TEXT} NOT NULL, UNIQUE (rtype, "
    "code));"
    "CREATE TABLE resource (pkey BIGINT NOT NULL, rkey {KEY}, rtype {TEXT} NOT NULL, id {TEXT} NOT NULL,"
    " version BIGINT NOT NULL, updated BIGINT NOT NULL, deleted SMALLINT NOT NULL, body TEXT);"
    "CREATE UNIQUE INDEX resource_type_id ON resource (rtype, id);"
    "CREATE INDEX resource_patient ON resource (pkey, rtype);"
    "CREATE INDEX resource_updated ON resource (rtype, updated);"
    "CREATE TABLE resource_history (pkey BIGINT NOT NULL, rkey BIGINT NOT NULL, rtype {TEXT} NOT NULL,"
    " id {TEXT} NOT NULL, version BIGINT NOT NULL, updated BIGINT NOT NULL, deleted SMALLINT NOT NULL, body "
    "TEXT,"
    " PRIMARY KEY (rkey, version)){NOROWID};"
    "CREATE INDEX resource_history_updated ON resource_history (updated);"
    "CREATE TABLE idx_token (pkey BIGINT NOT NULL, rkey BIGINT NOT NULL, param INTEGER NOT NULL,"
    " system {TEXT} NOT NULL, code {TEXT} NOT NULL, PRIMARY KEY (rkey, param, system, code)){NOROWID};"
    "CREATE INDEX idx_token_value ON idx_token (param, code, system);"
    "CREATE INDEX idx_token_patient ON idx_token (pkey, param, code);"
    "CREATE TABLE idx_string (pkey BIGINT NOT NULL, rkey BIGINT NOT NULL, param INTEGER NOT NULL,"
    " norm {TEXT} NOT NULL, exact {TEXT} NOT NULL, PRIMARY KEY (rkey, param, exact)){NOROWID};"
    "CREATE INDEX idx_string_value ON idx_string (param, norm);"
    "CREATE TABLE idx_date (pkey BIGINT NOT NULL, rkey BIGINT NOT NULL, param INTEGER NOT NULL,"
    " lo BIGINT NOT NULL, hi BIGINT NOT NULL, PRIMARY KEY (rkey, param, lo, hi)){NOROWID};"
    "CREATE INDEX idx_date_value ON idx_date (param, lo);"
    "CREATE INDEX idx_date_patient ON idx_date (pkey, param, lo);"
    "CREATE TABLE idx_ref (pkey BIGINT NOT NULL, rkey BIGINT NOT NULL, param INTEGER NOT NULL,"
    " target_type {TEXT} NOT NULL, target_id {TEXT} NOT NULL, url {TEXT} NOT NULL,"
    " PRIMARY KEY (rkey, param, target_type, target_id, url)){NOROWID};"
    "CREATE INDEX idx_ref_value ON idx_ref (param, target_id, target_type);"
    "CREATE INDEX idx_ref_patient ON idx_ref (pkey, param, target_id);"
    "CREATE TABLE idx_number (pkey BIGINT NOT NULL, rkey BIGINT NOT NULL, param INTEGER NOT NULL,"
    " value {REAL} NOT NULL, lo {REAL} NOT NULL, hi {REAL} NOT NULL, PRIMARY KEY (rkey, param, "
    "value)){NOROWID};"
    "CREATE INDEX idx_number_value ON idx_number (param, value);"
    "CREATE TABLE idx_quantity (pkey BIGINT NOT NULL, rkey BIGINT NOT NULL, param INTEGER NOT NULL,"
    " value {REAL} NOT NULL, lo {REAL} NOT NULL, hi {REAL} NOT NULL, system {TEXT} NOT NULL, code {TEXT} NOT "
    "NULL,"
    " PRIMARY KEY (rkey, param, value, system, code)){NOROWID};",

    /* 2: every message and file record received by ingest, as received:
     * the acknowledged ones (status 'stored', with the ACK sent, so a
     * duplicate delivery gets the same answer and stores nothing) and the
     * rejected ones (status 'quarantined', with the reason and where). */
    "CREATE TABLE ingest_message (pkey BIGINT NOT NULL, msg_key {KEY}, received BIGINT NOT NULL,"
    " channel {TEXT} NOT NULL, source {TEXT} NOT NULL, sender {TEXT} NOT NULL, control_id {TEXT} NOT NULL,"
    " message_type {TEXT} NOT NULL, status {TEXT} NOT NULL, ack TEXT, reason TEXT, location {TEXT},"
    " body TEXT NOT NULL);"
    "CREATE UNIQUE INDEX ingest_message_delivered ON ingest_message (sender, control_id) WHERE status = "
    "'stored';"
    "CREATE INDEX ingest_message_status ON ingest_message (status, msg_key);"
    "CREATE INDEX ingest_message_patient ON ingest_message (pkey);",

    /* 3: patient-scoped searches test each of the patient's resources by
     * primary key (rkey, param, ...) instead of through (pkey, param,
     * value) indexes on tokens and dates: the same speed for a patient's
     * few hundred resources, and two b-tree inserts fewer per index row on
     * every write. idx_ref_patient stays: it finds a patient's resources. */
    "DROP INDEX idx_token_patient;"
    "DROP INDEX idx_date_patient;",

    /* 4: file imports (concord import, $import): one job, its files, and
     * per file how far it is durably imported — written in the same
     * transaction as the resources it counts, so an interrupted import
     * resumes exactly after the last committed record. */
    "CREATE TABLE import_job (job_key {KEY}, created BIGINT NOT NULL, updated BIGINT NOT NULL,"
    " status {TEXT} NOT NULL, origin {TEXT} NOT NULL, request TEXT NOT NULL, message TEXT);"
    "CREATE INDEX import_job_status ON import_job (status, job_key);"
    "CREATE TABLE import_file (job_key BIGINT NOT NULL, file_no INTEGER NOT NULL, path {TEXT} NOT NULL,"
    " fingerprint {TEXT} NOT NULL, format {TEXT} NOT NULL, size BIGINT NOT NULL, bytes_done BIGINT NOT NULL,"
    " lines_done BIGINT NOT NULL, stored BIGINT NOT NULL, quarantined BIGINT NOT NULL, status {TEXT} NOT "
    "NULL,"
    " message TEXT, PRIMARY KEY (job_key, file_no));"
    "CREATE INDEX import_file_fingerprint ON import_file (fingerprint);",

    /* 5: the patient registry (src/registry, docs/registry.md §8): persons
     * (golden records; their Person resources live in `resource`), source
     * records with the decision that linked each, block keys for candidate
     * lookup, term frequencies, the review queue, the decisions later runs
     * must respect, the history, and the trained models. Cross-patient by
     * nature: under Citus these are reference or coordinator tables. */
    "CREATE TABLE reg_person (person_key {KEY}, person_id {TEXT} NOT NULL UNIQUE, created BIGINT NOT NULL,"
    " retired SMALLINT NOT NULL, merged_into BIGINT, golden_hash BIGINT NOT NULL);"
    "CREATE TABLE reg_source (src_key {KEY}, patient_id {TEXT} NOT NULL UNIQUE, person_key BIGINT,"
    " decision {TEXT} NOT NULL, weight {REAL} NOT NULL DEFAULT 0, evidence TEXT, decided_by {TEXT} NOT NULL,"
    " decided_at BIGINT NOT NULL, updated BIGINT NOT NULL, nhs {TEXT} NOT NULL, family {TEXT} NOT NULL,"
    " given {TEXT} NOT NULL, birth_date {TEXT} NOT NULL, gender {TEXT} NOT NULL, postcode {TEXT} NOT NULL,"
    " address_line {TEXT} NOT NULL, local_ids {TEXT} NOT NULL, source {TEXT} NOT NULL);"
    "CREATE INDEX reg_source_person ON reg_source (person_key);"
    "CREATE TABLE reg_block (bkey BIGINT NOT NULL, src_key BIGINT NOT NULL, PRIMARY KEY (bkey, "
    "src_key)){NOROWID};"
    "CREATE TABLE reg_tf (field SMALLINT NOT NULL, value {TEXT} NOT NULL, n BIGINT NOT NULL,"
    " PRIMARY KEY (field, value)){NOROWID};"
    "CREATE TABLE reg_review (review_key {KEY}, src_key BIGINT NOT NULL, other_key BIGINT NOT NULL,"
    " weight {REAL} NOT NULL, evidence TEXT NOT NULL, status {TEXT} NOT NULL, created BIGINT NOT NULL,"
    " created_by {TEXT} NOT NULL, decided_by {TEXT}, decided_at BIGINT, note TEXT);"
    "CREATE INDEX reg_review_status ON reg_review (status, review_key);"
    "CREATE INDEX reg_review_pair ON reg_review (src_key, other_key);"
    "CREATE INDEX reg_review_other ON reg_review (other_key);"
    "CREATE TABLE reg_constraint (con_key {KEY}, src_a BIGINT NOT NULL, src_b BIGINT NOT NULL,"
    " kind {TEXT} NOT NULL, origin {TEXT} NOT NULL, event_key BIGINT NOT NULL, active SMALLINT NOT NULL,"
    " created BIGINT NOT NULL, created_by {TEXT} NOT NULL);"
    "CREATE INDEX reg_constraint_a ON reg_constraint (src_a);"
    "CREATE INDEX reg_constraint_b ON reg_constraint (src_b);"
    "CREATE INDEX reg_constraint_event ON reg_constraint (event_key);"
    "CREATE TABLE reg_event (event_key {KEY}, at BIGINT NOT NULL, who {TEXT} NOT NULL, action {TEXT} NOT "
    "NULL,"
    " person_key BIGINT, other_person BIGINT, src_key BIGINT, review_key BIGINT, detail TEXT, undo TEXT,"
    " undone_by BIGINT);"
    "CREATE INDEX reg_event_person ON reg_event (person_key);"
    "CREATE INDEX reg_event_other ON reg_event (other_person);"
    "CREATE TABLE reg_model (version {KEY}, created BIGINT NOT NULL, created_by {TEXT} NOT NULL,"
    " model TEXT NOT NULL, report TEXT);",

    /* 6: risk stratification (src/risk, docs/risk.md): per-person facts
     * kept by a write hook (one row per patient key, read in key order by
     * a full run; `dirty` > 0 marks a person whose facts changed since they
     * were scored, found through a partial index), the scores worklists
     * read, tier-change events, trained models, runs, and a postcode ->
     * IMD decile lookup. risk_fact, risk_score and risk_event lead with
     * the patient key (distributable by patient); the rest are small
     * reference tables. */
    "CREATE TABLE risk_fact (pkey {KEY}, facts TEXT NOT NULL, dirty BIGINT NOT NULL, updated BIGINT NOT "
    "NULL);"
    "CREATE INDEX risk_fact_dirty ON risk_fact (dirty) WHERE dirty > 0;"
    "CREATE TABLE risk_score (pkey {KEY}, patient_id {TEXT} NOT NULL, practice {TEXT} NOT NULL,"
    " mdg {TEXT} NOT NULL, age INTEGER, sex {TEXT}, status {TEXT} NOT NULL, reason TEXT, probability {REAL},"
    " tier {TEXT}, efi {REAL}, efi_band {TEXT}, hfrs {REAL}, hfrs_band {TEXT}, charlson INTEGER,"
    " charlson2011 INTEGER, lace INTEGER, lace_band {TEXT}, diabetes SMALLINT NOT NULL, care_plan SMALLINT "
    "NOT NULL,"
    " last_review BIGINT, model {TEXT}, as_of BIGINT NOT NULL, scored BIGINT NOT NULL,"
    " fingerprint BIGINT NOT NULL, factors TEXT);"
    "CREATE INDEX risk_score_practice ON risk_score (practice, probability);"
    "CREATE INDEX risk_score_mdg ON risk_score (mdg, probability);"
    "CREATE INDEX risk_score_probability ON risk_score (probability);"
    "CREATE TABLE risk_event (pkey BIGINT NOT NULL, event_key {KEY}, at BIGINT NOT NULL, kind {TEXT} NOT "
    "NULL,"
    " from_tier {TEXT}, to_tier {TEXT}, probability {REAL}, model {TEXT}, run BIGINT, detail TEXT);"
    "CREATE INDEX risk_event_patient ON risk_event (pkey);"
    "CREATE TABLE risk_model (version {TEXT} PRIMARY KEY, created BIGINT NOT NULL, active SMALLINT NOT NULL,"
    " body TEXT NOT NULL);"
    "CREATE TABLE risk_run (run_key {KEY}, started BIGINT NOT NULL, finished BIGINT, as_of BIGINT NOT NULL,"
    " as_of_rule {TEXT} NOT NULL, model {TEXT} NOT NULL, tiers TEXT NOT NULL, stats TEXT);"
    "CREATE TABLE risk_deprivation (postcode {TEXT} PRIMARY KEY, decile SMALLINT NOT NULL);",

    /* 7: information governance (src/access, docs/access.md).
     * resource.org is the ODS code of the organisation that recorded the
     * resource and resource.sens its sensitive categories (a bit set);
     * both are set on write and read by the access predicates of every
     * query (a consent objection leaves each organisation its own records;
     * sensitive records need a role allowed to see them).
     * acc_user/acc_token/acc_session/acc_throttle: who may sign in and how
     * (password hashes argon2id; tokens and session ids stored only as
     * BLAKE2b hashes). acc_org: Organization id -> ODS code and the
     * organisation it is part of (practices in an MDG). acc_rel: the
     * legitimate relationships, one row per (patient key, resource that
     * establishes it), kept by a write hook. acc_consent: active consent
     * objections. acc_glass: break-glass grants and their review.
     * audit_log: the access log, a keyed hash chain in `seq` order;
     * audit_anchor: the head of the chain as of the last flush. */
    "ALTER TABLE resource ADD COLUMN org {TEXT} NOT NULL DEFAULT '';"
    "ALTER TABLE resource ADD COLUMN sens INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE acc_user (user_key {KEY}, name {TEXT} NOT NULL UNIQUE, display TEXT NOT NULL,"
    " role {TEXT} NOT NULL, org {TEXT} NOT NULL, practitioner {TEXT} NOT NULL, patient_id {TEXT} NOT NULL,"
    " pw_hash TEXT, disabled SMALLINT NOT NULL, created BIGINT NOT NULL, updated BIGINT NOT NULL);"
    "CREATE TABLE acc_token (token_key {KEY}, user_key BIGINT NOT NULL, hash {TEXT} NOT NULL UNIQUE,"
    " label TEXT NOT NULL, created BIGINT NOT NULL, expires BIGINT NOT NULL, revoked BIGINT NOT NULL,"
    " last_used BIGINT NOT NULL);"
    "CREATE INDEX acc_token_user ON acc_token (user_key);"
    "CREATE TABLE acc_session (hash {TEXT} PRIMARY KEY, user_key BIGINT NOT NULL, csrf {TEXT} NOT NULL,"
    " created BIGINT NOT NULL, expires BIGINT NOT NULL, idle_expires BIGINT NOT NULL, revoked BIGINT NOT "
    "NULL,"
    " addr {TEXT} NOT NULL);"
    "CREATE INDEX acc_session_user ON acc_session (user_key);"
    "CREATE TABLE acc_throttle (subject {TEXT} PRIMARY KEY, failures INTEGER NOT NULL, first BIGINT NOT NULL,"
    " locked_until BIGINT NOT NULL);"
    "CREATE TABLE acc_org (org_id {TEXT} PRIMARY KEY, ods {TEXT} NOT NULL, part_of {TEXT} NOT NULL);"
    "CREATE INDEX acc_org_part_of ON acc_org (part_of);"
    "CREATE TABLE acc_rel (pkey BIGINT NOT NULL, src_rkey BIGINT NOT NULL, kind {TEXT} NOT NULL,"
    " org {TEXT} NOT NULL, who {TEXT} NOT NULL);"
    "CREATE INDEX acc_rel_patient ON acc_rel (pkey, org);"
    "CREATE INDEX acc_rel_src ON acc_rel (src_rkey);"
    "CREATE INDEX acc_rel_org ON acc_rel (org, pkey);"
    "CREATE INDEX acc_rel_who ON acc_rel (who, pkey);"
    "CREATE TABLE acc_consent (pkey BIGINT NOT NULL, src_rkey BIGINT NOT NULL PRIMARY KEY, org {TEXT} NOT "
    "NULL,"
    " since BIGINT NOT NULL);"
    "CREATE INDEX acc_consent_patient ON acc_consent (pkey);"
    "CREATE TABLE acc_glass (glass_key {KEY}, user_key BIGINT NOT NULL, user_name {TEXT} NOT NULL,"
    " pkey BIGINT NOT NULL, patient_id {TEXT} NOT NULL, reason TEXT NOT NULL, granted BIGINT NOT NULL,"
    " expires BIGINT NOT NULL, reviewed_by {TEXT}, reviewed_at BIGINT, review_note TEXT);"
    "CREATE INDEX acc_glass_user ON acc_glass (user_key, pkey);"
    "CREATE INDEX acc_glass_review ON acc_glass (reviewed_at, glass_key);"
    "CREATE TABLE audit_log (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, user_name {TEXT} NOT NULL,"
    " role {TEXT} NOT NULL, org {TEXT} NOT NULL, action {TEXT} NOT NULL, outcome {TEXT} NOT NULL,"
    " status INTEGER NOT NULL, rtype {TEXT} NOT NULL, rid {TEXT} NOT NULL, pkey BIGINT NOT NULL,"
    " patient_id {TEXT} NOT NULL, purpose {TEXT} NOT NULL, reason TEXT NOT NULL, source {TEXT} NOT NULL,"
    " request TEXT NOT NULL, prev {TEXT} NOT NULL, hash {TEXT} NOT NULL);"
    "CREATE INDEX audit_log_patient ON audit_log (pkey, seq);"
    "CREATE INDEX audit_log_user ON audit_log (user_name, seq);"
    "CREATE INDEX audit_log_at ON audit_log (at);"
    "CREATE TABLE audit_anchor (id SMALLINT PRIMARY KEY, seq BIGINT NOT NULL, hash {TEXT} NOT NULL,"
    " key_id {TEXT} NOT NULL, updated BIGINT NOT NULL);",
    /* 8: the access log's seq becomes SQLite's rowid (BIGINT PRIMARY KEY was
     * a separate unique index: every event paid for a fifth b-tree) */
    "CREATE TABLE audit_log_v8 (seq {SEQKEY}, at BIGINT NOT NULL, user_name {TEXT} NOT NULL,"
    " role {TEXT} NOT NULL, org {TEXT} NOT NULL, action {TEXT} NOT NULL, outcome {TEXT} NOT NULL,"
    " status INTEGER NOT NULL, rtype {TEXT} NOT NULL, rid {TEXT} NOT NULL, pkey BIGINT NOT NULL,"
    " patient_id {TEXT} NOT NULL, purpose {TEXT} NOT NULL, reason TEXT NOT NULL, source {TEXT} NOT NULL,"
    " request TEXT NOT NULL, prev {TEXT} NOT NULL, hash {TEXT} NOT NULL);"
    "INSERT INTO audit_log_v8 (seq, at, user_name, role, org, action, outcome, status, rtype, rid, pkey,"
    " patient_id, purpose, reason, source, request, prev, hash) SELECT seq, at, user_name, role, org, action,"
    " outcome, status, rtype, rid, pkey, patient_id, purpose, reason, source, request, prev, hash FROM "
    "audit_log;"
    "DROP TABLE audit_log;"
    "ALTER TABLE audit_log_v8 RENAME TO audit_log;"
    "CREATE INDEX audit_log_patient ON audit_log (pkey, seq);"
    "CREATE INDEX audit_log_user ON audit_log (user_name, seq);"
    "CREATE INDEX audit_log_at ON audit_log (at);",
    /* 9: SQLite keeps the access log in its own file (store_int.h,
     * SQLITE_AUDIT_SUFFIX): move_audit_sqlite has copied the tables there,
     * in a transaction of their own, before this step removes them */
    "{SQ}DROP TABLE main.audit_log; DROP TABLE main.audit_anchor;{/SQ}{PG}SELECT 1{/PG}",
    /* 10: the access log's patient and user indexes lead with the block of
     * 65,536 events (seq >> 16). Keyed by patient alone, every event landed
     * on a random page of a large index and each commit rewrote thousands
     * of pages; within the current block the pages written stay few. A
     * query walks the blocks (audit.c, audit_query): one probe each */
    "DROP INDEX {AUDIT}audit_log_patient;"
    "DROP INDEX {AUDIT}audit_log_user;"
    "CREATE INDEX {AUDIT}audit_log_block_patient ON audit_log ((seq >> 16), pkey, seq);"
    "CREATE INDEX {AUDIT}audit_log_block_user ON audit_log ((seq >> 16), user_name, seq);",
    /* 11: a relationship written by a signed-in person rather than a
     * machine feed is their own claim (rel.c): it covers the record it was
     * written in, not the rest of the person (store_scope.c). Rows from
     * before were all kept as feed relationships */
    "ALTER TABLE acc_rel ADD COLUMN claimed SMALLINT NOT NULL DEFAULT 0;",
    /* 12: the access log is a table of blocks, one row per batch of events
     * rather than one per event (src/access/auditblock.h; one row and four
     * b-tree insertions per event were most of what logging a read cost).
     * pack_audit_log has created the tables and repacked the rows, in a
     * transaction of its own; this step is for a database that had none */
    AUDIT_BLOCK_TABLES,
    /* 13 (re-runnable, as test_audit's legacy databases need): the access
     * epoch, moved by every change to what access decisions
     * read (store_scope.c). On SQLite triggers move it, whichever process or
     * code path commits the change: a reader that sees the database changed
     * drops its cached decisions only when the epoch moved, so a stream of
     * Observations from a feed no longer makes every read decide again.
     * PostgreSQL readers see no data version; there every commit still
     * drops them (store_commit) and the table stays unused */
    "CREATE TABLE IF NOT EXISTS acc_epoch (id SMALLINT PRIMARY KEY, n BIGINT NOT NULL);"
    "INSERT INTO acc_epoch (id, n) VALUES (1, 0) ON CONFLICT DO NOTHING;"
    "{SQ}" EPOCH_TRIGGERS("acc_rel") EPOCH_TRIGGERS("acc_consent") EPOCH_TRIGGERS("acc_glass")
        EPOCH_TRIGGERS("acc_org") EPOCH_TRIGGERS("reg_source") "{/SQ}",
};

/* The access log's tables as they are in the audit file: the schema of
 * migrations 7 and 8. */
#define AUDIT_LOG_COLS                                                                                       \
    "seq, at, user_name, role, org, action, outcome, status, rtype, rid, pkey, patient_id, purpose, "        \
    "reason, "                                                                                               \
    "source, request, prev, hash"
static const char move_audit_sql[] =
    "CREATE TABLE IF NOT EXISTS audit.audit_log (seq INTEGER PRIMARY KEY, at BIGINT NOT NULL,"
    " user_name TEXT NOT NULL, role TEXT NOT NULL, org TEXT NOT NULL, action TEXT NOT NULL,"
    " outcome TEXT NOT NULL, status INTEGER NOT NULL, rtype TEXT NOT NULL, rid TEXT NOT NULL,"
    " pkey BIGINT NOT NULL, patient_id TEXT NOT NULL, purpose TEXT NOT NULL, reason TEXT NOT NULL,"
    " source TEXT NOT NULL, request TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS audit.audit_log_patient ON audit_log (pkey, seq);"
    "CREATE INDEX IF NOT EXISTS audit.audit_log_user ON audit_log (user_name, seq);"
    "CREATE INDEX IF NOT EXISTS audit.audit_log_at ON audit_log (at);"
    "CREATE TABLE IF NOT EXISTS audit.audit_anchor (id SMALLINT PRIMARY KEY, seq BIGINT NOT NULL,"
    " hash TEXT NOT NULL, key_id TEXT NOT NULL, updated BIGINT NOT NULL);"
    "INSERT INTO audit.audit_log (" AUDIT_LOG_COLS ") SELECT " AUDIT_LOG_COLS
    " FROM main.audit_log WHERE true ON CONFLICT DO NOTHING;"
    "INSERT INTO audit.audit_anchor (id, seq, hash, key_id, updated) SELECT id, seq, hash, key_id, updated"
    " FROM main.audit_anchor WHERE true ON CONFLICT DO NOTHING;";

#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static void expand(buf *out, const char *sql, int pg);

/* Before step 12: the row-per-event log (audit_log) repacked into blocks
 * of at most PACK_BLOCK events, each hash kept as it was (the chain's
 * definition did not change: src/access/auditblock.h), then dropped. A gap
 * in seq (rows deleted) stays a gap between blocks, so that verification
 * still finds it. Idempotent: after a crash between the audit file's
 * commit and the main file's, it finds no rows and drops an empty table. */
#define PACK_BLOCK 1024
static status pack_audit_log(const db_driver *drv, db *d, int pg, err *e) {
    /* in the order of the hash: auditblock.h, audit_columns */
    static const char sel[] =
        "SELECT seq, at, user_name, role, org, action, outcome, status, rtype, rid, pkey, patient_id, "
        "purpose, reason, source, request, hash FROM audit_log WHERE seq > ? ORDER BY seq LIMIT 1024";
    _Static_assert(PACK_BLOCK == 1024, "LIMIT in the SQL");
    enum { C_SEQ, C_AT, C_STATUS = 7, C_PKEY = 10, C_HASH = 16, NCOL = 17 };
    buf sql = {0}, text = {0};
    int64_t pkeys[PACK_BLOCK], after = 0, moved = 0;
    store_str users[PACK_BLOCK];
    char *names[PACK_BLOCK] = {0};
    char hash[65] = {0};
    status rc;
    expand(&sql, AUDIT_BLOCK_TABLES, pg);
    /* the legacy table as migrations 7-10 left it, if it is gone */
    expand(&sql,
           "CREATE TABLE IF NOT EXISTS {AUDIT}audit_log (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL,"
           " user_name TEXT NOT NULL, role TEXT NOT NULL, org TEXT NOT NULL, action TEXT NOT NULL,"
           " outcome TEXT NOT NULL, status INTEGER NOT NULL, rtype TEXT NOT NULL, rid TEXT NOT NULL,"
           " pkey BIGINT NOT NULL, patient_id TEXT NOT NULL, purpose TEXT NOT NULL, reason TEXT NOT NULL,"
           " source TEXT NOT NULL, request TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);",
           pg);
    rc = drv->exec(d, sql.p, e);
    for (int more = 1; rc == ST_OK && more;) {
        db_stmt *st = NULL;
        rc = drv->prepare(d, sel, 0, &st, e);
        if (rc != ST_OK) break;
        drv->bind_int(st, 1, after);
        store_audit_block b = {.pkeys = pkeys, .users = users, .hash = hash};
        size_t n = 0;
        int r;
        more = 0;
        /* a page of rows, cut where seq jumps: each run its own block */
        while ((r = drv->step(st, e)) == 1) {
            int64_t seq = drv->col_int(st, C_SEQ);
            more = 1;
            if (n && seq != b.last + 1) break;
            size_t len;
            const char *t;
            for (int c = 1; c < C_HASH; c++) {
                if (c == C_AT || c == C_STATUS || c == C_PKEY) {
                    ns_put_int(&text, drv->col_int(st, c));
                } else {
                    t = drv->col_text(st, c, &len);
                    ns_put(&text, t ? t : "", t ? len : 0);
                    if (c == C_AT + 1) {
                        free(names[n]);
                        names[n] = strndup(t ? t : "", t ? len : 0);
                        if (!names[n]) abort();
                        users[n] = (store_str){names[n], strlen(names[n])};
                    }
                }
            }
            t = drv->col_text(st, C_HASH, &len);
            if (!t || len != 64) {
                rc = err_set(e, ST_IO, "exception", NULL, "access log row %lld has no hash: not repacked",
                             (long long)seq);
                break;
            }
            memcpy(hash, t, 64);
            buf_append(&text, t, 64);
            int64_t at = drv->col_int(st, C_AT);
            if (!n) {
                b.first = seq;
                b.at_min = b.at_max = at;
            }
            b.at_min = at < b.at_min ? at : b.at_min;
            b.at_max = at > b.at_max ? at : b.at_max;
            b.last = seq;
            pkeys[n] = drv->col_int(st, C_PKEY);
            n++;
        }
        drv->done(st);
        if (r < 0 && rc == ST_OK) rc = e->code;
        if (rc != ST_OK || !n) break;
        b.text = text.p;
        b.ntext = text.len;
        b.npkeys = b.nusers = n;
        rc = store_audit_put_block(drv, d, &b, e);
        after = b.last;
        moved += (int64_t)n;
        buf_reset(&text);
    }
    if (rc == ST_OK) {
        buf_reset(&sql);
        expand(&sql, "DROP TABLE {AUDIT}audit_log", pg);
        rc = drv->exec(d, sql.p, e);
    }
    if (rc == ST_OK && moved)
        log_info("store: access log repacked into blocks: %lld events", (long long)moved);
    for (size_t i = 0; i < PACK_BLOCK; i++)
        free(names[i]);
    buf_free(&sql);
    buf_free(&text);
    return rc;
}

int store_schema_version(void) {
    return N_MIGRATIONS;
}

static void expand(buf *out, const char *sql, int pg) {
    static const struct {
        const char *token, *sqlite, *pg;
    } tokens[] = {
        {"{KEY}", "INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"},
        {"{TEXT}", "TEXT", "TEXT COLLATE \"C\""},
        {"{REAL}", "REAL", "DOUBLE PRECISION"},
        {"{NOROWID}", " WITHOUT ROWID", ""},
        {"{SEQKEY}", "INTEGER PRIMARY KEY", "BIGINT PRIMARY KEY"}, /* a key the program assigns */
        {"{AUDIT}", "audit.", ""}, /* the access log's schema (SQLite: its own file) */
    };
    /* {SQ}...{/SQ}: SQLite only; {PG}...{/PG}: PostgreSQL only */
    static const struct {
        const char *open, *close;
        int keep_pg;
    } only[] = {{"{SQ}", "{/SQ}", 0}, {"{PG}", "{/PG}", 1}};
    for (const char *p = sql; *p;) {
        int matched = 0;
        for (size_t i = 0; *p == '{' && !matched && i < sizeof only / sizeof only[0]; i++) {
            size_t n = strlen(only[i].open);
            if (strncmp(p, only[i].open, n) != 0) continue;
            const char *end = strstr(p + n, only[i].close);
            if (!end) break;
            if (only[i].keep_pg == pg) buf_append(out, p + n, (size_t)(end - (p + n)));
            p = end + strlen(only[i].close);
            matched = 1;
        }
        if (matched) continue;
        if (*p == '{') {
            for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
                size_t n = strlen(tokens[i].token);
                if (strncmp(p, tokens[i].token, n) == 0) {
                    buf_puts(out, pg ? tokens[i].pg : tokens[i].sqlite);
                    p += n;
                    matched = 1;
                    break;
                }
            }
        }
        if (!matched) buf_putc(out, *p++);
    }
}

int schema_current_version(store *s, db *d) {
    const db_driver *drv = s->drv;
    db_stmt *st = NULL;
    int v = -1;
    err e;
    if (drv->prepare(d, "SELECT COALESCE(MAX(version), 0) FROM concord_schema", 0, &st, &e) != ST_OK)
        return 0;
    if (drv->step(st, &e) == 1) v = (int)drv->col_int(st, 0);
    drv->done(st);
    return v;
}

status schema_migrate(store *s, db *d, int *applied, int *version, err *e) {
    const db_driver *drv = s->drv;
    int pg = drv == &db_pg_driver;
    status rc = ST_OK;
    int n = 0, moved_audit = 0, packed_audit = 0;
    buf sql = {0};
    if (applied) *applied = 0;

    rc = drv->exec(
        d, "CREATE TABLE IF NOT EXISTS concord_schema (version INTEGER PRIMARY KEY, applied BIGINT NOT NULL)",
        e);
    if (rc != ST_OK) goto out;
    for (;;) {
        rc = drv->begin(d, e);
        if (rc != ST_OK) goto out;
        if (pg) {
            rc = drv->exec(d, "SELECT pg_advisory_xact_lock(7104202611)", e);
            if (rc != ST_OK) goto fail;
        }
        int cur = schema_current_version(s, d);
        if (cur < 0) {
            rc = err_set(e, ST_IO, "exception", NULL, "cannot read the schema version");
            goto fail;
        }
        if (cur > N_MIGRATIONS) {
            rc = err_set(e, ST_IO, "exception", NULL,
                         "the database schema is version %d but this concord knows only up to %d: "
                         "upgrade concord",
                         cur, N_MIGRATIONS);
            goto fail;
        }
        if (cur == N_MIGRATIONS) {
            drv->rollback(d);
            if (version) *version = cur;
            break;
        }
        if (!pg && cur == 8 && !moved_audit) {
            /* before step 9: the access log into its own file, committed
             * alone. A transaction across two WAL files is not atomic, so
             * the step that drops the old tables comes only after this one
             * is durable; repeated after a crash, it copies nothing twice */
            rc = drv->exec(d, move_audit_sql, e);
            if (rc == ST_OK) rc = drv->commit(d, e);
            if (rc != ST_OK) goto fail;
            moved_audit = 1;
            continue;
        }
        if (cur == 11 && !packed_audit) {
            /* before step 12, committed alone for the reason above */
            rc = pack_audit_log(drv, d, pg, e);
            if (rc == ST_OK) rc = drv->commit(d, e);
            if (rc != ST_OK) goto fail;
            packed_audit = 1;
            continue;
        }
        buf_reset(&sql);
        expand(&sql, migrations[cur], pg);
        rc = drv->exec(d, sql.p, e);
        if (rc != ST_OK) goto fail;
        buf_reset(&sql);
        buf_printf(&sql, "INSERT INTO concord_schema (version, applied) VALUES (%d, %lld)", cur + 1,
                   (long long)time(NULL));
        rc = drv->exec(d, sql.p, e);
        if (rc != ST_OK) goto fail;
        rc = drv->commit(d, e);
        if (rc != ST_OK) goto fail;
        log_info("store: applied migration %d", cur + 1);
        n++;
    }
    if (applied) *applied = n;
    goto out;
fail:
    drv->rollback(d);
out:
    buf_free(&sql);
    return rc;
}
