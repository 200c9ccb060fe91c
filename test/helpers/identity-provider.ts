import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair, type JWK } from 'jose'
import Provider from 'oidc-provider'

/** A confidential client of the test identity provider (client_credentials). */
export interface IdpClient { id: string, secret: string }

export interface TestIdentityProviderOptions {
  /** The resource (our PUBLIC_URL/mcp) access tokens are issued for. */
  resource: string
  /** 'jwt' (ES256, typ at+jwt, aud = the resource) or 'opaque' (introspection only). */
  format?: 'jwt' | 'opaque'
  /** Access-token lifetime in seconds (default 300). */
  ttlSeconds?: number
  /** Keep this port across restarts (key rotation): the issuer must not change. */
  port?: number
}

export interface TestIdentityProvider {
  issuer: string
  port: number
  /** Clients it knows: `agent` (scopes bus:read bus:write), `reader` (bus:read), `introspector` (asks the introspection endpoint). */
  clients: Record<'agent' | 'reader' | 'introspector', IdpClient>
  /** A client_credentials access token for `client` with `scope`, for `resource` (default: the configured one). */
  token: (client: IdpClient, scope: string, resource?: string) => Promise<string>
  /** Requests its JWKS, discovery and token endpoints have served, by path. */
  requests: Map<string, number>
  /** Stops answering (the server closes), as a provider that went down. */
  stop: () => Promise<void>
}

const SECRET = 'test-idp-secret-0123456789abcdef'

/** A real OpenID provider (`oidc-provider`) on a loopback port, issuing client_credentials tokens. */
export async function startIdentityProvider (options: TestIdentityProviderOptions): Promise<TestIdentityProvider> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
  const kid = `k-${Math.random().toString(36).slice(2, 10)}`
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' }
  const server: Server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, '127.0.0.1', () => { resolve() })
  })
  const port = (server.address() as AddressInfo).port
  const issuer = `http://127.0.0.1:${port}`
  const clients = {
    agent: { id: 'agent', secret: SECRET },
    reader: { id: 'reader', secret: SECRET },
    introspector: { id: 'introspector', secret: SECRET }
  }
  const client = (id: string): Record<string, unknown> => ({
    client_id: id, client_secret: SECRET, grant_types: ['client_credentials'], redirect_uris: [], response_types: [], id_token_signed_response_alg: 'ES256'
  })
  const format = options.format ?? 'jwt'
  const provider = new Provider(issuer, {
    jwks: { keys: [jwk] },
    clients: [client('agent'), client('reader'), client('introspector')],
    ttl: { ClientCredentials: options.ttlSeconds ?? 300 },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => options.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx: unknown, resource: string) => ({
          scope: 'bus:read bus:write',
          audience: resource,
          accessTokenFormat: format,
          accessTokenTTL: options.ttlSeconds ?? 300,
          ...(format === 'jwt' ? { jwt: { sign: { alg: 'ES256' } } } : {})
        })
      }
    }
  })
  const requests = new Map<string, number>()
  const callback = provider.callback()
  server.on('request', (request, response) => {
    const path = (request.url ?? '').split('?')[0] ?? ''
    requests.set(path, (requests.get(path) ?? 0) + 1)
    callback(request, response)
  })
  return {
    issuer,
    port,
    clients,
    requests,
    async token (who, scope, resource = options.resource) {
      const response = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${who.id}:${who.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope, resource })
      })
      const body = await response.json() as { access_token?: string, error?: string }
      if (body.access_token === undefined) throw new Error(`the test identity provider refused a token: ${body.error ?? response.status}`)
      return body.access_token
    },
    async stop () {
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}
