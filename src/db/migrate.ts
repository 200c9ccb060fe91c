import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { sql } from 'drizzle-orm'
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import { rowsOf, type Database } from './client.ts'
import { connectTimeoutOf } from './connect-timeout.ts'
import { DatabaseNoAnswerError } from './errors.ts'
import { postgres } from './postgres-driver.ts'

/** drizzle/ at the package root, beside src/. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL('../../drizzle', import.meta.url))

/** Any constant; every replica takes the same lock so only one applies migrations at a time. */
const MIGRATION_LOCK_KEY = 7_254_106_351

/**
 * Applies pending migrations. On PostgreSQL through a dedicated single connection holding an
 * advisory lock, so replicas starting together do not race; the embedded database is one
 * process's own, so it migrates in place.
 */
export async function migrate (database: Database, databaseUrl?: string): Promise<void> {
  if (database.kind === 'pglite' || databaseUrl === undefined) {
    // drizzle's pglite migrator wants the driver-specific type; both sit on the same PgDatabase.
    await migratePglite(database.db as unknown as Parameters<typeof migratePglite>[0], { migrationsFolder: MIGRATIONS_FOLDER })
    return
  }
  const client = singleConnection(databaseUrl)
  try {
    await firstAnswer(client, databaseUrl)
    await client`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`
    await migratePostgres(drizzlePostgres(client), { migrationsFolder: MIGRATIONS_FOLDER })
    await client`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`
  } finally {
    await client.end({ timeout: 5 })
  }
}

type Client = ReturnType<typeof postgres>

/** One connection for `migrate` and its check: connect_timeout from DATABASE_URL, or 10 s. */
function singleConnection (databaseUrl: string): Client {
  return postgres(databaseUrl, { max: 1, onnotice: () => {}, connect_timeout: connectTimeoutOf(databaseUrl) ?? 10 })
}

/**
 * How long the first answer may take: DATABASE_URL's connect_timeout, or 15 s. A refused,
 * unresolvable or silent address fails sooner (connect_timeout); this bounds the case postgres.js
 * retries forever: a port that accepts the connection and answers in another protocol
 * (DATABASE_URL pointing at an HTTP port, say).
 */
export function firstAnswerSeconds (databaseUrl: string): number {
  return connectTimeoutOf(databaseUrl) ?? 15
}

/** Waits for PostgreSQL to answer `select 1`; rejects with the driver's error, or DatabaseNoAnswerError. */
async function firstAnswer (client: Client, databaseUrl: string): Promise<void> {
  const seconds = firstAnswerSeconds(databaseUrl)
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new DatabaseNoAnswerError(seconds)) }, seconds * 1000)
  })
  const query = client`select 1`.execute()
  query.catch(() => {})
  try {
    await Promise.race([query, deadline])
  } catch (err) {
    // Ends the retry loop at once: a graceful end would wait for the query that never finishes.
    if (err instanceof DatabaseNoAnswerError) await client.end({ timeout: 0 })
    throw err
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Connects to DATABASE_URL once and closes again: rejects with the reason it cannot be used
 * (for `bus-mcp migrate`, before it opens a pool).
 */
export async function checkPostgres (databaseUrl: string): Promise<void> {
  const client = singleConnection(databaseUrl)
  try {
    await firstAnswer(client, databaseUrl)
  } finally {
    await client.end({ timeout: 5 })
  }
}

export function expectedMigrationCount (): number {
  const journal = JSON.parse(readFileSync(`${MIGRATIONS_FOLDER}/meta/_journal.json`, 'utf8')) as { entries: unknown[] }
  return journal.entries.length
}

/** How many migrations the database has applied (0 when it was never migrated). */
export async function appliedMigrationCount (database: Database): Promise<number> {
  const exists = rowsOf<{ present: boolean }>(await database.db.execute(
    sql`select to_regclass('drizzle.__drizzle_migrations') is not null as present`))
  if (exists[0]?.present !== true) return 0
  const rows = rowsOf<{ count: number | string }>(await database.db.execute(
    sql`select count(*)::int as count from drizzle.__drizzle_migrations`))
  return Number(rows[0]?.count ?? 0)
}
