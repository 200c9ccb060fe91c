import t from 'tap'
import { judge, type Check } from './suite.ts'

const check = (id: string, status: string, errorMessage?: string): Check => ({ id, status, ...(errorMessage !== undefined ? { errorMessage } : {}) })
const listed = { reason: 'needs the fixture tool test_simple_text', failsWith: 'test_simple_text' }

t.test('a clean scenario passes', async (t) => {
  t.same(judge({ scenario: 's', checks: [check('a', 'SUCCESS'), check('b', 'WARNING', 'a SHOULD'), check('c', 'INFO')] }),
    { unexpected: [], stale: [], expected: [] })
})

t.test('an unlisted failure is unexpected, with its message', async (t) => {
  const verdict = judge({ scenario: 's', checks: [check('a', 'FAILURE', 'Expected HTTP 404, got 400')] })
  t.same(verdict.unexpected, ['a: Expected HTTP 404, got 400'])
})

t.test('a listed failure that fails as listed is expected', async (t) => {
  const verdict = judge({ scenario: 's', checks: [check('a', 'FAILURE', 'Unknown tool: "test_simple_text"'), check('wire', 'SUCCESS')] }, { a: listed })
  t.same(verdict, { unexpected: [], stale: [], expected: ['a'] })
})

t.test('a listed failure that fails for another reason is unexpected', async (t) => {
  const verdict = judge({ scenario: 's', checks: [check('a', 'FAILURE', 'unsupported MCP-Protocol-Version')] }, { a: listed })
  t.equal(verdict.unexpected.length, 1)
  t.match(verdict.unexpected[0], /^a: unsupported MCP-Protocol-Version \(listed for .*test_simple_text/)
})

t.test('every failing occurrence of a repeated id must match', async (t) => {
  const verdict = judge({ scenario: 's', checks: [check('a', 'FAILURE', 'test_simple_text'), check('a', 'FAILURE', 'timeout')] }, { a: listed })
  t.same(verdict.unexpected.map((line) => line.split(' (')[0]), ['a: timeout'])
})

t.test('a listed check that passes, warns or is skipped is stale', async (t) => {
  for (const status of ['SUCCESS', 'WARNING', 'SKIPPED']) {
    const verdict = judge({ scenario: 's', checks: [check('a', status)] }, { a: listed })
    t.equal(verdict.stale.length, 1, status)
    t.match(verdict.stale[0], new RegExp(`now ${status}`))
  }
  const mixed = judge({ scenario: 's', checks: [check('a', 'SUCCESS'), check('a', 'FAILURE', 'test_simple_text')] }, { a: listed })
  t.same(mixed.stale, [], 'still failing in one occurrence: not stale')
})

t.test('a listed check that did not run', async (t) => {
  const clean = judge({ scenario: 's', checks: [check('b', 'SUCCESS')] }, { a: listed })
  t.equal(clean.stale.length, 1, 'is stale when nothing else failed')
  const bailed = judge({ scenario: 's', checks: [check('setup', 'FAILURE', 'test_simple_text missing')] }, { a: listed, setup: listed })
  t.same(bailed, { unexpected: [], stale: [], expected: ['setup'] }, 'is tolerated after a failed prerequisite')
})
