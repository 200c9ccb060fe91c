import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { createPostgresDatabase, testDatabaseUrl } from '../helpers/database.ts'
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts'
import { listApiTokens, listPrincipals } from '../../src/principals/store.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef'

interface Run { code: number, stdout: string, stderr: string }

/** Runs the CLI as its own process, as a user would (`bus-mcp …` is `node bin/bus-mcp.js …`, which runs src/cli.ts). */
async function cli (args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const childEnv: Record<string, string | undefined> = { ...process.env, BUS_ADMIN_TOKEN: undefined, BUS_ADMIN_URL: undefined, DATABASE_URL: undefined, DATA_DIR: undefined, ...env }
  for (const key of Object.keys(childEnv)) if (childEnv[key] === undefined) delete childEnv[key]
  return await new Promise((resolve) => {
    execFile(process.execPath, ['bin/bus-mcp.js', ...args], { cwd: ROOT, env: childEnv as NodeJS.ProcessEnv, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1
      resolve({ code, stdout, stderr })
    })
  })
}

/** `--json` output must be exactly one JSON value. */
function json (t: Test, run: Run, what: string): any {
  t.equal(run.code, 0, `${what}: exit 0 ${run.stderr.trim()}`)
  t.equal(run.stdout.trim().split('\n').length, 1, `${what}: one line`)
  try {
    return JSON.parse(run.stdout)
  } catch {
    t.fail(`${what}: stdout is not one JSON value: ${run.stdout.slice(0, 200)}`)
    return undefined
  }
}

