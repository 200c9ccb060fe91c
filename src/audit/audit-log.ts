import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import type { AuditRow } from '../db/schema.ts'

export interface AuditEntry {
  kind: 'tool' | 'admin' | 'oauth'
  action: string
  outcome: 'ok' | 'error' | 'denied'
  principalId?: number | null
  principalName?: string | null
  authKind?: string | null
  clientId?: string | null
  durationMs?: number | null
  /** Never arguments, tokens or secrets: a short, non-sensitive note (e.g. an error class). */
  detail?: string | null
}

const FLUSH_EVERY_MS = 100
const FLUSH_AT_ROWS = 200
const MAX_BUFFERED_ROWS = 20_000

/**
 * Writes audit rows in batches: one INSERT per 100 ms or 200 rows instead of one per tool call,
 * so auditing does not halve the hot path. Rows wait in memory at most FLUSH_EVERY_MS (plus a
 * database outage, during which up to MAX_BUFFERED_ROWS are kept and retried); `close` flushes.
 */
export class AuditLog {
  private buffer: AuditRow[] = []
  private timer: NodeJS.Timeout | undefined
  private flushing: Promise<void> | undefined
  private dropped = 0

  private readonly observers: Array<(entry: AuditEntry) => void> = []

  private readonly database: Database
  private readonly log: FastifyBaseLogger

  constructor (database: Database, log: FastifyBaseLogger) {
    this.database = database
    this.log = log
  }

  /** Metrics count what the audit log sees (tool calls, tokens, registrations) through this. */
  observe (observer: (entry: AuditEntry) => void): void {
    this.observers.push(observer)
  }

  record (entry: AuditEntry): void {
    for (const observer of this.observers) observer(entry)
    this.buffer.push({ ...entry, at: new Date() })
    if (this.buffer.length > MAX_BUFFERED_ROWS) {
      this.dropped += this.buffer.length - MAX_BUFFERED_ROWS
      this.buffer.splice(0, this.buffer.length - MAX_BUFFERED_ROWS)
    }
    if (this.buffer.length >= FLUSH_AT_ROWS) {
      void this.flush()
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => { void this.flush() }, FLUSH_EVERY_MS)
      this.timer.unref()
    }
  }

  /** Writes everything buffered so far; resolves when it is in the database (or failed). */
  async flush (): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    while (this.flushing !== undefined) await this.flushing
    if (this.buffer.length === 0) return
    const rows = this.buffer
    this.buffer = []
    this.flushing = this.write(rows).finally(() => { this.flushing = undefined })
    await this.flushing
  }

  private async write (rows: AuditRow[]): Promise<void> {
    try {
      // One parameter holding the batch as JSON: building a 200-row VALUES list through the query
      // builder cost ~50 µs of event-loop time per row; this costs a few (docs/benchmarks.md).
      await this.database.db.execute(sql`
        insert into audit_log (at, principal_id, principal_name, auth_kind, client_id, kind, action, outcome, duration_ms, detail)
        select at, principal_id, principal_name, auth_kind, client_id, kind, action, outcome, duration_ms, detail
        from json_to_recordset(${JSON.stringify(rows.map(toJsonRow))}::json) as r(
          at timestamptz, principal_id bigint, principal_name text, auth_kind text, client_id text,
          kind text, action text, outcome text, duration_ms integer, detail text)`)
      if (this.dropped > 0) {
        this.log.warn({ dropped: this.dropped }, 'audit rows were dropped while the database was unavailable')
        this.dropped = 0
      }
    } catch (err) {
      // Keep the rows for the next attempt (bounded), and try again later.
      this.buffer = rows.concat(this.buffer).slice(-MAX_BUFFERED_ROWS)
      this.log.warn({ err, pending: this.buffer.length }, 'audit log write failed; will retry')
      if (this.timer === undefined) {
        this.timer = setTimeout(() => { void this.flush() }, 1000)
        this.timer.unref()
      }
    }
  }

  get pending (): number { return this.buffer.length }
}

function toJsonRow (row: AuditRow): Record<string, unknown> {
  return {
    at: row.at instanceof Date ? row.at.toISOString() : row.at,
    principal_id: row.principalId ?? null,
    principal_name: row.principalName ?? null,
    auth_kind: row.authKind ?? null,
    client_id: row.clientId ?? null,
    kind: row.kind,
    action: row.action,
    outcome: row.outcome,
    duration_ms: row.durationMs ?? null,
    detail: row.detail ?? null
  }
}
