import t from 'tap'
import { runDoctor } from '../../src/doctor/run.ts'
import { freePort, startTestServer } from '../helpers/server.ts'

/**
 * `bus-mcp doctor URL` ends a full walk with this installation's own check (postgres-driver,
 * docs/decisions/0020); when the URL gives no HTTP answer at all, nothing else is checked.
 */

t.test('a full walk ends with the postgres-driver check', async (t) => {
  const server = await startTestServer(t, { listen: true })
  const report = await runDoctor(`${server.baseUrl}/mcp`)
  const last = report.results.at(-1)
  t.equal(last?.name, 'postgres-driver')
  t.equal(last?.status, 'pass', last?.detail ?? '')
  t.match(last?.detail, /^this installation's postgres\.js \d+\.\d+\.\d+ takes the connection fix \(docs\/decisions\/0020\)$/)
  t.equal(report.ok, true)
})

t.test('no answer at the URL: the walk stops before it', async (t) => {
  const report = await runDoctor(`http://127.0.0.1:${await freePort()}/mcp`)
  t.notOk(report.results.some((r) => r.name === 'postgres-driver'))
})
