import { isIP } from 'node:net'
import { connectTimeoutProblem } from './db/connect-timeout.ts'
import { isLoopbackHost } from './lib/loopback.ts'
import { loadIdpFile } from './idp/config.ts'
import type { IdpProvider } from './idp/types.ts'

/**
 * Configuration read once from the environment at start. Every rule here is a promise made in
 * the README's configuration table; a value that cannot work stops the start with one line that
 * names the variable and the fix (see ConfigError).
 */
export interface Config {
  port: number
  host: string
  /** External origin as clients see it, without trailing slash. Also the OAuth issuer. */
  publicUrl: string
  /** `publicUrl + "/mcp"`: the protected resource and the audience of access tokens. */
  resourceUrl: string
  databaseUrl: string | undefined
  dataDir: string
  adminPort: number
  adminHost: string
  adminToken: string | undefined
  autoApprovePrincipal: string | undefined
  trustProxy: boolean | string
  accessTokenTtl: number
  refreshTokenTtl: number
  authCodeTtl: number
  allowedOrigins: string[]
  rateLimitMultiplier: number
  /** Open subscriptions/listen streams one replica holds at most (MAX_LISTEN_STREAMS). */
  maxListenStreams: number
  logLevel: LogLevel
  /** Messages and audit rows older than this many days are purged; 0 keeps them forever. */
  messageRetentionDays: number
  auditRetentionDays: number
  /** Hosts whose Client ID Metadata Documents may be fetched from private addresses (tests only). */
  cimdAllowPrivateHosts: string[]
  /** IDP_FILE: the JSON file naming external identity providers, if any. */
  idpFile: string | undefined
  /** The providers in IDP_FILE, validated, defaults filled in; empty when IDP_FILE is unset. */
  identityProviders: IdpProvider[]
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** Origins of the clients this server exists for; ALLOWED_ORIGINS adds to them. */
export const DEFAULT_ALLOWED_ORIGINS = [
  'https://claude.ai',
  'https://claude.com',
  'https://chatgpt.com',
  'http://localhost:6274',
  'http://127.0.0.1:6274'
]

export const PRINCIPAL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

export class ConfigError extends Error {
  readonly variable: string
  readonly problem: string

  constructor (variable: string, problem: string) {
    super(`${variable}: ${problem}`)
    this.variable = variable
    this.problem = problem
    this.name = 'ConfigError'
  }
}

type Env = Record<string, string | undefined>

/**
 * Whether postgres.js can parse this URL: it reads the hosts (several may be listed, comma-separated)
 * itself and gives the rest, with the first host, to URL. A failure there would throw at the first
 * query, and Node would print the URL, password included, with the stack trace.
 */
function parsesAsPostgresUrl (url: string): boolean {
  try {
    let hosts = url.slice(url.indexOf('://') + 3).split(/[?/]/)[0] ?? ''
    hosts = decodeURIComponent(hosts.slice(hosts.indexOf('@') + 1))
    const parsed = new URL(url.replace(hosts, hosts.split(',')[0] ?? ''))
    decodeURIComponent(parsed.username)
    decodeURIComponent(parsed.password)
    return true
  } catch {
    return false
  }
}

export function loadConfig (env: Env = process.env): Config {
  const read = (name: string): string | undefined => {
    const value = env[name]?.trim()
    return value === undefined || value === '' ? undefined : value
  }

  const port = readPort(read, 'PORT', 8088)
  const host = read('HOST') ?? 'localhost'
  const allowInsecure = readFlag(read, 'ALLOW_INSECURE_PUBLIC_URL')
  const publicUrl = readPublicUrl(read('PUBLIC_URL') ?? `http://localhost:${port === 0 ? 8088 : port}`, allowInsecure)

  const databaseUrl = read('DATABASE_URL')
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL', 'must start with postgres:// or postgresql:// (unset it to use the embedded database in DATA_DIR)')
  }
  if (databaseUrl !== undefined && !parsesAsPostgresUrl(databaseUrl)) {
    // Never the value itself: it holds the password.
    throw new ConfigError('DATABASE_URL', 'is not a valid URL; the form is postgres://USER:PASSWORD@HOST:PORT/DATABASE (port 1-65535), ' +
      'with characters such as @ : / # ? % in the user or password percent-encoded (# as %23)')
  }
  const timeoutProblem = databaseUrl === undefined ? undefined : connectTimeoutProblem(databaseUrl)
  if (timeoutProblem !== undefined) throw new ConfigError('DATABASE_URL', timeoutProblem)

