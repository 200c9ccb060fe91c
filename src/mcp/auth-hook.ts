import type { onRequestAsyncHookHandler } from 'fastify'
import type { Authenticator } from '../auth/authenticator.ts'
import { parseBearer } from '../auth/bearer.ts'
import { bearerChallenge } from '../auth/challenge.ts'
import { SCOPES } from '../auth/scopes.ts'
import type { AuthContext } from '../auth/types.ts'
import { clientKey, FailureLimiter } from '../lib/failure-limiter.ts'
import { sendRpcError } from './protocol.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the /mcp auth hook; null everywhere else. */
    auth: AuthContext | null
  }
}

const BEARER_FAILURES_PER_MINUTE = 30

export interface AuthHookOptions {
  authenticator: Authenticator
  resourceMetadataUrl: string
  /** Scales the failed-bearer limit; 0 turns it off. */
  rateLimitMultiplier: number
}

/**
 * Bearer authentication for /mcp (DESIGN.md, "The /mcp auth hook"): no credentials get a
 * challenge without an error code (RFC 6750 §3.1), a bad token `invalid_token`; either way
 * nothing else runs. Sets `request.auth`.
 */
export function createAuthHook ({ authenticator, resourceMetadataUrl, rateLimitMultiplier }: AuthHookOptions): onRequestAsyncHookHandler {
  // Failed bearer attempts per client IP: guessing tokens is slowed, valid traffic never counted.
  const failures = rateLimitMultiplier === 0
    ? undefined
    : new FailureLimiter(Math.max(1, Math.round(BEARER_FAILURES_PER_MINUTE * rateLimitMultiplier)), 60_000)

  return async function authenticate (request, reply) {
    if (request.method === 'OPTIONS') return
    const bearer = parseBearer(request.headers.authorization)
    if (bearer.status === 'missing' || bearer.status === 'unsupported') {
      reply.header('WWW-Authenticate', bearerChallenge({ resourceMetadataUrl, scope: SCOPES.join(' ') }))
      return await sendRpcError(reply, { status: 401, code: -32000, message: 'Authentication required: send Authorization: Bearer <token> (an API token, or an OAuth access token from this server)' })
    }
    // An address that sent too many invalid tokens gets no database lookups for a while; tokens
    // already known to this replica (used in the last 30 s) still work, so other clients behind
    // the same address (a proxy without TRUST_PROXY, a NAT) are not locked out with it.
    const blockedFor = failures?.retryAfter(clientKey(request.ip)) ?? 0
    if (blockedFor > 0) {
      const known = bearer.status === 'ok' ? authenticator.fromCache(bearer.token) : null
      if (known === null) {
        reply.header('Retry-After', String(blockedFor))
        return await sendRpcError(reply, { status: 429, code: -32000, message: `Too many requests with invalid tokens from your address; retry in ${blockedFor} s` })
      }
      request.auth = known
      return
    }
    const auth = bearer.status === 'ok' ? await authenticator.authenticate(bearer.token) : null
    if (auth === null) {
      failures?.fail(clientKey(request.ip))
      reply.header('WWW-Authenticate', bearerChallenge({
        resourceMetadataUrl, error: 'invalid_token', errorDescription: 'The access token is invalid, expired or revoked'
      }))
      return await sendRpcError(reply, { status: 401, code: -32000, message: 'Invalid token: it is unknown, expired, revoked, for another resource, or its principal is disabled' })
    }
    request.auth = auth
  }
}
