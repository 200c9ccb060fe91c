import { ExternalTokenError } from '../../src/idp/errors.ts'
/**
 * Forgeries and a fake provider for the external identity provider unit tests: signing keys, a
 * complete IdpProvider with DESIGN.md's defaults, and a loopback HTTP server that plays the
 * provider's discovery, JWKS and introspection endpoints and records every request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTHeaderParameters, type JWTPayload } from 'jose'
import type { IdpProvider } from '../../src/idp/types.ts'

export const RESOURCE = 'https://bus.example.com/mcp'

/** Every field filled in with DESIGN.md's defaults; `overrides` win. */
export function makeProvider (overrides: Partial<IdpProvider> = {}): IdpProvider {
  return {
    id: 'test',
    issuer: 'https://idp.example.com',
    jwksUri: undefined,
    audiences: [RESOURCE],
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
    clockToleranceSeconds: 60,
    subjectClaim: 'sub',
    scopeClaims: ['scope', 'scp'],
    scopeMap: undefined,
    groupsClaim: undefined,
    requiredClaims: {},
    allowedClientIds: undefined,
    principals: 'linked',
    nameClaim: 'preferred_username',
    autoScopes: ['bus:read'],
    tokenHeader: 'authorization',
    introspection: undefined,
    advertise: false,
    login: undefined,
    ...overrides
  }
}

export interface SigningKey {
  alg: string
  kid: string
  privateKey: CryptoKey
  publicKey: CryptoKey
  /** The public JWK as a JWKS publishes it (kid, alg, use: sig). */
  jwk: JWK
}

export async function makeKey (alg: 'RS256' | 'PS256' | 'ES256' | 'EdDSA' | 'ES384', kid: string, jwkExtras: Partial<JWK> = {}): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig', ...jwkExtras }
  return { alg, kid, privateKey, publicKey, jwk }
}

/** A JWT signed with `key`; `header` overrides the protected header (kid, typ, jku, …). */
export async function sign (payload: JWTPayload, key: Pick<SigningKey, 'alg' | 'kid' | 'privateKey'>, header: Partial<JWTHeaderParameters> & Record<string, unknown> = {}): Promise<string> {
  return await new SignJWT(payload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header } as JWTHeaderParameters)
    .sign(key.privateKey)
}

/** Seconds since the epoch. */
export function epoch (date: Date = new Date()): number {
  return Math.floor(date.getTime() / 1000)
}

export type Route = (req: IncomingMessage, res: ServerResponse, body: string) => void

export interface FakeProvider {
  /** http://127.0.0.1:PORT — also the default issuer. */
  origin: string
  /** What /jwks serves (mutable). */
  jwks: { keys: JWK[] }
  /** Paths with their query, in the order asked. */
  requests: string[]
  /** Requests seen, with headers and body. */
  seen: Array<{ method: string, path: string, headers: IncomingMessage['headers'], body: string }>
  /** Replace or add a route (exact path without query). */
  route: (path: string, handler: Route) => void
  /** How many requests a path (without query) has seen. */
  count: (path: string) => number
  close: () => Promise<void>
}

export function json (res: ServerResponse, status: number, value: unknown): void {
  const text = JSON.stringify(value)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

/**
 * A loopback server: `/jwks` serves `jwks`, `/.well-known/openid-configuration` a discovery
 * document for issuer `origin` with jwks_uri `origin/jwks`; other routes are added by tests.
 */
export async function startFakeProvider (): Promise<FakeProvider> {
  const routes = new Map<string, Route>()
  const requests: string[] = []
  const seen: FakeProvider['seen'] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const url = req.url ?? '/'
      const path = url.split('?')[0] as string
      const body = Buffer.concat(chunks).toString('utf8')
      requests.push(url)
      seen.push({ method: req.method ?? 'GET', path, headers: req.headers, body })
      const handler = routes.get(path)
      if (handler === undefined) {
        json(res, 404, { error: 'not_found' })
      } else {
        handler(req, res, body)
      }
    })
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const fake: FakeProvider = {
    origin,
    jwks: { keys: [] },
    requests,
    seen,
    route: (path, handler) => { routes.set(path, handler) },
    count: (path) => requests.filter((r) => r.split('?')[0] === path).length,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  routes.set('/jwks', (_req, res) => json(res, 200, fake.jwks))
  routes.set('/.well-known/openid-configuration', (_req, res) => json(res, 200, { issuer: origin, jwks_uri: `${origin}/jwks` }))
  return fake
}

/** The ExternalTokenError a promise rejects with; any other outcome fails the test. */
export async function refusalOf (promise: Promise<unknown>): Promise<ExternalTokenError> {
  try {
    await promise
  } catch (err) {
    if (err instanceof ExternalTokenError) return err
    throw err
  }
  throw new Error('expected a refusal')
}

/** The reason code of that refusal. */
export async function reasonOf (promise: Promise<unknown>): Promise<string> {
  return (await refusalOf(promise)).reason
}
