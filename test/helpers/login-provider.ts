import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose'
import Provider from 'oidc-provider'

/**
 * A real OpenID provider (`oidc-provider`) on a loopback port for browser sign-ins: its development
 * login form (any login name is accepted and becomes `sub`; `preferred_username` and `name` are
 * the login too) and consent screen ("[ Cancel ]" answers access_denied). One confidential client,
 * `bus-mcp`, for the redirect URIs given to `allow` (our servers' ports are known only after they
 * start, so the provider is built then).
 */
export interface LoginProvider {
  issuer: string
  clientId: string
  clientSecret: string
  /** Registers these redirect URIs for the client (builds the provider; call once, before any sign-in). */
  allow: (redirectUris: string[]) => void
  /**
   * Tampers with the token endpoint's answers: `id_token` swaps the ID token for one with the same
   * claims and `kid` signed by another key (a forgery); `error` answers invalid_grant.
   */
  tamper: 'id_token' | 'error' | undefined
  /**
   * When true, the redirect back to a client (the callback with code and state) is not sent: the
   * browser gets a page saying "held", and the URL is pushed to `held` (to replay it elsewhere).
   */
  hold: boolean
  held: string[]
  /** Requests served, by path (without query). */
  requests: Map<string, number>
  stop: () => Promise<void>
}

export const LOGIN_CLIENT_SECRET = 'login-client-secret-0123456789abcdef'

export async function startLoginProvider (): Promise<LoginProvider> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
  const forger = await generateKeyPair('ES256')
  const kid = `k-${Math.random().toString(36).slice(2, 10)}`
  const jwk: JWK = { ...(await exportJWK(privateKey)), kid, alg: 'ES256', use: 'sig' }
  const server: Server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  let callback: ((request: IncomingMessage, response: ServerResponse) => void) | undefined
  const requests = new Map<string, number>()

  const result: LoginProvider = {
    issuer,
    clientId: 'bus-mcp',
    clientSecret: LOGIN_CLIENT_SECRET,
    tamper: undefined,
    hold: false,
    held: [],
    requests,
    allow (redirectUris) {
      const provider = new Provider(issuer, {
        jwks: { keys: [jwk] },
        clients: [{
          client_id: 'bus-mcp',
          client_secret: LOGIN_CLIENT_SECRET,
          redirect_uris: redirectUris,
          response_types: ['code'],
          grant_types: ['authorization_code'],
          id_token_signed_response_alg: 'ES256'
        }],
        cookies: { keys: ['login-provider-cookie-key-0123456789'] },
        claims: { openid: ['sub'], profile: ['preferred_username', 'name'] },
        // Profile claims in the ID token itself (the server reads only the ID token).
        conformIdTokenClaims: false,
        findAccount: async (_ctx: unknown, sub: string) => ({
          accountId: sub,
          claims: async () => ({ sub, preferred_username: sub, name: sub })
        }),
        features: { devInteractions: { enabled: true } }
      })
      callback = provider.callback()
    },
    async stop () {
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }

  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? '').split('?')[0] ?? ''
    requests.set(path, (requests.get(path) ?? 0) + 1)
    if (callback === undefined) {
      response.writeHead(503).end('not configured')
      return
    }
    const tamper = path === '/token' ? result.tamper : undefined
    if (tamper !== undefined || result.hold) {
      rewriteAnswer(response, async (body) => {
        const location = response.getHeader('location')
        if (result.hold && typeof location === 'string' && location.includes('/oauth/idp/')) {
          result.held.push(location)
          response.statusCode = 200
          response.removeHeader('location')
          response.setHeader('content-type', 'text/plain')
          return 'held'
        }
        if (tamper === 'error') {
          response.statusCode = 400
          return JSON.stringify({ error: 'invalid_grant', error_description: 'tampered by the test' })
        }
        if (tamper === 'id_token') {
          const answer = JSON.parse(body) as { id_token?: string }
          if (answer.id_token !== undefined) {
            const header = decodeProtectedHeader(answer.id_token)
            answer.id_token = await new SignJWT(decodeJwt(answer.id_token)).setProtectedHeader({ alg: 'ES256', kid: header.kid }).sign(forger.privateKey)
          }
          return JSON.stringify(answer)
        }
        return body
      })
    }
    callback(request, response)
  })
  return result
}

/**
 * Rewrites what a response ends with (Koa sends the whole body in one `end`, headers not yet
 * flushed, so the status, headers and length can still change).
 */
function rewriteAnswer (response: ServerResponse, rewrite: (body: string) => Promise<string>): void {
  const end = response.end.bind(response) as (chunk?: unknown) => ServerResponse
  response.end = ((chunk?: unknown) => {
    // Streamed answers (headers already out) are not ours to rewrite.
    if (response.headersSent) return end(chunk)
    const body = typeof chunk === 'string' || Buffer.isBuffer(chunk) ? chunk.toString() : ''
    rewrite(body).then((rewritten) => {
      response.setHeader('content-length', Buffer.byteLength(rewritten))
      end(rewritten)
    }, (err: unknown) => {
      response.statusCode = 500
      end(String(err))
    })
    return response
  }) as typeof response.end
}
