import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import t from 'tap'
import { openDatabase } from '../../src/db/client.ts'
import { callTool, principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'

/**
 * Two replicas on one database (PostgreSQL, or on the embedded database two servers in one
 * process sharing it): 200 subscriptions/listen streams split across both, a burst of sends on
 * one, every stream notified exactly once per message; then one replica dies without a word, its
 * clients listen again on the other and resume with resources/read from the last id they heard,
 * and no message is lost.
 */

const STREAMS = 200
const PRINCIPALS = 10
const MESSAGE_ID = 'bus-mcp/messageId'

async function until (what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const started = Date.now()
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

interface Listener {
  index: number
  token: string
  principal: string
  client: Client
  closed: Promise<'local' | 'graceful' | 'remote'>
  /** Message ids heard in notifications, per resource URI, in arrival order (duplicates kept). */
  heard: Map<string, number[]>
  /** Ids recovered with resources/read after a reconnect. */
  recovered: number[]
}

async function listenOn (server: TestServer, listener: Omit<Listener, 'client' | 'closed'>): Promise<Listener> {
  const client = new Client({ name: `replica-listener-${listener.index}`, version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${server.baseUrl}/mcp`), { authProvider: { token: async () => listener.token } }))
  client.setNotificationHandler('notifications/resources/updated', (notification) => {
    const id = notification.params._meta?.[MESSAGE_ID]
    if (typeof id !== 'number') return
    const list = listener.heard.get(notification.params.uri) ?? []
    list.push(id)
    listener.heard.set(notification.params.uri, list)
  })
  const subscription = await client.listen({ resourceSubscriptions: ['bus://channels/burst', 'bus://inbox'] })
  return { ...listener, client, closed: subscription.closed }
}

async function inParallel<T> (count: number, width: number, work: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = []
  for (let start = 0; start < count; start += width) {
    results.push(...await Promise.all(Array.from({ length: Math.min(width, count - start) }, async (_, k) => await work(start + k))))
  }
  return results
}

t.test('200 listen streams on two replicas: exactly once per message, nothing lost when a replica dies', async (t) => {
  const a = await startTestServer(t, { listen: true })
  const sharedDatabase = a.databaseUrl === undefined
    ? a.database
    : await openDatabase({ databaseUrl: a.databaseUrl, dataDir: '', poolSize: 10 })
  if (a.databaseUrl !== undefined) t.teardown(async () => { await sharedDatabase.close() })
  const b = await startTestServer(t, { listen: true, database: sharedDatabase, databaseUrl: a.databaseUrl })
  const sender = await principalWithToken(a, 'sender')
  const tokens: string[] = []
  for (let p = 0; p < PRINCIPALS; p++) tokens.push(await principalWithToken(a, `agent-${p}`))

  let listeners = await inParallel(STREAMS, 20, async (index) => await listenOn(index < STREAMS / 2 ? a : b, {
    index, token: tokens[index % PRINCIPALS] as string, principal: `agent-${index % PRINCIPALS}`, heard: new Map(), recovered: []
  }))
  t.teardown(async () => { await Promise.all(listeners.map(async (l) => { await l.client.close().catch(() => {}) })) })
  t.equal(a.runtime.listen.size, STREAMS / 2, 'half the streams on replica A')
  t.equal(b.runtime.listen.size, STREAMS / 2, 'half on replica B')

  // The promise of the README: subscribed on one replica, told of a send on the other within a second.
  const watcher = new Client({ name: 'deploys-watcher', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } })
  await watcher.connect(new StreamableHTTPClientTransport(new URL(`${a.baseUrl}/mcp`), { authProvider: { token: async () => tokens[0] as string } }))
  let heardAt = 0
  watcher.setNotificationHandler('notifications/resources/updated', () => { heardAt = Date.now() })
  const watching = await watcher.listen({ resourceSubscriptions: ['bus://channels/deploys'] })
  const sentAt = Date.now()
  await callTool(b, sender, 'bus_send', { channel: 'deploys', body: 'v2 is out' })
  await until('the watcher on A to hear the send on B', () => heardAt > 0, 5000)
  t.ok(heardAt - sentAt < 1000, `a send on replica B reached a listener on replica A in ${heardAt - sentAt} ms`)
  await watching.close()
  await watcher.close()

  // A burst on replica A: channel posts every stream hears, direct messages only agent-3's streams hear.
  const sent = await inParallel(100, 20, async (i) => (await callTool(a, sender, 'bus_send', { channel: 'burst', body: `burst ${i}` })).data.id as number)
  const direct = await inParallel(20, 10, async (i) => (await callTool(a, sender, 'bus_send', { to: 'agent-3', body: `dm ${i}` })).data.id as number)
  const channelIds = (l: Listener): number[] => l.heard.get('bus://channels/burst') ?? []
  await until('every stream to hear every message', () => listeners.every((l) => channelIds(l).length >= sent.length), 30_000)
  await until('agent-3\'s streams to hear every direct message', () => listeners.filter((l) => l.principal === 'agent-3').every((l) => (l.heard.get('bus://inbox') ?? []).length >= direct.length), 30_000)
  await new Promise((resolve) => setTimeout(resolve, 300))
  const expected = [...sent].sort((x, y) => x - y)
  let exact = 0
  for (const l of listeners) {
    const ids = [...channelIds(l)].sort((x, y) => x - y)
    const inbox = [...(l.heard.get('bus://inbox') ?? [])].sort((x, y) => x - y)
    const inboxExpected = l.principal === 'agent-3' ? [...direct].sort((x, y) => x - y) : []
    if (JSON.stringify(ids) === JSON.stringify(expected) && JSON.stringify(inbox) === JSON.stringify(inboxExpected)) exact++
    else t.fail(`stream ${l.index} (${l.principal}): ${ids.length} channel notifications for ${expected.length} messages, inbox ${inbox.length} for ${inboxExpected.length}`)
  }
  t.equal(exact, STREAMS, 'every stream: each message exactly once, none lost, none duplicated, and only its own inbox')

  // Replica B dies: its connections are cut with no graceful end, and it answers nothing more.
  b.app.server.closeAllConnections()
  const orphans = listeners.filter((l) => l.index >= STREAMS / 2)
  const endings = await Promise.all(orphans.map(async (l) => await l.closed))
  t.ok(endings.every((e) => e === 'remote'), 'B\'s clients see their streams drop (not a graceful end)')
  await until('replica B to hold no stream', () => b.runtime.listen.size === 0, 10_000)
  await b.close()

  // Messages sent while B's clients are away: they must not lose them.
  const whileAway = await inParallel(30, 10, async (i) => (await callTool(a, sender, 'bus_send', { channel: 'burst', body: `while away ${i}` })).data.id as number)

  // B's clients listen again on A, then catch up from the last id they heard.
  const resumed = await inParallel(orphans.length, 20, async (k) => {
    const old = orphans[k] as Listener
    await old.client.close().catch(() => {})
    const fresh = await listenOn(a, { index: old.index, token: old.token, principal: old.principal, heard: old.heard, recovered: [] })
    let after = Math.max(...channelIds(old))
    for (;;) {
      const [content] = (await fresh.client.readResource({ uri: `bus://channels/burst?after=${after}&limit=7` })).contents
      const page = JSON.parse(content !== undefined && 'text' in content ? content.text : '{}') as { messages: Array<{ id: number }>, next_after: number }
      if (page.messages.length === 0) break
      fresh.recovered.push(...page.messages.map((m) => m.id))
      after = page.next_after
    }
    return fresh
  })
  listeners = [...listeners.filter((l) => l.index < STREAMS / 2), ...resumed]
  t.equal(a.runtime.listen.size, STREAMS, 'every stream is on replica A now')

  const after = await inParallel(20, 10, async (i) => (await callTool(a, sender, 'bus_send', { channel: 'burst', body: `after ${i}` })).data.id as number)
  const everything = [...sent, ...whileAway, ...after].sort((x, y) => x - y)
  const seen = (l: Listener): number[] => [...new Set([...channelIds(l), ...l.recovered])].sort((x, y) => x - y)
  await until('every client to have every message', () => listeners.every((l) => seen(l).length >= everything.length), 30_000)
  let complete = 0
  for (const l of listeners) {
    if (JSON.stringify(seen(l)) === JSON.stringify(everything)) complete++
    else t.fail(`client ${l.index} has ${seen(l).length} of ${everything.length} messages`)
    const afterIds = channelIds(l).filter((id) => after.includes(id))
    if (afterIds.length !== after.length || new Set(afterIds).size !== afterIds.length) t.fail(`client ${l.index} heard ${afterIds.length} notifications for the ${after.length} messages after the resume`)
  }
  t.equal(complete, STREAMS, 'every client has every message: none lost across the replica\'s death')
  const stayed = listeners.filter((l) => l.index < STREAMS / 2)
  t.ok(stayed.every((l) => channelIds(l).filter((id) => whileAway.includes(id)).length === whileAway.length), 'A\'s own clients heard the messages sent while B\'s were away')
})
