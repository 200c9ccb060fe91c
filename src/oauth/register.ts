import type { FastifyInstance } from 'fastify'
import type { OAuthRuntime } from '../runtime.ts'
import { registerDynamicClient, registrationResponse } from './client-store.ts'
import { OAuthError } from './errors.ts'
import { allowAnyOrigin, noStore, rateLimit, setOAuthJsonErrorHandler } from './http.ts'

/** RFC 7591 registrations are small; claude.ai's is about 250 bytes. */
const REGISTRATION_BODY_LIMIT = 16 * 1024

/**
 * Dynamic client registration (RFC 7591), open as MCP clients expect, bounded in size and rate
 * limited per client IP. Also at `/register`, the 2025-03-26 fallback path.
 */
export default async function registerRoutes (fastify: FastifyInstance, { runtime }: { runtime: OAuthRuntime }): Promise<void> {
  const { config, database, audit } = runtime
  setOAuthJsonErrorHandler(fastify, { badRequestError: 'invalid_client_metadata' })
  allowAnyOrigin(fastify, ['/oauth/register', '/register'])
  for (const path of ['/oauth/register', '/register']) {
    fastify.post(path, { bodyLimit: REGISTRATION_BODY_LIMIT, config: { rateLimit: rateLimit(config, 'register') } }, async (request, reply) => {
      if (!/^application\/json\b/i.test(request.headers['content-type'] ?? '')) {
        throw new OAuthError('invalid_client_metadata', 'Send the client metadata as application/json')
      }
      const registered = await registerDynamicClient(database.db, request.body)
      audit.record({ kind: 'oauth', action: 'register', outcome: 'ok', clientId: registered.client.clientId, detail: registered.client.tokenEndpointAuthMethod })
      return await noStore(reply).code(201).send(registrationResponse(registered))
    })
  }
}
