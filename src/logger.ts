import { pino, type LoggerOptions } from 'pino'
import type { LogLevel } from './config.ts'

/** Query parameters whose values are secrets or single-use credentials. */
const SECRET_PARAMS = new Set([
  'code', 'token', 'access_token', 'refresh_token', 'id_token', 'client_secret', 'code_verifier',
  'login_code', 'api_token', 'password', 'assertion', 'client_assertion', 'state'
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

export function loggerOptions (level: LogLevel, pretty = process.stdout.isTTY === true): LoggerOptions {
  return {
    level,
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
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } } : {})
  }
}

export function createLogger (level: LogLevel, pretty?: boolean): pino.Logger {
  return pino(loggerOptions(level, pretty))
}
