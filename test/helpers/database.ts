import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import postgres from 'postgres'
import { wrapPglite, type Database } from '../../src/db/client.ts'
import { MIGRATIONS_FOLDER, migrate } from '../../src/db/migrate.ts'
import { databaseState, databaseUrlOn, RecycledDatabases, serializePristine, testDatabaseName } from './recycled-databases.ts'

/** The subset of a tap `Test` the helpers need (keeps them usable from any test file). */
export interface Teardown { teardown: (fn: () => unknown) => void }

/** `TEST_DATABASE_URL` set: tests run on that PostgreSQL server, each in its own fresh database. */
export const testDatabaseUrl = process.env.TEST_DATABASE_URL === '' ? undefined : process.env.TEST_DATABASE_URL
export const databaseKind = testDatabaseUrl === undefined ? 'pglite' : 'postgres'

export interface TestDatabase {
  database: Database
  /** The PostgreSQL URL of this test's own database; undefined on the embedded database. */
  url: string | undefined
}

/**
 * A migrated, empty database that belongs to this test alone until its teardown.
 * PostgreSQL: a database `bus_test_<random>` on the `TEST_DATABASE_URL` server, a copy of the
 * migrated template or a spare an earlier test (of any test file) gave back, reset to the same
 * state (`migratedPostgresDatabase`); an empty one (`migrated: false`) is created and dropped.
 * Embedded: an in-memory PGlite loaded from a migrated snapshot (creating PGlite from scratch
 * and migrating takes seconds; loading the snapshot a fraction of one, see `SNAPSHOT_SETTINGS`).
 */
export async function createTestDatabase (t: Teardown, options: { migrated?: boolean } = {}): Promise<TestDatabase> {
  const migrated = options.migrated ?? true
  if (testDatabaseUrl === undefined) {
    const pg = migrated
      ? await PGlite.create({ loadDataDir: await migratedSnapshot() })
      : await PGlite.create()
    const database = wrapPglite(pg)
    t.teardown(() => database.close().catch(() => {}))
    return { database, url: undefined }
  }
  const url = migrated ? await migratedPostgresDatabase(t) : await createPostgresDatabase(t)
  const { openDatabase } = await import('../../src/db/client.ts')
  const database = await openDatabase({ databaseUrl: url, dataDir: '', poolSize: 5 })
  t.teardown(() => database.close().catch(() => {}))
  return { database, url }
}

/**
 * Fills an empty directory with a migrated embedded database, as if the server had run there
 * once: much faster than letting PGlite run initdb (seconds of CPU) in every test that needs a
 * DATA_DIR. It carries the snapshot's settings (`SNAPSHOT_SETTINGS`), so a server started on it
 * starts sooner too. Tests of a truly fresh DATA_DIR should not use this.
 */
export async function createEmbeddedDataDir (dataDir: string): Promise<void> {
  const pg = await PGlite.create(dataDir, { loadDataDir: await migratedSnapshot() })
  await pg.close()
}

