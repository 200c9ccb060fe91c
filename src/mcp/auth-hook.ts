import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger, onRequestAsyncHookHandler } from 'fastify'
import { THROTTLED, type Authenticator, type LookupBudget } from '../auth/authenticator.ts'
import { parseBearer } from '../auth/bearer.ts'
import { bearerChallenge } from '../auth/challenge.ts'
import { SCOPES } from '../auth/scopes.ts'
import type { AuthContext } from '../auth/types.ts'
import { looksLikeJwt, MAX_TOKEN_BYTES } from '../idp/jwt.ts'
import type { TokenHeader } from '../idp/types.ts'
import { UNAVAILABLE, type ExternalVerifier } from '../idp/verifier.ts'
import { clientKey, FailureLimiter } from '../lib/failure-limiter.ts'
import { kindOfSecret } from '../lib/secrets.ts'
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

/** What a 503 asks a client to wait when its identity provider cannot be asked (no keys yet, introspection down). */
const PROVIDER_RETRY_AFTER_SECONDS = 10

/** Cloudflare Access puts the signed-in user's (or service token's) JWT in this header. */
const ACCESS_HEADER = 'cf-access-jwt-assertion'

export interface AuthHookOptions {
  authenticator: Authenticator
  resourceMetadataUrl: string
  /** Scales the failures allowed per address; 0 turns the limit off (every unknown token is looked up at once). */
  rateLimitMultiplier: number
  /** External identity providers (IDP_FILE); absent or empty: only our own tokens. */
  external?: ExternalVerifier | undefined
}

type Resolved = AuthContext | null | typeof THROTTLED | typeof UNAVAILABLE

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
export function createAuthHook ({ authenticator, resourceMetadataUrl, rateLimitMultiplier, external: configured }: AuthHookOptions): onRequestAsyncHookHandler {
  const external = configured?.configured === true ? configured : undefined
  const maxTokenLength = external === undefined ? undefined : MAX_TOKEN_BYTES
  const readsAccessHeader = external?.readsAccessHeader === true
  const failures = rateLimitMultiplier === 0
    ? undefined
    : new FailureLimiter(Math.max(1, Math.round(BEARER_FAILURES_PER_MINUTE * rateLimitMultiplier)), 60_000)
  const budget: LookupBudget | undefined = failures === undefined
    ? undefined
    : { take: (ip) => failures.take(clientKey(ip)), release: (ip) => { failures.release(clientKey(ip)) } }

  return async function authenticate (request, reply) {
    if (request.method === 'OPTIONS') return
    const arrived = performance.now()
    const bearer = parseBearer(request.headers.authorization, maxTokenLength)
    // Behind Cloudflare Access a request carries Access's JWT; an Authorization header still wins.
    const accessToken = readsAccessHeader && bearer.status !== 'ok' ? request.headers[ACCESS_HEADER] : undefined
    const credential: { token: string, source: TokenHeader } | undefined = bearer.status === 'ok'
      ? { token: bearer.token, source: 'authorization' }
      : typeof accessToken === 'string' && accessToken !== '' ? { token: accessToken, source: ACCESS_HEADER } : undefined
    if (credential === undefined && (bearer.status === 'missing' || bearer.status === 'unsupported')) {
      reply.header('WWW-Authenticate', bearerChallenge({ resourceMetadataUrl, scope: SCOPES.join(' ') }))
      return await sendRpcError(reply, { status: 401, code: -32000, message: 'Authentication required: send Authorization: Bearer <token> (an API token, or an OAuth access token from this server)' })
    }
    const auth: Resolved = credential === undefined ? null : await resolve(credential.token, credential.source, request.ip, request.log)
    if (auth !== null && auth !== THROTTLED && auth !== UNAVAILABLE) {
      request.auth = auth
      return
    }
    if (auth === UNAVAILABLE) {
      reply.header('Retry-After', String(PROVIDER_RETRY_AFTER_SECONDS))
      return await sendRpcError(reply, { status: 503, code: -32000, message: `The identity provider that issued this token cannot be reached to check it; retry in ${PROVIDER_RETRY_AFTER_SECONDS} s` })
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

  /**
   * Our own tokens go to the authenticator. With external providers configured, a JWT (ours
   * never are) or Cloudflare Access's header goes to them alone, and an opaque token we do not
   * know goes to the introspecting provider, if there is one.
   */
  async function resolve (token: string, source: TokenHeader, ip: string, log: FastifyBaseLogger): Promise<Resolved> {
    const externalOnly = external !== undefined && (source !== 'authorization' || looksLikeJwt(token))
    if (!externalOnly) {
      const own = await authenticator.resolve(token, budget, ip)
      if (own !== null || external === undefined || !external.introspects || kindOfSecret(token) !== undefined) return own
    }
    const result = await (external as ExternalVerifier).resolve(token, source)
    if (result.status === 'ok') return result.context
    if (result.status === UNAVAILABLE) {
      log.warn({ provider: result.provider }, 'identity provider unavailable: no usable keys or introspection failed')
      return UNAVAILABLE
    }
    log.info({ provider: result.provider }, `external token refused: ${result.reason}`)
    return null
  }
}
