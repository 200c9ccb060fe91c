import { sql } from 'drizzle-orm'
import t from 'tap'
import { rowsOf } from '../../src/db/client.ts'
import { purgeOnce } from '../../src/operations/maintenance.ts'
import { callTool, principalWithToken, rpc, startTestServer } from '../helpers/server.ts'

t.test('/metrics on the admin listener counts requests, tool calls, messages, OAuth events and long-polls', async (t) => {
  const server = await startTestServer(t)
  const token = await principalWithToken(server, 'alice')
  await callTool(server, token, 'bus_send', { channel: 'ops', body: 'one' })
  await callTool(server, token, 'bus_send', { channel: 'ops', body: 'two' })
  await rpc(server, undefined, 'tools/list')
  await server.app.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['https://claude.ai/api/mcp/auth_callback'] } })

  const response = await server.admin.inject({ method: 'GET', url: '/metrics' })
  t.equal(response.statusCode, 200)
  t.match(response.headers['content-type'], /text\/plain/)
  const text = response.body
  t.match(text, /bus_messages_sent_total 2/)
  t.match(text, /bus_tool_calls_total\{tool="bus_send",outcome="ok",auth="api_token"\} 2/)
  t.match(text, /bus_http_requests_total\{method="POST",route="\/mcp",status="401"\} 1/)
  t.match(text, /bus_http_request_duration_seconds_bucket\{le="[0-9.]+",method="POST",route="\/mcp"\}/)
  t.match(text, /bus_oauth_events_total\{event="register",outcome="ok"\} 1/)
  t.match(text, /bus_long_polls_waiting 0/)
  t.match(text, /bus_process_resident_memory_bytes/)
  t.notMatch(text, /bus_api_|bus_at_|bus_rt_/, 'no secrets in metrics')

  const waiting = callTool(server, token, 'bus_read', { channel: 'ops', after: 2, wait_seconds: 5 })
  let scraped = ''
  for (let i = 0; i < 40 && !/bus_long_polls_waiting 1/.test(scraped); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    scraped = (await server.admin.inject({ method: 'GET', url: '/metrics' })).body
  }
  t.match(scraped, /bus_long_polls_waiting 1/)
  await callTool(server, token, 'bus_send', { channel: 'ops', body: 'wake' })
  t.equal((await waiting).data.messages[0].body, 'wake')
})

t.test('/metrics needs ADMIN_TOKEN like the rest of the admin API', async (t) => {
  const server = await startTestServer(t, { env: { ADMIN_TOKEN: 'a-long-admin-token-for-tests' } })
  t.equal((await server.admin.inject({ method: 'GET', url: '/metrics' })).statusCode, 401)
  t.equal((await server.admin.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer a-long-admin-token-for-tests' } })).statusCode, 200)
})

t.test('purge removes expired OAuth data, stale registrations and old rows, and keeps the rest', async (t) => {
  const server = await startTestServer(t, { env: { AUTO_APPROVE_PRINCIPAL: 'alice', MESSAGE_RETENTION_DAYS: '7', AUDIT_RETENTION_DAYS: '30' } })
  const token = await principalWithToken(server, 'alice')
  const db = server.database.db
  const count = async (table: string): Promise<number> => Number(rowsOf<{ n: number }>(await db.execute(sql.raw(`select count(*)::int as n from ${table}`)))[0]?.n)

  for (const body of ['old', 'new']) await callTool(server, token, 'bus_send', { channel: 'c', body })
  await db.execute(sql`update messages set created_at = now() - interval '8 days' where body = 'old'`)
  await server.runtime.audit.flush()
  await db.execute(sql`update audit_log set at = now() - interval '31 days' where id = (select min(id) from audit_log)`)

  // A registration that never completed a flow, one that did, and an expired code and token.
  const register = async (): Promise<string> => (await server.app.inject({ method: 'POST', url: '/oauth/register', payload: { redirect_uris: ['http://localhost/cb'], token_endpoint_auth_method: 'none' } })).json().client_id
  const abandoned = await register()
  const used = await register()
  await db.execute(sql`update oauth_clients set created_at = now() - interval '2 days'`)
  const clientRow = rowsOf<{ id: number }>(await db.execute(sql`select id from oauth_clients where client_id = ${used}`))[0]?.id
  const principalId = rowsOf<{ id: number }>(await db.execute(sql`select id from principals where name = 'alice'`))[0]?.id
  await db.execute(sql`insert into oauth_grants (client_id, principal_id, scopes, resource) values (${clientRow}, ${principalId}, '{bus:read}', 'x')`)
  const grantId = rowsOf<{ id: number }>(await db.execute(sql`select max(id) as id from oauth_grants`))[0]?.id
  await db.execute(sql`insert into oauth_tokens (token_hash, kind, grant_id, scopes, resource, expires_at) values ('\\x01', 'access', ${grantId}, '{bus:read}', 'x', now() - interval '2 days'), ('\\x02', 'refresh', ${grantId}, '{bus:read}', 'x', now() + interval '1 day')`)
  await db.execute(sql`insert into oauth_codes (code_hash, grant_id, redirect_uri, code_challenge, expires_at) values ('\\x03', ${grantId}, 'x', 'y', now() - interval '2 days')`)

  const counts = await purgeOnce(db, server.config)
  t.ok(counts)
  t.equal(counts?.messages, 1)
  t.equal(counts?.audit_log, 1)
  t.equal(counts?.oauth_tokens, 1, 'the expired access token; the live refresh token stays')
  t.equal(counts?.oauth_codes, 1)
  t.equal(counts?.oauth_clients, 1, 'the registration that never completed a flow')
  t.equal(await count('oauth_grants'), 1, 'the grant with a live refresh token stays')
  const clients = rowsOf<{ client_id: string }>(await db.execute(sql`select client_id from oauth_clients`)).map((r) => r.client_id)
  t.same(clients, [used])
  t.notOk(clients.includes(abandoned))
  const read = await callTool(server, token, 'bus_read', { channel: 'c' })
  t.same(read.data.messages.map((m: { body: string }) => m.body), ['new'])
  const channels = await callTool(server, token, 'bus_channels')
  t.equal(channels.data.channels[0].messages, 1, 'channel counts follow the purge')
})

t.test('retention 0 keeps messages and audit rows forever', async (t) => {
  const server = await startTestServer(t, { env: { MESSAGE_RETENTION_DAYS: '0', AUDIT_RETENTION_DAYS: '0' } })
  const token = await principalWithToken(server, 'bob')
  await callTool(server, token, 'bus_send', { channel: 'c', body: 'ancient' })
  await server.database.db.execute(sql`update messages set created_at = now() - interval '3650 days'`)
  const counts = await purgeOnce(server.database.db, server.config)
  t.equal(counts?.messages, 0)
  t.equal(counts?.audit_log, 0)
})
