import { randomBytes } from 'node:crypto'
import postgres from 'postgres'

/**
 * Migrated PostgreSQL test databases, handed back and reused by the next test of any test process.
 *
 * Copying the migrated template costs the PostgreSQL server about 0.25 s of CPU per database,
 * nearly all of it the kernel's (opening and writing the 300-odd files of the system catalogs);
 * a run of the suite needs over a hundred. A database a test is done with is instead emptied to
 * exactly the state of a fresh copy and parked as a spare (`bus_test_spare_<key>_<random>`); the
 * next test that needs one claims it by renaming it, which exactly one claimer can do. Resetting
 * costs a few hundredths of a second. Exactly means: the same schema (else it is dropped, never
 * reused), the same rows in every table (the migrations' own rows put back), the same sequence
 * positions, nobody connected (what still is gets cut off, as `DROP DATABASE … WITH (FORCE)`
 * would), and a new name, so a late reconnect of the previous test reaches nothing. Whatever
 * cannot be checked or reset drops the database, as before. What a fresh copy holds is kept as
 * the template's comment, written when the template is built. tap's `after` script
 * (`drop-spare-databases.ts`) drops the spares when the run ends.
 */

type Sql = ReturnType<typeof postgres>

/** What a fresh copy of the template holds: its schema's fingerprint, every table's rows, every sequence's position. */
export interface Pristine {
  fingerprint: string
  rows: Map<string, string | null>
  sequences: Map<string, { value: string | null, start: string }>
}

/** Everything about the schema a test could have changed; a database whose fingerprint differs is not reused. */
const FINGERPRINT = `
select md5(coalesce(string_agg(item, E'\\n' order by item), '')) as fingerprint from (
  select format('schema %s', nspname) as item from pg_namespace
  union all
  select format('relation %s %s %s', c.oid::regclass, c.relkind, c.relpersistence)
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
  union all
  select format('column %s.%s %s %s %s', a.attrelid::regclass, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
    from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast') and a.attnum > 0 and not a.attisdropped
  union all
  select format('index %s', pg_get_indexdef(i.indexrelid))
    from pg_index i join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
  union all
  select format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(c.oid))
    from pg_constraint c join pg_namespace n on n.oid = c.connamespace
    where n.nspname not in ('pg_catalog', 'information_schema')
  union all
  select format('trigger %s', pg_get_triggerdef(oid)) from pg_trigger where not tgisinternal
  union all
  select format('function %s', p.oid::regprocedure)
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname not in ('pg_catalog', 'information_schema')
  union all
  select format('type %s', t.oid::regtype)
    from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast') and t.typtype <> 'c'
  union all
  select format('setting %s', array_to_string(setconfig, ','))
    from pg_db_role_setting where setdatabase = (select oid from pg_database where datname = current_database())
  union all
  select format('prepared transaction %s', gid) from pg_prepared_xacts where database = current_database()
  union all
  select 'large objects' where exists (select 1 from pg_largeobject_metadata)
) items`

async function tables (sql: Sql): Promise<string[]> {
  const rows = await sql<Array<{ name: string }>>`
    select format('%I.%I', schemaname, tablename) as name from pg_tables
    where schemaname not in ('pg_catalog', 'information_schema') order by 1`
  return rows.map((r) => r.name)
}

/** Each table's rows as one JSON text (null when empty), in one query. */
async function contents (sql: Sql, names: string[]): Promise<Map<string, string | null>> {
  if (names.length === 0) return new Map()
  const [row] = await sql.unsafe(`select ${names.map((name, i) => `(select json_agg(t order by t::text)::text from ${name} t) as c${i}`).join(', ')}`)
  return new Map(names.map((name, i) => [name, (row?.[`c${i}`] as string | null | undefined) ?? null]))
}

