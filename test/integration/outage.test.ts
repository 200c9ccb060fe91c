import { sql } from 'drizzle-orm'
import t from 'tap'
import { openDatabase, rowsOf } from '../../src/db/client.ts'
import { migrate } from '../../src/db/migrate.ts'
import { createPostgresDatabase } from '../helpers/database.ts'
import { callTool, principalWithToken, rpc, startTestServer } from '../helpers/server.ts'
import { CuttableProxy } from '../helpers/tcp-proxy.ts'
import { postgres, testNeeding } from '../helpers/requirements.ts'

async function until<T> (what: string, check: () => Promise<T | undefined>, ms: number): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

testNeeding(t, 'the database going away: /readyz and /mcp answer 503, the server keeps serving and recovers by itself', [postgres()], async (t) => {
  const realUrl = await createPostgresDatabase(t)
  const real = new URL(realUrl)
  const proxy = new CuttableProxy({ host: real.hostname, port: Number(real.port === '' ? 5432 : real.port) })
  await proxy.start()
  t.teardown(async () => { await proxy.cut() })
  const proxied = new URL(realUrl)
  proxied.hostname = '127.0.0.1'
  proxied.port = String(proxy.port)
  const databaseUrl = proxied.toString()

  const database = await openDatabase({ databaseUrl, dataDir: '', poolSize: 5 })
  t.teardown(async () => { await database.close().catch(() => {}) })
  await migrate(database, databaseUrl)
  const server = await startTestServer(t, { database, databaseUrl })
  const alice = await principalWithToken(server, 'alice')
  const bob = await principalWithToken(server, 'bob')
  const late = await principalWithToken(server, 'late') // never used before the outage: not cached

  // Up.
  t.equal((await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
  t.equal((await callTool(server, alice, 'bus_send', { channel: 'general', body: 'before' })).isError, false)
  t.equal((await callTool(server, bob, 'bus_read', { channel: 'general' })).data.messages.length, 1)

  // Down, with a long-poll in flight.
  const latest = (await callTool(server, bob, 'bus_read', { channel: 'general' })).data.next_after as number
  const inFlight = rpc(server, bob, 'tools/call', { name: 'bus_read', arguments: { channel: 'general', after: latest, wait_seconds: 2 } })
  await until('the long-poll to wait', async () => server.runtime.bus.waiters.size === 1 ? true : undefined, 5000)
  const cutAt = Date.now()
  await proxy.cut()
  const interrupted = await inFlight
  t.equal(interrupted.status, 503, 'the long-poll in flight ends with 503 when it looks again')
  t.ok(Date.now() - cutAt < 5000, `and does not hang (${Date.now() - cutAt} ms)`)
  t.equal(server.runtime.bus.waiters.size, 0, 'no waiter left behind')
  const readyz = await server.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(readyz.statusCode, 503, '/readyz fails')
  t.match(readyz.json(), { status: 'unavailable', database: 'unreachable' })

  const send = await rpc(server, alice, 'tools/call', { name: 'bus_send', arguments: { channel: 'general', body: 'during' } })
  t.equal(send.status, 503, 'a tool call that needs the database is 503')
  t.equal(send.headers['retry-after'], '5', 'with Retry-After')
  t.match(send.body, { jsonrpc: '2.0', id: Number, error: { code: -32050, message: 'The bus database is unavailable; try again shortly' } })
  const read = await rpc(server, bob, 'tools/call', { name: 'bus_read', arguments: { channel: 'general' } })
  t.equal(read.status, 503)
  t.equal(read.headers['retry-after'], '5')

  const uncached = await rpc(server, late, 'tools/call', { name: 'whoami', arguments: {} })
  t.equal(uncached.status, 503, 'a token that must be looked up is 503, not 401')
  t.equal(uncached.headers['retry-after'], '5')
  t.notOk(uncached.headers['www-authenticate'], 'no challenge: the token is not known to be bad')
  t.match(uncached.body, { jsonrpc: '2.0', error: { message: /database is unavailable/ } })

  // What needs no database still works.
  t.equal((await server.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, '/healthz still answers')
  t.equal((await rpc(server, alice, 'tools/list')).status, 200, 'tools/list with a known token')
  t.match((await callTool(server, alice, 'whoami')).data, { principal: 'alice' })
  t.equal((await rpc(server, undefined, 'tools/list')).status, 401, 'and unauthenticated calls are still challenged')

  // Back up: no restart.
  await proxy.restore()
  const recovered = Date.now()
  await until('/readyz to pass', async () => (await server.app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 ? true : undefined, 20_000)
  t.pass(`/readyz passed ${Date.now() - recovered} ms after the database came back`)
  const after = await until('a send to succeed', async () => {
    const response = await rpc(server, alice, 'tools/call', { name: 'bus_send', arguments: { channel: 'general', body: 'after' } })
    return response.status === 200 ? response : undefined
  }, 20_000)
  t.equal(after.body.result.isError, undefined)
  t.match((await callTool(server, late, 'whoami')).data, { principal: 'late' }, 'the uncached token works now')
  const messages = (await callTool(server, bob, 'bus_read', { channel: 'general' })).data.messages as Array<{ body: string }>
  t.same(messages.map((m) => m.body), ['before', 'after'], 'nothing half-written during the outage')

  // Long-polls wake again: the LISTEN connection came back by itself. A poll that only ends when
  // its wait runs out finds the message too, so "woken" means: well before its wait ended (half
  // of it), which a loaded machine still meets and a dead LISTEN connection never does.
  const WAIT_SECONDS = 6
  const woke = await until('a long-poll to wake on a send', async () => {
    const latest = (await callTool(server, bob, 'bus_read', { channel: 'general', after: 0, limit: 500 })).data.next_after as number
    const started = Date.now()
    const polling = callTool(server, bob, 'bus_read', { channel: 'general', after: latest, wait_seconds: WAIT_SECONDS })
    await until('the long-poll to wait', async () => server.runtime.bus.waiters.size === 1 ? true : undefined, 10_000)
    const sentAt = Date.now()
    await callTool(server, alice, 'bus_send', { channel: 'general', body: 'wake' })
    const result = await polling
    const tookMs = Date.now() - sentAt
    return result.data.messages.length > 0 && tookMs < WAIT_SECONDS * 1000 / 2 && result.data.waited_ms < WAIT_SECONDS * 1000 / 2 ? Date.now() - started : undefined
  }, 45_000)
  t.pass(`a long-poll woke ${woke} ms after it began`)

  // Audit rows recorded while the database was down were kept and written afterwards.
  await server.runtime.audit.flush()
  const rows = rowsOf<{ action: string, outcome: string, detail: string | null }>(await database.db.execute(
    sql`select action, outcome, detail from audit_log where kind = 'tool' and detail = 'unavailable' order by id`))
  t.same(rows.map((r) => [r.action, r.outcome]), [['bus_read', 'error'], ['bus_send', 'error'], ['bus_read', 'error']], 'the failed calls are in the audit log')
})
