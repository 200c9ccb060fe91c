import t from 'tap'
import { sql } from 'drizzle-orm'
import { ReadBatcher, type PendingRead, type ReadPage } from '../../src/bus/read-batcher.ts'
import { SendBatcher } from '../../src/bus/send-batcher.ts'
import type { Database } from '../../src/db/client.ts'
import { INBOX_STREAM } from '../../src/db/schema.ts'
import { createPrincipal } from '../../src/principals/store.ts'
import { createTestDatabase } from '../helpers/database.ts'

/**
 * Reads in batches (decision 0032): concurrent reads share statements and each gets exactly the
 * page it would get alone; identical reads are asked once; a read sees every message committed
 * before it was asked; a read the database refuses fails alone.
 */

/** Counts the statements the database is asked to run. */
function countStatements (t: { teardown: (fn: () => void) => void }, database: Database): { count: () => number } {
  let statements = 0
  const execute = database.db.execute.bind(database.db)
  database.db.execute = (async (query: Parameters<typeof execute>[0]) => {
    statements++
    return await execute(query)
  }) as typeof database.db.execute
  t.teardown(() => { database.db.execute = execute })
  return { count: () => statements }
}

async function setUp (t: Parameters<typeof createTestDatabase>[0]): Promise<{ database: Database, alice: number, bob: number, ids: number[] }> {
  const { database } = await createTestDatabase(t)
  const alice = (await createPrincipal(database.db, 'alice', 'bus:read bus:write')).id
  const bob = (await createPrincipal(database.db, 'bob', 'bus:read bus:write')).id
  const sends = new SendBatcher(database)
  const ids: number[] = []
  for (let i = 0; i < 30; i++) {
    const toBob = i % 4 === 0
    const stored = await sends.send({
      channel: toBob ? null : `room-${i % 2}`,
      recipientId: toBob ? bob : null,
      senderId: alice,
      body: `message ${i} "quoted" ✓`,
      metadata: i % 3 === 0 ? JSON.stringify({ i }) : null,
      notifyPrefix: toBob ? `u bus://inbox/${bob} ` : `u bus://channels/room-${i % 2} `
    })
    ids.push(stored.id)
  }
  // Bob has read his inbox up to the second direct message, and room-1 up to its fifth message.
  await database.db.execute(sql`insert into cursors (principal_id, stream, position) values
    (${bob}, ${INBOX_STREAM}, ${ids[4] ?? 0}), (${bob}, 'room-1', ${ids[9] ?? 0})`)
  return { database, alice, bob, ids }
}

t.test('concurrent reads: fewer statements, each page exactly what the read gets alone', async (t) => {
  const { database, alice, bob, ids } = await setUp(t)
  const reads: PendingRead[] = []
  for (const principalId of [alice, bob]) {
    for (const channel of ['room-0', 'room-1', null, 'no-such-room']) {
      for (const after of [null, 0, ids[10] ?? 0, ids[29] ?? 0]) {
        for (const limit of [1, 5, 100]) reads.push({ principalId, channel, after, limit })
      }
    }
  }
  const alone: ReadPage[] = []
  const lonely = new ReadBatcher(database)
  for (const read of reads) alone.push(await lonely.read(read))

  const statements = countStatements(t, database)
  const together = await Promise.all(reads.map(async (read) => await new ReadBatcher(database).read(read)))
  t.equal(statements.count(), reads.length, 'a batcher per read: a statement per read')
  const shared = new ReadBatcher(database)
  const batched = await Promise.all(reads.map(async (read) => await shared.read(read)))
  t.ok(statements.count() - reads.length <= 3, `${reads.length} reads through one batcher took ${statements.count() - reads.length} statements`)
  t.same(batched, alone, 'every batched page is the page read alone')
  t.same(together, alone)

  const bobsInbox = alone[reads.findIndex((r) => r.principalId === bob && r.channel === null && r.after === null && r.limit === 100)]
  t.same(bobsInbox?.messages.map((m) => m.id), [ids[8], ids[12], ids[16], ids[20], ids[24], ids[28]], "bob's inbox after his cursor")
  t.equal(bobsInbox?.cursor, ids[4], 'with his cursor')
  const alicesInbox = alone[reads.findIndex((r) => r.principalId === alice && r.channel === null && r.after === 0 && r.limit === 100)]
  t.same(alicesInbox?.messages, [], 'alice has no direct messages: another inbox is never read')
  const missing = alone[reads.findIndex((r) => r.channel === 'no-such-room')]
  t.same(missing, { found: false, cursor: 0, messages: [] }, 'a channel that does not exist is not found')
  const first = alone[reads.findIndex((r) => r.principalId === alice && r.channel === 'room-1' && r.after === 0 && r.limit === 5)]
  t.same(first?.messages[0], { id: ids[1], from: 'alice', body: 'message 1 "quoted" ✓', metadata: null, created_at: first?.messages[0]?.created_at }, 'a message as stored')
  t.match(first?.messages[0]?.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'created_at in ISO 8601')
  const withMetadata = alone[reads.findIndex((r) => r.principalId === alice && r.channel === 'room-1' && r.after === 0 && r.limit === 100)]
  t.same(withMetadata?.messages.find((m) => m.id === ids[3])?.metadata, { i: 3 }, 'metadata as JSON')
})

t.test('identical reads in one batch are asked once, and all get the page', async (t) => {
  const { database, alice, ids } = await setUp(t)
  const batcher = new ReadBatcher(database)
  const statements = countStatements(t, database)
  const read = { principalId: alice, channel: 'room-0', after: 0, limit: 20 }
  const pages = await Promise.all(Array.from({ length: 50 }, async () => await batcher.read(read)))
  t.ok(statements.count() <= 2, `50 identical reads took ${statements.count()} statements`)
  for (const page of pages) t.same(page.messages.map((m) => m.id), ids.filter((_, i) => i % 4 !== 0 && i % 2 === 0))
})

t.test('a read sees every message committed before it was asked, even while a batch is in flight', async (t) => {
  const { database, alice } = await setUp(t)
  const reads = new ReadBatcher(database)
  const sends = new SendBatcher(database)
  // Keep the reader busy: a read is always in flight while the chains below send and read.
  const state = { busy: true }
  const background = (async () => {
    while (state.busy) await reads.read({ principalId: alice, channel: 'room-0', after: 0, limit: 100 })
  })()
  const seen = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
    const stored = await sends.send({ channel: 'live', recipientId: null, senderId: alice, body: `live ${i}`, metadata: null, notifyPrefix: 'u bus://channels/live ' })
    const page = await reads.read({ principalId: alice, channel: 'live', after: stored.id - 1, limit: 1 })
    return page.messages[0]?.id === stored.id
  }))
  state.busy = false
  await background
  t.equal(seen.filter(Boolean).length, 40, 'each of 40 reads made after its send was stored saw it')
})

t.test('a read the database refuses fails alone; the rest of its batch is answered', async (t) => {
  const { database, alice } = await setUp(t)
  const batcher = new ReadBatcher(database)
  const good = (limit: number): PendingRead => ({ principalId: alice, channel: 'room-0', after: 0, limit })
  // LIMIT may not be negative: the database refuses the statement that holds it.
  const results = await Promise.allSettled([good(1), good(2), { ...good(3), limit: -1 }, good(4)].map(async (r) => await batcher.read(r)))
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled'])
  t.same(results.map((r) => r.status === 'fulfilled' ? r.value.messages.length : -1), [1, 2, -1, 4], 'each of the others gets its own page')
})