async function mcpStatus (server: TestServer, token: string): Promise<{ status: number, principal?: string }> {
  const response = await fetch(`http://127.0.0.1:${server.config.port}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } })
  })
  const body = await response.json() as { result?: { structuredContent?: { principal?: string } } }
  return { status: response.status, principal: body.result?.structuredContent?.principal }
}

t.test('the admin CLI against a running server', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const env = { BUS_ADMIN_URL: server.adminUrl }

  const [alice, bob] = await Promise.all([
    cli(['--json', 'principal', 'add', 'alice'], env),
    cli(['principal', 'add', 'bob', '--scopes', 'bus:read', '--json'], env)
  ])
  t.match(json(t, alice, 'principal add alice'), { name: 'alice', scopes: ['bus:read', 'bus:write'], disabled: false })
  t.match(json(t, bob, 'principal add bob'), { name: 'bob', scopes: ['bus:read'], disabled: false })

  const [list, issued, bobToken, humanList] = await Promise.all([
    cli(['principal', 'list', '--json'], env),
    cli(['token', 'issue', '--principal', 'alice', '--label', 'laptop', '--json'], env),
    cli(['token', 'issue', '--principal', 'bob', '--expires-in', '3600', '--json'], env),
    cli(['principal', 'list'], env)
  ])
  const principals = json(t, list, 'principal list')
  t.same(principals.map((p: { name: string }) => p.name), ['alice', 'bob'])
  const token = json(t, issued, 'token issue')
  t.match(token, { token: /^bus_api_[A-Za-z0-9_-]{43}$/, id: Number, principal: 'alice', label: 'laptop', scopes: ['bus:read', 'bus:write'], expires_at: null, status: 'active' })
  const bobs = json(t, bobToken, 'token issue --expires-in')
  t.match(bobs, { principal: 'bob', scopes: ['bus:read'], expires_at: String })
  const expiresIn = new Date(bobs.expires_at).getTime() - Date.now()
  t.ok(expiresIn > 3500_000 && expiresIn <= 3600_000, 'expires in about an hour')
  t.equal(humanList.code, 0)
  t.match(humanList.stdout, /^NAME\s+SCOPES\s+DISABLED\s+CREATED_AT\n/, 'without --json: a table')
  t.match(humanList.stdout, /alice\s+bus:read bus:write\s+false/)

  t.test('a token issued through the CLI works on /mcp', async (t) => {
    t.same(await mcpStatus(server, token.token), { status: 200, principal: 'alice' })
    t.same(await mcpStatus(server, bobs.token), { status: 200, principal: 'bob' })
  })

  t.test('token list never shows secrets', async (t) => {
    // The token was used on /mcp above; last_used_at is written in batches: write it now.
    await server.runtime.authenticator.flushTouches()
    const alices = await cli(['token', 'list', '--principal', 'alice', '--json'], env)
    const mine = json(t, alices, 'token list --principal')
    t.match(mine, [{ id: token.id, principal: 'alice', label: 'laptop', status: 'active', hint: /^bus_api_.{4}…$/, last_used_at: String }])
    t.equal(mine.length, 1, 'only alice\'s token')
    t.notOk(alices.stdout.includes(token.token.slice(8)), 'no secret in the list')
  })

  t.test('disable and enable a principal: its tokens stop and start working', async (t) => {
    t.match(json(t, await cli(['principal', 'disable', 'bob', '--json'], env), 'principal disable'), { name: 'bob', disabled: true, disabled_at: String })
    t.equal((await mcpStatus(server, bobs.token)).status, 401)
    t.match(json(t, await cli(['principal', 'enable', 'bob', '--json'], env), 'principal enable'), { name: 'bob', disabled: false, disabled_at: null })
    t.equal((await mcpStatus(server, bobs.token)).status, 200)
  })

  t.test('a revoked token stops working', async (t) => {
    const revoked = json(t, await cli(['token', 'revoke', String(token.id), '--json'], env), 'token revoke')
    t.match(revoked, { id: token.id, principal: 'alice', status: 'revoked', revoked_at: String })
    t.notOk('token' in revoked, 'the secret is never shown again')
    t.equal((await mcpStatus(server, token.token)).status, 401)
  })

  t.test('audit tail', async (t) => {
    const [tail, human] = await Promise.all([cli(['audit', 'tail', '--limit', '3', '--json'], env), cli(['audit', 'tail'], env)])
    const entries = json(t, tail, 'audit tail')
    t.equal(entries.length, 3)
    t.match(entries.at(-1), { kind: 'admin', action: 'token.revoke', outcome: 'ok', at: String })
    t.ok(entries.every((e: { at: string }, i: number) => i === 0 || e.at >= entries[i - 1].at), 'oldest first')
    t.equal(human.code, 0)
    t.match(human.stdout, /principal\.add/)
    t.match(human.stdout, /tool\s+whoami\s+ok\s+alice/, 'tool calls are there too')
    t.notOk(human.stdout.includes(token.token), 'no secrets in the audit log')
  })

  t.test('mistakes exit 1 with one clear line on stderr', async (t) => {
    const cases: Array<[string[], RegExp]> = [
      [['principal', 'add', 'bad name!', '--json'], /principal names are 1-64 characters/],
      [['principal', 'add', 'alice'], /principal "alice" already exists/],
      [['principal', 'add', 'carol', '--scopes', 'bus:admin'], /unknown scope "bus:admin"/],
      [['token', 'issue', '--principal', 'bob', '--scopes', 'bus:write'], /does not hold bus:write/],
      [['token', 'revoke', 'abc'], /expected a positive whole number/],
      [['token', 'revoke', '999999'], /API token 999999 does not exist/]
    ]
    const runs = await Promise.all(cases.map(async ([args]) => await cli(args, env)))
    runs.forEach((run, i) => {
      const [args, message] = cases[i] as [string[], RegExp]
      t.equal(run.code, 1, `${args.join(' ')}: exit 1`)
      t.match(run.stderr, message, `${args.join(' ')}: ${run.stderr.trim().split('\n')[0]}`)
      t.equal(run.stdout, '', 'nothing on stdout')
    })
    t.same((await listPrincipals(server.database.db)).map((p) => p.name), ['alice', 'bob'], 'nothing was created')
    t.equal((await listApiTokens(server.database.db)).length, 2, 'no token was issued')
  })

  t.test('an unreachable admin API is a clear error', async (t) => {
    const nobody = `http://127.0.0.1:${await freePort()}`
    const run = await cli(['principal', 'list'], { BUS_ADMIN_URL: nobody })
    t.equal(run.code, 1)
    t.match(run.stderr, /^bus-mcp: cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED.*\); is the server running\?/)
    const flag = await cli(['--admin-url', server.adminUrl, 'principal', 'list', '--json'], { BUS_ADMIN_URL: nobody })
    t.equal(json(t, flag, '--admin-url wins over BUS_ADMIN_URL').length, 2)
  })
})