/** A new, empty PostgreSQL database on the test server; dropped (even with open connections) at teardown. */
export async function createPostgresDatabase (t: Teardown): Promise<string> {
  if (testDatabaseUrl === undefined) throw new Error('TEST_DATABASE_URL is not set')
  const name = testDatabaseName()
  const admin = postgres(testDatabaseUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  await admin.end()
  t.teardown(async () => {
    const dropper = postgres(testDatabaseUrl, { max: 1, onnotice: () => {} })
    await dropper.unsafe(`drop database if exists ${name} with (force)`).catch(() => {})
    await dropper.end()
  })
  return databaseUrlOn(testDatabaseUrl, name)
}

let recycled: RecycledDatabases | undefined

/**
 * A migrated PostgreSQL database of this test's own: a spare an earlier test gave back, reset to
 * the state of a fresh copy, or else a new copy of the template. At teardown it is reset and
 * parked for the next test (see `RecycledDatabases`).
 */
async function migratedPostgresDatabase (t: Teardown): Promise<string> {
  if (testDatabaseUrl === undefined) throw new Error('TEST_DATABASE_URL is not set')
  const template = await migratedTemplate()
  recycled ??= new RecycledDatabases(testDatabaseUrl, template, template.slice(TEMPLATE_PREFIX.length))
  const pool = recycled
  const name = await pool.claim()
  t.teardown(async () => { await pool.giveBack(name) })
  return pool.urlOf(name)
}

/** The migrations' content (SQL files and the journal that orders them), for naming what was built from them. */
function migrationsHash (): string {
  const hash = createHash('sha256')
  for (const file of readdirSync(MIGRATIONS_FOLDER).sort()) {
    if (file.endsWith('.sql')) hash.update(file).update(readFileSync(join(MIGRATIONS_FOLDER, file)))
  }
  hash.update(readFileSync(join(MIGRATIONS_FOLDER, 'meta', '_journal.json')))
  return hash.digest('hex').slice(0, 16)
}

let template: Promise<string> | undefined

const TEMPLATE_PREFIX = 'bus_test_template_'
/** Part of the template's name: a template built before it held its fresh state as its comment is not used. */
const TEMPLATE_FORMAT = 'comment: pristine state v1'

/**
 * The name of a migrated PostgreSQL database that test databases are copied from (`CREATE
 * DATABASE … TEMPLATE`, a fraction of the time running the migrations takes). Keyed by the
 * migrations' content, so a changed migration makes a new one; built under a temporary name and
 * renamed when complete, so parallel test files racing to build it never copy a half-migrated
 * one. It takes no connections (a connected template cannot be copied) and stays on the server
 * for the next run, like the embedded snapshot stays in the temporary folder.
 */
export async function migratedTemplate (): Promise<string> {
  template ??= buildMigratedTemplate()
  return await template
}

async function buildMigratedTemplate (): Promise<string> {
  if (testDatabaseUrl === undefined) throw new Error('TEST_DATABASE_URL is not set')
  const name = `${TEMPLATE_PREFIX}${createHash('sha256').update(migrationsHash()).update(TEMPLATE_FORMAT).digest('hex').slice(0, 16)}`
  const admin = postgres(testDatabaseUrl, { max: 1, onnotice: () => {} })
  try {
    const [existing] = await admin`select 1 from pg_database where datname = ${name}`
    if (existing !== undefined) return name
    const building = `bus_test_building_${randomBytes(6).toString('hex')}`
    await admin.unsafe(`create database ${building}`)
    try {
      const url = databaseUrlOn(testDatabaseUrl, building)
      const { openDatabase } = await import('../../src/db/client.ts')
      const database = await openDatabase({ databaseUrl: url, dataDir: '', poolSize: 1 })
      try {
        await migrate(database, url)
      } finally {
        await database.close()
      }
      // What a fresh copy holds, for resetting a test's database to it (recycled-databases.ts).
      const pristine = serializePristine(await databaseState(url))
      await admin.unsafe(`comment on database ${building} is '${pristine.replaceAll("'", "''")}'`)
      await admin.unsafe(`alter database ${building} with allow_connections false`)
      await admin.unsafe(`alter database ${building} rename to ${name}`)
    } catch (err) {
      await admin.unsafe(`drop database if exists ${building} with (force)`)
      // Another test file finished the same template first: use theirs. PostgreSQL reports the
      // name taken as duplicate_database, or, when both renames reach the catalog at once, as a
      // unique violation on pg_database's name index.
      const code = (err as { code?: string }).code
      if (code !== '42P04' && code !== '23505') throw err
    }
    return name
  } finally {
    await admin.end()
  }
}

/**
 * How the snapshot differs from a data directory the server makes, to make loading it cheap: a
 * test database is loaded about a hundred times per run. PGlite untars the whole snapshot and
 * starts PostgreSQL for each one, and both costs scale with sizes that tests do not need: the
 * 16 MB WAL segment (1 MB here) and the 128 MB of shared buffers PostgreSQL sets up at start
 * (8 MB here; a test database holds a few hundred rows). Measured: 1.1–1.8 s → 0.3–0.5 s per
 * database. Neither setting changes what a query answers.
 */
const SNAPSHOT_SETTINGS = {
  initdb: ['--wal-segsize=1'],
  system: ["alter system set shared_buffers = '8MB'"]
}

let snapshot: Promise<Blob> | undefined

/**
 * The migrated snapshot, read once per process, as PGlite's `loadDataDir`. PGlite reads it with
 * `arrayBuffer()` only; a real Blob would copy the 30 MB into its own storage and read them back
 * through Node's blob stream, about 0.4 s of CPU per database, so this one hands out the bytes it
 * holds (PGlite copies what it keeps).
 */
async function migratedSnapshot (): Promise<Blob> {
  snapshot ??= readOrBuildSnapshot().then(bytes => {
    const buffer = new Uint8Array(bytes).buffer
    const loadable: Pick<Blob, 'type' | 'size' | 'arrayBuffer'> = { type: 'application/x-tar', size: buffer.byteLength, arrayBuffer: async () => buffer }
    return loadable as Blob
  })
  return await snapshot
}

/** Snapshot keyed by the migrations' content and its settings, so a change to either makes a new one. */
async function readOrBuildSnapshot (): Promise<Buffer> {
  const key = createHash('sha256').update(migrationsHash()).update(JSON.stringify(SNAPSHOT_SETTINGS)).digest('hex').slice(0, 16)
  const path = join(tmpdir(), `bus-mcp-test-snapshot-${key}.tar`)
  if (existsSync(path)) return readFileSync(path)
  const pg = await PGlite.create({ initDbStartParams: SNAPSHOT_SETTINGS.initdb })
  await migrate(wrapPglite(pg))
  for (const statement of SNAPSHOT_SETTINGS.system) await pg.exec(statement)
  const dump = Buffer.from(await (await pg.dumpDataDir('none')).arrayBuffer())
  await pg.close()
  // Parallel test files may race to write it: write aside, then rename atomically.
  const partial = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`
  writeFileSync(partial, dump)
  renameSync(partial, path)
  return dump
}