async function sequences (sql: Sql): Promise<Map<string, { value: string | null, start: string }>> {
  const rows = await sql<Array<{ name: string, value: string | null, start: string }>>`
    select format('%I.%I', schemaname, sequencename) as name, last_value::text as value, start_value::text as start
    from pg_sequences where schemaname not in ('pg_catalog', 'information_schema')`
  return new Map(rows.map((r) => [r.name, { value: r.value, start: r.start }]))
}

/** A database's schema fingerprint, rows and sequence positions (what a reset must restore). */
export async function databaseState (url: string): Promise<Pristine> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    return await pristineOf(sql)
  } finally {
    await sql.end()
  }
}

async function fingerprintOf (sql: Sql): Promise<string> {
  const [{ fingerprint } = { fingerprint: '' }] = await sql.unsafe<Array<{ fingerprint: string }>>(FINGERPRINT)
  return fingerprint
}

async function pristineOf (sql: Sql): Promise<Pristine> {
  return { fingerprint: await fingerprintOf(sql), rows: await contents(sql, await tables(sql)), sequences: await sequences(sql) }
}

/** The prefix of every spare database's name. */
export const SPARE_PREFIX = 'bus_test_spare_'

/** A name for a test's own database. */
export function testDatabaseName (): string {
  return `bus_test_${randomBytes(6).toString('hex')}`
}

