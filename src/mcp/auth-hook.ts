import { setTimeout as sleep } from 'node:timers/promises'
import type { onRequestAsyncHookHandler } from 'fastify'
import { THROTTLED, type Authenticator, type LookupBudget } from '../auth/authenticator.ts'
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

/**
 * Failed bearer attempts (401 invalid_token) per client address and minute, scaled by
 * RATE_LIMIT_MULTIPLIER. Past them that address's unknown tokens wait for the slow lane and its
 * failing answers are paced (docs/decisions/0023-bearer-lookup-budget.md).
 */
const BEARER_FAILURES_PER_MINUTE = 30

/** A failing answer to an address past its failures comes no sooner than this after its request (the slow lane's interval). */
const FAILURE_PACE_MS = 100

/** What a 429 from the full slow lane asks the client to wait. */
const THROTTLED_RETRY_AFTER_SECONDS = 1

export interface AuthHookOptions {
  authenticator: Authenticator
  resourceMetadataUrl: string
  /** Scales the failures allowed per address; 0 turns the limit off (every unknown token is looked up at once). */
  rateLimitMultiplier: number
}

/**
 * Bearer authentication for /mcp (DESIGN.md, "The /mcp auth hook"): no credentials get a
 * challenge without an error code (RFC 6750 §3.1), a bad token `invalid_token`; either way
 * nothing else runs. Sets `request.auth`.
 *
 * Failing clients are slowed, never the others behind the same address (a NAT, a machine with
 * many agents, a proxy without TRUST_PROXY): a refused token is remembered and answered without
 * the database, and a token valid here lately is always looked up. An address that failed 30
 * times this minute gets its failing answers no sooner than 100 ms after it asked, and its
 * unknown tokens are looked up by the authenticator's slow lane (batched, at a fixed rate):
 * delayed, not refused. Only when the slow lane is full is the answer 429.
 */
export function createAuthHook ({ authenticator, resourceMetadataUrl, rateLimitMultiplier }: AuthHookOptions): onRequestAsyncHookHandler {
  const failures = rateLimitMultiplier === 0
    ? undefined
    : new FailureLimiter(Math.max(1, Math.round(BEARER_FAILURES_PER_MINUTE * rateLimitMultiplier)), 60_000)
  const budget: LookupBudget | undefined = failures === undefined
    ? undefined
    : { take: (ip) => failures.take(clientKey(ip)), release: (ip) => { failures.release(clientKey(ip)) } }

  return async function authenticate (request, reply) {
    if (request.method === 'OPTIONS') return
    const arrived = performance.now()
    const bearer = parseBearer(request.headers.authorization)
    if (bearer.status === 'missing' || bearer.status === 'unsupported') {
      reply.header('WWW-Authenticate', bearerChallenge({ resourceMetadataUrl, scope: SCOPES.join(' ') }))
      return await sendRpcError(reply, { status: 401, code: -32000, message: 'Authentication required: send Authorization: Bearer <token> (an API token, or an OAuth access token from this server)' })
    }
    const auth = bearer.status === 'ok' ? await authenticator.resolve(bearer.token, budget, request.ip) : null
    if (auth !== null && auth !== THROTTLED) {
      request.auth = auth
      return
    }
    if (failures !== undefined) {
      const key = clientKey(request.ip)
      if (auth === null) failures.fail(key)
      // Paced: no sooner than 100 ms after the request came (a lookup in the slow lane already waited).
      const pace = failures.retryAfter(key) > 0 ? FAILURE_PACE_MS - (performance.now() - arrived) : 0
      if (pace > 0) await sleep(pace)
    }
    if (auth === THROTTLED) {
      reply.header('Retry-After', String(THROTTLED_RETRY_AFTER_SECONDS))
      return await sendRpcError(reply, { status: 429, code: -32000, message: `Too many requests with invalid tokens from your address; retry in ${THROTTLED_RETRY_AFTER_SECONDS} s` })
    }
    reply.header('WWW-Authenticate', bearerChallenge({
      resourceMetadataUrl, error: 'invalid_token', errorDescription: 'The access token is invalid, expired or revoked'
    }))
    return await sendRpcError(reply, { status: 401, code: -32000, message: 'Invalid token: it is unknown, expired, revoked, for another resource, or its principal is disabled' })
  }
}
