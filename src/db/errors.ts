/** Driver and server error codes meaning "the database cannot be reached right now". */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE',
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
  '57P01', '57P02', '57P03', '53300', '53400'
])

/**
 * True when an error (or one it wraps) says the database is unreachable, restarting or full:
 * such requests answer 503 with Retry-After, and the service recovers when the database does.
 */
export function isDatabaseUnavailable (err: unknown): boolean {
  for (let current = err, depth = 0; current !== null && typeof current === 'object' && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || code.startsWith('08'))) return true
    current = (current as { cause?: unknown }).cause
  }
  return false
}

/** PostgreSQL SQLSTATE of an error or the error it wraps (drizzle wraps driver errors). */
export function sqlStateOf (err: unknown): string | undefined {
  for (let current = err, depth = 0; current !== null && typeof current === 'object' && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

/** Where a DATABASE_URL points, for messages: never its password. */
export interface DatabaseTarget {
  /** `host:port` (several, comma-separated, when the URL lists several hosts). */
  address: string
  host: string
  port: string
  user: string | undefined
  database: string | undefined
  /** The password as written in the URL and decoded, to keep it out of any message. */
  secrets: string[]
}

/** Reads host, port, user and database from a postgres:// URL (as postgres.js does, without its environment defaults). */
export function databaseTarget (databaseUrl: string): DatabaseTarget {
  // postgres.js accepts several hosts (`h1:5432,h2:5433`), which URL does not: parse with the first.
  // As URL reads it: the authority ends at the first / or ?, and the credentials at its last @.
  const match = /^(postgres(?:ql)?:\/\/)([^/?]*)(.*)$/i.exec(databaseUrl)
  const [, scheme = 'postgres://', authority = '', rest = ''] = match ?? []
  const at = authority.lastIndexOf('@')
  const auth = at === -1 ? '' : authority.slice(0, at)
  const hosts = authority.slice(at + 1)
  let url: URL | undefined
  try {
    url = new URL(`${scheme}${auth === '' ? '' : `${auth}@`}${hosts.split(',')[0] ?? ''}${rest}`)
  } catch {}
  const decode = (value: string): string => { try { return decodeURIComponent(value) } catch { return value } }
  const rawUser = auth.includes(':') ? auth.slice(0, auth.indexOf(':')) : auth
  const rawPassword = auth.includes(':') ? auth.slice(auth.indexOf(':') + 1) : ''
  const socketHost = url?.searchParams.get('host') ?? undefined
  const list = hosts.split(',').filter((h) => h !== '').map((h) => /:\d+$/.test(h) || h.endsWith(']') ? h : `${h}:5432`)
  const host = url?.hostname !== undefined && url.hostname !== '' ? url.hostname : socketHost ?? 'localhost'
  const port = url?.port !== undefined && url.port !== '' ? url.port : url?.searchParams.get('port') ?? '5432'
  const path = url?.pathname.replace(/^\//, '') ?? ''
  return {
    address: list.length > 1 ? list.join(',') : `${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`,
    host,
    port,
    user: rawUser === '' ? url?.searchParams.get('user') ?? undefined : decode(rawUser),
    database: path === '' ? url?.searchParams.get('database') ?? undefined : decode(path),
    secrets: [...new Set([rawPassword, decode(rawPassword)])].filter((s) => s !== '')
  }
}

/** Thrown when a PostgreSQL port accepts connections but never answers as PostgreSQL. */
export class DatabaseNoAnswerError extends Error {
  readonly code = 'BUS_NO_POSTGRES_ANSWER'
  readonly seconds: number

  constructor (seconds: number) {
    super(`no PostgreSQL answer within ${seconds} s`)
    this.seconds = seconds
    this.name = 'DatabaseNoAnswerError'
  }
}

/** The driver or server error an error wraps (drizzle wraps them in "Failed query: …"), or the error itself. */
function rootCause (err: unknown): unknown {
  let current = err
  for (let depth = 0; depth < 5; depth++) {
    const cause = (current as { cause?: unknown } | null)?.cause
    if (cause === undefined || cause === null || typeof cause !== 'object') break
    current = cause
  }
  return current
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|SELF_SIGNED_CERT|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_|CERT_|HOSTNAME_MISMATCH|ERR_OSSL)/

/**
 * One line saying why PostgreSQL at DATABASE_URL cannot be used (for the server's start and
 * `bus-mcp migrate`), with what to do about it; undefined when the error is not about the
 * database (a bug, which keeps its stack trace). The URL and its password are never in it.
 */
export function describeDatabaseError (err: unknown, databaseUrl: string): string | undefined {
  const target = databaseTarget(databaseUrl)
  const line = explain(rootCause(err), target)
  if (line === undefined) return undefined
  let safe = line.replaceAll(databaseUrl, 'DATABASE_URL')
  // Wherever the password stands as itself (not where its letters happen to be part of a word).
  for (const secret of target.secrets) {
    safe = safe.replace(new RegExp(`(?<![A-Za-z0-9])${secret.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![A-Za-z0-9])`, 'g'), '***')
  }
  return safe
}

function explain (cause: unknown, target: DatabaseTarget): string | undefined {
  if (cause === null || typeof cause !== 'object') return undefined
  const { code, message = '', severity } = cause as { code?: unknown, message?: string, severity?: unknown }
  const at = target.address
  const user = target.user === undefined ? '' : ` -U ${target.user}`
  const where = `-h ${target.host.replace(/^\[(.*)\]$/, '$1')} -p ${target.port}`
  if (cause instanceof DatabaseNoAnswerError) {
    // One host that refused, did not resolve or stayed silent would have failed sooner (connect_timeout).
    return at.includes(',')
      ? `none of the hosts ${at} (DATABASE_URL) gave a PostgreSQL answer within ${cause.seconds} s; check that they resolve, run PostgreSQL and accept connections`
      : `${at} (DATABASE_URL) accepts connections but gave no PostgreSQL answer within ${cause.seconds} s; is that PostgreSQL's port, and not another service's?`
  }
  if (typeof severity === 'string' && typeof code === 'string') {
    switch (code) {
      case '3D000':
        return `${message} on the PostgreSQL server at ${at} (DATABASE_URL); create it with: createdb ${where}${user} ${/^database "(.*)" does not exist$/.exec(message)?.[1] ?? target.database ?? 'NAME'}` +
          ' (or fix the database name in DATABASE_URL)'
      case '28000':
        if (/^role ".*" does not exist$/.test(message)) {
          return `${message} on the PostgreSQL server at ${at} (DATABASE_URL); fix the user in DATABASE_URL, or create the role as a superuser: createuser ${where} --pwprompt ${target.user ?? 'NAME'}`
        }
        return `the PostgreSQL server at ${at} does not accept this connection (DATABASE_URL): ${message}; allow it in pg_hba.conf, or add ?sslmode=require if it accepts only SSL connections`
      case '28P01':
        return `${message} at ${at} (DATABASE_URL); check the user and password in DATABASE_URL (characters such as @ : / # in the password must be percent-encoded, e.g. @ as %40)`
      case '42501':
        return `the role ${target.user === undefined ? '' : `"${target.user}" `}lacks a privilege the server needs on ${at} (${message}) (DATABASE_URL); to create its tables it needs CREATE on the database and schema public; simplest: ALTER DATABASE ${target.database ?? 'NAME'} OWNER TO ${target.user ?? 'ROLE'}`
      case '53300':
        return `the PostgreSQL server at ${at} has no free connection slots (${message}) (DATABASE_URL); raise max_connections, or run fewer processes`
      case '57P03':
        return `the PostgreSQL server at ${at} is not accepting connections yet (${message}) (DATABASE_URL); try again when it has started`
      default:
        return `the PostgreSQL server at ${at} refused (DATABASE_URL): ${message} (SQLSTATE ${code})`
    }
  }
  if (typeof code !== 'string') return undefined
  if (code === 'ECONNREFUSED') return `cannot connect to PostgreSQL at ${at} (DATABASE_URL): connection refused; is PostgreSQL running, on that host and port?`
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `cannot connect to PostgreSQL at ${at} (DATABASE_URL): the host name "${target.host}" does not resolve; check the host in DATABASE_URL`
  if (code === 'CONNECT_TIMEOUT' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return `cannot connect to PostgreSQL at ${at} (DATABASE_URL): no answer (${code}); check the host and port, and any firewall between`
  }
  if (TLS_CODES.test(code) || /\b(TLS|SSL)\b/.test(message)) {
    return `cannot connect to PostgreSQL at ${at} (DATABASE_URL): TLS failed (${message}); match sslmode in DATABASE_URL to the server (drop it if the server has no SSL)`
  }
  if (isDatabaseUnavailable(cause)) return `cannot connect to PostgreSQL at ${at} (DATABASE_URL): ${message === '' ? code : message}; is PostgreSQL running, on that host and port?`
  return undefined
}
