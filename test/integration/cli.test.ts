import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { createPostgresDatabase } from '../helpers/database.ts'
import { freePort, startTestServer, type TestServer } from '../helpers/server.ts'
import { listApiTokens, listPrincipals } from '../../src/principals/store.ts'
import { embeddedPass, postgres, testNeeding } from '../helpers/requirements.ts'
import { cliProcess, startCliHost, type Run } from '../helpers/cli.ts'

const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef'

/**
 * Most commands run in one long-lived CLI host (src/cli.ts evaluated afresh per command, with its
 * own argv, environment, stdout, stderr and exit code): a process per command made this the
 * slowest file. The real entry, `node bin/bus-mcp.js` as its own process, is run at the end, and
 * checked to answer exactly as the host does.
 */
const cli = await startCliHost(t)

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
      [['token', 'issue', '--principal', 'NOPE'], /principal "NOPE" does not exist/],
      [['token', 'revoke', '999999'], /API token 999999 does not exist/],
      [['grant', 'revoke', '999999'], /grant 999999 does not exist/],
      // The admin API answers an empty list for a filter naming nobody; the CLI says so.
      [['token', 'list', '--principal', 'NOPE'], /^bus-mcp: principal "NOPE" does not exist \(see "bus-mcp principal list"\)\n$/],
      [['grant', 'list', '--principal', 'NOPE', '--json'], /^bus-mcp: principal "NOPE" does not exist/],
      [['grant', 'list', '--client', 'NOPE'], /^bus-mcp: client "NOPE" does not exist \(see "bus-mcp client list"\)\n$/]
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

  t.test('the bounds the CLI checks are the admin API\'s own', async (t) => {
    const [limit, expires] = await Promise.all([
      cli(['audit', 'tail', '--limit', '10000', '--json'], env),
      cli(['token', 'issue', '--principal', 'alice', '--expires-in', '315360000', '--json'], env)
    ])
    t.ok(Array.isArray(json(t, limit, 'audit tail --limit 10000')), 'the largest --limit is accepted')
    t.match(json(t, expires, 'token issue --expires-in 315360000'), { expires_at: String }, 'the longest --expires-in is accepted')
  })

  t.test('pointed at the public port, the CLI says so and where the admin API is', async (t) => {
    const publicUrl = `http://127.0.0.1:${server.config.port}`
    const cases: Array<[string, string[]]> = [
      [publicUrl, ['principal', 'list']],
      [`${publicUrl}/`, ['token', 'issue', '--principal', 'alice']]
    ]
    const runs = await Promise.all(cases.map(async ([url, args]) => await cli(['--admin-url', url, ...args])))
    runs.forEach((run, i) => {
      const [url, args] = cases[i] as [string, string[]]
      t.equal(run.code, 1, `${args.join(' ')}: exit 1`)
      t.equal(run.stdout, '')
      t.equal(run.stderr, `bus-mcp: ${url} is the bus's public port (the server of ${server.config.publicUrl}), not its admin API; ` +
        'the admin API listens on ADMIN_HOST:ADMIN_PORT (default http://127.0.0.1:8089): set --admin-url or BUS_ADMIN_URL to it\n')
    })
    const other = createServer((_request, response) => { response.statusCode = 404; response.end('<html>Not Found</html>') })
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { other.close() })
    const otherUrl = `http://127.0.0.1:${(other.address() as AddressInfo).port}`
    const elsewhere = await cli(['principal', 'list'], { BUS_ADMIN_URL: otherUrl })
    t.equal(elsewhere.code, 1)
    t.equal(elsewhere.stderr, `bus-mcp: ${otherUrl} answered GET /principals with HTTP 404 and a body that is not JSON: it is not a bus-mcp admin API; ` +
      'the admin API listens on ADMIN_HOST:ADMIN_PORT (default http://127.0.0.1:8089): set --admin-url or BUS_ADMIN_URL to it\n', 'another web server')
  })

  t.test('an unreachable admin API is a clear error', async (t) => {
    const nobody = `http://127.0.0.1:${await freePort()}`
    const run = await cli(['principal', 'list'], { BUS_ADMIN_URL: nobody })
    t.equal(run.code, 1)
    t.match(run.stderr, /^bus-mcp: cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED.*\); is the server running\?/)
    const flag = await cli(['--admin-url', server.adminUrl, 'principal', 'list', '--json'], { BUS_ADMIN_URL: nobody })
    t.equal(json(t, flag, '--admin-url wins over BUS_ADMIN_URL').length, 2)
  })

  t.test('a principal with no tokens or grants lists none', async (t) => {
    json(t, await cli(['principal', 'add', 'dave', '--json'], env), 'principal add dave')
    const [tokens, grants] = await Promise.all([cli(['token', 'list', '--principal', 'dave'], env), cli(['grant', 'list', '--principal', 'dave', '--json'], env)])
    t.same({ code: tokens.code, stdout: tokens.stdout }, { code: 0, stdout: '(none)\n' })
    t.same(json(t, grants, 'grant list --principal dave'), [])
  })

  t.test('the real entry (node bin/bus-mcp.js, a process per command) answers exactly as the CLI host does', async (t) => {
    const nobody = `http://127.0.0.1:${await freePort()}`
    const cases: Array<[string[], Record<string, string>]> = [
      [['--help'], {}],
      [[], {}], // the usage on stderr, exit 2
      [['audit', 'tail', '--limit', '20000'], {}], // a value commander refuses, exit 2
      [['principal', 'list', '--json'], env],
      [['principal', 'add', 'alice'], env], // refused by the server, exit 1
      [['principal', 'list'], { BUS_ADMIN_URL: nobody }] // unreachable, exit 1
    ]
    const inHost: Run[] = []
    for (const [args, env] of cases) inHost.push(await cli(args, env))
    const asProcess = await Promise.all(cases.map(async ([args, env]) => await cliProcess(args, env)))
    cases.forEach(([args], i) => {
      t.same(inHost[i], asProcess[i], `bus-mcp ${args.join(' ')}: exit ${asProcess[i]?.code}, the same stdout and stderr`)
    })
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
testNeeding(t, 'migrate on a fresh embedded database in DATA_DIR', [embeddedPass()], async (t) => {
  const dataDir = t.testdir()
  const first = json(t, await cli(['migrate', '--json'], { DATA_DIR: dataDir }), 'migrate')
  t.match(first, { applied: Number, total: Number, database: 'pglite' })
  t.ok(first.applied > 0 && first.applied === first.total, `applied all ${first.total} migrations`)
  // (Running it again is checked on PostgreSQL below, and every restart of the embedded server migrates again.)
})

testNeeding(t, 'migrate on a fresh PostgreSQL database', [postgres()], async (t) => {
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

t.test('a wrong command line: one line naming the mistake and the --help to read, exit 2, nothing sent', async (t) => {
  // Nothing listens here: a usage error must be caught before any request.
  const env = { BUS_ADMIN_URL: `http://127.0.0.1:${await freePort()}` }
  const cases: Array<[string[], string]> = [
    [['--frob'], 'unknown option \'--frob\'; see "bus-mcp --help"'],
    [['--jsn', 'principal', 'list'], 'unknown option \'--jsn\' (Did you mean --json?); see "bus-mcp --help"'],
    [['frob'], 'unknown command \'frob\'; see "bus-mcp --help"'],
    [['principal', 'add'], 'missing required argument \'name\'; see "bus-mcp principal add --help"'],
    [['principal', 'list', 'extra'], 'too many arguments for \'list\'. Expected 0 arguments but got 1; see "bus-mcp principal list --help"'],
    [['token', 'issue'], 'required option \'--principal <name>\' not specified; see "bus-mcp token issue --help"'],
    [['token', 'issue', '--principal', 'alice', '--expires-in', '315360001'], '--expires-in must be a whole number from 60 to 315360000 (got "315360001"); see "bus-mcp token issue --help"'],
    [['token', 'revoke', 'abc'], 'token revoke wants the token\'s numeric id (the ID column of "bus-mcp token list"), not "abc"; see "bus-mcp token revoke --help"'],
    [['token', 'revoke', `bus_api_${'x'.repeat(43)}`], 'token revoke wants the token\'s numeric id (the ID column of "bus-mcp token list"), not the token itself; see "bus-mcp token revoke --help"'],
    [['grant', 'revoke', '0'], 'grant revoke wants the grant\'s numeric id (the ID column of "bus-mcp grant list"), not "0"; see "bus-mcp grant revoke --help"'],
    [['audit', 'tail', '--limit', '20000'], '--limit must be a whole number from 1 to 10000 (got "20000"); see "bus-mcp audit tail --help"'],
    [['audit', 'tail', '--limit'], 'option \'--limit <n>\' argument missing; see "bus-mcp audit tail --help"'],
    [['--admin-url', 'localhost:8089', 'principal', 'list'], '--admin-url / BUS_ADMIN_URL must be an http:// or https:// URL such as http://127.0.0.1:8089, not "localhost:8089"; see "bus-mcp --help"']
  ]
  const runs = await Promise.all(cases.map(async ([args]) => await cli(args, env)))
  runs.forEach((run, i) => {
    const [args, message] = cases[i] as [string[], string]
    t.equal(run.code, 2, `${args.join(' ')}: exit 2`)
    t.equal(run.stderr, `bus-mcp: ${message}\n`, `${args.join(' ')}: one line`)
    t.equal(run.stdout, '', `${args.join(' ')}: nothing on stdout`)
  })
  t.notOk(runs[8]?.stderr.includes('x'.repeat(43)), 'a pasted token is not echoed')

  const [bare, group] = await Promise.all([cli([], env), cli(['token'], env)])
  t.equal(bare.code, 2, 'no command: exit 2')
  t.match(bare.stderr, /^Usage: bus-mcp \[options\] \[command\]/, 'and the usage, on stderr')
  t.equal(group.code, 2, 'a command group without its subcommand: exit 2')
  t.match(group.stderr, /^Usage: bus-mcp token \[options\] \[command\]/)
})

t.test('--help names the environment the CLI reads', async (t) => {
  const run = await cli(['--help'])
  t.equal(run.code, 0)
  t.equal(run.stderr, '')
  t.match(run.stdout, /^Usage: bus-mcp /)
  t.match(run.stdout, /^ {2}BUS_ADMIN_URL +admin API address/m)
  t.match(run.stdout, /^ {2}BUS_ADMIN_TOKEN +the server's ADMIN_TOKEN/m)
  t.match(run.stdout, /exit code is 1, or 2 when the command\s+line is wrong/)
  const sub = await cli(['token', 'revoke', '--help'])
  t.equal(sub.code, 0)
  t.match(sub.stdout, /id +the token's numeric id, as "bus-mcp token list" shows it/)
})

t.test('bus-mcp --version prints the package version (node bin/bus-mcp.js, its own process)', async (t) => {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  const run = await cliProcess(['--version'])
  t.equal(run.code, 0)
  t.equal(run.stdout, `${version}\n`)
})