  const adminPort = readPort(read, 'ADMIN_PORT', 8089)
  const adminHost = read('ADMIN_HOST') ?? '127.0.0.1'
  const adminToken = read('ADMIN_TOKEN')
  if (adminToken !== undefined && adminToken.length < 16) {
    throw new ConfigError('ADMIN_TOKEN', 'must be at least 16 characters (try: openssl rand -hex 32)')
  }
  // It travels as a bearer token, so it must be one (RFC 6750 b64token), or no client could send it.
  if (adminToken !== undefined && !/^[A-Za-z0-9\-._~+/]+=*$/.test(adminToken)) {
    throw new ConfigError('ADMIN_TOKEN', 'may only use letters, digits and - . _ ~ + / (try: openssl rand -hex 32)')
  }
  if (!isLoopbackHost(adminHost) && adminToken === undefined) {
    throw new ConfigError('ADMIN_HOST', `binds ${adminHost}, which is not loopback; set ADMIN_TOKEN too, or keep ADMIN_HOST=127.0.0.1`)
  }
  if (port !== 0 && adminPort === port && sameListenHost(host, adminHost)) {
    throw new ConfigError('ADMIN_PORT', `is the same as PORT (${port}); choose another port for the admin listener`)
  }

  const autoApprovePrincipal = read('AUTO_APPROVE_PRINCIPAL')
  if (autoApprovePrincipal !== undefined && !PRINCIPAL_NAME_PATTERN.test(autoApprovePrincipal)) {
    throw new ConfigError('AUTO_APPROVE_PRINCIPAL', 'must be a principal name (letters, digits, "_", "." or "-", at most 64 characters)')
  }

  const accessTokenTtl = readSeconds(read, 'ACCESS_TOKEN_TTL', 3600, 60, 86400 * 7)
  const refreshTokenTtl = readSeconds(read, 'REFRESH_TOKEN_TTL', 2592000, 300, 86400 * 365)
  const authCodeTtl = readSeconds(read, 'AUTH_CODE_TTL', 120, 10, 600)
  if (refreshTokenTtl < accessTokenTtl) {
    throw new ConfigError('REFRESH_TOKEN_TTL', `(${refreshTokenTtl}) is shorter than ACCESS_TOKEN_TTL (${accessTokenTtl}); raise it or lower ACCESS_TOKEN_TTL`)
  }

  const rateLimitMultiplier = readNumber(read, 'RATE_LIMIT_MULTIPLIER', 1, 0, 1000)
  const logLevel = (read('LOG_LEVEL') ?? 'info').toLowerCase()
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`)
  }

  const resourceUrl = `${publicUrl}/mcp`
  const idpFile = read('IDP_FILE')
  const identityProviders = idpFile === undefined ? [] : loadIdpFile(idpFile, { publicUrl, resourceUrl })

  return {
    port,
    host,
    publicUrl,
    resourceUrl,
    databaseUrl,
    dataDir: read('DATA_DIR') ?? './data',
    adminPort,
    adminHost,
    adminToken,
    autoApprovePrincipal,
    trustProxy: readTrustProxy(read('TRUST_PROXY')),
    accessTokenTtl,
    refreshTokenTtl,
    authCodeTtl,
    allowedOrigins: [...new Set([...DEFAULT_ALLOWED_ORIGINS, publicUrl, ...readOrigins(read('ALLOWED_ORIGINS'))])],
    rateLimitMultiplier,
    maxListenStreams: readNumber(read, 'MAX_LISTEN_STREAMS', 2000, 1, 100_000, true),
    logLevel: logLevel as LogLevel,
    messageRetentionDays: readNumber(read, 'MESSAGE_RETENTION_DAYS', 0, 0, 36500, true),
    auditRetentionDays: readNumber(read, 'AUDIT_RETENTION_DAYS', 90, 0, 36500, true),
    cimdAllowPrivateHosts: (read('CIMD_ALLOW_PRIVATE_HOSTS') ?? '').split(/[\s,]+/).filter(Boolean).map((h) => h.toLowerCase()),
    idpFile,
    identityProviders
  }
}

function sameListenHost (a: string, b: string): boolean {
  const wildcard = (h: string): boolean => h === '0.0.0.0' || h === '::'
  return a === b || wildcard(a) || wildcard(b) || (isLoopbackHost(a) && isLoopbackHost(b))
}

function readPublicUrl (raw: string, allowInsecure: boolean): string {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError('PUBLIC_URL', `is not a URL: "${raw}" (expected e.g. https://bus.example.com)`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError('PUBLIC_URL', 'must be an http(s) URL')
  }
  if (url.username !== '' || url.password !== '') {
    throw new ConfigError('PUBLIC_URL', 'must not contain credentials')
  }
  if (url.search !== '' || url.hash !== '' || raw.includes('?') || raw.includes('#')) {
    throw new ConfigError('PUBLIC_URL', 'must not have a query or fragment')
  }
  if (url.pathname !== '/') {
    throw new ConfigError('PUBLIC_URL', `must be an origin without a path (got path "${url.pathname}"); serve the bus at the root of its own host`)
  }
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname) && !allowInsecure) {
    throw new ConfigError('PUBLIC_URL', 'must use https unless its host is loopback; set ALLOW_INSECURE_PUBLIC_URL=1 only for a trusted private network')
  }
  // URL.origin lowercases scheme and host and drops a default port: the issuer clients compare against.
  return url.origin
}

