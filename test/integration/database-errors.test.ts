import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { testDatabaseUrl } from '../helpers/database.ts'
import { freePort } from '../helpers/server.ts'
import { DatabaseNoAnswerError, databaseTarget, describeDatabaseError } from '../../src/db/errors.ts'

/**
 * A DATABASE_URL that cannot be used stops the server's start and `bus-mcp migrate` with exit 1
 * and one line saying why and what to do, never a stack trace and never the password. Each case
 * runs both as child processes. With TEST_DATABASE_URL set, the missing database and the unknown
 * role are asked of that real PostgreSQL server; without it (and always for a wrong password,
 * which a trust-authenticated test server cannot refuse) a stand-in answers the connection with
 * the FATAL error PostgreSQL sends.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const PASSWORD = 'S3cret-pa55word'

interface Run { code: number | null, stdout: string, stderr: string }

async function run (args: string[], env: Record<string, string>): Promise<Run> {
  return await new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 90_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, stdout, stderr })
    })
  })
}

/** `node bin/server.js` and `bus-mcp migrate` with this DATABASE_URL. */
async function both (databaseUrl: string): Promise<{ server: Run, migrate: Run }> {
  const [server, migrate] = await Promise.all([
    run(['bin/server.js'], { DATABASE_URL: databaseUrl, PORT: String(await freePort()), ADMIN_PORT: String(await freePort()), LOG_LEVEL: 'warn' }),
    run(['bin/bus-mcp.js', 'migrate'], { DATABASE_URL: databaseUrl })
  ])
  return { server, migrate }
}

function oneLine (t: Test, result: Run, what: string, pattern: RegExp): void {
  t.equal(result.code, 1, `${what}: exit 1`)
  const lines = result.stderr.trimEnd().split('\n')
  t.equal(lines.length, 1, `${what}: one line on stderr: ${result.stderr}`)
  t.match(lines[0], pattern, what)
  t.equal(result.stdout, '', `${what}: nothing on stdout`)
  t.notOk(result.stderr.includes(PASSWORD), `${what}: the password is not printed`)
  t.notMatch(result.stderr, /postgres:\/\/(?!USER:PASSWORD@HOST)/, `${what}: nor the URL (only the form it should have)`)
}

/** A stand-in PostgreSQL server that answers every startup message with this FATAL error. */
async function fatalServer (t: Test, code: string, message: string): Promise<number> {
  const server: Server = createServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', (startup) => {
      // An SSLRequest (80877103) would come first with sslmode; these URLs have none.
      if (startup.length >= 8 && startup.readInt32BE(4) === 80877103) socket.write('N')
      const fields = Buffer.concat([
        ...[['S', 'FATAL'], ['V', 'FATAL'], ['C', code], ['M', message]].map(([k, v]) => Buffer.from(`${k ?? ''}${v ?? ''}\0`)),
        Buffer.from([0])
      ])
      const header = Buffer.alloc(5)
      header.write('E')
      header.writeInt32BE(fields.length + 4, 1)
      socket.end(Buffer.concat([header, fields]))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return (server.address() as { port: number }).port
}

/** The real test server's URL with another user, password and database. */
function onTestServer (user: string, database: string): string {
  const url = new URL(testDatabaseUrl ?? '')
  url.username = user
  url.password = PASSWORD
  url.pathname = `/${database}`
  return url.toString()
}

const suffix = randomBytes(4).toString('hex')

// Each case is its own pair of processes, and one of them waits 2 s for an answer that never
// comes: two cases at a time keep the machine busy meanwhile.
t.jobs = 2

t.test('a database that does not exist', async (t) => {
  const name = `bus_missing_${suffix}`
  const url = testDatabaseUrl !== undefined
    ? onTestServer(new URL(testDatabaseUrl).username || 'postgres', name)
    : `postgres://bus:${PASSWORD}@127.0.0.1:${await fatalServer(t, '3D000', `database "${name}" does not exist`)}/${name}`
  const { host, port, user } = databaseTarget(url)
  const { server, migrate } = await both(url)
  const expected = new RegExp(`^bus-mcp: database "${name}" does not exist on the PostgreSQL server at ${host.replaceAll('.', '\\.')}:${port} \\(DATABASE_URL\\); create it with: createdb -h ${host.replaceAll('.', '\\.')} -p ${port} -U ${user ?? ''} ${name} `)
  oneLine(t, server, 'server', expected)
  oneLine(t, migrate, 'migrate', expected)
})

