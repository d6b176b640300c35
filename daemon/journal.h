/* The jobs journal: an append-only file of JSON lines (data_dir/journal.jsonl) that lets the daemon
 * rebuild its jobs table after a restart or a crash.
 *
 * Records, one per line, each with "op" and "id":
 *   "job"      a job's full state (written when a job is admitted, and by compaction),
 *   "start"    the job left the queue (t),
 *   "complete" the outputs are in place (t, expires_at),
 *   "fail"     the job failed or was cancelled (t, expires_at, code, message),
 *   "delete"   the job and its files are gone (deleted, expired, or refused at admission).
 * Progress is not journaled. A line that does not parse (a write torn by a crash) is skipped with a
 * warning. Appends are serialised by the journal's own lock; with sync set the call returns only
 * after the data is on disk (fdatasync), which is how an admitted job survives a crash. A failed
 * append (disk full, file size limit, failed fdatasync) leaves the file exactly as it was, so the next
 * record starts on a line of its own. The caller owns the data folder (its lock) while a journal is
 * open or being compacted. */
#ifndef PD_DAEMON_JOURNAL_H
#define PD_DAEMON_JOURNAL_H

#include <stdbool.h>

#include <jansson.h>

#include "daemon/jobs.h"

#define PD_JOURNAL_MAX_LINE (4u << 20) /* longest record accepted on replay */

typedef struct pd_journal pd_journal;

/* Opens (creating it if absent) path for appending. PD_ERR_IO naming the file. */
pd_status pd_journal_open(const char *path, pd_journal **out);
void pd_journal_close(pd_journal *jn);

/* Appends one record (rec is consumed) as a line; fdatasync when sync. PD_ERR_IO (the file is
 * unchanged), PD_ERR_NOMEM. */
pd_status pd_journal_append(pd_journal *jn, json_t *rec, bool sync);

/* Record builders; each returns a new reference, NULL only when out of memory. */
json_t *pd_journal_rec_job(const pd_job *j);
json_t *pd_journal_rec_start(const char *id, double t);
json_t *pd_journal_rec_complete(const char *id, double t, double expires_at);
json_t *pd_journal_rec_fail(const char *id, double t, double expires_at, const char *code, const char *message);
json_t *pd_journal_rec_delete(const char *id);

/* Parses the request fields of a "job" record (as pd_journal_rec_job writes them) into q, which then
 * owns its strings; false (q empty) when they are missing or malformed. The shared job store keeps
 * requests in this form too. */
bool pd_journal_request_parse(json_t *rec, pd_job_request *q);
/* A status name ("queued", ...) as written by pd_job_status_name; unknown names are queued. */
pd_job_status pd_journal_status_parse(const char *s);

/* Reads path (absent = empty) and applies every record to jobs, which should start empty.
 * *n_records receives the number of lines applied, *n_bad the number skipped. PD_ERR_IO when the
 * file exists but cannot be read, PD_ERR_NOMEM. */
pd_status pd_journal_replay(const char *path, pd_jobs *jobs, size_t *n_records, size_t *n_bad);

/* Rewrites path as one "job" record per job in jobs (temporary file, fsync, rename, fsync of the
 * folder), so the journal stays proportional to the live table. Call before pd_journal_open.
 * PD_ERR_IO naming the file. */
pd_status pd_journal_compact(const char *path, const pd_jobs *jobs);

#endif
