import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createEmbeddedDataDir } from '../helpers/database.ts'
import { REPO_ROOT, startServerProcess } from '../helpers/processes.ts'
import { freePort } from '../helpers/server.ts'

/**
 * docs/decisions/0020: a server whose postgres.js did not take the connection fix refuses to
 * start on PostgreSQL (exit 1, one line, like a configuration error) and warns on the embedded
 * database, which does not use postgres.js. A module hook stands in for a release whose
 * connection.js changed: it rewrites the file's text before the driver module sees it.
 */

function changedDriverHook (t: Test): string {
  const hook = join(t.testdir(), 'changed-driver.mjs')
  writeFileSync(hook, `import { registerHooks } from 'node:module'
registerHooks({
  load (url, context, nextLoad) {
    const result = nextLoad(url, context)
    if (!url.endsWith('/postgres/cjs/src/connection.js')) return result
    return { ...result, source: String(result.source).replace('function nextWrite(fn) {', 'function nextWrite(fn) { // changed upstream') }
  }
})
`)
  return hook
}

interface Run { code: number | null, stdout: string, stderr: string }

async function startServer (env: Record<string, string>): Promise<Run> {
  return await new Promise((resolve) => {
    execFile(process.execPath, ['bin/server.js'], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(0), ADMIN_PORT: String(0), LOG_LEVEL: 'warn', ...env },
      timeout: 60_000
    }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, stdout, stderr })
    })
  })
}

const PROBLEM = /^bus-mcp: postgres\.js \d+\.\d+\.\d+ is not the code its connection fix was written for \(docs\/decisions\/0020: .*remove src\/db\/postgres-driver\.ts$/

t.test('on PostgreSQL, a driver the fix did not apply to stops the start with one line', async (t) => {
  // Nothing listens on this port: the start stops before any connection is tried.
  const databaseUrl = `postgres://bus@127.0.0.1:${await freePort()}/bus`
  const refused = await startServer({ DATABASE_URL: databaseUrl, NODE_OPTIONS: `--import=${changedDriverHook(t)}` })
  t.equal(refused.code, 1, 'exit 1')
  t.equal(refused.stdout, '', 'nothing on stdout')
  const lines = refused.stderr.trimEnd().split('\n')
  t.equal(lines.length, 1, `one line on stderr: ${refused.stderr}`)
  t.match(lines[0], PROBLEM)

  // Control: the same start with the driver as installed gets past the check to the database.
  const control = await startServer({ DATABASE_URL: databaseUrl })
  t.equal(control.code, 1, 'exit 1: nothing listens there')
  t.notMatch(control.stderr, /connection fix/, `the driver is not the problem: ${control.stderr}`)
  t.match(control.stderr, /127\.0\.0\.1/, 'the database is')
})

t.test('on the embedded database the same driver is only a warning: postgres.js is not used', async (t) => {
  // A migrated DATA_DIR, as after a first start: the test is about the driver check, not initdb.
  const dataDir = join(t.testdir(), 'data')
  await createEmbeddedDataDir(dataDir)
  const server = await startServerProcess(t, { DATA_DIR: dataDir, NODE_OPTIONS: `--import=${changedDriverHook(t)}` })
  t.ok((await fetch(`${server.url}/healthz`)).ok, 'the server runs')
  t.match(server.output(), /postgres\.js \d+\.\d+\.\d+ is not the code its connection fix was written for.*\(unused now: no DATABASE_URL, the embedded database runs\)/)
  t.equal(await server.stop(), 0)
})
