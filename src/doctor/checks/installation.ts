import { inspectPostgresDriver, postgresDriverIssue, type PostgresDriverState } from '../../db/postgres-driver-patch.ts'
import { fail, pass, type CheckResult } from '../result.ts'

// 9. This installation (the one doctor runs from; on the server's host, the server's own).

/**
 * postgres.js takes the connection fix of docs/decisions/0020: without it, a server started from
 * this installation refuses to start on PostgreSQL. Judged from the installed source text, so
 * doctor does not load the driver. `state` is for tests.
 */
export function checkPostgresDriver (state?: PostgresDriverState): CheckResult {
  const name = 'postgres-driver'
  let driver: PostgresDriverState
  try {
    driver = state ?? inspectPostgresDriver()
  } catch (err) {
    return fail(name, `this installation's postgres.js cannot be read: ${err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err)}`, 'install the dependencies with "npm ci"')
  }
  const issue = postgresDriverIssue(driver)
  if (issue === undefined) return pass(name, `this installation's postgres.js ${driver.version} takes the connection fix (docs/decisions/0020)`)
  return fail(name, `this installation's ${issue.problem}; a server started from it refuses to start on PostgreSQL`, issue.fix)
}
