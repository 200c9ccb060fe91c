import type { FastifyInstance } from 'fastify'
import { SCOPES } from '../auth/scopes.ts'
import type { Config } from '../config.ts'
import { TOKEN_ENDPOINT_AUTH_METHODS } from './client-metadata.ts'
import { allowAnyOrigin } from './http.ts'

/** RFC 8414 authorization server metadata. The issuer is PUBLIC_URL exactly (no trailing slash). */
export function authorizationServerMetadata (config: Config): Record<string, unknown> {
  const issuer = config.publicUrl
  return {
    issuer,
    authorization_endpoint: `${issuer}/oauth/authorize`,
    token_endpoint: `${issuer}/oauth/token`,
    registration_endpoint: `${issuer}/oauth/register`,
    revocation_endpoint: `${issuer}/oauth/revoke`,
    scopes_supported: [...SCOPES],
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: [...TOKEN_ENDPOINT_AUTH_METHODS],
    revocation_endpoint_auth_methods_supported: [...TOKEN_ENDPOINT_AUTH_METHODS],
    authorization_response_iss_parameter_supported: true,
    client_id_metadata_document_supported: true,
    service_documentation: `${issuer}/`
  }
}

/** RFC 9728 protected resource metadata for `/mcp`. `authorization_servers` holds the issuer byte for byte. */
export function protectedResourceMetadata (config: Config): Record<string, unknown> {
  return {
    resource: config.resourceUrl,
    // Our own first: clients that take the first entry (most do) get the one with DCR and CIMD.
    authorization_servers: [config.publicUrl, ...config.identityProviders.filter((p) => p.advertise).map((p) => p.issuer)],
    scopes_supported: [...SCOPES],
    bearer_methods_supported: ['header'],
    resource_name: 'Bus MCP Server'
  }
}

const stringArray = { type: 'array', items: { type: 'string' } } as const
const asMetadataSchema = {
  type: 'object',
  required: ['issuer', 'authorization_endpoint', 'token_endpoint', 'response_types_supported', 'code_challenge_methods_supported'],
  properties: {
    issuer: { type: 'string' },
    authorization_endpoint: { type: 'string' },
    token_endpoint: { type: 'string' },
    registration_endpoint: { type: 'string' },
    revocation_endpoint: { type: 'string' },
    scopes_supported: stringArray,
    response_types_supported: stringArray,
    response_modes_supported: stringArray,
    grant_types_supported: stringArray,
    code_challenge_methods_supported: stringArray,
    token_endpoint_auth_methods_supported: stringArray,
    revocation_endpoint_auth_methods_supported: stringArray,
    authorization_response_iss_parameter_supported: { type: 'boolean' },
    client_id_metadata_document_supported: { type: 'boolean' },
    service_documentation: { type: 'string' }
  }
} as const
const prmSchema = {
  type: 'object',
  required: ['resource', 'authorization_servers'],
  properties: {
    resource: { type: 'string' },
    authorization_servers: stringArray,
    scopes_supported: stringArray,
    bearer_methods_supported: stringArray,
    resource_name: { type: 'string' }
  }
} as const

/**
 * Discovery documents. Both PRM locations (path-suffixed and root) and both AS metadata
 * locations (RFC 8414 and the OpenID alias) serve the same bytes. They are public, so any
 * origin may read them and caches may keep them for a while.
 */
export default async function discoveryRoutes (fastify: FastifyInstance, { config }: { config: Config }): Promise<void> {
  const asMetadata = authorizationServerMetadata(config)
  const prm = protectedResourceMetadata(config)
  const asPaths = ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']
  const prmPaths = ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']
  allowAnyOrigin(fastify, [...asPaths, ...prmPaths])
  for (const path of asPaths) {
    fastify.get(path, { schema: { response: { 200: asMetadataSchema } } }, async (_request, reply) => {
      return await reply.header('Cache-Control', 'public, max-age=300').send(asMetadata)
    })
  }
  for (const path of prmPaths) {
    fastify.get(path, { schema: { response: { 200: prmSchema } } }, async (_request, reply) => {
      return await reply.header('Cache-Control', 'public, max-age=300').send(prm)
    })
  }
}
