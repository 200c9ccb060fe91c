import { execFile } from 'node:child_process'
import t from 'tap'
import { REPO_ROOT } from '../helpers/processes.ts'
import { machine, parseMode, tool, verdict, type Requirement } from '../helpers/requirements.ts'

// The rule of test/helpers/requirements.ts, which .ci/run relies on: under REQUIRE_FULL_SUITE a
// missing tool fails; PostgreSQL-only tests skip only in the embedded pass; other-pass and
// machine requirements always skip. Every skip and failure says what is missing.

const missingTool = tool('Frobnicator', '/nonexistent/frob', 'frob', 'FROB_PATH_UNSET_IN_TESTS')
const presentTool = tool('sh', '/bin/sh', 'dash')
const missingPostgres: Requirement = { what: 'PostgreSQL (TEST_DATABASE_URL)', met: false, hint: 'set TEST_DATABASE_URL', kind: 'postgres' }
const otherPass: Requirement = { what: 'the embedded database', met: false, hint: 'TEST_DATABASE_URL unset', kind: 'pass' }
const noIpv6 = machine('IPv6 loopback (::1)', false, 'the machine has no ::1')

t.test('REQUIRE_FULL_SUITE values', async (t) => {
  t.equal(parseMode(undefined), 'no')
  t.equal(parseMode(''), 'no')
  t.equal(parseMode('0'), 'no')
  t.equal(parseMode('1'), 'all')
  t.equal(parseMode('embedded'), 'embedded')
  t.throws(() => parseMode('yes'), /REQUIRE_FULL_SUITE=yes: expected 1/, 'a typo is an error, not a silent "no"')
})

t.test('everything present: the test runs, in every mode', async (t) => {
  t.ok(presentTool.met, '/bin/sh exists')
  for (const mode of ['no', 'all', 'embedded'] as const) t.same(verdict([presentTool], mode), { run: true }, mode)
})

t.test('a missing tool: a skip with the reason locally, a failure under REQUIRE_FULL_SUITE', async (t) => {
  t.notOk(missingTool.met)
  t.same(verdict([missingTool], 'no'), { run: false, skip: 'needs Frobnicator at /nonexistent/frob (apt-get install frob, or set FROB_PATH_UNSET_IN_TESTS)' })
  for (const mode of ['all', 'embedded'] as const) {
    const v = verdict([missingTool, presentTool], mode)
    t.ok(!v.run && 'fail' in v, `${mode}: a failure`)
    t.match(v, { fail: /this test must run here, but it needs Frobnicator at \/nonexistent\/frob .*A skip would read as a pass/ })
  }
})

t.test('PostgreSQL-only: fails in the PostgreSQL pass without TEST_DATABASE_URL, skips (saying so) in the embedded pass', async (t) => {
  t.same(verdict([missingPostgres], 'no'), { run: false, skip: 'needs PostgreSQL (TEST_DATABASE_URL) (set TEST_DATABASE_URL)' })
  t.match(verdict([missingPostgres], 'all'), { run: false, fail: /^REQUIRE_FULL_SUITE=1: this test must run here, but it needs PostgreSQL/ })
  t.match(verdict([missingPostgres], 'embedded'), { run: false, skip: /^not this pass \(REQUIRE_FULL_SUITE=embedded\): it needs PostgreSQL .*the other pass of \.ci\/run runs it$/ })
  // In the embedded pass a missing tool still fails, even next to a PostgreSQL requirement.
  t.match(verdict([missingTool, missingPostgres], 'embedded'), { run: false, fail: /needs Frobnicator/ })
  t.notMatch(verdict([missingTool, missingPostgres], 'embedded'), { fail: /PostgreSQL/ }, 'and names only what must be there')
})

t.test('the other database pass and machine properties: always a skip with the reason', async (t) => {
  for (const mode of ['no', 'all', 'embedded'] as const) {
    t.match(verdict([otherPass], mode), { run: false, skip: /needs the embedded database/ }, `${mode}: other pass`)
    t.same(verdict([noIpv6], mode), { run: false, skip: 'needs IPv6 loopback (::1) (the machine has no ::1)' }, `${mode}: machine`)
  }
})

/**
 * A tap test file using fileNeeds or testNeeding with a missing tool, run as its own process the
 * way tap runs a test file: its exit code and TAP output.
 */
async function runFile (body: string, mode: string | undefined): Promise<{ code: number, output: string }> {
  const script = `
    import t from 'tap'
    import { fileNeeds, testNeeding, tool } from './test/helpers/requirements.ts'
    const missing = tool('Frobnicator', '/nonexistent/frob', 'frob')
    ${body}`
  const env: NodeJS.ProcessEnv = { ...process.env, TAP_CHILD_ID: undefined, TAP: undefined }
  delete env.REQUIRE_FULL_SUITE
  if (mode !== undefined) env.REQUIRE_FULL_SUITE = mode
  return await new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO_ROOT, env, timeout: 60_000 }, (error, stdout) => {
      if (error !== null && typeof error.code !== 'number') reject(error)
      else resolve({ code: error === null ? 0 : Number(error.code), output: stdout })
    })
  })
}

t.test('in a real test file: a missing tool skips the file or the subtest locally, fails them under REQUIRE_FULL_SUITE', async (t) => {
  const cases = {
    'a whole file (fileNeeds)': "if (fileNeeds(t, [missing])) t.pass('ran without Frobnicator')",
    'a subtest (testNeeding)': "await testNeeding(t, 'frobnicates', [missing], async (t) => { t.pass('ran without Frobnicator') })"
  }
  // Six processes, started together: each is mostly Node loading tap, and this file often runs last.
  const runs = await Promise.all(Object.entries(cases).flatMap(([what, body]) =>
    [undefined, '1', 'embedded'].map(async (mode) => ({ what, mode, ...await runFile(body, mode) }))))
  for (const { what, mode, code, output } of runs) {
    if (mode === undefined) {
      t.equal(code, 0, `${what}, locally: exit 0`)
      // A skipped file is an empty plan with the reason (tap lists the file as skipped), a subtest a SKIP.
      t.match(output, /(# SKIP|1\.\.0 #) needs Frobnicator at \/nonexistent\/frob/, `${what}, locally: a skip that says why`)
      t.notMatch(output, /ran without/, `${what}, locally: did not run`)
    } else {
      t.not(code, 0, `${what}, REQUIRE_FULL_SUITE=${mode}: the file fails`)
      t.match(output, /not ok .*this test must run here, but it needs Frobnicator at \/nonexistent\/frob/, `${what}, REQUIRE_FULL_SUITE=${mode}: a failure that says why`)
      t.notMatch(output, /# SKIP|1\.\.0 #/, `${what}, REQUIRE_FULL_SUITE=${mode}: not a skip`)
    }
  }
})
