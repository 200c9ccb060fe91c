import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import postgres from 'postgres'
import t, { type Test } from 'tap'
import { migratedTemplate, testDatabaseUrl } from '../helpers/database.ts'
import { REPO_ROOT } from '../helpers/processes.ts'
import { databaseState, RecycledDatabases, SPARE_PREFIX } from '../helpers/recycled-databases.ts'
import { fileNeeds, postgres as needsPostgres } from '../helpers/requirements.ts'

/**
 * The test helper parks a PostgreSQL database a test is done with for the next test
 * (test/helpers/recycled-databases.ts). The next test must not be able to tell it from a fresh
 * copy of the template, nor reach it under the old name; one whose schema was changed is never
 * reused. This file uses spares of its own (its own key), so other test files running at the
 * same time cannot take them: each subtest's database is the one the subtest before it gave
 * back, unless that one could not be reused.
 */

async function exists (name: string): Promise<boolean> {
  const admin = postgres(testDatabaseUrl ?? '', { max: 1, onnotice: () => {} })
  try {
    return (await admin`select 1 from pg_database where datname = ${name}`).length === 1
  } finally {
    await admin.end()
  }
}

if (fileNeeds(t, [needsPostgres()])) {
  let pool: RecycledDatabases
  let fresh: Awaited<ReturnType<typeof databaseState>>
  let previous = ''
  let leftOpen: ReturnType<typeof postgres> | undefined

  const key = `check${randomBytes(3).toString('hex')}`
  t.before(async () => {
    pool = new RecycledDatabases(testDatabaseUrl ?? '', await migratedTemplate(), key)
  })
  t.teardown(async () => { await pool.dropSpares() })

  /** A database for this subtest, given back at its teardown; and whether it was a spare. */
  const claim = async (t: Test): Promise<{ name: string, url: string, reused: boolean }> => {
    const before = pool.reused
    const name = await pool.claim()
    t.teardown(async () => { await pool.giveBack(name) })
    return { name, url: pool.urlOf(name), reused: pool.reused === before + 1 }
  }

  t.test('a fresh copy, used: rows in several tables, sequences moved, the migrations\' own row changed, a connection left open', async (t) => {
    const { name, url, reused } = await claim(t)
    t.notOk(reused, 'no spare yet: a copy of the template')
    previous = name
    fresh = await databaseState(url)
    t.not(fresh.rows.get('public.bus_state'), null, 'the migrations leave a row in bus_state')
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    await sql`insert into principals (name, scopes) values ('alice', '{bus:read}'), ('bob', '{bus:write}')`
    await sql`insert into channels (name) values ('general')`
    await sql`update bus_state set last_message_id = 42`
    await sql.end()
    leftOpen = postgres(url, { max: 1, onnotice: () => {} })
    await leftOpen`select 1`
    const used = await databaseState(url)
    t.not(used.rows.get('public.principals'), fresh.rows.get('public.principals'))
    t.not(used.rows.get('public.bus_state'), fresh.rows.get('public.bus_state'))
    t.not(used.sequences.get('public.principals_id_seq')?.value, fresh.sequences.get('public.principals_id_seq')?.value)
  })

  t.test('the next test gets it back under a new name, exactly as a fresh copy', async (t) => {
    const { name, url, reused } = await claim(t)
    t.ok(reused, 'it is the one the last test gave back')
    const state = await databaseState(url)
    t.same(state.fingerprint, fresh.fingerprint, 'the same schema')
    t.same([...state.rows], [...fresh.rows], 'the same rows in every table, the migrations\' own included')
    t.same([...state.sequences], [...fresh.sequences], 'the same sequence positions')
    t.not(name, previous, 'a new name')
    t.notOk(await exists(previous), 'the old name reaches nothing')
    if (leftOpen === undefined) throw new Error('no connection')
    await t.rejects(leftOpen`select 1`.execute(), 'the connection the last test left open was cut off')
    await leftOpen.end().catch(() => {})
    previous = name
  })

  t.test('a database whose schema a test changed is dropped, not reused', async (t) => {
    const { name, url, reused } = await claim(t)
    t.ok(reused, 'the unchanged one was reused')
    t.notOk(await exists(previous))
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    await sql`alter table principals add column nickname text`
    await sql.end()
    previous = name
  })

  t.test('…so the next test gets a new copy of the template', async (t) => {
    const { url, reused } = await claim(t)
    t.notOk(reused, 'no spare')
    t.notOk(await exists(previous), 'the changed one is gone')
    const state = await databaseState(url)
    t.same(state.fingerprint, fresh.fingerprint, 'a fresh schema')
    t.same([...state.rows], [...fresh.rows])
  })

  t.test('two processes asking at once for the one spare: exactly one gets it', async (t) => {
    // The last subtest gave its database back: that is the one spare. Another process's helper is another instance.
    const other = new RecycledDatabases(testDatabaseUrl ?? '', await migratedTemplate(), key)
    const before = pool.reused
    const [a, b] = await Promise.all([pool.claim(), other.claim()])
    t.teardown(async () => { await Promise.all([pool.giveBack(a), other.giveBack(b)]) })
    t.equal(pool.reused - before + other.reused, 1, 'one reused it, the other made a copy')
    t.not(a, b, 'two databases')
  })

  t.test('when a run ends, tap\'s after script drops the spares', async (t) => {
    const config = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { tap: { after?: string } }
    t.equal(config.tap.after, 'test/helpers/drop-spare-databases.ts', 'tap runs it after every run')
    const spare = `${SPARE_PREFIX}${key}_afterscript`
    const admin = postgres(testDatabaseUrl ?? '', { max: 1, onnotice: () => {} })
    await admin.unsafe(`create database ${spare}`)
    await admin.end()
    await promisify(execFile)(process.execPath, [config.tap.after ?? ''], { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '', TEST_DATABASE_URL: testDatabaseUrl ?? '' } })
    t.notOk(await exists(spare), 'the spare is gone')
  })
}
