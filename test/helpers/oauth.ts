import { createHash, randomBytes } from 'node:crypto'
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js'
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js'

/**
 * An in-memory OAuthClientProvider as an MCP client app implements it. `redirectToAuthorization`
 * hands the URL to `onAuthorize` (the test plays the user's browser there).
 */
export class TestOAuthProvider implements OAuthClientProvider {
  client: OAuthClientInformationMixed | undefined
  savedTokens: OAuthTokens | undefined
  verifier = ''
  authorizationUrl: URL | undefined

  readonly redirectUrl: string
  readonly metadataOverrides: Partial<OAuthClientMetadata>

  constructor (
    redirectUrl: string = 'http://localhost:53682/callback',
    metadataOverrides: Partial<OAuthClientMetadata> = {}
  ) {
    this.redirectUrl = redirectUrl
    this.metadataOverrides = metadataOverrides
  }

  get clientMetadata (): OAuthClientMetadata {
    return {
      client_name: 'Test MCP client',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      ...this.metadataOverrides
    }
  }

  clientInformation (): OAuthClientInformationMixed | undefined { return this.client }
  saveClientInformation (info: OAuthClientInformationMixed): void { this.client = info }
  tokens (): OAuthTokens | undefined { return this.savedTokens }
  saveTokens (tokens: OAuthTokens): void { this.savedTokens = tokens }
  redirectToAuthorization (url: URL): void { this.authorizationUrl = url }
  saveCodeVerifier (verifier: string): void { this.verifier = verifier }
  codeVerifier (): string { return this.verifier }
}

export interface BrowserResult {
  /** The final redirect back to the client (with code or error), if one happened. */
  location: URL | undefined
  status: number
  body: string
}

/**
 * Plays the user's browser on the authorization URL: follows an immediate redirect, or fills
 * the consent page (credential + approve/deny) with the cookie it set, like a browser would.
 */
export async function visitAuthorization (url: URL | string, options: { credential?: string, action?: 'approve' | 'deny' } = {}): Promise<BrowserResult> {
  const first = await fetch(url, { redirect: 'manual' })
  const firstBody = await first.text()
  if (first.status === 302) return { location: new URL(first.headers.get('location') ?? ''), status: 302, body: '' }
  if (first.status !== 200 || options.action === undefined) return { location: undefined, status: first.status, body: firstBody }
  const consent = parseConsentPage(firstBody)
  const cookie = (first.headers.get('set-cookie') ?? '').split(';')[0] ?? ''
  const form = new URLSearchParams({ transaction: consent.transaction, action: options.action, credential: options.credential ?? '' })
  const target = new URL(consent.action, url)
  const second = await fetch(target, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', cookie }, body: form })
  const body = await second.text()
  return { location: second.status === 303 ? new URL(second.headers.get('location') ?? '') : undefined, status: second.status, body }
}

export function parseConsentPage (html: string): { transaction: string, action: string } {
  const transaction = /name="transaction" value="([^"]+)"/.exec(html)?.[1]
  const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1]
  if (transaction === undefined || action === undefined) throw new Error(`not a consent page: ${html.slice(0, 300)}`)
  return { transaction, action }
}

export function pkcePair (): { verifier: string, challenge: string } {
  const verifier = randomBytes(32).toString('base64url')
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') }
}
