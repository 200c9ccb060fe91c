import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../config.ts'
import { classifyAndLog, RETRY_AFTER_SECONDS } from '../lib/errors.ts'
import { OAuthError, type OAuthErrorCode } from './errors.ts'

/** RFC 6749 §5.1: token and registration responses must not be cached. */
export function noStore (reply: FastifyReply): FastifyReply {
  return reply.header('Cache-Control', 'no-store').header('Pragma', 'no-cache')
}

/**
 * The JSON error shape of RFC 6749 §5.2 / RFC 7591 §3.2.2 for everything a JSON OAuth
 * endpoint can fail with: its own OAuthErrors, body parser errors, rate limits, an
 * unavailable database. Never a stack trace.
 */
export function setOAuthJsonErrorHandler (fastify: FastifyInstance, options: { badRequestError?: OAuthErrorCode } = {}): void {
  fastify.setErrorHandler(async (error: FastifyError | OAuthError, request, reply) => {
    noStore(reply)
    if (error instanceof OAuthError) {
      if (error.error === 'invalid_client' && request.headers.authorization?.toLowerCase().startsWith('basic') === true) {
        reply.header('WWW-Authenticate', 'Basic realm="bus-mcp", charset="UTF-8"')
      }
      return await reply.code(error.statusCode).send(error.toJSON())
    }
    const { status, body } = describeRequestError(error, request, options.badRequestError)
    if (status === 503) reply.header('Retry-After', RETRY_AFTER_SECONDS)
    return await reply.code(status).send(body)
  })
}

/**
 * `badRequestError` is the code for a body that cannot be read: `invalid_request` (RFC 6749
 * §5.2), or `invalid_client_metadata` for registration, whose RFC 7591 §3.2.2 error codes have
 * no `invalid_request`.
 */
export function describeRequestError (error: FastifyError, request: FastifyRequest, badRequestError: OAuthErrorCode = 'invalid_request'): { status: number, body: { error: string, error_description: string } } {
  const failure = classifyAndLog(request.log, error, 'oauth request failed')
  const code = failure.kind === 'unavailable' ? 'temporarily_unavailable' : failure.kind === 'internal' ? 'server_error' : failure.kind === 'rate_limited' ? 'too_many_requests' : badRequestError
  // RFC 6749 §5.2 has no 415: a body of the wrong type is a malformed request.
  return { status: failure.status === 415 ? 400 : failure.status, body: { error: code, error_description: failure.message } }
}

const CORS_HEADERS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type, MCP-Protocol-Version',
  'Access-Control-Max-Age': '86400'
}

/**
 * CORS for endpoints browsers call directly (Inspector's Direct mode): any origin, never
 * credentials (no cookies are involved; client secrets travel in the request). Adds the headers
 * to every reply in the calling plugin's scope and answers preflights for `paths`.
 */
export function allowAnyOrigin (fastify: FastifyInstance, paths: readonly string[]): void {
  fastify.addHook('onRequest', async (_request, reply) => {
    reply.header('Access-Control-Allow-Origin', '*')
    reply.header('Access-Control-Expose-Headers', 'WWW-Authenticate, Retry-After')
  })
  for (const path of paths) {
    fastify.options(path, { config: { rateLimit: false } }, async (_request, reply) => await reply.headers(CORS_HEADERS).code(204).send())
  }
}

/** Per-endpoint limits (requests per window per client IP), scaled by RATE_LIMIT_MULTIPLIER. */
export const RATE_LIMITS = {
  register: { max: 20, timeWindow: 3_600_000 },
  authorize: { max: 100, timeWindow: 900_000 },
  token: { max: 50, timeWindow: 900_000 },
  revoke: { max: 50, timeWindow: 900_000 }
} as const

/** Route config for @fastify/rate-limit; `false` when RATE_LIMIT_MULTIPLIER is 0. */
export function rateLimit (config: Config, which: keyof typeof RATE_LIMITS): { max: number, timeWindow: number, groupId: string } | false {
  if (config.rateLimitMultiplier === 0) return false
  const limit = RATE_LIMITS[which]
  // One counter per endpoint, whichever of its paths (and methods) a client uses.
  return { max: Math.max(1, Math.round(limit.max * config.rateLimitMultiplier)), timeWindow: limit.timeWindow, groupId: which }
}
