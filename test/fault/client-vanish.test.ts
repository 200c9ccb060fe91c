import { connect, type Socket } from 'node:net'
import { sql } from 'drizzle-orm'
import t from 'tap'
import { rowsOf } from '../../src/db/client.ts'
import { callTool, principalWithToken, startTestServer, type TestServer } from '../helpers/server.ts'

/**
 * Clients vanishing mid long-poll (issue 5, item 3), over a real port: 50 clients start a
 * bus_read with wait_seconds 10 and go away while it waits — half abort their fetch, half
 * destroy the TCP socket under a hand-written request. Afterwards no waiter, no in-flight MCP
 * request, no extra PostgreSQL connection (LISTEN or pool) and no extra handle is left behind.
 */

const CLIENTS = 50
const BATCH = 10
/** The long-polls' own wait: a waiter released before it ends was released by the vanishing client. */
const WAIT_SECONDS = 10

async function until (what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const started = Date.now()
  while (!await condition()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return Date.now() - started
}

function readBody (channel: string, after: number): string {
  return JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'bus_read', arguments: { channel, after, wait_seconds: WAIT_SECONDS } } })
}

/** A long-poll by fetch, aborted by the caller. Resolves when the fetch has settled. */
function fetchLongPoll (server: TestServer, token: string, channel: string, after: number): { abort: () => void, settled: Promise<unknown> } {
  const controller = new AbortController()
  const settled = fetch(`${server.baseUrl}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
    body: readBody(channel, after),
    signal: controller.signal
  }).then(async (response) => await response.text()).catch((err: Error) => err)
  return { abort: () => { controller.abort() }, settled }
}

/** A long-poll written by hand on a raw socket, which the caller destroys. */
function socketLongPoll (server: TestServer, token: string, channel: string, after: number): { abort: () => void, settled: Promise<unknown> } {
  const url = new URL(server.baseUrl)
  const socket: Socket = connect(Number(url.port), '127.0.0.1')
  const body = readBody(channel, after)
  socket.on('connect', () => {
    socket.write(`POST /mcp HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nAccept: application/json\r\n` +
      `Authorization: Bearer ${token}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
  })
  socket.on('error', () => {})
  const settled = new Promise((resolve) => socket.once('close', resolve))
  return { abort: () => { socket.destroy() }, settled }
}

/** Handles of this process by type (sockets, timers…), as Node reports them. */
function handleCounts (): Map<string, number> {
  const counts = new Map<string, number>()
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1)
  return counts
}

/** The bounds the test asserts after the clients vanished (see the assertions below). */
function within (after: Map<string, number>, before: Map<string, number>): boolean {
  return total(after) <= total(before) + 2 &&
    (after.get('Timeout') ?? 0) <= (before.get('Timeout') ?? 0) + 1 &&
    (after.get('TCPSocketWrap') ?? 0) <= (before.get('TCPSocketWrap') ?? 0) + 1
}

/** The handle counts once they stop changing (the same for 200 ms; at most 10 s). */
async function settledHandles (): Promise<Map<string, number>> {
  const deadline = Date.now() + 10_000
  let previous = handleCounts()
  let stableSince = Date.now()
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    const counts = handleCounts()
    const same = counts.size === previous.size && [...counts].every(([k, v]) => previous.get(k) === v)
    if (!same) stableSince = Date.now()
    previous = counts
    if (Date.now() - stableSince >= 200 || Date.now() > deadline) return counts
  }
}

/** The handle counts as soon as `ok` holds for them, or after 10 s (for the assertions to judge). */
async function handlesOnceOk (ok: (counts: Map<string, number>) => boolean): Promise<Map<string, number>> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const counts = handleCounts()
    if (ok(counts) || Date.now() > deadline) return counts
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function total (counts: Map<string, number>): number {
  let n = 0
  for (const v of counts.values()) n += v
  return n
}

async function connectionsOf (server: TestServer): Promise<{ all: number, listening: number } | undefined> {
  if (server.database.kind !== 'postgres') return undefined
  const [row] = rowsOf<{ all: string | number, listening: string | number }>(await server.database.db.execute(sql`
    select count(*) as all, count(*) filter (where query ilike 'listen%') as listening
    from pg_stat_activity
    where datname = current_database() and application_name = 'bus-mcp' and pid <> pg_backend_pid()`))
  return { all: Number(row?.all ?? 0), listening: Number(row?.listening ?? 0) }
}