function readOrigins (raw: string | undefined): string[] {
  if (raw === undefined) return []
  return raw.split(/[\s,]+/).filter(Boolean).map((entry) => {
    let url: URL
    try {
      url = new URL(entry)
    } catch {
      throw new ConfigError('ALLOWED_ORIGINS', `"${entry}" is not an origin (expected e.g. https://app.example.com)`)
    }
    // Origins are matched exactly: a wildcard would silently match nothing, so refuse it.
    if (url.origin === 'null' || url.pathname !== '/' || url.hostname.includes('*') || entry.replace(/\/$/, '') !== url.origin) {
      throw new ConfigError('ALLOWED_ORIGINS', `"${entry}" is not an origin (scheme://host[:port], no path, no wildcard)`)
    }
    return url.origin
  })
}

function readTrustProxy (raw: string | undefined): boolean | string {
  if (raw === undefined || raw === 'false' || raw === '0') return false
  if (raw === 'true') return true
  // Fastify treats a hop count as "trust nobody" (it cannot verify the peer), so refuse it.
  if (/^[0-9]+$/.test(raw)) throw new ConfigError('TRUST_PROXY', `a hop count ("${raw}") is not supported; give the proxy's address or CIDR, or "loopback" for a proxy on this host`)
  const named = new Set(['loopback', 'linklocal', 'uniquelocal'])
  for (const part of raw.split(',').map((p) => p.trim())) {
    const [address, mask, ...rest] = part.split('/')
    const family = isIP(address ?? '')
    const maskOk = mask === undefined || (/^[0-9]{1,3}$/.test(mask) && Number(mask) <= (family === 6 ? 128 : 32))
    if (named.has(part)) continue
    if (family === 0 || !maskOk || rest.length > 0) {
      throw new ConfigError('TRUST_PROXY', `"${part}" is not an IP, a CIDR, or one of loopback, linklocal, uniquelocal`)
    }
  }
  return raw
}

function readFlag (read: (name: string) => string | undefined, name: string): boolean {
  const raw = read(name)
  if (raw === undefined || raw === '0' || raw === 'false') return false
  if (raw === '1' || raw === 'true') return true
  throw new ConfigError(name, 'must be 1 or 0')
}

function readPort (read: (name: string) => string | undefined, name: string, fallback: number): number {
  const raw = read(name)
  if (raw === undefined) return fallback
  if (!/^[0-9]+$/.test(raw) || Number(raw) > 65535) {
    throw new ConfigError(name, `must be a port number from 0 to 65535 (got "${raw}")`)
  }
  return Number(raw)
}

function readSeconds (read: (name: string) => string | undefined, name: string, fallback: number, min: number, max: number): number {
  const raw = read(name)
  if (raw === undefined) return fallback
  if (!/^[0-9]+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new ConfigError(name, `must be a whole number of seconds from ${min} to ${max} (got "${raw}")`)
  }
  return Number(raw)
}

function readNumber (read: (name: string) => string | undefined, name: string, fallback: number, min: number, max: number, integer = false): number {
  const raw = read(name)
  if (raw === undefined) return fallback
  const value = Number(raw)
  if (!/^[0-9]+(\.[0-9]+)?$/.test(raw) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new ConfigError(name, `must be a ${integer ? 'whole ' : ''}number from ${min} to ${max} (got "${raw}")`)
  }
  return value
}