t.test('a role that does not exist', async (t) => {
  const role = `bus_nobody_${suffix}`
  const url = testDatabaseUrl !== undefined
    ? onTestServer(role, 'postgres')
    : `postgres://${role}:${PASSWORD}@127.0.0.1:${await fatalServer(t, '28000', `role "${role}" does not exist`)}/bus`
  const { server, migrate } = await both(url)
  const expected = new RegExp(`^bus-mcp: role "${role}" does not exist on the PostgreSQL server at .*; fix the user in DATABASE_URL, or create the role as a superuser: createuser .* --pwprompt ${role}$`)
  oneLine(t, server, 'server', expected)
  oneLine(t, migrate, 'migrate', expected)
})

t.test('a wrong password', async (t) => {
  const port = await fatalServer(t, '28P01', 'password authentication failed for user "bus"')
  const { server, migrate } = await both(`postgres://bus:${PASSWORD}@127.0.0.1:${port}/bus`)
  const expected = new RegExp(`^bus-mcp: password authentication failed for user "bus" at 127\\.0\\.0\\.1:${port} \\(DATABASE_URL\\); check the user and password in DATABASE_URL \\(.*percent-encoded`)
  oneLine(t, server, 'server', expected)
  oneLine(t, migrate, 'migrate', expected)
})

t.test('a port where nothing listens', async (t) => {
  const port = await freePort()
  const { server, migrate } = await both(`postgres://bus:${PASSWORD}@127.0.0.1:${port}/bus`)
  const expected = new RegExp(`^bus-mcp: cannot connect to PostgreSQL at 127\\.0\\.0\\.1:${port} \\(DATABASE_URL\\): connection refused; is PostgreSQL running, on that host and port\\?$`)
  oneLine(t, server, 'server', expected)
  oneLine(t, migrate, 'migrate', expected)
})

t.test('a port that answers, but not as PostgreSQL (postgres.js would retry it forever)', async (t) => {
  const http = createHttpServer((_request, response) => { response.end('not postgres') })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { http.closeAllConnections(); http.close() })
  const { port } = http.address() as { port: number }
  const started = Date.now()
  // DATABASE_URL's connect_timeout bounds the wait (15 s without it: test/unit/connect-timeout.test.ts).
  const { server, migrate } = await both(`postgres://bus:${PASSWORD}@127.0.0.1:${port}/bus?connect_timeout=2`)
  const expected = new RegExp(`^bus-mcp: 127\\.0\\.0\\.1:${port} \\(DATABASE_URL\\) accepts connections but gave no PostgreSQL answer within 2 s; is that PostgreSQL's port`)
  oneLine(t, server, 'server', expected)
  oneLine(t, migrate, 'migrate', expected)
  t.ok(Date.now() - started < 14_000, `both gave up well before the default 15 s (${Date.now() - started} ms)`)
})

t.test('a DATABASE_URL that is no URL stops both with the variable named, not the URL', async (t) => {
  // postgres.js would throw Node's ERR_INVALID_URL at the first query, whose stack trace prints the input.
  for (const url of [`postgres://bus:${PASSWORD}@127.0.0.1:99999/bus`, `postgres://bus:${PASSWORD}#x@db/bus`, `postgres://bus:${PASSWORD}@/bus`, 'postgres://bus:S3cret%zz@db/bus']) {
    const { server, migrate } = await both(url)
    const expected = /^bus-mcp: configuration error: DATABASE_URL: is not a valid URL; the form is postgres:\/\/USER:PASSWORD@HOST:PORT\/DATABASE .*percent-encoded/
    oneLine(t, server, `server, ${url.replace(PASSWORD, '…')}`, expected)
    oneLine(t, migrate, `migrate, ${url.replace(PASSWORD, '…')}`, expected)
    t.notOk(server.stderr.includes('S3cret') || migrate.stderr.includes('S3cret'), 'no part of the password')
  }
})

t.test('a DATA_DIR that cannot be created', async (t) => {
  const file = join(t.testdir(), 'a-file')
  writeFileSync(file, '')
  const dataDir = join(file, 'data')
  const [server, migrate] = await Promise.all([
    run(['bin/server.js'], { DATA_DIR: dataDir, PORT: String(await freePort()), ADMIN_PORT: String(await freePort()) }),
    run(['bin/bus-mcp.js', 'migrate'], { DATA_DIR: dataDir })
  ])
  const expected = new RegExp(`^bus-mcp: DATA_DIR ${dataDir.replaceAll('.', '\\.')} cannot be used for the embedded database \\(ENOTDIR: .*\\); point DATA_DIR at a directory this user may write, or set DATABASE_URL$`)
  oneLine(t, server, 'server', expected)
  oneLine(t, migrate, 'migrate', expected)
})