/** The URL of database `name` on the server at `serverUrl`. */
export function databaseUrlOn (serverUrl: string, name: string): string {
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/** Drops every spare whose name starts with `prefix` (all of them for SPARE_PREFIX). Never throws for one that is gone. */
export async function dropSpareDatabases (serverUrl: string, prefix: string): Promise<void> {
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  try {
    const spares = await admin<Array<{ datname: string }>>`select datname from pg_database where starts_with(datname, ${prefix})`
    for (const { datname } of spares) await admin.unsafe(`drop database if exists ${checkedName(datname)} with (force)`).catch(() => {})
  } finally {
    await admin.end()
  }
}

/** As the template's comment: what a fresh copy of it holds. */
export function serializePristine (pristine: Pristine): string {
  return JSON.stringify({ fingerprint: pristine.fingerprint, rows: [...pristine.rows], sequences: [...pristine.sequences] })
}

function parsePristine (text: string | null | undefined): Pristine | undefined {
  if (text === null || text === undefined) return undefined
  try {
    const parsed = JSON.parse(text) as { fingerprint: string, rows: Array<[string, string | null]>, sequences: Array<[string, { value: string | null, start: string }]> }
    return { fingerprint: parsed.fingerprint, rows: new Map(parsed.rows), sequences: new Map(parsed.sequences) }
  } catch {
    return undefined
  }
}

/** Only names this helper makes are put into SQL. */
function checkedName (name: string): string {
  if (!/^[a-z0-9_]{1,63}$/.test(name)) throw new Error(`unexpected database name ${JSON.stringify(name)}`)
  return name
}

export class RecycledDatabases {
  /** How many databases tests got from the spares (a test of this helper checks it). */
  reused = 0

  private readonly serverUrl: string
  private readonly template: string
  private readonly sparePrefix: string
  private pristine: Promise<Pristine | undefined> | undefined

  /** Copies of `template` on the server at `serverUrl`; spares are named `bus_test_spare_<spareKey>_…`. */
  constructor (serverUrl: string, template: string, spareKey: string) {
    this.serverUrl = serverUrl
    this.template = checkedName(template)
    this.sparePrefix = checkedName(`${SPARE_PREFIX}${spareKey}_`)
  }

  urlOf (name: string): string {
    return databaseUrlOn(this.serverUrl, name)
  }

  /** A database for one test: a spare, claimed, or else a new copy of the template. */
  async claim (): Promise<string> {
    const admin = this.admin()
    try {
      const spares = await admin<Array<{ datname: string }>>`select datname from pg_database where starts_with(datname, ${this.sparePrefix}) order by random()`
      for (const { datname } of spares) {
        const claimed = testDatabaseName()
        try {
          await admin.unsafe(`alter database ${checkedName(datname)} rename to ${claimed}`)
          this.reused++
          return claimed
        } catch (err) {
          // Another process claimed it first (gone), or is still parking it (in use): try the next.
          const code = (err as { code?: string }).code
          if (code !== '3D000' && code !== '55006') throw err
        }
      }
      const created = testDatabaseName()
      await admin.unsafe(`create database ${created} template ${this.template}`)
      return created
    } finally {
      await admin.end()
    }
  }

  /**
   * The test is done with `name`: reset it and park it as a spare for the next test; or, when
   * that cannot be done exactly, drop it. Never throws.
   */
  async giveBack (name: string): Promise<void> {
    const admin = this.admin()
    try {
      const parked = await this.reset(admin, checkedName(name)).catch(() => false)
      if (!parked) await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {})
    } finally {
      await admin.end()
    }
  }

  /** Drops the spares of this key (the test of this helper uses its own key). */
  async dropSpares (): Promise<void> {
    await dropSpareDatabases(this.serverUrl, this.sparePrefix)
  }

  private admin (): Sql {
    return postgres(this.serverUrl, { max: 1, onnotice: () => {} })
  }

  /** What a fresh copy holds, from the template's comment; undefined (so nothing is reused) without one. */
  private async pristineState (admin: Sql): Promise<Pristine | undefined> {
    this.pristine ??= admin<Array<{ comment: string | null }>>`select shobj_description(oid, 'pg_database') as comment from pg_database where datname = ${this.template}`
      .then(([row]) => parsePristine(row?.comment))
    return await this.pristine
  }

  private async reset (admin: Sql, name: string): Promise<boolean> {
    const pristine = await this.pristineState(admin)
    if (pristine === undefined) return false
    await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name} and pid <> pg_backend_pid()`
    const sql = postgres(this.urlOf(name), { max: 1, onnotice: () => {} })
    try {
      if (await fingerprintOf(sql) !== pristine.fingerprint) return false
      const now = await contents(sql, [...pristine.rows.keys()])
      const changed = [...now].filter(([table, rows]) => rows !== pristine.rows.get(table)).map(([table]) => table)
      const positions = await sequences(sql)
      const moved = [...positions].filter(([seq, position]) => position.value !== pristine.sequences.get(seq)?.value).map(([seq]) => seq)
      if (changed.length > 0 || moved.length > 0) {
        await sql.begin(async (tx) => {
          // CASCADE may empty tables that reference these too: every table is then checked for its rows.
          if (changed.length > 0) await tx.unsafe(`truncate ${changed.join(', ')} cascade`)
          for (const [table, rows] of pristine.rows) {
            if (rows === null) continue
            const [{ empty } = { empty: false }] = await tx.unsafe<Array<{ empty: boolean }>>(`select not exists (select 1 from ${table}) as empty`)
            if (empty) await tx.unsafe(`insert into ${table} select * from json_populate_recordset(null::${table}, $1::text::json)`, [rows])
          }
          for (const seq of moved) {
            const position = pristine.sequences.get(seq)
            if (position === undefined) continue
            await tx.unsafe(position.value === null ? 'select setval($1, $2::bigint, false)' : 'select setval($1, $2::bigint, true)', [seq, position.value ?? position.start])
          }
        })
        const after = await contents(sql, [...pristine.rows.keys()])
        if ([...after].some(([table, rows]) => rows !== pristine.rows.get(table))) return false
      }
    } finally {
      await sql.end()
    }
    const spare = `${this.sparePrefix}${randomBytes(6).toString('hex')}`
    // Refused while anything is still connected: a backend cut off a moment ago may still be
    // exiting, so it is tried a few times; a database that stays in use is dropped instead.
    for (let attempt = 1; ; attempt++) {
      try {
        await admin.unsafe(`alter database ${name} rename to ${spare}`)
        return true
      } catch (err) {
        if ((err as { code?: string }).code !== '55006' || attempt === 10) throw err
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
  }
}
