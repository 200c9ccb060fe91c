import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import type { Test } from 'tap'
import { testDatabaseUrl } from './database.ts'

/**
 * The one place that decides what a test does when something it needs is missing here.
 *
 * REQUIRE_FULL_SUITE (.ci/run sets it; unset on a developer machine):
 *   unset       anything missing skips the test, with the reason in the TAP output ("# SKIP …").
 *   1           the PostgreSQL pass: a missing requirement that .ci/run provides (a tool it
 *               installs: chromium, caddy, openssl; PostgreSQL through TEST_DATABASE_URL) is a
 *               FAILURE naming what is missing. A skip would read as a pass.
 *   embedded    the embedded-database pass (TEST_DATABASE_URL unset on purpose): as 1, except that
 *               PostgreSQL-only tests skip, saying they run in the PostgreSQL pass.
 *
 * Tests that belong to the other pass (PostgreSQL-only in the embedded pass, embedded-only in the
 * PostgreSQL pass) always skip, saying which pass runs them. Requirements .ci/run does not
 * provide (an old system Node, IPv6 on loopback) skip in every mode, with their reason.
 */
export type Mode = 'no' | 'all' | 'embedded'
export const requireFullSuite: Mode = parseMode(process.env.REQUIRE_FULL_SUITE)

export function parseMode (value: string | undefined): Mode {
  if (value === undefined || value === '' || value === '0') return 'no'
  if (value === '1') return 'all'
  if (value === 'embedded') return 'embedded'
  throw new Error(`REQUIRE_FULL_SUITE=${value}: expected 1 (every requirement) or embedded (the embedded-database pass)`)
}

export interface Requirement {
  /** What is needed, for the messages: "Chromium at /usr/bin/chromium". */
  what: string
  met: boolean
  /** How to provide it. */
  hint: string
  /**
   * ci: .ci/run provides it (a missing one fails under REQUIRE_FULL_SUITE);
   * postgres: TEST_DATABASE_URL (fails under REQUIRE_FULL_SUITE=1, skips in the embedded pass);
   * pass: belongs to one of the two database passes (always a skip, naming the other pass);
   * machine: a property of the machine .ci/run cannot change (always a skip).
   */
  kind: 'ci' | 'postgres' | 'pass' | 'machine'
}

/** An executable .ci/run installs (Debian package `pkg`); `envVar` may point elsewhere. */
export function tool (name: string, defaultPath: string, pkg: string, envVar?: string): Requirement & { path: string } {
  const path = (envVar !== undefined ? process.env[envVar] : undefined) ?? defaultPath
  return {
    path,
    what: `${name} at ${path}`,
    met: existsSync(path),
    hint: `apt-get install ${pkg}${envVar !== undefined ? `, or set ${envVar}` : ''}`,
    kind: 'ci'
  }
}

export const chromiumBinary = (): Requirement & { path: string } => tool('Chromium', '/usr/bin/chromium', 'chromium', 'CHROMIUM_PATH')
export const caddyBinary = (): Requirement & { path: string } => tool('Caddy', '/usr/bin/caddy', 'caddy', 'CADDY_PATH')
export const opensslBinary = (): Requirement & { path: string } => tool('openssl', '/usr/bin/openssl', 'openssl')

/** PostgreSQL through TEST_DATABASE_URL (the PostgreSQL pass). */
export const postgres = (): Requirement => ({
  what: 'PostgreSQL (TEST_DATABASE_URL)',
  met: testDatabaseUrl !== undefined,
  hint: 'set TEST_DATABASE_URL=postgres://…',
  kind: 'postgres'
})

/** The embedded database (TEST_DATABASE_URL unset): a check the PostgreSQL pass makes its own way. */
export const embeddedPass = (): Requirement => ({
  what: 'the embedded database',
  met: testDatabaseUrl === undefined,
  hint: 'TEST_DATABASE_URL unset; this pass checks the same on PostgreSQL',
  kind: 'pass'
})

/** A property of the machine that .ci/run does not provide: skipped, with the reason, in every mode. */
export function machine (what: string, met: boolean, hint: string): Requirement {
  return { what, met, hint, kind: 'machine' }
}

/**
 * IPv6 on loopback, as the server's default HOST=localhost uses it: a socket can listen on [::1]
 * (src/lib/listen.ts binds ::1 itself, whatever /etc/hosts says localhost is). A machine property
 * (.ci/run cannot add it): skipped without it.
 */
export async function ipv6Loopback (): Promise<Requirement> {
  const problem = await new Promise<string | undefined>((resolve) => {
    const server = createServer()
    server.once('error', (err: NodeJS.ErrnoException) => { resolve(err.code ?? err.message) })
    server.listen(0, '::1', () => { server.close(() => { resolve(undefined) }) })
  })
  return machine('IPv6 loopback (::1)', problem === undefined, `cannot listen on [::1] here: ${problem ?? ''}`)
}

export type Verdict = { run: true } | { run: false, skip: string } | { run: false, fail: string }

/** Run, skip (with the reason) or fail (with the reason), by the rule above. */
export function verdict (requirements: Requirement[], mode: Mode = requireFullSuite): Verdict {
  const missing = requirements.filter((r) => !r.met)
  if (missing.length === 0) return { run: true }
  const describe = (rs: Requirement[]): string => rs.map((r) => `needs ${r.what} (${r.hint})`).join('; ')
  const setting = `REQUIRE_FULL_SUITE=${mode === 'all' ? '1' : mode}`
  const failing = missing.filter((r) => (r.kind === 'ci' && mode !== 'no') || (r.kind === 'postgres' && mode === 'all'))
  if (failing.length > 0) {
    return { run: false, fail: `${setting}: this test must run here, but it ${describe(failing)}. A skip would read as a pass.` }
  }
  if (mode !== 'no' && missing.every((r) => r.kind === 'pass' || r.kind === 'postgres')) {
    return { run: false, skip: `not this pass (${setting}): it ${describe(missing)}; the other pass of .ci/run runs it` }
  }
  return { run: false, skip: describe(missing) }
}

/**
 * A subtest that needs `requirements`: runs it, or skips it with the reason, or (under
 * REQUIRE_FULL_SUITE) replaces it with a failure saying what is missing.
 */
export async function testNeeding (t: Test, name: string, requirements: Requirement[], fn: (t: Test) => Promise<void>): Promise<void> {
  const v = verdict(requirements)
  if (v.run) {
    await t.test(name, fn)
  } else if ('skip' in v) {
    await t.test(name, { skip: v.skip }, async () => {})
  } else {
    await t.test(name, async (t) => { t.fail(`${name}: ${v.fail}`) })
  }
}

/**
 * A whole test file that needs `requirements`. Returns true when the file may run. Otherwise the
 * file ends here: skipped with the reason (tap prints "# SKIP reason" for the file), or, under
 * REQUIRE_FULL_SUITE, one failing assertion saying what is missing.
 */
export function fileNeeds (t: Test, requirements: Requirement[]): boolean {
  const v = verdict(requirements)
  if (v.run) return true
  if ('skip' in v) t.plan(0, v.skip)
  else t.fail(v.fail)
  return false
}