t.test('with ADMIN_TOKEN set, the CLI needs BUS_ADMIN_TOKEN', async (t) => {
  const server = await startTestServer(t, { listen: true, env: { ADMIN_TOKEN } })
  const [without, wrong, withToken] = await Promise.all([
    cli(['principal', 'list', '--json'], { BUS_ADMIN_URL: server.adminUrl }),
    cli(['principal', 'list', '--json'], { BUS_ADMIN_URL: server.adminUrl, BUS_ADMIN_TOKEN: 'wrong-token-0123456789abcdef0123' }),
    cli(['principal', 'add', 'alice', '--json'], { BUS_ADMIN_URL: server.adminUrl, BUS_ADMIN_TOKEN: ADMIN_TOKEN })
  ])
  t.equal(without.code, 1, 'without BUS_ADMIN_TOKEN: exit 1')
  t.match(without.stderr, /BUS_ADMIN_TOKEN/, 'and the error says what to set')
  t.equal(without.stdout, '')
  t.equal(wrong.code, 1, 'a wrong token: exit 1')
  t.match(wrong.stderr, /ADMIN_TOKEN/)
  t.match(json(t, withToken, 'with BUS_ADMIN_TOKEN'), { name: 'alice' })
  t.same((await listPrincipals(server.database.db)).map((p) => p.name), ['alice'], 'the add happened')
})

// Each run of the suite checks migrate on the database it runs on.
t.test('migrate on a fresh embedded database in DATA_DIR', { skip: testDatabaseUrl !== undefined ? 'TEST_DATABASE_URL is set: checked on PostgreSQL instead' : false }, async (t) => {
  const dataDir = t.testdir()
  const first = json(t, await cli(['migrate', '--json'], { DATA_DIR: dataDir }), 'migrate')
  t.match(first, { applied: Number, total: Number, database: 'pglite' })
  t.ok(first.applied > 0 && first.applied === first.total, `applied all ${first.total} migrations`)
  // (Running it again is checked on PostgreSQL below, and every restart of the embedded server migrates again.)
})

t.test('migrate on a fresh PostgreSQL database', { skip: testDatabaseUrl === undefined ? 'TEST_DATABASE_URL is not set' : false }, async (t) => {
  const url = await createPostgresDatabase(t)
  const first = json(t, await cli(['migrate', '--json'], { DATABASE_URL: url }), 'migrate')
  t.match(first, { applied: Number, total: Number, database: 'postgres' })
  t.ok(first.applied > 0 && first.applied === first.total, `applied all ${first.total} migrations`)
  const again = await cli(['migrate'], { DATABASE_URL: url })
  t.equal(again.code, 0)
  t.equal(again.stdout, `database is up to date (${first.total} migrations)\n`, 'a second run applies nothing')
  const bad = await cli(['migrate'], { DATABASE_URL: 'mysql://nope' })
  t.equal(bad.code, 1)
  t.match(bad.stderr, /^bus-mcp: configuration error: DATABASE_URL: /)
})

t.test('bus-mcp --version prints the package version', async (t) => {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  const run = await cli(['--version'])
  t.equal(run.code, 0)
  t.equal(run.stdout, `${version}\n`)
})
