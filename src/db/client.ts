import { mkdirSync } from 'node:fs'
import { PGlite } from '@electric-sql/pglite'
import { sql as drizzleSql } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import { connectTimeoutOf } from './connect-timeout.ts'
import { acquireDataDirLock, type DataDirLock } from './data-dir-lock.ts'
import { postgres } from './postgres-driver.ts'
import * as schema from './schema.ts'

/** The one query interface above both drivers: every store function takes this (or a transaction). */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0]
export type Executor = Db | Tx

export interface Database {
  db: Db
  kind: 'postgres' | 'pglite'
  /**
   * Subscribes to a NOTIFY channel. `onConnect` runs every time the listening connection is
   * (re)established: notifications sent while it was down are lost, so callers resync there.
   */
  listen: (channel: string, onPayload: (payload: string) => void, onConnect?: () => void) => Promise<() => Promise<void>>
  ping: () => Promise<void>
  close: () => Promise<void>
}

export interface DatabaseOptions {
  databaseUrl?: string | undefined
  dataDir: string
  /** Pool size for PostgreSQL; the embedded database is a single connection by nature. */
  poolSize?: number
}

export async function openDatabase (options: DatabaseOptions): Promise<Database> {
  return options.databaseUrl !== undefined
    ? openPostgres(options.databaseUrl, options.poolSize ?? 10)
    : openPglite(options.dataDir)
}

function openPostgres (url: string, poolSize: number): Database {
  const client = postgres(url, {
    max: poolSize,
    connect_timeout: connectTimeoutOf(url) ?? 5,
    idle_timeout: 60,
    // postgres.js waits before reconnecting a closed connection, and by default that wait grows
    // with every failure in the pool (3^n / 100 s, up to 20 s): after an outage, requests queued
    // on a closed connection waited up to 20 s for it and recovery took as long. Cap it at 1 s.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** retries, 1),
    // Server notices (e.g. "relation already exists, skipping") are not our log's business.
    onnotice: () => {},
    connection: { application_name: 'bus-mcp' }
  })
  // drizzle asks postgres.js not to prepare unnamed queries. Ours are parameterised and few, so
  // preparing them (postgres.js keeps them per connection, keyed by text) saves a round trip and a
  // plan on every query: about half the latency of a lookup (docs/benchmarks.md).
  const unsafe = client.unsafe.bind(client)
  client.unsafe = ((query: string, parameters?: unknown[], options?: Record<string, unknown>) =>
    unsafe(query, parameters as never, { ...options, prepare: true })) as typeof client.unsafe
  const db = drizzlePostgres(client, { schema }) as unknown as Db
  return {
    db,
    kind: 'postgres',
    async listen (channel, onPayload, onConnect) {
      const { unlisten } = await client.listen(channel, onPayload, onConnect)
      return unlisten
    },
    async ping () {
      await client`select 1`
    },
    async close () {
      await client.end({ timeout: 5 })
    }
  }
}

/** DATA_DIR cannot be created or written (a file in the way, no permission, a read-only disk). */
export class DataDirError extends Error {
  constructor (dataDir: string, cause: Error) {
    super(`DATA_DIR ${dataDir} cannot be used for the embedded database (${cause.message}); point DATA_DIR at a directory this user may write, or set DATABASE_URL`, { cause })
    this.name = 'DataDirError'
  }
}

async function openPglite (dataDir: string): Promise<Database> {
  let lock: DataDirLock | undefined
  if (!dataDir.startsWith('memory://')) {
    try {
      mkdirSync(dataDir, { recursive: true })
      lock = acquireDataDirLock(dataDir)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) throw new DataDirError(dataDir, err as Error)
      throw err
    }
  }
  try {
    return wrapPglite(await PGlite.create(dataDir), lock)
  } catch (err) {
    lock?.release()
    throw err
  }
}

/** A Database over an open PGlite instance (tests open theirs from a migrated snapshot). */
export function wrapPglite (pg: PGlite, lock?: DataDirLock): Database {
  const db = drizzlePglite(pg, { schema }) as unknown as Db
  return {
    db,
    kind: 'pglite',
    async listen (channel, onPayload, onConnect) {
      const unsubscribe = await pg.listen(channel, onPayload)
      onConnect?.()
      return unsubscribe
    },
    async ping () {
      await db.execute(drizzleSql`select 1`)
    },
    async close () {
      try {
        await pg.close()
      } finally {
        lock?.release()
      }
    }
  }
}

/** Rows of a raw `db.execute()`: postgres.js returns an array, PGlite an object with `rows`. */
export function rowsOf<T> (result: unknown): T[] {
  if (Array.isArray(result)) return result as T[]
  return ((result as { rows?: T[] }).rows ?? [])
}
