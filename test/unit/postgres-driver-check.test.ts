import { readFileSync } from 'node:fs'
import t from 'tap'
import { inspectPostgresDriver, locatePostgresDriver, patchConnectionSource, postgresDriverProblem } from '../../src/db/postgres-driver-patch.ts'
import { postgresDriver, postgresDriverProblem as loadedDriverProblem } from '../../src/db/postgres-driver.ts'

/**
 * docs/decisions/0020: the checks that the connection fix applied (the server's start, `bus-mcp
 * doctor`) see an unpatched postgres.js for what it is, and the version is pinned exactly.
 */

const { version, connectionFile } = locatePostgresDriver()
const installed = readFileSync(connectionFile, 'utf8')

t.test('the installed postgres.js: the fix applies, in the file and in the loaded driver', async (t) => {
  t.same(inspectPostgresDriver(), { version, patched: true })
  t.same(postgresDriver, { version, patched: true })
  t.equal(postgresDriverProblem(inspectPostgresDriver()), undefined)
  t.equal(loadedDriverProblem(), undefined, 'the start goes on')
})

t.test('a connection.js the fix was not written for is reported, with what to do', async (t) => {
  // What an upstream fix would look like: nextWrite guarded, the teardown forgetting the write.
  const fixedUpstream = installed
    .replace('  function nextWrite(fn) {\n', '  function nextWrite(fn) {\n    if (!socket) return false\n')
    .replaceAll('    clearImmediate(nextWriteTimer)\n', '    clearImmediate(nextWriteTimer)\n    nextWriteTimer = null\n')
  const onlyOneTeardown = installed.replace('    clearImmediate(nextWriteTimer)\n', '    nextWriteTimer && clearImmediate(nextWriteTimer)\n')
  for (const [what, source] of [['nextWrite changed', fixedUpstream], ['one teardown changed', onlyOneTeardown], ['another module', 'module.exports = 1']] as const) {
    t.equal(patchConnectionSource(source).patched, false, what)
    const state = inspectPostgresDriver(source)
    t.same(state, { version, patched: false }, what)
    const problem = postgresDriverProblem(state)
    t.equal(problem?.split('\n').length, 1, `${what}: one line`)
    t.match(problem, `postgres.js ${version} is not the code its connection fix was written for (docs/decisions/0020`, what)
    t.match(problem, /install the pinned version with "npm ci", or, if this release fixes porsager\/postgres#1208, remove src\/db\/postgres-driver\.ts$/, what)
  }
})

t.test('package.json pins postgres.js exactly, to the installed version, in the lockfile too', async (t) => {
  const root = new URL('../../', import.meta.url)
  const pkg = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { dependencies: Record<string, string> }
  const lock = JSON.parse(readFileSync(new URL('package-lock.json', root), 'utf8')) as { packages: Record<string, { version?: string, dependencies?: Record<string, string> }> }
  t.match(pkg.dependencies.postgres, /^\d+\.\d+\.\d+$/, 'an exact version, no range: the fix is written for one release')
  t.equal(pkg.dependencies.postgres, version, 'node_modules holds the pinned version (run npm ci otherwise)')
  t.equal(lock.packages['']?.dependencies?.postgres, pkg.dependencies.postgres)
  t.equal(lock.packages['node_modules/postgres']?.version, pkg.dependencies.postgres)
})
