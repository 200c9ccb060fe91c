/**
 * DATABASE_URL's `connect_timeout` parameter, in whole seconds, as libpq and postgres.js read it
 * (`postgres://…/bus?connect_timeout=10`). When given, it bounds each connection attempt, the
 * pool's and `migrate`'s, and how long a start waits for PostgreSQL's first answer; without it
 * those bounds are 5, 10 and 15 s. libpq's 0 ("wait forever") is refused: a start pointed at the
 * wrong port would hang instead of saying so.
 */

export const MAX_CONNECT_TIMEOUT_SECONDS = 3600

/** The raw values of `connect_timeout` in the URL's query (postgres.js takes hosts and query apart itself). */
function rawValues (databaseUrl: string): string[] {
  const query = /^[^?#]*\?([^#]*)/.exec(databaseUrl)?.[1]
  return query === undefined ? [] : new URLSearchParams(query).getAll('connect_timeout')
}

/** The URL's connect_timeout: its seconds, or why it cannot be used; neither when it is absent. */
function readConnectTimeout (databaseUrl: string): { seconds?: number, problem?: string } {
  const values = rawValues(databaseUrl)
  if (values.length > 1) return { problem: 'connect_timeout is given more than once' }
  const value = values[0]
  if (value === undefined) return {}
  const seconds = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN
  if (!(seconds >= 1 && seconds <= MAX_CONNECT_TIMEOUT_SECONDS)) {
    return { problem: `connect_timeout must be a whole number of seconds from 1 to ${MAX_CONNECT_TIMEOUT_SECONDS}` }
  }
  return { seconds }
}

/** Why the URL's connect_timeout cannot be used, or undefined when it is absent or fine. */
export function connectTimeoutProblem (databaseUrl: string): string | undefined {
  return readConnectTimeout(databaseUrl).problem
}

/** The URL's connect_timeout in seconds, or undefined when it has none (or none that can be used). */
export function connectTimeoutOf (databaseUrl: string): number | undefined {
  return readConnectTimeout(databaseUrl).seconds
}
