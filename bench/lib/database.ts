import { randomBytes } from 'node:crypto'
import postgres from 'postgres'

/** The PostgreSQL server the bench creates its databases on (BENCH_DATABASE_URL overrides). */
export const BENCH_SERVER_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

export interface BenchDatabase { name: string, url: string, drop: () => Promise<void> }

const created = new Set<BenchDatabase>()

/** A fresh, empty database `bus_bench_<random>`; the server migrates it when it starts. */
export async function createBenchDatabase (): Promise<BenchDatabase> {
  const name = `bus_bench_${randomBytes(5).toString('hex')}`
  const admin = postgres(BENCH_SERVER_URL, { max: 1, onnotice: () => {} })
  try {
    await admin.unsafe(`create database ${name}`)
  } finally {
    await admin.end()
  }
  const url = new URL(BENCH_SERVER_URL)
  url.pathname = `/${name}`
  const database: BenchDatabase = {
    name,
    url: url.toString(),
    async drop () {
      created.delete(database)
      const dropper = postgres(BENCH_SERVER_URL, { max: 1, onnotice: () => {} })
      try {
        await dropper.unsafe(`drop database if exists ${name} with (force)`)
      } finally {
        await dropper.end()
      }
    }
  }
  created.add(database)
  return database
}

export async function dropAllBenchDatabases (): Promise<void> {
  await Promise.allSettled([...created].map(async (d) => { await d.drop() }))
}

export async function withSql<T> (url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    return await fn(sql)
  } finally {
    await sql.end()
  }
}

/**
 * `--large`: one million rows in api_tokens (under a principal of their own), one million in
 * messages (spread over a thousand channels) and one million in audit_log (the last 30 days),
 * inserted with generate_series, then ANALYZE. The bus_state counter and the channels' counters
 * are moved past them, as real sends would have.
 */
export async function insertBulkRows (url: string, rows = 1_000_000): Promise<void> {
  await withSql(url, async (sql) => {
    await sql`insert into principals (name, scopes) values ('bulk-owner', '{bus:read,bus:write}') on conflict (name) do nothing`
    const [owner] = await sql<Array<{ id: string }>>`select id from principals where name = 'bulk-owner'`
    if (owner === undefined) throw new Error('bulk-owner missing')
    await sql.unsafe(`
      insert into api_tokens (token_hash, hint, principal_id, scopes, label)
      select decode(md5('bulk-a' || i) || md5('bulk-b' || i), 'hex'), 'bulk', ${Number(owner.id)}, '{bus:read,bus:write}', 'bulk ' || i
      from generate_series(1, ${rows}) as i`)
    await sql.unsafe(`
      insert into channels (name, created_by, message_count, last_message_id)
      select 'bulk-' || c, ${Number(owner.id)}, 0, 0 from generate_series(0, 999) as c
      on conflict (name) do nothing`)
    const [state] = await sql<Array<{ last: string }>>`select last_message_id as last from bus_state where id = 1`
    const base = Number(state?.last ?? 0)
    await sql.unsafe(`
      insert into messages (id, channel_id, sender_id, body)
      select ${base} + i, ch.id, ${Number(owner.id)}, 'bulk message ' || i || ' ' || repeat('x', 80)
      from generate_series(1, ${rows}) as i
      join channels ch on ch.name = 'bulk-' || (i % 1000)`)
    await sql.unsafe(`update bus_state set last_message_id = ${base + rows} where id = 1`)
    await sql.unsafe(`
      update channels c set message_count = s.n, last_message_id = s.last
      from (select channel_id, count(*) as n, max(id) as last from messages group by channel_id) s
      where s.channel_id = c.id`)
    // A million audit rows over the last 30 days (inside the default retention), as calls leave them.
    await sql.unsafe(`
      insert into audit_log (at, principal_id, principal_name, auth_kind, kind, action, outcome, duration_ms)
      select now() - (i % 2592000) * interval '1 second', ${Number(owner.id)}, 'bulk-owner', 'api_token', 'tool',
        (array['bus_send','bus_read','whoami'])[1 + i % 3], 'ok', i % 20
      from generate_series(1, ${rows}) as i`)
    await sql.unsafe('analyze')
  })
}
