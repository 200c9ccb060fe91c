import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../config.ts'
import { rowsOf, type Database, type Executor } from '../db/client.ts'

/** Any constant: replicas take turns, so one purge runs at a time. */
const PURGE_LOCK_KEY = 7_254_106_352
/** Spent or expired OAuth rows are kept this long after expiry (replay detection, then forensics). */
const OAUTH_GRACE = '1 day'

export interface PurgeCounts {
  messages: number
  audit_log: number
  oauth_codes: number
  oauth_tokens: number
  oauth_grants: number
  oauth_pending_authorizations: number
  login_codes: number
  oauth_clients: number
}

/**
 * Deletes what is no longer needed: messages and audit rows past their retention (0 = keep
 * forever), OAuth codes/tokens/consent transactions/login codes a day past expiry, grants left
 * without tokens or codes, and dynamic registrations that never completed a flow within a day.
 * Refresh tokens are kept until they expire even when spent, so reuse is still detected.
 */
export async function purgeOnce (db: Executor, config: Pick<Config, 'messageRetentionDays' | 'auditRetentionDays'>): Promise<PurgeCounts | undefined> {
  return await db.transaction(async (tx) => {
    const [lock] = rowsOf<{ locked: boolean }>(await tx.execute(sql`select pg_try_advisory_xact_lock(${PURGE_LOCK_KEY}) as locked`))
    if (lock?.locked !== true) return undefined
    const count = async (query: ReturnType<typeof sql>): Promise<number> => rowsOf<unknown>(await tx.execute(query)).length
    const counts: PurgeCounts = {
      messages: 0,
      audit_log: 0,
      oauth_codes: await count(sql`delete from oauth_codes where expires_at < now() - ${OAUTH_GRACE}::interval returning 1`),
      oauth_tokens: await count(sql`delete from oauth_tokens where expires_at < now() - ${OAUTH_GRACE}::interval returning 1`),
      oauth_grants: 0,
      oauth_pending_authorizations: await count(sql`delete from oauth_pending_authorizations where expires_at < now() - ${OAUTH_GRACE}::interval returning 1`),
      login_codes: await count(sql`delete from login_codes where expires_at < now() - ${OAUTH_GRACE}::interval returning 1`),
      oauth_clients: 0
    }
    counts.oauth_grants = await count(sql`
      delete from oauth_grants g where g.created_at < now() - ${OAUTH_GRACE}::interval
        and not exists (select 1 from oauth_tokens t where t.grant_id = g.id)
        and not exists (select 1 from oauth_codes c where c.grant_id = g.id)
      returning 1`)
    counts.oauth_clients = await count(sql`
      delete from oauth_clients c where c.kind in ('dynamic', 'metadata_document') and c.created_at < now() - ${OAUTH_GRACE}::interval
        and not exists (select 1 from oauth_grants g where g.client_id = c.id)
        and (c.last_used_at is null or c.last_used_at < now() - interval '90 days')
      returning 1`)
    if (config.messageRetentionDays > 0) {
      counts.messages = await count(sql`delete from messages where created_at < now() - make_interval(days => ${config.messageRetentionDays}) returning 1`)
      if (counts.messages > 0) {
        // Keep the channel counts true to what is left (ids and cursors are unaffected).
        await tx.execute(sql`update channels c set message_count = (select count(*) from messages m where m.channel_id = c.id)`)
      }
    }
    if (config.auditRetentionDays > 0) {
      counts.audit_log = await count(sql`delete from audit_log where at < now() - make_interval(days => ${config.auditRetentionDays}) returning 1`)
    }
    return counts
  })
}

/** Runs purgeOnce every `intervalMs` (first run shortly after start); failures are logged and retried next time. */
export class Maintenance {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined

  private readonly database: Database
  private readonly config: Config
  private readonly log: FastifyBaseLogger
  private readonly intervalMs: number

  constructor (
    database: Database,
    config: Config,
    log: FastifyBaseLogger,
    intervalMs = 10 * 60_000
  ) {
    this.database = database
    this.config = config
    this.log = log
    this.intervalMs = intervalMs
  }

  start (firstRunAfterMs = 60_000): void {
    const schedule = (delay: number): void => {
      this.timer = setTimeout(() => {
        this.running = this.run().finally(() => {
          this.running = undefined
          if (this.timer !== undefined) schedule(this.intervalMs)
        })
      }, delay)
      this.timer.unref()
    }
    schedule(firstRunAfterMs)
  }

  async stop (): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    await this.running
  }

  private async run (): Promise<void> {
    try {
      const counts = await purgeOnce(this.database.db, this.config)
      if (counts !== undefined && Object.values(counts).some((n) => n > 0)) this.log.info({ purged: counts }, 'purged expired data')
    } catch (err) {
      this.log.warn({ err }, 'purge failed; will retry')
    }
  }
}
