import formbody from '@fastify/formbody'
import type { FastifyInstance } from 'fastify'
import type { OAuthRuntime } from '../runtime.ts'
import { authenticateRequestClient } from './client-auth.ts'
import type { ClientResolver } from './client-resolver.ts'
import { assertNoDuplicateParams, OAuthError, singleParams } from './errors.ts'
import { clientCredentialsTokens, redeemCode, refreshTokens, revokeTokenOfClient } from './grants.ts'
import { allowAnyOrigin, noStore, rateLimit, setOAuthJsonErrorHandler } from './http.ts'
import { readRequestedScopes } from './requested-scopes.ts'
import { namesThisResource } from './resource.ts'

const FORM = /^application\/x-www-form-urlencoded\b/i
const TOKEN_PARAMS = ['grant_type', 'code', 'code_verifier', 'redirect_uri', 'refresh_token', 'scope', 'resource', 'client_id', 'client_secret'] as const

/**
 * The token endpoint (RFC 6749 §3.2, OAuth 2.1) and revocation (RFC 7009), also at the
 * 2025-03-26 fallback `/token`. Form-encoded bodies only; every parameter at most once;
 * every response `no-store`; errors in the §5.2 JSON form.
 */
export default async function tokenRoutes (fastify: FastifyInstance, { runtime, clients }: { runtime: OAuthRuntime, clients: ClientResolver }): Promise<void> {
  const { config, database, audit } = runtime
  const db = database.db
  await fastify.register(formbody, { bodyLimit: 16 * 1024 })
  setOAuthJsonErrorHandler(fastify)
  allowAnyOrigin(fastify, ['/oauth/token', '/token', '/oauth/revoke', '/revoke'])

  for (const path of ['/oauth/token', '/token']) {
    fastify.post(path, { config: { rateLimit: rateLimit(config, 'token') } }, async (request, reply) => {
      noStore(reply)
      if (!FORM.test(request.headers['content-type'] ?? '')) throw new OAuthError('invalid_request', 'Send the token request as application/x-www-form-urlencoded')
      assertNoDuplicateParams(request.body)
      const p = singleParams(request.body, TOKEN_PARAMS)
      const client = await authenticateRequestClient(clients, request.headers.authorization, p)
      if (p.resource !== undefined && !namesThisResource(p.resource, config.resourceUrl)) {
        throw new OAuthError('invalid_target', `resource must be ${config.resourceUrl}`)
      }
      const requested = p.scope === undefined ? undefined : readRequestedScopes(p.scope)
      if (requested?.ok === false) throw new OAuthError('invalid_scope', requested.description)
      const scopes = requested?.scopes
      const grantType = p.grant_type
      let outcome
      try {
        if (grantType === 'authorization_code') {
          if (p.code === undefined) throw new OAuthError('invalid_request', 'code is required')
          outcome = await redeemCode(db, { client, code: p.code, codeVerifier: p.code_verifier, redirectUri: p.redirect_uri }, config)
        } else if (grantType === 'refresh_token') {
          if (p.refresh_token === undefined) throw new OAuthError('invalid_request', 'refresh_token is required')
          if (!client.grantTypes.includes('authorization_code')) throw new OAuthError('unauthorized_client', 'This client may not use refresh tokens')
          outcome = await refreshTokens(db, { client, refreshToken: p.refresh_token, scopes, resource: p.resource }, config)
        } else if (grantType === 'client_credentials') {
          outcome = await clientCredentialsTokens(db, client, scopes, config.resourceUrl, config)
        } else if (grantType === undefined) {
          throw new OAuthError('invalid_request', 'grant_type is required')
        } else {
          throw new OAuthError('unsupported_grant_type', 'grant_type must be authorization_code, refresh_token or client_credentials')
        }
      } catch (err) {
        if (err instanceof OAuthError) audit.record({ kind: 'oauth', action: `token.${grantType ?? 'none'}`.slice(0, 64), outcome: 'error', clientId: client.clientId, detail: err.error })
        throw err
      }
      audit.record({ kind: 'oauth', action: `token.${grantType}`, outcome: 'ok', authKind: 'oauth', clientId: client.clientId })
      return await reply.send(outcome)
    })
  }

  for (const path of ['/oauth/revoke', '/revoke']) {
    fastify.post(path, { config: { rateLimit: rateLimit(config, 'revoke') } }, async (request, reply) => {
      noStore(reply)
      if (!FORM.test(request.headers['content-type'] ?? '')) throw new OAuthError('invalid_request', 'Send the revocation request as application/x-www-form-urlencoded')
      assertNoDuplicateParams(request.body)
      const p = singleParams(request.body, ['token', 'token_type_hint', 'client_id', 'client_secret'])
      const client = await authenticateRequestClient(clients, request.headers.authorization, p)
      if (p.token === undefined) throw new OAuthError('invalid_request', 'token is required')
      await revokeTokenOfClient(db, client, p.token)
      audit.record({ kind: 'oauth', action: 'revoke', outcome: 'ok', clientId: client.clientId })
      // RFC 7009 §2.2: 200 whether or not the token was known.
      return await reply.code(200).send()
    })
  }
}
