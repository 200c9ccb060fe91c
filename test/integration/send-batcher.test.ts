import t from 'tap'
import { sql } from 'drizzle-orm'
import { SendBatcher, type PendingSend } from '../../src/bus/send-batcher.ts'
import { rowsOf } from '../../src/db/client.ts'
import { createPrincipal } from '../../src/principals/store.ts'
import { createTestDatabase } from '../helpers/database.ts'

/**
 * Group commit (decision 0031): concurrent sends share statements, and still each gets its own
 * id, in arrival order, every message stored once; a message the database refuses fails alone.
 */
t.test('concurrent sends: one statement for many, every message stored once, ids in arrival order', async (t) => {
  const { database } = await createTestDatabase(t)
  const alice = await createPrincipal(database.db, 'alice', 'bus:read bus:write')
  const bob = await createPrincipal(database.db, 'bob', 'bus:read bus:write')
  const batcher = new SendBatcher(database)
  const statements: string[] = []
  const execute = database.db.execute.bind(database.db)
  database.db.execute = (async (query: Parameters<typeof execute>[0]) => {
    statements.push('send')
    return await execute(query)
  }) as typeof database.db.execute
  t.teardown(() => { database.db.execute = execute })

  const send = (i: number): PendingSend => i % 5 === 0
    ? { channel: null, recipientId: bob.id, senderId: alice.id, body: `dm ${i} "quoted", {braces} \\ back ✓`, metadata: JSON.stringify({ i }), notifyPrefix: `u bus://inbox/${bob.id} ` }
    : { channel: `room-${i % 3}`, recipientId: null, senderId: alice.id, body: `message ${i}`, metadata: null, notifyPrefix: `u bus://channels/room-${i % 3} ` }
  const stored = await Promise.all(Array.from({ length: 120 }, async (_, i) => await batcher.send(send(i))))

  t.ok(statements.length < 120, `120 sends took ${statements.length} statements`)
  const ids = stored.map((s) => s.id)
  t.equal(new Set(ids).size, 120, 'every send has its own id')
  t.same(ids, [...ids].sort((a, b) => a - b), 'ids follow the order the sends arrived in')
  t.equal(stored.filter((s) => s.channelCreated).length, 3, 'each new channel is announced once')

  const rows = rowsOf<{ id: string | number, body: string, metadata: unknown, channel: string | null }>(await execute(sql`
    select m.id, m.body, m.metadata, c.name as channel from messages m left join channels c on c.id = m.channel_id order by m.id`))
  t.equal(rows.length, 120, 'all 120 are stored')
  t.equal(rows.find((r) => Number(r.id) === stored[5]?.id)?.body, 'dm 5 "quoted", {braces} \\ back ✓', 'bodies arrive byte for byte')
  t.same(rows.find((r) => Number(r.id) === stored[5]?.id)?.metadata, { i: 5 }, 'metadata is stored as JSON')
  const counts = rowsOf<{ name: string, message_count: string | number, last_message_id: string | number }>(await execute(sql`select name, message_count, last_message_id from channels order by name`))
  t.same(counts.map((c) => [c.name, Number(c.message_count)]), [['room-0', 32], ['room-1', 32], ['room-2', 32]], 'channel counts add up')
  for (const channel of counts) {
    const newest = Math.max(...stored.filter((_, i) => i % 5 !== 0 && `room-${i % 3}` === channel.name).map((s) => s.id))
    t.equal(Number(channel.last_message_id), newest, `${channel.name}: last_message_id is its newest message`)
  }
})

t.test('a message the database refuses fails alone; the rest of its batch is stored', async (t) => {
  const { database } = await createTestDatabase(t)
  const alice = await createPrincipal(database.db, 'alice', 'bus:read bus:write')
  const batcher = new SendBatcher(database)
  const good = (i: number): PendingSend => ({ channel: 'ops', recipientId: null, senderId: alice.id, body: `ok ${i}`, metadata: null, notifyPrefix: 'u bus://channels/ops ' })
  const orphan: PendingSend = { channel: null, recipientId: 987654, senderId: alice.id, body: 'to nobody', metadata: null, notifyPrefix: 'u bus://inbox/987654 ' }
  const results = await Promise.allSettled([good(1), good(2), orphan, good(3), good(4)].map(async (s) => await batcher.send(s)))
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled'])
  const stored = rowsOf<{ body: string }>(await database.db.execute(sql`select body from messages order by id`))
  t.same(stored.map((r) => r.body), ['ok 1', 'ok 2', 'ok 3', 'ok 4'], 'the others are stored, once each')
})