t.test('describeDatabaseError: the message for each error, and never the password', async (t) => {
  const url = `postgres://bus:${encodeURIComponent('p@ss:w/rd')}@db.internal:6543/busdb`
  const pg = (code: string, message: string): object => ({ severity: 'FATAL', code, message })
  const cases: Array<[unknown, RegExp]> = [
    [pg('3D000', 'database "busdb" does not exist'), /^database "busdb" does not exist on the PostgreSQL server at db\.internal:6543 \(DATABASE_URL\); create it with: createdb -h db\.internal -p 6543 -U bus busdb/],
    [pg('28000', 'role "bus" does not exist'), /^role "bus" does not exist .* createuser -h db\.internal -p 6543 --pwprompt bus$/],
    [pg('28000', 'no pg_hba.conf entry for host "10.0.0.9", user "bus", database "busdb", no encryption'), /does not accept this connection .*pg_hba\.conf.*sslmode=require/],
    [pg('28P01', 'password authentication failed for user "bus"'), /^password authentication failed for user "bus" at db\.internal:6543/],
    [pg('42501', 'permission denied for database busdb'), /^the role "bus" lacks a privilege the server needs on db\.internal:6543 \(permission denied for database busdb\).*ALTER DATABASE busdb OWNER TO bus$/],
    [pg('53300', 'sorry, too many clients already'), /no free connection slots/],
    [pg('57P03', 'the database system is starting up'), /not accepting connections yet/],
    [pg('XX000', 'something else'), /^the PostgreSQL server at db\.internal:6543 refused \(DATABASE_URL\): something else \(SQLSTATE XX000\)$/],
    [Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:6543'), { code: 'ECONNREFUSED' }), /connection refused/],
    [Object.assign(new Error('getaddrinfo ENOTFOUND db.internal'), { code: 'ENOTFOUND' }), /the host name "db\.internal" does not resolve/],
    [Object.assign(new Error('write CONNECT_TIMEOUT db.internal:6543'), { code: 'CONNECT_TIMEOUT' }), /no answer \(CONNECT_TIMEOUT\)/],
    [Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }), /TLS failed \(self-signed certificate\)/],
    // drizzle wraps driver errors in "Failed query: …": the cause is what counts.
    [Object.assign(new Error('Failed query: select 1\nparams: '), { cause: pg('3D000', 'database "busdb" does not exist') }), /^database "busdb" does not exist/],
    // A message that happens to hold the password (decoded or as written) has it replaced.
    [pg('XX000', 'echo p@ss:w/rd and p%40ss%3Aw%2Frd'), /echo \*\*\* and \*\*\*/]
  ]
  for (const [err, expected] of cases) {
    const line = describeDatabaseError(err, url)
    t.match(line, expected, String((err as { message?: string }).message))
    t.notOk(line?.includes('p@ss:w/rd'), 'no password')
    t.notOk(line?.includes('\n'), 'one line')
  }
  t.equal(describeDatabaseError(new TypeError('a bug'), url), undefined, 'a bug is not described (it keeps its stack trace)')
  const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })
  t.equal(describeDatabaseError(refused, 'postgres://u:p@ss@127.0.0.1:5499/db'),
    'cannot connect to PostgreSQL at 127.0.0.1:5499 (DATABASE_URL): connection refused; is PostgreSQL running, on that host and port?',
    'an unencoded @ in the password: the host is after the last @ (as URL reads it)')
  t.equal(describeDatabaseError(pg('XX000', 'p and port'), 'postgres://u:p@h/db'), 'the PostgreSQL server at h:5432 refused (DATABASE_URL): *** and port (SQLSTATE XX000)',
    'a short password is replaced where it stands alone, not inside words')
  t.match(describeDatabaseError(new DatabaseNoAnswerError(15), 'postgres://u@h1:5432,h2:5433/db'), /^none of the hosts h1:5432,h2:5433 \(DATABASE_URL\) gave a PostgreSQL answer within 15 s/,
    'several hosts: postgres.js cycles through them, so the deadline is what ends it')
  t.match(databaseTarget('postgres://u@h1:5432,h2:5433/db'), { address: 'h1:5432,h2:5433', user: 'u', database: 'db' }, 'several hosts')
  t.match(databaseTarget('postgres://u@[::1]/db'), { address: '[::1]:5432' }, 'IPv6')
  t.match(databaseTarget('postgres:///db?host=/var/run/postgresql'), { host: '/var/run/postgresql', database: 'db', user: undefined }, 'a Unix socket')
})
