import { readFileSync } from 'node:fs'
import t from 'tap'
import { inspectPostgresDriver, locatePostgresDriver } from '../../src/db/postgres-driver-patch.ts'
import { checkPostgresDriver, type CheckResult } from '../../src/doctor/checks.ts'
import { formatReport } from '../../src/doctor/run.ts'

/** `bus-mcp doctor` reports whether this installation's postgres.js takes the fix of docs/decisions/0020. */

const { version, connectionFile } = locatePostgresDriver()

t.test('the installed driver passes', async (t) => {
  const result = checkPostgresDriver()
  t.same(result, {
    name: 'postgres-driver',
    status: 'pass',
    ok: true,
    detail: `this installation's postgres.js ${version} takes the connection fix (docs/decisions/0020)`,
    fix: null
  })
})

t.test('a connection.js the fix was not written for fails the check, with what to do', async (t) => {
  const changed = readFileSync(connectionFile, 'utf8').replace('  function nextWrite(fn) {\n', '  function nextWrite(fn) {\n    if (socket === null) return false\n')
  const result = checkPostgresDriver(inspectPostgresDriver(changed))
  t.equal(result.name, 'postgres-driver')
  t.equal(result.status, 'fail')
  t.equal(result.ok, false)
  t.equal(result.detail, `this installation's postgres.js ${version} is not the code its connection fix was written for (docs/decisions/0020: ` +
    'without it a database restart can crash the server); a server started from it refuses to start on PostgreSQL')
  t.equal(result.fix, 'install the pinned version with "npm ci", or, if this release fixes porsager/postgres#1208, remove src/db/postgres-driver.ts')
})

t.test('the summary: a failing driver alone does not say claude.ai would not connect', async (t) => {
  const passing: CheckResult = { name: 'issuer', status: 'pass', ok: true, detail: 'fine', fix: null }
  const driver = checkPostgresDriver({ version: '9.9.9', patched: false })
  const onlyDriver = formatReport({ mcpUrl: 'https://bus.example.com/mcp', ok: false, results: [passing, driver] })
  t.match(onlyDriver, /^FAIL {2}postgres-driver: this installation's postgres\.js 9\.9\.9 is not .* → fix: install the pinned version/m)
  t.match(onlyDriver, /1 passed, 1 failed, 0 warning\(s\), 0 info: discovery works the way claude\.ai does it, but a server started from this installation would not start on PostgreSQL \(see postgres-driver\)\.$/)
  const both = formatReport({ mcpUrl: 'https://bus.example.com/mcp', ok: false, results: [{ ...passing, status: 'fail', ok: false, fix: 'x' }, driver] })
  t.match(both, /2 failed, .*: claude\.ai would not connect; fix the FAIL lines from the top/)
})