t.test('50 clients vanishing mid long-poll leave nothing behind', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const token = await principalWithToken(server, 'poller')
  const sent = await callTool(server, token, 'bus_send', { channel: 'quiet', body: 'the only message' })
  const after = sent.data.id as number

  // Warm up with as many long-polls as a batch, answered normally: the pool, the keep-alive
  // agent and lazily created timers reach their working size before the baseline.
  const warm = Array.from({ length: BATCH }, () => fetchLongPoll(server, token, 'quiet', after))
  await until('the warm-up long-polls to wait', () => server.runtime.bus.waiters.size === BATCH)
  await callTool(server, token, 'bus_send', { channel: 'quiet', body: 'wake up' })
  await Promise.all(warm.map(async (w) => await w.settled))
  const latest = (await callTool(server, token, 'bus_read', { channel: 'quiet', after })).data.next_after as number
  // The baseline once the warm-up has settled (its sockets closed, its timers cleared): the handle
  // counts stop changing. Waited for, not slept on.
  const handlesBefore = await settledHandles()
  const connectionsBefore = await connectionsOf(server)
  t.equal(server.runtime.bus.waiters.size, 0, 'no waiter before')

  let slowest = 0
  for (let started = 0; started < CLIENTS; started += BATCH) {
    const polls = Array.from({ length: BATCH }, (_, i) => (started + i) % 2 === 0
      ? fetchLongPoll(server, token, 'quiet', latest)
      : socketLongPoll(server, token, 'quiet', latest))
    await until(`batch ${started / BATCH + 1} to be waiting`, () => server.runtime.bus.waiters.size === BATCH)
    for (const poll of polls) poll.abort()
    await Promise.all(polls.map(async (p) => await p.settled))
    // Released by the vanishing client, so long before the long-poll's own wait would end it.
    slowest = Math.max(slowest, await until('the waiters to go', () => server.runtime.bus.waiters.size === 0, WAIT_SECONDS * 1000 / 2))
    await until(`batch ${started / BATCH + 1}: no MCP request left in flight`, () => server.runtime.mcp.inFlight === 0, WAIT_SECONDS * 1000 / 2)
  }
  t.ok(slowest < WAIT_SECONDS * 1000 / 2, `waiters released within ${slowest} ms of the clients vanishing (their own wait is ${WAIT_SECONDS} s)`)

  // Everything settles: server-side sockets close, timers are cleared. Waited for (up to 10 s),
  // then compared; a handle that never goes away fails below, naming its type.
  const handlesAfter = await handlesOnceOk((counts) => within(counts, handlesBefore))
  const describe = (counts: Map<string, number>): string => [...counts].map(([k, v]) => `${k}=${v}`).sort().join(' ')
  t.ok(total(handlesAfter) <= total(handlesBefore) + 2, `handles stable: before ${describe(handlesBefore)}; after ${describe(handlesAfter)}`)
  t.ok((handlesAfter.get('Timeout') ?? 0) <= (handlesBefore.get('Timeout') ?? 0) + 1, 'no timer left behind by a vanished long-poll')
  t.ok((handlesAfter.get('TCPSocketWrap') ?? 0) <= (handlesBefore.get('TCPSocketWrap') ?? 0) + 1, 'no socket left behind')

  const connectionsAfter = await connectionsOf(server)
  if (connectionsBefore === undefined || connectionsAfter === undefined) {
    t.comment('embedded database: no PostgreSQL connections to count')
  } else {
    t.equal(connectionsAfter.listening, connectionsBefore.listening, `LISTEN connections stable (${connectionsBefore.listening} → ${connectionsAfter.listening})`)
    t.ok(connectionsAfter.all <= connectionsBefore.all, `connections stable (${connectionsBefore.all} → ${connectionsAfter.all})`)
  }

  // The bus still wakes a long-poll at once.
  const waiting = callTool(server, token, 'bus_read', { channel: 'quiet', after: latest, wait_seconds: WAIT_SECONDS })
  await until('a fresh long-poll to wait', () => server.runtime.bus.waiters.size === 1)
  const sentAt = Date.now()
  await callTool(server, token, 'bus_send', { channel: 'quiet', body: 'still listening' })
  const woke = await waiting
  t.equal(woke.data.messages[0]?.body, 'still listening', `a later long-poll is woken (${Date.now() - sentAt} ms after the send)`)
  t.equal(server.runtime.bus.waiters.size, 0)
})
