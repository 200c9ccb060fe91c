import type { PresentedClientCredentials } from './clients.ts'
import { OAuthError } from './errors.ts'

/**
 * Which client a token or revocation request comes from, and the secret it presents:
 * HTTP Basic (RFC 6749 §2.3.1, credentials form-urlencoded before base64) or the body.
 * Using both at once is refused (§2.3: "MUST NOT use more than one authentication method").
 */
export function readClientCredentials (authorization: string | undefined, body: { client_id?: string | undefined, client_secret?: string | undefined }): PresentedClientCredentials {
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

function decodeFormComponent (value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '))
}
