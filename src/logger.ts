import { pino, type LogFn, type LoggerOptions } from 'pino'
import type { LogLevel } from './config.ts'

/** Query parameters whose values are secrets or single-use credentials. */
const SECRET_PARAMS = new Set([
  'code', 'token', 'access_token', 'refresh_token', 'id_token', 'client_secret', 'code_verifier',
  'login_code', 'api_token', 'password', 'assertion', 'client_assertion', 'state',
  // The consent page's transaction (the IdP sign-in start link carries it in the query).
  'transaction'
])

/** A URL fit for logs: the values of secret-bearing query parameters are replaced. */
export function redactUrl (url: string): string {
  const q = url.indexOf('?')
  if (q === -1) return url
  const params = url.slice(q + 1).split('&').map((pair) => {
    const eq = pair.indexOf('=')
    const name = decodeSafely(eq === -1 ? pair : pair.slice(0, eq)).toLowerCase()
    return eq !== -1 && SECRET_PARAMS.has(name) ? `${pair.slice(0, eq)}=[redacted]` : pair
  })
  return `${url.slice(0, q)}?${params.join('&')}`
}

function decodeSafely (value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '))
  } catch {
    return value
  }
}

/**
 * An error fit for logs. Drizzle wraps driver errors in one whose message repeats the query's
 * parameters (which may hold token hashes or message bodies): log the driver error instead.
 */
export function serializeError (err: unknown): Record<string, unknown> {
  if (!(err instanceof Error)) return { message: String(err) }
  const cause = (err as { cause?: unknown }).cause
  if (err.name === 'DrizzleQueryError' && cause instanceof Error) {
    const { code, severity } = cause as { code?: string, severity?: string }
    return { type: cause.name, message: cause.message, code, severity, stack: cause.stack }
  }
  const out: Record<string, unknown> = { type: err.name, message: err.message, stack: err.stack }
  const code = (err as { code?: unknown }).code
  if (code !== undefined) out.code = code
  const statusCode = (err as { statusCode?: unknown }).statusCode
  if (statusCode !== undefined) out.statusCode = statusCode
  return out
}

/** What the one request line needs of a Fastify request and reply (no import of Fastify here). */
interface LoggedRequest { method: string, url: string, body?: unknown, routeOptions?: { url?: string | undefined } }
interface LoggedReply { statusCode: number, request: LoggedRequest }

/** A client-chosen name fit for a log line: bounded, and nothing a terminal would interpret. */
function loggable (value: string): string {
  const safe = value.slice(0, 64).replace(/[^\w./:-]/g, '?')
  return value.length > 64 ? `${safe}…` : safe
}

/**
 * The JSON-RPC method of a POST /mcp, and the tool of a tools/call, read from the body Fastify
 * has already parsed (property reads only; never the arguments). Undefined elsewhere, and when the
 * request was refused before its body was read (no credentials, wrong Origin).
 */
function rpcOf (request: LoggedRequest): { method: string, tool?: string } | undefined {
  if (request.method !== 'POST' || request.routeOptions?.url !== '/mcp') return undefined
  const body = request.body
  if (Array.isArray(body)) return { method: 'batch' }
  if (typeof body !== 'object' || body === null) return undefined
  const method = (body as { method?: unknown }).method
  if (typeof method !== 'string') return undefined
  const name = method === 'tools/call' ? (body as { params?: { name?: unknown } }).params?.name : undefined
  return typeof name === 'string' ? { method: loggable(method), tool: loggable(name) } : { method: loggable(method) }
}

/**
 * The one line logged per request: `POST /mcp 200 1.4ms tools/call whoami` as its message (what a
 * terminal shows), and the same as fields in JSON: `req` (method, redacted URL, host, address),
 * `res` (status), `responseTime` in ms (Fastify's own measure), `rpc` for /mcp.
 */
