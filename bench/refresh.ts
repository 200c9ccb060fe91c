import { createHash, randomBytes } from 'node:crypto'
import { runHttpLoad, type Measure } from './lib/load.ts'
import type { OurServer } from './lib/ours.ts'

/**
 * The refresh-token grant under load. A refresh token works once (strict rotation, decision
 * 0012), so autocannon's one repeated body cannot drive it: each connection follows its own
 * chain, sending the refresh token the previous answer returned. Chains come from real
 * authorizations (a pre-registered public client bound to principal "bench", approved at once,
 * code redeemed with PKCE). A chain whose request was still in flight when a round ended may
 * have rotated unseen, so it is dropped, never reused (a reuse would revoke its grant).
 */

interface Chain { refreshToken: string }

const REDIRECT_URI = 'http://127.0.0.1:9/callback'

/** One authorization: code, then tokens; returns the refresh token. */
async function authorize (server: OurServer, clientId: string): Promise<string> {
  // The resource is PUBLIC_URL/mcp, which names localhost (the bench connects to 127.0.0.1).
  const resource = `http://localhost:${new URL(server.url).port}/mcp`
  const verifier = randomBytes(32).toString('base64url')
  const challenge = createHash('sha256').update(verifier).digest('base64url')
  const url = new URL(`${server.url}/oauth/authorize`)
  for (const [name, value] of Object.entries({
    response_type: 'code', client_id: clientId, redirect_uri: REDIRECT_URI, code_challenge: challenge, code_challenge_method: 'S256', state: 'bench', resource
  })) url.searchParams.set(name, value)
  const approved = await fetch(url, { redirect: 'manual' })
  const code = new URL(approved.headers.get('location') ?? '').searchParams.get('code')
  if (code === null) throw new Error(`authorize did not approve at once: HTTP ${approved.status} ${approved.headers.get('location') ?? ''}`)
  const response = await fetch(`${server.url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: verifier, resource })
  })
  const tokens = await response.json() as { refresh_token?: string }
  if (tokens.refresh_token === undefined) throw new Error(`code redemption failed: HTTP ${response.status} ${JSON.stringify(tokens)}`)
  return tokens.refresh_token
}

/** Enough chains for every connection of every round (and the warm-up), with a margin for dropped ones. */
async function startChains (server: OurServer, clientId: string, count: number): Promise<Chain[]> {
  const chains: Chain[] = []
  for (let i = 0; i < count; i += 16) {
    const batch = await Promise.all(Array.from({ length: Math.min(16, count - i) }, async () => await authorize(server, clientId)))
    for (const refreshToken of batch) chains.push({ refreshToken })
  }
  return chains
}

/** Chains per connection: a warm-up and up to about a dozen rounds, each of which may drop a few. */
const CHAINS_PER_CONNECTION = 16

export async function refreshMeasure (server: OurServer, connections: number): Promise<Measure> {
  const client = await (await fetch(`${server.adminUrl}/clients`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench-refresh', principal: 'bench', redirect_uris: [REDIRECT_URI] })
  })).json() as { client_id: string }
  let chains = await startChains(server, client.client_id, connections * CHAINS_PER_CONNECTION)
  const rotated = /"refresh_token":"([^"]+)"/
  return async (seconds) => {
    if (chains.length < connections) throw new Error(`only ${chains.length} refresh chains left for ${connections} connections`)
    // Idle chains: a request takes one, its answer puts it back rotated. Each connection has one
    // request in flight, so there is always one idle (autocannon resets a connection's context
    // after each pass through the request list, so chains are not bound to connections).
    const idle = [...chains]
    const result = await runHttpLoad({
      url: `${server.url}/oauth/token`,
      connections,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      verify: (body) => rotated.test(body),
      requests: [{
        method: 'POST',
        setupRequest: (request, context) => {
          const chain = idle.pop() as Chain
          context.chain = chain
          return { ...request, body: `grant_type=refresh_token&client_id=${encodeURIComponent(client.client_id)}&refresh_token=${encodeURIComponent(chain.refreshToken)}` }
        },
        onResponse: (_status, body, context) => {
          const chain = context.chain as Chain
          const next = rotated.exec(body)?.[1]
          if (next === undefined) return // a refused rotation: the chain is spent (counted as an error)
          chain.refreshToken = next
          idle.push(chain)
        }
      }]
    }, seconds)
    // A chain cut mid-request may have rotated on the server without us seeing the new token.
    chains = idle
    return result
  }
}
