import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import t, { type Test } from 'tap'
import { buildAdminApp } from '../../src/admin/app.ts'
import { buildApp } from '../../src/app.ts'
import { loadConfig } from '../../src/config.ts'
import { startRuntime, type Runtime } from '../../src/runtime.ts'
import { createEmbeddedDataDir, createPostgresDatabase } from '../helpers/database.ts'
import { callTool, type TestServer } from '../helpers/server.ts'
import { postgres, testNeeding } from '../helpers/requirements.ts'

interface Booted { app: FastifyInstance, admin: FastifyInstance, runtime: Runtime, close: () => Promise<void> }

/**
 * The production start path (config → runtime opening its own database → both apps), as
 * server.ts does it, without listening: the database is opened from DATA_DIR or DATABASE_URL.
 */
async function boot (env: Record<string, string>): Promise<Booted> {
  const config = loadConfig({ LOG_LEVEL: 'silent', ...env })
  const runtime = await startRuntime(config, pino({ level: 'silent' }), { maintenance: false })
  const app = await buildApp(runtime)
  const admin = await buildAdminApp(runtime)
  await Promise.all([app.ready(), admin.ready()])
  return {
    app,
    admin,
    runtime,
    async close () {
      runtime.release()
      await Promise.all([app.close(), admin.close()])
      await runtime.close()
    }
  }
}

const asServer = (booted: Booted): TestServer => ({ app: booted.app }) as unknown as TestServer

async function adminPost (booted: Booted, url: string, payload?: object): Promise<any> {
  const response = await booted.admin.inject({ method: 'POST', url, ...(payload === undefined ? {} : { payload }) })
  if (response.statusCode >= 300) throw new Error(`${url}: ${response.statusCode} ${response.body}`)
  return response.json()
}

async function survivesRestart (t: Test, env: Record<string, string>): Promise<void> {
  // First life: principals and tokens through the admin API, messages and cursors through /mcp.
  const first = await boot(env)
  let closed = false
  t.teardown(async () => { if (!closed) await first.close() })
  await adminPost(first, '/principals', { name: 'alice' })
  await adminPost(first, '/principals', { name: 'bob' })
  const alice = (await adminPost(first, '/tokens', { principal: 'alice' })).token as string
  const bob = (await adminPost(first, '/tokens', { principal: 'bob', scopes: 'bus:read bus:write' })).token as string
  const doomed = await adminPost(first, '/tokens', { principal: 'bob' })
  await adminPost(first, `/tokens/${doomed.id as number}/revoke`)

  const one = await callTool(asServer(first), alice, 'bus_send', { channel: 'general', body: 'before the restart', metadata: { n: 1 } })
  const two = await callTool(asServer(first), alice, 'bus_send', { channel: 'general', body: 'second' })
  const dm = await callTool(asServer(first), alice, 'bus_send', { to: 'bob', body: 'a direct message' })
  t.equal(one.isError || two.isError || dm.isError, false)
  await callTool(asServer(first), bob, 'bus_ack', { channel: 'general', up_to: one.data.id })
  await first.close()
  closed = true

  // Second life on the same database.
  const second = await boot(env)
  t.teardown(async () => { await second.close() })
  const whoami = await callTool(asServer(second), bob, 'whoami')
  t.match(whoami.data, { principal: 'bob', auth: 'api_token' }, 'the token still works')
  const read = await callTool(asServer(second), bob, 'bus_read', { channel: 'general' })
  t.equal(read.data.cursor, one.data.id, 'the cursor survived')
  t.match(read.data.messages, [{ id: two.data.id, body: 'second', from: 'alice' }], 'messages after the cursor')
  const all = await callTool(asServer(second), alice, 'bus_read', { channel: 'general' })
  t.match(all.data.messages, [{ id: one.data.id, body: 'before the restart', metadata: { n: 1 } }, { id: two.data.id }], 'every message survived')
  const inbox = await callTool(asServer(second), bob, 'bus_read')
  t.match(inbox.data.messages, [{ id: dm.data.id, body: 'a direct message', from: 'alice', to: 'bob' }], 'direct messages too')
  t.match((await callTool(asServer(second), bob, 'bus_channels')).data.channels, [{ name: 'general', messages: 2, unread: 1 }])

  const revoked = await second.app.inject({
    method: 'POST',
    url: '/mcp',
    headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${doomed.token as string}` },
    payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' }
  })
  t.equal(revoked.statusCode, 401, 'a revoked token stays revoked')

  const next = await callTool(asServer(second), alice, 'bus_send', { channel: 'general', body: 'after the restart' })
  t.ok(next.data.id > dm.data.id, `message ids keep increasing (${next.data.id as number} > ${dm.data.id as number})`)
  const tokens = (await second.admin.inject({ method: 'GET', url: '/tokens' })).json().tokens as Array<{ principal: string, status: string, last_used_at: string | null }>
  t.equal(tokens.length, 3, 'the token list survived')
  await second.runtime.audit.flush()
  const audit = (await second.admin.inject({ method: 'GET', url: '/audit?limit=100' })).json().entries as Array<{ action: string }>
  t.ok(audit.some((e) => e.action === 'token.revoke'), 'audit rows from the first life are there')
}

t.test('embedded database: messages and tokens survive a stop/start in DATA_DIR', async (t) => {
  const dataDir = t.testdir()
  // Pre-migrated files instead of PGlite's initdb (seconds of CPU): the server reopens them all the same.
  await createEmbeddedDataDir(dataDir)
  await survivesRestart(t, { DATA_DIR: dataDir })
})

testNeeding(t, 'PostgreSQL: messages and tokens survive a stop/start', [postgres()], async (t) => {
  await survivesRestart(t, { DATABASE_URL: await createPostgresDatabase(t) })
})
