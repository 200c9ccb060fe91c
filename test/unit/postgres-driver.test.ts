import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import t from 'tap'
import { patchConnectionSource, postgresDriverPatched } from '../../src/db/postgres-driver.ts'

/** docs/decisions/0020: postgres.js is loaded with its write scheduler fixed. */
const require = createRequire(import.meta.url)
const connectionFile = join(dirname(require.resolve('postgres')), 'connection.js')
const version = (JSON.parse(readFileSync(join(dirname(require.resolve('postgres')), '..', '..', 'package.json'), 'utf8')) as { version: string }).version

t.test('the installed postgres.js is the code the patch fixes', async (t) => {
  t.ok(postgresDriverPatched, `postgres.js ${version} was loaded with the fix; if this fails, postgres.js changed connection.js: ` +
    'check whether porsager/postgres#1208 is fixed in this release and, if so, remove src/db/postgres-driver.ts')
  const { source, patched } = patchConnectionSource(readFileSync(connectionFile, 'utf8'))
  t.ok(patched)
  t.match(source, /if \(socket === null\)\s+return writeAfterClose\(\)/, 'a write after close settles its queries instead of throwing')
  t.equal(source.split('chunk = nextWriteTimer = null').length - 1, 4, 'closing and terminating forget the unsent buffer (and nextWrite still does)')
})

t.test('source it does not recognise is left alone', async (t) => {
  t.same(patchConnectionSource('module.exports = 1'), { source: 'module.exports = 1', patched: false })
})