function requestLine (reply: LoggedReply, responseTime: number): { fields: Record<string, unknown>, msg: string } {
  const request = reply.request
  const rpc = rpcOf(request)
  const fields: Record<string, unknown> = { req: request, res: reply, responseTime: Math.round(responseTime * 100) / 100 }
  if (rpc !== undefined) fields.rpc = rpc
  const what = rpc === undefined ? '' : ` ${rpc.method}${rpc.tool !== undefined ? ` ${rpc.tool}` : ''}`
  return { fields, msg: `${request.method} ${redactUrl(request.url)} ${reply.statusCode} ${responseTime.toFixed(1)}ms${what}` }
}

/**
 * One line per request at `info` (operators expect that, not Fastify's two multi-line entries).
 * Fastify's own request lines (lib/log-controller.js) are recognised by message and shape and
 * rewritten here, so every Fastify instance built on this logger (public listener, admin
 * listener, tests) logs the same way: "request completed" / "request errored" become the request
 * line (errors keep `err`); "incoming request" and "stream closed prematurely" move to `debug`,
 * where a request's start is useful (long-polls); the default "Route … not found" is dropped.
 * Nothing is measured or parsed for this: the duration is Fastify's, the JSON-RPC method comes
 * from the body it already parsed. Decision 0025.
 */
function logMethod (this: pino.Logger, args: Parameters<LogFn>, method: LogFn, level: number): void {
  const [first, message] = args as unknown[]
  // Fastify's default not-found handler (unused by our listeners): the request line says 404.
  if (level === 30 && typeof first === 'string' && first.startsWith('Route ') && first.endsWith(' not found')) return
  if (typeof message === 'string' && typeof first === 'object' && first !== null && (level === 30 || level === 50)) {
    const entry = first as { req?: LoggedRequest, res?: LoggedReply, responseTime?: number, err?: unknown }
    if (entry.res?.request !== undefined && typeof entry.responseTime === 'number' &&
      ((level === 30 && message === 'request completed') || (level === 50 && message === 'request errored'))) {
      const { fields, msg } = requestLine(entry.res, entry.responseTime)
      if (entry.err !== undefined) fields.err = entry.err
      method.call(this, fields, msg)
      return
    }
    if (level === 30 && message === 'incoming request' && entry.req !== undefined) {
      if (this.isLevelEnabled('debug')) this.debug({ req: entry.req }, `incoming request: ${entry.req.method} ${redactUrl(entry.req.url)}`)
      return
    }
    if (level === 30 && message === 'stream closed prematurely') {
      if (this.isLevelEnabled('debug')) this.debug(first, message)
      return
    }
  }
  method.apply(this, args)
}

/**
 * pino-pretty on a TTY: the request line's message says it all, so its fields are not repeated
 * below it; the admin listener's lines start with "admin:". JSON output keeps every field.
 */
const PRETTY_OPTIONS = {
  translateTime: 'HH:MM:ss.l',
  ignore: 'pid,hostname,reqId,listener,req,res,responseTime,rpc',
  messageFormat: '{if listener}{listener}: {end}{msg}'
}

export function loggerOptions (level: LogLevel, pretty = process.stdout.isTTY === true): LoggerOptions {
  return {
    level,
    hooks: { logMethod },
    redact: {
      paths: [
        'req.headers.authorization', 'req.headers.cookie', 'req.headers["x-admin-token"]',
        'headers.authorization', 'authorization', 'token', 'secret', 'client_secret', 'access_token',
        'refresh_token', 'code', 'code_verifier', 'body', '*.token', '*.client_secret', '*.access_token',
        '*.refresh_token', '*.code_verifier'
      ],
      censor: '[redacted]'
    },
    serializers: {
      req (req: { method: string, url: string, host?: string, ip?: string }) {
        return { method: req.method, url: redactUrl(req.url), host: req.host, remoteAddress: req.ip }
      },
      res (reply: { statusCode: number }) {
        return { statusCode: reply.statusCode }
      },
      err: serializeError
    },
    ...(pretty ? { transport: { target: 'pino-pretty', options: PRETTY_OPTIONS } } : {})
  }
}

export function createLogger (level: LogLevel, pretty?: boolean): pino.Logger {
  return pino(loggerOptions(level, pretty))
}
