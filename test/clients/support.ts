import type {
  OAuthClientMetadata, OAuthClientProvider, OAuthDiscoveryState, StoredOAuthClientInformation, StoredOAuthTokens
} from '@modelcontextprotocol/client'
import type { TestServer } from '../helpers/server.ts'

/** The bus's tools, by contract (DESIGN.md). */
export const BUS_TOOLS = ['bus_ack', 'bus_channels', 'bus_principals', 'bus_read', 'bus_send', 'whoami']

/** The revision the SDK v2 client must negotiate with this server through `server/discover`. */
export const MODERN_PROTOCOL_VERSION = '2026-07-28'

/** One HTTP exchange a client made, as the server saw and answered it (for failure diagnostics). */
export interface Exchange {
  method: string
  url: string
  /** The MCP request headers of interest (protocol version, method, name). */
  requestHeaders: Record<string, string>
  requestBody: string | undefined
  status: number
  responseHeaders: Record<string, string>
  /** JSON or text bodies only; never a stream. */
  responseBody: string | undefined
}

const REQUEST_HEADERS = ['mcp-protocol-version', 'mcp-method', 'mcp-name', 'mcp-session-id']
const RESPONSE_HEADERS = ['content-type', 'www-authenticate', 'mcp-session-id']

function pick (headers: Headers, names: readonly string[]): Record<string, string> {
  const picked: Record<string, string> = {}
  for (const name of names) {
    const value = headers.get(name)
    if (value !== null) picked[name] = value
  }
  return picked
}

/**
 * A fetch that records every exchange, handed to an SDK transport (`fetch` option) so a test can
 * show what went over the wire when the SDK reports only a summary, and assert on status codes
 * and challenges the SDK consumes itself (a 403 `insufficient_scope` step-up).
 */
export class WireLog {
  readonly exchanges: Exchange[] = []

  readonly fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = input instanceof Request ? input.url : String(input)
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET')
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined))
    const body = init?.body
    const requestBody = typeof body === 'string' ? body : body instanceof URLSearchParams ? body.toString() : undefined
    const response = await fetch(input, init)
    const type = response.headers.get('content-type') ?? ''
    const readable = !/event-stream/i.test(type) && (/json|text\/(plain|html)/i.test(type) || response.status >= 400)
    this.exchanges.push({
      method,
      url,
      requestHeaders: pick(headers, REQUEST_HEADERS),
      requestBody: requestBody?.slice(0, 2000),
      status: response.status,
      responseHeaders: pick(response.headers, RESPONSE_HEADERS),
      responseBody: readable ? (await response.clone().text()).slice(0, 2000) : undefined
    })
    return response
  }

  /** Exchanges with the MCP endpoint whose JSON-RPC method is `rpcMethod`. */
  rpc (rpcMethod: string): Exchange[] {
    return this.exchanges.filter((e) => new URL(e.url).pathname === '/mcp' && e.requestBody !== undefined && rpcMethodOf(e.requestBody) === rpcMethod)
  }

  /** Exchanges with the MCP endpoint answered with `status`. */
  withStatus (status: number): Exchange[] {
    return this.exchanges.filter((e) => new URL(e.url).pathname === '/mcp' && e.status === status)
  }

  /** A compact transcript of the exchanges with the MCP endpoint, for test diagnostics. */
  transcript (): string[] {
    return this.exchanges
      .filter((e) => new URL(e.url).pathname === '/mcp')
      .map((e) => `${e.method} ${JSON.stringify(e.requestHeaders)} ${e.requestBody ?? ''} -> ${e.status} ${JSON.stringify(e.responseHeaders)} ${e.responseBody ?? ''}`)
  }
}

function rpcMethodOf (body: string): string | undefined {
  try {
    const parsed = JSON.parse(body) as { method?: unknown }
    return typeof parsed.method === 'string' ? parsed.method : undefined
  } catch {
    return undefined
  }
}

/**
 * An in-memory OAuthClientProvider for the SDK v2 client, as an MCP app implements it: it keeps
 * what the SDK hands it (client information and tokens carry the issuer stamp), the PKCE verifier
 * and the discovery state across the redirect, and records the authorization URL instead of
 * opening a browser (the test plays the browser there).
 */
export class V2OAuthProvider implements OAuthClientProvider {
  client: StoredOAuthClientInformation | undefined
  savedTokens: StoredOAuthTokens | undefined
  authorizationUrl: URL | undefined
  /** Every authorization URL the SDK produced, in order (a step-up adds one). */
  readonly authorizationUrls: URL[] = []
  private verifier = ''
  private discovery: OAuthDiscoveryState | undefined
  readonly redirectUrl: string

  constructor (redirectUrl = 'http://127.0.0.1:53683/callback') {
    this.redirectUrl = redirectUrl
  }

  get clientMetadata (): OAuthClientMetadata {
    return {
      client_name: 'SDK v2 test client',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none'
    }
  }

  clientInformation (): StoredOAuthClientInformation | undefined { return this.client }
  saveClientInformation (info: StoredOAuthClientInformation): void { this.client = info }
  tokens (): StoredOAuthTokens | undefined { return this.savedTokens }
  saveTokens (tokens: StoredOAuthTokens): void { this.savedTokens = tokens }
  redirectToAuthorization (url: URL): void {
    this.authorizationUrl = url
    this.authorizationUrls.push(url)
  }

  saveCodeVerifier (verifier: string): void { this.verifier = verifier }
  codeVerifier (): string { return this.verifier }
  saveDiscoveryState (state: OAuthDiscoveryState): void { this.discovery = state }
  discoveryState (): OAuthDiscoveryState | undefined { return this.discovery }
}

/** A one-time login code for `principal` from the admin API (what `bus-mcp login-code` prints). */
export async function loginCode (server: TestServer, principal: string): Promise<string> {
  const response = await fetch(`${server.adminUrl}/login-codes`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ principal })
  })
  if (response.status !== 200 && response.status !== 201) throw new Error(`login code for ${principal}: HTTP ${response.status} ${await response.text()}`)
  return ((await response.json()) as { code: string }).code
}

/** The error a rejected promise settled with (fails loudly if it resolved). */
export async function rejection (promise: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  let value: unknown
  try {
    value = await promise
  } catch (err) {
    return err as Error & Record<string, unknown>
  }
  throw new Error(`expected a rejection, got ${JSON.stringify(value)?.slice(0, 500) ?? 'undefined'}`)
}
