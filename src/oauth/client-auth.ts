/**
 * Client authentication at the token and revocation endpoints (RFC 6749 §2.3): which client a
 * request comes from, the secret it presents, and whether that proves it is that client.
 */
import type { OAuthClient } from '../db/schema.ts'
import { constantEquals, hashSecret } from '../lib/secrets.ts'
import type { ClientResolver } from './client-resolver.ts'
import { OAuthError } from './errors.ts'

export interface PresentedClientCredentials {
  clientId: string
  secret: string | undefined
  /** How the client authenticated (or tried to). */
  method: 'none' | 'client_secret_post' | 'client_secret_basic'
}

export interface ClientCredentialParams { client_id?: string | undefined, client_secret?: string | undefined }

/** The client of a token or revocation request, authenticated; `invalid_client` (or `invalid_request`) otherwise. */
export async function authenticateRequestClient (clients: ClientResolver, authorization: string | undefined, body: ClientCredentialParams): Promise<OAuthClient> {
  const presented = readClientCredentials(authorization, body)
  return authenticateClient(await clients.find(presented.clientId), presented)
}

/**
 * Which client a token or revocation request comes from, and the secret it presents:
 * HTTP Basic (RFC 6749 §2.3.1, credentials form-urlencoded before base64) or the body.
 * Using both at once is refused (§2.3: "MUST NOT use more than one authentication method").
 */
export function readClientCredentials (authorization: string | undefined, body: ClientCredentialParams): PresentedClientCredentials {
  const basic = authorization === undefined ? undefined : /^basic +([A-Za-z0-9+/=]+) *$/i.exec(authorization)
  if (authorization !== undefined && /^basic\b/i.test(authorization)) {
    if (basic === null || basic === undefined) throw new OAuthError('invalid_client', 'Malformed Basic authorization header')
    const decoded = Buffer.from(basic[1] ?? '', 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon < 1) throw new OAuthError('invalid_client', 'Malformed Basic authorization header')
    let clientId: string
    let secret: string
    try {
      clientId = decodeFormComponent(decoded.slice(0, colon))
      secret = decodeFormComponent(decoded.slice(colon + 1))
    } catch {
      throw new OAuthError('invalid_client', 'Malformed Basic authorization header')
    }
    if (body.client_secret !== undefined) throw new OAuthError('invalid_request', 'Use one client authentication method: Basic or client_secret in the body, not both')
    if (body.client_id !== undefined && body.client_id !== clientId) throw new OAuthError('invalid_request', 'client_id in the body differs from the Basic credentials')
    return { clientId, secret: secret === '' ? undefined : secret, method: 'client_secret_basic' }
  }
  if (body.client_id === undefined) throw new OAuthError('invalid_client', 'Client authentication required: send client_id (and client_secret for confidential clients)')
  return {
    clientId: body.client_id,
    secret: body.client_secret,
    method: body.client_secret === undefined ? 'none' : 'client_secret_post'
  }
}

/**
 * RFC 6749 §2.3: a client with a secret must prove it (post or basic: the secret is the proof,
 * whichever of the two carries it); a public client must not be sent one it does not have.
 * Every failure is `invalid_client` (401), which makes claude.ai register again.
 */
export function authenticateClient (client: OAuthClient | undefined, presented: PresentedClientCredentials): OAuthClient {
  if (client === undefined) throw new OAuthError('invalid_client', 'Unknown client; register again')
  if (client.secretHash === null) {
    if (presented.secret !== undefined) throw new OAuthError('invalid_client', 'This client is public and has no secret')
    return client
  }
  if (presented.secret === undefined) throw new OAuthError('invalid_client', 'Client authentication required (client_secret_post or client_secret_basic)')
  const presentedHash = hashSecret(presented.secret).toString('base64')
  if (!constantEquals(presentedHash, client.secretHash.toString('base64'))) throw new OAuthError('invalid_client', 'Client authentication failed')
  return client
}

function decodeFormComponent (value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '))
}
