import { sql } from 'drizzle-orm'
import { rowsOf } from '../../src/db/client.ts'
import type { TestServer } from '../helpers/server.ts'

/**
 * Shared by the adversarial tests: a fingerprint of everything a request could change in the
 * database, and the checks every response must pass whatever it was sent.
 */

/**
 * Counts of every table, plus the columns that record a change of state without adding a row
 * (revocations, rotations, spent codes, failed consent attempts, cursor moves). One query, so it
 * is cheap enough to take before and after every single fuzzed request. `audit_log` is left out:
 * failures are audited on purpose.
 */
export async function stateOf (server: TestServer): Promise<Record<string, number>> {
  const rows = rowsOf<Record<string, unknown>>(await server.database.db.execute(sql`
    select
      (select count(*) from principals) as principals,
      (select count(*) from principals where disabled_at is not null) as principals_disabled,
      (select count(*) from api_tokens) as api_tokens,
      (select count(*) from api_tokens where revoked_at is not null) as api_tokens_revoked,
      (select count(*) from oauth_clients) as oauth_clients,
      (select count(*) from oauth_grants) as oauth_grants,
      (select count(*) from oauth_grants where revoked_at is not null) as oauth_grants_revoked,
      (select count(*) from oauth_codes) as oauth_codes,
      (select count(*) from oauth_codes where consumed_at is not null) as oauth_codes_consumed,
      (select count(*) from oauth_tokens) as oauth_tokens,
      (select count(*) from oauth_tokens where revoked_at is not null) as oauth_tokens_revoked,
      (select count(*) from oauth_tokens where rotated_at is not null) as oauth_tokens_rotated,
      (select count(*) from messages) as messages,
      (select count(*) from channels) as channels,
      (select count(*) from cursors) as cursors,
      (select coalesce(sum(position), 0) from cursors) as cursor_positions,
      (select count(*) from login_codes) as login_codes,
      (select count(*) from login_codes where used_at is not null) as login_codes_used,
      (select count(*) from oauth_pending_authorizations) as oauth_pending_authorizations,
      (select count(*) from oauth_pending_authorizations where consumed_at is not null) as pending_consumed,
      (select coalesce(sum(failed_attempts), 0) from oauth_pending_authorizations) as pending_failed_attempts,
      (select last_message_id from bus_state where id = 1) as last_message_id`))
  const row = rows[0] ?? {}
  return Object.fromEntries(Object.entries(row).map(([name, value]) => [name, Number(value ?? 0)]))
}

/**
 * The next transaction id the database will hand out. It moves only when something writes, so
 * an unchanged value proves that nothing at all changed (reading it writes nothing); a changed
 * one means the full fingerprint must be compared. On a shared PostgreSQL server other
 * databases move it too, which costs time, never correctness.
 */
export async function writeMark (server: TestServer): Promise<string> {
  const rows = rowsOf<{ mark: unknown }>(await server.database.db.execute(sql`select pg_snapshot_xmax(pg_current_snapshot())::text as mark`))
  return String(rows[0]?.mark)
}

/** The names whose values differ between two snapshots, as "name: before → after". */
export function stateDiff (before: Record<string, number>, after: Record<string, number>, ignore: readonly string[] = []): string[] {
  return Object.keys(before)
    .filter((name) => !ignore.includes(name) && before[name] !== after[name])
    .map((name) => `${name}: ${before[name] ?? '?'} → ${after[name] ?? '?'}`)
}

/**
 * A response body that leaks internals: a stack frame, a source path or a module name. Bodies
 * are at most a few kilobytes for errors; the check looks at all of it.
 */
const LEAKS: ReadonlyArray<[RegExp, string]> = [
  [/\n\s+at\s+\S/, 'a stack frame'],
  [/\bat [\w$.<>]+ \(/, 'a stack frame'],
  [/(?:\/work\/|\/home\/|\/usr\/|\/app\/|[A-Z]:\\)[\w./\\-]+\.(?:ts|js|mjs|cjs)\b/, 'a source path'],
  [/node_modules/, 'node_modules'],
  [/\b(?:TypeError|ReferenceError|RangeError|SyntaxError): /, 'a JavaScript error name'],
  [/\bat (?:async )?\S+:\d+:\d+/, 'a stack frame']
]

export function leakIn (body: string): string | undefined {
  for (const [pattern, what] of LEAKS) {
    if (pattern.test(body)) return what
  }
  return undefined
}

/** RFC 6749 §5.2 (+ RFC 8707 §2 invalid_target) for the token endpoint. */
export const TOKEN_ERRORS: ReadonlySet<string> = new Set([
  'invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope', 'invalid_target'
])
/** RFC 7009 §2.2.1 adds unsupported_token_type to the §5.2 codes. */
export const REVOKE_ERRORS: ReadonlySet<string> = new Set([...TOKEN_ERRORS, 'unsupported_token_type'])
/** RFC 7591 §3.2.2. */
export const REGISTER_ERRORS: ReadonlySet<string> = new Set([
  'invalid_redirect_uri', 'invalid_client_metadata', 'invalid_software_statement', 'unapproved_software_statement'
])
/** RFC 6749 §4.1.2.1 (+ RFC 8707 invalid_target), for errors sent back to the client. */
export const AUTHORIZATION_RESPONSE_ERRORS: ReadonlySet<string> = new Set([
  'invalid_request', 'unauthorized_client', 'access_denied', 'unsupported_response_type', 'invalid_scope',
  'server_error', 'temporarily_unavailable', 'invalid_target'
])

export function parseJson (body: string): unknown {
  try {
    return JSON.parse(body)
  } catch {
    return undefined
  }
}

export function headerOf (headers: Record<string, unknown>, name: string): string | undefined {
  const value = headers[name]
  return typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : value === undefined ? undefined : String(value)
}

export { FUZZ_SEED, replayHint, seedFor } from '../helpers/fuzz-seed.ts'
