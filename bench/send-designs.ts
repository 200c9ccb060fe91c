/**
 * `npm run bench -- --send-designs`: two ways of numbering messages, measured side by side on
 * one PostgreSQL database, at the statement level (no HTTP), with the ordering guarantee checked
 * while they run (issue 15; decision 0003 and its successor).
 *
 * - global: today's send. One counter row (`bus_state`) hands out every id, so ids commit in
 *   order across the whole bus, and every sender in the deployment waits for that one row.
 * - per-stream: the stream's own row (the channel, or the recipient's inbox row) is locked by the
 *   upsert that counts the message, and the id comes from a sequence under that lock. Ids commit
 *   in order per stream (what a reader's `id > cursor` needs); senders to different streams do
 *   not wait for each other.
 *
 * Workloads: every sender posts to one hot channel; or each send goes to one of 100 channels.
 * While senders run, one reader per stream follows it with `id > cursor` (as bus_read does) and
 * must end up with every message of the stream: a message that committed after a larger id was
 * read would be skipped, and the run fails.
 */
import postgres from 'postgres'
import { createBenchDatabase } from './lib/database.ts'
import { migrate } from '../src/db/migrate.ts'
import { openDatabase } from '../src/db/client.ts'

type Design = 'global' | 'per-stream' | 'global-batched'
type Workload = 'hot' | 'spread'

export interface SendDesignOptions { connections: number, rounds: number, seconds: number, log: (line: string) => void }

const CHANNELS: Record<Workload, number> = { hot: 1, spread: 100 }

async function prepare (url: string): Promise<void> {
  const database = await openDatabase({ databaseUrl: url, dataDir: '', poolSize: 1 })
  try {
    await migrate(database, url)
  } finally {
    await database.close()
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  try {
    await sql`insert into principals (name, scopes) values ('bench', '{bus:read,bus:write}')`
    await sql`create sequence if not exists message_ids`
  } finally {
    await sql.end()
  }
}

const BODY = 'deploy finished: build 4711 is live on staging'

/**
 * Group commit over the global counter: sends that arrive while a statement is in flight wait and
 * go together in the next one (up to 256). One statement takes as many ids as it has messages
 * from the counter row, upserts each channel once with its count, and inserts every message:
 * one lock, one commit, one fsync for the batch. Ids still commit in order across the bus.
 */
class SendBatcher {
  private queue: Array<{ channel: string, resolve: () => void, reject: (err: Error) => void }> = []
  private running = false
  private readonly sql: postgres.Sql
  private readonly principalId: number

  constructor (sql: postgres.Sql, principalId: number) {
    this.sql = sql
    this.principalId = principalId
  }

  async send (channel: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.queue.push({ channel, resolve, reject })
      if (!this.running) void this.flush()
    })
  }

  private async flush (): Promise<void> {
    this.running = true
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, 256)
      try {
        const channels = batch.map((b) => b.channel)
        await this.sql`
          with input as (
            select channel, n from unnest(${channels}::text[]) with ordinality as t(channel, n)
          ), seq as (
            update bus_state set last_message_id = last_message_id + ${batch.length} where id = 1 returning last_message_id
          ), numbered as (
            select input.channel, seq.last_message_id - ${batch.length} + input.n as id from input, seq
          ), ch as (
            insert into channels (name, created_by, message_count, last_message_id)
            select channel, ${this.principalId}, count(*), max(id) from numbered group by channel
            on conflict (name) do update set message_count = channels.message_count + excluded.message_count, last_message_id = excluded.last_message_id
            returning id, name
          )
          insert into messages (id, channel_id, sender_id, body)
          select numbered.id, ch.id, ${this.principalId}, ${BODY} from numbered join ch on ch.name = numbered.channel`
        for (const b of batch) b.resolve()
      } catch (err) {
        for (const b of batch) b.reject(err as Error)
      }
    }
    this.running = false
  }
}

function sendStatement (sql: postgres.Sql, design: Design, channel: string, principalId: number, batcher?: SendBatcher): Promise<unknown> {
  const body = BODY
  if (design === 'global-batched') return (batcher as SendBatcher).send(channel)
  if (design === 'global') {
    return sql`
      with seq as (
        update bus_state set last_message_id = last_message_id + 1 where id = 1 returning last_message_id
      ), ch as (
        insert into channels (name, created_by, message_count, last_message_id)
        values (${channel}, ${principalId}, 1, (select last_message_id from seq))
        on conflict (name) do update set message_count = channels.message_count + 1, last_message_id = excluded.last_message_id
        returning id
      )
      insert into messages (id, channel_id, sender_id, body)
      select seq.last_message_id, ch.id, ${principalId}, ${body} from seq, ch returning id`
  }
  // The id is drawn in the upsert's SET, after the row lock is taken: the next sender to this
  // stream draws only after this one commits.
  return sql`
    with ch as (
      insert into channels (name, created_by, message_count, last_message_id)
      values (${channel}, ${principalId}, 1, nextval('message_ids'))
      on conflict (name) do update set message_count = channels.message_count + 1, last_message_id = nextval('message_ids')
      returning id, last_message_id
    )
    insert into messages (id, channel_id, sender_id, body)
    select last_message_id, id, ${principalId}, ${body} from ch returning id`
}

interface RoundResult { sends: number, seconds: number, latencies: number[], skipped: number }

