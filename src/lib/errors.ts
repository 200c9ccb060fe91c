import type { FastifyBaseLogger } from 'fastify'
import { isDatabaseUnavailable } from '../db/errors.ts'

/**
 * What went wrong with a request, whatever the surface answering it (OAuth JSON, JSON-RPC on
 * /mcp, the authorization page, the admin API, everything else): one classification, one
 * renderer per surface. A renderer picks its own words and body shape; it never decides the
 * status, whether the client may retry, or what is logged.
 */
export type ErrorKind =
  /** The database cannot be reached: 503, retry after a few seconds. */
  | 'unavailable'
  /** Anything unexpected: 500, logged, never described. */
  | 'internal'
  | 'rate_limited'
  | 'body_too_large'
  | 'unsupported_media_type'
  /** A body that is not valid JSON, form data, or whatever the route parses. */
  | 'unparsable'
  /** Any other 4xx raised by Fastify or a plugin: its own message is safe to show. */
  | 'rejected'

export interface ClassifiedError {
  kind: ErrorKind
  status: number
  /** Safe to show: never a stack, a query or a secret. */
  message: string
  /** Seconds, for the Retry-After header. */
  retryAfter?: string
}

export const RETRY_AFTER_SECONDS = '5'

export function classifyError (error: unknown): ClassifiedError {
  if (isDatabaseUnavailable(error)) {
    return { kind: 'unavailable', status: 503, message: 'The database is unavailable; try again shortly', retryAfter: RETRY_AFTER_SECONDS }
  }
  const { statusCode, code, message } = (error ?? {}) as { statusCode?: unknown, code?: unknown, message?: unknown }
  const status = typeof statusCode === 'number' && statusCode >= 400 && statusCode < 600 ? statusCode : 500
  if (status >= 500) return { kind: 'internal', status: 500, message: 'Internal Server Error' }
  const text = typeof message === 'string' ? message : 'Bad Request'
  if (status === 429) return { kind: 'rate_limited', status, message: text }
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { kind: 'body_too_large', status: 413, message: 'The request body is too large' }
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return { kind: 'unsupported_media_type', status: 415, message: 'Unsupported Content-Type' }
  if ((typeof code === 'string' && code.startsWith('FST_ERR_CTP')) || error instanceof SyntaxError) {
    return { kind: 'unparsable', status: 400, message: 'The request body could not be parsed' }
  }
  return { kind: 'rejected', status, message: text }
}

/** Logs what needs an operator's eye: failures at error level, an unreachable database as a warning. */
export function logClassified (log: FastifyBaseLogger, error: unknown, classified: ClassifiedError, what: string): void {
  if (classified.kind === 'internal') log.error({ err: error }, what)
  else if (classified.kind === 'unavailable') log.warn({ err: error }, 'database unavailable')
}

/** Classifies and logs: what every error handler does first. */
export function classifyAndLog (log: FastifyBaseLogger, error: unknown, what: string): ClassifiedError {
  const classified = classifyError(error)
  logClassified(log, error, classified, what)
  return classified
}
