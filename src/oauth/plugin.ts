import rateLimitPlugin from '@fastify/rate-limit'
import type { FastifyInstance } from 'fastify'
import { clientKey } from '../lib/failure-limiter.ts'
import type { OAuthRuntime, Runtime } from '../runtime.ts'
import authorizeRoutes from './authorize.ts'
import { ClientResolver } from './client-resolver.ts'
import { SharedRateLimitStore } from './rate-limit-store.ts'
import discoveryRoutes from './discovery.ts'
import registerRoutes from './register.ts'
import tokenRoutes from './token.ts'

/**
 * The authorization server: discovery, registration, authorization (with the consent page),
 * token and revocation, each its own encapsulated plugin with its own error shape. Rate limits
 * are per client IP (TRUST_PROXY decides which address that is) and per replica.
 */
export default async function oauthRoutes (fastify: FastifyInstance, { runtime }: { runtime: OAuthRuntime & Pick<Runtime, 'log'> }): Promise<void> {
  const clients = new ClientResolver(runtime.database.db, { allowPrivateHosts: runtime.config.cimdAllowPrivateHosts, log: runtime.log })
  await fastify.register(rateLimitPlugin, {
    global: false,
    // A class the plugin instantiates once; its child() hands every route the same counters.
    store: SharedRateLimitStore,
    // Per client: an IPv4 address, or an IPv6 /64 (see clientKey).
    keyGenerator: (request) => clientKey(request.ip),
    errorResponseBuilder: (_request, context) => ({
      statusCode: 429,
      code: 'too_many_requests',
      message: `Too many requests; retry in ${Math.ceil(context.ttl / 1000)} s`
    })
  })
  await fastify.register(discoveryRoutes, { config: runtime.config })
  await fastify.register(registerRoutes, { runtime })
  await fastify.register(authorizeRoutes, { runtime, clients })
  await fastify.register(tokenRoutes, { runtime, clients })
}