async function round (url: string, design: Design, workload: Workload, options: SendDesignOptions, roundNo: number): Promise<RoundResult> {
  const sql = postgres(url, { max: options.connections, onnotice: () => {} })
  const reader = postgres(url, { max: 2, onnotice: () => {} })
  const channels = Array.from({ length: CHANNELS[workload] }, (_, i) => `sd-${design}-${workload}-${roundNo}-${i}`)
  try {
    const [principal] = await sql<Array<{ id: number }>>`select id from principals where name = 'bench'`
    const principalId = Number(principal?.id)
    // Both designs share the messages table: each starts past every id the other handed out.
    await sql`update bus_state set last_message_id = (select coalesce(max(id), 0) from messages) where id = 1`
    await sql`select setval('message_ids', (select coalesce(max(id), 0) + 1 from messages))`
    const batcher = new SendBatcher(sql, Number(principalId))
    const deadline = performance.now() + options.seconds * 1000
    const latencies: number[] = []
    let sends = 0
    const sender = async (): Promise<void> => {
      while (performance.now() < deadline) {
        const channel = channels[Math.floor(Math.random() * channels.length)] as string
        const started = performance.now()
        await sendStatement(sql, design, channel, Number(principalId), batcher)
        latencies.push(performance.now() - started)
        sends++
      }
    }
    // Readers follow every stream with `id > cursor`, as agents do, while the senders run.
    const seen = new Map<string, Set<number>>(channels.map((c) => [c, new Set()]))
    const state = { reading: true }
    const follow = async (): Promise<void> => {
      const cursors = new Map(channels.map((c) => [c, 0]))
      while (state.reading) {
        for (const channel of channels) {
          const rows = await reader<Array<{ id: string }>>`
            select m.id from messages m join channels c on c.id = m.channel_id
            where c.name = ${channel} and m.id > ${cursors.get(channel) ?? 0} order by m.id limit 500`
          for (const row of rows) seen.get(channel)?.add(Number(row.id))
          const last = rows.at(-1)
          if (last !== undefined) cursors.set(channel, Number(last.id))
        }
      }
    }
    const started = performance.now()
    const readerDone = follow()
    const sent = await Promise.allSettled(Array.from({ length: options.connections }, sender))
    const seconds = (performance.now() - started) / 1000
    state.reading = false
    await readerDone
    const failure = sent.find((s) => s.status === 'rejected')
    if (failure !== undefined) throw (failure as PromiseRejectedResult).reason
    // A last pass with the final cursors picks up what committed after the readers' last look:
    // only messages below a cursor the reader already passed count as skipped.
    let skipped = 0
    for (const channel of channels) {
      const ids = seen.get(channel) as Set<number>
      const max = Math.max(0, ...ids)
      const all = await reader<Array<{ id: string }>>`
        select m.id from messages m join channels c on c.id = m.channel_id where c.name = ${channel} and m.id <= ${max}`
      for (const row of all) if (!ids.has(Number(row.id))) skipped++
    }
    return { sends, seconds, latencies, skipped }
  } finally {
    await sql.end()
    await reader.end()
  }
}

export async function runSendDesigns (options: SendDesignOptions): Promise<boolean> {
  const database = await createBenchDatabase()
  options.log(`database ${database.name}`)
  try {
    await prepare(database.url)
    const cases: Array<[Design, Workload]> = [
      ['global', 'hot'], ['per-stream', 'hot'], ['global-batched', 'hot'],
      ['global', 'spread'], ['per-stream', 'spread'], ['global-batched', 'spread']
    ]
    const results = new Map<string, RoundResult[]>()
    for (let r = 0; r < options.rounds; r++) {
      const order = r % 2 === 0 ? cases : [...cases].reverse()
      for (const [design, workload] of order) {
        const result = await round(database.url, design, workload, options, r)
        const key = `${design} ${workload}`
        results.set(key, [...(results.get(key) ?? []), result])
        options.log(`round ${r + 1}  ${key.padEnd(18)} ${Math.round(result.sends / result.seconds)} sends/s, skipped ${result.skipped}`)
      }
    }
    console.log('\n| design | workload | sends/s | per round | p50 ms | p99 ms | skipped by a reader |')
    console.log('| --- | --- | --- | --- | --- | --- | --- |')
    const rate = (rs: RoundResult[]): number => rs.reduce((n, r) => n + r.sends, 0) / rs.reduce((n, r) => n + r.seconds, 0)
    let ok = true
    for (const [design, workload] of cases) {
      const rs = results.get(`${design} ${workload}`) ?? []
      const sorted = rs.flatMap((r) => r.latencies).sort((a, b) => a - b)
      const pct = (q: number): string => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(1)
      const skipped = rs.reduce((n, r) => n + r.skipped, 0)
      if (skipped > 0) ok = false
      console.log(`| ${design} | ${workload} | ${Math.round(rate(rs))} | ${rs.map((r) => Math.round(r.sends / r.seconds)).join(' / ')} | ${pct(0.5)} | ${pct(0.99)} | ${skipped} |`)
    }
    for (const workload of ['hot', 'spread'] as const) {
      const global = rate(results.get(`global ${workload}`) ?? [])
      const ratio = (design: Design): string => (rate(results.get(`${design} ${workload}`) ?? []) / global).toFixed(2)
      console.log(`\n${workload}: per-stream ${ratio('per-stream')}x, global-batched ${ratio('global-batched')}x the global counter`)
    }
    return ok
  } finally {
    await database.drop()
  }
}
